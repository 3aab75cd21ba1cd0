//! File-descriptor exhaustion through the real binary, started under
//! `prlimit --nofile=64:64` (util-linux): a failing `accept` (EMFILE) is logged once,
//! summarised after 10 failures and on recovery, and retried after a pause (no busy loop,
//! no crash), a request whose target connection cannot get a socket is answered with an
//! error status (no hang), and the proxy serves normally again once connections close.
//!
//! Synchronisation is by events only: the proxy's open descriptors (`/proc/<pid>/fd`),
//! its log lines, responses and closed sockets; every wait is bounded.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::time::{Duration, Instant};

use common::{Client, IO_TIMEOUT, Proxy, TOKEN};

/// The descriptor limit the proxy runs under.
const NOFILE: usize = 64;

/// F22: clients take every descriptor; `accept` then fails (logged once, then summarised;
/// 50 ms between retries); the next client's request, once accepted, cannot open a
/// socket to the target: an error status, not a hang; when the clients leave, requests
/// reach the target again and the recovery is logged.
#[test]
fn fd_exhaustion_is_survived_and_recovered_from() {
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    let wrapper = ["prlimit", limit.as_str(), "--"];
    let found = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(found, "this test needs prlimit (util-linux) on PATH");
    let backend = backends::ok_backend();
    // A connection limit above the descriptor limit: the default, derived from it, would
    // keep the table from filling.
    // One serving thread: with more, each logs its own summary of the failures it met.
    let args = ["--max-connections", "1000", "--worker-threads", "1"];
    let mut p = Proxy::start_under(&wrapper, &args, Some(TOKEN));
    p.add("/", &format!("http://127.0.0.1:{backend}"));
    let baseline = p.open_fds();
    assert!(baseline < NOFILE / 2, "{baseline} descriptors at start");

    // Fill the table with keep-alive clients, each answered (so accepted) before the next.
    let mut held = Vec::new();
    while p.open_fds() < NOFILE {
        assert!(held.len() < NOFILE, "the descriptor count does not grow");
        let mut client = Client::connect(p.port);
        client.send("GET", "/_chp_healthz", &[], "");
        let r = client.response();
        assert_eq!(r.status, 200, "{r:?}");
        held.push(client);
    }

    // One more: the kernel completes the handshake; the proxy cannot accept it, or, if it
    // took the last descriptor, cannot open the target connection for it. Either way
    // every `accept` fails while the table is full (Linux takes the descriptor before it
    // looks at the backlog), and the loop retries after each pause.
    let started = Instant::now();
    let mut waiting = Client::connect(p.port);
    waiting.send("GET", "/through", &[], "");
    let first = p.wait_for_line("accept failed");
    assert!(first.contains("Too many open files"), "{first}");
    // The retries are summarised, not logged one by one: the next line about accepting
    // reports ten failures, and the time they took shows the pause between them (nine
    // pauses of 50 ms; a busy loop would report microseconds).
    let tenth = p.wait_for_line(": 10 failures in ");
    let took = tenth
        .split("10 failures in ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap();
    let took_ms = if let Some(ms) = took.strip_suffix("ms") {
        ms.parse::<f64>().unwrap()
    } else if took.ends_with("µs") || took.ends_with("ns") {
        0.0
    } else {
        took.strip_suffix('s').unwrap().parse::<f64>().unwrap() * 1000.0
    };
    assert!(took_ms >= 400.0, "ten accept failures in {took}: {tenth}");
    let accept_lines = p.log.iter().filter(|l| l.contains("accept")).count();
    assert_eq!(accept_lines, 2, "one line per failure? {:#?}", p.log);
    let listener = format!("on http://127.0.0.1:{}", p.port);
    assert!(
        first.contains(&listener) && tenth.contains(&listener),
        "{first}\n{tenth}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(p.child.try_wait().unwrap().is_none(), "the proxy died");

    // A client leaves: its descriptor goes to the waiting connection, whose request then
    // finds no descriptor for the target connection.
    drop(held.pop());
    let r = waiting.response();
    assert!(r.status == 502 || r.status == 503, "{r:?}");
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
    // The first connection accepted after the failures logs the recovery.
    let recovered = p.wait_for_line("accept recovered on ");
    assert!(recovered.contains(" failures in "), "{recovered}");
    assert_eq!(p.api("GET", "/api/routes", None).status, 200);
}
