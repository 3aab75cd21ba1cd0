//! Run with: cargo run -p switchyard --example basic
//!
//! The http-proxy-3 README's "basic stand-alone proxy server": a proxy on
//! 127.0.0.1:8000 in front of a target on 127.0.0.1:9000, which answers
//! with the headers it received. Try:
//!
//! ```text
//! curl -i http://127.0.0.1:8000/hello
//! ```
//!
//! Set `PROXY_ADDR` and `TARGET_ADDR` to listen elsewhere (`127.0.0.1:0`
//! picks free ports; `tests/examples.rs` does that).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard::{Body, Proxy};
use tokio::net::TcpListener;

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The target's address.
    pub target: SocketAddr,
}

/// Starts the target and a proxy to it (`createProxyServer({target}).listen()`).
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = target_server(target_addr).await?;
    let proxy = Proxy::to(&format!("http://{target}"))?;
    let server = proxy.listen(proxy_addr).await?;
    Ok(Running {
        proxy: server.local_addr(),
        target,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:8000"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9000"),
    )
    .await?;
    println!(
        "proxy on http://{} -> target http://{}\ntry: curl -i http://{}/hello",
        running.proxy, running.target, running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
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
