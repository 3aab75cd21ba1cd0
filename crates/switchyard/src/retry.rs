//! Retries: reply-from's rules with its bugs fixed (the `Retry-After` unit,
//! bodies sent twice, discarded answers not drained).
//!
//! * A request is retried only if its body can be sent again, which means
//!   it has none: a streamed body is gone once sent. The engine buffers one
//!   only when asked to ([`Retry::buffer_body`]), and only up to a limit and
//!   when its length is known.
//! * A connection that could not be made, or was reset before a response
//!   head, is retried for the idempotent `retry_methods`, up to
//!   `retries_count` times.
//! * A 503 is retried for those methods up to `max_retries_on_503` times,
//!   after its `Retry-After` read as **seconds or an HTTP-date** (RFC 9110
//!   §10.2.3; reply-from reads it as milliseconds). A `Retry-After` longer
//!   than `max_delay` is not waited for: the 503 goes to the client.
//! * The discarded response is drained while the delay runs (so its
//!   connection goes back to the pool) or dropped (closing it).
//! * `total_timeout` bounds everything: no retry is started that would
//!   end after it.
//!
//! With several upstreams, a refused connection is also tried on the other
//! members first (nothing was sent, so any method is safe), without delay.
//!
//! This module is the policy; the proxy's send stage runs the attempts.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;

use crate::balance::Picked;
use crate::body::Body;
use crate::error::ProxyError;

type DelayFn = dyn Fn(&RetryContext<'_>) -> Option<Duration> + Send + Sync;

/// When a failed attempt is tried again. `Retry::default()` is reply-from's
/// defaults: `GET HEAD OPTIONS TRACE`, no retry on errors
/// (`retries_count` 0), up to 10 retries on 503.
#[derive(Clone)]
pub struct Retry {
    methods: Vec<Method>,
    retries_count: u32,
    max_retries_on_503: u32,
    max_delay: Duration,
    delay: Option<Arc<DelayFn>>,
    buffer_body: u64,
}

/// What a [`Retry::retry_delay`] callback is told about a failed attempt.
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryContext<'a> {
    /// The method sent upstream.
    pub method: &'a Method,
    /// Retries made so far (0 after the first attempt).
    pub attempt: u32,
    /// The error, when the attempt got no response.
    pub error: Option<&'a ProxyError>,
    /// The response's status, when there was one.
    pub status: Option<StatusCode>,
    /// The response's headers, when there was one.
    pub headers: Option<&'a HeaderMap>,
    /// What the default rules would do: retry after this delay, or not.
    pub default_delay: Option<Duration>,
}

/// Counts of one request's retries.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    pub(crate) all: u32,
    errors: u32,
    on_503: u32,
}

// === impl Retry ===

impl Default for Retry {
    fn default() -> Self {
        Self {
            methods: vec![Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE],
            retries_count: 0,
            max_retries_on_503: 10,
            max_delay: Duration::from_secs(30),
            delay: None,
            buffer_body: 0,
        }
    }
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("methods", &self.methods)
            .field("retries_count", &self.retries_count)
            .field("max_retries_on_503", &self.max_retries_on_503)
            .field("max_delay", &self.max_delay)
            .field("retry_delay", &self.delay.is_some())
            .field("buffer_body", &self.buffer_body)
            .finish()
    }
}

impl Retry {
    /// Never retry (for one call, when the proxy has a policy).
    pub fn never() -> Self {
        Self {
            methods: Vec::new(),
            retries_count: 0,
            max_retries_on_503: 0,
            ..Self::default()
        }
    }

    /// The methods the default rules retry (`retryMethods`).
    #[must_use]
    pub fn retry_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Retries after a refused or reset connection (`retriesCount`).
    #[must_use]
    pub fn retries_count(mut self, n: u32) -> Self {
        self.retries_count = n;
        self
    }

    /// Retries after a 503 (`maxRetriesOn503`).
    #[must_use]
    pub fn max_retries_on_503(mut self, n: u32) -> Self {
        self.max_retries_on_503 = n;
        self
    }

    /// The longest `Retry-After` waited for (default 30 s).
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Replaces the rules with `f` (`retryDelay`): it is asked after every
    /// error and every 429 or 5xx response of a request that can be sent
    /// again, and returns the delay before the next attempt or `None` to
    /// stop. [`RetryContext::default_delay`] is what the default rules
    /// would answer.
    #[must_use]
    pub fn retry_delay(
        mut self,
        f: impl Fn(&RetryContext<'_>) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.delay = Some(Arc::new(f));
        self
    }

    /// Keeps a request body of up to `limit` bytes whose length is known
    /// (`Content-Length`) so that the request can be retried, and failed over
    /// to another upstream, like one without a body. Off (0) by default. The
    /// body is read in full before the first attempt; a longer one, or one
    /// of unknown length (chunked), is streamed and sent once, as without
    /// this option. A method still has to be in
    /// [`retry_methods`](Self::retry_methods) (or pass
    /// [`retry_delay`](Self::retry_delay)): add `POST` only for upstreams
    /// that tolerate a request arriving twice.
    #[must_use]
    pub fn buffer_body(mut self, limit: u64) -> Self {
        self.buffer_body = limit;
        self
    }

    /// True when a body of this length is kept for retries.
    fn buffers(&self, len: Option<u64>) -> bool {
        len.is_some_and(|n| n > 0 && n <= self.buffer_body)
    }

    /// True when this policy can ever retry a request with this method.
    pub(crate) fn may_retry(&self, method: &Method) -> bool {
        self.delay.is_some() || self.methods.contains(method)
    }

    /// The delay before the next attempt, or `None` to keep `result`.
    pub(crate) fn decide(
        &self,
        method: &Method,
        result: &Result<Response<Incoming>, ProxyError>,
        counts: &mut Attempts,
    ) -> Option<Duration> {
        let (error, status, headers) = match result {
            Ok(r) => (None, Some(r.status()), Some(r.headers())),
            Err(e) => (Some(e), None, None),
        };
        let default = if !self.methods.contains(method) {
            None
        } else if let Some(e) = error {
            (is_retryable(e) && counts.errors < self.retries_count)
                .then(|| default_backoff(counts.all))
        } else if status == Some(StatusCode::SERVICE_UNAVAILABLE)
            && counts.on_503 < self.max_retries_on_503
        {
            match headers.and_then(retry_after) {
                Some(d) if d > self.max_delay => None,
                Some(d) => Some(d),
                None => Some(default_backoff(counts.all)),
            }
        } else {
            None
        };
        let delay = match &self.delay {
            None => default,
            Some(f) => {
                let failed = match (error, status) {
                    (Some(e), _) => e.side() == crate::error::ErrorSide::Upstream,
                    (None, Some(s)) => s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS,
                    (None, None) => false,
                };
                if !failed {
                    return None;
                }
                f(&RetryContext {
                    method,
                    attempt: counts.all,
                    error,
                    status,
                    headers,
                    default_delay: default,
                })
            }
        }?;
        counts.all += 1;
        if error.is_some() {
            counts.errors += 1;
        } else if status == Some(StatusCode::SERVICE_UNAVAILABLE) {
            counts.on_503 += 1;
        }
        Some(delay)
    }
}

/// Errors after which nothing (refused, connect timeout) or nothing
/// processed (a reset before any response) reached the upstream.
fn is_retryable(e: &ProxyError) -> bool {
    matches!(
        e,
        ProxyError::UpstreamConnect { .. }
            | ProxyError::ConnectTimeout(_)
            | ProxyError::UpstreamReset(_)
    )
}

/// reply-from's jittered linear back-off: up to 42 ms × (retries + 1).
fn default_backoff(attempt: u32) -> Duration {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_millis(42 * u64::from(attempt + 1)).mul_f64(unit)
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3); a
/// date in the past is no delay. `None` when absent or unreadable.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether a prepared request may get more than one attempt: `None` when it gets
/// one (no policy retries its method and there is no other member to fail over
/// to, or its body cannot be sent again: it has one, and the policy does not keep
/// it); else whether its body is to be kept to send again.
pub(crate) fn repeatable(
    policy: Option<&Retry>,
    method: &Method,
    replayable: bool,
    body: &Body,
    picked: &Picked,
) -> Option<bool> {
    let policy = policy.filter(|p| p.may_retry(method));
    let keep_body =
        !replayable && policy.is_some_and(|p| p.buffers(http_body::Body::size_hint(body).exact()));
    let once = !(replayable || keep_body) || (policy.is_none() && !picked.can_fail_over());
    (!once).then_some(keep_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, v.parse().unwrap());
        h
    }

    /// reply-from reads Retry-After as milliseconds and an HTTP-date as
    /// NaN; RFC 9110 §10.2.3 says seconds or a date.
    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(retry_after(&headers("1")), Some(Duration::from_secs(1)));
        assert_eq!(
            retry_after(&headers(" 120 ")),
            Some(Duration::from_secs(120))
        );
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = retry_after(&headers(&httpdate::fmt_http_date(later))).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(retry_after(&headers(&past)), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn default_backoff_is_bounded() {
        for attempt in 0..5 {
            assert!(default_backoff(attempt) <= Duration::from_millis(42 * u64::from(attempt + 1)));
        }
    }

    #[test]
    fn errors_count_against_retries_count_only_for_retry_methods() {
        let p = Retry::default().retries_count(1);
        let reset: Result<Response<Incoming>, _> = Err(ProxyError::UpstreamReset("reset".into()));
        let mut c = Attempts::default();
        assert!(p.decide(&Method::GET, &reset, &mut c).is_some());
        assert!(p.decide(&Method::GET, &reset, &mut c).is_none());
        let mut c = Attempts::default();
        assert!(p.decide(&Method::POST, &reset, &mut c).is_none());
        let timeout = Err(ProxyError::UpstreamTimeout(Duration::from_secs(1)));
        assert!(
            p.decide(&Method::GET, &timeout, &mut Attempts::default())
                .is_none()
        );
    }

    #[test]
    fn a_custom_delay_sees_the_default_and_decides() {
        let p = Retry::default().retry_delay(|ctx| {
            assert!(ctx.default_delay.is_none());
            (ctx.attempt < 2).then_some(Duration::ZERO)
        });
        let err = Err(ProxyError::UpstreamTimeout(Duration::from_secs(1)));
        let mut c = Attempts::default();
        assert_eq!(p.decide(&Method::POST, &err, &mut c), Some(Duration::ZERO));
        assert_eq!(p.decide(&Method::POST, &err, &mut c), Some(Duration::ZERO));
        assert_eq!(p.decide(&Method::POST, &err, &mut c), None);
        let client = Err(ProxyError::ClientGone);
        assert_eq!(
            p.decide(&Method::GET, &client, &mut Attempts::default()),
            None
        );
    }
}
