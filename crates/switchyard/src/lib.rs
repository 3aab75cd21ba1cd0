//! Switchyard: a programmable HTTP and WebSocket reverse proxy engine.
//!
//! What http-proxy-3 and @fastify/reply-from are to Node.js, for hyper,
//! tower and axum: build a [`Proxy`] once, then hand it requests from your
//! own server with [`Proxy::web`], or run it on its own with
//! [`Proxy::listen`]. [`server`] serves any `tower::Service` the same way (TLS,
//! HTTP/2, head limits and timeouts, graceful shutdown), for the other
//! listeners of a program.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchyard::{Proxy, Target};
//!
//! let proxy = Proxy::builder()
//!     .target(Target::parse("http://127.0.0.1:9000")?)
//!     .configure(|o| {
//!         o.xfwd = true;
//!         o.change_origin = true;
//!     })
//!     .build()?;
//! let server = proxy.listen("127.0.0.1:8000").await?;
//! println!("proxying on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Requests and responses stream through; upstream connections are pooled
//! (keep-alive) by default; hop-by-hop headers are stripped both ways
//! (RFC 9110 §7.6.1); every failure is a [`ProxyError`] with one status
//! code, and nothing on the request path panics. See [`Options`] for every
//! http-proxy-3 option and [`Hooks`] for its events (with an example of
//! implementing them).
//!
//! # Inside axum or tower
//!
//! A [`Proxy`] is a `tower::Service` (mount it with `route_service` or
//! `fallback_service`), [`Proxy::layer`] makes a [`ProxyLayer`], and
//! [`Proxy::forward`] is @fastify/reply-from's `reply.from(source, opts)`
//! for a handler, with every one of its options as a method of
//! [`Forward`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, extract::{Request, State}, routing::get};
//! use switchyard::{Body, Proxy};
//!
//! async fn users(State(proxy): State<Proxy>, req: Request) -> http::Response<Body> {
//!     proxy.forward(req, "/v1/users").query_string("limit=10").await
//! }
//!
//! let proxy = Proxy::to("http://127.0.0.1:9000")?;
//! let app: Router = Router::new()
//!     .route("/users", get(users))
//!     .route("/health", get(|| async { "ok" }))
//!     .with_state(proxy);
//! # Ok(())
//! # }
//! ```
//!
//! # Handling errors
//!
//! There is one way to answer a failure yourself: call [`Proxy::try_web`]
//! (or [`Forward::try_send`]) and match its `Err`, a [`ProxyError`].
//! [`Proxy::web`], awaiting a [`Forward`], the tower service and
//! [`Proxy::listen`] answer it for you with [`error_response`]: the status
//! of the table below and a short generic text. Hooks do not answer errors;
//! [`Hooks::on_end`] sees every one (with what else happened to the
//! request), for logs and metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use http::{Request, Response, StatusCode};
//! use switchyard::{Body, Call, Proxy, Target};
//!
//! let proxy = Proxy::to("http://127.0.0.1:9000")?;
//! let api = Target::parse("http://127.0.0.1:9001")?;
//! let req = Request::get("/users").body(Body::empty())?;
//! let res = match proxy.try_web(req, Call::new().target(&api)).await {
//!     Ok(res) => res,
//!     // The client is gone: nothing to answer.
//!     Err(err) if err.status().is_none() => return Ok(()),
//!     Err(err) => {
//!         eprintln!("{}", switchyard::error_chain(&err));
//!         let mut page = Response::new(Body::from("<h1>We'll be right back</h1>"));
//!         *page.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!         page
//!     }
//! };
//! # drop(res);
//! # Ok(())
//! # }
//! ```
//!
//! Several upstreams for one route are an [`Upstreams`] (round robin,
//! least outstanding requests or power of two choices, passive and active
//! health); retries are a [`Retry`] policy.
//!
//! # Errors and status codes
//!
//! Every failure is one [`ProxyError`] kind, and [`ProxyError::status`] is
//! the one place that maps kinds to statuses:
//!
//! | kind | status | when |
//! | --- | --- | --- |
//! | [`ProxyError::BadRequest`] | 400 | the request cannot be forwarded as sent; a `forward` source with a `..` segment (also `%2e%2e`, `..%2f`) or outside the base path |
//! | [`ProxyError::UriTooLong`] | 414 | the request target is longer than [`HeadLimits::max_uri_length`] |
//! | [`ProxyError::HeadersTooLarge`] | 431 | the request head is larger than [`HeadLimits::max_header_size`] |
//! | [`ProxyError::NoTarget`] | 500 | no target, upstreams or `forward` to send to |
//! | [`ProxyError::InvalidCall`] | 500 | the call's options contradict each other (a replacement body on GET/HEAD) |
//! | [`ProxyError::Internal`] | 500 | a bug or an impossible state; logged, never echoed |
//! | [`ProxyError::UnsupportedUpgrade`] | 501 | an upgrade the target's protocol cannot carry |
//! | [`ProxyError::UpstreamConnect`] | 502 | refused, unreachable, DNS failure, TLS handshake or verification failure |
//! | [`ProxyError::UpstreamReset`] | 502 | the upstream closed or reset the connection before a response head |
//! | [`ProxyError::UpstreamMalformed`] | 502 | the upstream's answer is not HTTP |
//! | [`ProxyError::UpstreamHeadTooLarge`] | 502 | the upstream's response head is larger than [`ClientOptions::max_response_header_size`] |
//! | [`ProxyError::Upgrade`] | 502 | the protocol switch with the upstream failed |
//! | [`ProxyError::ConnectTimeout`] | 504 | `ClientOptions::connect_timeout`: no connection in time |
//! | [`ProxyError::UpstreamTimeout`] | 504 | `headers_timeout` or `proxy_timeout`: no response head in time |
//! | [`ProxyError::TotalTimeout`] | 504 | `total_timeout` expired before the response head (after it, the body fails) |
//! | [`ProxyError::ClientTimeout`] | nothing written | the client was idle longer than `timeout`: its connection is dropped |
//! | [`ProxyError::ClientGone`] | nothing written | the client went away |
//!
//! After the response head is sent, a failure can only cut the body:
//! `body_timeout` and `proxy_timeout` fail it with [`BodyIdleTimeout`],
//! `total_timeout` with [`ProxyError::TotalTimeout`]. A 503 comes from the
//! upstream itself, relayed after `max_retries_on_503` retries.
//!
//! A refused connection is 502 (RFC 9110 §15.6.3: the gateway got no valid
//! answer); reply-from answers 500 and configurable-http-proxy 503, and the
//! `switchyard` server maps the kind to 503 itself. Error bodies are a short
//! generic text ([`ProxyError::public_message`]), never the upstream's
//! address or words.
#![warn(missing_docs)]

// The modules in layers, lowest first. A module uses only modules of lower
// layers (`tests/layering.rs` checks it), so there is no import cycle and each
// can be read knowing only what is below it:
//
// 1. `error`, `routing`, `drain`, `head_timer`, `send_timer`, `crypto`: stand on
//    their own;
// 2. `target`: where a request goes;
// 3. `options`, `body`: what a call is given and streams;
// 4. `hooks` (user code), `upstream` (the pools, TLS and the connector);
// 5. `balance`: several upstreams, health-checked through `upstream`;
// 6. `retry`: the policy of when to try again;
// 7. `proxy`: the per-call pipeline, prepare → send → answer;
// 8. `reply`, `service`, `server`: the front ends (`Forward`, tower, the
//    accept loop) over `proxy`.
mod balance;
mod body;
pub mod crypto;
mod drain;
mod error;
mod head_timer;
mod hooks;
mod options;
mod proxy;
mod reply;
mod retry;
pub mod routing;
mod send_timer;
pub mod server;
mod service;
mod target;
mod upstream;

pub use balance::{Balance, HealthCheck, Upstreams, UpstreamsBuilder};

pub use body::{Body, BodyEnd, BodyIdleTimeout};
pub use error::{BoxError, ConfigError, ErrorSide, ProxyError, ServerError, chain as error_chain};
pub use hooks::{Flow, FnHooks, Hooks, Outcome, TunnelStats};
pub use options::{BasicAuth, ClientOptions, CookieRewrite, Options, Pem, XfwdMode};
pub use proxy::hygiene::{HeadLimits, is_valid_host};
pub use proxy::{Call, ConnInfo, Proxy, ProxyBuilder, ProxyStats, error_response};
pub use reply::Forward;
pub use retry::{Retry, RetryContext};
pub use server::{ListenOptions, Server, ServerStats, TlsConfig};
pub use service::{ProxyLayer, ProxyService, ResponseFuture};
pub use target::{Protocol, Target};
pub use upstream::tls::UpstreamTls;

/// Entry points for the fuzz targets in `fuzz/`: the pure passes, without
/// sockets. Not part of the public API.
#[doc(hidden)]
pub mod fuzzing {
    use http::request;

    use crate::{Options, ProxyError, Target};

    /// What `web` does to a request head before sending it: the hygiene
    /// checks, the outgoing path and the header pass. Returns the outgoing
    /// path and query.
    ///
    /// # Errors
    ///
    /// The 400 that `web` would answer.
    pub fn request_head(
        parts: &mut request::Parts,
        body_len: Option<u64>,
        target: &Target,
        opts: &Options,
    ) -> Result<String, ProxyError> {
        let from_wire = parts.extensions.get::<crate::ConnInfo>().is_some();
        crate::proxy::hygiene::check(parts, from_wire)?;
        let path = crate::proxy::path::outgoing_path(target, &parts.uri, opts);
        target
            .uri_for(&path)
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        let down = crate::proxy::headers::Downstream {
            remote_ip: None,
            tls: false,
            upgrade: false,
            body_len,
        };
        crate::proxy::headers::request_headers(parts, target, opts, down);
        Ok(path)
    }

    /// The response pass (hop-by-hop, `Location`, `Set-Cookie`) on a head.
    pub fn response_head(
        headers: &mut http::HeaderMap,
        status: http::StatusCode,
        target: &Target,
        client_host: Option<&http::HeaderValue>,
        opts: &Options,
    ) {
        crate::proxy::headers::response_headers(headers, false);
        crate::proxy::rewrite::location(headers, status, target, client_host, opts);
        crate::proxy::rewrite::cookies(
            headers,
            &opts.cookie_domain_rewrite,
            &opts.cookie_path_rewrite,
        );
    }
}
