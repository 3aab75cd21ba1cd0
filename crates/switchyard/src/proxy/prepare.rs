//! Stage 1 of a call, run when the call is made: everything up to the moment
//! the request is handed to the upstream side, with nothing to wait for.
//!
//! The upstream is picked; the client's head is checked and `on_start` runs;
//! the request body gets its timers; the outgoing head is built (path, header
//! passes, `on_proxy_request`); and the request goes to the upstream side at
//! once when it gets one attempt. Doing this before the call's future is
//! first polled means that future holds the upstream's exchange, not the
//! request as well. The product is a [`Prepared`] call: what [`send`](super::send)
//! and [`answer`](super::answer) need, grouped by the stage that takes it.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Uri, Version, request};
use http_body::Body as _;
use tokio::time::Instant;

use super::answer::Answering;
use super::end::Watch;
use super::headers::{self, Downstream, clone_head};
use super::redirect::Redirect;
use super::send::{Activity, Attempt, Limits, Resend, Sending};
use super::{ConnInfo, Inner, Proxy, forward, hygiene, path};
use crate::balance::Picked;
use crate::body::{Body, ClientBodyError};
use crate::error::ProxyError;
use crate::hooks::{Flow, Hooks};
use crate::options::Options;
use crate::retry::{self, Retry};
use crate::target::{Protocol, Target};

pub(crate) type HeadersFn = Box<dyn FnOnce(&mut HeaderMap) + Send>;

/// What one call adds to the options: set by [`Forward`](crate::Forward)
/// and by [`Call`](super::Call), empty for [`Proxy::web`].
#[derive(Default)]
pub(crate) struct Extras {
    /// The outgoing path and query, instead of the target prefix + request path.
    pub(crate) path: Option<String>,
    /// Send the target's `Host` (reply-from always does).
    pub(crate) change_origin: bool,
    /// The last word on the outgoing request headers.
    pub(crate) rewrite_request_headers: Option<HeadersFn>,
    /// Several upstreams for this call.
    pub(crate) upstreams: Option<crate::balance::Upstreams>,
    /// The retry policy for this call, instead of the proxy's.
    pub(crate) retry: Option<Arc<Retry>>,
    /// The client connection, given by the caller instead of in the request's
    /// extensions.
    pub(crate) conn: Option<ConnInfo>,
}

/// A prepared call: what the later stages take, each in its own field.
///
/// Dropped with its context still in it, the call was abandoned by its client
/// before the answer: `on_end` hears of it then (when the hooks watch).
pub(super) struct Prepared<'a, H: Hooks> {
    inner: &'a Arc<Inner<H>>,
    /// Taken by the stage that ends the call.
    pub(super) ctx: Option<H::Ctx>,
    /// `None` unless the hooks observe the end.
    pub(super) watch: Option<Watch>,
    pub(super) picked: Picked,
    pub(super) limits: Limits,
    pub(super) sending: Sending,
    pub(super) answering: Answering,
}

/// Why a call stops before its request goes out.
enum Stop {
    /// A hook answered.
    Answer(Response<Body>),
    Fail(ProxyError),
}

/// The outgoing request and what the later stages need from its making.
struct Outgoing {
    head: request::Parts,
    body: Body,
    /// No body and not an upgrade: can be sent again as it is.
    replayable: bool,
    activity: Option<Activity>,
    redirect: Option<Box<Redirect>>,
    answering: Answering,
}

// === impl Proxy ===

impl<H: Hooks> Proxy<H> {
    /// The synchronous half of a call, up to the outgoing request. `Err` is
    /// the call's result already: an early answer, or the error (its end
    /// already reported).
    #[allow(
        clippy::result_large_err,
        reason = "moved once, and the `Ok` side is larger: boxing would cost an allocation per call"
    )]
    pub(super) fn prepare(
        &self,
        req: Request<Body>,
        opts: &Options,
        target: Option<&Target>,
        mut call: Extras,
    ) -> Result<Prepared<'_, H>, Result<Response<Body>, ProxyError>> {
        let mut ctx = self.inner.hooks.new_ctx();
        let mut watch = self.inner.hooks.observes_end().then(Watch::new);
        let deadline = opts.total_timeout.map(|t| (Instant::now() + t, t));
        let Some(picked) = self.pick(target, &call, opts) else {
            if let Some(fwd) = &opts.forward {
                forward::send(&self.inner, req, fwd, opts, call.conn);
                return Err(Ok(self.answered(ctx, watch, Response::new(Body::empty()))));
            }
            return Err(self.fail(ctx, watch.as_ref(), ProxyError::NoTarget, 0));
        };
        let mut out = match self.outgoing(&mut ctx, req, &picked.target, opts, &mut call) {
            Ok(out) => out,
            Err(Stop::Answer(res)) => return Err(Ok(self.answered(ctx, watch, res))),
            Err(Stop::Fail(err)) => return Err(self.fail(ctx, watch.as_ref(), err, 0)),
        };
        if let Some(w) = &mut watch {
            out.body = w.count_in(std::mem::take(&mut out.body));
        }
        let retry = call.retry.take();
        let policy = retry.as_deref().or(self.inner.retry.as_deref());
        let attempt =
            match retry::repeatable(policy, &out.head.method, out.replayable, &out.body, &picked) {
                // Handed over now, so that the call's future holds the
                // upstream's (boxed) exchange and not the request as well.
                None => Attempt::Once(
                    self.inner
                        .upstream
                        .request(&picked.target, Request::from_parts(out.head, out.body)),
                    Instant::now(),
                ),
                Some(keep_body) => Attempt::Again(Box::new(Resend {
                    head: out.head,
                    body: out.body,
                    keep_body,
                    retries: 0,
                })),
            };
        Ok(Prepared {
            inner: &self.inner,
            ctx: Some(ctx),
            watch,
            picked,
            limits: Limits::new(out.activity, deadline),
            sending: Sending {
                attempt,
                redirect: out.redirect,
                retry,
            },
            answering: out.answering,
        })
    }

    /// The upstream of this call: the call's target, the call's upstreams,
    /// the options' target, the proxy's upstreams, in that order.
    fn pick(&self, target: Option<&Target>, call: &Extras, opts: &Options) -> Option<Picked> {
        let pool = call.upstreams.as_ref().or(self.inner.upstreams.as_ref());
        match (target, &call.upstreams, &opts.target, pool) {
            (Some(t), ..) | (None, None, Some(t), _) => Some(Picked::single(t.clone())),
            (None, _, _, Some(pool)) => {
                pool.ensure_health_checks(&self.inner.upstream);
                Picked::from_pool(pool)
            }
            _ => None,
        }
    }

    /// The outgoing request: the head checks, `on_start`, the body's timers,
    /// the outgoing head, `on_proxy_request`, the `forward` copy.
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
        call: &mut Extras,
    ) -> Result<Outgoing, Stop> {
        let hooks = &self.inner.hooks;
        let (mut parts, body) = req.into_parts();
        let conn = call
            .conn
            .or_else(|| parts.extensions.get::<ConnInfo>().copied());
        // A request read from a connection has hyper's body even when no address is
        // known (a UNIX socket): it gets the checks of the wire, `Host` included.
        hygiene::check(&mut parts, conn.is_some() || body.came_in())?;
        let body = body.into_downstream();
        if let Flow::Respond(res) = hooks.on_start(ctx, &parts, target) {
            return Err(Stop::Answer(res));
        }
        let on_upgrade = take_upgrade(&mut parts, target)?;
        let upgrade = on_upgrade.is_some();
        let (body, activity, body_len) = watch_body(body, opts);
        let client_host = client_host(&parts);
        let down = Downstream {
            remote_ip: conn.map(|c| c.remote.ip()),
            tls: conn.is_some_and(|c| c.tls),
            upgrade,
            body_len,
        };
        let forward_uri = outgoing_head(&mut parts, target, opts, call, down)?;
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
        let redirect = opts.follow_redirects.filter(|_| replayable).map(|max| {
            Box::new(Redirect {
                max,
                head: clone_head(&parts),
            })
        });
        Ok(Outgoing {
            head: parts,
            body,
            replayable,
            activity,
            redirect,
            answering: Answering {
                on_upgrade,
                client_host,
            },
        })
    }
}

// The helpers of `outgoing` below are always inlined: each runs once on every
// request, where a call and its returned tuple cost more than the body does.

/// A WebSocket handshake's upgrade, taken from the request for the answer
/// stage; `None` for any other request.
#[inline(always)]
fn take_upgrade(
    parts: &mut request::Parts,
    target: &Target,
) -> Result<Option<hyper::upgrade::OnUpgrade>, ProxyError> {
    let websocket = parts.version == Version::HTTP_11
        && headers::is_websocket_upgrade(&parts.method, &parts.headers);
    if !websocket {
        return Ok(None);
    }
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    if on_upgrade.is_some() && target.protocol() == Protocol::Http2 {
        return Err(ProxyError::UnsupportedUpgrade);
    }
    Ok(on_upgrade)
}

/// The request body with the client's idle limits (`timeout`,
/// `request_body_timeout`) and, when a timeout counts from the client's last
/// progress, the [`Activity`] its frames touch; and the body's length if known.
#[inline(always)]
fn watch_body(body: Body, opts: &Options) -> (Body, Option<Activity>, Option<u64>) {
    // Both timeouts count from the client's last progress: a slow but
    // steady upload is not idle, whatever its total time.
    let activity = (opts.timeout.is_some() || opts.proxy_timeout.is_some()).then(Activity::new);
    // A body already at its end (most GETs) has nothing to time or watch.
    if body.is_end_stream() {
        return (body, activity, Some(0));
    }
    let mut body = body;
    for limit in [opts.timeout, opts.request_body_timeout]
        .into_iter()
        .flatten()
    {
        body = body.with_idle_timeout(limit, |d| Box::new(ClientBodyError::Timeout(d)));
    }
    if let Some(a) = &activity {
        let a = a.clone();
        body = body.on_data(move |_| a.touch());
    }
    let len = body.size_hint().exact();
    (body, activity, len)
}

/// The Host the client used, for `auto_rewrite`, before `change_origin`.
#[inline(always)]
fn client_host(parts: &request::Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(a) if parts.version == Version::HTTP_2 => HeaderValue::from_str(a.as_str()).ok(),
        _ => parts.headers.get(header::HOST).cloned(),
    }
}

/// Turns the client's head into the outgoing one: the target's URI with the
/// outgoing path, the header pass, `change_origin`, the method and version for
/// the target. Returns the URI of the `forward` copy, if it gets one.
fn outgoing_head(
    parts: &mut request::Parts,
    target: &Target,
    opts: &Options,
    call: &mut Extras,
    down: Downstream,
) -> Result<Option<Uri>, ProxyError> {
    let path = call
        .path
        .take()
        .unwrap_or_else(|| path::outgoing_path(target, &parts.uri, opts));
    let forward_uri = match &opts.forward {
        Some(fwd) if !down.upgrade => fwd.uri_for(path::outgoing_path(fwd, &parts.uri, opts)).ok(),
        _ => None,
    };
    let uri = target
        .uri_for(path)
        .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
    headers::request_headers(parts, target, opts, down);
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
    Ok(forward_uri)
}

// === impl Prepared ===

impl<H: Hooks> Prepared<'_, H> {
    /// Attempts after the first, so far.
    pub(super) fn retries(&self) -> u32 {
        match &self.sending.attempt {
            Attempt::Once(..) => 0,
            Attempt::Again(resend) => resend.retries,
        }
    }
}

impl<H: Hooks> Drop for Prepared<'_, H> {
    fn drop(&mut self) {
        // Still holding its context: no stage ended the call, its client did.
        if let (Some(ctx), Some(watch)) = (self.ctx.take(), &self.watch) {
            let err = ProxyError::ClientGone;
            let outcome = watch.failed(&err, self.retries());
            self.inner.hooks.on_end(ctx, &outcome);
        }
    }
}

impl From<ProxyError> for Stop {
    fn from(err: ProxyError) -> Self {
        Self::Fail(err)
    }
}
