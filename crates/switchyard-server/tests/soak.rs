//! The leak soak, against the real binary (CHP #434 and #557 were leaks on
//! failure paths that only such a count finds), started with `--error-target` as
//! JupyterHub starts CHP:
//! every abort scenario, 300 cycles each, then the proxy's open file
//! descriptors and alive tokio tasks must be back to their baseline, no
//! socket of the proxy may sit in CLOSE_WAIT, and RSS may grow by less than
//! 1 KiB per cycle between N and 2N cycles.
//!
//! Every leak CHP ever had (#434, #557, #388) was on a failure path: a
//! client that went away, an upgrade that failed, an error page. Each
//! scenario here is one of those paths. A longer run, with wrk loading the proxy
//! alongside every scenario (`SOAK_WRK=1`, wrk must be installed):
//! `SOAK_CYCLES=10000 SOAK_WRK=1 cargo test --release -p switchyard-server --test soak -- --nocapture`.
//! The 30-minute run side by side with CHP is `bench/soak.sh`.

//!
//! The scenarios speak raw HTTP/1.1 over TCP: each one leaves its connection at a precise
//! point of the exchange (mid-upload, right after the response head, after a 101), which
//! an HTTP client library does not let a caller choose.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Proxy, block_on, request};

/// What the error target (`/err` on the scripted upstream) answers.
const ERROR_PAGE: &str = "soak error page";

/// Pages the error target has served.
static ERROR_PAGES: AtomicUsize = AtomicUsize::new(0);

/// Connections the hanging target (`/hang`) holds: it never answers, never reads again
/// and never closes, until the test lets go of them once the proxy's side was counted.
static HELD: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());

/// Closes with RST (`SO_LINGER` 0; std's `set_linger` is unstable, tokio's is not).
fn reset(s: TcpStream) {
    s.set_nonblocking(true).unwrap();
    block_on(async move {
        let s = tokio::net::TcpStream::from_std(s).unwrap();
        s.set_zero_linger().unwrap();
    });
}

/// A scripted upstream: what it does depends on the request path.
fn upstream(ready: mpsc::Sender<()>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let ready = ready.clone();
            std::thread::spawn(move || serve(conn, &ready));
        }
    });
    port
}

fn serve(mut s: TcpStream, ready: &mpsc::Sender<()>) {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let Some(head) = read_head(&mut s) else {
        return;
    };
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    let big_head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n";
    let switch =
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
    match path.as_str() {
        "/ok" => {
            let _ = s.write_all(ok);
        }
        "/pending" | "/upload" => {
            let _ = ready.send(());
        }
        "/headers" => {
            let _ = s.write_all(big_head);
            let _ = s.write_all(&[b'x'; 100]);
        }
        "/hang" => {
            let _ = ready.send(());
            HELD.lock().unwrap().push(s);
            return;
        }
        p if p.starts_with("/err/") => {
            ERROR_PAGES.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ERROR_PAGE}",
                    ERROR_PAGE.len()
                )
                .as_bytes(),
            );
        }
        "/reset-early" => return,
        "/reset-mid" => {
            let _ = s.write_all(big_head);
            let _ = s.write_all(&[b'x'; 1000]);
            return;
        }
        "/ws" => {
            let _ = s.write_all(switch);
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            return;
        }
        "/ws-drop" => {
            let _ = s.write_all(switch);
            return;
        }
        "/ws-rst" => {
            // One echo, then the target cuts the session.
            let _ = s.write_all(switch);
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
                reset(s);
            }
            return;
        }
        "/ws404" | "/ws426" | "/ws500" => {
            let code = &path[3..];
            let _ = s.write_all(
                format!("HTTP/1.1 {code} No\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
        _ => return,
    }
    // Hold the connection until the proxy closes it: a proxy that forgets
    // to close its upstream side shows up as a growing fd count.
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    String::from_utf8(head).ok()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads everything until the proxy closes; panics if it never does.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the proxy never closed the connection: {e}"),
        }
    }
}

/// Sends an upgrade request for `path` and reads the answer's head, which must be a 101.
fn switched(s: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).unwrap();
    assert_eq!(status(&head[..n]), 101);
}

fn status(answer: &[u8]) -> u16 {
    std::str::from_utf8(&answer[..answer.len().min(12)])
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// One cycle of one scenario.
fn cycle(scenario: &str, port: u16, ready: &mpsc::Receiver<()>) {
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
    };
    let mut s = connect(port);
    match scenario {
        "keep-alive GET" => {
            for _ in 0..2 {
                s.write_all(&get("/ok", "")).unwrap();
                let mut head = [0u8; 12];
                s.read_exact(&mut head).unwrap();
                assert_eq!(status(&head), 200);
                let mut rest = vec![0u8; 1024];
                // The answer is small: one more read gets the rest of it.
                let _ = s.read(&mut rest).unwrap();
            }
        }
        "client aborts while the upstream is pending" => {
            s.write_all(&get("/pending", "")).unwrap();
            ready.recv_timeout(IO_TIMEOUT).unwrap();
        }
        "client aborts after the response head" => {
            s.write_all(&get("/headers", "")).unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(status(&head), 200);
        }
        "client aborts mid-upload" => {
            s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
                .unwrap();
            s.write_all(&[b'u'; 1000]).unwrap();
            ready.recv_timeout(IO_TIMEOUT).unwrap();
        }
        "upstream resets before the head" => {
            s.write_all(&get("/reset-early", "Connection: close\r\n"))
                .unwrap();
            assert_eq!(status(&read_to_close(&mut s)), 503);
        }
        "upstream resets mid-body" => {
            s.write_all(&get("/reset-mid", "")).unwrap();
            // The connection is cut (CHP left the client waiting): the client
            // sees the truncation either as a short 200 or, when the cut
            // races the first flush, as a connection closed with no answer.
            let got = read_to_close(&mut s);
            assert!(got.is_empty() || status(&got) == 200, "{got:?}");
            assert!(got.len() < 1_000_000, "the truncation must be visible");
        }
        "WebSocket open, echo, close" => {
            switched(&mut s, "/ws");
            s.write_all(b"hello").unwrap();
            let mut echo = [0u8; 5];
            s.read_exact(&mut echo).unwrap();
            assert_eq!(&echo, b"hello");
        }
        "WebSocket client resets" => {
            switched(&mut s, "/ws");
            s.write_all(b"hello").unwrap();
            let mut echo = [0u8; 5];
            s.read_exact(&mut echo).unwrap();
            reset(s);
        }
        "WebSocket upstream resets" => {
            switched(&mut s, "/ws-rst");
            s.write_all(b"hello").unwrap();
            // The echo, then the close the target's RST must turn into.
            let got = read_to_close(&mut s);
            assert!(got.len() <= 5, "{got:?}");
        }
        "WebSocket client vanishes" => {
            switched(&mut s, "/ws");
        }
        "WebSocket upstream drops after the 101" => {
            s.write_all(&get("/ws-drop", UPGRADE)).unwrap();
            let got = read_to_close(&mut s);
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 101"), "{text}");
            // After the 101, nothing but the tunnel's own bytes (here: none).
            assert!(text.ends_with("\r\n\r\n"), "bytes after the 101: {text:?}");
        }
        "WebSocket answered 404" | "WebSocket answered 426" | "WebSocket answered 500" => {
            let code = &scenario[scenario.len() - 3..];
            s.write_all(&get(&format!("/ws{code}"), UPGRADE)).unwrap();
            assert_eq!(status(&read_to_close(&mut s)).to_string(), code);
        }
        "WebSocket to a dead route" => {
            // A bare 503, as CHP 5 answers upgrades: no error page is fetched
            // (fetching one for an upgrade is how CHP leaked, #434).
            let pages = ERROR_PAGES.load(Ordering::SeqCst);
            s.write_all(&get("/dead/ws", UPGRADE)).unwrap();
            assert_eq!(status(&read_to_close(&mut s)), 503);
            assert_eq!(ERROR_PAGES.load(Ordering::SeqCst), pages);
        }
        "GET to a dead route, page from --error-target" => {
            s.write_all(&get("/dead/page", "Connection: close\r\n"))
                .unwrap();
            let got = read_to_close(&mut s);
            assert_eq!(status(&got), 503);
            assert!(String::from_utf8_lossy(&got).ends_with(ERROR_PAGE));
        }
        "client abandons a hanging target" => {
            s.write_all(&get("/hang", "")).unwrap();
            ready.recv_timeout(IO_TIMEOUT).unwrap();
        }
        other => unreachable!("{other}"),
    }
}

const SCENARIOS: &[&str] = &[
    "keep-alive GET",
    "client aborts while the upstream is pending",
    "client aborts after the response head",
    "client aborts mid-upload",
    "upstream resets before the head",
    "upstream resets mid-body",
    "WebSocket open, echo, close",
    "WebSocket client vanishes",
    "WebSocket client resets",
    "WebSocket upstream resets",
    "WebSocket upstream drops after the 101",
    "WebSocket answered 404",
    "WebSocket answered 426",
    "WebSocket answered 500",
    "WebSocket to a dead route",
    "GET to a dead route, page from --error-target",
    "client abandons a hanging target",
];

#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: usize,
    tasks: u64,
    rss_kib: u64,
}

fn sample(pid: u32, metrics_port: u16) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let m = request(metrics_port, "GET", "/metrics", &[], None);
    let tasks = m
        .body
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_tokio_alive_tasks "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the alive-task gauge");
    Sample {
        fds,
        tasks,
        rss_kib,
    }
}

/// Sockets in CLOSE_WAIT that belong to the proxy: its client side (local
/// port = the public port) and its upstream side (remote port = upstream).
fn close_wait(public: u16, upstream: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            f.len() > 3
                && f[3] == "08"
                && (port(f[1]) == Some(public) || port(f[2]) == Some(upstream))
        })
        .count()
}

/// Waits (bounded) until every connection of the last batch has been torn
/// down: fds and tasks at or below the baseline (fds ±2).
fn settle(pid: u32, metrics_port: u16, base: Sample) -> Sample {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = sample(pid, metrics_port);
        if (now.fds <= base.fds + 2 && now.tasks <= base.tasks) || Instant::now() > deadline {
            return now;
        }
        std::thread::yield_now();
    }
}

#[test]
fn abort_scenarios_leak_nothing() {
    let cycles: usize = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    let (tx, ready) = mpsc::channel();
    let up = upstream(tx);
    let target = format!("http://127.0.0.1:{up}");
    let error_target = format!("http://127.0.0.1:{up}/err");
    let mut p = Proxy::start(&[
        "--default-target",
        &target,
        "--error-target",
        &error_target,
        "--metrics-ip",
        "127.0.0.1",
        "--metrics-port",
        "0",
    ]);
    let metrics_port = p.metrics_port();
    p.add("/dead", "http://127.0.0.1:1");
    let pid = p.child.id();

    // Warm up (allocator pools, the runtime's threads), then the baseline.
    for scenario in SCENARIOS {
        for _ in 0..20 {
            cycle(scenario, p.port, &ready);
        }
    }
    HELD.lock().unwrap().clear();
    let base = settle(pid, metrics_port, sample(pid, metrics_port));
    let mut report = Vec::new();
    let mut at_n = base;
    for round in 0..2 {
        for scenario in SCENARIOS {
            let load = Load::start(p.port);
            for _ in 0..cycles {
                cycle(scenario, p.port, &ready);
            }
            drop(load);
            let after = settle(pid, metrics_port, base);
            let cw = close_wait(p.port, up);
            report.push(format!(
                "round {round} {scenario:45} fds {}→{} tasks {}→{} close_wait {cw} rss {} KiB",
                base.fds, after.fds, base.tasks, after.tasks, after.rss_kib
            ));
            assert!(
                after.fds <= base.fds + 2,
                "{scenario}: fds {} → {}\n{}",
                base.fds,
                after.fds,
                report.join("\n")
            );
            assert!(
                after.tasks <= base.tasks,
                "{scenario}: tasks {} → {}\n{}",
                base.tasks,
                after.tasks,
                report.join("\n")
            );
            assert_eq!(
                cw,
                0,
                "{scenario}: CLOSE_WAIT sockets\n{}",
                report.join("\n")
            );
            // Counted while the hanging target still held its side: the proxy closed
            // its own without the target's help.
            HELD.lock().unwrap().clear();
        }
        if round == 0 {
            at_n = sample(pid, metrics_port);
        }
    }
    let at_2n = sample(pid, metrics_port);
    let per_round = (cycles * SCENARIOS.len()) as f64;
    #[allow(clippy::cast_precision_loss)]
    let slope = (at_2n.rss_kib as f64 - at_n.rss_kib as f64) / per_round;
    println!("{}", report.join("\n"));
    println!(
        "baseline {base:?}; after N {at_n:?}; after 2N {at_2n:?}; RSS slope {slope:.4} KiB/cycle"
    );
    assert!(slope < 1.0, "RSS grows {slope:.3} KiB per cycle");
}

/// With `SOAK_WRK=1`: wrk keeps 16 connections of `GET /ok` going through the proxy while
/// a scenario's cycles run (each one a fresh upstream connection: the upstream closes),
/// and is stopped before the proxy is sampled.
struct Load(Option<Child>);

impl Load {
    fn start(port: u16) -> Self {
        if std::env::var("SOAK_WRK").as_deref() != Ok("1") {
            return Self(None);
        }
        let child = Command::new("wrk")
            .args([
                "-t1",
                "-c16",
                "-d1h",
                &format!("http://127.0.0.1:{port}/ok"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("SOAK_WRK=1 needs wrk (apt-get install wrk): {e}"));
        Self(Some(child))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
