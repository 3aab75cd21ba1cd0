//! Retries: only idempotent methods, only bodies that can be sent again,
//! `Retry-After` in seconds (reply-from's tests http-retry,
//! undici-retry, retry-on-503, retry-with-a-custom-handler).
//!
//! Delays are measured on tokio's paused clock. With real sockets that
//! needs care: a paused runtime jumps to its next timer whenever it is idle,
//! even while a socket read is pending. So these tests leave exactly one
//! kind of timer in the runtime, the retry delay: no pool idle timer, no
//! connect timeout, and a safety net on the wall clock (a std thread)
//! instead of a tokio timeout. The clock then moves only when everything
//! waits for the delay, and by exactly the delay.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use switchyard::{Body, Proxy, ProxyError, Retry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A safety net on the wall clock, for paused-clock tests (see the module
/// docs): never a timing assertion.
async fn wall_within<F: Future>(f: F) -> F::Output {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = tx.send(());
    });
    tokio::select! {
        out = f => out,
        _ = rx => panic!("not done after 30 s of wall time (safety net)"),
    }
}

/// A proxy to `url` with no timer of its own.
fn timerless_proxy(url: &str) -> Proxy {
    Proxy::builder()
        .target(switchyard::Target::parse(url).unwrap())
        .configure_client(|c| {
            c.pool_idle_timeout = None;
            c.connect_timeout = None;
        })
        .build()
        .unwrap()
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::default()).unwrap()
}

/// A backend whose n-th request (from 0) gets `answer(n)`.
async fn counting_backend(
    answer: impl Fn(usize) -> Response<Body> + Send + Sync + 'static,
) -> (Backend, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let answer = Arc::new(answer);
    let b = backend(move |_req: Request<Incoming>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { answer(n) }
    })
    .await;
    (b, count)
}

fn unavailable(retry_after: Option<&str>, body: &'static str) -> Response<Body> {
    let mut r = text(503, body);
    if let Some(v) = retry_after {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_str(v).unwrap());
    }
    r
}

/// reply-from's test retry-on-503: a 503 with `Retry-After: 1` is retried after
/// one second (not one millisecond, as reply-from reads it), and the discarded
/// 503 is drained, so the retry reuses its connection.
#[tokio::test(start_paused = true)]
async fn retry_after_one_second() {
    let (b, count) = counting_backend(|n| match n {
        0 => unavailable(Some("1"), "busy"),
        _ => text(200, "ok"),
    })
    .await;
    let proxy = timerless_proxy(&b.url());
    let started = Instant::now();
    let res = wall_within(
        proxy
            .forward(get(), "/")
            .retry(Retry::default())
            .into_future(),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(res.status(), 200);
    assert_eq!(
        wall_within(http_body_util::BodyExt::collect(res.into_body()))
            .await
            .unwrap()
            .to_bytes(),
        "ok"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1100),
        "{elapsed:?}"
    );
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1, "the 503 was drained");
}

/// `Retry-After` as an HTTP-date (RFC 9110 §10.2.3) is waited for until
/// that date (reply-from: NaN, so no wait).
#[tokio::test(start_paused = true)]
async fn retry_after_http_date() {
    let (b, count) = counting_backend(|n| match n {
        0 => {
            let at = SystemTime::now() + Duration::from_secs(3);
            unavailable(Some(&httpdate::fmt_http_date(at)), "busy")
        }
        _ => text(200, "ok"),
    })
    .await;
    let proxy = timerless_proxy(&b.url());
    let started = Instant::now();
    let res = wall_within(
        proxy
            .forward(get(), "/")
            .retry(Retry::default())
            .into_future(),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(res.status(), 200);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // The date has one-second resolution.
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed <= Duration::from_secs(3),
        "{elapsed:?}"
    );
}

/// reply-from's test retry-on-503: an upstream that always answers 503 (without
/// Retry-After: the jittered default back-off) is tried `1 +
/// max_retries_on_503` times, then its last 503 and body are relayed. A large
/// discarded body is dropped (its connection closed), not read.
#[tokio::test(start_paused = true)]
async fn retries_on_503_are_bounded() {
    let (b, count) = counting_backend(|_| unavailable(None, "still busy")).await;
    let proxy = timerless_proxy(&b.url());
    let res = wall_within(
        proxy
            .forward(get(), "/")
            .retry(Retry::default().max_retries_on_503(3))
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 503);
    let body = wall_within(http_body_util::BodyExt::collect(res.into_body())).await;
    assert_eq!(body.unwrap().to_bytes(), "still busy");
    assert_eq!(count.load(Ordering::SeqCst), 4);

    let big = "x".repeat(200 * 1024);
    let big: &'static str = Box::leak(big.into_boxed_str());
    let (b, count) = counting_backend(move |n| match n {
        0 => unavailable(Some("0"), big),
        _ => text(200, "ok"),
    })
    .await;
    let proxy = timerless_proxy(&b.url());
    let res = wall_within(
        proxy
            .forward(get(), "/")
            .retry(Retry::default())
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(
        b.accepted.load(Ordering::SeqCst),
        2,
        "the big 503 was dropped"
    );
}

/// A `Retry-After` longer than `max_delay` is not waited for, and no retry
/// starts that would end after `total_timeout`: the 503 is relayed at once.
#[tokio::test(start_paused = true)]
async fn long_retry_after_is_not_waited_for() {
    let (b, count) = counting_backend(|_| unavailable(Some("3600"), "later")).await;
    let proxy = timerless_proxy(&b.url());
    let started = Instant::now();
    let res = wall_within(
        proxy
            .forward(get(), "/")
            .retry(Retry::default())
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 503);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);

    let (b, count) = counting_backend(|_| unavailable(Some("5"), "later")).await;
    let proxy = timerless_proxy(&b.url());
    let res = wall_within(
        proxy
            .forward(get(), "/")
            .retry(Retry::default())
            .total_timeout(Duration::from_secs(2))
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 503);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// A raw backend that closes the first `resets` connections after reading a
/// request head (a reset before any response), then answers 200. Returns
/// the number of request heads it read.
async fn resetting_backend(resets: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let h = heads.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            let reset = n < resets;
            n += 1;
            let h = h.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => seen.extend_from_slice(&buf[..k]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        h.fetch_add(1, Ordering::SeqCst);
                        if reset {
                            return;
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// reply-from's tests http-retry, undici-retry: a connection reset before the
/// response is retried for GET with `retries_count` 1 (200), and not with the
/// default 0 (502).
#[tokio::test]
async fn reset_connection_is_retried_for_get() {
    let (addr, heads) = resetting_backend(1).await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let res = within(
        proxy
            .forward(get(), "/")
            .retry(Retry::default().retries_count(1))
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(heads.load(Ordering::SeqCst), 2);

    let (addr, heads) = resetting_backend(1).await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let err = within(proxy.forward(get(), "/").retry(Retry::default()).try_send())
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamReset(_)), "{err:?}");
    assert_eq!(heads.load(Ordering::SeqCst), 1);
}

/// reply-from's test http-retry ("a method outside retryMethods is not
/// retried"): a POST is never retried by the default rules, with or without a
/// body, after a reset or a 503.
#[tokio::test]
async fn post_is_never_retried() {
    let (addr, heads) = resetting_backend(1).await;
    let proxy = Proxy::builder()
        .target(switchyard::Target::parse(&format!("http://{addr}")).unwrap())
        .retry(Retry::default().retries_count(5))
        .build()
        .unwrap();
    let post = Request::post("/")
        .body(Full::new(Bytes::from_static(b"pay once")))
        .unwrap();
    let res = within(proxy.web(post.map(Body::new))).await;
    assert_eq!(res.status(), 502);
    let empty_post = Request::post("/").body(Full::default()).unwrap();
    let res = within(proxy.forward(empty_post, "/").into_future()).await;
    assert_eq!(res.status(), 200, "the second connection answers");
    assert_eq!(heads.load(Ordering::SeqCst), 2, "one attempt each");

    let (b, count) = counting_backend(|_| unavailable(Some("0"), "busy")).await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let req = Request::post("/").body(Full::default()).unwrap();
    let res = within(
        proxy
            .forward(req, "/")
            .retry(Retry::default())
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 503);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// A GET with a streamed body is not retried either: the body is gone
/// once sent, and the engine keeps none unless the policy says so
/// (`buffer_body`, below).
#[tokio::test]
async fn a_request_with_a_body_is_not_retried() {
    let (b, count) = counting_backend(|_| unavailable(Some("0"), "busy")).await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let req = Request::get("/")
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let res = within(
        proxy
            .forward(req, "/")
            .retry(Retry::default())
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 503);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// reply-from's test retry-with-a-custom-handler: a `retry_delay` callback can
/// retry a 500, sees the default rules' answer and the error or status, and
/// counts attempts; `Retry::never()` turns retries off for one call.
#[tokio::test]
async fn custom_retry_delay() {
    let (b, count) = counting_backend(|n| match n {
        0 | 1 => text(500, "oops"),
        _ => text(200, "ok"),
    })
    .await;
    let proxy = Proxy::builder()
        .target(b.target())
        .retry(Retry::default().retry_delay(|ctx| {
            assert_eq!(ctx.status, Some(StatusCode::INTERNAL_SERVER_ERROR));
            assert!(ctx.default_delay.is_none());
            (ctx.attempt < 5).then_some(Duration::ZERO)
        }))
        .build()
        .unwrap();
    let res = within(proxy.web(get().map(Body::new))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(count.load(Ordering::SeqCst), 3);
    let res = within(
        proxy
            .forward(get(), "/")
            .retry(Retry::never())
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 200, "the fourth request");
    let (b, count) = counting_backend(|_| text(500, "oops")).await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let res = within(
        proxy
            .forward(get(), "/")
            .retry(Retry::never())
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 500);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// A refused connection is retried (`retries_count`), and the callback
/// sees the typed error: here the callback itself brings the upstream up,
/// so the retry finds it listening.
#[tokio::test]
async fn refused_connection_is_retried() {
    let (socket, addr) = refusing_port();
    let socket = Arc::new(Mutex::new(Some(socket)));
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let seen_error = Arc::new(Mutex::new(None));
    let s2 = seen_error.clone();
    let server: Arc<Mutex<Option<Backend>>> = Arc::new(Mutex::new(None));
    let kept = server.clone();
    let retry = Retry::default().retries_count(1).retry_delay(move |ctx| {
        *s2.lock().unwrap() = ctx.error.map(|e| e.is_connect());
        if let Some(socket) = socket.lock().unwrap().take() {
            let listener = socket.listen(16).unwrap();
            let up = serve_on(listener, |_req: Request<Incoming>| async {
                text(200, "up now")
            });
            *kept.lock().unwrap() = Some(up);
        }
        ctx.default_delay
    });
    let res = within(proxy.forward(get(), "/").retry(retry).try_send())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_bytes(res.into_body()).await, "up now");
    assert_eq!(*seen_error.lock().unwrap(), Some(true));
}

/// Retries only for the configured `retry_methods`.
#[tokio::test]
async fn retry_methods_are_configurable() {
    let (b, count) = counting_backend(|n| match n {
        0 => unavailable(Some("0"), "busy"),
        _ => text(200, "ok"),
    })
    .await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let delete = Request::delete("/").body(Full::default()).unwrap();
    let retry = Retry::default().retry_methods([Method::GET, Method::DELETE]);
    let res = within(proxy.forward(delete, "/").retry(retry).into_future()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let get_only = Retry::default().retry_methods([Method::DELETE]);
    let res = within(proxy.forward(get(), "/").retry(get_only).into_future()).await;
    assert_eq!(res.status(), 200, "the backend answers 200 from now on");
}

/// A raw backend that closes its first connection after reading a request
/// head (a reset before any response), and on the next ones reads the
/// `Content-Length` body and answers with it. Returns the heads it read.
async fn resetting_echo_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let h = heads.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut s, _)) = listener.accept().await {
            let reset = std::mem::take(&mut first);
            let h = h.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => seen.extend_from_slice(&buf[..k]),
                    }
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                };
                h.fetch_add(1, Ordering::SeqCst);
                if reset {
                    return;
                }
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while seen.len() < end + len {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => seen.extend_from_slice(&buf[..k]),
                    }
                }
                let body = &seen[end..end + len];
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    (addr, heads)
}

/// `Retry::buffer_body`: a POST whose method the policy lists and whose
/// body fits the limit is retried after a reset with its whole body; over
/// the limit it is sent once (502), as without the option.
#[tokio::test]
async fn a_kept_body_is_sent_again() {
    let policy = Retry::default()
        .retry_methods([http::Method::POST])
        .retries_count(1)
        .buffer_body(16);
    let post = |body: &'static [u8]| {
        Request::post("/")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };

    let (addr, heads) = resetting_echo_backend().await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let res = within(
        proxy
            .forward(post(b"pay twice ok"), "/")
            .retry(policy.clone())
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(body_bytes(res.into_body()).await, &b"pay twice ok"[..]);
    assert_eq!(heads.load(Ordering::SeqCst), 2);

    let (addr, heads) = resetting_echo_backend().await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let res = within(
        proxy
            .forward(post(b"seventeen bytes!!"), "/")
            .retry(policy)
            .into_future(),
    )
    .await;
    assert_eq!(res.status(), 502);
    assert_eq!(heads.load(Ordering::SeqCst), 1);
}
