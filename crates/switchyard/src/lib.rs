//! Switchyard: a programmable HTTP and WebSocket reverse proxy engine.
//!
//! What http-proxy-3 and @fastify/reply-from are to Node.js, for hyper,
//! tower and axum: build a [`Proxy`] once, then hand it requests from your
//! own server with [`Proxy::web`], or run it on its own with
//! [`Proxy::listen`].
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
//! http-proxy-3 option and [`Hooks`] for its events.
#![warn(missing_docs)]

mod body;
mod error;
mod hooks;
mod options;
mod proxy;
pub mod routing;
pub mod server;
mod target;
mod upstream;

pub use body::{Body, BodyEnd, BodyIdleTimeout};
pub use error::{BoxError, ConfigError, ErrorSide, ProxyError, ServerError, chain as error_chain};
pub use hooks::{Aborted, Flow, FnHooks, Hooks, TunnelStats};
pub use options::{BasicAuth, ClientOptions, CookieRewrite, Options, Pem, XfwdMode};
pub use proxy::{ConnInfo, Proxy, ProxyBuilder, error_response};
pub use server::{ListenOptions, Server, ServerTls};
pub use target::{Protocol, Target};

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
        crate::proxy::hygiene::check(parts)?;
        let path = crate::proxy::path::outgoing_path(target, &parts.uri, opts);
        target
            .uri_for(&path)
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        crate::proxy::headers::request_headers(
            &mut parts.headers,
            &parts.method,
            parts.version,
            parts.uri.authority(),
            body_len,
            target,
            opts,
            crate::proxy::headers::Downstream {
                remote_ip: None,
                tls: false,
                upgrade: false,
                h2_upstream: false,
            },
        );
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
