//! `follow_redirects`: the proxy follows upstream redirects itself, at most
//! N hops, as http-proxy-3 does with the follow-redirects package.
//!
//! Only requests without a body are followed (the body has been streamed and
//! cannot be sent again); 303, and 301/302 after a POST, continue as GET.
//! `Authorization` and `Cookie` are dropped when the redirect leaves the
//! host, so credentials never reach a third party.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, request};
use hyper::body::Incoming;

use super::{Proxy, clone_head};
use crate::body::Body;
use crate::error::ProxyError;
use crate::hooks::Hooks;
use crate::options::Options;
use crate::target::Target;

pub(crate) async fn follow<H: Hooks>(
    proxy: &Proxy<H>,
    mut res: Response<Incoming>,
    mut head: request::Parts,
    target: &Target,
    opts: &Options,
    max: u32,
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
) -> Result<Response<Incoming>, ProxyError> {
    let mut current = target.clone();
    for _ in 0..max {
        let status = res.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            break;
        }
        let Some(location) = res
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
        else {
            break;
        };
        let current_path = head.uri.path().to_owned();
        let Some((next, path)) = resolve(&current, &current_path, location) else {
            break;
        };
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
        head.uri = next
            .uri_for(&path)
            .map_err(|_| ProxyError::UpstreamMalformed("bad redirect location".into()))?;
        let req = Request::from_parts(clone_head(&head), Body::empty());
        res = proxy.send(req, &next, opts, None, deadline).await?;
        current = next;
    }
    Ok(res)
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
