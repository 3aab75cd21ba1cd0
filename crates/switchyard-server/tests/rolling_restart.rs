//! Rolling restarts with no failed request: HAProxy in front of two replicas that share
//! one `redis-server`, health-checking `/_chp_readyz`. Several clients send HTTP requests
//! without pause and hold WebSocket sessions open through HAProxy while each replica is
//! restarted in turn (SIGTERM, exit, start again on the same ports), three rounds.
//!
//! What a user would check: not one HTTP request failed; every WebSocket that was closed
//! got a close frame 1001 (going away) and reconnected through HAProxy; every route is
//! still there, on both replicas.
//!
//! Synchronisation is by events: HAProxy's own view of each replica (its stats socket says
//! DOWN once `/_chp_readyz` answers 503, UP once the restarted replica is ready), the
//! replicas' log lines, the process exits. The replicas' `--shutdown-delay` is the time a
//! load balancer gets to see the 503: the test checks that HAProxy did see it before the
//! replica closed its port.
//!
//! haproxy and redis-server are required: without them this test fails (scripts/test
//! installs them).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;
mod redis_peers;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Proxy, TOKEN, request};
use redis_peers::{Redis, candidate_port};
use tokio_tungstenite::tungstenite::{self, Message, protocol::frame::coding::CloseCode};

/// How long a stopping replica keeps serving with readiness at 503: HAProxy checks every
/// 100 ms and takes a server out after one failed check.
const SHUTDOWN_DELAY_MS: &str = "1500";
const ROUNDS: usize = 3;
const HTTP_CLIENTS: usize = 4;
const WS_CLIENTS: usize = 4;

/// One replica's ports: bound as 0 at its first start, then fixed: HAProxy's
/// configuration names them, so a restarted replica binds the same ones.
struct Replica {
    name: &'static str,
    port: u16,
    api_port: u16,
    proxy: Option<Proxy>,
}

impl Replica {
    fn start(name: &'static str, redis: &str) -> Self {
        let mut r = Self {
            name,
            port: 0,
            api_port: 0,
            proxy: None,
        };
        r.restart(redis);
        r
    }

    fn restart(&mut self, redis: &str) {
        let (port, api_port) = (self.port.to_string(), self.api_port.to_string());
        let mut cmd = common::command(
            &[
                "--ip",
                "127.0.0.1",
                "--port",
                &port,
                "--api-ip",
                "127.0.0.1",
                "--api-port",
                &api_port,
                "--storage-backend",
                redis,
                "--shutdown-delay",
                SHUTDOWN_DELAY_MS,
                "--shutdown-timeout",
                "5000",
            ],
            Some(TOKEN),
        );
        let mut p = Proxy::from_child(cmd.spawn().unwrap());
        p.wait_for_line("Loaded");
        (self.port, self.api_port) = (p.port, p.api_port);
        self.proxy = Some(p);
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().unwrap()
    }

    /// SIGTERM; returns once HAProxy has taken it out and it has exited with status 0.
    fn stop(&mut self, haproxy: &Haproxy) {
        let mut p = self.proxy.take().unwrap();
        p.send_signal("TERM");
        p.wait_for_line("Not ready");
        haproxy.wait_for(self.name, "DOWN");
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "{} closed before HAProxy saw it not ready",
            self.name
        );
        let status = p
            .wait_exit(IO_TIMEOUT)
            .unwrap_or_else(|| panic!("{} did not exit after SIGTERM", self.name));
        assert!(status.success(), "{}: {status:?}", self.name);
    }
}

/// `haproxy -db` with a stats socket, killed on drop.
struct Haproxy {
    child: Child,
    port: u16,
    socket: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, replicas: &[&Replica]) -> Self {
        let port = candidate_port();
        let socket = dir.join("haproxy.sock");
        let mut servers = String::new();
        for r in replicas {
            servers.push_str(&format!("  server {} 127.0.0.1:{} check\n", r.name, r.port));
        }
        let config = format!(
            "global\n\
             \x20 stats socket {socket} level admin\n\
             defaults\n\
             \x20 mode http\n\
             \x20 timeout connect 1s\n\
             \x20 timeout client 30s\n\
             \x20 timeout server 30s\n\
             \x20 timeout tunnel 1h\n\
             \x20 retries 3\n\
             \x20 option redispatch\n\
             frontend public\n\
             \x20 bind 127.0.0.1:{port}\n\
             \x20 default_backend replicas\n\
             backend replicas\n\
             \x20 balance roundrobin\n\
             \x20 option httpchk GET /_chp_readyz\n\
             \x20 http-check expect status 200\n\
             \x20 default-server inter 100ms fall 1 rise 1\n\
             {servers}",
            socket = socket.display()
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run haproxy ({e}): install the Debian package `haproxy`")
            });
        let h = Self {
            child,
            port,
            socket,
        };
        for r in replicas {
            h.wait_for(r.name, "UP");
        }
        h
    }

    /// The status HAProxy gives server `name` (`UP`, `DOWN`, ...), from `show stat`.
    fn status(&self, name: &str) -> Option<String> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"show stat\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines().find_map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            (fields.len() > 17 && fields[0] == "replicas" && fields[1] == name)
                .then(|| fields[17].to_owned())
        })
    }

    /// Waits (bounded) until HAProxy reports `name` as `status`.
    fn wait_for(&self, name: &str, status: &str) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let now = self.status(name);
            if now.as_deref() == Some(status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy never reported {name} {status} (last: {now:?})"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    http_ok: AtomicUsize,
    http_failed: Mutex<Vec<String>>,
    ws_messages: AtomicUsize,
    ws_going_away: AtomicUsize,
    ws_reconnects: AtomicUsize,
    ws_failed: Mutex<Vec<String>>,
}

fn http_client(port: u16, n: usize, stop: &AtomicBool, tally: &Tally) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let path = format!("/web/{n}/{i}");
        // `request` panics on an IO error: catch it as a failure.
        let got = std::panic::catch_unwind(|| request(port, "GET", &path, &[], None));
        match got {
            Ok(r) if r.status == 200 && r.body == path => {
                tally.http_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => tally
                .http_failed
                .lock()
                .unwrap()
                .push(format!("{path}: {} {}", r.status, r.body)),
            Err(_) => tally
                .http_failed
                .lock()
                .unwrap()
                .push(format!("{path}: connection failed")),
        }
    }
}

/// Holds a WebSocket session through HAProxy, one message at a time; on a close frame
/// 1001, reconnects. Anything else ends the session as a failure.
fn ws_client(port: u16, n: usize, stop: &AtomicBool, tally: &Tally) {
    let connect = || -> Result<tungstenite::WebSocket<TcpStream>, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tungstenite::client(format!("ws://127.0.0.1:{port}/ws/{n}"), stream)
            .map(|(ws, _)| ws)
            .map_err(|e| format!("handshake: {e}"))
    };
    let fail = |why: String| {
        tally
            .ws_failed
            .lock()
            .unwrap()
            .push(format!("ws {n}: {why}"))
    };
    let mut ws = match connect() {
        Ok(ws) => ws,
        Err(e) => return fail(e),
    };
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let text = format!("{n}-{i}");
        if let Err(e) = ws.send(Message::text(text.clone())) {
            return fail(format!("send: {e}"));
        }
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str() == text => {
                tally.ws_messages.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Message::Close(Some(f))) if f.code == CloseCode::Away => {
                tally.ws_going_away.fetch_add(1, Ordering::Relaxed);
                // Finish the closing handshake, then a new session through HAProxy.
                let _ = ws.flush();
                ws = match connect() {
                    Ok(ws) => ws,
                    Err(e) => return fail(format!("reconnect: {e}")),
                };
                tally.ws_reconnects.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => return fail(format!("unexpected {other:?}")),
            Err(e) => return fail(format!("read: {e}")),
        }
        // Paced: a session that talks now and then, as a notebook's does.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn rolling_restarts_behind_haproxy_lose_nothing() {
    let redis = Redis::start();
    let url = redis.url();
    let dir = common::temp_dir("rolling");
    let web = backends::Backend::echo_target();
    let (ws_port, _) = backends::ws_backend(None);

    let mut a = Replica::start("a", &url);
    let mut b = Replica::start("b", &url);
    a.proxy().add("/web", &web.url());
    a.proxy().add("/ws", &format!("http://127.0.0.1:{ws_port}"));
    let haproxy = Haproxy::start(&dir, &[&a, &b]);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for n in 0..HTTP_CLIENTS {
        let (stop, tally, port) = (stop.clone(), tally.clone(), haproxy.port);
        clients.push(std::thread::spawn(move || {
            http_client(port, n, &stop, &tally);
        }));
    }
    for n in 0..WS_CLIENTS {
        let (stop, tally, port) = (stop.clone(), tally.clone(), haproxy.port);
        clients.push(std::thread::spawn(move || {
            ws_client(port, n, &stop, &tally)
        }));
    }

    let started = Instant::now();
    let mut routes_added = 2;
    for round in 0..ROUNDS {
        for r in [&mut a, &mut b] {
            let served = tally.http_ok.load(Ordering::Relaxed);
            r.stop(&haproxy);
            r.restart(&url);
            haproxy.wait_for(r.name, "UP");
            // A route added through the restarted replica: the table stays shared.
            let key = format!("/round/{round}/{}", r.name);
            r.proxy().add(&key, &web.url());
            routes_added += 1;
            // Traffic went on meanwhile.
            let deadline = Instant::now() + IO_TIMEOUT;
            while tally.http_ok.load(Ordering::Relaxed) < served + 20 {
                assert!(Instant::now() < deadline, "no HTTP traffic served");
                std::thread::yield_now();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = started.elapsed();

    let http_failed = tally.http_failed.lock().unwrap();
    let ws_failed = tally.ws_failed.lock().unwrap();
    eprintln!(
        "{ROUNDS} rounds in {elapsed:?}: {} HTTP requests, {} WebSocket messages, \
         {} closed with 1001 and reconnected",
        tally.http_ok.load(Ordering::Relaxed),
        tally.ws_messages.load(Ordering::Relaxed),
        tally.ws_reconnects.load(Ordering::Relaxed),
    );
    assert!(
        http_failed.is_empty(),
        "failed HTTP requests: {http_failed:#?}"
    );
    assert!(ws_failed.is_empty(), "WebSocket failures: {ws_failed:#?}");
    let closed = tally.ws_going_away.load(Ordering::Relaxed);
    assert_eq!(closed, tally.ws_reconnects.load(Ordering::Relaxed));
    // Each session sits on one replica, and every replica was restarted.
    assert!(
        closed >= WS_CLIENTS,
        "only {closed} WebSocket sessions were closed by a restart"
    );
    for r in [&a, &b] {
        let routes = r.proxy().routes();
        assert_eq!(
            routes.as_object().unwrap().len(),
            routes_added,
            "{}: {routes}",
            r.name
        );
    }
    drop(haproxy);
    let _ = std::fs::remove_dir_all(&dir);
}
