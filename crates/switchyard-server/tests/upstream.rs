//! The binary's upstream side: https targets checked against `--client-ssl-ca`,
//! and pooled connections that a target closes as a request is written on them.
//!
//! Real targets on 127.0.0.1 in this process, certificates made by rcgen now.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proxy, request, temp_dir};

/// A self-signed certificate as `openssl req -x509 -newkey … -subj /CN=<name>
/// -addext subjectAltName=<name>` makes one (`basicConstraints CA:TRUE`, its
/// own issuer), as PEM with its key; `expired` makes it valid in 2000 only.
fn self_signed_ca(name: &str, expired: bool) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2000, 12, 31);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An https target presenting `cert_pem` that answers every request `200`
/// with its request target; returns its port.
fn https_target(cert_pem: &str, key_pem: &str) -> u16 {
    use rustls_pki_types::pem::PemObject;
    let chain =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
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
                loop {
                    let mut line = String::new();
                    if tls.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                    // The rest of the head; these requests have no body.
                    loop {
                        let mut header = String::new();
                        if tls.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}",
                        target.len()
                    );
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

/// A target whose certificate is self-signed with `CA:TRUE` (what `openssl req
/// -x509` makes) is reached when that certificate is given to
/// `--client-ssl-ca`, as configurable-http-proxy reaches it. A different such
/// certificate, an expired one and one for another name stay 503s, each
/// logged with the check that failed.
#[test]
fn client_ssl_ca_trusts_a_self_signed_target_certificate_and_only_it() {
    let good = self_signed_ca("127.0.0.1", false);
    let expired = self_signed_ca("127.0.0.1", true);
    let elsewhere = self_signed_ca("other.test", false);
    let stranger = self_signed_ca("127.0.0.1", false);
    let dir = temp_dir("client-ssl-ca");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, format!("{}{}{}", good.0, expired.0, elsewhere.0)).unwrap();
    let mut p = Proxy::start(&["--client-ssl-ca", ca.to_str().unwrap()]);
    for (prefix, (cert, key)) in [
        ("/good", &good),
        ("/expired", &expired),
        ("/elsewhere", &elsewhere),
        ("/stranger", &stranger),
    ] {
        let port = https_target(cert, key);
        p.add(prefix, &format!("https://127.0.0.1:{port}"));
    }
    let r = p.public("GET", "/good/x?y=1", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "/good/x?y=1"));
    for (prefix, why) in [
        ("/stranger", "not one of the `ca` certificates"),
        ("/expired", "certificate expired"),
        ("/elsewhere", "not valid for name \"127.0.0.1\""),
    ] {
        assert_eq!(p.public("GET", prefix, &[]).status, 503, "{prefix}");
        let line = p.wait_for_line(why);
        assert!(line.contains(&format!("503 {prefix} ")), "{line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ============================================================================================
// A target that closes idle connections
// ============================================================================================

/// The target's idle timeout, and how long its close then takes.
const IDLE: Duration = Duration::from_millis(40);
const CLOSING: Duration = Duration::from_millis(200);
/// The client's pause between requests: inside the closing window.
const PAUSE: Duration = Duration::from_millis(100);

/// What the target saw: every request received (`METHOD /path body`), and
/// how many arrived while it was closing and were left unanswered.
#[derive(Default)]
struct Log {
    received: Mutex<Vec<String>>,
    unanswered: AtomicUsize,
}

/// A target with a real idle timer: `IDLE` after its last answer it decides to
/// close and answers nothing more; the close takes `CLOSING` (a busy or
/// distant server), and a request that arrives meanwhile is read, recorded and
/// left unanswered, as one the target received as it closed. Returns its port.
fn closing_target(log: Arc<Log>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while let Ok(Some(req)) = read_request(&mut s, &mut buf, Instant::now() + IDLE) {
                    log.received.lock().unwrap().push(req);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
                let until = Instant::now() + CLOSING;
                while let Ok(Some(req)) = read_request(&mut s, &mut buf, until) {
                    log.received.lock().unwrap().push(req);
                    log.unanswered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    port
}

/// One request with a `Content-Length` body (or none) read before `deadline`:
/// `Ok(None)` at EOF, `Err(())` at the deadline.
fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Option<String>, ()> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                buf.drain(..end + 4 + len);
                let mut words = head.split(' ');
                let (method, path) = (words.next().unwrap(), words.next().unwrap());
                return Ok(Some(
                    format!("{method} {path} {body}").trim_end().to_owned(),
                ));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(());
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(());
            }
            Err(_) => return Ok(None),
        }
    }
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// GETs that meet a connection the target closes under them are sent again on
/// a new connection: every answer is a 200 although the race happened many
/// times, and `/metrics` counts the retries
/// (`switchyard_upstream_retries_total`). A POST with a body in the same race
/// is not sent twice: 503, and the target received it once.
#[test]
fn requests_on_a_connection_the_target_closes_under_them() {
    let log = Arc::new(Log::default());
    let target = format!("http://127.0.0.1:{}", closing_target(log.clone()));
    let mut p = Proxy::start(&["--metrics-ip", "127.0.0.1", "--metrics-port", "0"]);
    let metrics_port = p.metrics_port();
    p.add("/", &target);
    for i in 0..16 {
        let r = p.public("GET", &format!("/g{i}"), &[]);
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "GET {i}");
        std::thread::sleep(PAUSE);
    }
    let raced = log.unanswered.load(Ordering::SeqCst);
    assert!(raced >= 5, "the race happened {raced} times in 15 reuses");
    let retries = metric(
        &request(metrics_port, "GET", "/metrics", &[], None).body,
        "switchyard_upstream_retries_total",
    );
    assert!(retries >= raced as u64, "{retries} retries, {raced} races");

    let before = log.unanswered.load(Ordering::SeqCst);
    let mut failed = 0;
    for i in 0..8 {
        let body = format!("body {i}");
        let r = request(p.port, "POST", "/p", &[], Some(&body));
        match r.status {
            200 => {}
            503 => failed += 1,
            other => panic!("POST {i}: {other}"),
        }
        std::thread::sleep(PAUSE);
    }
    assert!(failed >= 2, "the race happened {failed} times");
    assert_eq!(log.unanswered.load(Ordering::SeqCst) - before, failed);
    let received = log.received.lock().unwrap().clone();
    for i in 0..8 {
        let n = received
            .iter()
            .filter(|r| r.ends_with(&format!(" /p body {i}")))
            .count();
        assert_eq!(n, 1, "body {i}: {received:?}");
    }
}
