//! File-descriptor exhaustion (reliability.md §4 F22) through the real binary, started
//! under `prlimit --nofile=64:64` (util-linux): a failing `accept` (EMFILE) is logged and
//! retried after a pause (no busy loop, no crash), a request whose target connection
//! cannot get a socket is answered with an error status (no hang), and the proxy serves
//! normally again once connections close.
//!
//! Synchronisation is by events only: the proxy's open descriptors (`/proc/<pid>/fd`),
//! its log lines, responses and closed sockets; every wait is bounded.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Proxy, TOKEN};

/// The descriptor limit the proxy runs under.
const NOFILE: usize = 64;

/// F22: clients take every descriptor; the next connection waits in the backlog while
/// `accept` fails (logged, at most about one line per 50 ms pause); when one client
/// leaves, the waiting connection is accepted but its request cannot open a socket to
/// the target: an error status, not a hang; when all leave, requests reach the target.
#[test]
fn fd_exhaustion_is_survived_and_recovered_from() {
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    let wrapper = ["prlimit", limit.as_str(), "--"];
    let found = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(found, "this test needs prlimit (util-linux) on PATH");
    let backend = ok_backend();
    let mut p = Proxy::start_under(&wrapper, &[], Some(TOKEN));
    p.add("/", &format!("http://127.0.0.1:{backend}"));
    let baseline = p.open_fds();
    assert!(baseline < NOFILE / 2, "{baseline} descriptors at start");

    // Fill the table with keep-alive clients, each answered (so accepted) before the next.
    let mut held = Vec::new();
    while p.open_fds() < NOFILE {
        assert!(held.len() < NOFILE, "the descriptor count does not grow");
        let mut client = connect(p.port);
        client
            .write_all(b"GET /_chp_healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let head = read_head(&mut client);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(client);
    }

    // One more: the kernel completes the handshake, the proxy cannot accept it. The
    // failed connection stays in the backlog, so `accept` fails again after each pause.
    let started = Instant::now();
    let mut waiting = connect(p.port);
    waiting
        .write_all(b"GET /through HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = p.wait_for_line("accept failed");
    assert!(first.contains("Too many open files"), "{first}");
    // Ten failures, plus whatever else is already in the pipe: every line read by now was
    // logged after `started`, so with a 50 ms pause there are at most elapsed / 50 + 1 of
    // them (the bound below allows twice that); a busy loop would log thousands.
    let mut failures = 1;
    while failures < 10 {
        let line = p.lines.recv_timeout(IO_TIMEOUT).unwrap();
        failures += usize::from(line.contains("accept failed"));
        p.log.push(line);
    }
    while let Ok(line) = p.lines.try_recv() {
        failures += usize::from(line.contains("accept failed"));
        if p.log.len() > 100_000 {
            break;
        }
        p.log.push(line);
    }
    let elapsed = started.elapsed();
    let bound = usize::try_from(elapsed.as_millis() / 25).unwrap() + 4;
    assert!(
        failures <= bound,
        "{failures} accept failures logged in {elapsed:?}"
    );
    assert!(p.child.try_wait().unwrap().is_none(), "the proxy died");

    // A client leaves: its descriptor goes to the waiting connection, whose request then
    // finds no descriptor for the target connection.
    drop(held.pop());
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let head = read_head(&mut waiting);
    assert!(
        head.starts_with("HTTP/1.1 502") || head.starts_with("HTTP/1.1 503"),
        "{head}"
    );
    assert!(p.child.try_wait().unwrap().is_none(), "the proxy died");

    // Everyone leaves: the proxy closes their connections and serves normally again.
    drop(waiting);
    held.clear();
    let deadline = Instant::now() + IO_TIMEOUT;
    while p.open_fds() > baseline {
        assert!(
            Instant::now() < deadline,
            "{} descriptors left",
            p.open_fds()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = p.public("GET", "/through", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    assert_eq!(p.api("GET", "/api/routes", None).status, 200);
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads a response head and its `Content-Length` body, leaving the connection open.
fn read_head(stream: &mut TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("connection closed after {head:?}");
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    head
}

/// Answers every request on every connection with `200 ok`.
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
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if writer.write_all(answer).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    port
}
