//! Stage 2 of a call: the prepared request goes to the upstream, and the call
//! waits for the response head under its limits; more than once when a retry
//! policy or several upstreams allow it, and along the redirects when
//! `follow_redirects` is on.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, request};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::debug;

use super::Proxy;
use super::headers::clone_head;
use super::redirect::{self, Redirect};
use crate::balance::Picked;
use crate::body::{Body, ClientBodyError};
use crate::error::ProxyError;
use crate::hooks::Hooks;
use crate::options::Options;
use crate::retry::{Attempts, Retry};
use crate::target::Target;
use crate::upstream::{self, ResponseFuture};

/// What the send stage takes from preparation.
pub(super) struct Sending {
    pub(super) attempt: Attempt,
    /// Boxed: rarely there, and the head is 224 bytes.
    pub(super) redirect: Option<Box<Redirect>>,
    /// The call's retry policy, if it has its own.
    pub(super) retry: Option<Arc<Retry>>,
}

/// How the prepared request goes out.
pub(super) enum Attempt {
    /// Once: already handed to the upstream side, at that instant.
    Once(ResponseFuture, Instant),
    /// Perhaps more than once: boxed, the rarer case (and this enum sits in
    /// every call's future).
    Again(Box<Resend>),
}

/// A request that may be sent more than once.
pub(super) struct Resend {
    pub(super) head: request::Parts,
    pub(super) body: Body,
    /// Keep the body to send it again ([`Retry::buffer_body`]).
    pub(super) keep_body: bool,
    /// Attempts after the first so far (retries and failovers).
    pub(super) retries: u32,
}

/// What limits the wait for a response head besides the options' timeouts:
/// the client's last progress, from which the idle timeouts count, and the
/// call's `total_timeout` (the instant, and the limit for the error).
pub(crate) struct Limits {
    activity: Option<Activity>,
    pub(super) deadline: Option<(Instant, Duration)>,
}

/// When the client's request last made progress, shared between the body
/// (which touches it on each frame) and the wait (which reads it).
#[derive(Clone)]
pub(crate) struct Activity {
    base: Instant,
    nanos: Arc<AtomicU64>,
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

// === impl Proxy ===

impl<H: Hooks> Proxy<H> {
    /// The response head for a prepared request: the exchange with the
    /// upstream (retries and failover included), then the redirects.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would keep its arguments twice (as passed, and moved into its body)"
    )]
    pub(super) fn sent<'a>(
        &'a self,
        sending: &'a mut Sending,
        picked: &'a mut Picked,
        limits: &'a Limits,
        opts: &'a Options,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + use<'a, H> {
        async move {
            let result = match &mut sending.attempt {
                Attempt::Once(fut, start) => {
                    let result = self.wait(fut, *start, &picked.target, opts, limits).await;
                    picked.report(&result);
                    result
                }
                Attempt::Again(resend) => {
                    let policy = sending.retry.as_deref().or(self.inner.retry.as_deref());
                    self.again(resend, picked, limits, policy, opts).await
                }
            };
            match (result, sending.redirect.take()) {
                (Ok(res), Some(redirect)) => {
                    // After a failover or retry, the member that answered.
                    let target = picked.target.clone();
                    // Boxed: rarely taken, and as large as the rest of this future.
                    Box::pin(self.follow(res, *redirect, &target, opts, limits.deadline)).await
                }
                (result, _) => result,
            }
        }
    }

    /// Sends one request upstream and waits for the response head, under
    /// `proxy_timeout` (upstream) and `timeout` (client). Both are idle
    /// limits counted from the client's last progress (its head, then each
    /// request body frame), as Node's socket timeouts are: a long upload that
    /// keeps moving never expires them.
    ///
    /// `headers_timeout` (from now) and the call's `total_timeout` are fixed
    /// limits on top.
    pub(crate) fn send<'a>(
        &'a self,
        req: Request<Body>,
        target: &'a Target,
        opts: &'a Options,
        limits: &'a Limits,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + use<'a, H> {
        // Handed over here, so that the future holds the upstream's (boxed)
        // exchange and not the request as well.
        let mut fut = self.inner.upstream.request(target, req);
        let start = Instant::now();
        async move { self.wait(&mut fut, start, target, opts, limits).await }
    }

    /// The waiting half of [`send`](Self::send), for an exchange handed to
    /// the upstream side at `start`.
    async fn wait(
        &self,
        fut: &mut ResponseFuture,
        start: Instant,
        target: &Target,
        opts: &Options,
        limits: &Limits,
    ) -> Result<Response<Incoming>, ProxyError> {
        let activity = limits.activity.as_ref();
        let fixed = [
            opts.headers_timeout
                .map(|t| (start + t, Expiry::Upstream(t))),
            limits.deadline.map(|(at, t)| (at, Expiry::Total(t))),
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
                break (&mut *fut).await;
            };
            match tokio::time::timeout_at(at, &mut *fut).await {
                Ok(r) => break r,
                Err(_) if expiry.is_idle() && activity.is_some_and(|a| a.last() > last) => {}
                Err(_) => return Err(expiry.error()),
            }
        };
        let res = result.map_err(|e| upstream::classify(e, target.as_str()))?;
        Ok(res)
    }

    /// Sends a request that [`repeatable`](crate::retry::repeatable) says may
    /// need more than one attempt: failover when a member refuses the
    /// connection, and the policy's retries, with the body kept to send again
    /// when the policy buffers it.
    ///
    /// Boxed: the loop's future is three times a single send's, and most calls
    /// never take it.
    fn again<'a>(
        &'a self,
        resend: &'a mut Resend,
        picked: &'a mut Picked,
        limits: &'a Limits,
        policy: Option<&'a Retry>,
        opts: &'a Options,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Incoming>, ProxyError>> + Send + 'a>> {
        let policy = policy.filter(|p| p.may_retry(&resend.head.method));
        Box::pin(async move {
            let head = &mut resend.head;
            let kept = if resend.keep_body {
                keep(std::mem::take(&mut resend.body), limits.deadline).await?
            } else {
                Bytes::new()
            };
            let mut counts = Attempts::default();
            loop {
                let body = if kept.is_empty() {
                    Body::empty()
                } else {
                    Body::from(kept.clone())
                };
                let req = Request::from_parts(clone_head(head), body);
                let result = self.send(req, &picked.target, opts, limits).await;
                picked.report(&result);
                if let Err(e) = &result
                    && e.is_connect()
                    && picked.fail_over(head)
                {
                    debug!(upstream = %picked.target, "failing over after a refused connection");
                    resend.retries += 1;
                    continue;
                }
                let Some(policy) = policy else {
                    return result;
                };
                let Some(delay) = policy.decide(&head.method, &result, &mut counts) else {
                    return result;
                };
                let wake = Instant::now() + delay;
                if limits.deadline.is_some_and(|(at, _)| wake >= at) {
                    return result;
                }
                debug!(?delay, attempt = counts.all, "retrying");
                if let Ok(res) = result {
                    // Drained while the delay runs; whatever is left is dropped.
                    let _ = tokio::time::timeout_at(wake, upstream::drain(res.into_body())).await;
                }
                tokio::time::sleep_until(wake).await;
                resend.retries += 1;
                picked.next_attempt(head);
            }
        })
    }

    /// Follows the upstream's redirects from `res`, at most `redirect.max`
    /// hops, each under the call's deadline.
    async fn follow(
        &self,
        mut res: Response<Incoming>,
        redirect: Redirect,
        target: &Target,
        opts: &Options,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let Redirect { max, mut head } = redirect;
        let limits = Limits::new(None, deadline);
        let mut current = target.clone();
        for _ in 0..max {
            let Some(next) = redirect::next_hop(res.status(), res.headers(), &mut head, &current)
            else {
                break;
            };
            let next = next?;
            let req = Request::from_parts(clone_head(&head), Body::empty());
            res = self.send(req, &next, opts, &limits).await?;
            current = next;
        }
        Ok(res)
    }
}

/// Reads a body to be sent again, within the call's total deadline.
async fn keep(body: Body, deadline: Option<(Instant, Duration)>) -> Result<Bytes, ProxyError> {
    let read = async {
        body.collect().await.map(|c| c.to_bytes()).map_err(|e| {
            e.downcast_ref::<ClientBodyError>()
                .map_or(ProxyError::ClientGone, ClientBodyError::to_proxy_error)
        })
    };
    match deadline {
        Some((at, limit)) => tokio::time::timeout_at(at, read)
            .await
            .map_err(|_| ProxyError::TotalTimeout(limit))?,
        None => read.await,
    }
}

// === impl Limits ===

impl Limits {
    pub(super) fn new(activity: Option<Activity>, deadline: Option<(Instant, Duration)>) -> Self {
        Self { activity, deadline }
    }
}

// === impl Activity ===

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            base: Instant::now(),
            nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(super) fn touch(&self) {
        let n = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(n, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

// === impl Expiry ===

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
