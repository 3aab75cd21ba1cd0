//! Run with: cargo run -p switchyard --example axum_forward
//!
//! @fastify/reply-from's use case in axum: an app that serves some routes
//! itself and forwards others to an upstream, from a handler with per-call
//! options (`proxy.forward(req, "/v1/users/{id}")`) or by mounting the
//! proxy as a tower service. Try:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/health            # served by the app
//! curl -i http://127.0.0.1:3000/users/42          # forwarded to /v1/users/42
//! curl -i 'http://127.0.0.1:3000/search?q=rust'   # forwarded, query rewritten
//! curl -i http://127.0.0.1:3000/api/anything      # the proxy as a service
//! ```
//!
//! Set `APP_ADDR` and `UPSTREAM_ADDR` to listen elsewhere (`127.0.0.1:0`
//! picks free ports; `tests/examples.rs` does that).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::routing::get;
use http::{HeaderValue, Response};
use switchyard::{Body, Proxy, Retry};
use tokio::net::TcpListener;

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The axum app's address.
    pub app: SocketAddr,
    /// The upstream's address.
    pub upstream: SocketAddr,
}

/// Starts the upstream and the app in front of it.
///
/// # Errors
///
/// When an address cannot be bound or the upstream URL is invalid.
pub async fn start(
    app_addr: &str,
    upstream_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let upstream = upstream_server(upstream_addr).await?;
    // GETs are retried after a reset connection or a 503 (Retry-After honoured).
    let proxy = Proxy::builder()
        .target(switchyard::Target::parse(&format!("http://{upstream}"))?)
        .retry(Retry::default().retries_count(1))
        .build()?;
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/users/{id}", get(user))
        .route("/search", get(search))
        .route_service("/api/{*rest}", proxy.clone())
        .with_state(proxy);
    let listener = TcpListener::bind(app_addr).await?;
    let app_local = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Running {
        app: app_local,
        upstream,
    })
}

/// Forwards to another path, adding a request header and a response one.
async fn user(State(proxy): State<Proxy>, Path(id): Path<u64>, req: Request) -> Response<Body> {
    proxy
        .forward(req, &format!("/v1/users/{id}"))
        .rewrite_request_headers(|h| {
            h.insert("x-from-app", HeaderValue::from_static("axum_forward"));
        })
        .rewrite_headers(|h| {
            h.insert("x-proxied-by", HeaderValue::from_static("switchyard"));
        })
        .await
}

/// Forwards with the query rewritten from the incoming one.
async fn search(State(proxy): State<Proxy>, req: Request) -> Response<Body> {
    proxy
        .forward(req, "/v1/search")
        .query_string_with(|q, _| format!("{}&limit=10", q.unwrap_or("")))
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("APP_ADDR", "127.0.0.1:3000"),
        &env_addr("UPSTREAM_ADDR", "127.0.0.1:3001"),
    )
    .await?;
    println!(
        "app on http://{} -> upstream http://{}\ntry: curl -i http://{}/users/42",
        running.app, running.upstream, running.app
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// The upstream: an axum app that answers with what it received.
async fn upstream_server(addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new().fallback(|req: Request| async move {
        let from_app = req
            .headers()
            .get("x-from-app")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        format!("upstream got {} (x-from-app: {from_app})\n", req.uri())
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(local)
}

/// An address from the environment, or the fixed default for humans.
fn env_addr(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}
