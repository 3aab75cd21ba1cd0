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

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use switchyard::Proxy;

#[path = "support/mod.rs"]
mod support;
use support::{env_addr, own_server, target_server};

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
