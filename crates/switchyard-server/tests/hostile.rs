//! Hostile clients through the real binary, each measured by the proxy's resident memory
//! (`/proc/<pid>/status`) and open descriptors (`/proc/<pid>/fd`) before and after: a slow
//! reader of a large download, slow writers of request bodies, a WebSocket client that
//! never reads and one that sends a 1 GiB frame.
//!
//! Synchronisation is by events only (a backend report, a closed socket, a response, the
//! descriptor count); every wait is bounded by `IO_TIMEOUT` or a multiple of it.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Proxy, request};

/// The download the slow reader asks for: far more than any buffer on the way.
const HUGE: u64 = 1 << 30;

/// How much the proxy's memory may grow while a hostile client is served, in KiB: its
/// buffers, hyper's and the allocator's, not the body.
const MEMORY_MARGIN_KIB: u64 = 16 * 1024;

/// A client that asks for a 1 GiB download and never reads: the proxy stops reading from
/// the target once its buffers and the sockets' are full (the target gets far less than
/// the body out), its memory does not follow the body, and the connection goes after
/// `--body-idle-timeout` with no byte accepted by the client; the target's connection
/// closes with it and every descriptor is given back.
#[test]
fn a_slow_reader_holds_a_bounded_buffer_and_goes_after_the_idle_timeout() {
    let (backend, report) = endless_download();
    let p = Proxy::start(&["--body-idle-timeout", "1000"]);
    p.add("/", &format!("http://127.0.0.1:{backend}"));
    // One request first, so that the allocator's and the runtime's first growth is in
    // the baseline.
    assert_eq!(
        request(p.port, "GET", "/_chp_healthz", &[], None).status,
        200
    );
    let (fds, rss) = (p.open_fds(), memory(&p).rss);

    let mut client = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    client
        .write_all(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    // The proxy closes the target's connection when it gives up on the client.
    let (sent, ended) = report.recv_timeout(IO_TIMEOUT * 3).unwrap();
    let held = started.elapsed();
    assert!(
        !matches!(
            ended,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "the target's connection was not closed: {ended:?} after {sent} bytes"
    );
    assert!(held >= Duration::from_millis(1000), "closed after {held:?}");
    assert!(
        sent < 64 << 20,
        "the target sent {sent} bytes of a stalled download"
    );
    let peak = memory(&p).peak;
    assert!(
        peak < rss + MEMORY_MARGIN_KIB,
        "peak {peak} KiB from {rss} KiB"
    );

    // The client's connection is closed: what the buffers held, then the end.
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut received = 0u64;
    let mut chunk = vec![0; 1 << 16];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("after {received} bytes: {e}"),
        }
    }
    assert!(received < HUGE, "{received}");
    drop(client);
    back_to(&p, fds, rss);
    eprintln!(
        "slow reader: held {held:?}; target sent {sent} B, client got {received} B; \
         RSS {rss} KiB before, peak {peak} KiB"
    );
}

/// How many slow writers [`slow_writers_do_not_starve_others_and_go_after_the_idle_timeout`]
/// opens at once.
const SLOW_WRITERS: usize = 100;

/// Slow writers: a hundred clients each send a request head and the first byte of a
/// 1000-byte body, then nothing. Meanwhile another client's request is answered (the
/// slow ones still open: they starve nobody). After `--body-idle-timeout` each of their
/// requests is cancelled (the target sees its connection close before the body is
/// complete) and each client's connection is closed; the descriptors and memory come back.
#[test]
fn slow_writers_do_not_starve_others_and_go_after_the_idle_timeout() {
    let (backend, heads, closed) = body_sink();
    let other = ok_backend();
    let p = Proxy::start(&["--body-idle-timeout", "3000"]);
    p.add("/", &format!("http://127.0.0.1:{backend}"));
    p.add("/other", &format!("http://127.0.0.1:{other}"));
    // The pooled connection to the other target is in the baseline.
    let r = request(p.port, "POST", "/other", &[], Some("small"));
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    let (fds, rss) = (p.open_fds(), memory(&p).rss);

    let started = Instant::now();
    let mut writers: Vec<TcpStream> = (0..SLOW_WRITERS)
        .map(|_| {
            let mut w = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
            w.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
                .unwrap();
            w
        })
        .collect();
    // Every request has reached the target, its body begun.
    for _ in 0..SLOW_WRITERS {
        heads.recv_timeout(IO_TIMEOUT).unwrap();
    }
    let r = request(p.port, "POST", "/other", &[], Some("small"));
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    let answered = started.elapsed();
    for w in &writers {
        w.set_nonblocking(true).unwrap();
        let mut byte = [0; 1];
        let open = (&*w).read(&mut byte);
        assert!(
            open.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "a slow writer was cut before the idle timeout ({answered:?}): {open:?}"
        );
        w.set_nonblocking(false).unwrap();
    }

    // The idle timeout: each target connection closes with one byte of the body read.
    for _ in 0..SLOW_WRITERS {
        let got = closed.recv_timeout(IO_TIMEOUT * 2).unwrap();
        assert_eq!(got, 1);
    }
    assert!(started.elapsed() >= Duration::from_millis(3000));
    for w in &mut writers {
        w.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        match w.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    drop(writers);
    back_to(&p, fds, rss);
    eprintln!(
        "slow writers: another request answered after {answered:?} with {SLOW_WRITERS} open; \
         RSS {rss} KiB before, {} KiB after, peak {} KiB",
        memory(&p).rss,
        memory(&p).peak
    );
}

/// A WebSocket client that never reads while its target sends without pause: the tunnel
/// holds its small buffers only (the target gets a few MiB out, then waits), and the
/// client goes after `--body-idle-timeout` with no byte taken; the target's connection is
/// closed with it.
#[test]
fn a_websocket_client_that_never_reads_goes_after_the_idle_timeout() {
    let (backend, report) = websocket_target(Target::Floods);
    let p = Proxy::start(&["--body-idle-timeout", "1000"]);
    p.add("/", &format!("http://127.0.0.1:{backend}"));
    assert_eq!(
        request(p.port, "GET", "/_chp_healthz", &[], None).status,
        200
    );
    let (fds, rss) = (p.open_fds(), memory(&p).rss);

    let client = websocket_client(p.port);
    let started = Instant::now();
    let (sent, ended) = report.recv_timeout(IO_TIMEOUT * 3).unwrap();
    let held = started.elapsed();
    assert!(
        !matches!(
            ended,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "the target's connection was not closed: {ended:?} after {sent} bytes"
    );
    assert!(held >= Duration::from_millis(1000), "closed after {held:?}");
    assert!(
        sent < 64 << 20,
        "the target sent {sent} bytes to a client that reads none"
    );
    let peak = memory(&p).peak;
    assert!(
        peak < rss + MEMORY_MARGIN_KIB,
        "peak {peak} KiB from {rss} KiB"
    );
    drop(client);
    back_to(&p, fds, rss);
    eprintln!(
        "websocket never read: held {held:?}; target sent {sent} B; RSS {rss} KiB before, \
         peak {peak} KiB"
    );
}

/// A WebSocket client sends one 1 GiB binary frame to a target that reads and drops it:
/// all of it crosses the tunnel, and the proxy's memory does not follow the frame.
#[test]
fn a_one_gib_websocket_frame_crosses_with_bounded_memory() {
    let (backend, report) = websocket_target(Target::Drains);
    let p = Proxy::start(&[]);
    p.add("/", &format!("http://127.0.0.1:{backend}"));
    assert_eq!(
        request(p.port, "GET", "/_chp_healthz", &[], None).status,
        200
    );
    let (fds, rss) = (p.open_fds(), memory(&p).rss);

    let mut client = websocket_client(p.port);
    let started = Instant::now();
    // A binary frame header with a 64-bit length, masked as a client's must be.
    let mut header = vec![0x82, 0xFF];
    header.extend_from_slice(&HUGE.to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    client.write_all(&header).unwrap();
    let chunk = vec![b'y'; 1 << 20];
    for _ in 0..(HUGE >> 20) {
        client.write_all(&chunk).unwrap();
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let (received, _) = report.recv_timeout(IO_TIMEOUT * 6).unwrap();
    assert_eq!(received, HUGE + header.len() as u64);
    let took = started.elapsed();
    let peak = memory(&p).peak;
    assert!(
        peak < rss + MEMORY_MARGIN_KIB,
        "peak {peak} KiB from {rss} KiB"
    );
    drop(client);
    back_to(&p, fds, rss);
    eprintln!("1 GiB frame: crossed in {took:?}; RSS {rss} KiB before, peak {peak} KiB");
}

/// What a WebSocket target does after its `101`.
#[derive(Clone, Copy)]
enum Target {
    /// Sends without pause; reports how much went out and how writing ended.
    Floods,
    /// Reads and drops everything; reports how much arrived, at the end of the stream.
    Drains,
}

/// A WebSocket target for one connection (see [`Target`]). The tunnel carries bytes, so
/// the target does not parse frames.
fn websocket_target(does: Target) -> (u16, mpsc::Receiver<(u64, std::io::ErrorKind)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // Safety nets only.
        stream.set_write_timeout(Some(IO_TIMEOUT * 2)).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT * 5)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let mut writer = stream;
        writer
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            )
            .unwrap();
        let mut chunk = vec![0x82; 1 << 16];
        let mut count = 0u64;
        let ended = loop {
            let done = match does {
                Target::Floods => writer.write(&chunk),
                Target::Drains => match reader.read(&mut chunk) {
                    Ok(0) => break std::io::ErrorKind::UnexpectedEof,
                    other => other,
                },
            };
            match done {
                Ok(n) => count += n as u64,
                Err(e) => break e.kind(),
            }
        };
        let _ = tx.send((count, ended));
    });
    (port, rx)
}

/// A client connection through the proxy whose WebSocket handshake has been answered
/// `101`; the next bytes are the tunnel's.
fn websocket_client(port: u16) -> TcpStream {
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The head, byte by byte: nothing of the tunnel is read.
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client
}

/// The proxy's memory: resident now and at its peak, in KiB.
struct Memory {
    rss: u64,
    peak: u64,
}

fn memory(p: &Proxy) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    Memory {
        rss: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// Waits until the proxy has no more descriptors open than `fds`, then checks its
/// resident memory against `rss`.
fn back_to(p: &Proxy, fds: usize, rss: u64) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while p.open_fds() > fds {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {fds} before",
            p.open_fds()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let now = memory(p).rss;
    assert!(
        now < rss + MEMORY_MARGIN_KIB,
        "{now} KiB after, {rss} KiB before"
    );
}

/// Answers every request (its body read by its `Content-Length`) with `200 ok`.
fn ok_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(n) = lower.strip_prefix("content-length:") {
                            length = n.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if writer.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A target that reads each request's head (reported on the first channel), then its body
/// until the proxy closes the connection (how many body bytes arrived, on the second).
fn body_sink() -> (u16, mpsc::Receiver<()>, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (head_tx, head_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (head_tx, closed_tx) = (head_tx.clone(), closed_tx.clone());
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(IO_TIMEOUT * 2)).unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let _ = head_tx.send(());
                let mut body = Vec::new();
                if reader.read_to_end(&mut body).is_ok() {
                    let _ = closed_tx.send(body.len());
                }
            });
        }
    });
    (port, head_rx, closed_rx)
}

/// A target that answers one request with a 1 GiB body and writes it as fast as it is
/// taken; reports how many bytes went out, and how writing ended, when it cannot write
/// any more.
fn endless_download() -> (u16, mpsc::Receiver<(u64, std::io::ErrorKind)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // A safety net only: a write blocked this long reports `WouldBlock`.
        stream.set_write_timeout(Some(IO_TIMEOUT * 2)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let mut writer = stream;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {HUGE}\r\n\r\n");
        writer.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'x'; 1 << 16];
        let mut sent = 0u64;
        let ended = loop {
            match writer.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(e) => break e.kind(),
            }
        };
        let _ = tx.send((sent, ended));
    });
    (port, rx)
}
