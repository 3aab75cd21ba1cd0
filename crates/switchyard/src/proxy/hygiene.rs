//! Message hygiene: HTTP/1 requests whose framing or target could be read
//! two ways are refused before anything is forwarded.
//!
//! hyper parses requests correctly but accepts several shapes that a proxy
//! must not pass on, because the next hop may read them differently
//! (research/reliability.md §0 item 1, §2.1, §2.3, §6 items 1, 3, 8, 9):
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

use http::header::{self, HeaderMap};
use http::{Version, request};

use crate::error::ProxyError;

/// Checks an incoming request head; `Err` is the 400 to answer.
pub(crate) fn check(parts: &request::Parts) -> Result<(), ProxyError> {
    let from_wire = parts.extensions.get::<super::ConnInfo>().is_some();
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
        let valid = host
            .to_str()
            .ok()
            .filter(|s| is_host_port(s))
            .and_then(|s| s.parse::<http::uri::Authority>().ok());
        let Some(authority) = valid else {
            return Err(ProxyError::BadRequest("invalid Host"));
        };
        if let Some(target) = parts.uri.authority()
            && !target.as_str().eq_ignore_ascii_case(authority.as_str())
        {
            return Err(ProxyError::BadRequest("request target and Host disagree"));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

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

    /// reliability.md §6 items 1, 3, 8, 9.
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
}
