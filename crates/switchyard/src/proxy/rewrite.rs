//! `Location` and `Set-Cookie` rewriting (research/library.md §1.6).

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use crate::options::{CookieRewrite, Options};
use crate::target::Target;

/// Rewrites a `Location` that points at the target itself, on 201, 301, 302,
/// 303, 307 and 308.
///
/// 303 is included (http-proxy-3 leaves it out; httpxy added it): a 303 that
/// names the internal target leaks its address and breaks the client exactly
/// as a 302 does. Relative locations are left alone: they already resolve
/// against the address the client used.
pub(crate) fn location(
    headers: &mut HeaderMap,
    status: StatusCode,
    target: &Target,
    client_host: Option<&HeaderValue>,
    opts: &Options,
) {
    if !opts.rewrites_location() || !matches!(status.as_u16(), 201 | 301 | 302 | 303 | 307 | 308) {
        return;
    }
    let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let (scheme, rest) = if let Some(rest) = loc.strip_prefix("//") {
        (if target.is_tls() { "https" } else { "http" }, rest)
    } else if let Some((s, rest)) = loc.split_once("://") {
        (s, rest)
    } else {
        return;
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !target.authority_matches(authority) {
        return;
    }
    let host = if let Some(h) = &opts.host_rewrite {
        h.as_str()
    } else if opts.auto_rewrite {
        match client_host.and_then(|h| h.to_str().ok()) {
            Some(h) => h,
            None => authority,
        }
    } else {
        authority
    };
    let scheme = opts
        .protocol_rewrite
        .as_deref()
        .map_or(scheme, |p| p.trim_end_matches(':'));
    if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{host}{tail}")) {
        headers.insert(header::LOCATION, v);
    }
}

/// Rewrites `Domain=` and then `Path=` of every `Set-Cookie` line, each line
/// on its own (they are never comma-joined).
pub(crate) fn cookies(headers: &mut HeaderMap, domain: &CookieRewrite, path: &CookieRewrite) {
    if (domain.is_none() && path.is_none()) || !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let lines: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for line in lines {
        let rewritten = line.to_str().ok().map(|s| {
            let s = rewrite_attribute(s, "domain", domain);
            rewrite_attribute(&s, "path", path)
        });
        let value = rewritten
            .and_then(|s| HeaderValue::from_str(&s).ok())
            .unwrap_or(line);
        headers.append(header::SET_COOKIE, value);
    }
}

/// Rewrites the first `; <name>=<value>` attribute (name case-insensitive).
/// An empty replacement removes the attribute.
fn rewrite_attribute(cookie: &str, name: &str, rule: &CookieRewrite) -> String {
    if rule.is_none() {
        return cookie.to_owned();
    }
    let lower = cookie.to_ascii_lowercase();
    let mut search = 0;
    while let Some(i) = lower[search..].find(';').map(|i| i + search) {
        let after = &lower[i + 1..];
        let trimmed = after.trim_start();
        let attr_start = i + 1 + (after.len() - trimmed.len());
        if trimmed.starts_with(name) && trimmed[name.len()..].starts_with('=') {
            let value_start = attr_start + name.len() + 1;
            let value_end = cookie[value_start..]
                .find(';')
                .map_or(cookie.len(), |j| value_start + j);
            let old = &cookie[value_start..value_end];
            if old.is_empty() {
                return cookie.to_owned();
            }
            return match rule.lookup(old) {
                None => cookie.to_owned(),
                Some("") => format!("{}{}", &cookie[..i], &cookie[value_end..]),
                Some(new) => format!("{}{new}{}", &cookie[..value_start], &cookie[value_end..]),
            };
        }
        search = i + 1;
    }
    cookie.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(status: u16, location_value: &str, f: impl FnOnce(&mut Options)) -> String {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, location_value.parse().unwrap());
        let t = Target::parse("http://127.0.0.1:9000/").unwrap();
        let mut o = Options::default();
        f(&mut o);
        let client = HeaderValue::from_static("front.example:9999");
        super::location(
            &mut h,
            StatusCode::from_u16(status).unwrap(),
            &t,
            Some(&client),
            &o,
        );
        h[header::LOCATION].to_str().unwrap().to_owned()
    }

    /// http-proxy-3 lib/http-proxy-passes-web-outgoing: Location rewrites.
    #[test]
    fn location_rewrites_on_redirect_statuses_only() {
        for status in [201, 301, 302, 303, 307, 308] {
            assert_eq!(
                loc(status, "http://127.0.0.1:9000/landed", |o| o.auto_rewrite =
                    true),
                "http://front.example:9999/landed",
                "{status}"
            );
        }
        assert_eq!(
            loc(200, "http://127.0.0.1:9000/x", |o| o.auto_rewrite = true),
            "http://127.0.0.1:9000/x"
        );
    }

    #[test]
    fn location_other_hosts_and_relative_are_untouched() {
        let f = |o: &mut Options| o.host_rewrite = Some("h.example".into());
        assert_eq!(
            loc(302, "http://127.0.0.1:9001/x", f),
            "http://127.0.0.1:9001/x"
        );
        assert_eq!(loc(302, "http://other/x", f), "http://other/x");
        assert_eq!(loc(302, "/relative", f), "/relative");
    }

    #[test]
    fn host_rewrite_beats_auto_and_protocol_applies_on_top() {
        assert_eq!(
            loc(301, "http://127.0.0.1:9000/a?b#c", |o| {
                o.host_rewrite = Some("h.example".into());
                o.auto_rewrite = true;
                o.protocol_rewrite = Some("https".into());
            }),
            "https://h.example/a?b#c"
        );
        assert_eq!(
            loc(307, "http://127.0.0.1:9000", |o| o.protocol_rewrite =
                Some("https".into())),
            "https://127.0.0.1:9000"
        );
    }

    fn cookie(line: &str, domain: CookieRewrite, path: CookieRewrite) -> String {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, line.parse().unwrap());
        cookies(&mut h, &domain, &path);
        h[header::SET_COOKIE].to_str().unwrap().to_owned()
    }

    /// research/library.md §1.6 cookie rules.
    #[test]
    fn cookie_domain_and_path_rules() {
        assert_eq!(
            cookie(
                "hello; domain=my.domain; path=/",
                CookieRewrite::all(""),
                CookieRewrite::none()
            ),
            "hello; path=/"
        );
        assert_eq!(
            cookie(
                "hello; Domain=my.domain; Path=/old",
                CookieRewrite::map([("my.domain", "new.domain")]),
                CookieRewrite::all("/new")
            ),
            "hello; Domain=new.domain; Path=/new"
        );
        assert_eq!(
            cookie(
                "a=b; domain=x",
                CookieRewrite::map([("y", "z")]),
                CookieRewrite::none()
            ),
            "a=b; domain=x"
        );
        // An attribute at the very start (no leading `;`) never matches.
        assert_eq!(
            cookie(
                "domain=x; a=b",
                CookieRewrite::all("y"),
                CookieRewrite::none()
            ),
            "domain=x; a=b"
        );
    }

    #[test]
    fn each_set_cookie_line_is_rewritten_separately() {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, "a=1; Path=/x".parse().unwrap());
        h.append(header::SET_COOKIE, "b=2; Path=/y".parse().unwrap());
        cookies(&mut h, &CookieRewrite::none(), &CookieRewrite::all("/"));
        let all: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(all, ["a=1; Path=/", "b=2; Path=/"]);
    }
}
