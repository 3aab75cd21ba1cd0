//! The end of a call, for [`Hooks::on_end`]: what is measured along the way
//! (only when the hooks observe the end) and the [`Outcome`] it becomes.
//!
//! A call that is watched carries a [`Watch`] from the start: the clock and
//! the request body's byte count. At the response head it becomes an
//! [`Ending`] (status, time to the head, retries), which rides in the
//! response body's end callback or the tunnel's task until the request is
//! over. A call that is not watched carries `None` and reads no clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use tokio::time::Instant;

use super::Inner;
use crate::body::{Body, BodyEnd};
use crate::error::{BoxError, ErrorSide, ProxyError};
use crate::hooks::{Hooks, Outcome, TunnelStats};

/// What a watched call measures before its answer.
pub(crate) struct Watch {
    start: Instant,
    bytes_in: BytesIn,
}

/// The request body's size: known at the start, or counted as it streams.
enum BytesIn {
    Known(u64),
    Counted(Arc<AtomicU64>),
}

/// A watched call that has its response head.
pub(crate) struct Ending {
    watch: Watch,
    status: StatusCode,
    head_time: Duration,
    retries: u32,
}

// === impl Watch ===

impl Watch {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            bytes_in: BytesIn::Known(0),
        }
    }

    /// Counts what the client sends in `body`; a body already at its end
    /// costs nothing.
    pub(crate) fn count_in(&mut self, body: Body) -> Body {
        if http_body::Body::is_end_stream(&body) {
            return body;
        }
        let n = Arc::new(AtomicU64::new(0));
        self.bytes_in = BytesIn::Counted(n.clone());
        body.on_data(move |len| {
            n.fetch_add(len as u64, Ordering::Relaxed);
        })
    }

    fn bytes_in(&self) -> u64 {
        match &self.bytes_in {
            BytesIn::Known(n) => *n,
            BytesIn::Counted(n) => n.load(Ordering::Relaxed),
        }
    }

    /// The head is here.
    pub(crate) fn ending(self, status: StatusCode, retries: u32) -> Ending {
        let head_time = self.start.elapsed();
        Ending {
            watch: self,
            status,
            head_time,
            retries,
        }
    }

    /// The outcome of a call that ends without a response.
    pub(crate) fn failed<'e>(&self, err: &'e ProxyError, retries: u32) -> Outcome<'e> {
        let ended_early = match err {
            ProxyError::ClientGone | ProxyError::ClientTimeout(_) => Some(ErrorSide::Downstream),
            _ if err.side() == ErrorSide::Upstream => Some(ErrorSide::Upstream),
            _ => None,
        };
        Outcome {
            status: None,
            error: Some(err),
            ended_early,
            bytes_in: self.bytes_in(),
            bytes_out: 0,
            head_time: None,
            duration: self.start.elapsed(),
            retries,
            tunnel: None,
        }
    }
}

// === impl Ending ===

impl Ending {
    /// The outcome once the response body ended as `end`.
    pub(crate) fn body_ended<'e>(&self, end: BodyEnd, err: Option<&'e BoxError>) -> Outcome<'e> {
        let (bytes_out, ended_early) = match end {
            BodyEnd::Complete { bytes } => (bytes, None),
            BodyEnd::Failed { bytes } => (bytes, Some(failed_side(err))),
            BodyEnd::Dropped { bytes } => (bytes, Some(ErrorSide::Downstream)),
        };
        Outcome {
            status: Some(self.status),
            error: err.map(|e| &**e as _),
            ended_early,
            bytes_in: self.watch.bytes_in(),
            bytes_out,
            head_time: Some(self.head_time),
            duration: self.watch.start.elapsed(),
            retries: self.retries,
            tunnel: None,
        }
    }

    /// The outcome of an upgrade: its tunnel closed, or it never opened.
    pub(crate) fn tunnel_closed<'e>(
        &self,
        tunnel: Option<TunnelStats>,
        err: Option<&'e BoxError>,
    ) -> Outcome<'e> {
        let t = tunnel.unwrap_or_default();
        Outcome {
            status: Some(self.status),
            error: err.map(|e| &**e as _),
            ended_early: err.map(|_| ErrorSide::Upstream),
            bytes_in: t.client_to_upstream,
            bytes_out: t.upstream_to_client,
            head_time: Some(self.head_time),
            duration: self.watch.start.elapsed(),
            retries: self.retries,
            tunnel,
        }
    }
}

/// Which side failed a response body: the client when its own body failed
/// (its error is marked as the client's), else the upstream (a reset, an idle
/// or total timeout on the answer).
fn failed_side(err: Option<&BoxError>) -> ErrorSide {
    match err {
        Some(e) if e.is::<crate::body::ClientBodyError>() => ErrorSide::Downstream,
        _ => ErrorSide::Upstream,
    }
}

/// `res` with `on_end` called when its body is over; `res` as it is when the
/// call is not watched.
pub(crate) fn watch_response<H: Hooks>(
    inner: &Arc<Inner<H>>,
    res: Response<Body>,
    ctx: H::Ctx,
    ending: Option<Ending>,
) -> Response<Body> {
    let Some(ending) = ending else {
        return res;
    };
    let inner = inner.clone();
    res.map(move |body| {
        body.on_end_with_error(move |end, err| {
            inner.hooks.on_end(ctx, &ending.body_ended(end, err))
        })
    })
}
