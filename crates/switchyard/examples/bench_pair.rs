//! A trivial origin and a proxy in front of it, for load tests with wrk.
//!
//! Run with:
//!   cargo run --release -p switchyard --example bench_pair -- origin 127.0.0.1:9000
//!   cargo run --release -p switchyard --example bench_pair -- proxy 127.0.0.1:8000 http://127.0.0.1:9000
//! then `wrk -t1 -c64 -d10s http://127.0.0.1:8000/`.
//!
//! `bench_pair api http://127.0.0.1:8001 COUNT CONCURRENCY TARGET [LISTS]` is
//! the REST-API client of `bench/`: it adds COUNT routes `/user/u<i>` -> TARGET
//! with `POST /api/routes/...` over CONCURRENCY keep-alive connections (each
//! one sends its share one request at a time), then times LISTS (default 5)
//! `GET /api/routes` and prints one JSON line. It works against switchyard
//! and configurable-http-proxy alike.
//!
//! `bench_pair bare 127.0.0.1:8000 http://127.0.0.1:9000` is the floor of any
//! proxy built on hyper and tokio: one thread, each client connection gets one
//! upstream connection of its own, and requests and responses pass through
//! untouched (no routing, no pool, no header pass, no timers). It is not a
//! correct proxy (hop-by-hop headers go through); it shows how much of the
//! proxy's CPU per request hyper and tokio themselves cost.
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
    let rt = if args.first().map(String::as_str) == Some("bare") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    match args.first().map(String::as_str) {
        Some("origin") => rt.block_on(origin(args.get(1).map_or("127.0.0.1:9000", |s| s))),
        Some("proxy") => rt.block_on(proxy(
            args.get(1).map_or("127.0.0.1:8000", |s| s),
            args.get(2).map_or("http://127.0.0.1:9000", |s| s),
        )),
        Some("bare") => rt.block_on(bare(
            args.get(1).map_or("127.0.0.1:8000", |s| s),
            args.get(2).map_or("http://127.0.0.1:9000", |s| s),
        )),
        Some("api") => rt.block_on(api(&args[1..])),
        _ => Err(
            "usage: bench_pair origin ADDR | proxy ADDR TARGET | bare ADDR TARGET \
             | api API COUNT CONC TARGET [LISTS]"
                .into(),
        ),
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn bare(addr: &str, target: &str) -> Result<(), Box<dyn std::error::Error>> {
    let upstream: std::net::SocketAddr = target
        .strip_prefix("http://")
        .ok_or("TARGET must be http://ip:port")?
        .trim_end_matches('/')
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "bare forwarder listening on {} -> {target}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(send) = api_conn(&upstream.to_string()).await else {
                return;
            };
            // hyper serves one request at a time per connection; the lock is
            // only held while the request is handed over.
            let send = std::sync::Arc::new(tokio::sync::Mutex::new(send));
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let send = send.clone();
                async move {
                    let sent = {
                        let mut send = send.lock().await;
                        send.ready().await?;
                        send.send_request(req)
                    };
                    sent.await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One keep-alive HTTP/1.1 connection to the API.
async fn api_conn<B>(
    authority: &str,
) -> Result<hyper::client::conn::http1::SendRequest<B>, BoxError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn api(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use http_body_util::BodyExt;
    let [base, count, conc, target, rest @ ..] = args else {
        return Err("usage: bench_pair api API COUNT CONCURRENCY TARGET [LISTS]".into());
    };
    let authority = base
        .strip_prefix("http://")
        .ok_or("API must be http://host:port")?
        .trim_end_matches('/')
        .to_owned();
    let count: usize = count.parse()?;
    let conc: usize = conc.parse::<usize>()?.max(1);
    let lists: usize = rest.first().map_or(Ok(5), |s| s.parse())?;
    let body = Bytes::from(format!("{{\"target\": \"{target}\"}}"));

    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conc {
        let (authority, body) = (authority.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut send = api_conn(&authority).await?;
            for i in (c..count).step_by(conc) {
                let req = Request::post(format!("/api/routes/user/u{i}"))
                    .header("host", &authority)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                send.ready().await?;
                let res = send.send_request(req).await?;
                let status = res.status();
                res.into_body().collect().await?;
                if status.as_u16() != 201 {
                    return Err(format!("POST route {i}: {status}").into());
                }
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    let add_seconds = start.elapsed().as_secs_f64();

    let mut send = api_conn(&authority).await.map_err(|e| e.to_string())?;
    let mut list_ms = Vec::new();
    let mut list_bytes = 0;
    for _ in 0..lists {
        let t = std::time::Instant::now();
        let req = Request::get("/api/routes")
            .header("host", &authority)
            .body(Full::new(Bytes::new()))?;
        send.ready().await?;
        let res = send.send_request(req).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        list_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if status.as_u16() != 200 {
            return Err(format!("GET /api/routes: {status}").into());
        }
        list_bytes = bytes.len();
    }
    let list_ms: Vec<String> = list_ms.iter().map(|m| format!("{m:.3}")).collect();
    println!(
        "{{\"added\": {count}, \"concurrency\": {conc}, \"add_seconds\": {add_seconds:.4}, \"list_ms\": [{}], \"list_bytes\": {list_bytes}}}",
        list_ms.join(", ")
    );
    Ok(())
}
