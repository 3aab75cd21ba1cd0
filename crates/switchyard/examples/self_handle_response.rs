//! Run with: cargo run -p switchyard --example self_handle_response
//!
//! The http-proxy-3 README's `selfHandleResponse`: the proxy skips its
//! response passes and hands you the upstream's response; you read it and
//! answer the client yourself. Here the server logs the proxied body and
//! answers `my response to cli`. Try:
//!
//! ```text
//! curl -i http://127.0.0.1:8000/
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use switchyard::{Body, Options, Proxy, Target};

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

/// Starts the target and a server that handles the proxied responses itself.
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = target_server(target_addr).await?;
    let proxy = Proxy::builder().build()?;
    let mut options = Options::to(Target::parse(&format!("http://{target}"))?);
    options.self_handle_response = true;
    let options = Arc::new(options);
    let front = own_server(proxy_addr, move |req: Request<Incoming>| {
        let (proxy, options) = (proxy.clone(), options.clone());
        async move {
            let proxied = match proxy.try_web(req, &options).await {
                Ok(res) => res,
                Err(err) => return switchyard::error_response(&err),
            };
            match proxied.into_body().collect().await {
                Ok(body) => {
                    let body = body.to_bytes();
                    println!(
                        "res from proxied server: {}",
                        String::from_utf8_lossy(&body)
                    );
                    Response::new(Body::from("my response to cli"))
                }
                Err(_) => {
                    let mut res = Response::new(Body::from("upstream body failed"));
                    *res.status_mut() = StatusCode::BAD_GATEWAY;
                    res
                }
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
        &env_addr("PROXY_ADDR", "127.0.0.1:8000"),
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
