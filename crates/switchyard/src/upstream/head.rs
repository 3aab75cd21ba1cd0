//! The checks every upstream response head passes before it is used, and what
//! a head says about its connection (`Keep-Alive: timeout`).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::error::ProxyError;
use crate::options::ClientOptions;

/// A response head over `max_response_header_size`.
#[derive(Debug, thiserror::Error)]
#[error("response head of about {size} bytes exceeds the limit of {limit} bytes")]
pub(crate) struct HeadTooLarge {
    size: usize,
    limit: usize,
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The response head limit of these options (at least hyper's buffer).
pub(crate) fn limit(opts: &ClientOptions) -> usize {
    opts.max_response_header_size.max(8 * 1024)
}

/// Refuses a response head over `limit`: hyper's `max_buf_size` only fails a
/// head still incomplete when its buffer is full; one read can overshoot it,
/// and a head that arrives whole is parsed whatever its size. Dropping the
/// response drops its connection (its body is unread).
///
/// Also refuses an HTTP/1 answer framed both ways: with `Transfer-Encoding`
/// and `Content-Length`, the body is read chunked but the length would be
/// forwarded with it, and the two disagree (RFC 9112 §6.3 asks an
/// intermediary to drop the length or treat the answer as an error; Node's
/// parser, under CHP, refuses it).
///
/// Returns the `Keep-Alive: timeout` the head announces, if any. One pass over
/// the fields does it all: this runs on every response.
pub(crate) fn check(headers: &HeaderMap, limit: usize) -> Result<Option<Duration>, ProxyError> {
    // `HTTP/1.1 200 <reason>\r\n`, then `name: value\r\n` per field, then `\r\n`.
    let mut size = 32;
    let (mut chunked, mut length) = (false, false);
    let mut keep_alive = None;
    for (k, v) in headers {
        size += k.as_str().len() + v.len() + 4;
        chunked |= k == header::TRANSFER_ENCODING;
        length |= k == header::CONTENT_LENGTH;
        if *k == KEEP_ALIVE {
            keep_alive = keep_alive.or_else(|| timeout(v));
        }
    }
    if chunked && length {
        return Err(ProxyError::UpstreamMalformed(
            "response has both Transfer-Encoding and Content-Length".into(),
        ));
    }
    if size > limit {
        return Err(ProxyError::UpstreamHeadTooLarge(Box::new(HeadTooLarge {
            size,
            limit,
        })));
    }
    Ok(keep_alive)
}

/// The `timeout=N` of a `Keep-Alive` value (RFC 2068 §19.7.1.1: seconds the
/// sender keeps an idle connection open), e.g. Node's `timeout=5`.
fn timeout(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    value.split(',').find_map(|param| {
        let (name, n) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| n.trim().trim_matches('"').parse().ok())?
            .map(Duration::from_secs)
    })
}

/// How long a connection is used after a target announced it keeps idle
/// connections for `timeout`: a second less, or half of it when that is two
/// seconds or less, so that a request never meets the target's own close.
pub(crate) fn usable_for(timeout: Duration) -> Duration {
    if timeout > Duration::from_secs(2) {
        timeout - Duration::from_secs(1)
    } else {
        timeout / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_alive(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert("keep-alive", v.parse().unwrap());
        check(&h, 8192).unwrap()
    }

    #[test]
    fn reads_the_keep_alive_timeout() {
        assert_eq!(keep_alive("timeout=5"), Some(Duration::from_secs(5)));
        assert_eq!(
            keep_alive("max=100, Timeout = 2"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(keep_alive("timeout=\"7\""), Some(Duration::from_secs(7)));
        assert_eq!(keep_alive("timeout=0"), Some(Duration::ZERO));
        assert_eq!(keep_alive("max=5"), None);
        assert_eq!(keep_alive("timeout=-1"), None);
        assert_eq!(keep_alive("timeout"), None);
        assert_eq!(check(&HeaderMap::new(), 8192).unwrap(), None);
    }

    #[test]
    fn a_connection_is_left_before_the_target_closes_it() {
        assert_eq!(usable_for(Duration::from_secs(5)), Duration::from_secs(4));
        assert_eq!(usable_for(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            usable_for(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn refuses_large_or_doubly_framed_heads() {
        let mut h = HeaderMap::new();
        h.insert("x-big", "a".repeat(9000).parse().unwrap());
        assert!(matches!(
            check(&h, 8192),
            Err(ProxyError::UpstreamHeadTooLarge(_))
        ));
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        assert!(matches!(
            check(&h, 8192),
            Err(ProxyError::UpstreamMalformed(_))
        ));
    }
}
