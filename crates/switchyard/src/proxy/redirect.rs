//! `follow_redirects`: the proxy follows upstream redirects itself, at most
//! N hops, as http-proxy-3 does with the follow-redirects package.
//!
//! Only requests without a body are followed (the body has been streamed and
//! cannot be sent again); 303, and 301/302 after a POST, continue as GET.
//! `Authorization` and `Cookie` are dropped when the redirect leaves the
//! host, so credentials never reach a third party.
//!
//! This module decides each hop; the send stage sends it.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, request};

use crate::error::ProxyError;
use crate::target::Target;

/// `follow_redirects`' limit, and a copy of the request head to send again.
pub(crate) struct Redirect {
    pub(crate) max: u32,
    pub(crate) head: request::Parts,
}

/// Where an answer sent to `current` redirects: the next target, with `head`
/// rewritten for it (its URI; GET after a 303, or a 301/302 to a POST; no
/// credentials when the redirect leaves the host). `None` when the answer is
/// not a redirect that can be followed: it goes to the client as it is.
pub(crate) fn next_hop(
    status: StatusCode,
    headers: &HeaderMap,
    head: &mut request::Parts,
    current: &Target,
) -> Option<Result<Target, ProxyError>> {
    let status = status.as_u16();
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = headers.get(header::LOCATION)?.to_str().ok()?;
    let (next, path) = resolve(current, head.uri.path(), location)?;
    if status == 303 || (matches!(status, 301 | 302) && head.method == Method::POST) {
        head.method = Method::GET;
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.remove(header::CONTENT_TYPE);
    }
    if next.host_header() != current.host_header() || next.is_tls() != current.is_tls() {
        head.headers.remove(header::AUTHORIZATION);
        head.headers.remove(header::COOKIE);
        head.headers
            .insert(header::HOST, next.host_header().clone());
    }
    Some(match next.uri_for(&path) {
        Ok(uri) => {
            head.uri = uri;
            Ok(next)
        }
        Err(_) => Err(ProxyError::UpstreamMalformed(
            "bad redirect location".into(),
        )),
    })
}

/// Resolves a `Location` against the current target and path: the next
/// target and the path (with query) to ask it for.
fn resolve(current: &Target, current_path: &str, location: &str) -> Option<(Target, String)> {
    let location = location.split('#').next().unwrap_or("");
    let absolute = |scheme: &str, rest: &str| {
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let target = Target::parse(&format!("{scheme}://{authority}"))
            .ok()?
            .with_protocol(current.protocol());
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Some((target, path))
    };
    if let Some(rest) = location.strip_prefix("//") {
        return absolute(if current.is_tls() { "https" } else { "http" }, rest);
    }
    if let Some((scheme, rest)) = location.split_once("://") {
        return absolute(scheme, rest);
    }
    if location.starts_with('/') {
        return Some((current.clone(), location.to_owned()));
    }
    let dir = current_path.rsplit_once('/').map_or("", |(d, _)| d);
    HeaderValue::from_str(location).ok()?;
    Some((current.clone(), format!("{dir}/{location}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_location_forms() {
        let t = Target::parse("http://a.test:8080/").unwrap();
        let (n, p) = resolve(&t, "/x/y", "/abs?q=1").unwrap();
        assert_eq!(
            (n.host_header().to_str().unwrap(), p.as_str()),
            ("a.test:8080", "/abs?q=1")
        );
        let (_, p) = resolve(&t, "/x/y", "rel").unwrap();
        assert_eq!(p, "/x/rel");
        let (n, p) = resolve(&t, "/", "https://b.test/z").unwrap();
        assert!(n.is_tls());
        assert_eq!((n.host(), p.as_str()), ("b.test", "/z"));
        let (n, p) = resolve(&t, "/", "//c.test?x").unwrap();
        assert_eq!((n.host(), p.as_str()), ("c.test", "/?x"));
        assert!(resolve(&t, "/", "ftp://x/").is_none());
    }
}
