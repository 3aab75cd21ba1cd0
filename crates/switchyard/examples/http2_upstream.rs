//! Run with: cargo run -p switchyard --example http2_upstream
//!
//! HTTP/1.1 clients, an HTTP/2 upstream: a proxy on 127.0.0.1:8082 speaks
//! h2c (HTTP/2 with prior knowledge) to a target on 127.0.0.1:9082, which
//! answers with the HTTP version it was asked in and a trailer. Over TLS,
//! `Protocol::Http2` negotiates `h2` by ALPN instead.
//!
//! ```text
//! curl -i http://127.0.0.1:8082/hello
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Body, Protocol, Proxy, Target};
use tokio::net::TcpListener;

#[path = "support/mod.rs"]
mod support;
use support::env_addr;

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The running proxy; dropping it stops the proxy.
    pub server: switchyard::Server,
    /// The HTTP/2 (h2c) target's address.
    pub target: SocketAddr,
}

/// Starts an h2c target and a proxy that speaks HTTP/2 to it.
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = h2c_target(target_addr).await?;
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{target}"))?.with_protocol(Protocol::Http2))
        .build()?;
    let server = proxy.listen(proxy_addr).await?;
    Ok(Running {
        proxy: server.local_addr(),
        server,
        target,
    })
}

/// An HTTP/2-only origin: the body names the version it was asked in, and
/// a `x-served-by` trailer follows it.
async fn h2c_target(addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let text = format!("{:?} {}\n", req.version(), req.uri().path());
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-served-by", "h2c-target".parse().expect("static"));
                    let body = Full::new(Bytes::from(text))
                        .map_err(|never| match never {})
                        .with_trailers(async move { Some(Ok(trailers)) });
                    Ok::<_, Infallible>(Response::new(Body::new(body)))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:8082"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9082"),
    )
    .await?;
    println!(
        "proxy on http://{} -> h2c://{}\ntry: curl -i http://{}/hello",
        running.proxy, running.target, running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
