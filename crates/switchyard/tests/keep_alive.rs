//! Pooled upstream connections that the target closes: the race where a
//! target times out an idle keep-alive connection just as the proxy writes the
//! next request on it, and a target's `Keep-Alive: timeout`.
//!
//! The target here is a raw TCP server with a real idle timer: `IDLE` after
//! its last answer it decides to close the connection, and it answers nothing
//! after that. Its close then takes `CLOSING` to happen (a busy or distant
//! server, where the close is in flight while the proxy writes): a request
//! that arrives meanwhile is read, recorded and left unanswered, as one the
//! server received at the moment it closed. Requests spaced between the two
//! land in that window, so the race happens on nearly every reused connection
//! instead of once in a hundred.
#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md §7)

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{listen, send};
use http::{Method, Request};
use http_body_util::Full;
use switchyard::{Proxy, Retry, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The target's idle timeout.
const IDLE: Duration = Duration::from_millis(40);
/// How long its close takes once decided.
const CLOSING: Duration = Duration::from_millis(200);
/// The client's pause between requests: well inside the closing window.
const PAUSE: Duration = Duration::from_millis(100);

/// What the target saw.
#[derive(Default)]
struct Log {
    /// Every request received, as `METHOD /path body`, answered or not.
    received: Mutex<Vec<String>>,
    /// Requests received while closing, left unanswered.
    unanswered: AtomicUsize,
    accepted: AtomicUsize,
}

struct Closer {
    addr: SocketAddr,
    log: Arc<Log>,
}

/// Starts the target, idle for `idle` before it closes. `keep_alive` is sent
/// as a `Keep-Alive` header on each answer. Odd connections end with a reset
/// (zero linger), even ones with a FIN, so both ways a close can look are seen.
async fn closer(idle: Duration, keep_alive: Option<&'static str>) -> Closer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Log::default());
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = shared.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, n % 2 == 1, idle, keep_alive, shared.clone()));
        }
    });
    Closer { addr, log }
}

async fn serve(
    mut s: TcpStream,
    reset: bool,
    idle: Duration,
    keep_alive: Option<&'static str>,
    log: Arc<Log>,
) {
    let mut buf = Vec::new();
    loop {
        // Idle: a request within `idle` is answered; after it, the target closes.
        let closing = match tokio::time::timeout(idle, read_request(&mut s, &mut buf)).await {
            Ok(Some(req)) => {
                log.received.lock().unwrap().push(req);
                let extra = keep_alive.map_or(String::new(), |v| format!("keep-alive: {v}\r\n"));
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{extra}\r\nok");
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => return,
            Err(_) => tokio::time::sleep(CLOSING),
        };
        // Closing: whatever arrives is read and recorded, never answered.
        tokio::pin!(closing);
        loop {
            tokio::select! {
                () = &mut closing => break,
                req = read_request(&mut s, &mut buf) => match req {
                    Some(req) => {
                        log.received.lock().unwrap().push(req);
                        log.unanswered.fetch_add(1, Ordering::SeqCst);
                    }
                    None => return,
                },
            }
        }
        if reset {
            let _ = s.set_zero_linger();
        }
        return;
    }
}

/// Reads one request with a `Content-Length` body (or none); `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                buf.drain(..end + 4 + len);
                let line = head.lines().next().unwrap_or("");
                let mut words = line.split(' ');
                let (method, path) = (words.next().unwrap(), words.next().unwrap());
                return Some(format!("{method} {path} {body}").trim_end().to_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A proxy to the target, listening; requests go through it from a real
/// client, so their bodies stream as a client's do.
async fn proxy_to(c: &Closer) -> (Proxy, switchyard::Server) {
    proxy_with(Proxy::builder().target(Target::parse(&format!("http://{}", c.addr)).unwrap())).await
}

async fn proxy_with(builder: switchyard::ProxyBuilder) -> (Proxy, switchyard::Server) {
    let proxy = builder.build().unwrap();
    let server = listen(&proxy).await;
    (proxy, server)
}

fn request(
    server: &switchyard::Server,
    method: Method,
    path: &str,
    body: &str,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.local_addr()))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Idempotent requests without a body that meet a connection the target has
/// just closed are sent again on a new connection: every answer is a 200, the
/// race happened many times, each time exactly one retry, and the target got
/// each request once answered (plus once unanswered when it raced).
#[tokio::test]
async fn a_request_on_a_connection_closed_under_it_is_sent_again() {
    let target = closer(IDLE, None).await;
    let (proxy, server) = proxy_to(&target).await;
    let methods = [Method::GET, Method::HEAD, Method::OPTIONS, Method::DELETE];
    for i in 0..24 {
        let method = methods[i % methods.len()].clone();
        let (status, ..) = send(request(&server, method.clone(), &format!("/r{i}"), "")).await;
        assert_eq!(status, 200, "request {i} ({method})");
        tokio::time::sleep(PAUSE).await;
    }
    let raced = target.log.unanswered.load(Ordering::SeqCst);
    assert!(raced >= 8, "the race happened {raced} times in 23 reuses");
    // Each race is a retry; the count also has requests a connection refused
    // unsent (it had closed before they went out), which never reached the
    // target.
    let retries = proxy.stats().upstream_retries();
    assert!(retries >= raced as u64, "{retries} retries, {raced} races");
    // Each request was answered once, and received once more when it raced.
    let received = target.log.received.lock().unwrap().clone();
    assert_eq!(received.len(), 24 + raced, "{received:?}");
    // Every race cost a new connection.
    assert!(target.log.accepted.load(Ordering::SeqCst) > raced);
}

/// A POST with a body, or a PUT whose body streams, is never sent twice: in
/// the same race it fails (502) and the target received it exactly once.
#[tokio::test]
async fn a_request_with_a_streamed_body_in_the_race_is_not_sent_again() {
    let target = closer(IDLE, None).await;
    let (_proxy, server) = proxy_to(&target).await;
    let mut failed = 0;
    for i in 0..12 {
        let method = if i % 2 == 0 {
            Method::POST
        } else {
            Method::PUT
        };
        let (status, ..) = send(request(&server, method, "/p", &format!("body {i}"))).await;
        match status.as_u16() {
            200 => {}
            502 => failed += 1,
            other => panic!("request {i}: {other}"),
        }
        tokio::time::sleep(PAUSE).await;
    }
    assert!(failed >= 3, "the race happened {failed} times");
    assert_eq!(target.log.unanswered.load(Ordering::SeqCst), failed);
    let received = target.log.received.lock().unwrap().clone();
    for i in 0..12 {
        let n = received
            .iter()
            .filter(|r| r.ends_with(&format!(" /p body {i}")))
            .count();
        assert_eq!(n, 1, "body {i}: {received:?}");
    }
}

/// A body kept for retries (`Retry::buffer_body`) can be sent again as one
/// without a body: a PUT in the race is answered.
#[tokio::test]
async fn a_kept_body_is_sent_again() {
    let target = closer(IDLE, None).await;
    let builder = Proxy::builder()
        .target(Target::parse(&format!("http://{}", target.addr)).unwrap())
        .retry(
            Retry::never()
                .retry_methods([Method::PUT])
                .buffer_body(1024),
        );
    let (proxy, server) = proxy_with(builder).await;
    for i in 0..12 {
        let (status, ..) = send(request(&server, Method::PUT, "/k", &format!("body {i}"))).await;
        assert_eq!(status, 200, "request {i}");
        tokio::time::sleep(PAUSE).await;
    }
    let raced = target.log.unanswered.load(Ordering::SeqCst);
    assert!(raced >= 3, "the race happened {raced} times");
    assert!(proxy.stats().upstream_retries() >= raced as u64);
}

/// A target that says `Keep-Alive: timeout=1` (and means it) has its
/// connections dropped from the pool before that second runs out: a request
/// 700 ms later, which the old connection would still have answered, goes out
/// on a new one.
#[tokio::test]
async fn keep_alive_timeout_is_honoured() {
    for (keep_alive, connections) in [(Some("timeout=1"), 2), (None, 1)] {
        let target = closer(Duration::from_secs(1), keep_alive).await;
        let (_proxy, server) = proxy_to(&target).await;
        let (status, _, body) = send(request(&server, Method::GET, "/1", "")).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (status, ..) = send(request(&server, Method::GET, "/2", "")).await;
        assert_eq!(status, 200);
        assert_eq!(target.log.unanswered.load(Ordering::SeqCst), 0);
        // Without the header, the same pause keeps the connection.
        assert_eq!(
            target.log.accepted.load(Ordering::SeqCst),
            connections,
            "{keep_alive:?}"
        );
    }
}

/// A connection that closes after some bytes of an answer is not a race: the
/// target had begun to answer, so the request is not sent again (502), even
/// though a GET would be safe to repeat.
#[tokio::test]
async fn a_partial_answer_is_not_sent_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // The first request is answered, the second cut short.
                read_request(&mut s, &mut buf).await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                s.write_all(ok).await.unwrap();
                if read_request(&mut s, &mut buf).await.is_some() {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(b"HTTP/1.1 20").await;
                }
            });
        }
    });
    let target = Closer {
        addr,
        log: Arc::default(),
    };
    let (proxy, server) = proxy_to(&target).await;
    let (status, ..) = send(request(&server, Method::GET, "/1", "")).await;
    assert_eq!(status, 200);
    let (status, ..) = send(request(&server, Method::GET, "/2", "")).await;
    assert_eq!(status, 502);
    assert_eq!(received.load(Ordering::SeqCst), 2);
    assert_eq!(proxy.stats().upstream_retries(), 0);
}
