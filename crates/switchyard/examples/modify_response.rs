//! Run with: cargo run -p switchyard --example modify_response
//!
//! The http-proxy-3 README's "modify a response from a proxied server"
//! (what Harmon does in Node): the `on_proxy_response` hook (Node's
//! `proxyRes`) adds a header and rewrites the body *as it streams*,
//! upper-casing every chunk, without buffering the whole response. Try:
//!
//! ```text
//! curl -i http://127.0.0.1:8000/
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::net::SocketAddr;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::BodyExt;
use switchyard::{Body, Proxy, Target};

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

/// Starts the target and a proxy that rewrites its answers.
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
        .on_proxy_response(|res| {
            res.headers_mut()
                .insert("x-modified-by", HeaderValue::from_static("switchyard"));
            // Each chunk is transformed as it passes. (A change of length
            // would also need `res.headers_mut().remove("content-length")`.)
            let body = std::mem::take(res.body_mut());
            *res.body_mut() = Body::new(
                body.map_frame(|frame| frame.map_data(|d| Bytes::from(d.to_ascii_uppercase()))),
            );
        })
        .build()?;
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
        "proxy on http://{0}\ntry: curl -i http://{0}/",
        running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
