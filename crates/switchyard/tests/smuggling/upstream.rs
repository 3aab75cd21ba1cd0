//! The recording upstream: answers each complete request `200 ok` and reports
//! every connection's bytes, strictly parsed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::common::within;

const SENTINEL: &[u8] = b"SENTINEL";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// One request as the upstream parsed it.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) target: String,
    pub(crate) body: Vec<u8>,
}

pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) accepted: Arc<AtomicUsize>,
    pub(crate) closed: mpsc::UnboundedReceiver<Vec<u8>>,
}

/// Answers each complete request `200 ok` (keep-alive) and reports every connection's
/// bytes when the peer closes it.
pub(crate) async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, closed) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut log = Vec::new();
                let mut answered = 0;
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => log.extend_from_slice(&buf[..n]),
                    }
                    let complete = parse(&log).0.len();
                    while answered < complete {
                        answered += 1;
                        let _ = s.write_all(ANSWER).await;
                    }
                }
                let _ = tx.send(log);
            });
        }
    });
    Upstream {
        addr,
        accepted,
        closed,
    }
}

impl Upstream {
    /// Every connection's bytes, once the proxy is gone.
    pub(crate) async fn connections(mut self) -> Vec<Vec<u8>> {
        let mut s = within(TcpStream::connect(self.addr)).await.unwrap();
        s.write_all(SENTINEL).await.unwrap();
        drop(s);
        let mut logs = Vec::new();
        let mut sentinel = false;
        while !sentinel || logs.len() + 1 < self.accepted.load(Ordering::SeqCst) {
            let log = within(self.closed.recv()).await.unwrap();
            if log == SENTINEL {
                sentinel = true;
            } else {
                logs.push(log);
            }
        }
        logs
    }
}

/// Strictly parses a connection's bytes into complete requests; returns them and the
/// number of bytes after the last one.
pub(crate) fn parse(mut bytes: &[u8]) -> (Vec<Parsed>, usize) {
    let mut out = Vec::new();
    while let Some((req, used)) = parse_one(bytes) {
        out.push(req);
        bytes = &bytes[used..];
    }
    (out, bytes.len())
}

pub(crate) fn parse_one(bytes: &[u8]) -> Option<(Parsed, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..end - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_owned();
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (k, v) = line.split_once(':')?;
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.trim().parse::<usize>().ok()?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            // What the proxy sends must be plain `chunked`.
            (v.trim() == "chunked").then_some(())?;
            chunked = true;
        }
    }
    let rest = &bytes[end..];
    if chunked {
        (length.is_none()).then_some(())?;
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = at + rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..line_end]).ok()?, 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                (rest.get(at..at + 2)? == b"\r\n").then_some(())?;
                return Some((Parsed { target, body }, end + at + 2));
            }
            body.extend_from_slice(rest.get(at..at + size)?);
            at += size;
            (rest.get(at..at + 2)? == b"\r\n").then_some(())?;
            at += 2;
        }
    }
    let n = length.unwrap_or(0);
    let body = rest.get(..n)?.to_vec();
    Some((Parsed { target, body }, end + n))
}
