//! Outgoing paths, `Location` and `Set-Cookie` rewriting, against
//! http-proxy-3's rules.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use http::{HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use switchyard::{Body, CookieRewrite, Options, Proxy, Target};

async fn path_through(target: &str, request: &str, f: impl FnOnce(&mut Options)) -> String {
    let (b, seen) = recording_backend().await;
    let mut opts = Options::to(Target::parse(&format!("{}{target}", b.url())).unwrap());
    f(&mut opts);
    let proxy = Proxy::builder().build().unwrap();
    let res = within(proxy.web_with(Request::get(request).body(()).unwrap(), &opts)).await;
    assert_eq!(res.status(), 200);
    seen.lock().unwrap()[0].uri.clone()
}

/// The target's path and query prefix the request's; exactly one `/` at the
/// boundary; target query first.
#[tokio::test]
async fn target_path_and_query_prefix_the_request() {
    assert_eq!(
        path_through("/base?t=1", "/a?x=1", |_| ()).await,
        "/base/a?t=1&x=1"
    );
    assert_eq!(path_through("/x/", "/a", |_| ()).await, "/x/a");
    assert_eq!(path_through("/x", "/", |_| ()).await, "/x/");
}

/// http-proxy-3's `prependPath` and its test lib/http-proxy-common:
/// `prepend_path: false` drops the target's path and query.
#[tokio::test]
async fn prepend_path_false_sends_the_request_path_only() {
    let got = path_through("/x?y=1", "/a?b=1", |o| o.prepend_path = false).await;
    assert_eq!(got, "/a?b=1");
}

/// http-proxy-3's `ignorePath` and its test lib/http-proxy-common
/// ("ignorePath (with prependPath)"): the request's path and query are
/// dropped; with `prepend_path: false` too, the path is `/`.
#[tokio::test]
async fn ignore_path_sends_the_target_path_only() {
    assert_eq!(
        path_through("/x?y=1", "/a?b=1", |o| o.ignore_path = true).await,
        "/x?y=1"
    );
    let got = path_through("/x?y=1", "/a?b=1", |o| {
        o.ignore_path = true;
        o.prepend_path = false;
    })
    .await;
    assert_eq!(got, "/");
}

/// Dot segments: http-proxy-3 resolves them, httpxy does not, reply-from
/// refuses them. Switchyard forwards the path byte for byte, so
/// what a router matched is what the upstream gets (no `/s1/../admin` →
/// `/admin` path confusion).
#[tokio::test]
async fn dot_segments_are_not_normalised() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&format!("{}/base", b.url())).unwrap();
    let server = listen(&proxy).await;
    let req = b"GET /a/../b/%2e%2e/c%2Fd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    raw_request(server.local_addr(), req, b"").await;
    assert_eq!(seen.lock().unwrap()[0].uri, "/base/a/../b/%2e%2e/c%2Fd");
}

/// http-proxy-3's `toProxy` and its test lib/http-proxy-common ("toProxy
/// leading slash"): an absolute-form request target is sent whole, after a `/`.
#[tokio::test]
async fn to_proxy_sends_the_absolute_url_as_the_path() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.to_proxy = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req =
        b"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    let out = raw_request(server.local_addr(), req, b"").await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(seen.lock().unwrap()[0].uri, "/http://example.com/a?b=1");
}

/// A backend answering `/<status>?to=<location>` with that status and Location.
async fn redirector() -> Backend {
    backend(|req: Request<Incoming>| async move {
        let status: u16 = req.uri().path()[1..].parse().unwrap();
        let location = req
            .uri()
            .query()
            .unwrap()
            .strip_prefix("to=")
            .unwrap()
            .to_owned();
        let mut r = http::Response::new(Body::empty());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert("location", HeaderValue::from_str(&location).unwrap());
        r
    })
    .await
}

async fn location_after(
    b: &Backend,
    status: u16,
    location: &str,
    f: impl FnOnce(&mut Options),
) -> String {
    let mut opts = Options::to(b.target());
    f(&mut opts);
    let proxy = Proxy::builder().build().unwrap();
    let req = Request::get(format!("/{status}?to={location}"))
        .header("host", "front.example:9999")
        .body(())
        .unwrap();
    let res = within(proxy.web_with(req, &opts)).await;
    assert_eq!(res.status(), status);
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// http-proxy-3's test lib/http-proxy-passes-web-outgoing
/// (Location rewrite on 201/301/302/307/308, not on 200): `host_rewrite`
/// on every redirect status, 303 included (httpxy #119).
#[tokio::test]
async fn host_rewrite_on_redirect_statuses() {
    let b = redirector().await;
    let own = format!("http://{}/landed?q=1", b.addr);
    for status in [201, 301, 302, 303, 307, 308] {
        let got = location_after(&b, status, &own, |o| {
            o.host_rewrite = Some("public.example".into());
        })
        .await;
        assert_eq!(got, "http://public.example/landed?q=1", "{status}");
    }
    let got = location_after(&b, 200, &own, |o| {
        o.host_rewrite = Some("public.example".into())
    })
    .await;
    assert_eq!(got, own, "a 200 is not rewritten");
}

/// http-proxy-3's `autoRewrite`: `auto_rewrite` uses the client's Host,
/// port included, when it is one of `public_hosts`; `host_rewrite` wins
/// over it.
#[tokio::test]
async fn auto_rewrite_uses_a_listed_client_host() {
    let b = redirector().await;
    let own = format!("http://{}/landed", b.addr);
    let got = location_after(&b, 302, &own, |o| {
        o.auto_rewrite = true;
        o.public_hosts = vec!["front.example:9999".into()];
    })
    .await;
    assert_eq!(got, "http://front.example:9999/landed");
    let got = location_after(&b, 302, &own, |o| {
        o.auto_rewrite = true;
        o.host_rewrite = Some("wins.example".into());
    })
    .await;
    assert_eq!(got, "http://wins.example/landed");
}

/// An unlisted `Host` (the client picks it) never reaches the `Location`,
/// and neither does the target's address or port: the location becomes
/// relative. CHP answers `https://evil.example:<target port>/landing` here.
#[tokio::test]
async fn auto_rewrite_with_an_unlisted_host_is_relative() {
    let b = redirector().await;
    let own = format!("http://{}/landing?x=1", b.addr);
    for public_hosts in [vec![], vec!["good.example".to_owned()]] {
        let got = location_after(&b, 302, &own, |o| {
            o.auto_rewrite = true;
            o.protocol_rewrite = Some("https".into());
            o.public_hosts = public_hosts.clone();
        })
        .await;
        assert_eq!(got, "/landing?x=1", "{public_hosts:?}");
        assert!(!got.contains("front.example") && !got.contains(&b.addr.port().to_string()));
    }
}

/// `protocol_rewrite` alone changes the scheme, and
/// applies on top of a host rewrite.
#[tokio::test]
async fn protocol_rewrite_alone_and_combined() {
    let b = redirector().await;
    let own = format!("http://{}/landed", b.addr);
    let got = location_after(&b, 301, &own, |o| o.protocol_rewrite = Some("https".into())).await;
    assert_eq!(got, format!("https://{}/landed", b.addr));
    let got = location_after(&b, 307, &own, |o| {
        o.protocol_rewrite = Some("https".into());
        o.auto_rewrite = true;
        o.public_hosts = vec!["front.example:9999".into()];
    })
    .await;
    assert_eq!(got, "https://front.example:9999/landed");
}

/// Only locations naming the target itself (host and port) are rewritten;
/// other hosts, other ports and relative locations stay.
#[tokio::test]
async fn other_hosts_ports_and_relative_locations_stay() {
    let b = redirector().await;
    let other_port = format!(
        "http://127.0.0.1:{}/x",
        if b.addr.port() == 1 { 2 } else { 1 }
    );
    for loc in [
        "http://elsewhere.example/x",
        other_port.as_str(),
        "/relative",
        "rel/x",
    ] {
        let got = location_after(&b, 302, loc, |o| {
            o.host_rewrite = Some("public.example".into());
            o.protocol_rewrite = Some("https".into());
        })
        .await;
        assert_eq!(got, loc);
    }
}

/// A backend that sets three cookies.
async fn cookie_jar() -> Backend {
    backend(|_| async {
        let mut r = text(200, "ok");
        for c in [
            "a=1; Domain=backend.internal; Path=/app",
            "b=2; path=/app/sub; domain=other.internal",
            "c=3; HttpOnly",
        ] {
            r.headers_mut()
                .append("set-cookie", HeaderValue::from_static(c));
        }
        r
    })
    .await
}

/// http-proxy-3's test lib/http-proxy-passes-web-outgoing
/// (cookie path/domain rewrite/remove/advanced map): each Set-Cookie line
/// is rewritten on its own and stays a separate line at the client
/// (through `listen`, counted on the wire).
#[tokio::test]
async fn cookie_domain_and_path_rewrite_keep_lines_separate() {
    let b = cookie_jar().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| {
            o.cookie_domain_rewrite =
                CookieRewrite::map([("backend.internal", "public.example"), ("*", "")]);
            o.cookie_path_rewrite = CookieRewrite::all("/");
        })
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let out = raw_request(
        server.local_addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .collect();
    assert_eq!(
        lines,
        [
            "a=1; Domain=public.example; Path=/",
            "b=2; path=/",
            "c=3; HttpOnly",
        ],
        "{text}"
    );
}

/// With no rewrite configured, cookies are untouched.
#[tokio::test]
async fn cookies_untouched_by_default() {
    let b = cookie_jar().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    let got: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], "a=1; Domain=backend.internal; Path=/app");
}

/// http-proxy-3's test lib/http-proxy-passes-web-incoming ("followRedirects
/// follows a 301") and its `followRedirects`: the proxy follows the hops
/// itself, at most `follow_redirects` of them; past the limit the client
/// gets the redirect as it is.
#[tokio::test]
async fn follow_redirects_with_a_limit() {
    // /hop/N redirects to /hop/N-1 (relative); /hop/0 answers 200.
    let b = backend(|req: Request<Incoming>| async move {
        let n: u32 = req.uri().path()["/hop/".len()..].parse().unwrap();
        if n == 0 {
            return text(200, "arrived");
        }
        let mut r = text(301, "");
        r.headers_mut().insert(
            "location",
            HeaderValue::from_str(&format!("/hop/{}", n - 1)).unwrap(),
        );
        r
    })
    .await;
    let proxy = Proxy::builder().build().unwrap();
    let mut opts = Options::to(b.target());
    opts.follow_redirects = Some(3);
    let res = within(proxy.web_with(Request::get("/hop/3").body(()).unwrap(), &opts)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(body_bytes(res.into_body()).await, "arrived");
    let res = within(proxy.web_with(Request::get("/hop/4").body(()).unwrap(), &opts)).await;
    assert_eq!(res.status(), 301);
    assert_eq!(res.headers()["location"], "/hop/0");
    // Off by default (unlike http-proxy-3's fetch path, which always follows).
    let res = within(proxy.web_with(
        Request::get("/hop/1").body(()).unwrap(),
        &Options::to(b.target()),
    ))
    .await;
    assert_eq!(res.status(), 301);
}
