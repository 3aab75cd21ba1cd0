//! Peers for the Redis store's tests: a real `redis-server` child (the Debian package;
//! the test script installs it) on a UNIX socket (and a TCP port where a test needs one)
//! without persistence, replicas of the real
//! binary on it, and a keep-alive HTTP backend. A missing `redis-server` fails the tests:
//! it is never a silent skip.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support code"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{IO_TIMEOUT, Proxy, temp_dir};

/// How long a replica may take to see a change made on another one (the goal is 100 ms;
/// this bound only keeps a broken build from hanging).
pub const CONVERGE: Duration = Duration::from_secs(10);

// ============================================================================================
// Peers
// ============================================================================================

/// A `redis-server` child without persistence, killed on drop. It always listens on a
/// UNIX socket of its own (the tests' own commands use it) and, when started with
/// [`Redis::start_tcp`], on a TCP port too.
pub struct Redis {
    pub child: Child,
    pub socket: PathBuf,
    /// Its TCP port: plain, or TLS only (see [`Redis::start_tls`]).
    pub port: Option<u16>,
    tls: bool,
    extra: Vec<String>,
}

impl Redis {
    /// On a UNIX socket only (`--port 0` turns TCP off), so no port is chosen at all.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`Redis::start`], with more `redis-server` flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        Self::try_start(socket_path(), None, false, extra).expect("redis-server did not start")
    }

    /// Also on TCP, for the tests of `redis://host:port` and `rediss://` URLs (Redis has
    /// no TLS on a UNIX socket). `redis-server` must be told its port in advance: `--port
    /// 0` turns TCP off rather than letting the kernel pick, and it cannot take a socket
    /// that the test bound. So a port that was free a moment ago is tried, and another
    /// one if `redis-server` cannot bind it (it exits: another process took the port).
    /// Readiness is a PING on its own UNIX socket, which it creates only after binding
    /// the TCP port, so another test's `redis-server` on the same port is never mistaken
    /// for this one.
    pub fn start_tcp(extra: &[&str]) -> Self {
        Self::start_on_port(false, extra)
    }

    /// Like [`Redis::start_tcp`], its TCP port speaking TLS only (`--tls-port`); `extra`
    /// gives the certificate flags.
    pub fn start_tls(extra: &[&str]) -> Self {
        Self::start_on_port(true, extra)
    }

    fn start_on_port(tls: bool, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        for _ in 0..8 {
            let port = Some(candidate_port());
            if let Some(r) = Self::try_start(socket_path(), port, tls, extra.clone()) {
                return r;
            }
        }
        panic!("redis-server could not bind a port in eight attempts");
    }

    /// Starts again on the same socket and port (after a kill: the address the replicas
    /// know) with the same flags.
    pub fn restart(&self) -> Self {
        Self::try_start(self.socket.clone(), self.port, self.tls, self.extra.clone())
            .expect("redis-server could not start again on its old address")
    }

    fn try_start(
        socket: PathBuf,
        port: Option<u16>,
        tls: bool,
        extra: Vec<String>,
    ) -> Option<Self> {
        let port_arg = port.unwrap_or(0).to_string();
        let socket_arg = socket.to_str().unwrap().to_owned();
        let (plain, tls_port) = if tls {
            ("0", port_arg.as_str())
        } else {
            (port_arg.as_str(), "0")
        };
        let mut args = vec![
            "--port",
            plain,
            "--tls-port",
            tls_port,
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            &socket_arg,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        args.extend(extra.iter().map(String::as_str));
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
        let mut redis = Self {
            child,
            socket,
            port,
            tls,
            extra,
        };
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

    /// The URL of its UNIX socket.
    pub fn url(&self) -> String {
        format!("unix://{}?db=0", self.socket.display())
    }

    /// The URL of its TCP port (started with [`Redis::start_tcp`] or, `rediss://` to the
    /// name its certificate has, [`Redis::start_tls`]).
    pub fn tcp_url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}/0", self.tcp_port())
        } else {
            format!("redis://127.0.0.1:{}/0", self.tcp_port())
        }
    }

    pub fn tcp_port(&self) -> u16 {
        self.port.expect("this redis-server has no TCP port")
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
        let mut stream = UnixStream::connect(&self.socket).ok()?;
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

/// A fresh directory for one `redis-server`'s socket.
fn socket_path() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    temp_dir(&format!("redis-{n}")).join("redis.sock")
}

/// A port that was free a moment ago, for a peer that must be told its port before it
/// starts (redis-server over TCP, Sentinel, HAProxy's frontend); everything else binds
/// port 0. It is chosen below the
/// kernel's ephemeral range (32768 and up), so no `bind(127.0.0.1:0)` and no outgoing
/// connection takes it meanwhile; each test process walks its own sequence (seeded by its
/// pid), so parallel tests and test binaries seldom try the same port.
pub fn candidate_port() -> u16 {
    const BASE: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(BASE + (seed + n) % SPAN).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {BASE}..{}", BASE + SPAN);
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
