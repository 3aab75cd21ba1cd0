//! Redis Sentinel: two replicas find the master through three `redis-sentinel`s
//! (`--storage-backend redis+sentinel://…`), a `redis-server` master with one replica, all
//! on loopback. The master is killed under traffic: proxied requests never fail, API
//! writes answer 503 only until the sentinels have promoted the replica and succeed after,
//! no route is lost, `last_activity` keeps flowing through the new master, and readiness
//! comes back.
//!
//! The failover is awaited as an event: a subscription to a sentinel's `+switch-master`.
//!
//! redis-server and redis-sentinel are required: without them this test fails
//! (scripts/test installs them).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;
mod redis_peers;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Proxy, TOKEN, request};
use redis_peers::{Redis, backend, candidate_port};

const MASTER: &str = "mymaster";

/// A `redis-sentinel` child, killed on drop.
struct Sentinel {
    child: Child,
    port: u16,
}

impl Sentinel {
    fn start(dir: &std::path::Path, master_port: u16) -> Self {
        let port = candidate_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 10000\n\
                 sentinel parallel-syncs {MASTER} 1\n"
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-sentinel ({e}): install the Debian package `redis-sentinel`"
                )
            });
        Self { child, port }
    }

    /// One command to this sentinel; the reply's lines (RESP, read raw).
    fn cmd(&self, args: &[&str]) -> Option<Vec<String>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut first = String::new();
        r.read_line(&mut first).ok()?;
        // Arrays of bulk strings only (what the commands here answer), one level.
        let mut out = vec![first.trim_end().to_owned()];
        if let Some(n) = first.strip_prefix('*') {
            let n: i64 = n.trim().parse().ok()?;
            for _ in 0..n.max(0) * 2 {
                let mut line = String::new();
                r.read_line(&mut line).ok()?;
                out.push(line.trim_end().to_owned());
            }
        }
        Some(out)
    }

    /// How many other sentinels and replicas this one knows of.
    fn known(&self, what: &str) -> usize {
        self.cmd(&["SENTINEL", what, MASTER])
            .and_then(|l| l.first()?.strip_prefix('*')?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn replica(url: &str) -> Proxy {
    let mut cmd = common::command(
        &[
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            "0",
            "--storage-backend",
            url,
        ],
        Some(TOKEN),
    );
    let mut p = Proxy::from_child(cmd.spawn().unwrap());
    p.wait_for_line("(from Sentinel)");
    p.wait_for_line("Loaded");
    p
}

#[test]
fn sentinel_failover_under_traffic() {
    let dir = common::temp_dir("sentinel");
    // Both keep their replication files in the test's directory.
    let dir_arg = dir.to_str().unwrap();
    let mut master = Redis::start_tcp(&["--dir", dir_arg]);
    let replica_of = format!("127.0.0.1 {}", master.tcp_port());
    let data_replica = Redis::start_tcp(&["--replicaof", &replica_of, "--dir", dir_arg]);
    eventually("the replica in sync", || {
        data_replica
            .cmd(&["INFO", "replication"])
            .is_some_and(|i| i.contains("master_link_status:up"))
    });
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(&dir, master.tcp_port()))
        .collect();
    // Each sentinel must know the replica and the two others before it can fail over.
    for s in &sentinels {
        eventually("sentinels that know each other and the replica", || {
            s.known("sentinels") == 2 && s.known("replicas") == 1
        });
    }
    let url = format!(
        "redis+sentinel://{}/{MASTER}/0",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (mut a, b) = (replica(&url), replica(&url));
    for i in 0..20 {
        a.add(&format!("/r{i}"), &backend("r"));
    }
    eventually("the routes on b", || {
        request(b.port, "GET", "/r19/x", &[], None).status == 200
    });

    // Proxied traffic through both replicas for the whole failover.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        let ports = [a.port, b.port];
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                for port in ports {
                    let path = format!("/r{}/x", i % 20);
                    if request(port, "GET", &path, &[], None).status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // The failover, as the sentinels announce it.
    let mut sub = TcpStream::connect(("127.0.0.1", sentinels[0].port)).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    sub.write_all(b"SUBSCRIBE +switch-master\r\n").unwrap();
    let mut sub = BufReader::new(sub);
    let mut line = String::new();
    while !line.starts_with("subscribe") {
        line.clear();
        sub.read_line(&mut line).unwrap();
    }
    master.kill();

    // A write while there is no master: 503, and nothing written.
    let r = a.api(
        "POST",
        "/api/routes/during",
        Some(&format!(r#"{{"target":"{}"}}"#, backend("d"))),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    // The sentinels promote the replica.
    let mut message = Vec::new();
    while !message.iter().any(|l: &String| l.contains(MASTER)) {
        line.clear();
        sub.read_line(&mut line)
            .expect("no +switch-master from the sentinel within 60 s");
        if line.contains("+switch-master") || !message.is_empty() {
            message.push(line.trim_end().to_owned());
        }
    }
    let payload = message.last().unwrap();
    assert!(
        payload.ends_with(&format!("127.0.0.1 {}", data_replica.tcp_port())),
        "the replica became master: {message:?}"
    );
    // From then on writes come back (503 until a replica has followed, never anything else).
    eventually("writes through a after the failover", || {
        let r = a.api(
            "POST",
            "/api/routes/after",
            Some(&format!(r#"{{"target":"{}"}}"#, backend("after"))),
        );
        assert!(matches!(r.status, 201 | 503), "{} {}", r.status, r.body);
        r.status == 201
    });
    a.wait_for_line("moved to");
    eventually("the route written after on b", || {
        request(b.port, "GET", "/after/x", &[], None).status == 200
    });
    let served = ok.load(Ordering::Relaxed);
    eventually("traffic after the failover", || {
        ok.load(Ordering::Relaxed) > served + 20
    });
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "every proxied request was served"
    );

    // No route lost: the new master has them, and so do both replicas.
    for p in [&a, &b] {
        let routes = p.routes();
        let keys = routes.as_object().unwrap();
        for i in 0..20 {
            assert!(keys.contains_key(&format!("/r{i}")), "/r{i} lost: {routes}");
        }
        assert!(keys.contains_key("/after"), "{routes}");
        assert_eq!(
            request(p.port, "GET", "/_chp_readyz", &[], None).status,
            200
        );
    }
    assert!(
        data_replica.cmd(&["GET", "chp:/r0"]).is_some(),
        "on the new master"
    );
    assert_eq!(
        data_replica.cmd(&["GET", "chp:/during"]),
        None,
        "the refused write"
    );

    // last_activity: a request through b shows up in a's view, flushed through the new
    // master.
    let before = backends::last_activity(&a, "/r3");
    backends::clock_past(&before);
    assert_eq!(request(b.port, "GET", "/r3/again", &[], None).status, 200);
    eventually("b's activity visible on a", || {
        backends::ms_of(&backends::last_activity(&a, "/r3")) > backends::ms_of(&before)
    });
    drop(sentinels);
    let _ = std::fs::remove_dir_all(&dir);
}
