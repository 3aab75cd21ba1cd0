//! The source, the base and the query: where a `forward` call goes.

use super::*;

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
