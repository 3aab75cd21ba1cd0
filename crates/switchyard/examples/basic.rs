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

use std::net::SocketAddr;

use switchyard::Proxy;

#[path = "support/mod.rs"]
mod support;
use support::{env_addr, target_server};

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The running proxy; dropping it stops the proxy.
    pub server: switchyard::Server,
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
        server,
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
