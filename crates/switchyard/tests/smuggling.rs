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

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{contains, listen, within};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use switchyard::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
const SENTINEL: &[u8] = b"SENTINEL";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

// ============================================================================================
// The generated request
// ============================================================================================

/// What the reference model says of a framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// RFC 9112 framing, unambiguous: must be proxied.
    Valid,
    /// Allowed either way (a server MAY accept it): proxied as meant, or refused.
    Doubtful,
    /// Must not be proxied.
    Invalid,
}

#[derive(Debug, Clone, Copy)]
enum Length {
    Exact,
    /// Whitespace around the value (OWS, allowed).
    Padded,
    /// The same value twice (RFC 9112 §6.3 lets a recipient accept it).
    DuplicateSame,
    /// Two different values.
    DuplicateDiffer,
    /// `n, n` in one field.
    List,
    /// `+n`.
    Plus,
    /// `-1`.
    Negative,
    /// One byte less than the body: the rest is not part of this request.
    Short,
}

#[derive(Debug, Clone, Copy)]
enum Coding {
    Chunked,
    Upper,
    LeadingSpace,
    TrailingTab,
    ChunkedChunked,
    ChunkedIdentity,
    IdentityChunked,
    GzipChunked,
    XChunked,
    Quoted,
    TwoLines,
    SpaceBeforeColon,
    ObsFold,
}

/// How the first chunk-size line is written.
#[derive(Debug, Clone, Copy)]
enum SizeLine {
    Lower,
    Upper,
    LeadingZeros,
    Extension,
    TrailingSpace,
    Overflow,
    Garbage,
    HexPrefix,
    Empty,
    ExtensionBareLf,
}

#[derive(Debug, Clone, Copy)]
enum Extra {
    None,
    ObsFold,
    Nul,
    SpaceInName,
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    http10: bool,
    /// `Connection: close` and the smuggled request line after the body; without it, the
    /// request ends exactly where the model says, and a refusal must close by itself.
    close: bool,
    body: Vec<u8>,
    length: Option<Length>,
    coding: Option<Coding>,
    chunks: Vec<usize>,
    size_line: SizeLine,
    bare_lf_chunks: bool,
    bare_lf_head: bool,
    extra: Extra,
}

impl Case {
    /// The verdict, and the body the client means if the request is proxied.
    fn model(&self) -> (Verdict, Vec<u8>) {
        let mut verdict = Verdict::Valid;
        let mut body = self.body.clone();
        let worst = |v: &mut Verdict, w: Verdict| *v = (*v).max(w);
        if let Some(coding) = self.coding {
            worst(
                &mut verdict,
                match coding {
                    Coding::Chunked | Coding::Upper => Verdict::Valid,
                    Coding::LeadingSpace | Coding::TrailingTab => Verdict::Doubtful,
                    _ => Verdict::Invalid,
                },
            );
            if self.http10 {
                worst(&mut verdict, Verdict::Invalid);
            }
            if self.length.is_some() {
                // RFC 9112 §6.3: reject, or read by the chunked coding (whatever the
                // length says) and close. hyper removes the length and does the latter.
                worst(&mut verdict, Verdict::Doubtful);
            }
            worst(
                &mut verdict,
                match self.size_line {
                    SizeLine::Lower
                    | SizeLine::Upper
                    | SizeLine::LeadingZeros
                    | SizeLine::Extension => Verdict::Valid,
                    SizeLine::TrailingSpace => Verdict::Doubtful,
                    _ => Verdict::Invalid,
                },
            );
            if self.bare_lf_chunks {
                worst(&mut verdict, Verdict::Invalid);
            }
        } else if let Some(length) = self.length {
            worst(
                &mut verdict,
                match length {
                    Length::Exact | Length::Padded | Length::Short => Verdict::Valid,
                    Length::DuplicateSame => Verdict::Doubtful,
                    _ => Verdict::Invalid,
                },
            );
            if matches!(length, Length::Short) {
                body.pop();
            }
        } else {
            // No framing: no body; what follows is not part of this request.
            body.clear();
        }
        if self.bare_lf_head {
            worst(&mut verdict, Verdict::Doubtful);
        }
        if !matches!(self.extra, Extra::None) {
            worst(&mut verdict, Verdict::Invalid);
        }
        (verdict, body)
    }

    fn bytes(&self) -> Vec<u8> {
        let eol = if self.bare_lf_head { "\n" } else { "\r\n" };
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut head = vec![
            format!("{} /p {version}", self.method),
            "Host: t".to_owned(),
        ];
        if self.close {
            head.push("Connection: close".to_owned());
        }
        let n = self.body.len();
        match self.length {
            None => {}
            Some(Length::Exact) => head.push(format!("Content-Length: {n}")),
            Some(Length::Padded) => head.push(format!("Content-Length:   {n} \t")),
            Some(Length::DuplicateSame) => {
                head.push(format!("Content-Length: {n}"));
                head.push(format!("Content-Length: {n}"));
            }
            Some(Length::DuplicateDiffer) => {
                head.push(format!("Content-Length: {n}"));
                head.push(format!("Content-Length: {}", n + 1));
            }
            Some(Length::List) => head.push(format!("Content-Length: {n}, {n}")),
            Some(Length::Plus) => head.push(format!("Content-Length: +{n}")),
            Some(Length::Negative) => head.push("Content-Length: -1".to_owned()),
            Some(Length::Short) => head.push(format!("Content-Length: {}", n.saturating_sub(1))),
        }
        if let Some(coding) = self.coding {
            let te = |v: &str| format!("Transfer-Encoding: {v}");
            match coding {
                Coding::Chunked => head.push(te("chunked")),
                Coding::Upper => head.push(te("CHUNKED")),
                Coding::LeadingSpace => head.push(te("  chunked")),
                Coding::TrailingTab => head.push(te("chunked\t")),
                Coding::ChunkedChunked => head.push(te("chunked, chunked")),
                Coding::ChunkedIdentity => head.push(te("chunked, identity")),
                Coding::IdentityChunked => head.push(te("identity, chunked")),
                Coding::GzipChunked => head.push(te("gzip, chunked")),
                Coding::XChunked => head.push(te("xchunked")),
                Coding::Quoted => head.push(te("\"chunked\"")),
                Coding::TwoLines => {
                    head.push(te("chunked"));
                    head.push(te("chunked"));
                }
                Coding::SpaceBeforeColon => head.push("Transfer-Encoding : chunked".to_owned()),
                Coding::ObsFold => head.push(format!("Transfer-Encoding: identity{eol} chunked")),
            }
        }
        match self.extra {
            Extra::None => {}
            Extra::ObsFold => head.push(format!("X-Folded: a{eol} b")),
            Extra::Nul => head.push("X-Nul: a\0b".to_owned()),
            Extra::SpaceInName => head.push("X Bad: a".to_owned()),
        }
        let mut out = Vec::new();
        for line in head {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol.as_bytes());
        }
        out.extend_from_slice(eol.as_bytes());
        if self.coding.is_some() {
            out.extend(self.chunked_body());
        } else {
            out.extend_from_slice(&self.body);
        }
        if self.close {
            out.extend_from_slice(SMUGGLED);
        }
        out
    }

    /// The body in chunks of the generated sizes (the rest in one last chunk), the first
    /// size line written as `size_line` says.
    fn chunked_body(&self) -> Vec<u8> {
        let eol: &[u8] = if self.bare_lf_chunks { b"\n" } else { b"\r\n" };
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut rest = &self.body[..];
        for &size in &self.chunks {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at(size.min(rest.len()));
            pieces.push(a);
            rest = b;
        }
        if !rest.is_empty() {
            pieces.push(rest);
        }
        pieces.push(b"");
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let n = piece.len();
            let line = if i > 0 {
                format!("{n:x}")
            } else {
                match self.size_line {
                    SizeLine::Lower => format!("{n:x}"),
                    SizeLine::Upper => format!("{n:X}"),
                    SizeLine::LeadingZeros => format!("000{n:x}"),
                    SizeLine::Extension => format!("{n:x};name=\"v a\";x"),
                    SizeLine::TrailingSpace => format!("{n:x} "),
                    SizeLine::Overflow => "ffffffffffffffffff1".to_owned(),
                    SizeLine::Garbage => "zz".to_owned(),
                    SizeLine::HexPrefix => format!("0x{n:x}"),
                    SizeLine::Empty => String::new(),
                    SizeLine::ExtensionBareLf => format!("{n:x};a\nb"),
                }
            };
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol);
            if n > 0 {
                out.extend_from_slice(piece);
                out.extend_from_slice(eol);
            }
        }
        // The empty trailer section.
        out.extend_from_slice(eol);
        out
    }
}

fn case() -> impl Strategy<Value = Case> {
    use Coding as C;
    use Length as L;
    use SizeLine as S;
    let body_byte = prop::sample::select(b"ab0\r\n;:GET /smuggled".to_vec());
    let body = (
        prop::collection::vec(body_byte, 0..40),
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut body, smuggle, at)| {
            if smuggle {
                let at = at.index(body.len() + 1);
                body.splice(at..at, SMUGGLED.iter().copied());
            }
            body
        });
    let length = prop::option::weighted(
        0.5,
        prop::sample::select(vec![
            L::Exact,
            L::Padded,
            L::DuplicateSame,
            L::DuplicateDiffer,
            L::List,
            L::Plus,
            L::Negative,
            L::Short,
        ]),
    );
    let coding = prop::option::weighted(
        0.6,
        prop_oneof![
            3 => Just(C::Chunked),
            1 => prop::sample::select(vec![
                C::Upper,
                C::LeadingSpace,
                C::TrailingTab,
                C::ChunkedChunked,
                C::ChunkedIdentity,
                C::IdentityChunked,
                C::GzipChunked,
                C::XChunked,
                C::Quoted,
                C::TwoLines,
                C::SpaceBeforeColon,
                C::ObsFold,
            ]),
        ],
    );
    let size_line = prop_oneof![
        3 => Just(S::Lower),
        1 => prop::sample::select(vec![
            S::Upper,
            S::LeadingZeros,
            S::Extension,
            S::TrailingSpace,
            S::Overflow,
            S::Garbage,
            S::HexPrefix,
            S::Empty,
            S::ExtensionBareLf,
        ]),
    ];
    let extra = prop_oneof![
        6 => Just(Extra::None),
        1 => prop::sample::select(vec![Extra::ObsFold, Extra::Nul, Extra::SpaceInName]),
    ];
    (
        prop::sample::select(vec!["POST", "PUT", "DELETE", "OPTIONS", "GET"]),
        prop::bool::weighted(0.1),
        any::<bool>(),
        body,
        length,
        coding,
        prop::collection::vec(1usize..16, 0..4),
        size_line,
        (prop::bool::weighted(0.1), prop::bool::weighted(0.1), extra),
    )
        .prop_map(
            |(
                method,
                http10,
                close,
                body,
                length,
                coding,
                chunks,
                size_line,
                (lf1, lf2, extra),
            )| {
                let mut case = Case {
                    method,
                    http10,
                    close,
                    body,
                    length,
                    coding,
                    chunks,
                    size_line,
                    bare_lf_chunks: lf1,
                    bare_lf_head: lf2,
                    extra,
                };
                // Where bytes follow the request as the model reads it, only
                // `Connection: close` keeps them from being a second (real) request.
                let unframed = case.length.is_none() && case.coding.is_none();
                if matches!(case.length, Some(Length::Short)) || unframed {
                    case.close = true;
                }
                case
            },
        )
}

// ============================================================================================
// The recording upstream
// ============================================================================================

/// One request as the upstream parsed it.
#[derive(Debug)]
struct Parsed {
    target: String,
    body: Vec<u8>,
}

struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: mpsc::UnboundedReceiver<Vec<u8>>,
}

/// Answers each complete request `200 ok` (keep-alive) and reports every connection's
/// bytes when the peer closes it.
async fn upstream() -> Upstream {
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
    async fn connections(mut self) -> Vec<Vec<u8>> {
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
fn parse(mut bytes: &[u8]) -> (Vec<Parsed>, usize) {
    let mut out = Vec::new();
    while let Some((req, used)) = parse_one(bytes) {
        out.push(req);
        bytes = &bytes[used..];
    }
    (out, bytes.len())
}

fn parse_one(bytes: &[u8]) -> Option<(Parsed, usize)> {
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

// ============================================================================================
// One case
// ============================================================================================

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

/// The model on the known smuggling vectors it covers, so that a wrong model cannot make
/// the property vacuous.
#[test]
fn the_model_agrees_with_the_known_vectors() {
    let base = Case {
        method: "POST",
        http10: false,
        close: true,
        body: b"hello".to_vec(),
        length: None,
        coding: None,
        chunks: vec![],
        size_line: SizeLine::Lower,
        bare_lf_chunks: false,
        bare_lf_head: false,
        extra: Extra::None,
    };
    let with = |f: fn(&mut Case)| {
        let mut c = base.clone();
        f(&mut c);
        c.model().0
    };
    assert_eq!(with(|c| c.length = Some(Length::Exact)), Verdict::Valid);
    assert_eq!(with(|c| c.coding = Some(Coding::Chunked)), Verdict::Valid);
    // RFC 9112 §6.3: CL + TE is refused, or read as chunked (the conformance table checks
    // that the connection is closed after it).
    assert_eq!(
        with(|c| {
            c.length = Some(Length::Negative);
            c.coding = Some(Coding::Chunked);
        }),
        Verdict::Doubtful
    );
    assert_eq!(
        with(|c| {
            c.http10 = true;
            c.coding = Some(Coding::Chunked);
        }),
        Verdict::Invalid
    );
    // A Transfer-Encoding other than one `chunked`; a bad Content-Length (RFC 9112 §6.3).
    for coding in [
        Coding::ChunkedChunked,
        Coding::GzipChunked,
        Coding::XChunked,
    ] {
        let mut c = base.clone();
        c.coding = Some(coding);
        assert_eq!(c.model().0, Verdict::Invalid, "{coding:?}");
    }
    for length in [
        Length::DuplicateDiffer,
        Length::Plus,
        Length::Negative,
        Length::List,
    ] {
        let mut c = base.clone();
        c.length = Some(length);
        assert_eq!(c.model().0, Verdict::Invalid, "{length:?}");
    }
    // obs-fold (RFC 9112 §5.2) and a chunk size that overflows (§7.1).
    assert_eq!(with(|c| c.extra = Extra::ObsFold), Verdict::Invalid);
    assert_eq!(
        with(|c| {
            c.coding = Some(Coding::Chunked);
            c.size_line = SizeLine::Overflow;
        }),
        Verdict::Invalid
    );
    // The encoder writes what a strict parser reads back.
    let mut c = base.clone();
    c.coding = Some(Coding::Chunked);
    c.chunks = vec![2, 1];
    c.close = false;
    let bytes = c.bytes();
    let (reqs, trailing) = parse(&bytes);
    assert_eq!((reqs.len(), trailing), (1, 0));
    assert_eq!(reqs[0].body, b"hello");
}
