//! Hostile clients through the real binary, each measured by the proxy's resident memory
//! (`/proc/<pid>/status`) and open descriptors (`/proc/<pid>/fd`) before and after: a slow
//! reader of a large download, slow writers of request bodies, a WebSocket client that
//! never reads and one that sends a 1 GiB frame, and HTTP/2 floods (CONTINUATION frames,
//! rapid resets, SETTINGS), measured by the proxy's CPU time too; and the memory an
//! HTTP/2 burst took, given back once it is over.
//!
//! Synchronisation is by events only (a backend report, a closed socket, a response, the
//! descriptor count); every wait is bounded by `IO_TIMEOUT` or a multiple of it.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;
#[path = "hostile/h2.rs"]
mod h2;

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
    // One serving thread: each pools its own target connections, and the descriptor
    // baseline below counts the pooled one.
    let p = Proxy::start(&["--body-idle-timeout", "1000", "--worker-threads", "1"]);
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
    let other = backends::ok_backend();
    // One serving thread: each pools its own target connections, and the descriptor
    // baseline below counts the pooled one.
    let p = Proxy::start(&["--body-idle-timeout", "3000", "--worker-threads", "1"]);
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
    // One serving thread: each pools its own target connections, and the descriptor
    // baseline below counts the pooled one.
    let p = Proxy::start(&["--body-idle-timeout", "1000", "--worker-threads", "1"]);
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
    // One serving thread: each pools its own target connections, and the descriptor
    // baseline below counts the pooled one.
    let p = Proxy::start(&["--worker-threads", "1"]);
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

/// The most a flood client writes: far more than any limit lets through.
const FLOOD_CAP: u64 = 64 << 20;

/// The most CPU time the proxy may spend on a flood cut off after a few frames, in clock
/// ticks of 10 ms: those cost a tick or two; a flood that were let through would cost
/// seconds.
const FLOOD_CPU_TICKS: u64 = 100;

/// The most CPU time the proxy may spend on a SETTINGS flood from a client that never
/// reads: every frame that fits in the sockets' buffers is acknowledged before the proxy
/// stops reading (about 700,000 frames on loopback, 1.6 s of CPU in a debug build); with
/// acknowledgements queued instead, the client would write its whole 64 MiB.
const SETTINGS_FLOOD_CPU_TICKS: u64 = 600;

/// A CONTINUATION flood (RUSTSEC-2024-0332): a request head that never ends, in
/// CONTINUATION frames, empty ones and full ones. h2 allows a header block 5/4 of the
/// frames the header-list limit needs (here 6) and no more than that limit in bytes: the
/// proxy answers GOAWAY and closes within a few frames, its memory and CPU time hardly
/// move, and another client is served afterwards.
#[test]
fn an_http2_continuation_flood_is_cut_off() {
    let p = Proxy::start(&[]);
    let baseline = h2_baseline(&p);
    // Full frames of literal fields: 148 of 110 bytes, just under the 16 KiB frame size.
    let mut full = Vec::new();
    for _ in 0..148 {
        h2::literal(&mut full, b"x-flood", &[b'a'; 100]);
    }
    for (shape, payload) in [("empty", Vec::new()), ("full", full)] {
        let outcome = flood(
            p.port,
            &h2::frame(h2::HEADERS, 0, 1, &h2::get_head("/")),
            |_| {
                let one = h2::frame(h2::CONTINUATION, 0, 1, &payload);
                one.repeat((64 << 10) / one.len().max(64))
            },
        );
        assert!(outcome.ended.closed(), "{shape}: {outcome:?}");
        assert!(
            outcome.ended.goaway.is_none_or(|code| code != 0),
            "{shape}: {outcome:?}"
        );
        let cpu = baseline.check(&p, shape, FLOOD_CPU_TICKS);
        eprintln!("CONTINUATION flood ({shape} frames): {outcome:?}; CPU {cpu} ticks");
    }
    baseline.served(&p);
}

/// Rapid Reset (CVE-2023-44487): streams opened and reset at once, in batches of 1,000.
/// Reset streams the proxy has not yet taken count against
/// `max_pending_accept_reset_streams` (20): GOAWAY (ENHANCE_YOUR_CALM) and the
/// connection closed, with bounded CPU time and memory; another client is served
/// afterwards.
#[test]
fn an_http2_rapid_reset_flood_is_cut_off() {
    let p = Proxy::start(&[]);
    let baseline = h2_baseline(&p);
    let head = h2::get_head("/_chp_healthz");
    let outcome = flood(p.port, &[], |batch| {
        let mut out = Vec::new();
        for i in 0..1000 {
            let id = 1 + 2 * (batch * 1000 + i);
            out.extend(h2::frame(
                h2::HEADERS,
                h2::END_STREAM | h2::END_HEADERS,
                id,
                &head,
            ));
            out.extend(h2::frame(h2::RST_STREAM, 0, id, &h2::CANCEL.to_be_bytes()));
        }
        out
    });
    assert!(outcome.ended.closed(), "{outcome:?}");
    assert!(
        outcome
            .ended
            .goaway
            .is_none_or(|code| code == h2::ENHANCE_YOUR_CALM),
        "{outcome:?}"
    );
    let cpu = baseline.check(&p, "rapid reset", FLOOD_CPU_TICKS);
    eprintln!("rapid reset flood: {outcome:?}; CPU {cpu} ticks");
    baseline.served(&p);
}

/// A SETTINGS flood (CVE-2019-9515) from a client that never reads: h2 acknowledges one
/// SETTINGS frame before it reads the next frame, so once the client's socket is full
/// of acknowledgements the proxy reads nothing more, and no queue grows. Another client
/// is served meanwhile, and the send timeout (`--body-idle-timeout`) closes the
/// connection: the flood ends with the client's writes stalled or refused.
#[test]
fn an_http2_settings_flood_that_never_reads_is_cut_off() {
    let p = Proxy::start(&["--body-idle-timeout", "1000"]);
    let baseline = h2_baseline(&p);
    let mut client = h2::connect(p.port);
    let reader = client.try_clone().unwrap();
    client
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    let (flooding, going) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let batch = h2::settings().repeat(3000);
        let mut sent = 0u64;
        loop {
            // Whole frames, or the end of the flood.
            if let Err(e) = client.write_all(&batch) {
                return (sent, e.kind(), started.elapsed());
            }
            sent += batch.len() as u64;
            let _ = flooding.send(());
            if sent > FLOOD_CAP {
                return (sent, std::io::ErrorKind::Other, started.elapsed());
            }
        }
    });
    going.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(h2::get(p.port, "/_chp_healthz"), Some(200));
    assert_eq!(
        request(p.port, "GET", "/_chp_healthz", &[], None).status,
        200
    );
    let (sent, stopped, stopped_after) = writer.join().unwrap();
    assert!(
        matches!(
            stopped,
            std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
        ),
        "{stopped:?} after {sent} bytes"
    );
    let ended = h2::read_to_end(reader, IO_TIMEOUT);
    assert!(ended.closed(), "{ended:?}");
    let cpu = baseline.check(&p, "SETTINGS", SETTINGS_FLOOD_CPU_TICKS);
    eprintln!(
        "SETTINGS flood, never read: {sent} B written, {stopped:?} after {stopped_after:?}, \
         closed after {:?}: {ended:?}; CPU {cpu} ticks",
        started.elapsed()
    );
    baseline.served(&p);
}

/// How far above its idle level the proxy's resident memory may stay once a burst is
/// over, in KiB.
const AFTER_BURST_MARGIN_KIB: u64 = 4 * 1024;

/// Memory goes back after a burst: `h2load` sends 20,000 requests on 10 HTTP/2
/// connections of 100 streams each to one target (so about 1,000 pooled connections to
/// it). Once the pool's idle connections are closed (`--pool-idle-timeout`) and every
/// descriptor is back, the proxy's resident memory returns to within a few MiB of its
/// level before the burst: the allocator's freed pages go back to the system.
#[test]
fn memory_goes_back_after_an_http2_burst() {
    let h2load = std::process::Command::new("h2load")
        .arg("--version")
        .output();
    assert!(
        h2load.is_ok_and(|o| o.status.success()),
        "h2load is needed (Debian: nghttp2-client; scripts/test installs it)"
    );
    let backend = backends::ok_backend();
    let p = Proxy::start(&["--pool-idle-timeout", "1000"]);
    p.add("/", &format!("http://127.0.0.1:{backend}"));
    let fds = p.open_fds();
    // The first HTTP/2 connection's and the first upstream connection's growth is in
    // the baseline, and their descriptors are gone.
    assert_eq!(h2::get(p.port, "/"), Some(200));
    back_to(&p, fds, u64::MAX / 2);
    let idle = memory(&p).rss;

    let started = Instant::now();
    let out = std::process::Command::new("h2load")
        .args(["-c10", "-m100", "-n20000"])
        .arg(format!("http://127.0.0.1:{}/burst", p.port))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("20000 succeeded, 0 failed"), "{report}");
    let burst = started.elapsed();
    let after = memory(&p);
    // The pool closes its connections a second after their last request.
    back_to(&p, fds, u64::MAX / 2);
    let closed = started.elapsed();
    // The workers give their free pages back as they go idle.
    let deadline = Instant::now() + IO_TIMEOUT;
    while memory(&p).rss >= idle + AFTER_BURST_MARGIN_KIB {
        assert!(
            Instant::now() < deadline,
            "{} KiB resident, {idle} KiB before the burst, {} KiB at its end",
            memory(&p).rss,
            after.rss
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "burst: {burst:?}; RSS {idle} KiB idle, {} KiB at the end (peak {} KiB), {} KiB \
         {:?} later with the pool closed after {closed:?}",
        after.rss,
        after.peak,
        memory(&p).rss,
        started.elapsed() - burst
    );
}

/// How a flood went.
#[derive(Debug)]
#[allow(dead_code, reason = "printed")]
struct Flood {
    ended: h2::Ended,
    sent: u64,
    took: Duration,
}

/// Floods one HTTP/2 connection: the preface, `first`, then batch after batch
/// (`next(0)`, `next(1)`, …) until the proxy closes the connection, [`FLOOD_CAP`] bytes
/// are out, or `IO_TIMEOUT` has passed. A reader drops what the proxy sends and notes
/// its GOAWAY.
fn flood(port: u16, first: &[u8], mut next: impl FnMut(u32) -> Vec<u8>) -> Flood {
    let mut client = h2::connect(port);
    client.write_all(first).unwrap();
    let reader = client.try_clone().unwrap();
    let reading = std::thread::spawn(move || h2::read_to_end(reader, IO_TIMEOUT));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch = 0;
    while !reading.is_finished() && sent < FLOOD_CAP && started.elapsed() < IO_TIMEOUT {
        let bytes = next(batch);
        batch += 1;
        if client.write_all(&bytes).is_err() {
            break;
        }
        sent += bytes.len() as u64;
    }
    let ended = reading.join().unwrap();
    Flood {
        ended,
        sent,
        took: started.elapsed(),
    }
}

/// The proxy's state before a flood: descriptors, memory and CPU time, after one HTTP/2
/// request (so that the first connection's growth is in it).
struct H2Baseline {
    fds: usize,
    rss: u64,
    cpu: u64,
}

fn h2_baseline(p: &Proxy) -> H2Baseline {
    let fds = p.open_fds();
    assert_eq!(h2::get(p.port, "/_chp_healthz"), Some(200));
    // That connection's descriptor is given back.
    back_to(p, fds, u64::MAX / 2);
    H2Baseline {
        fds,
        rss: memory(p).rss,
        cpu: cpu_ticks(p),
    }
}

impl H2Baseline {
    /// After a flood: the descriptors back, the peak memory and the CPU time spent (at
    /// most `cpu_ticks_limit`) bounded. Returns the ticks spent.
    fn check(&self, p: &Proxy, flood: &str, cpu_ticks_limit: u64) -> u64 {
        back_to(p, self.fds, self.rss);
        let peak = memory(p).peak;
        assert!(
            peak < self.rss + MEMORY_MARGIN_KIB,
            "{flood}: peak {peak} KiB from {} KiB",
            self.rss
        );
        let spent = cpu_ticks(p) - self.cpu;
        assert!(spent < cpu_ticks_limit, "{flood}: {spent} ticks of CPU");
        spent
    }

    /// Another client is served, over HTTP/2 and HTTP/1.1.
    fn served(&self, p: &Proxy) {
        assert_eq!(h2::get(p.port, "/_chp_healthz"), Some(200));
        assert_eq!(
            request(p.port, "GET", "/_chp_healthz", &[], None).status,
            200
        );
    }
}

/// The proxy's CPU time so far, user and system, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(p: &Proxy) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.child.id())).unwrap();
    // The fields after the command name's closing parenthesis, from the state (3rd).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let utime: u64 = fields[11].parse().unwrap();
    let stime: u64 = fields[12].parse().unwrap();
    utime + stime
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
