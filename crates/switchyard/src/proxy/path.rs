//! The outgoing path: the target's prefix joined with the request's path.
//!
//! The request path is forwarded byte for byte: no dot-segment removal, no
//! re-encoding, no `//` folding. http-proxy-3 normalises with the WHATWG URL
//! parser, so `/s1/../admin` routed under `/s1` reaches the upstream as
//! `/admin`; a proxy that routes on one path and forwards another is a
//! path-confusion hole. Routing and forwarding here always see the same
//! bytes.

use http::Uri;

use crate::options::Options;
use crate::target::Target;

/// Computes the outgoing path and query (http-proxy-3's `setupOutgoing` +
/// `urlJoin`, without its normalisation).
pub(crate) fn outgoing_path(target: &Target, uri: &Uri, opts: &Options) -> String {
    let (t_path, t_query) = if opts.prepend_path {
        (target.path(), target.query())
    } else {
        ("/", None)
    };
    let request = if opts.ignore_path {
        ""
    } else if opts.to_proxy {
        // An absolute-form request target, kept whole (http-proxy-3 gives it a
        // leading slash, which its tests assert).
        return join(t_path, t_query, &absolute_target(uri));
    } else {
        uri.path_and_query().map_or("/", |pq| pq.as_str())
    };
    join(t_path, t_query, request)
}

fn absolute_target(uri: &Uri) -> String {
    let s = uri.to_string();
    if s.starts_with('/') {
        s
    } else {
        format!("/{s}")
    }
}

/// Joins `prefix` (+ its query) with `request` (a path with an optional
/// query, `?query`, or empty): exactly one `/` at the boundary, target query
/// first, then the request's, joined by `&`.
pub(crate) fn join(prefix: &str, prefix_query: Option<&str>, request: &str) -> String {
    let (r_path, r_query) = match request.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (request, None),
    };
    let mut out = String::with_capacity(prefix.len() + request.len() + 8);
    out.push_str(if prefix.is_empty() { "/" } else { prefix });
    if !r_path.is_empty() {
        match (out.ends_with('/'), r_path.starts_with('/')) {
            (true, true) => out.push_str(&r_path[1..]),
            (false, false) => {
                out.push('/');
                out.push_str(r_path);
            }
            _ => out.push_str(r_path),
        }
    }
    let queries = [prefix_query, r_query];
    let mut first = true;
    for q in queries.into_iter().flatten().filter(|q| !q.is_empty()) {
        out.push(if first { '?' } else { '&' });
        out.push_str(q);
        first = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(target: &str, req: &str, f: impl FnOnce(&mut Options)) -> String {
        let t = Target::parse(target).unwrap();
        let mut o = Options::default();
        f(&mut o);
        outgoing_path(&t, &req.parse().unwrap(), &o)
    }

    /// http-proxy-3's table of outgoing paths (dot segments are kept, by
    /// design; see the module docs).
    #[test]
    fn http_proxy_3_join_table() {
        assert_eq!(
            path("http://t/base?t=1", "/a/b?x=1", |_| ()),
            "/base/a/b?t=1&x=1"
        );
        assert_eq!(path("http://t/x", "/", |_| ()), "/x/");
        assert_eq!(path("http://t/x/", "/a", |_| ()), "/x/a");
        assert_eq!(path("http://t/", "/a%2Fb/c", |_| ()), "/a%2Fb/c");
        assert_eq!(
            path("http://t/x?y=1", "/a?b=1", |o| o.ignore_path = true),
            "/x?y=1"
        );
        assert_eq!(
            path("http://t/x?y=1", "/a?b=1", |o| o.prepend_path = false),
            "/a?b=1"
        );
        assert_eq!(
            path("http://t/x", "/a", |o| {
                o.ignore_path = true;
                o.prepend_path = false;
            }),
            "/"
        );
        assert_eq!(
            path("http://proxy:3128", "http://example.com/a?b=1", |o| o
                .to_proxy =
                true),
            "/http://example.com/a?b=1"
        );
    }

    /// http-proxy-3 test http/double-slashes: doubled slashes arrive as sent.
    #[test]
    fn double_slashes_are_kept() {
        for p in ["//test", "///test/crazy//slasher", "/test//foo"] {
            assert_eq!(path("http://localhost:1", p, |_| ()), p);
        }
    }

    /// http-proxy-3 test http/empty-req-url: an empty url and a bare query.
    #[test]
    fn empty_and_query_only_requests() {
        assert_eq!(join("/test", None, ""), "/test");
        assert_eq!(join("/test", None, "?foo=bar"), "/test?foo=bar");
        assert_eq!(join("/x", Some(""), "?"), "/x");
    }

    #[test]
    fn dot_segments_are_not_resolved() {
        assert_eq!(
            path("http://t/base", "/a/../b/%2e%2e/c", |_| ()),
            "/base/a/../b/%2e%2e/c"
        );
    }
}
