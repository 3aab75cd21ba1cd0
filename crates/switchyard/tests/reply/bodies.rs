//! What goes out and comes back: bodies, methods, request and response headers.

use super::*;

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
