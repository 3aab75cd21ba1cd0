//! Run with: cargo run -p switchyard --example error_handling
//!
//! The http-proxy-3 README's error handling (`proxy.on("error", …)`): the
//! target here is a port where nothing listens, so every request fails.
//! The `on_error` hook logs the typed error (with the upstream's address,
//! for you) and answers the client with its own page (which never shows
//! that address). Without the hook the client would get a plain 502. Try:
//!
//! ```text
//! curl -i http://127.0.0.1:8000/
//! ```
//!
//! `PROXY_ADDR` overrides the proxy's address, `TARGET_ADDR` the dead target.

use std::net::SocketAddr;

use http::{HeaderValue, Response, StatusCode};
use switchyard::{Body, Proxy, Target};

#[path = "support/mod.rs"]
mod support;
use support::env_addr;

/// Where the example's proxy ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The running proxy; dropping it stops the proxy.
    pub server: switchyard::Server,
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
        .on_error(|err| {
            eprintln!("proxy error: {err} ({:?} side)", err.side());
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
            Some(res)
        })
        .build()?;
    let server = proxy.listen(proxy_addr).await?;
    Ok(Running {
        proxy: server.local_addr(),
        server,
    })
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
