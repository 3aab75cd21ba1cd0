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
//! * no `Host` on HTTP/1.1, two `Host` lines, or a `Host` that RFC 9110
//!   §7.2 does not allow ([`is_valid_host`]);
//! * an absolute-form target with user information or an invalid authority.
//!
//! An absolute-form target's authority replaces `Host` (RFC 9112 §3.2.2), so
//! the name a request is routed by and the one sent upstream are the same.
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

use http::header::{self, HeaderMap, HeaderValue};
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
#[non_exhaustive]
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
pub(crate) fn check(parts: &mut request::Parts, from_wire: bool) -> Result<(), ProxyError> {
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
    if host.is_some_and(|v| !is_valid_host(v.as_bytes())) {
        return Err(ProxyError::BadRequest("invalid Host"));
    }
    // A request an application built with a URI and no `Host` is left as it
    // is: the target's `Host` goes upstream.
    if let Some(target) = parts.uri.authority()
        && (from_wire || host.is_some())
    {
        // RFC 9112 §3.2.2: with an absolute-form target the server ignores
        // `Host` and uses the target's authority. Setting `Host` from it makes
        // what routes the request and what goes upstream the same name. An
        // `http` URI carries no user information (RFC 9110 §4.2.4).
        let authority = target.as_str();
        if authority.contains('@') || !is_valid_host(authority.as_bytes()) {
            return Err(ProxyError::BadRequest(
                "invalid authority in the request target",
            ));
        }
        if host.is_none_or(|v| v.as_bytes() != authority.as_bytes()) {
            let value = HeaderValue::from_str(authority)
                .map_err(|_| ProxyError::BadRequest("invalid authority in the request target"))?;
            parts.headers.insert(header::HOST, value);
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

/// Whether `value` is a valid `Host` field value: RFC 9110 §7.2's
/// `uri-host [ ":" port ]`, the host being RFC 3986 §3.2.2's `IP-literal`
/// (`[` an IPv6 address or `v1.future` `]`), `IPv4address` or `reg-name`
/// (unreserved characters, percent-encodings and sub-delimiters, so a
/// percent-encoded UNIX socket path such as `%2Ftmp%2Fproxy.sock` is one).
/// The empty value is valid: a `reg-name` may be empty.
///
/// Refused: a `/`, `?`, `#` or `@` (the value would carry a path or user
/// information), spaces and control bytes, a `%` not followed by two hex
/// digits, a port that is not digits.
pub fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => {
            let Some(end) = value.iter().position(|&b| b == b']') else {
                return false;
            };
            if !is_ip_literal(&value[1..end]) {
                return false;
            }
            match &value[end + 1..] {
                [] => return true,
                [b':', port @ ..] => (&[][..], port),
                _ => return false,
            }
        }
        _ => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &[][..]),
        },
    };
    is_reg_name(host) && port.iter().all(u8::is_ascii_digit)
}

/// RFC 3986's `reg-name` (which `IPv4address` is a case of).
fn is_reg_name(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                if !(s.len() > i + 2
                    && s[i + 1].is_ascii_hexdigit()
                    && s[i + 2].is_ascii_hexdigit())
                {
                    return false;
                }
                i += 3;
            }
            b => {
                if !(is_unreserved(b) || is_sub_delim(b)) {
                    return false;
                }
                i += 1;
            }
        }
    }
    true
}

/// The inside of RFC 3986's `IP-literal`: an IPv6 address or `IPvFuture`
/// (`v` hex digits `.` then unreserved, sub-delimiters or `:`).
fn is_ip_literal(s: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = s {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':');
    }
    std::str::from_utf8(s).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    /// The check as the engine runs it: from the wire when `ConnInfo` is known.
    fn check(parts: &mut request::Parts) -> Result<(), ProxyError> {
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
            assert!(
                check(&mut head(Version::HTTP_11, "/x", &hs)).is_ok(),
                "{hs:?}"
            );
        }
        assert!(check(&mut head(Version::HTTP_10, "/x", &[])).is_ok());
        assert!(
            check(&mut head(
                Version::HTTP_11,
                "http://a.test/x",
                &[("host", "a.test")]
            ))
            .is_ok()
        );
        assert!(check(&mut head(Version::HTTP_2, "http://a.test/x", &[])).is_ok());
        // Built by an application, not read from a connection: no Host needed.
        let mut built = Request::get("/x").body(()).unwrap().into_parts().0;
        assert!(check(&mut built).is_ok());
    }

    /// RFC 9110 §7.2 with RFC 3986 §3.2.2's hosts.
    #[test]
    fn hosts_rfc_3986_allows() {
        for host in [
            "",
            "a.test",
            "a.test:",
            "a.test:8080",
            "a.test:99999",
            "127.0.0.1:8000",
            "%2Ftmp%2Fpytest-of-root%2Fproxy.sock",
            "%2ftmp%2fa%20b.sock",
            "a~b_c-d.e",
            "!$&'()*+,;=",
            "[::1]",
            "[::1]:8080",
            "[fe80::1:2:3:4]",
            "[::ffff:127.0.0.1]",
            "[v1.fe80::a+en1]:80",
            "xn--bcher-kva.test",
        ] {
            assert!(is_valid_host(host.as_bytes()), "{host:?}");
        }
        for host in [
            "a/b",
            "example.com/evil",
            "user@example.com",
            "a b",
            " a",
            "a\tb",
            "a?b",
            "a#b",
            "%2",
            "%zz",
            "a%2",
            "a:8o",
            "a:1:2",
            ":80x",
            "[::1",
            "::1",
            "[::1]x",
            "[::1]:x",
            "[:::]",
            "[v1]",
            "[v.x]",
            "[vz.x]",
            "[127.0.0.1]",
            "a\"b",
            "a<b",
            "a\\b",
            "é.test",
        ] {
            assert!(!is_valid_host(host.as_bytes()), "{host:?}");
        }
        assert!(!is_valid_host(b"a\x01b"));
        assert!(!is_valid_host(b"a\x7fb"));
    }

    /// RFC 9112 §3.2.2: the absolute form's authority wins over `Host`.
    #[test]
    fn absolute_form_sets_host() {
        let mut parts = head(
            Version::HTTP_11,
            "http://a.test:8000/x",
            &[("host", "b.test")],
        );
        assert!(check(&mut parts).is_ok());
        assert_eq!(parts.headers[header::HOST], "a.test:8000");
        assert_eq!(parts.headers.get_all(header::HOST).iter().count(), 1);
        // Still a Host on HTTP/1.1, and a valid one.
        assert!(check(&mut head(Version::HTTP_11, "http://a.test/x", &[])).is_err());
        assert!(
            check(&mut head(
                Version::HTTP_11,
                "http://a.test/x",
                &[("host", "a/b")]
            ))
            .is_err()
        );
        assert!(
            check(&mut head(
                Version::HTTP_11,
                "http://u@a.test/x",
                &[("host", "a.test")]
            ))
            .is_err()
        );
        // HTTP/1.0 without Host: the target names the host, upstream too.
        let mut parts = head(Version::HTTP_10, "http://a.test/x", &[]);
        assert!(check(&mut parts).is_ok());
        assert_eq!(parts.headers[header::HOST], "a.test");
        // Built by an application, without Host: left as it is.
        let mut built = Request::get("http://a.test/x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(check(&mut built).is_ok());
        assert!(!built.headers.contains_key(header::HOST));
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
            vec![("host", "a b")],
        ] {
            assert!(
                check(&mut head(Version::HTTP_11, "/x", &hs)).is_err(),
                "{hs:?}"
            );
        }
    }

    proptest::proptest! {
        /// A valid Host is one path segment's worth of bytes (host routing
        /// looks it up as `/<host>`), and an absolute-form target can carry it,
        /// but for `%`: the `http` crate refuses it in an authority outside an IP
        /// literal (hyper answers such a request line 400 before the proxy sees
        /// it), while a `Host` header may carry it (JupyterHub's socket paths).
        #[test]
        fn valid_hosts_are_segments(s in "[a-zA-Z0-9._~%!$&'()*+,;=:/?#@ \\[\\]-]{0,12}") {
            if is_valid_host(s.as_bytes()) {
                proptest::prop_assert!(!s.contains(['/', '?', '#', '@', ' ']), "{}", s);
                if !s.is_empty() && !s.contains('%') {
                    let uri: Uri = format!("http://{s}/x").parse().unwrap();
                    proptest::prop_assert_eq!(uri.authority().map(|a| a.as_str()), Some(s.as_str()));
                }
            }
        }
    }
}
