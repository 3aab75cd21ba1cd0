//! Graceful shutdown through the real binary: on SIGTERM the
//! listeners close at once, an in-flight request finishes within `--shutdown-timeout`,
//! what is still open at the deadline is closed, and the process exits with status 0.
//!
//! Synchronisation is by events only (a backend report, a log line, a refused connect, a
//! closed socket, the process exit); every wait is bounded.
//!
//! The clients here are raw TCP: what these tests check is the connection itself (closed
//! after the drained answer, closed or reset at the deadline, refused after the signal),
//! which an HTTP client library hides behind its pool.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backends::Backend;
use common::{IO_TIMEOUT, Proxy, request, run_to_exit};

/// `--help` documents the flag and its default; bad values exit 1 naming the flag.
#[test]
fn shutdown_timeout_flag_is_documented_and_validated() {
    let out = run_to_exit(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let at = help.find("--shutdown-timeout <ms>").unwrap();
    let rest = &help[at..];
    let next = rest[2..].find("  --").map_or(rest.len(), |i| i + 2);
    assert!(
        rest[..next].contains("[default: 10000]"),
        "{}",
        &rest[..next]
    );
    for args in [
        &["--shutdown-timeout=-1"][..],
        &["--shutdown-timeout", "10s"],
        &["--shutdown-timeout", "soon"],
        &["--shutdown-timeout"],
    ] {
        let out = run_to_exit(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--shutdown-timeout"), "{args:?}: {stderr}");
    }
}

/// F19: SIGTERM while a request waits for its target. New connections are refused at
/// once, the process keeps running while the request is in flight, the client gets the
/// whole response (and then the connection is closed), and the exit status is 0.
#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let backend = HeldBackend::start(true);
    let mut p = Proxy::start(&[]);
    p.add("/", &format!("http://127.0.0.1:{}", backend.port));
    let mut client = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // Keep-alive (no `Connection: close`): the drain must close the connection after it.
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    backend.received.recv_timeout(IO_TIMEOUT).unwrap();

    p.send_signal("TERM");
    p.wait_for_line("Terminated");
    assert_refused(p.port);
    assert_refused(p.api_port);
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the process exited with a request in flight"
    );

    backend.release.send(()).unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let r = common::parse_response(&answer);
    assert_eq!((r.status, r.body.as_str()), (200, "hello"), "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    let status = p.wait_exit(IO_TIMEOUT).expect("no exit after the drain");
    assert!(status.success(), "{status:?}");
}

/// F19: a request still running at `--shutdown-timeout` is cut: its connection is closed
/// (no response, or a 503 if the target's side went first) and the process exits with status 0 soon after the deadline, not after
/// the default 10 s; 0 closes it at once.
#[test]
fn shutdown_timeout_closes_what_is_still_open() {
    for timeout in ["200", "0"] {
        let backend = HeldBackend::start(false);
        let mut p = Proxy::start(&["--shutdown-timeout", timeout]);
        p.add("/", &format!("http://127.0.0.1:{}", backend.port));
        let mut client = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        client
            .write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        backend.received.recv_timeout(IO_TIMEOUT).unwrap();

        p.send_signal("TERM");
        let mut answer = Vec::new();
        // Cut: either the connection closes with no answer, or, when the target's side
        // is torn down a moment before the client's, the client gets a clean 503 and
        // `Connection: close` (never a hang, never a 200).
        match client.read_to_end(&mut answer) {
            Ok(_) if answer.is_empty() => {}
            Ok(_) => {
                let r = common::parse_response(&answer);
                assert_eq!(r.status, 503, "{r:?}");
                assert_eq!(r.header("connection"), Some("close"), "{r:?}");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
        let status = p
            .wait_exit(Duration::from_secs(9))
            .unwrap_or_else(|| panic!("--shutdown-timeout {timeout}: still running"));
        assert!(status.success(), "{status:?}");
        p.wait_for_line("Terminated");
        p.wait_for_line(&format!("shutdown timeout ({timeout} ms) reached"));
        // The backend never answered: the proxy gave up its request when it closed.
        backend.closed.recv_timeout(IO_TIMEOUT).unwrap();
    }
}

/// `/_chp_readyz` answers 200 while serving. On SIGTERM with `--shutdown-delay`, it answers
/// 503 at once while the proxy goes on serving new connections and requests as usual; the
/// listeners close only after the delay, and the exit status is 0.
#[test]
fn shutdown_delay_keeps_serving_while_not_ready() {
    let backend = Backend::echo_target();
    let mut p = Proxy::start(&["--shutdown-delay", "800"]);
    p.add("/", &backend.url());
    let ready = request(p.port, "GET", "/_chp_readyz", &[], None);
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, r#"{"status":"OK"}"#)
    );
    assert_eq!(ready.header("content-type"), Some("application/json"));

    let signalled = Instant::now();
    p.send_signal("TERM");
    p.wait_for_line("Not ready (/_chp_readyz answers 503)");
    let r = request(p.port, "GET", "/_chp_readyz", &[], None);
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, r#"{"status":"shutting down"}"#)
    );
    // Liveness is unchanged, and proxied requests go on, on new connections.
    let r = request(p.port, "GET", "/_chp_healthz", &[], None);
    assert_eq!(r.status, 200);
    let r = request(p.port, "GET", "/still/served", &[], None);
    assert_eq!((r.status, r.body.as_str()), (200, "/still/served"));
    let r = p.api("GET", "/api/routes", None);
    assert_eq!(r.status, 200);

    let status = p.wait_exit(IO_TIMEOUT).expect("no exit after the delay");
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(800),
        "exited {:?} after SIGTERM, before the delay",
        signalled.elapsed()
    );
    assert_refused(p.port);
}

/// A second SIGTERM or SIGINT exits at once: during the readiness delay, and during the
/// drain with a request in flight (its connection is closed).
#[test]
fn a_second_signal_exits_at_once() {
    for (first, second) in [("TERM", "TERM"), ("INT", "INT"), ("TERM", "INT")] {
        let mut p = Proxy::start(&["--shutdown-delay", "600000"]);
        p.send_signal(first);
        p.wait_for_line("Not ready");
        p.send_signal(second);
        let status = p
            .wait_exit(IO_TIMEOUT)
            .unwrap_or_else(|| panic!("{first} then {second}: still running in the delay"));
        assert!(status.success(), "{status:?}");
        p.wait_for_line("again: exiting now");
    }

    let backend = HeldBackend::start(false);
    let mut p = Proxy::start(&["--shutdown-timeout", "600000"]);
    p.add("/", &format!("http://127.0.0.1:{}", backend.port));
    let mut client = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client
        .write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    backend.received.recv_timeout(IO_TIMEOUT).unwrap();
    p.send_signal("TERM");
    p.wait_for_line("Terminated");
    assert_refused(p.port);
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    p.send_signal("INT");
    let status = p
        .wait_exit(IO_TIMEOUT)
        .expect("a second signal during the drain did not end the process");
    assert!(status.success(), "{status:?}");
    let mut answer = Vec::new();
    match client.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer)),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    backend.closed.recv_timeout(IO_TIMEOUT).unwrap();
}

/// SIGTERM with a WebSocket open: once the drain is over, the client and the target each
/// get a close frame with code 1001 (going away), not a cut connection, and the process
/// exits with status 0.
#[test]
fn sigterm_closes_websockets_with_going_away() {
    use tokio_tungstenite::tungstenite::{self, Message, protocol::frame::coding::CloseCode};

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ws_port = listener.local_addr().unwrap().port();
    let (codes_tx, codes) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(frame)) => {
                    let _ = codes_tx.send(frame.map(|f| f.code));
                }
                Ok(m) if m.is_text() => ws.send(m).unwrap(),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let mut p = Proxy::start(&[]);
    p.add("/ws", &format!("http://127.0.0.1:{ws_port}"));
    let (mut ws, _) = backends::ws_connect(p.port, "/ws/x");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hi"));

    p.send_signal("TERM");
    match ws.read().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        codes.recv_timeout(IO_TIMEOUT).unwrap(),
        Some(CloseCode::Away),
        "the target's close code"
    );
    p.wait_for_line("Closing 1 WebSocket connections");
    let status = p.wait_exit(IO_TIMEOUT).expect("no exit after closing");
    assert!(status.success(), "{status:?}");
}

/// Connecting to `port` fails (bounded: the listener closes right after the signal's log
/// line; a connect that lands just before that is reset and dropped).
fn assert_refused(port: u16) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            // Landed in the backlog as the listener closed: reset. Try again.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                assert!(Instant::now() < deadline, "port {port} still resets");
                std::thread::yield_now();
            }
            Err(e) => panic!("connect to {port}: {e}"),
            Ok(_) => {
                assert!(Instant::now() < deadline, "port {port} still accepts");
                std::thread::yield_now();
            }
        }
    }
}

/// A target that takes one request and reports it; with `answer`, answers `200 hello`
/// when the test releases it, else never. Reports when the proxy closes the connection.
struct HeldBackend {
    port: u16,
    received: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
    closed: mpsc::Receiver<()>,
}

impl HeldBackend {
    fn start(answer: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (received_tx, received) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (closed_tx, closed) = mpsc::channel();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            received_tx.send(()).unwrap();
            if answer {
                release_rx.recv_timeout(IO_TIMEOUT).unwrap();
                writer
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                    .unwrap();
            }
            // EOF or a reset (not the read timeout): the proxy closed its side.
            let mut rest = Vec::new();
            match reader.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) => panic!("backend: {e}"),
            }
            let _ = closed_tx.send(());
        });
        Self {
            port,
            received,
            release,
            closed,
        }
    }
}
