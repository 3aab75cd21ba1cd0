//! Message hygiene: HTTP/1 requests whose framing or target could be read
//! two ways are refused before anything is forwarded.
//!
//! hyper parses requests correctly but accepts several shapes that a proxy
//! must not pass on, because the next hop may read them differently
//! (RFC 9112 §3.2, §6.1, §6.3):
//!
//! * `Content-Length` together with `Transfer-Encoding` (hyper drops the
//!   length and reads chunked; an upstream that prefers the length would see
//!   a second, smuggled request);
//! * any `Transfer-Encoding` other than one `chunked` (`chunked, chunked`,
//!   two lines, `gzip, chunked`);
//! * no `Host` on HTTP/1.1, two `Host` lines, or a `Host` that is not a
//!   host\[:port\];
//! * an absolute-form target whose authority disagrees with `Host`.
//!
//! The `Host` rules apply to requests that arrived on a connection (those
//! carrying [`ConnInfo`](crate::ConnInfo), as `listen` and the `switchyard`
//! server give them); a request an application builds itself and hands to
//! `web` needs no `Host`.
//!
//! Each is a 400, and the connection is closed after it (RFC 9112 §6.3:
//! once framing is in doubt, nothing after it on the connection can be
//! trusted).
//!
//! [`HeadLimits`] adds the size limits a listener checks before routing: a
//! request target longer than `max_uri_length` is a 414, a head larger than
//! `max_header_size` a 431 (RFC 9110 §15.5.15, RFC 6585 §5).

use http::header::{self, HeaderMap};
use http::{Request, Uri, Version, request};

use crate::error::ProxyError;

/// Size limits on a request head, checked by a listener on every parsed
/// request before it is routed.
///
/// hyper counts the request line and the header fields against one read
/// buffer and answers 431 when the head does not fit, so a long URI would be
/// a 431, not the 414 of RFC 9110 §15.5.15. A listener therefore gives hyper
/// a buffer of [`HeadLimits::read_buffer`] bytes (room for both limits) and
/// calls [`HeadLimits::check`] on each head: 414 for the URI first, then 431
/// for the whole head. A head that does not fit even that buffer is still
/// hyper's 431. The connection is closed after either answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The longest request target, in bytes (as sent: path and query, or the
    /// whole absolute form). Longer gets 414. Default 16 KiB.
    pub max_uri_length: usize,
    /// The largest request head (request line and header fields, counted as
    /// they are serialised), in bytes. Larger gets 431. Default 64 KiB.
    pub max_header_size: usize,
}

/// Checks an incoming request head; `Err` is the 400 to answer. `from_wire`:
/// the request came over a connection (a [`ConnInfo`](super::ConnInfo) is
/// known), not built by the embedding application.
pub(crate) fn check(parts: &request::Parts, from_wire: bool) -> Result<(), ProxyError> {
    if parts.version == Version::HTTP_2 || parts.version == Version::HTTP_3 {
        // h2 framing is binary and hyper validates pseudo-headers.
        return Ok(());
    }
    let h = &parts.headers;
    if h.contains_key(header::TRANSFER_ENCODING) {
        if h.contains_key(header::CONTENT_LENGTH) {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if !single_chunked(h) {
            return Err(ProxyError::BadRequest("unsupported Transfer-Encoding"));
        }
    }
    let mut hosts = h.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host")),
        (Some(v), None) => Some(v),
        (None, _) if from_wire && parts.version == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("no Host"));
        }
        (None, _) => None,
    };
    if let Some(host) = host {
        let valid = host.to_str().ok().filter(|s| {
            is_host_port(s) && (is_plain_host_port(s) || s.parse::<http::uri::Authority>().is_ok())
        });
        let Some(authority) = valid else {
            return Err(ProxyError::BadRequest("invalid Host"));
        };
        if let Some(target) = parts.uri.authority()
            && !target.as_str().eq_ignore_ascii_case(authority)
        {
            return Err(ProxyError::BadRequest("request target and Host disagree"));
        }
    }
    Ok(())
}

// === impl HeadLimits ===

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_uri_length: 16 * 1024,
            max_header_size: 64 * 1024,
        }
    }
}

impl HeadLimits {
    /// The read buffer to give hyper (`max_buf_size`): room for a head at
    /// the header limit plus a URI at the URI limit, and never below hyper's
    /// minimum of 8 KiB.
    pub fn read_buffer(&self) -> usize {
        self.max_header_size
            .saturating_add(self.max_uri_length)
            .max(8 * 1024)
    }

    /// Checks one parsed request head.
    ///
    /// # Errors
    ///
    /// [`ProxyError::UriTooLong`] (414) when the request target is longer
    /// than `max_uri_length`, else [`ProxyError::HeadersTooLarge`] (431) when
    /// the head is larger than `max_header_size`.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        let uri = uri_len(req.uri());
        if uri > self.max_uri_length {
            return Err(ProxyError::UriTooLong {
                limit: self.max_uri_length,
            });
        }
        // `GET <uri> HTTP/1.1\r\n`, then `name: value\r\n` per field, then `\r\n`.
        let line = req.method().as_str().len() + uri + 12;
        let fields: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if line + fields + 2 > self.max_header_size {
            return Err(ProxyError::HeadersTooLarge {
                limit: self.max_header_size,
            });
        }
        Ok(())
    }
}

/// The length of the request target as it was sent.
fn uri_len(uri: &Uri) -> usize {
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    path + authority + scheme
}

fn single_chunked(h: &HeaderMap) -> bool {
    let mut values = h.get_all(header::TRANSFER_ENCODING).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked")),
        _ => false,
    }
}

/// `host` or `host:port`, with a bracketed IPv6 literal allowed: no path,
/// no user information, no spaces.
fn is_host_port(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']' | b'~' | b'%')
        })
        && !s.starts_with(':')
}

/// `name` or `name:port` with a reg-name of letters, digits, `.`, `-`, `_` and
/// a port of 1 to 5 digits: the common case, a valid authority without
/// building one (which copies it).
fn is_plain_host_port(s: &str) -> bool {
    let (host, port) = s.split_once(':').unwrap_or((s, "1"));
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    /// The check as the engine runs it: from the wire when `ConnInfo` is known.
    fn check(parts: &request::Parts) -> Result<(), ProxyError> {
        super::check(parts, parts.extensions.get::<crate::ConnInfo>().is_some())
    }

    fn head(version: Version, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut b = Request::get(uri)
            .version(version)
            .extension(crate::ConnInfo {
                remote: ([127, 0, 0, 1], 1).into(),
                tls: false,
            });
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn accepts_ordinary_requests() {
        for hs in [
            vec![("host", "a.test")],
            vec![("host", "a.test:8080"), ("transfer-encoding", "chunked")],
            vec![("host", "[::1]:8080"), ("content-length", "3")],
            vec![("host", "A.Test"), ("transfer-encoding", "Chunked")],
        ] {
            assert!(check(&head(Version::HTTP_11, "/x", &hs)).is_ok(), "{hs:?}");
        }
        assert!(check(&head(Version::HTTP_10, "/x", &[])).is_ok());
        assert!(
            check(&head(
                Version::HTTP_11,
                "http://a.test/x",
                &[("host", "a.test")]
            ))
            .is_ok()
        );
        assert!(check(&head(Version::HTTP_2, "http://a.test/x", &[])).is_ok());
        // Built by an application, not read from a connection: no Host needed.
        let built = Request::get("/x").body(()).unwrap().into_parts().0;
        assert!(check(&built).is_ok());
    }

    /// 414 for the URI before 431 for the head.
    #[test]
    fn head_limits() {
        let limits = HeadLimits {
            max_uri_length: 100,
            max_header_size: 200,
        };
        let req = |uri: &str, header: usize| {
            Request::get(uri)
                .header("x-big", "a".repeat(header))
                .body(())
                .unwrap()
        };
        assert!(limits.check(&req("/short", 10)).is_ok());
        let long = format!("/{}", "u".repeat(100));
        assert!(matches!(
            limits.check(&req(&long, 10)),
            Err(ProxyError::UriTooLong { limit: 100 })
        ));
        assert!(matches!(
            limits.check(&req(&long, 1000)),
            Err(ProxyError::UriTooLong { .. })
        ));
        assert!(matches!(
            limits.check(&req("/short", 200)),
            Err(ProxyError::HeadersTooLarge { limit: 200 })
        ));
        let absolute = format!("http://a.test{}", "/u".repeat(45));
        assert!(limits.check(&req(&absolute, 10)).is_err());
        assert_eq!(limits.read_buffer(), 8 * 1024);
        assert_eq!(HeadLimits::default().read_buffer(), 80 * 1024);
    }

    /// Content-Length with Transfer-Encoding, a Transfer-Encoding other than
    /// one `chunked`, a missing, repeated or malformed `Host`, an
    /// absolute-form target that disagrees with `Host`.
    #[test]
    fn refuses_ambiguous_requests() {
        for hs in [
            vec![
                ("host", "a"),
                ("content-length", "3"),
                ("transfer-encoding", "chunked"),
            ],
            vec![("host", "a"), ("transfer-encoding", "chunked, chunked")],
            vec![("host", "a"), ("transfer-encoding", "gzip, chunked")],
            vec![
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            vec![],
            vec![("host", "a"), ("host", "b")],
            vec![("host", "a/b")],
            vec![("host", "u@a")],
            vec![("host", "")],
            vec![("host", "a b")],
        ] {
            assert!(check(&head(Version::HTTP_11, "/x", &hs)).is_err(), "{hs:?}");
        }
        assert!(
            check(&head(
                Version::HTTP_11,
                "http://evil.test/x",
                &[("host", "good")]
            ))
            .is_err()
        );
    }

    proptest::proptest! {
        /// The shortcut never accepts what `Authority` would refuse.
        #[test]
        fn plain_host_ports_are_authorities(s in "[a-zA-Z0-9._:-]{0,12}") {
            if is_plain_host_port(&s) {
                proptest::prop_assert!(s.parse::<http::uri::Authority>().is_ok(), "{}", s);
            }
        }
    }
}
