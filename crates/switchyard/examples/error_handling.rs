//! Run with: cargo run -p switchyard --example error_handling
//!
//! The http-proxy-3 README's error handling (`proxy.on("error", …)`): the
//! target here is a port where nothing listens, so every request fails.
//! `Proxy::try_web` hands the typed error to the server, which logs it (with
//! the upstream's address, for you) and answers the client with its own page
//! (which never shows that address). `Proxy::web` would answer a plain 502.
//! Try:
//!
//! ```text
//! curl -i http://127.0.0.1:8000/
//! ```
//!
//! `PROXY_ADDR` overrides the proxy's address, `TARGET_ADDR` the dead target.

use std::net::SocketAddr;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use switchyard::{Body, Call, Proxy, ProxyError, Target};

#[path = "support/mod.rs"]
mod support;
use support::{env_addr, own_server};

/// Where the example's proxy ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's address.
    pub proxy: SocketAddr,
}

/// Starts a proxy to `target_addr` with a custom error answer.
///
/// # Errors
///
/// When the address cannot be bound or the target does not parse.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{target_addr}"))?)
        .build()?;
    let front = own_server(proxy_addr, move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move {
            match proxy.try_web(req, Call::new()).await {
                Ok(res) => res,
                Err(err) => error_page(&err),
            }
        }
    })
    .await?;
    Ok(Running { proxy: front })
}

/// The answer for a failed request: logged with its cause, answered with a
/// page of our own.
fn error_page(err: &ProxyError) -> Response<Body> {
    eprintln!(
        "proxy error: {} ({:?} side)",
        switchyard::error_chain(err),
        err.side()
    );
    let mut res = Response::new(Body::from(
        "Something went wrong. And we are reporting a custom error message.\n",
    ));
    *res.status_mut() = if err.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    res
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:8000"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9999"),
    )
    .await?;
    println!(
        "proxy on http://{0}\ntry: curl -i http://{0}/",
        running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
