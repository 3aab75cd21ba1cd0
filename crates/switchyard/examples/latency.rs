//! Run with: cargo run -p switchyard --example latency
//!
//! The http-proxy-3 README's "stand-alone proxy server with latency": your
//! server does some slow work (here, 500 ms) before it calls `proxy.web`.
//! The request body has not been read yet and is still forwarded whole. Try:
//!
//! ```text
//! curl -i -d 'some body' http://127.0.0.1:8008/
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses; `DELAY_MS` the delay.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Body, Proxy};
use tokio::net::TcpListener;

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The server's address.
    pub proxy: SocketAddr,
    /// The target's address.
    pub target: SocketAddr,
}

/// Starts the target and a server that waits `delay` before proxying.
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
    delay: Duration,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = target_server(target_addr).await?;
    let proxy = Proxy::to(&format!("http://{target}"))?;
    let front = own_server(proxy_addr, move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move {
            // Stands for an operation that takes a while (an auth check, a
            // database lookup) before the request is proxied.
            tokio::time::sleep(delay).await;
            proxy.web(req).await
        }
    })
    .await?;
    Ok(Running {
        proxy: front,
        target,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let delay = std::env::var("DELAY_MS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(500);
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:8008"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9008"),
        Duration::from_millis(delay),
    )
    .await?;
    println!(
        "listening on http://{0}\ntry: curl -i -d 'some body' http://{0}/",
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
