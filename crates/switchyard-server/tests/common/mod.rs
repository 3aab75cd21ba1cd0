//! Shared helpers: start the real `switchyard` binary, talk HTTP/1.1 over raw TCP.
//!
//! Readiness is a log line (the binary logs `Proxy API at` only after every listener is
//! bound), never a sleep. Every blocking read has a timeout.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support code"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub const TOKEN: &str = "s3cret-token";
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `switchyard` process, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub api_port: u16,
    pub lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

/// A port that was free a moment ago. It is chosen below the kernel's ephemeral range
/// (32768 and up), so no `bind(127.0.0.1:0)` and no outgoing connection can take it before
/// the binary binds it; each test process walks its own sequence (seeded by its pid), so
/// parallel tests and test binaries do not pick the same port.
pub fn free_port() -> u16 {
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

pub fn command(args: &[&str], token: Option<&str>) -> Command {
    command_under(&[], args, token)
}

/// The binary run through `wrapper` (a program and its arguments that ends by exec'ing
/// the command line it is given, such as `prlimit --nofile=64:64 --`), so the child's pid
/// is the proxy's.
pub fn command_under(wrapper: &[&str], args: &[&str], token: Option<&str>) -> Command {
    let binary = env!("CARGO_BIN_EXE_switchyard");
    let mut cmd = match wrapper.split_first() {
        None => Command::new(binary),
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(binary);
            cmd
        }
    };
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("CONFIGPROXY_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("CONFIGPROXY_AUTH_TOKEN", t);
    }
    cmd
}

impl Proxy {
    /// Starts the proxy on free ports with the API token set, plus `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, Some(TOKEN))
    }

    /// Like [`Proxy::start`]; retries with fresh ports if a port was taken meanwhile.
    pub fn start_with(extra: &[&str], token: Option<&str>) -> Self {
        Self::start_under(&[], extra, token)
    }

    /// Like [`Proxy::start_with`], the binary run through `wrapper` (see [`command_under`]).
    pub fn start_under(wrapper: &[&str], extra: &[&str], token: Option<&str>) -> Self {
        for _ in 0..4 {
            if let Some(proxy) = Self::try_start(wrapper, extra, token) {
                return proxy;
            }
        }
        panic!("the proxy could not bind its ports in four attempts");
    }

    /// `None` when the binary exited because an address was in use.
    fn try_start(wrapper: &[&str], extra: &[&str], token: Option<&str>) -> Option<Self> {
        let (port, api_port) = (free_port(), free_port());
        let (p, a) = (port.to_string(), api_port.to_string());
        let mut args = vec![
            "--ip",
            "127.0.0.1",
            "--port",
            &p,
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            &a,
        ];
        args.extend_from_slice(extra);
        let mut child = command_under(wrapper, &args, token).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Self {
            child,
            port,
            api_port,
            lines: rx,
            log: Vec::new(),
        };
        if extra
            .windows(2)
            .any(|w| w[0] == "--log-level" && w[1] != "info" && w[1] != "debug")
        {
            // The start-up lines are not logged: poll TCP connect on both ports instead.
            let deadline = std::time::Instant::now() + IO_TIMEOUT;
            for port in [port, api_port] {
                while TcpStream::connect(("127.0.0.1", port)).is_err() {
                    if proxy.child.try_wait().unwrap().is_some() {
                        return None;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "proxy not listening on {port}"
                    );
                    std::thread::yield_now();
                }
            }
        } else {
            let in_use = "Address already in use";
            let line = proxy.wait_for_either("Proxy API at", in_use);
            if line.contains(in_use) {
                return None;
            }
        }
        Some(proxy)
    }

    /// Waits (bounded) for a stdout line containing `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_either(needle, needle)
    }

    /// Waits (bounded) for a stdout line containing `a` or `b`; returns it.
    pub fn wait_for_either(&mut self, a: &str, b: &str) -> String {
        let needle = a;
        if let Some(l) = self.log.iter().find(|l| l.contains(a) || l.contains(b)) {
            return l.clone();
        }
        loop {
            match self.lines.recv_timeout(IO_TIMEOUT) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(a) || line.contains(b) {
                        return line;
                    }
                }
                Err(e) => {
                    let mut stderr = String::new();
                    if let Some(mut err) = self.child.stderr.take() {
                        let _ = self.child.kill();
                        let _ = err.read_to_string(&mut stderr);
                    }
                    panic!(
                        "no line {needle:?} ({e}); log: {:#?}; stderr: {stderr}",
                        self.log
                    );
                }
            }
        }
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        request(
            self.api_port,
            method,
            path,
            &[("Authorization", &format!("token {TOKEN}"))],
            body,
        )
    }

    pub fn public(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, method, path, headers, None)
    }

    /// `GET /api/routes` parsed.
    pub fn routes(&self) -> serde_json::Value {
        let r = self.api("GET", "/api/routes", None);
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    pub fn add(&self, path: &str, target: &str) {
        let r = self.api(
            "POST",
            &format!("/api/routes{path}"),
            Some(&format!(r#"{{"target":"{target}"}}"#)),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        self.send_signal(sig);
        self.child.wait().unwrap()
    }

    /// Sends a signal and returns at once.
    pub fn send_signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded by `limit`) for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How many file descriptors the process has open (Linux `/proc`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    // The server may answer (413) and close before a large body is fully written.
    let written = stream.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    assert!(
        !raw.is_empty(),
        "no response: write {written:?}, read {read:?}"
    );
    parse_response(&raw)
}

/// A raw request (bytes as given) on a fresh connection; returns everything read.
pub fn raw(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Runs the binary to completion (for flag errors, --help, --version).
pub fn run_to_exit(args: &[&str]) -> std::process::Output {
    let child = command(args, None).spawn().unwrap();
    child.wait_with_output().unwrap()
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
