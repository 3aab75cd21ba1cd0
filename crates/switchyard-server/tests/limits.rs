//! The request and response limits through the real binary: `--max-uri-length`,
//! `--max-headers`, `--body-idle-timeout`, `--max-response-header-size`,
//! `--keep-alive-timeout` (and its `Keep-Alive` hint) and `--request-head-timeout`, with
//! their defaults, their `--help` text and the start-up
//! refusal of bad values.
//!
//! Synchronisation is by events only (a response, a closed socket, a backend report, a log
//! line); every blocking read has the `IO_TIMEOUT` safety net.
//!
//! Requests that a client sends whole go through hyper's client (`request`, `Client`). The
//! timeout tests write raw bytes instead: a head dripped line by line or cut midway, a body
//! that stops, and the moment an idle connection closes are the point, and an HTTP
//! client sends neither half a head nor shows when its connection closed.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, IO_TIMEOUT, Proxy, request, run_to_exit};

/// `--help` documents every limit with its default; bad values exit 1 naming the flag.
#[test]
fn limit_flags_are_documented_and_validated() {
    let out = run_to_exit(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    for (flag, default) in [
        ("--max-headers", "[default: 100]"),
        ("--max-uri-length", "[default: 16384]"),
        ("--body-idle-timeout", "[default: 300000]"),
        ("--max-response-header-size", "[default: 65536]"),
        ("--max-response-headers", "[default: 100]"),
        ("--request-head-timeout", "[default: 60000]"),
        ("--max-connections", "open-files"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("--help lacks {flag}"));
        let rest = &help[at..];
        let next = rest[2..].find("  --").map_or(rest.len(), |i| i + 2);
        assert!(rest[..next].contains(default), "{flag}: {}", &rest[..next]);
    }
    for args in [
        &["--max-headers", "0"][..],
        &["--max-headers", "lots"],
        &["--max-uri-length", "8"],
        &["--max-uri-length", "99999999"],
        &["--body-idle-timeout=-1"],
        &["--body-idle-timeout", "5s"],
        &["--max-response-header-size", "1024"],
        &["--max-response-headers", "0"],
        &["--request-head-timeout", "soon"],
        &["--max-connections", "0"],
        &["--max-connections", "many"],
    ] {
        let out = run_to_exit(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let flag = args[0].split('=').next().unwrap();
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

/// A 70 KB URI gets 414 (not 431, not a hang) by default and the process
/// stays up; `--max-uri-length` moves the limit, checked before routing.
#[test]
fn max_uri_length() {
    let p = Proxy::start(&[]);
    let huge = format!("/{}", "u".repeat(70 * 1024));
    // Raw: the `http` crate refuses a URI this long, so no client built on it sends one.
    let out = common::raw(
        p.port,
        format!("GET {huge} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    assert!(
        out.starts_with("HTTP/1.1 414"),
        "{}",
        &out[..out.len().min(200)]
    );
    // Under the default 16 KiB: routed (no route, so 404).
    let long = format!("/{}", "u".repeat(16_000));
    assert_eq!(p.public("GET", &long, &[]).status, 404);
    assert_eq!(p.public("GET", "/_chp_healthz", &[]).status, 200);

    let p = Proxy::start(&["--max-uri-length", "1024"]);
    let r = p.public("GET", &format!("/{}", "u".repeat(2000)), &[]);
    assert_eq!((r.status, r.header("connection")), (414, Some("close")));
    // The health check is not exempt: the limit comes before anything else.
    let r = p.public("GET", &format!("/_chp_healthz?{}", "q".repeat(2000)), &[]);
    assert_eq!(r.status, 414);
    assert_eq!(
        p.public("GET", &format!("/{}", "u".repeat(1000)), &[])
            .status,
        404
    );
}

/// More request header fields than `--max-headers` (default 100) get 431 and
/// the connection is closed.
#[test]
fn max_headers() {
    let fields = |n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect()
    };
    let send = |port: u16, n: usize| {
        // `request` adds Host and Connection: n + 2 fields in all.
        let owned = fields(n);
        let refs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        request(port, "GET", "/_chp_healthz", &refs, None).status
    };
    let p = Proxy::start(&[]);
    assert_eq!(send(p.port, 98), 200);
    assert_eq!(send(p.port, 99), 431);
    let p = Proxy::start(&["--max-headers", "300"]);
    assert_eq!(send(p.port, 250), 200);
    assert_eq!(send(p.port, 299), 431);
    assert_eq!(send(p.port, 10), 200);
}

/// A request body that stalls longer than `--body-idle-timeout` is aborted: the
/// target sees its connection closed before the body is complete, and the client's
/// connection is closed.
#[test]
fn body_idle_timeout_aborts_a_stalled_request_body() {
    let (port, report) = body_reader();
    let p = Proxy::start(&["--body-idle-timeout", "200"]);
    p.add("/", &format!("http://127.0.0.1:{port}"));
    let mut client = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client
        .write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    // The proxy closes the connection (after an error page, or at once): EOF ends this.
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert!(!answer.starts_with(b"HTTP/1.1 2"), "{answer:?}");
    let received = report.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(
        received < 100,
        "the target got the whole body ({received} bytes)"
    );
}

/// A response body that stalls longer than `--body-idle-timeout` is aborted: the
/// client's connection is closed before the declared length, the target's too.
#[test]
fn body_idle_timeout_aborts_a_stalled_response_body() {
    let (port, closed) = stalling_backend();
    let p = Proxy::start(&["--body-idle-timeout", "200"]);
    p.add("/", &format!("http://127.0.0.1:{port}"));
    let mut client = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client
        .write_all(b"GET /down HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, "0123456789", "cut after the bytes sent");
    closed.recv_timeout(IO_TIMEOUT).unwrap();
}

/// A target's response head over `--max-response-header-size` (default 64 KiB)
/// is a 502 with a log line naming the flag; the process stays up; a larger limit lets the
/// same answer through.
#[test]
fn max_response_header_size() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "b".repeat(100 * 1024)
    );
    let port = answering_backend(big);
    let mut p = Proxy::start(&[]);
    p.add("/", &format!("http://127.0.0.1:{port}"));
    let r = p.public("GET", "/big", &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    let line = p.wait_for_line("larger than --max-response-header-size");
    assert!(line.contains("502"), "{line}");
    assert_eq!(p.public("GET", "/_chp_healthz", &[]).status, 200);

    let p = Proxy::start(&["--max-response-header-size", "262144"]);
    p.add("/", &format!("http://127.0.0.1:{port}"));
    let r = p.public("GET", "/big", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(r.header("x-big").map(str::len), Some(100 * 1024));
}

/// `--max-response-headers`: an answer with more header fields than the limit (hyper's
/// 100 by default) is a 502 naming both flags in the log, although its head is far
/// below `--max-response-header-size`; raising the limit relays all of them.
#[test]
fn max_response_headers() {
    let fields: String = (0..150).map(|i| format!("X-F{i}: {i}\r\n")).collect();
    let port = answering_backend(format!(
        "HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok"
    ));
    let mut p = Proxy::start(&[]);
    p.add("/", &format!("http://127.0.0.1:{port}"));
    let r = p.public("GET", "/many", &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    let line = p.wait_for_line("--max-response-headers");
    assert!(line.contains("502"), "{line}");

    let p = Proxy::start(&["--max-response-headers", "200"]);
    p.add("/", &format!("http://127.0.0.1:{port}"));
    let r = p.public("GET", "/many", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(r.header("x-f149"), Some("149"));
}

/// `--request-head-timeout`: a head dripped one line every 300 ms against 1000 ms gets a
/// `408` about a second after its first byte (the 5 s keep-alive timeout is not what ends
/// it), and a head of 100 lines sent at once is answered.
#[test]
fn request_head_timeout() {
    let fast = answering_backend("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned());
    let p = Proxy::start(&["--request-head-timeout", "1000", "--max-headers", "200"]);
    p.add("/", &format!("http://127.0.0.1:{fast}"));

    let c = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = c.try_clone().unwrap();
    let first_byte = Instant::now();
    writer.write_all(b"GET /a HTTP/1.1\r\n").unwrap();
    let dripping = std::thread::spawn(move || {
        for i in 0..40 {
            std::thread::sleep(Duration::from_millis(300));
            if writer
                .write_all(format!("x-drip-{i}: v\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    let mut answer = String::new();
    BufReader::new(c).read_to_string(&mut answer).unwrap();
    let answered_after = first_byte.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answered_after >= Duration::from_millis(1000) && answered_after < Duration::from_secs(2),
        "answered {answered_after:?} after the first byte"
    );
    dripping.join().unwrap();

    let lines: Vec<(String, String)> = (0..100)
        .map(|i| (format!("x-line-{i}"), "v".repeat(40)))
        .collect();
    let lines: Vec<(&str, &str)> = lines.iter().map(|(k, v)| (&**k, &**v)).collect();
    let r = common::request(p.port, "GET", "/b", &lines, None);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

/// An idle keep-alive connection lives for `--keep-alive-timeout`, however short the
/// request-head timeout: that one only starts with a head's first byte.
#[test]
fn an_idle_connection_outlives_the_request_head_timeout() {
    let fast = answering_backend("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned());
    let p = Proxy::start(&[
        "--keep-alive-timeout",
        "1500",
        "--request-head-timeout",
        "200",
    ]);
    p.add("/", &format!("http://127.0.0.1:{fast}"));
    let c = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = c.try_clone().unwrap();
    let mut reader = BufReader::new(c);
    writer
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader), Some((200, "ok".to_owned())));
    let answered = Instant::now();
    assert_eq!(reader.read(&mut [0; 64]).unwrap(), 0, "not closed");
    let idle_for = answered.elapsed();
    // The keep-alive clock starts when the proxy has written the answer, a little before
    // this test has read it: the bound is well past the 200 ms head timeout, short of
    // the full 1.5 s.
    assert!(
        idle_for >= Duration::from_millis(1200),
        "closed {idle_for:?} after the answer"
    );
}

/// CHP's `Keep-Alive: timeout=<s>` on HTTP/1.1 answers that keep the connection: on the
/// public port from `--keep-alive-timeout` (a proxied answer and the proxy's own), on the
/// API port Node's 5 s; not when the request closes the connection.
#[test]
fn keep_alive_hint_on_both_ports() {
    let fast = answering_backend("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned());
    let p = Proxy::start(&["--keep-alive-timeout", "7500"]);
    p.add("/", &format!("http://127.0.0.1:{fast}"));
    let auth = format!("token {}", common::TOKEN);
    let hint = |port: u16, path: &str, headers: &[(&str, &str)]| {
        let r = request(port, "GET", path, headers, None);
        assert_eq!(r.status, 200, "{r:?}");
        r.header("keep-alive").map(str::to_owned)
    };
    // `request` sends `Connection: close`; the client connection keeps the connection.
    let kept = |port: u16, path: &str, headers: &[(&str, &str)]| {
        let mut c = common::Client::connect(port);
        c.send("GET", path, headers, "");
        let r = c.response();
        assert_eq!(r.status, 200, "{r:?}");
        r.header("keep-alive").map(str::to_owned)
    };
    for (port, path, headers, expected) in [
        (p.port, "/a", vec![], "timeout=7"),
        (p.port, "/_chp_healthz", vec![], "timeout=7"),
        (
            p.api_port,
            "/api/routes",
            vec![("Authorization", auth.as_str())],
            "timeout=5",
        ),
    ] {
        assert_eq!(
            kept(port, path, &headers).as_deref(),
            Some(expected),
            "{path}"
        );
    }
    assert_eq!(hint(p.port, "/a", &[]), None);
}

/// `--max-connections`: with two connections open on the public port, a third waits in
/// the kernel's accept queue (seen in `/proc/net/tcp`) unanswered, while the API and
/// metrics ports answer; when one of the two closes, the third is taken and answered.
/// The start-up logs the open-files limits and the connection limit; reaching the limit is
/// logged.
#[test]
fn max_connections_leaves_the_rest_in_the_accept_queue() {
    let mut p = Proxy::start(&["--max-connections", "2", "--metrics-port", "0"]);
    let metrics = p.metrics_port();
    let nofile = p.wait_for_line("Open-files limit");
    assert!(nofile.contains("hard limit"), "{nofile}");
    p.wait_for_line("Up to 2 connections at once on each public listener");
    let mut held: Vec<Client> = (0..2)
        .map(|_| {
            let mut client = Client::connect(p.port);
            client.send("GET", "/_chp_healthz", &[], "");
            assert_eq!(client.response().status, 200);
            client
        })
        .collect();
    let full = p.wait_for_line("connections open on ");
    assert!(
        full.contains(&format!(
            "2 connections open on http://127.0.0.1:{}",
            p.port
        )),
        "{full}"
    );

    let mut waiting = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    waiting
        .write_all(b"GET /_chp_healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_until("the connection in the accept queue", || {
        accept_queue(p.port) == 1
    });
    // The other ports answer meanwhile; the public one has taken nothing more.
    assert_eq!(p.api("GET", "/api/routes", None).status, 200);
    let r = request(metrics, "GET", "/metrics", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(accept_queue(p.port), 1);
    waiting.set_nonblocking(true).unwrap();
    let mut byte = [0; 1];
    let unanswered = waiting.read(&mut byte);
    assert!(
        unanswered
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "{unanswered:?}"
    );
    waiting.set_nonblocking(false).unwrap();

    // One leaves: the waiting connection is accepted and answered.
    drop(held.pop());
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut status = String::new();
    BufReader::new(&waiting).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    assert_eq!(accept_queue(p.port), 0);
}

/// How many connections wait in the accept queue of the TCP listener on `127.0.0.1:port`:
/// a listening socket's `rx_queue` in `/proc/net/tcp`.
fn accept_queue(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields[1] == local && fields[3] == "0A")
        .map(|fields| {
            let rx = fields[4].split(':').nth(1).unwrap();
            u64::from_str_radix(rx, 16).unwrap()
        })
        .unwrap_or_else(|| panic!("no listener on port {port} in /proc/net/tcp"))
}

/// Polls `done` until it holds; panics after `IO_TIMEOUT`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ============================================================================================
// Backends
// ============================================================================================

/// Reads a request head; `None` at EOF.
fn read_head(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

/// Answers every request on every connection with `answer` (the request must have no
/// body), until the peer closes.
fn answering_backend(answer: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                while read_head(&mut reader).is_some() {
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Reads one request head, then its body until the proxy closes the connection; reports
/// how many body bytes arrived.
fn body_reader() -> (u16, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream);
        read_head(&mut reader).unwrap();
        let mut body = Vec::new();
        // EOF (the proxy aborted) or the safety-net timeout: either way, report.
        let _ = reader.read_to_end(&mut body);
        let _ = tx.send(body.len());
    });
    (port, rx)
}

/// Answers one request with `Content-Length: 100` and 10 bytes, then sends nothing more;
/// reports when the proxy closes the connection.
fn stalling_backend() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        read_head(&mut reader).unwrap();
        writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        let mut rest = Vec::new();
        if reader.read_to_end(&mut rest).is_ok() {
            let _ = tx.send(());
        }
    });
    (port, rx)
}

/// `--keep-alive-timeout` (CHP's `keepAliveTimeout`, with a timer per connection instead
/// of one per request): an idle keep-alive connection is closed once it passes; a
/// connection that keeps sending requests lives on past it (each wait has its own
/// deadline), an answer that takes longer than it is not cut (it only covers waiting for
/// a head), and a head begun before it passes is left to `--request-head-timeout`.
#[test]
fn keep_alive_timeout() {
    let fast = answering_backend("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned());
    let (held, release) = held_backend();
    let p = Proxy::start(&[
        "--keep-alive-timeout",
        "300",
        "--request-head-timeout",
        "600",
    ]);
    p.add("/", &format!("http://127.0.0.1:{fast}"));
    p.add("/held", &format!("http://127.0.0.1:{held}"));
    let limit = Duration::from_millis(300);
    let head_limit = Duration::from_millis(600);
    let connect = || {
        let c = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        (c.try_clone().unwrap(), BufReader::new(c))
    };

    // In flight for longer than the timeout: answered when the target answers, below.
    let (mut in_flight, mut in_flight_reader) = connect();
    in_flight
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    // Idle after an answer: closed, and not before the timeout (which starts after the
    // answer is written, so after this request is sent).
    let (mut idle, mut idle_reader) = connect();
    let sent = Instant::now();
    idle.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut idle_reader).unwrap(),
        (200, "ok".to_owned())
    );
    assert_eq!(idle_reader.read(&mut [0; 64]).unwrap(), 0, "not closed");
    let open_for = sent.elapsed();
    assert!(open_for >= limit, "closed {open_for:?} after the request");

    // The idle connection's close is the clock: the held request has now been in flight
    // for longer than the timeout.
    release.send(()).unwrap();
    assert_eq!(
        read_response(&mut in_flight_reader).unwrap(),
        (200, "held".to_owned())
    );

    // A head that stops midway is the request-head timeout's (below): it outlives this.
    let (mut partial, mut partial_reader) = connect();
    partial.write_all(b"GET /a HTTP/1.1\r\nHo").unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    partial_reader.read_to_string(&mut answer).unwrap();
    let open_for = started.elapsed();
    assert!(
        open_for >= head_limit,
        "closed {open_for:?} after its first byte"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Busy for three timeouts on one connection: every request answered.
    let (mut busy, mut busy_reader) = connect();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < limit * 3 {
        busy.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let response = read_response(&mut busy_reader);
        assert_eq!(response, Some((200, "ok".to_owned())), "request {answered}");
        answered += 1;
    }
    assert!(answered > 1);
}

/// CHP reads `--keep-alive-timeout`, `--timeout` and `--proxy-timeout` for truth, so a
/// command line with 0 keeps working: the keep-alive timeout is then the default 5 s (a
/// head that arrives in two pieces is answered and the connection kept), and the other two
/// are off, as when absent.
#[test]
fn zero_timeouts_mean_what_they_mean_in_chp() {
    let fast = answering_backend("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned());
    let (held, release) = held_backend();
    let p = Proxy::start(&[
        "--keep-alive-timeout",
        "0",
        "--timeout",
        "0",
        "--proxy-timeout",
        "0",
    ]);
    p.add("/", &format!("http://127.0.0.1:{fast}"));
    p.add("/held", &format!("http://127.0.0.1:{held}"));

    let c = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = c.try_clone().unwrap();
    let mut reader = BufReader::new(c);
    // Two segments, the second well after the first (with 0 read as 0 ms, the proxy
    // closed such a connection without an answer).
    writer.write_all(b"GET /a HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    writer.write_all(b"Host: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader), Some((200, "ok".to_owned())));
    // Kept alive: the next request on the same connection is answered too.
    writer
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    release.send(()).unwrap();
    assert_eq!(read_response(&mut reader), Some((200, "held".to_owned())));
}

/// One response: status and body (by `Content-Length`); `None` at EOF.
fn read_response(reader: &mut impl BufRead) -> Option<(u16, String)> {
    let head = read_head(reader)?;
    let status = head.first()?.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8(body).ok()?))
}

/// Answers each request with `held` once the test sends on the returned channel.
fn held_backend() -> (u16, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        while read_head(&mut reader).is_some() {
            if rx.recv().is_err() {
                return;
            }
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld";
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    (port, tx)
}
