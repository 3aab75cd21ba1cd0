//! Peers for the Redis store's tests: a real `redis-server` child (the Debian package;
//! the test script installs it) on a free port without persistence, replicas of the real
//! binary on it, and a keep-alive HTTP backend. A missing `redis-server` fails the tests:
//! it is never a silent skip.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support code"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{IO_TIMEOUT, Proxy, free_port};

/// How long a replica may take to see a change made on another one (the goal is 100 ms;
/// this bound only keeps a broken build from hanging).
pub const CONVERGE: Duration = Duration::from_secs(10);

// ============================================================================================
// Peers
// ============================================================================================

/// A `redis-server` child without persistence, killed on drop.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Self {
        for _ in 0..4 {
            if let Some(r) = Self::try_start(free_port(), &[]) {
                return r;
            }
        }
        panic!("redis-server could not bind a port in four attempts");
    }

    /// Starts on `port` (after a kill: the same address the replicas know).
    pub fn restart(port: u16) -> Self {
        Self::try_start(port, &[]).expect("redis-server could not bind its old port")
    }

    pub fn try_start(port: u16, extra: &[&str]) -> Option<Self> {
        let p = port.to_string();
        let mut args = vec![
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        args.extend_from_slice(extra);
        let spawned = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run redis-server ({e}): these tests need it; install the Debian \
                 package `redis-server` (apt-get install redis-server)"
            ),
        };
        let mut redis = Self { child, port };
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if redis.child.try_wait().unwrap().is_some() {
                return None;
            }
            // With `--requirepass` an unauthenticated PING says NOAUTH: up all the same.
            if redis
                .try_cmd(&["PING"])
                .is_some_and(|r| r == "PONG" || r.starts_with("NOAUTH"))
            {
                return Some(redis);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One command; the reply as text (`None` for a nil bulk string).
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        self.try_cmd(args)
    }

    pub fn try_cmd(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes()).ok()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        match line.as_bytes().first()? {
            b'+' | b':' | b'-' => Some(line[1..].to_owned()),
            b'$' => {
                let n: i64 = line[1..].parse().ok()?;
                if n < 0 {
                    return None;
                }
                let mut buf = vec![0; usize::try_from(n).unwrap() + 2];
                reader.read_exact(&mut buf).ok()?;
                buf.truncate(buf.len() - 2);
                Some(String::from_utf8(buf).unwrap())
            }
            _ => panic!("unexpected reply {line}"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP/1.1 backend (keep-alive) answering every request with `name`.
pub fn backend(name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut head_done = false;
                    let mut line = String::new();
                    while let Ok(n) = reader.read_line(&mut line) {
                        if n == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            head_done = true;
                            break;
                        }
                        line.clear();
                    }
                    if !head_done {
                        return;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

pub fn replica(redis: &Redis) -> Proxy {
    replica_at(&redis.url())
}

pub fn replica_at(url: &str) -> Proxy {
    let mut p = Proxy::start(&["--storage-backend", url]);
    p.wait_for_line("Loaded");
    p
}

/// A replica started with one more environment variable (`NAME=value`).
pub fn replica_with_env(var: &str, url: &str) -> Proxy {
    let mut p = Proxy::start_under(&["env", var], &["--storage-backend", url], None);
    p.wait_for_line("Loaded");
    p
}

/// Adds `/user/alice` → a backend answering `alice` through `p`'s API; returns its URL.
pub fn add_alice(p: &Proxy) -> String {
    let alice = backend("alice");
    let added = p.api(
        "POST",
        "/api/routes/user/alice",
        Some(&format!(r#"{{"target":"{alice}"}}"#)),
    );
    assert_eq!(added.status, 201);
    alice
}

/// Polls `check` until it holds; panics with `what` after [`CONVERGE`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn status(p: &Proxy, path: &str) -> u16 {
    p.public("GET", path, &[]).status
}

pub fn route_count(p: &Proxy) -> usize {
    p.routes().as_object().unwrap().len()
}

pub fn stderr_of(p: &mut Proxy) -> String {
    let _ = p.child.kill();
    let mut s = String::new();
    if let Some(mut e) = p.child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}
