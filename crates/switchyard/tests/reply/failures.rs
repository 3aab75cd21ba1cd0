//! Timeouts, failures, and the other kinds of upstream (HTTP/2, a unix socket, a
//! second proxy, a call dropped).

use super::*;

/// reply-from's tests on-error, http-timeout, undici-timeout: `headers_timeout`
/// → 504 by default; `try_send` gives the caller the typed timeout (with its
/// source chain intact) to answer as it likes (reply-from's `onError`).
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
    let res = within(
        proxy
            .forward(get("/"), "/")
            .headers_timeout(Duration::from_secs(1))
            .try_send(),
    )
    .await
    .unwrap_or_else(move |e| {
        *g2.lock().unwrap() = Some(e.to_string());
        text(504, "custom timeout page")
    });
    assert_eq!(res.status(), 504);
    assert_eq!(body_bytes(res.into_body()).await, "custom timeout page");
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
