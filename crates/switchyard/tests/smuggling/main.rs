//! Request framing under random mutation (RFC 9112 §6 and §7; request smuggling):
//! a property test that sends raw bytes to a real proxy in front of a recording upstream.
//!
//! Each case is a request whose framing is built from random parts: duplicate,
//! conflicting, listed, signed or short `Content-Length`; `Transfer-Encoding` variants
//! (`chunked, identity`, ` chunked`, `xchunked`, two lines, a space before the colon,
//! obs-fold); chunk-size garbage, extensions, bare LF; bare-LF heads; HTTP/1.0 with
//! chunked; both length and chunked. A reference model says whether the framing is valid
//! (the request must be proxied), doubtful (proxied or refused) or invalid (refused).
//!
//! The property: EITHER the client gets a 4xx (or 501) and the connection closes, or it
//! is closed without an answer, and the upstream received no complete request; OR the
//! client gets the upstream's 200 and the upstream received exactly one well-framed
//! request whose body is the one the client meant. Never a second request, never
//! `GET /smuggled`, never a byte after the one request.
//!
//! The upstream parses strictly and reports each connection's bytes when it closes.
//! Completion is an event: after the case, the proxy is shut down and dropped (its
//! pooled connections close), then a sentinel connection is made; once the sentinel is
//! reported every earlier connection has been accepted, and the test waits for each.
#![allow(clippy::unwrap_used)] // tests may unwrap

#[path = "../common/mod.rs"]
mod common;
mod model;
mod upstream;

use std::net::SocketAddr;

use common::{contains, listen, within};
use model::{Case, Verdict, case};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use switchyard::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upstream::{Parsed, parse, upstream};

/// What the client saw.
#[derive(Debug)]
enum Seen {
    /// A response with this status.
    Status(u16),
    /// The connection closed with nothing written.
    Closed,
}

/// Sends the request and reads the answer: with `Connection: close`, to EOF; otherwise
/// one whole response if it is a 200, and to EOF after anything else (a refusal must
/// close the connection by itself).
async fn exchange(addr: SocketAddr, bytes: &[u8], close: bool) -> Seen {
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    // The proxy may refuse and close before everything is written.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within(s.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if !close && out.starts_with(b"HTTP/1.1 200") && contains(&out, b"\r\n\r\nok") {
            break;
        }
    }
    let status = out
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok());
    match status {
        Some(code) => Seen::Status(code),
        None if out.is_empty() => Seen::Closed,
        None => Seen::Status(0),
    }
}

async fn check(case: &Case) -> Result<(), String> {
    let up = upstream().await;
    let proxy = Proxy::to(&format!("http://{}", up.addr)).unwrap();
    let server = listen(&proxy).await;
    let seen = exchange(server.local_addr(), &case.bytes(), case.close).await;
    server.shutdown().await;
    drop(proxy);
    let logs = up.connections().await;

    let (verdict, meant) = case.model();
    let parsed: Vec<(Vec<Parsed>, usize)> = logs.iter().map(|l| parse(l)).collect();
    let requests: Vec<&Parsed> = parsed.iter().flat_map(|(r, _)| r).collect();
    let trailing: usize = parsed
        .iter()
        .filter(|(r, _)| !r.is_empty())
        .map(|(_, t)| t)
        .sum();
    let show = || {
        format!(
            "verdict {verdict:?}, client saw {seen:?}, upstream got {:?}",
            logs.iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect::<Vec<_>>()
        )
    };
    if requests.iter().any(|r| r.target.contains("smuggled")) || requests.len() > 1 {
        return Err(format!("smuggled: {}", show()));
    }
    match seen {
        Seen::Status(200) => {
            if verdict == Verdict::Invalid {
                return Err(format!("proxied an invalid request: {}", show()));
            }
            let [req] = requests[..] else {
                return Err(format!("200 without one request upstream: {}", show()));
            };
            if req.target != "/p" || req.body != meant || trailing != 0 {
                return Err(format!(
                    "upstream got {:?} (body {:?}), meant {:?}: {}",
                    req.target,
                    String::from_utf8_lossy(&req.body),
                    String::from_utf8_lossy(&meant),
                    show()
                ));
            }
        }
        Seen::Status(400..=499 | 501) | Seen::Closed => {
            if verdict == Verdict::Valid {
                return Err(format!("refused a valid request: {}", show()));
            }
            if !requests.is_empty() {
                return Err(format!("refused, yet forwarded: {}", show()));
            }
        }
        Seen::Status(_) => return Err(format!("unexpected answer: {}", show())),
    }
    Ok(())
}

/// The property, over 64 random framings (a few seconds on two cores), on one runtime.
#[test]
fn mutated_framing_is_refused_or_forwarded_as_meant() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |case| {
            rt.block_on(check(&case))
                .map_err(|e| TestCaseError::fail(format!("{e}\nrequest: {:?}", case.bytes())))
        })
        .unwrap();
}
