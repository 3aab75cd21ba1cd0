//! `Proxy::forward`: @fastify/reply-from's options, one test per
//! applicable file of reply-from's test suite (named in each doc comment).
//! Retries are in `retry.rs`, several upstreams in `balance.rs`, the tower
//! and axum integration in `service.rs`.
//!
//! Not applicable, with the reason:
//! * custom-undici-instance, http-agents, http-global-agent, https-agents,
//!   https-global-agent, undici-agent, undici-custom-dispatcher,
//!   undici-global-agent, undici-no-destroy, undici-options,
//!   undici-proxy-agent: the transport is the engine's one pooled client,
//!   configured with `ClientOptions`; there is no agent to pass in.
//! * fastify-multipart-incompatibility, modifyCoreObjects-false,
//!   multipart-custom-parser, text-event-stream-custom-parser,
//!   post-formbody, full-post-extended-content-type, padded-body,
//!   post-with-custom-encoded-contenttype, undici-body: Fastify's body
//!   parsers. Here the body is never parsed: it streams through byte for
//!   byte, whatever its type (`bodies_of_any_type_stream_through`).
//! * fix-GHSA-v574-6498-x57v, get-upstream-cache: there is no URL cache to
//!   poison; `get_upstream_is_asked_per_call` shows each call is resolved
//!   anew.
//! * rewrite-headers-type, rewrite-request-headers-type: type tests; the
//!   closures' types are checked by the compiler.
//! * no-stream-body-option: `Forward::body` takes bytes, so a stream cannot
//!   be passed (a streamed body is the request's own).
//! * utils-filter-pseudo-headers: hyper never puts pseudo-headers in a
//!   `HeaderMap` (h2 → h1 is covered in `http2.rs`).
//! * full-https-get: reply-from accepts self-signed certificates by
//!   default; the engine verifies them (`tls.rs` covers custom CAs and
//!   `secure: false`).
//! * http2-*, incomplete-request: the engine's HTTP/2 and framing, covered
//!   in `http2.rs` and `http.rs`.
//! * http-invalid-target (DNS failure → 503): a refused or unresolvable
//!   upstream is `UpstreamConnect`, 502 (`refused_upstream_is_502`); no DNS
//!   lookup is made in tests.
//! * undici-connect-timeout: `ConnectTimeout` is covered in `timeouts.rs`.
//! * unexpected-error: every failure is a typed kind (crate docs table).
//!
//! disable-request-logging is in `access_log.rs`, alone in its binary:
//! tracing's per-callsite interest cache is global, so a scoped subscriber
//! races with tests on other threads.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use switchyard::{Body, Forward, Protocol, Proxy, ProxyError, Target};

fn req(method: Method, uri: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "front.test")
        .body(Full::default())
        .unwrap()
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    req(Method::GET, uri)
}

async fn run(f: Forward) -> (StatusCode, http::HeaderMap, Bytes) {
    let res = within(f.into_future()).await;
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body_bytes(body).await)
}

/// A backend answering 205 with a content type and a custom header.
async fn answer_205() -> Backend {
    backend(|req: Request<Incoming>| async move {
        let mut r = Response::new(Body::from(req.uri().to_string()));
        *r.status_mut() = StatusCode::RESET_CONTENT;
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        r.headers_mut()
            .insert("x-my-header", HeaderValue::from_static("hello!"));
        r
    })
    .await
}

fn seen_one(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    let s = seen.lock().unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    s[0].clone()
}

/// reply-from's tests base-get, undici: with a base, `forward_request` forwards
/// `GET /`; the status (205) and headers are relayed.
#[tokio::test]
async fn base_get_relays_status_and_headers() {
    let b = answer_205().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let (status, headers, body) = run(proxy.forward_request(get("/"))).await;
    assert_eq!(status, 205);
    assert_eq!(headers["x-my-header"], "hello!");
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(body, "/");
}

/// reply-from's tests full-get-test, base-path: an absolute source URL, with no
/// base.
#[tokio::test]
async fn absolute_source_without_a_base() {
    let b = answer_205().await;
    let proxy = Proxy::builder().build().unwrap();
    let (status, headers, body) =
        run(proxy.forward(get("/ignored"), &format!("{}/abs/path", b.url()))).await;
    assert_eq!(status, 205);
    assert_eq!(headers["x-my-header"], "hello!");
    assert_eq!(body, "/abs/path");
}

/// An absolute source on another origin than the base is refused (400).
#[tokio::test]
async fn absolute_source_elsewhere_than_the_base_is_400() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let (status, _, _) = run(proxy.forward(get("/"), "http://127.0.0.1:1/x")).await;
    assert_eq!(status, 400);
    assert!(seen.lock().unwrap().is_empty());
}

/// reply-from's tests base-querystring, full-querystring: the incoming query is
/// kept, on the request's own path and on another source path.
#[tokio::test]
async fn incoming_query_is_forwarded() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    run(proxy.forward_request(get("/hello?a=b"))).await;
    run(proxy.forward(get("/hello?a=b"), "/world")).await;
    let s = seen.lock().unwrap();
    assert_eq!(s[0].uri, "/hello?a=b");
    assert_eq!(s[1].uri, "/world?a=b");
}

/// reply-from's tests core-with-path-in-base, undici-with-path-in-base: the
/// base path is a jail, not a prefix: base `/hello` and source `/hello` →
/// `/hello`.
#[tokio::test]
async fn base_path_is_a_jail_not_a_prefix() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&format!("{}/hello", b.url())).unwrap();
    let (status, _, _) = run(proxy.forward(get("/"), "/hello")).await;
    assert_eq!(status, 200);
    assert_eq!(seen_one(&seen).uri, "/hello");
}

/// reply-from's tests fix-GHSA-2q7r-29rg-6m5h and build-url: sources that
/// escape the base (`..`, `%2e%2e`, `..%2f`, or a path outside it) are 400 and
/// reach nobody; the request's own path is checked the same way.
#[tokio::test]
async fn base_path_escapes_are_400() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&format!("{}/hi/", b.url())).unwrap();
    for source in [
        "/ho/%2E%2E/hi",
        "/hi/../private",
        "/hi/%2e%2e/private",
        "/hi/..%2fprivate",
        "/private",
    ] {
        let (status, _, body) = run(proxy.forward(get("/"), source)).await;
        assert_eq!(
            (status.as_u16(), &body[..]),
            (400, &b"Bad Request"[..]),
            "{source}"
        );
    }
    let err = within(proxy.forward_request(get("/hi/%2E%2E/x")).try_send())
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::BadRequest(_)), "{err:?}");
    assert!(seen.lock().unwrap().is_empty());
    let (status, _, _) = run(proxy.forward(get("/"), "/hi/[...slug]")).await;
    assert_eq!(status, 200);
}

/// reply-from's test full-querystring-url: the incoming query is not checked
/// for traversal; it is forwarded raw.
#[tokio::test]
async fn query_is_forwarded_raw() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    run(proxy.forward(get("/?a=/ho/%2E%2E/hi"), "/world")).await;
    assert_eq!(seen_one(&seen).uri, "/world?a=/ho/%2E%2E/hi");
}

/// reply-from's tests full-querystring-rewrite-string,
/// full-querystring-rewrite: a query in the source replaces the incoming one
/// (never merged); without one, the incoming query is appended.
#[tokio::test]
async fn source_query_replaces_the_incoming_one() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    run(proxy.forward(get("/hello?a=b"), "/world?b=c")).await;
    run(proxy.forward(get("/hello?a=b"), "/world")).await;
    let s = seen.lock().unwrap();
    assert_eq!(s[0].uri, "/world?b=c");
    assert_eq!(s[1].uri, "/world?a=b");
}

/// reply-from's tests full-querystring-rewrite-option, -option-complex and
/// -option-empty-object: `query_string` replaces both the source's and the
/// incoming query; empty sends no `?`.
#[tokio::test]
async fn query_string_replaces_every_query() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    run(proxy
        .forward(get("/hello?a=b"), "/world")
        .query_string("b=c"))
    .await;
    run(proxy
        .forward(get("/hello?a=b"), "/world?a=b")
        .query_string("b=c"))
    .await;
    run(proxy.forward(get("/hello?a=b"), "/world").query_string("")).await;
    let s = seen.lock().unwrap();
    assert_eq!(s[0].uri, "/world?b=c");
    assert_eq!(s[1].uri, "/world?b=c");
    assert_eq!(s[2].uri, "/world");
}

/// reply-from's tests full-querystring-rewrite-option-function,
/// -function-request and -function-empty: the function gets the incoming query
/// and the request, and its result replaces the query (empty: no `?`).
#[tokio::test]
async fn query_string_function() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let f = proxy
        .forward(get("/hello?a=b"), "/world")
        .query_string_with(|q, parts| {
            format!(
                "{}&host={}",
                q.unwrap_or(""),
                parts.headers["host"].to_str().unwrap()
            )
        });
    run(f).await;
    run(proxy
        .forward(get("/hello?a=b"), "/world")
        .query_string_with(|_, _| String::new()))
    .await;
    let s = seen.lock().unwrap();
    assert_eq!(s[0].uri, "/world?a=b&host=front.test");
    assert_eq!(s[1].uri, "/world");
}

/// reply-from's tests full-rewrite-body, full-rewrite-body-http,
/// full-rewrite-body-content-type: a replacement body is sent as it is with its
/// length, with the given content type.
#[tokio::test]
async fn replacement_body_with_content_type() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let mut r = req(Method::POST, "/");
    *r.body_mut() = Full::new(Bytes::from_static(b"ignored client body"));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    let f = proxy
        .forward(r, "/")
        .body(&b"{\"hello\":\"world\"}!!!"[..])
        .content_type("application/msgpack");
    let (status, _, _) = run(f).await;
    assert_eq!(status, 200);
    let s = seen_one(&seen);
    assert_eq!(s.body, "{\"hello\":\"world\"}!!!");
    assert_eq!(s.headers["content-length"], "20");
    assert_eq!(s.headers["content-type"], "application/msgpack");
}

/// reply-from's tests full-rewrite-body-to-null,
/// full-rewrite-body-to-empty-string: `no_body` sends `Content-Length: 0` and
/// no content type; an empty replacement body is an empty body with its length
/// (bytes, not JSON).
#[tokio::test]
async fn empty_replacement_bodies() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let mut r = req(Method::POST, "/");
    *r.body_mut() = Full::new(Bytes::from_static(b"dropped"));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    run(proxy.forward(r, "/").no_body()).await;
    run(proxy.forward(req(Method::POST, "/"), "/").body("")).await;
    let s = seen.lock().unwrap();
    assert_eq!(s[0].headers["content-length"], "0");
    assert!(!s[0].headers.contains_key("content-type"));
    assert!(s[0].body.is_empty());
    assert_eq!(s[1].headers["content-length"], "0");
}

/// reply-from's tests no-body-opts-with-get, no-body-opts-with-head: a
/// replacement body on GET or HEAD is an error of the call (500), and nothing
/// is sent.
#[tokio::test]
async fn replacement_body_on_get_or_head_is_refused() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    for m in [Method::GET, Method::HEAD] {
        let err = within(proxy.forward(req(m, "/"), "/").body("x").try_send())
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::InvalidCall(_)), "{err:?}");
    }
    let (status, _, _) = run(proxy.forward(get("/"), "/").body("x")).await;
    assert_eq!(status, 500);
    assert!(seen.lock().unwrap().is_empty());
}

/// reply-from's test method: `method` turns an incoming PATCH into a POST, body
/// kept.
#[tokio::test]
async fn method_override_keeps_the_body() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let mut r = req(Method::PATCH, "/");
    *r.body_mut() = Full::new(Bytes::from_static(b"{\"a\":1}"));
    run(proxy.forward(r, "/").method(Method::POST)).await;
    let s = seen_one(&seen);
    assert_eq!(
        (s.method.as_str(), &s.body[..]),
        ("POST", &b"{\"a\":1}"[..])
    );
}

/// reply-from's tests full-post, full-post-stream, full-post-stream-core,
/// post-plain-text, post-with-octet-stream, fix-GHSA-v2v2-hph8-q5xp: bodies of
/// any type stream through unchanged (never parsed or re-encoded), their
/// content type too; one of unknown length is sent chunked.
#[tokio::test]
async fn bodies_of_any_type_stream_through() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    for (ct, body) in [
        ("application/json ; charset=utf-8", &b"\"a string\""[..]),
        ("application/json", b"{\n  \"padded\": true\n}"),
        ("text/plain", b"hello"),
        ("application/octet-stream", b"\x00\x01\x02"),
    ] {
        let mut r = req(Method::POST, "/");
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(ct));
        *r.body_mut() = Full::new(Bytes::from_static(body));
        let (status, _, _) = run(proxy.forward(r, "/")).await;
        assert_eq!(status, 200);
    }
    let frames = futures_util::stream::iter(
        ["one,", "two,", "three"]
            .map(|s| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(s)))),
    );
    let r = Request::post("/").body(StreamBody::new(frames)).unwrap();
    run(proxy.forward(r, "/stream")).await;
    let s = seen.lock().unwrap();
    assert_eq!(
        s[0].headers["content-type"],
        "application/json ; charset=utf-8"
    );
    assert_eq!(s[0].body, "\"a string\"");
    assert_eq!(s[1].body, "{\n  \"padded\": true\n}");
    assert_eq!(s[2].body, "hello");
    assert_eq!(s[3].body, &b"\x00\x01\x02"[..]);
    assert_eq!(s[4].body, "one,two,three");
    assert_eq!(s[4].headers["transfer-encoding"], "chunked");
}

/// reply-from's tests host-header, rewrite-request-headers: the upstream gets
/// its own Host (with a non-default port); `rewrite_request_headers` sees that
/// Host, can override it and others, and has the last word.
#[tokio::test]
async fn host_header_and_rewrite_request_headers() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let original = get("/");
    let client_host = original.headers()["host"].clone();
    let saw = Arc::new(Mutex::new(None));
    let s2 = saw.clone();
    run(proxy
        .forward(original, "/")
        .rewrite_request_headers(move |h| {
            *s2.lock().unwrap() = h.get("host").cloned();
            h.insert("x-original-host", client_host);
            h.insert("x-added", HeaderValue::from_static("1"));
        }))
    .await;
    run(proxy.forward(get("/"), "/").rewrite_request_headers(|h| {
        h.insert("host", HeaderValue::from_static("overridden.test"));
    }))
    .await;
    run(proxy.forward(get("/"), "/").keep_host()).await;
    let want = format!("127.0.0.1:{}", b.addr.port());
    assert_eq!(saw.lock().unwrap().clone().unwrap(), want.as_str());
    let s = seen.lock().unwrap();
    assert_eq!(s[0].headers["host"], want.as_str());
    assert_eq!(s[0].headers["x-original-host"], "front.test");
    assert_eq!(s[0].headers["x-added"], "1");
    assert_eq!(s[1].headers["host"], "overridden.test");
    assert_eq!(s[2].headers["host"], "front.test");
}

/// reply-from's test strip-connection-headers: fields named in `Connection` are
/// gone before `rewrite_request_headers` runs (the April 2026 fix), unlisted
/// ones stay.
#[tokio::test]
async fn connection_listed_headers_are_stripped_first() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let mut r = get("/");
    let h = r.headers_mut();
    h.insert(
        "connection",
        HeaderValue::from_static("keep-alive, X-Proxy-Added"),
    );
    h.insert("x-proxy-added", HeaderValue::from_static("from client"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    let saw = Arc::new(Mutex::new(true));
    let s2 = saw.clone();
    run(proxy.forward(r, "/").rewrite_request_headers(move |h| {
        *s2.lock().unwrap() = h.contains_key("x-proxy-added");
    }))
    .await;
    assert!(!*saw.lock().unwrap());
    let s = seen_one(&seen);
    assert!(!s.headers.contains_key("x-proxy-added"));
    assert!(!s.headers.contains_key("connection"));
    assert_eq!(s.headers["x-kept"], "1");
}

/// reply-from's test rewrite-headers: response headers can be dropped and
/// added.
#[tokio::test]
async fn rewrite_headers_edits_the_response() {
    let b = answer_205().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let (status, headers, _) = run(proxy.forward(get("/"), "/").rewrite_headers(|h| {
        h.remove("x-my-header");
        h.insert("x-rewritten", HeaderValue::from_static("yes"));
    }))
    .await;
    assert_eq!(status, 205);
    assert!(!headers.contains_key("x-my-header"));
    assert_eq!(headers["x-rewritten"], "yes");
}

/// reply-from's tests onResponse, transform-body: `on_response` gets the status
/// and can pipe the body through a transformation (upper case), headers kept.
#[tokio::test]
async fn on_response_transforms_the_body() {
    let b = answer_205().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let seen_status = Arc::new(Mutex::new(None));
    let s2 = seen_status.clone();
    let f = proxy.forward(get("/"), "/shout").on_response(move |res| {
        *s2.lock().unwrap() = Some(res.status());
        let (mut parts, body) = res.into_parts();
        parts.headers.remove("content-length");
        let upper = body.map_frame(|f| f.map_data(|d| Bytes::from(d.to_ascii_uppercase())));
        Response::from_parts(parts, Body::new(upper))
    });
    let (status, headers, body) = run(f).await;
    assert_eq!(
        *seen_status.lock().unwrap(),
        Some(StatusCode::RESET_CONTENT)
    );
    assert_eq!((status.as_u16(), &body[..]), (205, &b"/SHOUT"[..]));
    assert_eq!(headers["x-my-header"], "hello!");
}

/// reply-from's tests on-error, http-timeout, undici-timeout: `headers_timeout`
/// → 504 by default; `on_error` receives the typed timeout (with its source
/// chain intact) and its response is sent.
#[tokio::test(start_paused = true)]
async fn headers_timeout_and_on_error() {
    let (addr, _heads, _closed) = holding_backend().await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let (status, _, body) = run(proxy
        .forward(get("/"), "/")
        .headers_timeout(Duration::from_secs(1)))
    .await;
    assert_eq!((status.as_u16(), &body[..]), (504, &b"Gateway Timeout"[..]));
    let got = Arc::new(Mutex::new(None));
    let g2 = got.clone();
    let (status, _, body) = run(proxy
        .forward(get("/"), "/")
        .headers_timeout(Duration::from_secs(1))
        .on_error(move |e| {
            *g2.lock().unwrap() = Some(e.to_string());
            text(504, "custom timeout page")
        }))
    .await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (504, &b"custom timeout page"[..])
    );
    assert_eq!(
        got.lock().unwrap().as_deref(),
        Some("upstream timed out after 1s")
    );
}

/// reply-from's tests undici-timeout-body, undici-timeout-body-partial: once
/// the head is relayed, `body_timeout` cuts the body (the client sees a failed
/// body, never a clean short one).
#[tokio::test(start_paused = true)]
async fn body_timeout_cuts_a_stalled_body() {
    let (addr, _) = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial").await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let res = within(
        proxy
            .forward(get("/"), "/")
            .body_timeout(Duration::from_secs(2))
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = within(body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "partial");
    let err = within(body.frame()).await.unwrap().unwrap_err();
    assert!(err.is::<switchyard::BodyIdleTimeout>(), "{err:?}");
}

/// `total_timeout` bounds the whole exchange: before the head it is a 504
/// of its own kind; after it, the body fails with the same kind.
#[tokio::test(start_paused = true)]
async fn total_timeout_before_and_after_the_head() {
    let (addr, _heads, _closed) = holding_backend().await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let err = within(
        proxy
            .forward(get("/"), "/")
            .total_timeout(Duration::from_secs(3))
            .try_send(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProxyError::TotalTimeout(d) if d == Duration::from_secs(3)));
    assert_eq!(err.status(), Some(StatusCode::GATEWAY_TIMEOUT));

    let (addr, _) = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome").await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let res = within(
        proxy
            .forward(get("/"), "/")
            .total_timeout(Duration::from_secs(3))
            .into_future(),
    )
    .await;
    let mut body = res.into_body();
    within(body.frame()).await.unwrap().unwrap();
    let err = within(body.frame()).await.unwrap().unwrap_err();
    let err = err.downcast::<ProxyError>().unwrap();
    assert!(matches!(*err, ProxyError::TotalTimeout(_)), "{err:?}");
}

/// reply-from's test on-invalid-upstream-response: an upstream answer that is
/// not HTTP (a four-digit status) is 502.
#[tokio::test]
async fn invalid_upstream_response_is_502() {
    let (addr, _) = raw_backend(b"HTTP/1.1 8888 Weird\r\ncontent-length: 0\r\n\r\n").await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let (status, _, _) = run(proxy.forward(get("/"), "/")).await;
    assert_eq!(status, 502);
}

/// reply-from's tests http-invalid-target (as 502, see the module docs),
/// http-retry with `retriesCount: 0`: a refused connection is 502 without
/// retries.
#[tokio::test]
async fn refused_upstream_is_502() {
    let (_socket, addr) = refusing_port();
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let (status, _, body) = run(proxy.forward(get("/"), "/")).await;
    assert_eq!((status.as_u16(), &body[..]), (502, &b"Bad Gateway"[..]));
    assert!(!String::from_utf8_lossy(&body).contains("127.0.0.1"));
}

/// reply-from's tests get-upstream-http, get-upstream-type,
/// get-upstream-undici, get-upstream-cache: `get_upstream` gets the request and
/// the default base, and picks the upstream per call, with or without a proxy
/// base.
#[tokio::test]
async fn get_upstream_is_asked_per_call() {
    let (a, seen_a) = recording_backend().await;
    let (b, seen_b) = recording_backend().await;
    let with_base = Proxy::to(&a.url()).unwrap();
    let without = Proxy::builder().build().unwrap();
    for (proxy, which) in [(&with_base, "b"), (&without, "a"), (&with_base, "a")] {
        let (ta, tb) = (a.target(), b.target());
        let mut r = get("/same");
        r.headers_mut()
            .insert("x-which", HeaderValue::from_str(which).unwrap());
        let had_base = proxy.options().target.is_some();
        run(proxy.forward(r, "/same").get_upstream(move |parts, base| {
            assert_eq!(base.is_some(), had_base);
            if parts.headers["x-which"] == "b" {
                tb
            } else {
                ta
            }
        }))
        .await;
    }
    assert_eq!(seen_a.lock().unwrap().len(), 2);
    assert_eq!(seen_b.lock().unwrap().len(), 1);
}

/// reply-from's tests full-delete-http2, full-post-http2, http-http2: to an
/// HTTP/2 (h2c) upstream, DELETE and POST with a body work and a 404 is
/// relayed.
#[tokio::test]
async fn http2_upstream() {
    let b = backend(|req: Request<Incoming>| async move {
        let version = format!("{:?} {}", req.version(), req.method());
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let mut r = Response::new(Body::from(format!(
            "{version} {}",
            String::from_utf8_lossy(&body)
        )));
        if parts.uri.path() == "/missing" {
            *r.status_mut() = StatusCode::NOT_FOUND;
        }
        r
    })
    .await;
    let proxy = Proxy::builder()
        .target(b.target().with_protocol(Protocol::Http2))
        .build()
        .unwrap();
    let (status, _, body) = run(proxy.forward(req(Method::DELETE, "/"), "/")).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, &b"HTTP/2.0 DELETE "[..])
    );
    let mut r = req(Method::POST, "/");
    *r.body_mut() = Full::new(Bytes::from_static(b"posted"));
    let (_, _, body) = run(proxy.forward(r, "/")).await;
    assert_eq!(body, "HTTP/2.0 POST posted");
    let (status, _, _) = run(proxy.forward(get("/"), "/missing")).await;
    assert_eq!(status, 404);
}

/// reply-from's tests undici, unix-http: a unix-socket base.
#[tokio::test]
async fn unix_socket_base() {
    let path = std::env::temp_dir().join(format!("switchyard-reply-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Body::from(
                        req.uri().to_string(),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("unix:{}", path.display())).unwrap())
        .build()
        .unwrap();
    let (status, _, body) = run(proxy.forward(get("/"), "/over/unix?x=1")).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!((status.as_u16(), &body[..]), (200, &b"/over/unix?x=1"[..]));
}

/// reply-from's test undici-chaining: two proxies in a row (a forwarding one in
/// front of a `listen`ing one); a non-ASCII `Content-Disposition` survives.
#[tokio::test]
async fn chained_proxies_keep_non_ascii_headers() {
    let b = backend(|_req: Request<Incoming>| async move {
        let mut r = Response::new(Body::from("file"));
        r.headers_mut().insert(
            "content-disposition",
            HeaderValue::from_bytes("attachment; filename=\"år.txt\"".as_bytes()).unwrap(),
        );
        r
    })
    .await;
    let inner = Proxy::to(&b.url()).unwrap();
    let server = listen(&inner).await;
    let outer = Proxy::to(&format!("http://{}", server.local_addr())).unwrap();
    let (status, headers, _) = run(outer.forward(get("/"), "/file")).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-disposition"].as_bytes(),
        "attachment; filename=\"år.txt\"".as_bytes()
    );
}

/// reply-from's test http1-aborted-request: a client that goes away before the
/// upstream answers (the call dropped) cancels the upstream request;
/// `on_response` is never called.
#[tokio::test]
async fn dropped_call_cancels_the_upstream_request() {
    let (addr, mut heads, mut closed) = holding_backend().await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let called = Arc::new(Mutex::new(false));
    let c2 = called.clone();
    let call = tokio::spawn(
        proxy
            .forward(get("/"), "/")
            .on_response(move |r| {
                *c2.lock().unwrap() = true;
                r
            })
            .into_future(),
    );
    within(heads.recv()).await.unwrap();
    call.abort();
    within(closed.recv()).await.unwrap();
    assert!(!*called.lock().unwrap());
}
