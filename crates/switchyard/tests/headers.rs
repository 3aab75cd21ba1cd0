//! The request and response header passes, seen from real peers: Host,
//! `X-Forwarded-*`, Authorization, extra headers and hop-by-hop fields.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Request};
use http_body_util::Full;
use switchyard::{BasicAuth, Proxy, Target, XfwdMode};

fn last(seen: &std::sync::Mutex<Vec<Seen>>) -> Seen {
    seen.lock().unwrap().last().unwrap().clone()
}

/// http-proxy-3's test lib/http-proxy-passes-web-incoming (XHeaders):
/// `xfwd` adds For (the client's address), Port (from Host), Proto and Host.
#[tokio::test]
async fn xfwd_adds_forwarded_headers() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req = b"GET / HTTP/1.1\r\nHost: front.test:8080\r\nConnection: close\r\n\r\n";
    raw_request(server.local_addr(), req, b"").await;
    let h = last(&seen).headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-port"], "8080");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "front.test:8080");
}

/// `try_web_to_conn`: the connection the caller names serves as the
/// request's `ConnInfo` (X-Forwarded-For and -Proto from it, and the
/// from-the-wire check that an HTTP/1.1 request names its `Host`), with no
/// extension on the request.
#[tokio::test]
async fn try_web_to_conn_takes_the_connection_from_the_caller() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let conn = switchyard::ConnInfo::new("192.0.2.7:4321".parse().unwrap(), true);
    let req = Request::get("/x")
        .header("host", "front.test")
        .body(switchyard::Body::empty())
        .unwrap();
    let res = proxy
        .try_web(req, switchyard::Call::new().target(&b.target()).conn(conn))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = last(&seen).headers;
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-port"], "443");
    // Without a Host, a request from the wire is refused; one built in the
    // application (no ConnInfo anywhere) is not.
    let bare = || Request::get("/y").body(switchyard::Body::empty()).unwrap();
    let err = proxy
        .try_web(
            bare(),
            switchyard::Call::new().target(&b.target()).conn(conn),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST));
    assert_eq!(
        proxy
            .try_web(bare(), switchyard::Call::new().target(&b.target()))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// http-proxy-3's test lib/http-proxy ("POST with an existing XFF gets the IP
/// appended"): appended with `,`, no space.
#[tokio::test]
async fn xfwd_appends_to_an_existing_chain() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req = Request::post(format!("http://{}/", server.local_addr()))
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "first.test")
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    send(req).await;
    let s = last(&seen);
    assert_eq!(s.headers["x-forwarded-for"], "10.0.0.1,127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "https,http");
    // Host is set only if absent.
    assert_eq!(s.headers["x-forwarded-host"], "first.test");
    assert_eq!(&s.body[..], b"body");
}

/// The port of an IPv6 `Host` is parsed properly (`[::1]:8080` gives 8080;
/// every Node library gives 1).
#[tokio::test]
async fn xfwd_port_from_an_ipv6_host() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req = b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n";
    raw_request(server.local_addr(), req, b"").await;
    assert_eq!(last(&seen).headers["x-forwarded-port"], "8080");
    let req = b"GET / HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n";
    raw_request(server.local_addr(), req, b"").await;
    assert_eq!(last(&seen).headers["x-forwarded-port"], "80");
}

/// http-proxy-3's test lib/http-proxy ("xfwd with an HTTP/1.0 request without
/// Host does not throw").
#[tokio::test]
async fn xfwd_http10_without_host() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let out = raw_request(server.local_addr(), b"GET /old HTTP/1.0\r\n\r\n", b"").await;
    assert!(
        out.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let h = last(&seen).headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-port"], "80");
    // With no client Host, the upstream gets the target's.
    assert_eq!(h["host"], b.addr.to_string());
}

/// httpxy sets `X-Forwarded-*` only if absent, http-proxy-3 appends; both are
/// offered: `SetIfAbsent` keeps the client's values, `Replace` drops them.
#[tokio::test]
async fn xfwd_modes() {
    let (b, seen) = recording_backend().await;
    for (mode, want) in [
        (XfwdMode::SetIfAbsent, "10.0.0.1"),
        (XfwdMode::Replace, "127.0.0.1"),
    ] {
        let proxy = Proxy::builder()
            .target(b.target())
            .configure(|o| {
                o.xfwd = true;
                o.xfwd_mode = mode;
            })
            .build()
            .unwrap();
        let server = listen(&proxy).await;
        let req = Request::get(format!("http://{}/", server.local_addr()))
            .header("x-forwarded-for", "10.0.0.1")
            .body(Full::default())
            .unwrap();
        send(req).await;
        assert_eq!(last(&seen).headers["x-forwarded-for"], want, "{mode:?}");
    }
}

/// http-proxy-3's test lib/http-proxy-common (changeOrigin port):
/// without `change_origin` the client's Host goes through; with it, the
/// target's host and its non-default port.
#[tokio::test]
async fn change_origin_sets_the_target_host() {
    let (b, seen) = recording_backend().await;
    for (change, want) in [(false, "front.test".to_owned()), (true, b.addr.to_string())] {
        let proxy = Proxy::builder()
            .target(b.target())
            .configure(|o| o.change_origin = change)
            .build()
            .unwrap();
        let req = Request::get("/")
            .header("host", "front.test")
            .body(())
            .unwrap();
        within(proxy.web(req)).await;
        assert_eq!(last(&seen).headers["host"], want.as_str());
    }
}

/// http-proxy-3's test http/ipv6-proxy: a target `http://[::1]:port` works, and
/// `change_origin` sends `Host: [::1]:port`.
#[tokio::test]
async fn ipv6_target_with_change_origin() {
    let (b, seen) = recording_backend_on("[::1]:0").await;
    let port = b.addr.port();
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://[::1]:{port}")).unwrap())
        .configure(|o| o.change_origin = true)
        .build()
        .unwrap();
    let req = Request::get("/v6")
        .header("host", "front")
        .body(())
        .unwrap();
    let res = within(proxy.web(req)).await;
    assert_eq!(res.status(), 200);
    let s = last(&seen);
    assert_eq!(s.uri, "/v6");
    assert_eq!(s.headers["host"], format!("[::1]:{port}").as_str());
}

/// http-proxy-3's test lib/http-proxy-passes-web-incoming ("auth overrides
/// a client Bearer", node-http-proxy #1706): `auth` replaces the client's
/// Authorization; an Authorization in `headers` still wins over `auth`.
#[tokio::test]
async fn auth_overrides_the_client_but_headers_win() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.auth = Some(BasicAuth::parse("user:pass").unwrap()))
        .build()
        .unwrap();
    let req = Request::get("/")
        .header("authorization", "Bearer client-token")
        .body(())
        .unwrap();
    within(proxy.web(req)).await;
    assert_eq!(last(&seen).headers["authorization"], "Basic dXNlcjpwYXNz");

    let mut opts = (**proxy.options()).clone();
    opts.headers.insert(
        "authorization",
        HeaderValue::from_static("Token from-headers"),
    );
    let req = Request::get("/")
        .header("authorization", "Bearer client-token")
        .body(())
        .unwrap();
    within(proxy.web_with(req, &opts)).await;
    assert_eq!(last(&seen).headers["authorization"], "Token from-headers");
}

/// http-proxy-3's `headers` option and its test lib/http-proxy-common
/// ("headers merge, options override"): option headers replace the client's
/// and are added when absent.
#[tokio::test]
async fn headers_option_overrides_client_headers() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| {
            o.headers
                .insert("x-tenant", HeaderValue::from_static("proxy"));
            o.headers.insert("x-added", HeaderValue::from_static("1"));
        })
        .build()
        .unwrap();
    let req = Request::get("/")
        .header("x-tenant", "client")
        .header("x-other", "kept")
        .body(())
        .unwrap();
    within(proxy.web(req)).await;
    let h = last(&seen).headers;
    assert_eq!(h.get_all("x-tenant").iter().count(), 1);
    assert_eq!(h["x-tenant"], "proxy");
    assert_eq!(h["x-added"], "1");
    assert_eq!(h["x-other"], "kept");
}

/// http-proxy-3's `method` option and its test lib/http-proxy-common
/// ("method override"): the outgoing method is replaced, the body still sent.
#[tokio::test]
async fn method_option_overrides_the_method() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.method = Some(http::Method::PUT))
        .build()
        .unwrap();
    let req = Request::post("/m")
        .body(Full::new(Bytes::from_static(b"data")))
        .unwrap();
    within(proxy.web(req.map(switchyard::Body::new))).await;
    let s = last(&seen);
    assert_eq!(s.method, "PUT");
    assert_eq!(&s.body[..], b"data");
}

/// RFC 9110 §7.6.1: hop-by-hop fields
/// and every field the client's `Connection` names are stripped (so a
/// client cannot make the proxy drop a header it adds); `TE: trailers` stays.
#[tokio::test]
async fn request_hop_by_hop_fields_are_stripped() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Drop, X-Forwarded-For\r\n\
        X-Drop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\n\
        Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Keep: 1\r\n\r\n";
    let out = raw_request(server.local_addr(), req, b"\r\n\r\n/").await;
    assert!(out.starts_with(b"HTTP/1.1 200"));
    let h = last(&seen).headers;
    for gone in [
        "connection",
        "x-drop",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream");
    }
    assert_eq!(h["te"], "trailers");
    assert_eq!(h["x-keep"], "1");
    // The proxy's own X-Forwarded-For survives the client's Connection list.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
}

/// RFC 9110 §7.6.1 on the response side: the upstream's hop-by-hop fields
/// (`Keep-Alive`, Connection-listed ones, `Proxy-Authenticate`) do not reach
/// the client (http-proxy-3 forwards them); end-to-end fields do; a chunked
/// upstream answer is re-framed by the proxy (removeChunked).
#[tokio::test]
async fn response_hop_by_hop_fields_are_stripped() {
    let (addr, _) = raw_backend(
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Authenticate: Basic\r\nX-Public: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
          2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let server = listen(&proxy).await;
    let (status, h, body) = get(&format!("http://{}/", server.local_addr())).await;
    assert_eq!(status, 200);
    for gone in ["x-secret", "keep-alive", "proxy-authenticate", "connection"] {
        assert!(!h.contains_key(gone), "{gone} reached the client");
    }
    assert_eq!(h["x-public"], "1");
    assert_eq!(&body[..], b"ok");
}

/// http-proxy-3's `preserveHeaderKeyCase` and its test lib/http-proxy:
/// through `listen`, an HTTP/1 client sees the upstream's exact header-name
/// case.
#[tokio::test]
async fn preserve_header_key_case_through_listen() {
    let (addr, _) = raw_backend(
        b"HTTP/1.1 200 OK\r\nX-CamelCase-Header: v\r\nX-ALL-CAPS: w\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{addr}")).unwrap())
        .configure_client(|c| c.preserve_header_key_case = true)
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
    assert!(text.contains("\r\nX-CamelCase-Header: v\r\n"), "{text}");
    assert!(text.contains("\r\nX-ALL-CAPS: w\r\n"), "{text}");

    // Off by default: names are lower-cased as hyper writes them.
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let server = listen(&proxy).await;
    let out = raw_request(
        server.local_addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert!(contains(&out, b"\r\nx-camelcase-header: v\r\n"));
}
