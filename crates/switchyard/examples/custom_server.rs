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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Body, Options, Proxy, Target};
use tokio::net::TcpListener;

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
