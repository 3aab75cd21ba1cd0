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

use std::net::SocketAddr;

use http::{HeaderValue, Request};
use hyper::body::Incoming;
use switchyard::{Proxy, Target};

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
