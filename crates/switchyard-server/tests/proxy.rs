//! Proxying through the real binary as CHP proxies: real backends on 127.0.0.1:0 in this
//! process (a raw HTTP/1.1 recorder, a streaming peer, a hanging peer, a tungstenite
//! WebSocket echo server) and a raw-TCP client, so every byte on both sides is visible.
//!
//! Synchronisation is by events only: a log line, a response, a frame, a recorded request.
//! "Not bumped" checks for `last_activity` (millisecond precision) first wait until the
//! clock has moved past the current value, so a bump would be visible.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::{IO_TIMEOUT, Proxy, free_port, request, temp_dir};
use tokio_tungstenite::tungstenite::{self, Message};

/// A target nobody listens on (port 1 is never bound by these tests).
const DEAD: &str = "http://127.0.0.1:1";

// ============================================================================================
// Backends
// ============================================================================================

/// One request as a backend received it: the raw request target, headers in order.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.first().copied()
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Reply = Arc<dyn Fn(&Seen) -> String + Send + Sync>;

/// A raw HTTP/1.1 backend (keep-alive, Content-Length and chunked request bodies) that
/// records every request and answers with `reply`.
struct Backend {
    port: u16,
    seen: mpsc::Receiver<Seen>,
    accepted: Arc<AtomicUsize>,
}

impl Backend {
    fn start(reply: impl Fn(&Seen) -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = mpsc::channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let reply: Reply = Arc::new(reply);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (tx, reply) = (tx.clone(), reply.clone());
                std::thread::spawn(move || serve_connection(stream, &tx, &reply));
            }
        });
        Self {
            port,
            seen,
            accepted,
        }
    }

    /// Answers every request `200 OK` with its request target as the body.
    fn echo_target() -> Self {
        Self::start(|s| respond("200 OK", &[], &s.target))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next recorded request (bounded wait).
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(IO_TIMEOUT)
            .expect("backend received no request (safety-net timeout)")
    }
}

fn serve_connection(stream: TcpStream, tx: &mpsc::Sender<Seen>, reply: &Reply) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(seen) = read_request(&mut reader) {
        let answer = reply(&seen);
        let _ = tx.send(seen);
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let headers = read_headers(reader)?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(reader)?
    } else {
        let n = find("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; n];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some(Seen {
        method,
        target,
        headers,
        body,
    })
}

fn read_headers(reader: &mut impl BufRead) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some(headers);
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; n + 2];
        if n == 0 {
            // Trailers (none expected) end with an empty line.
            read_headers(reader)?;
            return Some(body);
        }
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..n]);
    }
}

/// A complete HTTP/1.1 response with a Content-Length.
fn respond(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// An HTTPS backend with a self-signed certificate (made by rcgen now) that answers each
/// request `200 OK` with its request target.
fn https_backend() -> u16 {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
                while let Some(seen) = read_request(&mut tls) {
                    let answer = respond("200 OK", &[], &seen.target);
                    if tls.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    let _ = tls.get_mut().flush();
                }
            });
        }
    });
    port
}

/// A backend that answers with a chunked body whose chunks the test releases one by one
/// (an empty string ends the body).
fn streaming_backend() -> (u16, mpsc::Sender<&'static str>, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (chunks_tx, chunks) = mpsc::channel::<&'static str>();
    let (head_tx, head_seen) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        read_request(&mut BufReader::new(stream)).unwrap();
        head_tx.send(()).unwrap();
        writer
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        while let Ok(chunk) = chunks.recv_timeout(IO_TIMEOUT) {
            let _ = write!(writer, "{:x}\r\n{chunk}\r\n", chunk.len());
            if chunk.is_empty() {
                return;
            }
        }
    });
    (port, chunks_tx, head_seen)
}

/// A backend that accepts connections, reads the request and never answers.
fn hanging_backend() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            if read_request(&mut reader).is_some() {
                let _ = tx.send(());
            }
            held.push(reader);
        }
    });
    (port, rx)
}

/// A WebSocket echo server (tungstenite). Reports each handshake's headers; sends `hello`
/// first if given; echoes text and binary messages.
#[allow(
    clippy::result_large_err,
    reason = "tungstenite's handshake callback signature"
)]
fn ws_backend(hello: Option<&'static str>) -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let record =
                    |req: &tungstenite::handshake::server::Request,
                     res: tungstenite::handshake::server::Response| {
                        let _ = tx.send(Seen {
                            method: req.method().to_string(),
                            target: req.uri().to_string(),
                            headers: req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                                .collect(),
                            body: Vec::new(),
                        });
                        Ok(res)
                    };
                let Ok(mut ws) = tungstenite::accept_hdr(stream, record) else {
                    return;
                };
                if let Some(h) = hello {
                    ws.send(Message::text(h)).unwrap();
                }
                while let Ok(m) = ws.read() {
                    if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

// ============================================================================================
// Client
// ============================================================================================

/// A keep-alive HTTP/1.1 client connection to the proxy.
struct Client {
    reader: BufReader<TcpStream>,
    port: u16,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Self {
            reader: BufReader::new(stream),
            port,
        }
    }

    /// Sends a request; `Host: 127.0.0.1:<port>` unless `headers` has a Host.
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
    }

    /// Reads a response head.
    fn head(&mut self) -> (u16, HashMap<String, String>) {
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status:?}"));
        let headers = read_headers(&mut self.reader)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        (code, headers)
    }

    /// Reads one chunk of a chunked body (`None` at the last chunk).
    fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        self.reader.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            read_headers(&mut self.reader).unwrap();
            return None;
        }
        let mut chunk = vec![0; n + 2];
        self.reader.read_exact(&mut chunk).unwrap();
        chunk.truncate(n);
        Some(String::from_utf8(chunk).unwrap())
    }

    /// Reads a whole response (a request without a body to a HEAD is not used here).
    fn response(&mut self) -> common::Response {
        let (status, headers) = self.head();
        let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            let mut body = String::new();
            while let Some(c) = self.chunk() {
                body.push_str(&c);
            }
            body
        } else if let Some(n) = headers.get("content-length") {
            let mut body = vec![0; n.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            String::from_utf8(body).unwrap()
        } else if status == 204 || status == 304 || status == 101 {
            String::new()
        } else {
            let mut body = String::new();
            self.reader.read_to_string(&mut body).unwrap();
            body
        };
        common::Response {
            status,
            headers,
            body,
        }
    }
}

/// One GET on a fresh keep-alive connection.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> common::Response {
    let mut c = Client::connect(port);
    c.send("GET", path, headers, "");
    c.response()
}

/// A WebSocket client through the proxy (tungstenite, blocking, bounded reads).
fn ws_connect(
    port: u16,
    path: &str,
) -> (
    tungstenite::WebSocket<TcpStream>,
    tungstenite::handshake::client::Response,
) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake through the proxy failed: {e}"))
}

/// A raw WebSocket upgrade request; returns everything read until the proxy closes.
fn raw_upgrade(port: u16, path: &str) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

// ============================================================================================
// last_activity helpers
// ============================================================================================

fn last_activity(p: &Proxy, key: &str) -> String {
    p.routes()[key]["last_activity"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_activity for {key}"))
        .to_owned()
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn ms_of(ts: &str) -> i64 {
    assert_eq!(ts.len(), 24, "{ts}");
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (((days * 24 + n(11..13)) * 60 + n(14..16)) * 60 + n(17..19)) * 1000 + n(20..23)
}

/// Waits until the wall clock is past `ts`, so a bump after this is a larger value.
fn clock_past(ts: &str) {
    let target = ms_of(ts);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        if i64::try_from(now.as_millis()).unwrap() > target {
            return;
        }
        assert!(Instant::now() < deadline, "clock never passed {ts}");
        std::thread::yield_now();
    }
}

// ============================================================================================
// Upstream URL
// ============================================================================================

/// The raw path and query reach the backend byte for byte (escapes kept).
#[test]
fn raw_path_and_query_are_kept() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/user/foo", &b.url());
    for path in [
        "/user/foo/bar?x=1&y=%20",
        "/user/foo/a%2Fb%40c?q=%2F&q=2",
        "/user/foo",
        "/user/foo/",
    ] {
        let r = get(p.port, path, &[]);
        assert_eq!((r.status, r.body.as_str()), (200, path));
        assert_eq!(b.next().target, path);
    }
}

/// The target's path is prepended and its query merged (target's first).
#[test]
fn target_path_is_prepended() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/prefixed", &format!("{}/base/path", b.url()));
    p.add("/tq", &format!("{}/t?tq=1", b.url()));
    assert_eq!(
        get(p.port, "/prefixed/rest?q=1", &[]).body,
        "/base/path/prefixed/rest?q=1"
    );
    assert_eq!(get(p.port, "/tq/x?a=b", &[]).body, "/t/tq/x?tq=1&a=b");
}

/// `--no-prepend-path` forwards the request path alone.
#[test]
fn no_prepend_path() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--no-prepend-path"]);
    p.add("/bar", &format!("{}/foo", b.url()));
    assert_eq!(
        get(p.port, "/bar/rest/of/it?q=1", &[]).body,
        "/bar/rest/of/it?q=1"
    );
}

/// `--no-include-prefix` strips the matched route prefix, with and without
/// `--no-prepend-path`; an escaped prefix is stripped by segments (CHP cut characters).
#[test]
fn no_include_prefix() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--no-include-prefix"]);
    p.add("/bar", &format!("{}/foo", b.url()));
    p.add("/b%40r", &format!("{}/foo", b.url()));
    assert_eq!(
        get(p.port, "/bar/rest/of/it?q=1", &[]).body,
        "/foo/rest/of/it?q=1"
    );
    assert_eq!(get(p.port, "/b%40r/x", &[]).body, "/foo/x");
    // A key of two segments loses both.
    p.add("/user/alice", &format!("{}/foo", b.url()));
    assert_eq!(get(p.port, "/user/alice/lab?x", &[]).body, "/foo/lab?x");
    let both = Proxy::start(&["--no-include-prefix", "--no-prepend-path"]);
    both.add("/bar", &format!("{}/foo", b.url()));
    assert_eq!(
        get(both.port, "/bar/rest/of/it?q=1", &[]).body,
        "/rest/of/it?q=1"
    );
}

/// With host routing, `--no-include-prefix` strips the path
/// segments of the key, not the host (CHP sent `/efgh/ij` here).
#[test]
fn no_include_prefix_with_host_routing() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--host-routing", "--no-include-prefix"]);
    p.add("/h.io/abcdefgh", &b.url());
    p.add("/h.io", &format!("{}/root", b.url()));
    let host = [("Host", "h.io:8000")];
    assert_eq!(get(p.port, "/abcdefgh/ij?k=1", &host).body, "/ij?k=1");
    assert_eq!(get(p.port, "/other/x", &host).body, "/root/other/x");
}

// ============================================================================================
// Request headers
// ============================================================================================

/// X-Forwarded-For/-Port/-Proto are appended with `,`; X-Forwarded-Host is
/// kept if present, else the Host header; Host itself is unchanged.
#[test]
fn x_forwarded_headers_are_appended() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    get(p.port, "/a", &[("Host", "front.example:8123")]);
    let s = b.next();
    assert_eq!(s.header("host"), Some("front.example:8123"));
    assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(s.header("x-forwarded-port"), Some("8123"));
    assert_eq!(s.header("x-forwarded-proto"), Some("http"));
    assert_eq!(s.header("x-forwarded-host"), Some("front.example:8123"));

    get(
        p.port,
        "/b",
        &[
            ("Host", "front.example"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "outer.example"),
        ],
    );
    let s = b.next();
    assert_eq!(s.header("x-forwarded-for"), Some("1.2.3.4,127.0.0.1"));
    assert_eq!(s.header("x-forwarded-port"), Some("443,80"));
    assert_eq!(s.header("x-forwarded-proto"), Some("https,http"));
    assert_eq!(s.header("x-forwarded-host"), Some("outer.example"));
}

/// `--no-x-forward` adds no X-Forwarded-* header (client ones pass through).
#[test]
fn no_x_forward() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--no-x-forward"]);
    p.add("/", &b.url());
    get(p.port, "/", &[("X-Forwarded-For", "1.2.3.4")]);
    let s = b.next();
    assert_eq!(s.header("x-forwarded-for"), Some("1.2.3.4"));
    for name in ["x-forwarded-port", "x-forwarded-proto", "x-forwarded-host"] {
        assert_eq!(s.header(name), None, "{name}");
    }
}

/// Host is kept by default; `--change-origin` sets the target's host:port.
#[test]
fn host_kept_unless_change_origin() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    get(p.port, "/", &[("Host", "front.example")]);
    assert_eq!(b.next().header("host"), Some("front.example"));

    let mut changed = Proxy::start(&["--change-origin"]);
    changed.wait_for_line("Change Origin of host headers enabled.");
    changed.add("/", &b.url());
    get(changed.port, "/", &[("Host", "front.example")]);
    let expected = format!("127.0.0.1:{}", b.port);
    assert_eq!(b.next().header("host"), Some(expected.as_str()));
}

/// `--custom-header` adds headers and overrides same-named client headers.
#[test]
fn custom_headers_are_added_and_override() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[
        "--custom-header",
        " X-Custom : one:two ",
        "--custom-header",
        "X-Other: 3",
    ]);
    p.add("/", &b.url());
    get(p.port, "/", &[("X-Custom", "from-client")]);
    let s = b.next();
    assert_eq!(s.all("x-custom"), ["one:two"]);
    assert_eq!(s.header("x-other"), Some("3"));
}

// ============================================================================================
// Response
// ============================================================================================

/// Bodies are streamed: the client reads the first chunk while the backend
/// has not sent the second; a 200 kB request body arrives intact.
#[test]
fn bodies_are_streamed() {
    let (port, chunks, head_seen) = streaming_backend();
    let p = Proxy::start(&[]);
    p.add("/stream", &format!("http://127.0.0.1:{port}"));
    let mut c = Client::connect(p.port);
    c.send("GET", "/stream", &[], "");
    head_seen.recv_timeout(IO_TIMEOUT).unwrap();
    chunks.send("first").unwrap();
    let (status, headers) = c.head();
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );
    assert_eq!(c.chunk().as_deref(), Some("first"));
    chunks.send("second").unwrap();
    assert_eq!(c.chunk().as_deref(), Some("second"));
    chunks.send("").unwrap();
    assert_eq!(c.chunk(), None);

    let b = Backend::start(|s| respond("200 OK", &[], &s.body.len().to_string()));
    p.add("/upload", &b.url());
    let big = "x".repeat(200_000);
    let mut c = Client::connect(p.port);
    c.send("POST", "/upload", &[], &big);
    assert_eq!(c.response().body, "200000");
    let s = b.next();
    assert_eq!((s.method.as_str(), s.body.len()), ("POST", big.len()));
}

/// Keep-alive on both sides: three requests on one client connection
/// use one upstream connection, and no `Connection: close` is sent either way.
#[test]
fn keep_alive_on_both_sides() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    let mut c = Client::connect(p.port);
    for i in 0..3 {
        let path = format!("/k{i}");
        c.send("GET", &path, &[], "");
        let r = c.response();
        assert_eq!((r.status, r.body.as_str()), (200, path.as_str()));
        assert_ne!(r.header("connection"), Some("close"));
        let s = b.next();
        assert_eq!(s.target, path);
        assert_eq!(s.header("connection"), None);
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

/// Location is rewritten only with `--auto-rewrite` / `--protocol-rewrite`,
/// and only when it names the target's host. `--auto-rewrite` makes it relative
/// (no open redirect): CHP copied the client's Host in, so `Host: evil.example`
/// got `Location: http://evil.example:<target port>/elsewhere`. With `--public-host`, a
/// listed Host (compared without case) is named, with `--protocol-rewrite`'s scheme.
#[test]
fn location_rewriting() {
    let b = Backend::start(|s| {
        let location = if s.target == "/same" {
            format!(
                "http://127.0.0.1:{}/elsewhere",
                s.header("x-backend-port").unwrap()
            )
        } else {
            "http://other.example/elsewhere".to_owned()
        };
        respond("302 Found", &[("Location", &location)], "")
    });
    let bport = b.port.to_string();
    let header = format!("X-Backend-Port: {bport}");
    // (flags, Host sent or None for the client's own `127.0.0.1:<port>`, expected Location)
    let cases: [(&[&str], Option<&str>, &str); 7] = [
        (&[], None, "http://127.0.0.1:{B}/elsewhere"),
        (&["--auto-rewrite"], None, "/elsewhere"),
        (
            &["--protocol-rewrite", "https"],
            None,
            "https://127.0.0.1:{B}/elsewhere",
        ),
        (
            &["--auto-rewrite", "--protocol-rewrite", "https"],
            None,
            "/elsewhere",
        ),
        // --public-host: a listed Host is named in the Location, others get a relative one.
        (
            &["--auto-rewrite", "--public-host", "hub.example"],
            Some("HUB.example"),
            "http://HUB.example/elsewhere",
        ),
        (
            &[
                "--auto-rewrite",
                "--public-host",
                "hub.example:8443",
                "--public-host",
                "hub.example",
                "--protocol-rewrite",
                "https",
            ],
            Some("hub.example:8443"),
            "https://hub.example:8443/elsewhere",
        ),
        (
            &["--auto-rewrite", "--public-host", "hub.example"],
            None,
            "/elsewhere",
        ),
    ];
    for (flags, host, expected) in cases {
        let mut args = vec!["--custom-header", &header];
        args.extend_from_slice(flags);
        let p = Proxy::start(&args);
        p.add("/", &b.url());
        let expected = expected.replace("{B}", &bport);
        let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
        let r = get(p.port, "/same", &headers);
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some(expected.as_str()), "{flags:?}");
        if flags.contains(&"--auto-rewrite") {
            let r = get(p.port, "/same", &[("Host", "evil.example")]);
            assert_eq!(r.header("location"), Some("/elsewhere"), "{flags:?}");
        }
        let r = get(p.port, "/other", &[]);
        assert_eq!(
            r.header("location"),
            Some("http://other.example/elsewhere"),
            "{flags:?}"
        );
    }
}

// ============================================================================================
// WebSockets
// ============================================================================================

/// A WebSocket through the proxy echoes; the upgrade carries X-Forwarded-For/
/// -Port/-Proto (`ws`) but no X-Forwarded-Host, plus custom headers; the path is kept.
#[test]
fn websocket_echo_with_forwarded_headers() {
    let (port, handshakes) = ws_backend(None);
    let p = Proxy::start(&["--custom-header", "X-Custom: ws"]);
    p.add("/user/ws", &format!("http://127.0.0.1:{port}"));
    let (mut ws, res) = ws_connect(p.port, "/user/ws/api/kernels?x=%20");
    assert_eq!(res.status(), 101);
    let seen = handshakes.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(seen.target, "/user/ws/api/kernels?x=%20");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let proxy_port = p.port.to_string();
    assert_eq!(seen.header("x-forwarded-port"), Some(proxy_port.as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("ws"));
    assert_eq!(seen.header("x-forwarded-host"), None);
    assert_eq!(seen.header("x-custom"), Some("ws"));
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).unwrap();
}

/// A WebSocket to a backend that does not upgrade gets the backend's answer,
/// then the connection is closed.
#[test]
fn websocket_to_plain_backend_gets_its_answer_and_is_closed() {
    let b = Backend::start(|_| respond("200 OK", &[], "plain"));
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    let out = raw_upgrade(p.port, "/ws").expect("the proxy must close the connection");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("plain"), "{out}");
    assert_eq!(b.next().header("upgrade"), Some("websocket"));
}

/// A WebSocket with no route gets a bare 404 and is closed (CHP left
/// the socket open); a dead upstream gets a bare 503 and a close.
#[test]
fn websocket_errors_are_answered_and_closed() {
    let p = Proxy::start(&[]);
    let out = raw_upgrade(p.port, "/nope").expect("the proxy must close after the 404");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(
        !out.contains("<html"),
        "no error page for WebSockets: {out}"
    );
    p.add("/", DEAD);
    let out = raw_upgrade(p.port, "/dead").expect("the proxy must close after the 503");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
}

// ============================================================================================
// last_activity
// ============================================================================================

/// A request body counts as activity, even when the backend answers 404.
#[test]
fn last_activity_bumped_by_request_body() {
    let b = Backend::start(|_| respond("404 Not Found", &[], ""));
    let p = Proxy::start(&[]);
    p.add("/r", &b.url());
    let before = last_activity(&p, "/r");
    clock_past(&before);
    let mut c = Client::connect(p.port);
    c.send("POST", "/r/x", &[], "some body");
    assert_eq!(c.response().status, 404);
    assert!(last_activity(&p, "/r") > before);
}

/// A response with status < 300 counts as activity.
#[test]
fn last_activity_bumped_by_2xx_response() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/r", &b.url());
    let before = last_activity(&p, "/r");
    clock_past(&before);
    assert_eq!(get(p.port, "/r/x", &[]).status, 200);
    assert!(last_activity(&p, "/r") > before);
}

/// 3xx and 4xx answers without a request body, a 503 (dead upstream) and a 404
/// (no route) leave last_activity alone.
#[test]
fn last_activity_not_bumped_by_errors_or_redirects() {
    let b = Backend::start(|s| match s.target.as_str() {
        "/r/redirect" => respond("302 Found", &[("Location", "/elsewhere")], ""),
        _ => respond("404 Not Found", &[], ""),
    });
    let p = Proxy::start(&[]);
    p.add("/r", &b.url());
    p.add("/dead", DEAD);
    let (r, dead) = (last_activity(&p, "/r"), last_activity(&p, "/dead"));
    clock_past(&r.clone().max(dead.clone()));
    assert_eq!(get(p.port, "/r/redirect", &[]).status, 302);
    assert_eq!(get(p.port, "/r/missing", &[]).status, 404);
    assert_eq!(get(p.port, "/dead/x", &[]).status, 503);
    assert_eq!(get(p.port, "/unrouted", &[]).status, 404);
    assert_eq!(last_activity(&p, "/r"), r);
    assert_eq!(last_activity(&p, "/dead"), dead);
}

/// On a WebSocket, the handshake and server→client frames do not
/// count; every client→server frame does.
#[test]
fn last_activity_and_websocket_frames() {
    let (port, _handshakes) = ws_backend(Some("server says hi"));
    let p = Proxy::start(&[]);
    p.add("/ws", &format!("http://127.0.0.1:{port}"));
    let before = last_activity(&p, "/ws");
    clock_past(&before);
    let (mut ws, _) = ws_connect(p.port, "/ws");
    assert_eq!(ws.read().unwrap(), Message::text("server says hi"));
    assert_eq!(last_activity(&p, "/ws"), before, "handshake + server frame");
    ws.send(Message::text("client says hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("client says hi"));
    let after = last_activity(&p, "/ws");
    assert!(after > before, "client frame: {after} vs {before}");
    ws.close(None).unwrap();
}

// ============================================================================================
// Error responses
// ============================================================================================

/// Built-in pages: 404 for no route, 503 for a dead upstream (text/html).
#[test]
fn builtin_error_pages() {
    let p = Proxy::start(&[]);
    let r = get(p.port, "/nope", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(r.body.contains("404: Not Found"), "{}", r.body);
    p.add("/dead", DEAD);
    let r = get(p.port, "/dead/x", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(r.body.contains("503: Proxy Target Missing"), "{}", r.body);
}

/// A request body the client frames wrongly (a chunk size that is not hex, one too large to
/// count) is the client's error: 400, as Node answers under CHP, not a 503 blaming the
/// target; the proxy goes on serving.
#[test]
fn malformed_request_body_is_400() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/up", &b.url());
    for chunk in ["zz", "ffffffffffffffffffff"] {
        let sent = format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}\r\nhello\r\n0\r\n\r\n"
        );
        let answer = common::raw(p.port, sent.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400 "), "{chunk}: {answer}");
    }
    assert_eq!(get(p.port, "/up/after", &[]).body, "/up/after");
}

/// An upstream answer with both `Transfer-Encoding: chunked` and `Content-Length` cannot
/// be relayed with the length and the decoded body, which disagree (a 5-byte body cut to 1
/// byte, or a client left waiting for bytes that never come). It is refused as a malformed
/// answer (503, as CHP), and the next request gets a clean answer.
#[test]
fn upstream_answer_framed_both_ways_is_refused() {
    let b = Backend::start(|s| {
        if s.target.ends_with("/both") {
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
                .to_owned()
        } else {
            respond("200 OK", &[], "fine")
        }
    });
    let p = Proxy::start(&[]);
    p.add("/o", &b.url());
    let r = get(p.port, "/o/both", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("503"), "{}", r.body);
    assert_eq!(get(p.port, "/o/next", &[]).body, "fine");
}

/// `--proxy-timeout` with a hanging upstream is a 503.
#[test]
fn proxy_timeout_is_503() {
    let (port, requested) = hanging_backend();
    let p = Proxy::start(&["--proxy-timeout", "200"]);
    p.add("/slow", &format!("http://127.0.0.1:{port}"));
    let r = get(p.port, "/slow", &[]);
    requested.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.contains("503"), "{}", r.body);
}

/// `--error-target` is asked `GET <target>/<code>?url=<escaped url>`; the client
/// gets the original code with the error server's body and Content-Type.
#[test]
fn error_target_serves_the_body_with_the_original_code() {
    let errors = Backend::start(|s| {
        respond(
            "200 OK",
            &[("Content-Type", "text/x-custom"), ("X-Not-Copied", "1")],
            &format!("custom page for {}", s.target),
        )
    });
    let base = format!("{}/errs", errors.url());
    let p = Proxy::start(&["--error-target", &base]);
    let r = get(p.port, "/foo/bar?a=b&c=%20d", &[]);
    let expected = "/errs/404?url=%2Ffoo%2Fbar%3Fa%3Db%26c%3D%2520d";
    assert_eq!(errors.next().target, expected);
    assert_eq!(r.status, 404);
    assert_eq!(r.body, format!("custom page for {expected}"));
    assert_eq!(r.header("content-type"), Some("text/x-custom"));
    assert_eq!(r.header("x-not-copied"), None);

    p.add("/dead", DEAD);
    let r = get(p.port, "/dead/x", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(errors.next().target, "/errs/503?url=%2Fdead%2Fx");
}

/// `--error-path`: `<code>.html`, else `error.html`, else the plain text.
#[test]
fn error_path_files() {
    let dir = temp_dir("error-path");
    std::fs::write(dir.join("404.html"), "my 404 page").unwrap();
    std::fs::write(dir.join("error.html"), "my fallback page").unwrap();
    let p = Proxy::start(&["--error-path", dir.to_str().unwrap()]);
    let r = get(p.port, "/nope", &[]);
    assert_eq!((r.status, r.body.as_str()), (404, "my 404 page"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    p.add("/dead", DEAD);
    let r = get(p.port, "/dead", &[]);
    assert_eq!((r.status, r.body.as_str()), (503, "my fallback page"));

    let empty = temp_dir("error-path-empty");
    let p = Proxy::start(&["--error-path", empty.to_str().unwrap()]);
    let r = get(p.port, "/nope", &[]);
    assert_eq!((r.status, r.body.as_str()), (404, "Not Found"));
    assert_eq!(r.header("content-type"), None);
}

// ============================================================================================
// Health check and metrics
// ============================================================================================

/// `/_chp_healthz` answers before routing (never reaches the `/` route, any
/// method); with a query string it is a normal proxied request.
#[test]
fn health_check_is_not_proxied() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    for method in ["GET", "POST"] {
        let r = request(p.port, method, "/_chp_healthz", &[], None);
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"OK"}"#));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = get(p.port, "/_chp_healthz?x=1", &[]);
    assert_eq!(r.body, "/_chp_healthz?x=1");
    // The first request the backend saw is the one with the query.
    assert_eq!(b.next().target, "/_chp_healthz?x=1");
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The counters move with proxied traffic: `requests_web`, `requests_ws`,
/// `requests_proxy{status}`, `find_target_for_req` and `last_activity_updating`.
#[test]
fn metrics_count_proxied_requests() {
    let b = Backend::echo_target();
    let (ws_port, _h) = ws_backend(None);
    let metrics_port = free_port().to_string();
    let p = Proxy::start(&["--metrics-ip", "127.0.0.1", "--metrics-port", &metrics_port]);
    let metrics_port: u16 = metrics_port.parse().unwrap();
    let scrape = || request(metrics_port, "GET", "/metrics", &[], None).body;
    let m0 = scrape();
    p.add("/", &b.url());
    p.add("/ws", &format!("http://127.0.0.1:{ws_port}"));
    p.add("/dead", DEAD);
    assert_eq!(get(p.port, "/a", &[]).status, 200);
    assert_eq!(get(p.port, "/b", &[]).status, 200);
    assert_eq!(get(p.port, "/dead", &[]).status, 503);
    get(p.port, "/_chp_healthz", &[]);
    let (mut ws, _) = ws_connect(p.port, "/ws");
    ws.send(Message::text("x")).unwrap();
    ws.read().unwrap();
    ws.close(None).unwrap();
    let m1 = scrape();
    let delta = |name: &str| metric(&m1, name) - metric(&m0, name);
    assert_eq!(delta("requests_web"), 3.0, "{m1}");
    assert_eq!(delta("requests_ws"), 1.0, "{m1}");
    assert_eq!(delta(r#"requests_proxy{status="200"}"#), 2.0, "{m1}");
    assert_eq!(delta(r#"requests_proxy{status="503"}"#), 1.0, "{m1}");
    assert_eq!(delta("find_target_for_req_count"), 4.0, "{m1}");
    assert!(delta("last_activity_updating_count") >= 3.0, "{m1}");
}

/// `--insecure` reaches an https target with a self-signed
/// certificate (CHP 5.3.0 ignored the flag and answered 503); without it, 503.
#[test]
fn insecure_reaches_self_signed_https_targets() {
    let target = format!("https://127.0.0.1:{}", https_backend());
    let strict = Proxy::start(&[]);
    strict.add("/", &target);
    assert_eq!(get(strict.port, "/x", &[]).status, 503);
    let p = Proxy::start(&["--insecure"]);
    p.add("/", &target);
    let r = get(p.port, "/x?y=1", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "/x?y=1"));
}

// ============================================================================================
// Beyond CHP
// ============================================================================================

/// Not in CHP (HTTP/1.1 only there): the public port also speaks HTTP/2 (prior
/// knowledge in clear text); the backend still gets HTTP/1.1 with the `:authority` as Host
/// and the usual X-Forwarded-* headers, and the route's last_activity moves.
#[test]
fn http2_on_the_public_port() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/h2", &b.url());
    let before = last_activity(&p, "/h2");
    clock_past(&before);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (version, status, body) = rt.block_on(async {
        tokio::time::timeout(IO_TIMEOUT, async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
                .await
                .unwrap();
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get(format!("http://127.0.0.1:{}/h2/x?y=%20", p.port))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            let (version, status) = (res.version(), res.status());
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (version, status, body)
        })
        .await
        .expect("HTTP/2 request timed out (safety net)")
    });
    assert_eq!((version, status.as_u16()), (http::Version::HTTP_2, 200));
    assert_eq!(body, "/h2/x?y=%20");
    let s = b.next();
    let host = format!("127.0.0.1:{}", p.port);
    assert_eq!(s.header("host"), Some(host.as_str()));
    assert_eq!(s.header("x-forwarded-proto"), Some("http"));
    assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(last_activity(&p, "/h2") > before);
}
