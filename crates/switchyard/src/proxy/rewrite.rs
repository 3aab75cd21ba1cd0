//! `Location` and `Set-Cookie` rewriting, as http-proxy-3's
//! `hostRewrite`/`autoRewrite`/`protocolRewrite` and
//! `cookieDomainRewrite`/`cookiePathRewrite` do it.

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
///
/// `auto_rewrite` puts the client's `Host` in only when it is one of
/// `public_hosts`; otherwise the location becomes relative. http-proxy (and
/// so CHP) copies any `Host` in, keeping the target's port: with `Host:
/// evil.example` CHP answers `Location: https://evil.example:<target
/// port>/landing`, an attacker-chosen host and the internal port.
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
        match client_host
            .and_then(|h| h.to_str().ok())
            .filter(|h| is_public(h, &opts.public_hosts))
        {
            Some(h) => h,
            None => {
                let relative = if tail.starts_with('/') {
                    tail.to_owned()
                } else {
                    format!("/{tail}")
                };
                if let Ok(v) = HeaderValue::from_str(&relative) {
                    headers.insert(header::LOCATION, v);
                }
                return;
            }
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

/// Whether a (validated) `Host` value is one the proxy is configured to be
/// reached as.
fn is_public(host: &str, public_hosts: &[String]) -> bool {
    public_hosts.iter().any(|p| p.eq_ignore_ascii_case(host))
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
        loc_from("front.example:9999", status, location_value, |o| {
            o.public_hosts = vec!["FRONT.example:9999".into()];
            f(o);
        })
    }

    fn loc_from(
        client_host: &'static str,
        status: u16,
        location_value: &str,
        f: impl FnOnce(&mut Options),
    ) -> String {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, location_value.parse().unwrap());
        let t = Target::parse("http://127.0.0.1:9000/").unwrap();
        let mut o = Options::default();
        f(&mut o);
        let client = HeaderValue::from_static(client_host);
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

    /// A `Host` the proxy is not configured to serve never reaches a
    /// `Location`, nor does the target's port; the location becomes relative
    /// instead.
    #[test]
    fn auto_rewrite_never_echoes_an_unlisted_host() {
        let auto = |o: &mut Options| o.auto_rewrite = true;
        for (host, location, want) in [
            ("evil.example", "http://127.0.0.1:9000/landing", "/landing"),
            ("evil.example:9000", "http://127.0.0.1:9000/a?b#c", "/a?b#c"),
            ("evil.example", "http://127.0.0.1:9000", "/"),
            ("evil.example", "http://127.0.0.1:9000?q=1", "/?q=1"),
            ("evil.example", "//127.0.0.1:9000/x", "/x"),
            ("front.example", "http://127.0.0.1:9000/x", "/x"),
            // Not the target: untouched, whatever the Host.
            (
                "evil.example",
                "http://other.example/x",
                "http://other.example/x",
            ),
            (
                "evil.example",
                "http://127.0.0.1:9001/x",
                "http://127.0.0.1:9001/x",
            ),
        ] {
            assert_eq!(
                loc_from(host, 302, location, auto),
                want,
                "{host} {location}"
            );
        }
        // protocol_rewrite cannot apply to a relative location.
        assert_eq!(
            loc_from("evil.example", 302, "http://127.0.0.1:9000/x", |o| {
                o.auto_rewrite = true;
                o.protocol_rewrite = Some("https".into());
            }),
            "/x"
        );
        // A listed Host is used as written, with its own port or none.
        for host in ["front.example", "front.example:8443"] {
            assert_eq!(
                loc_from(host, 301, "http://127.0.0.1:9000/x", |o| {
                    o.auto_rewrite = true;
                    o.public_hosts = vec!["front.example".into(), "front.example:8443".into()];
                    o.protocol_rewrite = Some("https".into());
                }),
                format!("https://{host}/x")
            );
        }
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

    #[allow(
        clippy::needless_pass_by_value,
        reason = "the tests read better with the rules as values"
    )]
    fn cookie(line: &str, domain: CookieRewrite, path: CookieRewrite) -> String {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, line.parse().unwrap());
        cookies(&mut h, &domain, &path);
        h[header::SET_COOKIE].to_str().unwrap().to_owned()
    }

    /// http-proxy-3's cookie rules: the first `domain=`/`path=` attribute,
    /// exact keys with `*` as the fallback, an empty value removes it.
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
