//! The serving API (`switchyard::server`): any `tower::Service` on TCP or UNIX sockets,
//! the connection's facts given once per connection, the head limits, the keep-alive and
//! request-head timeouts (with the `408`), the `Keep-Alive` hint, a TLS configuration
//! replaced at run time, and the connection count.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchyard::server::{ListenOptions, Listener, LocalAddr, serve};
use switchyard::{Body, ConnInfo, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A service answering every request with `answer`.
fn answering(
    answer: String,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send {
    tower::service_fn(move |_req: Request<Incoming>| {
        let answer = answer.clone();
        async move { Ok::<_, Infallible>(Response::new(Body::from(answer))) }
    })
}

/// Requests held by a service until released (see [`Hold::service`]).
#[derive(Default, Clone)]
struct Hold {
    /// Told as each held request arrives.
    arrived: Arc<tokio::sync::Notify>,
    /// Lets a held request go on.
    release: Arc<tokio::sync::Notify>,
}

impl Hold {
    /// A service that holds the requests whose path `held` picks: each says so on
    /// `arrived`, then waits for `release`. Every answer's body is `answer()`, made where
    /// the request is served.
    fn service(
        self,
        held: fn(&str) -> bool,
        answer: fn() -> String,
    ) -> impl tower::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone
    + Send
    + Sync
    + 'static {
        let Self { arrived, release } = self;
        tower::service_fn(move |req: Request<Incoming>| {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                if held(req.uri().path()) {
                    arrived.notify_one();
                    release.notified().await;
                }
                Ok::<_, Infallible>(Response::new(Body::from(answer())))
            }
        })
    }
}

async fn tcp_listener() -> Listener {
    Listener::bind("127.0.0.1:0").await.unwrap()
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    within(conn.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// One request on a fresh connection; the whole answer as text.
async fn exchange(addr: LocalAddr, request: &[u8]) -> String {
    let mut conn = within(TcpStream::connect(addr.tcp().unwrap()))
        .await
        .unwrap();
    conn.write_all(request).await.unwrap();
    read_to_close(&mut conn).await
}

/// An axum router, made per connection with the client's address in it: the facts of the
/// connection reach the service without the request's extensions.
#[tokio::test]
async fn any_tower_service_gets_its_connection_facts() {
    use axum::routing::get;
    let server = serve(
        tcp_listener().await,
        |conn: Option<ConnInfo>| {
            let seen = conn.map_or_else(|| "none".to_owned(), |c| format!("{}", c.remote));
            axum::Router::new().route("/who", get(move || async move { seen }))
        },
        ListenOptions::default(),
    );
    let addr = server.local_addr().tcp().unwrap();
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let client = tcp.local_addr().unwrap();
    let (mut send, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(tcp)))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        let req = Request::get("/who")
            .header("host", "x")
            .body(Body::empty())
            .unwrap();
        let res = within(send.send_request(req)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(body_bytes(res.into_body()).await, client.to_string());
    }
    assert!(
        exchange(
            server.local_addr(),
            b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .starts_with("HTTP/1.1 404")
    );
    within(server.shutdown()).await;
}

/// A UNIX socket: a stale socket file is replaced, the service hears of no client address,
/// and the file is removed when the server ends; a socket someone listens on is not taken.
#[tokio::test]
async fn a_unix_socket_listener() {
    let dir = std::env::temp_dir().join(format!("switchyard-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a stale socket file");

    let listener = Listener::bind_unix(&path).await.unwrap();
    assert_eq!(listener.local_addr(), &LocalAddr::Unix(path.clone()));
    assert_eq!(
        listener.local_addr().url(false),
        format!("http+unix://{}", path.display())
    );
    let server = serve(
        listener,
        |conn: Option<ConnInfo>| answering(format!("{conn:?}")),
        ListenOptions::default(),
    );
    let err = Listener::bind_unix(&path).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");

    let unix = within(tokio::net::UnixStream::connect(&path))
        .await
        .unwrap();
    let (mut send, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(unix)))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("/").header("host", "x").body(Body::empty());
    let res = within(send.send_request(req.unwrap())).await.unwrap();
    assert_eq!(body_bytes(res.into_body()).await, "None");
    drop(send);
    within(conn).await.unwrap().unwrap();
    within(server.shutdown()).await;
    assert!(!path.exists(), "socket file left behind");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A head dripped one line every 300 ms against a 1 s head timeout gets a `408` about a
/// second after its first byte, although the keep-alive timeout is longer; an idle
/// keep-alive connection lives for the keep-alive timeout, then is closed without an
/// answer; a head of 100 lines sent at once is served.
#[tokio::test(start_paused = true)]
async fn the_request_head_timeout_answers_408() {
    let keep_alive = Duration::from_secs(5);
    let head_limit = Duration::from_secs(1);
    let options = ListenOptions::default()
        .keep_alive_timeout(keep_alive)
        .request_head_timeout(head_limit);
    let server = serve(tcp_listener().await, |_| answering("ok".into()), options);
    let addr = server.local_addr().tcp().unwrap();

    let conn = within(TcpStream::connect(addr)).await.unwrap();
    let (mut reader, mut writer) = conn.into_split();
    let first_byte = tokio::time::Instant::now();
    writer.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let dripping = tokio::spawn(async move {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer
                .write_all(format!("h{i}: v\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    within(reader.read_to_end(&mut answer)).await.unwrap();
    let answered_after = first_byte.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nRequest Timeout"), "{answer}");
    assert!(
        answered_after >= head_limit && answered_after < head_limit + Duration::from_millis(350),
        "answered after {answered_after:?}"
    );
    dripping.abort();

    let mut idle = within(TcpStream::connect(addr)).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    let n = within(idle.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        read_to_close(&mut idle).await,
        "",
        "closed without an answer"
    );
    let idle_for = answered.elapsed();
    assert!(
        idle_for >= keep_alive && idle_for < keep_alive + Duration::from_millis(50),
        "closed after {idle_for:?}"
    );

    let mut big = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..100 {
        big.push_str(&format!("x-line-{i}: {}\r\n", "v".repeat(40)));
    }
    big.push_str("\r\n");
    let options = ListenOptions::default()
        .request_head_timeout(head_limit)
        .max_headers(200);
    let lenient = serve(tcp_listener().await, |_| answering("big".into()), options);
    let answer = exchange(lenient.local_addr(), big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("big"), "{answer}");
}

/// A fresh connection that never sends a byte is closed at the keep-alive timeout, with
/// HTTP/2 on (the version is sniffed from the first bytes) as with HTTP/1 alone.
#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_at_the_keep_alive_timeout() {
    let keep_alive = Duration::from_secs(3);
    for http2 in [true, false] {
        let options = ListenOptions::default()
            .keep_alive_timeout(keep_alive)
            .http2(http2);
        let server = serve(tcp_listener().await, |_| answering("ok".into()), options);
        let mut silent = within(TcpStream::connect(server.local_addr().tcp().unwrap()))
            .await
            .unwrap();
        let connected = tokio::time::Instant::now();
        assert_eq!(read_to_close(&mut silent).await, "", "http2 {http2}");
        let open_for = connected.elapsed();
        assert!(
            open_for >= keep_alive && open_for < keep_alive + Duration::from_millis(50),
            "http2 {http2}: closed after {open_for:?}"
        );
    }
}

/// `Keep-Alive: timeout=N` on HTTP/1.1 answers that keep the connection, when asked for:
/// not when the request closes it, not to HTTP/1.0 or HTTP/2, not by default.
#[tokio::test]
async fn the_keep_alive_hint() {
    let options = ListenOptions::default()
        .keep_alive_timeout(Duration::from_millis(7_500))
        .keep_alive_header(true);
    let server = serve(tcp_listener().await, |_| answering("ok".into()), options);
    let mut conn = within(TcpStream::connect(server.local_addr().tcp().unwrap()))
        .await
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = within(conn.read(&mut buf)).await.unwrap();
    let kept = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(kept.contains("\r\nkeep-alive: timeout=7\r\n"), "{kept}");

    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let answer = exchange(server.local_addr(), request).await;
        assert!(answer.starts_with("HTTP/1."), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("keep-alive:"),
            "{answer}"
        );
    }

    let mut h2 = h2c_conn(server.local_addr().tcp().unwrap()).await;
    let res = within(h2.send_request(Request::get("http://x/").body(Body::empty()).unwrap()))
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert!(!res.headers().contains_key("keep-alive"));

    let plain = serve(
        tcp_listener().await,
        |_| answering("ok".into()),
        ListenOptions::default(),
    );
    let answer = exchange(
        plain.local_addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!answer.to_ascii_lowercase().contains("keep-alive:"));
}

/// A request target over the limit is refused with `414` before the service sees it, and
/// the connection is closed.
#[tokio::test]
async fn head_limits_come_before_the_service() {
    let called = Arc::new(AtomicUsize::new(0));
    let service = {
        let called = called.clone();
        tower::service_fn(move |_req: Request<Incoming>| {
            called.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::from("served"))) }
        })
    };
    let options = ListenOptions::default().max_uri_length(64);
    let server = serve(tcp_listener().await, move |_| service.clone(), options);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100));
    let answer = exchange(server.local_addr(), long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert_eq!(called.load(Ordering::SeqCst), 0);
    let answer = exchange(
        server.local_addr(),
        b"GET /short HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("served"), "{answer}");
    assert_eq!(called.load(Ordering::SeqCst), 1);
}

/// A service that is not ready when the request comes is waited for.
#[derive(Clone)]
struct Gate {
    open: Arc<AtomicBool>,
}

impl tower::Service<Request<Incoming>> for Gate {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        let (open, waker) = (self.open.clone(), cx.waker().clone());
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            open.store(true, Ordering::SeqCst);
            waker.wake();
        });
        Poll::Pending
    }

    fn call(&mut self, _req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(Response::new(Body::from("opened"))))
    }
}

#[tokio::test]
async fn a_service_not_ready_at_once_is_waited_for() {
    let gate = Gate {
        open: Arc::new(AtomicBool::new(false)),
    };
    let server = serve(
        tcp_listener().await,
        move |_| gate.clone(),
        ListenOptions::default(),
    );
    let answer = exchange(
        server.local_addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("opened"), "{answer}");
}

/// A TLS configuration replaced while the server runs: new handshakes get the new
/// certificate, a connection opened before keeps working.
#[tokio::test]
async fn a_replaced_tls_configuration_serves_new_handshakes() {
    let (first, second) = (pki(), pki());
    let tls = TlsConfig::from_pem(first.cert_pem.as_str(), first.key_pem.as_str()).unwrap();
    let options = ListenOptions::default().tls(tls.clone());
    let server = serve(tcp_listener().await, |_| answering("tls".into()), options);
    let addr = server.local_addr().tcp().unwrap();

    let (stream, alpn) = tls_connect(addr, &first.ca_pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "h2 offered by default");
    drop(stream);
    let (before, _) = tls_connect(addr, &first.ca_pem, &[b"http/1.1"]).await;
    let (mut send, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(before)))
        .await
        .unwrap();
    tokio::spawn(conn);

    let replacement =
        TlsConfig::from_pem(second.cert_pem.as_str(), second.key_pem.as_str()).unwrap();
    tls.replace(replacement.current());
    let (_after, _) = tls_connect(addr, &second.ca_pem, &[b"http/1.1"]).await;
    let connector =
        tokio_rustls::TlsConnector::from(tls_client_config(&first.ca_pem, &[b"http/1.1"]));
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(
        within(connector.connect(name, tcp)).await.is_err(),
        "the old certificate is still served"
    );

    let req = Request::get("/")
        .header("host", "localhost")
        .body(Body::empty());
    let res = within(send.send_request(req.unwrap())).await.unwrap();
    assert_eq!(body_bytes(res.into_body()).await, "tls");
}

/// `Server::connections` counts open connections, and is back to zero once they close.
#[tokio::test]
async fn connections_are_counted_until_they_close() {
    let server = serve(
        tcp_listener().await,
        |_| answering("ok".into()),
        ListenOptions::default(),
    );
    let addr = server.local_addr().tcp().unwrap();
    let (mut send, conn) = h1_conn(addr).await;
    let req = Request::get("/").header("host", "x").body(Body::empty());
    within(send.send_request(req.unwrap())).await.unwrap();
    assert_eq!(server.connections(), 1);
    drop(send);
    within(conn).await.unwrap().unwrap();
    within(async {
        while server.connections() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// `max_connections`: at the limit the listener accepts nothing (the next client waits,
/// unanswered, with the count still at the limit); when a connection ends, the waiting
/// one is accepted and answered. A shutdown while the listener waits still ends it.
#[tokio::test]
async fn at_max_connections_new_connections_wait_for_one_to_end() {
    let server = serve(
        tcp_listener().await,
        |_| answering("ok".into()),
        ListenOptions::default().max_connections(1),
    );
    let addr = server.local_addr().tcp().unwrap();
    let (mut send, conn) = h1_conn(addr).await;
    let req = Request::get("/").header("host", "x").body(Body::empty());
    within(send.send_request(req.unwrap())).await.unwrap();

    let mut waiting = within(TcpStream::connect(addr)).await.unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0; 1];
    // A negative check needs a window: nothing comes in it, and nothing was accepted.
    let early = tokio::time::timeout(Duration::from_millis(200), waiting.read(&mut first)).await;
    assert!(early.is_err(), "answered at the limit: {early:?}");
    assert_eq!(server.connections(), 1);

    drop(send);
    within(conn).await.unwrap().unwrap();
    let answer = read_to_close(&mut waiting).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    // Full again, with the next client waiting: the shutdown does not wait for a permit.
    let (_send, _conn) = h1_conn(addr).await;
    let _queued = within(TcpStream::connect(addr)).await.unwrap();
    within(server.shutdown()).await;
}

/// A shutdown closes the listener at once (a new connection is refused) while the
/// request in flight finishes and gets its answer, with `Connection: close`.
#[tokio::test]
async fn shutdown_refuses_new_connections_and_finishes_the_request_in_flight() {
    let hold = Hold::default();
    let service = hold.clone().service(|_| true, || "finished".to_owned());
    let Hold { arrived, release } = hold;
    let server = serve(
        tcp_listener().await,
        move |_| service.clone(),
        ListenOptions::default(),
    );
    let addr = server.local_addr().tcp().unwrap();
    let mut conn = within(TcpStream::connect(addr)).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    within(arrived.notified()).await;

    server.cancel_token().cancel();
    within(async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let stopping = tokio::spawn(server.shutdown());
    release.notify_one();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("finished"), "{answer}");
    within(stopping).await.unwrap();
}

/// What the first read of a plain connection takes (a head, a body, the next requests) all
/// reaches hyper, in order: requests pipelined into one write, one with a body and one
/// with a head longer than the first read; a head dribbled in small writes; and HTTP/2
/// with prior knowledge, told apart from HTTP/1 by its first bytes.
#[tokio::test]
async fn the_first_bytes_of_a_connection_all_reach_the_service() {
    use http_body_util::BodyExt;
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let line = format!("{} {}", req.method(), req.uri().path());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let answer = format!("{line} {}", String::from_utf8_lossy(&body));
        Ok::<_, Infallible>(Response::new(Body::from(answer)))
    });
    let server = serve(
        tcp_listener().await,
        move |_| service,
        ListenOptions::default(),
    );
    let big = "b".repeat(6000);
    let pipelined = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
         GET /b HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n\
         GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let answer = exchange(server.local_addr(), pipelined.as_bytes()).await;
    let bodies: Vec<&str> = answer
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|response| response.split("\r\n\r\n").nth(1).unwrap())
        .collect();
    assert_eq!(bodies, ["POST /a hello", "GET /b ", "GET /c "], "{answer}");

    let mut conn = within(TcpStream::connect(server.local_addr().tcp().unwrap()))
        .await
        .unwrap();
    conn.set_nodelay(true).unwrap();
    for piece in [
        &b"GE"[..],
        b"T /d HTTP/1.1\r\nHo",
        b"st: x\r\nConnection: close\r\n\r\n",
    ] {
        conn.write_all(piece).await.unwrap();
        conn.flush().await.unwrap();
    }
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nGET /d "), "{answer}");

    let mut h2 = h2c_conn(server.local_addr().tcp().unwrap()).await;
    let res = within(h2.send_request(Request::get("http://x/e").body(Body::empty()).unwrap()))
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "GET /e ");
}

/// The names of this process's threads that start with `prefix`.
fn threads_named(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// `ListenOptions::threads`: the listener is served by that many threads of the server's
/// own, each connection start to end on one of them; one connection limit holds for all
/// of them; a shutdown finishes the request in flight, refuses new connections, and
/// returns once the threads have ended.
#[tokio::test]
async fn on_threads_of_its_own_one_limit_and_one_shutdown() {
    let hold = Hold::default();
    let service = hold.clone().service(
        |path| path == "/hold",
        || std::thread::current().name().unwrap_or("").to_owned(),
    );
    let Hold { arrived, release } = hold;
    let two = std::num::NonZeroUsize::new(2).unwrap();
    let server = serve(
        tcp_listener().await,
        move |_| service.clone(),
        ListenOptions::default().threads(two).max_connections(1),
    );
    assert_eq!(server.stats().runtimes().len(), 2);
    // Each thread names itself as it starts.
    within(async {
        while threads_named("switchyard-") != ["switchyard-0", "switchyard-1"] {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let addr = server.local_addr().tcp().unwrap();

    for _ in 0..4 {
        let answer = exchange(
            server.local_addr(),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let thread = answer.rsplit("\r\n\r\n").next().unwrap();
        assert!(
            ["switchyard-0", "switchyard-1"].contains(&thread),
            "served on {thread:?}: {answer}"
        );
    }

    // One connection held open on one thread: the other thread accepts nothing either.
    let mut held = within(TcpStream::connect(addr)).await.unwrap();
    held.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    within(arrived.notified()).await;
    let mut waiting = within(TcpStream::connect(addr)).await.unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0; 1];
    // A negative check needs a window: nothing comes in it, and nothing was accepted.
    let early = tokio::time::timeout(Duration::from_millis(200), waiting.read(&mut first)).await;
    assert!(early.is_err(), "answered past the limit: {early:?}");
    assert_eq!(server.connections(), 1);

    server.cancel_token().cancel();
    let stopping = tokio::spawn(server.shutdown());
    release.notify_one();
    let answer = read_to_close(&mut held).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    within(stopping).await.unwrap();
    within(async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The threads end right after they say so.
    within(async {
        while !threads_named("switchyard-").is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}
