//! The proxy: build once, then hand it requests.
//!
//! One call goes through three stages, each a module of its own:
//!
//! 1. [`prepare`], run when the call is made, before anything waits: the
//!    upstream picked, the client's head checked, the hooks up to
//!    `on_proxy_request`, the header passes, and the request handed to the
//!    upstream side. Its product is a [`Prepared`](prepare::Prepared) call.
//! 2. [`send`]: the wait for the response head under the call's limits
//!    ([`Limits`](send::Limits)), with retries, failover and redirects.
//! 3. [`answer`]: the head as the client gets it (hop-by-hop fields,
//!    `on_proxy_response`, `Location` and cookie rewrites), the body's timers
//!    and `on_end`, or the tunnel of an upgrade.
//!
//! Beside them, the passes and features they use: [`headers`], [`hygiene`],
//! [`path`] and [`rewrite`] are pure functions over heads; [`forward`] is the
//! `forward` copy, [`redirect`] follows redirects, [`upgrade`] runs tunnels.
//!
//! This file holds the [`Proxy`] type and its entry points; the stages add
//! their methods to it. The stages import downwards only: `prepare` knows what
//! `send` and `answer` take, `answer` knows `send`'s limits, `send` neither.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tracing::debug;

use crate::balance::Upstreams;
use crate::body::Body;
use crate::drain::Drain;
use crate::error::{ConfigError, ProxyError};
use crate::hooks::{FnHooks, Hooks};
use crate::options::{ClientOptions, Options};
use crate::retry::Retry;
use crate::target::Target;
use crate::upstream::{self, Upstream};

mod answer;
mod builder;
pub(crate) mod forward;
pub(crate) mod headers;
pub(crate) mod hygiene;
pub(crate) mod path;
mod prepare;
pub(crate) mod redirect;
pub(crate) mod rewrite;
mod send;
pub(crate) mod upgrade;

pub use builder::ProxyBuilder;
pub(crate) use prepare::{Call, HeadersFn};

/// Facts about the client connection that the proxy needs (its address for
/// `X-Forwarded-For`, TLS for `X-Forwarded-Proto`). `listen` puts this in
/// each request's extensions; an embedding server should do the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Whether the client connected over TLS.
    pub tls: bool,
}

/// A reverse proxy: forwards requests to targets and streams answers back.
///
/// Cheap to clone (one `Arc`) and shareable across tasks; every clone shares
/// one pool of upstream connections.
pub struct Proxy<H: Hooks = FnHooks> {
    inner: Arc<Inner<H>>,
}

/// Live counters of a proxy and of every clone of it, for metrics; from
/// [`Proxy::stats`]. Cheap to clone; each read is an atomic load.
#[derive(Clone, Debug)]
pub struct ProxyStats {
    upstream: Arc<upstream::Counters>,
}

pub(crate) struct Inner<H> {
    pub(crate) options: Arc<Options>,
    pub(crate) upstream: Upstream,
    pub(crate) hooks: H,
    pub(crate) upstreams: Option<Upstreams>,
    pub(crate) retry: Option<Arc<Retry>>,
    /// The open WebSocket tunnels, told to close by [`Proxy::close_tunnels`].
    pub(crate) tunnels: Drain,
}

// === impl Proxy ===

impl Proxy {
    /// A builder with default options and no hooks.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::new(
            Options::default(),
            ClientOptions::default(),
            FnHooks::default(),
        )
    }

    /// A proxy to `target` with every other option at its default.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the target does not parse.
    pub fn to(target: &str) -> Result<Self, ConfigError> {
        Self::builder().target(Target::parse(target)?).build()
    }
}

impl<H: Hooks> Clone for Proxy<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<H: Hooks> std::fmt::Debug for Proxy<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<H: Hooks> Proxy<H> {
    /// The default options of this proxy, to copy and change for
    /// [`Proxy::web_with`].
    pub fn options(&self) -> &Arc<Options> {
        &self.inner.options
    }

    /// The hooks of this proxy.
    pub fn hooks(&self) -> &H {
        &self.inner.hooks
    }

    /// The proxy's counters, live: keep the handle and read it when metrics
    /// are scraped.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            upstream: self.inner.upstream.counters().clone(),
        }
    }

    /// Closes every open WebSocket tunnel of this proxy (and of its clones) the way a
    /// server going away should (RFC 6455 §7.4.1, code 1001 "going away"): each direction
    /// is let finish the frame it is in the middle of, then the client gets a close frame
    /// and the target a masked one, and both connections are closed once the peers answer
    /// (or after a short wait). A direction that does not reach the end of its frame in
    /// time, or a stream that is not WebSocket framing, is cut instead. Tunnels opened
    /// from now on are closed the same way as soon as they open. Returns when every tunnel
    /// has ended; each is bounded by its own short deadlines.
    pub async fn close_tunnels(&self) {
        self.inner.tunnels.shutdown().await;
    }

    /// How many WebSocket tunnels are open.
    pub fn tunnels(&self) -> usize {
        // Each tunnel registers its two directions, together.
        self.inner.tunnels.connections() / 2
    }

    /// Proxies one request with the default options; errors become their
    /// status code with a short generic body (after the `on_error` hook).
    ///
    /// The request is prepared when this is called, not when the future is
    /// first polled: the upstream picked, the hooks up to `on_proxy_request`
    /// run, the outgoing head built and, when it gets one attempt, handed to
    /// the connection pool (and a `forward` copy sent). So call it inside the
    /// Tokio runtime; dropping the future unpolled is a client abort
    /// (`on_client_abort`). The future waits for the answer. The same holds
    /// for every method below.
    pub fn web<B: Into<Body>>(&self, req: Request<B>) -> impl Future<Output = Response<Body>> {
        self.web_with(req, &self.inner.options)
    }

    /// Proxies one request with these options (http-proxy-3's
    /// `proxy.web(req, res, options)`).
    pub fn web_with<'a, B: Into<Body>>(
        &'a self,
        req: Request<B>,
        opts: &'a Options,
    ) -> impl Future<Output = Response<Body>> {
        self.try_web_with(req, opts).map(|result| match result {
            Ok(res) => res,
            Err(err) => {
                log_error(&err);
                error_response(&err)
            }
        })
    }

    /// Proxies one request to `target`, with the default options otherwise:
    /// the common case of a routing front end.
    ///
    /// # Errors
    ///
    /// The [`ProxyError`] when proxying failed and `on_error` gave no response.
    pub fn try_web_to<B: Into<Body>>(
        &self,
        req: Request<B>,
        target: &Target,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> {
        let req = req.map(Into::into);
        self.run(req, &self.inner.options, Some(target), Call::default())
    }

    /// [`try_web_to`](Self::try_web_to) for a server that knows the client
    /// connection: `conn` serves as the request's [`ConnInfo`] (for
    /// `X-Forwarded-*` and the head checks) without going through the
    /// request's extensions, which cost an allocation per request. Hooks that
    /// look for `ConnInfo` in the extensions do not see it. `None` (a UNIX
    /// socket, say) is `try_web_to`.
    ///
    /// # Errors
    ///
    /// As [`try_web_to`](Self::try_web_to).
    pub fn try_web_to_conn<B: Into<Body>>(
        &self,
        req: Request<B>,
        target: &Target,
        conn: Option<ConnInfo>,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> {
        let req = req.map(Into::into);
        let call = Call {
            conn,
            ..Call::default()
        };
        self.run(req, &self.inner.options, Some(target), call)
    }

    /// Proxies one request, returning the typed error instead of an error page.
    ///
    /// # Errors
    ///
    /// The [`ProxyError`] when proxying failed and `on_error` gave no
    /// response. [`ProxyError::status`] says what to answer; `None` means the
    /// client is gone or timed out and nothing should be written.
    pub fn try_web_with<'a, B: Into<Body>>(
        &'a self,
        req: Request<B>,
        opts: &'a Options,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> {
        let req = req.map(Into::into);
        self.run(req, opts, None, Call::default())
    }

    /// One call: picks the upstream (the call's target, the call's
    /// upstreams, the options' target, the proxy's upstreams, in that
    /// order), prepares the outgoing request at once, and returns the future
    /// that sends it and answers.
    ///
    /// Not an `async fn`, nor are the layers under it on the common path
    /// (`complete`, `Proxy::send`, the HTTP/1 pool's `send`): an `async fn`
    /// keeps its arguments in its future twice (as passed and as moved into
    /// its body), for as long as it runs, and each caller moves its callee's
    /// future into its own. The request head alone is 272 bytes, so every
    /// copy of it in a future shows in each request's allocation.
    pub(crate) fn run<'a>(
        &'a self,
        req: Request<Body>,
        opts: &'a Options,
        target: Option<&Target>,
        call: Call,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + use<'a, H> {
        match self.prepare(req, opts, target, call) {
            Ok(prepared) => Either::Left(self.complete(prepared, opts)),
            Err(done) => Either::Right(std::future::ready(done)),
        }
    }

    /// What is left of a call once it is prepared: [`send`](Self::sent) it
    /// and [`answer`](Self::answer).
    ///
    /// The future uses the fields of `p` where they are (moving them into
    /// locals would give each its own slot in the future).
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold `p` twice (as passed, and moved into its body)"
    )]
    fn complete<'a>(
        &'a self,
        mut p: prepare::Prepared<'a, H>,
        opts: &'a Options,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + use<'a, H> {
        async move {
            let result = self
                .sent(&mut p.sending, &mut p.picked, &p.limits, opts)
                .await;
            p.disarm();
            match result {
                Ok(res) => Ok(self.answer(
                    p.ctx,
                    res,
                    &mut p.picked,
                    &mut p.answering,
                    p.limits.deadline,
                    opts,
                )),
                Err(err) => self.fail(&mut p.ctx, err, p.skip_error_hook),
            }
        }
    }

    /// The proxy's upstreams, if it has several.
    pub(crate) fn upstreams(&self) -> Option<&Upstreams> {
        self.inner.upstreams.as_ref()
    }

    /// An error found before the call reached the engine, handled as the
    /// engine's are.
    pub(crate) fn fail_call(&self, err: ProxyError) -> Result<Response<Body>, ProxyError> {
        let mut ctx = self.inner.hooks.new_ctx();
        self.fail(&mut ctx, err, false)
    }

    pub(crate) fn log_error(&self, err: &ProxyError) {
        log_error(err);
    }

    /// Logs the error once and runs `on_error` (unless the caller answers
    /// errors itself).
    fn fail(
        &self,
        ctx: &mut H::Ctx,
        err: ProxyError,
        skip_error_hook: bool,
    ) -> Result<Response<Body>, ProxyError> {
        debug!("request failed: {}", crate::error::chain(&err));
        if skip_error_hook {
            return Err(err);
        }
        match self.inner.hooks.on_error(ctx, &err) {
            Some(res) => Ok(res),
            None => Err(err),
        }
    }
}

// === impl ProxyStats ===

impl ProxyStats {
    /// Requests sent again on a new upstream connection because the pooled
    /// connection they were given closed before answering: unsent (the target
    /// had closed it while idle), or sent and then closed or reset with no
    /// byte of an answer, for a request that is safe to send twice (an
    /// idempotent method, and no body or one kept in memory).
    pub fn upstream_retries(&self) -> u64 {
        self.upstream
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Logs a failure once, where it becomes an answer, with its whole cause
/// chain (a TLS verification failure names the certificate problem); the
/// client only ever gets the short generic text.
pub(crate) fn log_error(err: &ProxyError) {
    let chain = crate::error::chain(err);
    match err.side() {
        crate::error::ErrorSide::Upstream => tracing::warn!("upstream error: {chain}"),
        crate::error::ErrorSide::Internal => tracing::error!("proxy error: {chain}"),
        crate::error::ErrorSide::Downstream => debug!("request not proxied: {chain}"),
    }
}

/// The default answer for an error: its status and a short generic text.
pub fn error_response(err: &ProxyError) -> Response<Body> {
    let status = err.status().unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = Response::new(Body::from(err.public_message()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    ) {
        // The request could not be read safely (or was refused unread):
        // nothing after it on this connection can be trusted either
        // (RFC 9112 §6.3).
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
