//! Peers for the proxying tests: real backends on 127.0.0.1:0 in the test process (a raw
//! HTTP/1.1 recorder, so every byte the proxy sends a target is visible; an HTTPS peer, a
//! streaming peer, a hanging peer, a tungstenite WebSocket echo server), a keep-alive
//! client (hyper's), and `last_activity` helpers.
//!
//! Synchronisation is by events only: a log line, a response, a frame, a recorded request.
//! "Not bumped" checks for `last_activity` (millisecond precision) first wait until the
//! clock has moved past the current value, so a bump would be visible.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support code"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::common::{self, IO_TIMEOUT, Proxy};
use tokio_tungstenite::tungstenite::{self, Message};

/// A target nobody listens on (port 1 is never bound by these tests).
pub const DEAD: &str = "http://127.0.0.1:1";

// ============================================================================================
// Backends
// ============================================================================================

/// One request as a backend received it: the raw request target, headers in order.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.first().copied()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub type Reply = Arc<dyn Fn(&Seen) -> String + Send + Sync>;

/// A raw HTTP/1.1 backend (keep-alive, Content-Length and chunked request bodies) that
/// records every request and answers with `reply`.
pub struct Backend {
    pub port: u16,
    pub seen: mpsc::Receiver<Seen>,
    pub accepted: Arc<AtomicUsize>,
}

impl Backend {
    pub fn start(reply: impl Fn(&Seen) -> String + Send + Sync + 'static) -> Self {
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
    pub fn echo_target() -> Self {
        Self::start(|s| respond("200 OK", &[], &s.target))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next recorded request (bounded wait).
    pub fn next(&self) -> Seen {
        self.seen
            .recv_timeout(IO_TIMEOUT)
            .expect("backend received no request (safety-net timeout)")
    }
}

/// A backend that answers every request `200 ok`, keeping no record of them (for load);
/// returns its port.
pub fn ok_backend() -> u16 {
    Backend::start(|_| respond("200 OK", &[], "ok")).port
}

pub fn serve_connection(stream: TcpStream, tx: &mpsc::Sender<Seen>, reply: &Reply) {
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

pub fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
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

pub fn read_headers(reader: &mut impl BufRead) -> Option<Vec<(String, String)>> {
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

pub fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
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
pub fn respond(status: &str, headers: &[(&str, &str)], body: &str) -> String {
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
pub fn https_backend() -> u16 {
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
pub fn streaming_backend() -> (u16, mpsc::Sender<&'static str>, mpsc::Receiver<()>) {
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
pub fn hanging_backend() -> (u16, mpsc::Receiver<()>) {
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
pub fn ws_backend(hello: Option<&'static str>) -> (u16, mpsc::Receiver<Seen>) {
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

/// The keep-alive client, here too for the tests that use the backends.
pub use crate::common::Client;

/// One GET on a fresh keep-alive connection.
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> common::Response {
    let mut c = Client::connect(port);
    c.send("GET", path, headers, "");
    c.response()
}

/// A WebSocket client through the proxy (tungstenite, blocking, bounded reads).
pub fn ws_connect(
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
pub fn raw_upgrade(port: u16, path: &str) -> Result<String, std::io::Error> {
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

pub fn last_activity(p: &Proxy, key: &str) -> String {
    p.routes()[key]["last_activity"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_activity for {key}"))
        .to_owned()
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn ms_of(ts: &str) -> i64 {
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
pub fn clock_past(ts: &str) {
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
