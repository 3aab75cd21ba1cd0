//! A trivial origin and a proxy in front of it, for load tests with wrk.
//!
//! Run with:
//!   cargo run --release -p switchyard --example bench_pair -- origin 127.0.0.1:9000
//!   cargo run --release -p switchyard --example bench_pair -- proxy 127.0.0.1:8000 http://127.0.0.1:9000
//! then `wrk -t1 -c64 -d10s http://127.0.0.1:8000/`.
//!
//! The origin answers every request with a 13-byte body; the proxy is
//! `Proxy::listen` with default options. Run them as separate processes so
//! the proxy's CPU time can be read from /proc on its own. `WORKERS=N` sets
//! the runtime's worker threads (default 1).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("origin") => rt.block_on(origin(args.get(1).map_or("127.0.0.1:9000", |s| s))),
        Some("proxy") => rt.block_on(proxy(
            args.get(1).map_or("127.0.0.1:8000", |s| s),
            args.get(2).map_or("http://127.0.0.1:9000", |s| s),
        )),
        _ => Err("usage: bench_pair origin ADDR | proxy ADDR TARGET".into()),
    }
}

async fn origin(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("origin listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"Hello, world!",
                ))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn proxy(addr: &str, target: &str) -> Result<(), Box<dyn std::error::Error>> {
    let proxy = switchyard::Proxy::to(target)?;
    let server = proxy.listen(addr).await?;
    println!("proxy listening on {} -> {target}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
