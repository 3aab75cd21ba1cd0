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
use crate::upstream::tls::UpstreamTls;
use crate::upstream::{self, Upstream};

mod answer;
mod builder;
pub(crate) mod end;
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
pub(crate) use prepare::{Extras, HeadersFn};

/// Facts about the client connection that the proxy needs (its address for
/// `X-Forwarded-For`, TLS for `X-Forwarded-Proto`). `listen` puts this in
/// each request's extensions; an embedding server should do the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Whether the client connected over TLS.
    pub tls: bool,
}

/// Where one call of [`Proxy::try_web`] goes and what it knows, besides the
/// request: all optional, each falling back to the proxy's own.
///
/// ```
/// # fn f(proxy: switchyard::Proxy, target: switchyard::Target, conn: switchyard::ConnInfo,
/// #      req: http::Request<switchyard::Body>) {
/// use switchyard::Call;
/// let answer = proxy.try_web(req, Call::new().target(&target).conn(conn));
/// # drop(answer);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Call<'a> {
    options: Option<&'a Options>,
    target: Option<&'a Target>,
    conn: Option<ConnInfo>,
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
    idle: upstream::IdleCount,
    tunnels: Drain,
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
    /// [`Proxy::web_with`] or [`Call::options`].
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
            idle: self.inner.upstream.idle_count(),
            tunnels: self.inner.tunnels.clone(),
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

    /// The TLS configuration of this proxy's new connections to its targets,
    /// as a handle that reloads or replaces it (see [`UpstreamTls`]).
    pub fn upstream_tls(&self) -> UpstreamTls {
        self.inner.upstream.tls().clone()
    }

    /// Proxies one request with the proxy's options; an error becomes its
    /// default answer ([`error_response`]). The same as
    /// [`try_web`](Self::try_web) with an empty [`Call`], answered.
    ///
    /// The request is prepared when this is called, not when the future is
    /// first polled: the upstream picked, the hooks up to `on_proxy_request`
    /// run, the outgoing head built and, when it gets one attempt, handed to
    /// the connection pool (and a `forward` copy sent). So call it inside the
    /// Tokio runtime; dropping the future before its answer is the client
    /// going away. The future waits for the answer. The same holds for
    /// [`web_with`](Self::web_with) and [`try_web`](Self::try_web).
    pub fn web<B: Into<Body>>(&self, req: Request<B>) -> impl Future<Output = Response<Body>> {
        self.web_with(req, Call::new())
    }

    /// Proxies one request as `call` says (http-proxy-3's
    /// `proxy.web(req, res, options)`: pass `&options`), an error becoming
    /// its default answer.
    pub fn web_with<'a, B: Into<Body>>(
        &'a self,
        req: Request<B>,
        call: impl Into<Call<'a>>,
    ) -> impl Future<Output = Response<Body>> {
        self.try_web(req, call).map(|result| match result {
            Ok(res) => res,
            Err(err) => {
                log_error(&err);
                error_response(&err)
            }
        })
    }

    /// Proxies one request as `call` says, and hands a failure back to the
    /// caller to answer: the one way to answer errors yourself (see the crate
    /// docs, "Handling errors").
    ///
    /// # Errors
    ///
    /// The [`ProxyError`] when proxying failed. [`ProxyError::status`] says
    /// what to answer; `None` means the client is gone or timed out and
    /// nothing should be written. [`Hooks::on_end`] has seen it already.
    pub fn try_web<'a, B: Into<Body>>(
        &'a self,
        req: Request<B>,
        call: impl Into<Call<'a>>,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> {
        let call = call.into();
        let req = req.map(Into::into);
        let extras = Extras {
            conn: call.conn,
            ..Extras::default()
        };
        let opts = call.options.unwrap_or(&self.inner.options);
        self.run(req, opts, call.target, extras)
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
        call: Extras,
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
            let retries = p.retries();
            let Some(ctx) = p.ctx.take() else {
                return Err(ProxyError::Internal("a call answered twice".into()));
            };
            let watch = p.watch.take();
            match result {
                Ok(res) => {
                    let ending = watch.map(|w| w.ending(res.status(), retries));
                    Ok(self.answer(
                        (ctx, ending),
                        res,
                        &mut p.picked,
                        &mut p.answering,
                        p.limits.deadline,
                        opts,
                    ))
                }
                Err(err) => self.fail(ctx, watch.as_ref(), err, retries),
            }
        }
    }

    /// The proxy's upstreams, if it has several.
    pub(crate) fn upstreams(&self) -> Option<&Upstreams> {
        self.inner.upstreams.as_ref()
    }

    /// An error found before the call reached the engine, ended as the
    /// engine's are.
    pub(crate) fn fail_call(&self, err: ProxyError) -> Result<Response<Body>, ProxyError> {
        let ctx = self.inner.hooks.new_ctx();
        let watch = self.inner.hooks.observes_end().then(end::Watch::new);
        self.fail(ctx, watch.as_ref(), err, 0)
    }

    /// Ends a failed call: `on_end` hears of it (when watching), and the
    /// error goes to the caller.
    fn fail(
        &self,
        ctx: H::Ctx,
        watch: Option<&end::Watch>,
        err: ProxyError,
        retries: u32,
    ) -> Result<Response<Body>, ProxyError> {
        debug!("request failed: {}", crate::error::chain(&err));
        if let Some(w) = watch {
            self.inner.hooks.on_end(ctx, &w.failed(&err, retries));
        }
        Err(err)
    }

    /// Ends a call answered without the upstream (by a hook, or a lone
    /// `forward` copy): `on_end` when its body is over.
    fn answered(
        &self,
        ctx: H::Ctx,
        watch: Option<end::Watch>,
        res: Response<Body>,
    ) -> Response<Body> {
        let ending = watch.map(|w| w.ending(res.status(), 0));
        end::watch_response(&self.inner, res, ctx, ending)
    }
}

// === impl ConnInfo ===

impl ConnInfo {
    /// A connection from `remote`, over TLS when `tls`.
    pub fn new(remote: SocketAddr, tls: bool) -> Self {
        Self { remote, tls }
    }
}

// === impl Call ===

impl<'a> Call<'a> {
    /// Everything from the proxy: its options, its target or upstreams.
    pub fn new() -> Self {
        Self::default()
    }

    /// These options instead of the proxy's.
    #[must_use]
    pub fn options(mut self, options: &'a Options) -> Self {
        self.options = Some(options);
        self
    }

    /// This target, before the options' target or the proxy's upstreams.
    #[must_use]
    pub fn target(mut self, target: &'a Target) -> Self {
        self.target = Some(target);
        self
    }

    /// The client connection, for `X-Forwarded-*` and the head checks: what
    /// a server that knows it passes instead of putting a [`ConnInfo`] in
    /// each request's extensions (which costs an allocation per request).
    /// Hooks that look for `ConnInfo` in the extensions do not see it then.
    #[must_use]
    pub fn conn(mut self, conn: ConnInfo) -> Self {
        self.conn = Some(conn);
        self
    }
}

impl<'a> From<&'a Options> for Call<'a> {
    fn from(options: &'a Options) -> Self {
        Self::new().options(options)
    }
}

impl<'a> From<&'a Arc<Options>> for Call<'a> {
    fn from(options: &'a Arc<Options>) -> Self {
        Self::new().options(options)
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

    /// How many HTTP/1 connections to upstreams wait idle in the pool (HTTP/2
    /// connections, shared by their requests, are not counted). Takes the
    /// pool's lock for a moment: for a scrape, not for every request.
    pub fn idle_upstream_connections(&self) -> usize {
        self.idle.get()
    }

    /// How many WebSocket tunnels are open, as [`Proxy::tunnels`].
    pub fn tunnels(&self) -> usize {
        self.tunnels.connections() / 2
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
