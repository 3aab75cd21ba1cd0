//! Run with: cargo run -p switchyard --example custom_server
//!
//! The http-proxy-3 README's "stand-alone proxy server with custom server
//! logic": your own hyper server decides, per request, what to do. Here it
//! answers `/health` itself and proxies everything else with `web_with`
//! and per-call options (`proxy.web(req, res, { target })`), sending paths
//! under `/api/` to the target's `/v1` prefix. Try:
//!
//! ```text
//! curl -i http://127.0.0.1:5050/health      # answered by the server itself
//! curl -i http://127.0.0.1:5050/api/users   # proxied to the target as /v1/api/users
//! curl -i http://127.0.0.1:5050/other       # proxied as /other
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use switchyard::{Body, Options, Proxy, Target};

#[path = "support/mod.rs"]
mod support;
use support::{env_addr, own_server, target_server};

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The custom server's address.
    pub proxy: SocketAddr,
    /// The target's address.
    pub target: SocketAddr,
}

/// Starts the target and the custom server in front of it.
///
/// # Errors
///
/// When an address cannot be bound or a target does not parse.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = target_server(target_addr).await?;
    // A proxy with no default target: every call says where to go.
    let proxy = Proxy::builder().build()?;
    // Targets are parsed once, not per request.
    let api = Arc::new(Options::to(Target::parse(&format!("http://{target}/v1"))?));
    let rest = Arc::new(Options::to(Target::parse(&format!("http://{target}"))?));
    let front = own_server(proxy_addr, move |req: Request<Incoming>| {
        let (proxy, api, rest) = (proxy.clone(), api.clone(), rest.clone());
        async move {
            match req.uri().path() {
                "/health" => Response::new(Body::from("ok\n")),
                p if p.starts_with("/api/") => proxy.web_with(req, &api).await,
                _ => proxy.web_with(req, &rest).await,
            }
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
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:5050"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9000"),
    )
    .await?;
    println!(
        "custom server on http://{0}\ntry: curl -i http://{0}/health ; curl -i http://{0}/api/users",
        running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
