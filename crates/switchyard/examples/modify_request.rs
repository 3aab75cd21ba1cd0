//! Run with: cargo run -p switchyard --example modify_request
//!
//! The http-proxy-3 README's "proxy request header re-writing": the
//! `on_proxy_request` hook (Node's `proxyReq` event) adds
//! `X-Special-Proxy-Header: foobar` to every request before it is sent;
//! your own server calls `proxy.web` for each request. The target echoes
//! the headers it received, so the new one shows up. Try:
//!
//! ```text
//! curl -i http://127.0.0.1:5050/
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Body, Proxy, Target};
use tokio::net::TcpListener;

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The server's address.
    pub proxy: SocketAddr,
    /// The target's address.
    pub target: SocketAddr,
}

/// Starts the target and a server proxying to it with the header hook.
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = target_server(target_addr).await?;
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{target}"))?)
        // Runs for every request, with the outgoing head ready to send.
        .on_proxy_request(|req| {
            req.headers
                .insert("x-special-proxy-header", HeaderValue::from_static("foobar"));
        })
        .build()?;
    let front = own_server(proxy_addr, move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { proxy.web(req).await }
    })
    .await?;
    Ok(Running {
        proxy: front,
        target,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:5050"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9000"),
    )
    .await?;
    println!(
        "listening on http://{0}\ntry: curl -i http://{0}/",
        running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Serves `handler` on `addr` with hyper (HTTP/1.1 and HTTP/2, upgrades
/// allowed): the "your own server" of the http-proxy-3 README.
async fn own_server<F, Fut>(addr: &str, handler: F) -> std::io::Result<SocketAddr>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

/// The target (origin) server of this example: it answers every request
/// with its URI and headers, as the http-proxy-3 README's target does.
async fn target_server(addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut text = format!("request successfully proxied to: {}\n", req.uri());
                    for (name, value) in req.headers() {
                        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                    }
                    let mut res = Response::new(Body::from(text));
                    res.headers_mut()
                        .insert("content-type", HeaderValue::from_static("text/plain"));
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

/// An address from the environment, or the fixed default for humans.
fn env_addr(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}
