//! `proxy_timeout`, `timeout` and `connect_timeout`, each with its own
//! error kind (node-http-proxy #1331: http-proxy-3 reports a timeout as
//! ECONNRESET). Timer-driven tests run on tokio's paused clock: the
//! runtime jumps to the next timer only when every task is idle, so expiry
//! is decided by events, never by a race with the wall clock. The 30 s
//! `within` net is later than every timeout tested here.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::Duration;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use switchyard::{Body, Options, Proxy, ProxyError, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// http-proxy-3's tests http/fetch-timeout and
/// lib/http-proxy-passes-web-incoming ("proxyTimeout … after ≥100 ms"),
/// node-http-proxy #1331: a hanging upstream with `proxy_timeout` is a
/// distinct `UpstreamTimeout`, answered 504.
#[tokio::test(start_paused = true)]
async fn proxy_timeout_on_a_hanging_upstream_is_504() {
    let (addr, mut heads, mut closed) = holding_backend().await;
    let mut opts = Options::to(Target::parse(&format!("http://{addr}")).unwrap());
    opts.proxy_timeout = Some(Duration::from_secs(5));
    let proxy = Proxy::builder().build().unwrap();
    let started = tokio::time::Instant::now();
    let err = within(proxy.try_web(Request::get("/").body(()).unwrap(), &opts))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamTimeout(d) if d == Duration::from_secs(5)));
    assert!(err.is_timeout());
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(within(heads.recv()).await.is_some());
    // The abandoned upstream request is cancelled.
    within(closed.recv()).await.unwrap();

    let res = within(proxy.web_with(Request::get("/").body(()).unwrap(), &opts)).await;
    assert_eq!(res.status(), 504);
    assert_eq!(body_bytes(res.into_body()).await, "Gateway Timeout");
}

/// After the head, `proxy_timeout` limits each gap in the response body; a
/// stalled body fails (the client sees a cut-off body, never a clean short
/// one).
#[tokio::test(start_paused = true)]
async fn proxy_timeout_cuts_a_stalled_body() {
    let (addr, _) = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst").await;
    let mut opts = Options::to(Target::parse(&format!("http://{addr}")).unwrap());
    opts.proxy_timeout = Some(Duration::from_secs(5));
    let proxy = Proxy::builder().build().unwrap();
    let res = within(proxy.web_with(Request::get("/").body(()).unwrap(), &opts)).await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = within(body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    let err = within(body.frame()).await.unwrap().unwrap_err();
    assert!(err.is::<switchyard::BodyIdleTimeout>(), "{err:?}");
}

/// http-proxy-3's `timeout` and its test lib/http-proxy ("`timeout:3` hangs
/// up the client"): a client that stops sending its body is dropped without
/// any response.
#[tokio::test(start_paused = true)]
async fn timeout_drops_an_idle_client_without_a_response() {
    let (b, _) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.timeout = Some(Duration::from_secs(5)))
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let mut c = within(tokio::net::TcpStream::connect(server.local_addr()))
        .await
        .unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = within(c.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}

/// `timeout` (http-proxy-3's `econnreset` case): while the upstream
/// hangs, `timeout` drops the client without a response, and the upstream
/// request is cancelled.
#[tokio::test(start_paused = true)]
async fn timeout_while_the_upstream_hangs() {
    let (addr, mut heads, mut closed) = holding_backend().await;
    let mut opts = Options::to(Target::parse(&format!("http://{addr}")).unwrap());
    opts.timeout = Some(Duration::from_secs(3));
    opts.proxy_timeout = Some(Duration::from_secs(20));
    let proxy = Proxy::builder().build().unwrap();
    let err = within(proxy.try_web(Request::get("/").body(()).unwrap(), &opts))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::ClientTimeout(_)), "{err:?}");
    assert_eq!(
        err.status(),
        None,
        "nothing is written to a timed-out client"
    );
    within(heads.recv()).await.unwrap();
    within(closed.recv()).await.unwrap();

    let server = listen(&Proxy::builder().options(opts).build().unwrap()).await;
    let out = raw_request(
        server.local_addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"",
    )
    .await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}

/// A client that keeps sending is not cut by `timeout` or `proxy_timeout`:
/// both are idle limits counted from the client's last progress, not
/// totals (a slow upload longer than the limit still succeeds).
#[tokio::test(start_paused = true)]
async fn timeouts_are_idle_limits_during_an_upload() {
    for proxy_timeout in [false, true] {
        let (b, seen) = recording_backend().await;
        let proxy = Proxy::builder()
            .target(b.target())
            .configure(|o| {
                if proxy_timeout {
                    o.proxy_timeout = Some(Duration::from_secs(5));
                } else {
                    o.timeout = Some(Duration::from_secs(5));
                }
            })
            .build()
            .unwrap();
        let server = listen(&proxy).await;
        let mut c = within(tokio::net::TcpStream::connect(server.local_addr()))
            .await
            .unwrap();
        c.write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab",
        )
        .await
        .unwrap();
        // The client's own pace (the scenario, not synchronisation): 4 s of
        // silence, under the limit, twice, so 8 s in all, then the rest.
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.write_all(b"c").await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.write_all(b"d").await.unwrap();
        let mut out = Vec::new();
        within(c.read_to_end(&mut out)).await.unwrap();
        assert!(
            out.starts_with(b"HTTP/1.1 200"),
            "proxy_timeout={proxy_timeout}: {}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(&seen.lock().unwrap()[0].body[..], b"abcd");
    }
}

/// Connect timeouts have their own typed error: an upstream that never
/// completes the TCP handshake (its accept queue is full, so the kernel
/// drops our SYN) is a `ConnectTimeout`, 504.
#[tokio::test(start_paused = true)]
async fn connect_timeout_is_504() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue (never accepted) so further SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..2 {
        fillers.push(within(tokio::net::TcpStream::connect(addr)).await.unwrap());
    }
    let proxy = Proxy::builder()
        .configure_client(|c| c.connect_timeout = Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    let opts = Options::to(Target::parse(&format!("http://{addr}")).unwrap());
    let err = within(proxy.try_web(Request::get("/").body(Body::empty()).unwrap(), &opts))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::ConnectTimeout(_)), "{err:?}");
    assert!(err.is_connect() && err.is_timeout());
    assert_eq!(err.status().unwrap(), 504);
    drop(listener);
}

/// `ListenOptions::keep_alive_timeout` and `request_head_timeout` (one timer per
/// connection): heads that each come in time keep a connection open past the keep-alive
/// timeout; once idle, the connection closes when it passes, without an answer, never
/// before. A head that stops midway gets a `408` when the head timeout has passed since
/// its first byte, sooner than the keep-alive timeout would have closed it.
#[tokio::test(start_paused = true)]
async fn listen_keep_alive_and_request_head_timeouts() {
    let backend = backend(|_req| async { text(200, "ok") }).await;
    let proxy = Proxy::builder().target(backend.target()).build().unwrap();
    let limit = Duration::from_secs(5);
    let head_limit = Duration::from_secs(2);
    let opts = switchyard::ListenOptions::default()
        .keep_alive_timeout(limit)
        .request_head_timeout(head_limit);
    let server = proxy.listen_with("127.0.0.1:0", opts).await.unwrap();
    let addr = server.local_addr();

    let mut conn = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let mut sent = tokio::time::Instant::now();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        sent = tokio::time::Instant::now();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until(&mut conn, b"\r\n\r\nok").await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "request {i}: {answer:?}"
        );
    }
    let mut rest = [0u8; 64];
    assert_eq!(within(conn.read(&mut rest)).await.unwrap(), 0, "not closed");
    assert!(
        sent.elapsed() >= limit,
        "closed {:?} after the last request",
        sent.elapsed()
    );

    let mut partial = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let first_byte = tokio::time::Instant::now();
    let mut answer = Vec::new();
    within(partial.read_to_end(&mut answer)).await.unwrap();
    let open_for = first_byte.elapsed();
    assert!(
        open_for >= head_limit && open_for < limit,
        "closed after {open_for:?}"
    );
    assert!(answer.starts_with(b"HTTP/1.1 408"), "{answer:?}");
}

/// Reads from `conn` until `end` has arrived.
async fn read_until(conn: &mut tokio::net::TcpStream, end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !contains(&out, end) {
        let n = within(conn.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {out:?}");
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// `ListenOptions::shutdown_timeout`: `Server::shutdown` waits for a
/// request in flight, no longer than the timeout; then the connection still busy is
/// closed, and an idle keep-alive connection is closed at once.
#[tokio::test(start_paused = true)]
async fn listen_shutdown_timeout_closes_what_is_left() {
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let backend = backend({
        let arrived = arrived.clone();
        move |req| {
            let arrived = arrived.clone();
            async move {
                if req.uri().path() == "/slow" {
                    arrived.notify_one();
                    std::future::pending::<()>().await;
                }
                text(200, "ok")
            }
        }
    })
    .await;
    let proxy = Proxy::builder().target(backend.target()).build().unwrap();
    let limit = Duration::from_secs(10);
    let opts = switchyard::ListenOptions::default().shutdown_timeout(limit);
    let server = proxy.listen_with("127.0.0.1:0", opts).await.unwrap();
    let addr = server.local_addr();

    let mut idle = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut idle, b"\r\n\r\nok").await;
    let mut busy = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    within(arrived.notified()).await;

    let stopping = tokio::time::Instant::now();
    within(server.shutdown()).await;
    assert!(
        stopping.elapsed() >= limit,
        "returned after {:?}",
        stopping.elapsed()
    );
    let mut rest = Vec::new();
    within(idle.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    within(busy.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "answered after the deadline: {rest:?}");
}
