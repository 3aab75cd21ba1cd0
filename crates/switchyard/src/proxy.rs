//! The proxy: build once, then hand it requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, request};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::debug;

use crate::balance::{Lease, Picked, Upstreams};
use crate::body::{Body, BodyIdleTimeout, ClientBodyError};
use crate::error::{ConfigError, ProxyError};
use crate::hooks::{Aborted, Flow, FnHooks, Hooks};
use crate::options::{ClientOptions, Options};
use crate::retry::{self, Retry};
use crate::target::{Protocol, Target};
use crate::upstream::{self, Upstream};

pub(crate) mod forward;
pub(crate) mod headers;
pub(crate) mod hygiene;
pub(crate) mod path;
pub(crate) mod redirect;
pub(crate) mod rewrite;
pub(crate) mod upgrade;

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

pub(crate) struct Inner<H> {
    pub(crate) options: Arc<Options>,
    pub(crate) upstream: Upstream,
    pub(crate) hooks: H,
    pub(crate) upstreams: Option<Upstreams>,
    pub(crate) retry: Option<Arc<Retry>>,
}

/// Builds a [`Proxy`].
#[derive(Debug)]
pub struct ProxyBuilder<H = FnHooks> {
    options: Options,
    client: ClientOptions,
    hooks: H,
    upstreams: Option<Upstreams>,
    retry: Option<Retry>,
}

pub(crate) type HeadersFn = Box<dyn FnOnce(&mut HeaderMap) + Send>;

/// What one call adds to the options: set by [`Forward`](crate::Forward),
/// empty for [`Proxy::web`].
#[derive(Default)]
pub(crate) struct Call {
    /// The outgoing path and query, instead of the target prefix + request path.
    pub(crate) path: Option<String>,
    /// Send the target's `Host` (reply-from always does).
    pub(crate) change_origin: bool,
    /// The last word on the outgoing request headers.
    pub(crate) rewrite_request_headers: Option<HeadersFn>,
    /// Several upstreams for this call.
    pub(crate) upstreams: Option<Upstreams>,
    /// The retry policy for this call, instead of the proxy's.
    pub(crate) retry: Option<Arc<Retry>>,
    /// The caller answers errors itself: skip `Hooks::on_error`.
    pub(crate) skip_error_hook: bool,
    /// The client connection, given by the caller instead of in the request's
    /// extensions.
    pub(crate) conn: Option<ConnInfo>,
}

// === impl Proxy ===

impl Proxy {
    /// A builder with default options and no hooks.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            options: Options::default(),
            client: ClientOptions::default(),
            hooks: FnHooks::default(),
            upstreams: None,
            retry: None,
        }
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
    /// that exchanges it and finishes the response or the error.
    ///
    /// Not an `async fn`, nor are the layers under it on the common path
    /// (`exchange`, `Proxy::send`, the HTTP/1 pool's `send`): an `async fn`
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
            Ok(prepared) => Either::Left(self.exchange(prepared, opts)),
            Err(done) => Either::Right(std::future::ready(done)),
        }
    }

    /// The synchronous half of a call, up to the outgoing request. `Err` is
    /// the call's result already: an early answer, or the error after
    /// `on_error`.
    #[allow(
        clippy::result_large_err,
        reason = "moved once, and the `Ok` side is larger: boxing would cost an allocation per call"
    )]
    fn prepare(
        &self,
        req: Request<Body>,
        opts: &Options,
        target: Option<&Target>,
        mut call: Call,
    ) -> Result<Prepared<'_, H>, Result<Response<Body>, ProxyError>> {
        let hooks = &self.inner.hooks;
        let mut ctx = hooks.new_ctx();
        let deadline = opts.total_timeout.map(|t| (Instant::now() + t, t));
        let pool = call.upstreams.as_ref().or(self.inner.upstreams.as_ref());
        let picked = match (target, &call.upstreams, &opts.target, pool) {
            (Some(t), ..) | (None, None, Some(t), _) => Some(Picked::single(t.clone())),
            (None, _, _, Some(pool)) => {
                pool.ensure_health_checks(&self.inner.upstream);
                Picked::from_pool(pool)
            }
            _ => None,
        };
        let Some(picked) = picked else {
            if let Some(fwd) = &opts.forward {
                forward::send(&self.inner, req, fwd, opts, call.conn);
                return Err(Ok(Response::new(Body::empty())));
            }
            return Err(self.fail(&mut ctx, ProxyError::NoTarget, call.skip_error_hook));
        };
        let guard = hooks.observes_abort().then(|| {
            Box::new(AbortGuard {
                inner: &self.inner,
                method: req.method().clone(),
                uri: req.uri().clone(),
                target: picked.target.clone(),
                armed: true,
            })
        });
        match self.outgoing(&mut ctx, req, &picked.target, opts, &mut call) {
            Ok(out) => {
                let retry = call.retry.take();
                let policy = retry.as_deref().or(self.inner.retry.as_deref());
                let repeat =
                    retry::repeatable(policy, &out.head.method, out.replayable, &out.body, &picked);
                let attempt = match repeat {
                    // Handed over now, so that the call's future holds the
                    // upstream's (boxed) exchange and not the request as well.
                    None => Attempt::Once(
                        self.inner
                            .upstream
                            .request(&picked.target, Request::from_parts(out.head, out.body)),
                        Instant::now(),
                    ),
                    Some(keep_body) => Attempt::Again(Box::new((out.head, out.body, keep_body))),
                };
                Ok(Prepared {
                    guard,
                    ctx,
                    picked,
                    deadline,
                    attempt,
                    carried: out.carried,
                    retry,
                    skip_error_hook: call.skip_error_hook,
                })
            }
            Err(stop) => {
                if let Some(mut g) = guard {
                    g.armed = false;
                }
                Err(match stop {
                    Stop::Answer(res) => Ok(res),
                    Stop::Fail(err) => self.fail(&mut ctx, err, call.skip_error_hook),
                })
            }
        }
    }

    /// The asynchronous half of a call: the exchange with the upstream
    /// (retries and failover included), redirects, and the answer.
    ///
    /// The future uses the fields of `p` where they are (moving them into
    /// locals would give each its own slot in the future).
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold `p` twice (as passed, and moved into its body)"
    )]
    fn exchange<'a>(
        &'a self,
        mut p: Prepared<'a, H>,
        opts: &'a Options,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + use<'a, H> {
        async move {
            let result = match p.attempt {
                Attempt::Once(fut, start) => {
                    let target = &p.picked.target;
                    let activity = p.carried.activity.as_ref();
                    let result = self
                        .wait(fut, start, target, opts, activity, p.deadline)
                        .await;
                    p.picked.report(&result);
                    result
                }
                Attempt::Again(again) => {
                    let (head, body, keep_body) = *again;
                    let policy = p.retry.as_deref().or(self.inner.retry.as_deref());
                    retry::exchange(
                        self,
                        head,
                        body,
                        keep_body,
                        &mut p.picked,
                        opts,
                        p.carried.activity.as_ref(),
                        p.deadline,
                        policy,
                    )
                    .await
                }
            };
            let result = match (result, p.carried.redirect_head) {
                (Ok(res), Some(redirect)) => {
                    let (max, head) = *redirect;
                    // After a failover or retry, the member that answered.
                    let target = p.picked.target.clone();
                    // Boxed: rarely taken, and as large as the rest of this future.
                    Box::pin(redirect::follow(
                        self, res, head, &target, opts, max, p.deadline,
                    ))
                    .await
                }
                (result, _) => result,
            };
            if let Some(g) = &mut p.guard {
                g.armed = false;
            }
            let res = match result {
                Ok(res) => res,
                Err(err) => return self.fail(&mut p.ctx, err, p.skip_error_hook),
            };
            let answer = self.answer(
                &mut p.ctx,
                res,
                &p.picked.target,
                opts,
                p.carried.client_host.as_ref(),
                p.carried.on_upgrade,
            );
            Ok(match answer {
                Done::Response(res) => {
                    self.finish_body(res, p.ctx, opts, p.deadline, p.picked.take_lease())
                }
                Done::Early(res) => res,
                Done::Upgrade(up) => upgrade::finish(&self.inner, p.ctx, up),
            })
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

    /// The outgoing request: the head checks, `on_start`, the body's timers,
    /// the path, the header passes and `on_proxy_request`.
    #[allow(
        clippy::result_large_err,
        reason = "moved once, and the `Ok` side is larger: boxing would cost an allocation per call"
    )]
    fn outgoing(
        &self,
        ctx: &mut H::Ctx,
        req: Request<Body>,
        target: &Target,
        opts: &Options,
        call: &mut Call,
    ) -> Result<Outgoing, Stop> {
        let hooks = &self.inner.hooks;
        let (mut parts, body) = req.into_parts();
        let conn = call
            .conn
            .or_else(|| parts.extensions.get::<ConnInfo>().copied());
        hygiene::check(&mut parts, conn.is_some())?;
        let body = body.into_downstream();
        if let Flow::Respond(res) = hooks.on_start(ctx, &parts, target) {
            return Err(Stop::Answer(res));
        }
        let websocket = parts.version == Version::HTTP_11
            && headers::is_websocket_upgrade(&parts.method, &parts.headers);
        let on_upgrade = if websocket {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let upgrade = on_upgrade.is_some();
        if upgrade && target.protocol() == Protocol::Http2 {
            return Err(ProxyError::UnsupportedUpgrade.into());
        }
        // A body already at its end (most GETs) has nothing to time or watch.
        let empty = body.is_end_stream();
        let body = match opts.timeout {
            Some(limit) if !empty => {
                body.with_idle_timeout(limit, |d| Box::new(ClientBodyError::Timeout(d)))
            }
            _ => body,
        };
        let body = match opts.request_body_timeout {
            Some(limit) if !empty => {
                body.with_idle_timeout(limit, |d| Box::new(ClientBodyError::Timeout(d)))
            }
            _ => body,
        };
        // Both timeouts count from the client's last progress: a slow but
        // steady upload is not idle, whatever its total time.
        let activity = (opts.timeout.is_some() || opts.proxy_timeout.is_some()).then(Activity::new);
        let body = match &activity {
            Some(a) if !empty => {
                let a = a.clone();
                body.on_data(move |_| a.touch())
            }
            _ => body,
        };
        let body_len = if empty {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        // The Host the client used, for `auto_rewrite`, before `change_origin`.
        let client_host = match parts.uri.authority() {
            Some(a) if parts.version == Version::HTTP_2 => HeaderValue::from_str(a.as_str()).ok(),
            _ => parts.headers.get(header::HOST).cloned(),
        };
        let path = call
            .path
            .take()
            .unwrap_or_else(|| path::outgoing_path(target, &parts.uri, opts));
        let forward_uri = match &opts.forward {
            Some(fwd) if !upgrade => fwd.uri_for(path::outgoing_path(fwd, &parts.uri, opts)).ok(),
            _ => None,
        };
        let uri = target
            .uri_for(path)
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        headers::request_headers(
            &mut parts.headers,
            &parts.method,
            parts.version,
            parts.uri.authority(),
            body_len,
            target,
            opts,
            headers::Downstream {
                remote_ip: conn.map(|c| c.remote.ip()),
                tls: conn.is_some_and(|c| c.tls),
                upgrade,
                h2_upstream: target.protocol() == Protocol::Http2,
            },
        );
        if call.change_origin && !opts.headers.contains_key(header::HOST) {
            parts
                .headers
                .insert(header::HOST, target.host_header().clone());
        }
        parts.uri = uri;
        if let Some(m) = &opts.method {
            parts.method = m.clone();
        }
        parts.version = crate::balance::version_for(target);
        let flow = if upgrade {
            hooks.on_proxy_request_ws(ctx, &mut parts)
        } else {
            hooks.on_proxy_request(ctx, &mut parts)
        };
        if let Flow::Respond(res) = flow {
            return Err(Stop::Answer(res));
        }
        if let Some(f) = call.rewrite_request_headers.take() {
            f(&mut parts.headers);
        }
        let body = match (&opts.forward, forward_uri) {
            (Some(fwd), Some(uri)) => forward::tee(&self.inner, &parts, uri, body, fwd),
            _ => body,
        };
        let replayable = body_len == Some(0) && !upgrade;
        let redirect_head = opts
            .follow_redirects
            .filter(|_| replayable)
            .map(|max| Box::new((max, clone_head(&parts))));
        Ok(Outgoing {
            head: parts,
            body,
            replayable,
            carried: Carried {
                activity,
                on_upgrade,
                client_host,
                redirect_head,
            },
        })
    }

    /// The upstream's answer as the client gets it: the upgrade handed on,
    /// or the response's hop-by-hop fields dropped, `on_proxy_response`, and
    /// the `Location` and cookie rewrites.
    fn answer(
        &self,
        ctx: &mut H::Ctx,
        res: Response<Incoming>,
        target: &Target,
        opts: &Options,
        client_host: Option<&HeaderValue>,
        on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Done {
        if let Some(on_upgrade) = on_upgrade {
            return Done::Upgrade(upgrade::Pending {
                on_upgrade,
                response: res,
            });
        }
        let (mut head, body) = res.into_parts();
        headers::response_headers(&mut head.headers, false);
        // The upstream's HTTP version is a property of that hop: the client
        // gets the version of its own connection (an HTTP/1.0 origin must not
        // turn the client's keep-alive connection into a 1.0 one).
        head.version = Version::HTTP_11;
        let mut res = Response::from_parts(head, Body::from(body));
        if let Flow::Respond(res) = self.inner.hooks.on_proxy_response(ctx, &mut res) {
            return Done::Early(res);
        }
        if !opts.self_handle_response {
            let status = res.status();
            rewrite::location(res.headers_mut(), status, target, client_host, opts);
            rewrite::cookies(
                res.headers_mut(),
                &opts.cookie_domain_rewrite,
                &opts.cookie_path_rewrite,
            );
        }
        Done::Response(res)
    }

    /// Sends one request upstream and waits for the response head, under
    /// `proxy_timeout` (upstream) and `timeout` (client). Both are idle
    /// limits counted from `activity`, the client's last progress (its head,
    /// then each request body frame), as Node's socket timeouts are: a long
    /// upload that keeps moving never expires them.
    ///
    /// `headers_timeout` (from now) and the call's `total_timeout`
    /// (`deadline`) are fixed limits on top.
    pub(crate) fn send<'a>(
        &'a self,
        req: Request<Body>,
        target: &'a Target,
        opts: &'a Options,
        activity: Option<&'a Activity>,
        deadline: Option<(Instant, Duration)>,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + use<'a, H> {
        // Handed over here, so that the future holds the upstream's (boxed)
        // exchange and not the request as well.
        let fut = self.inner.upstream.request(target, req);
        self.wait(fut, Instant::now(), target, opts, activity, deadline)
    }

    /// The waiting half of [`send`](Self::send), for an exchange handed to
    /// the upstream side at `start`.
    async fn wait(
        &self,
        mut fut: upstream::ResponseFuture,
        start: Instant,
        target: &Target,
        opts: &Options,
        activity: Option<&Activity>,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let fixed = [
            opts.headers_timeout
                .map(|t| (start + t, Expiry::Upstream(t))),
            deadline.map(|(at, t)| (at, Expiry::Total(t))),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at);
        let result = loop {
            let last = activity.map_or(start, Activity::last);
            let upstream_idle = opts
                .proxy_timeout
                .map(|p| (last + p, Expiry::UpstreamIdle(p)));
            let client_idle = opts.timeout.map(|t| (last + t, Expiry::Client(t)));
            let Some((at, expiry)) = [upstream_idle, client_idle, fixed]
                .into_iter()
                .flatten()
                .min_by_key(|(at, _)| *at)
            else {
                break (&mut fut).await;
            };
            match tokio::time::timeout_at(at, &mut fut).await {
                Ok(r) => break r,
                Err(_) if expiry.is_idle() && activity.is_some_and(|a| a.last() > last) => {}
                Err(_) => return Err(expiry.error()),
            }
        };
        let res = result.map_err(|e| upstream::classify(e, target.as_str()))?;
        self.inner.upstream.check_head(&res)?;
        Ok(res)
    }

    fn finish_body(
        &self,
        res: Response<Body>,
        ctx: H::Ctx,
        opts: &Options,
        deadline: Option<(Instant, Duration)>,
        lease: Option<Lease>,
    ) -> Response<Body> {
        let (head, mut body) = res.into_parts();
        for limit in [opts.proxy_timeout, opts.body_timeout]
            .into_iter()
            .flatten()
        {
            body = body.with_idle_timeout(limit, |d| Box::new(BodyIdleTimeout(d)));
        }
        if let Some((at, limit)) = deadline {
            body = body.with_deadline(at, limit, |d| Box::new(ProxyError::TotalTimeout(d)));
        }
        if let Some(lease) = lease {
            // In flight (for least-outstanding balancing) until the body ends.
            body = body.on_end(move |_| drop(lease));
        }
        if self.inner.hooks.observes_end() {
            let inner = self.inner.clone();
            body = body.on_end(move |end| inner.hooks.on_end(ctx, end));
        }
        Response::from_parts(head, body)
    }
}

/// Which limit expired while waiting for a response head.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    /// `proxy_timeout`, counted from the client's last progress.
    UpstreamIdle(Duration),
    /// `timeout`, counted from the client's last progress.
    Client(Duration),
    /// `headers_timeout`.
    Upstream(Duration),
    /// `total_timeout`.
    Total(Duration),
}

impl Expiry {
    fn is_idle(self) -> bool {
        matches!(self, Self::UpstreamIdle(_) | Self::Client(_))
    }

    fn error(self) -> ProxyError {
        match self {
            Self::UpstreamIdle(d) | Self::Upstream(d) => ProxyError::UpstreamTimeout(d),
            Self::Client(d) => ProxyError::ClientTimeout(d),
            Self::Total(d) => ProxyError::TotalTimeout(d),
        }
    }
}

/// A call prepared by [`Proxy::prepare`], for [`Proxy::exchange`].
struct Prepared<'a, H: Hooks> {
    /// Boxed: only hooks that observe aborts need one. First, so that a
    /// dropped call runs `on_client_abort` before its context and lease go.
    guard: Option<Box<AbortGuard<'a, H>>>,
    ctx: H::Ctx,
    picked: Picked,
    deadline: Option<(Instant, Duration)>,
    attempt: Attempt,
    carried: Carried,
    /// The call's retry policy, if it has its own.
    retry: Option<Arc<Retry>>,
    skip_error_hook: bool,
}

/// How the prepared request goes out.
enum Attempt {
    /// Once: already handed to the upstream side, at that instant.
    Once(upstream::ResponseFuture, Instant),
    /// Perhaps more than once ([`retry::exchange`]): the head, the body, and
    /// whether to keep the body to send again (boxed: the rarer case, and this
    /// enum sits in every call's future).
    Again(Box<(request::Parts, Body, bool)>),
}

/// The outgoing request, from [`Proxy::outgoing`].
struct Outgoing {
    head: request::Parts,
    body: Body,
    /// No body and not an upgrade: can be sent again as it is.
    replayable: bool,
    carried: Carried,
}

/// What preparing a request leaves for its exchange and its answer.
struct Carried {
    activity: Option<Activity>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The Host the client used, for `auto_rewrite`.
    client_host: Option<HeaderValue>,
    /// `follow_redirects`' limit and a copy of the head to send again (boxed:
    /// rarely there, and the head is 224 bytes).
    redirect_head: Option<Box<(u32, request::Parts)>>,
}

/// Why a call stops before its request goes out.
enum Stop {
    /// A hook answered.
    Answer(Response<Body>),
    Fail(ProxyError),
}

impl From<ProxyError> for Stop {
    fn from(err: ProxyError) -> Self {
        Self::Fail(err)
    }
}

enum Done {
    /// The proxied response, to be finished (timeouts, end hook).
    Response(Response<Body>),
    /// A response to send as it is.
    Early(Response<Body>),
    /// An upstream answer to a WebSocket upgrade.
    Upgrade(upgrade::Pending),
}

/// When the client's request last made progress, shared between the body
/// (which touches it on each frame) and [`Proxy::send`] (which reads it).
#[derive(Clone)]
pub(crate) struct Activity {
    base: tokio::time::Instant,
    nanos: Arc<std::sync::atomic::AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            nanos: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let n = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos
            .fetch_max(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base
            + std::time::Duration::from_nanos(self.nanos.load(std::sync::atomic::Ordering::Relaxed))
    }
}

struct AbortGuard<'a, H: Hooks> {
    inner: &'a Inner<H>,
    method: Method,
    uri: Uri,
    target: Target,
    armed: bool,
}

impl<H: Hooks> Drop for AbortGuard<'_, H> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.hooks.on_client_abort(&Aborted {
                method: self.method.clone(),
                uri: self.uri.clone(),
                target: self.target.clone(),
            });
        }
    }
}

/// A copy of a request head without its extensions, to send again.
pub(crate) fn clone_head(parts: &request::Parts) -> request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// Logs a failure once, where it becomes an answer, with its whole cause
/// chain (a TLS verification failure names the certificate problem); the
/// client only ever gets the short generic text.
pub(crate) fn log_error(err: &ProxyError) {
    let chain = crate::error::chain(err);
    match err.side() {
        crate::ErrorSide::Upstream => tracing::warn!("upstream error: {chain}"),
        crate::ErrorSide::Internal => tracing::error!("proxy error: {chain}"),
        crate::ErrorSide::Downstream => debug!("request not proxied: {chain}"),
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

// === impl ProxyBuilder ===

impl<H: Hooks> ProxyBuilder<H> {
    /// Replaces all request options.
    #[must_use]
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Changes request options in place.
    #[must_use]
    pub fn configure(mut self, f: impl FnOnce(&mut Options)) -> Self {
        f(&mut self.options);
        self
    }

    /// Replaces all connection options.
    #[must_use]
    pub fn client_options(mut self, client: ClientOptions) -> Self {
        self.client = client;
        self
    }

    /// Changes connection options in place.
    #[must_use]
    pub fn configure_client(mut self, f: impl FnOnce(&mut ClientOptions)) -> Self {
        f(&mut self.client);
        self
    }

    /// The default target.
    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.options.target = Some(target);
        self
    }

    /// Several upstreams, used when a request names no target (neither the
    /// call nor the options): see [`Upstreams`].
    #[must_use]
    pub fn upstreams(mut self, upstreams: Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// Retries for every request (none by default); a
    /// [`Forward`](crate::Forward) call may set its own.
    #[must_use]
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Uses these hooks (replacing any closures set before).
    pub fn hooks<H2: Hooks>(self, hooks: H2) -> ProxyBuilder<H2> {
        ProxyBuilder {
            options: self.options,
            client: self.client,
            hooks,
            upstreams: self.upstreams,
            retry: self.retry,
        }
    }

    /// Builds the proxy.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for invalid options or unreadable TLS material.
    pub fn build(self) -> Result<Proxy<H>, ConfigError> {
        self.options.validate()?;
        let upstream = Upstream::new(&self.client)?;
        if let Some(pool) = &self.upstreams {
            pool.ensure_health_checks(&upstream);
        }
        Ok(Proxy {
            inner: Arc::new(Inner {
                options: Arc::new(self.options),
                upstream,
                hooks: self.hooks,
                upstreams: self.upstreams,
                retry: self.retry.map(Arc::new),
            }),
        })
    }
}

impl ProxyBuilder<FnHooks> {
    /// `proxyReq`: edit each outgoing request head.
    #[must_use]
    pub fn on_proxy_request(
        mut self,
        f: impl Fn(&mut request::Parts) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.proxy_request = Some(Arc::new(f));
        self
    }

    /// `proxyReqWs`: edit each outgoing WebSocket upgrade head.
    #[must_use]
    pub fn on_proxy_request_ws(
        mut self,
        f: impl Fn(&mut request::Parts) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.proxy_request_ws = Some(Arc::new(f));
        self
    }

    /// `proxyRes`: edit each upstream response before it is rewritten and sent.
    #[must_use]
    pub fn on_proxy_response(
        mut self,
        f: impl Fn(&mut Response<Body>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.proxy_response = Some(Arc::new(f));
        self
    }

    /// `error`: answer failed requests yourself (`None` keeps the default).
    #[must_use]
    pub fn on_error(
        mut self,
        f: impl Fn(&ProxyError) -> Option<Response<Body>> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.error = Some(Arc::new(f));
        self
    }

    /// `end`: called when each response body ends.
    #[must_use]
    pub fn on_end(mut self, f: impl Fn(crate::BodyEnd) + Send + Sync + 'static) -> Self {
        self.hooks.end = Some(Arc::new(f));
        self
    }
}
