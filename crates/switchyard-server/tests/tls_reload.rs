//! Certificates replaced without a restart, through the real binary: the files swapped
//! by an atomic rename, by a Kubernetes-style `..data` symlink swap, and re-read on
//! SIGHUP; new handshakes see the new certificate, a WebSocket opened before keeps
//! echoing, and a pair that does not load is refused with the old one still served.
//! And sessions resumed with tickets, for more clients than a session cache holds.
//!
//! Certificates are made by rcgen at test time; every peer is on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use common::{IO_TIMEOUT, Proxy, request, temp_dir};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::{self, Message};

/// A certificate for `localhost` and 127.0.0.1 with its key, as PEM, and its DER.
struct Pair {
    cert: String,
    key: String,
    der: Vec<u8>,
}

/// A self-signed pair valid for `days` days from now (negative: expired that long ago).
fn pair(days: i64) -> Pair {
    use rcgen::{CertificateParams, KeyPair};
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = 86_400;
    let not_after = i64::try_from(now).unwrap() + days * day;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = time_of(not_after);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// rcgen's date type from Unix seconds.
fn time_of(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// Writes `text` to `path` by writing a temporary file beside it and renaming it over
/// `path`, as editors, `cp --atomic` and cert-manager's writers do.
fn rename_in(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `port`, handshake done; `http/1.1` offered by ALPN.
fn connect(port: u16) -> Tls {
    connect_with(port, &client_config())
}

/// A client's TLS configuration: any certificate accepted, `http/1.1` offered, and
/// rustls's default session store, so a second connection with it offers a ticket.
fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `port` made with `config`, handshake done.
fn connect_with(port: u16, config: &Arc<rustls::ClientConfig>) -> Tls {
    let conn =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// The certificate a new handshake with `port` gets.
fn served(port: u16) -> Vec<u8> {
    connect(port).conn.peer_certificates().unwrap()[0].to_vec()
}

/// One request on a TLS connection; the status and body of the answer.
fn https_get(tls: &mut Tls, path: &str) -> (u16, String) {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    tls.flush().unwrap();
    let mut reader = BufReader::new(tls);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (
        status.split(' ').nth(1).unwrap().parse().unwrap(),
        String::from_utf8(body).unwrap(),
    )
}

/// A WebSocket through the proxy over TLS, echoing.
fn wss(port: u16) -> tungstenite::WebSocket<Tls> {
    tungstenite::client(format!("wss://localhost:{port}/ws"), connect(port))
        .unwrap_or_else(|e| panic!("WebSocket handshake through the proxy failed: {e}"))
        .0
}

fn echo(ws: &mut tungstenite::WebSocket<Tls>, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

fn metric(port: u16, line_start: &str) -> f64 {
    let body = request(port, "GET", "/metrics", &[], None).body;
    body.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// The proxy serving `dir/cert.pem` + `dir/key.pem` on its public port, with a
/// WebSocket echo target as its default route and metrics on.
fn proxy_with(cert: &Path, key: &Path, extra: &[&str]) -> Proxy {
    let (ws_port, _) = backends::ws_backend(None);
    let target = format!("http://127.0.0.1:{ws_port}");
    let mut args = vec![
        "--ssl-cert",
        cert.to_str().unwrap(),
        "--ssl-key",
        key.to_str().unwrap(),
        "--default-target",
        &target,
        "--metrics-port",
        "0",
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proxy::start(&args)
}

/// Files renamed over the old ones (key first, so that for a moment the key is the
/// new one and the certificate the old one): the next handshake gets the new
/// certificate, the WebSocket and the keep-alive connection opened before keep
/// working, the expiry gauge follows, and nothing was refused on the way.
#[test]
fn atomic_rename_swaps_the_certificate_and_keeps_open_connections() {
    let dir = temp_dir("tls-reload-rename");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (old, new) = (pair(90), pair(30));
    std::fs::write(&cert, &old.cert).unwrap();
    std::fs::write(&key, &old.key).unwrap();
    let mut p = proxy_with(&cert, &key, &[]);
    let metrics = p.metrics_port();
    let gauge = "switchyard_tls_certificate_expiry_seconds{listener=\"public\"}";
    let days = |s: f64| (s / 86_400.0).round();
    assert_eq!(days(metric(metrics, gauge)), 90.0);
    assert_eq!(served(p.port), old.der);

    let mut ws = wss(p.port);
    echo(&mut ws, "before");
    let mut keep_alive = connect(p.port);
    assert_eq!(https_get(&mut keep_alive, "/_chp_healthz").0, 200);

    rename_in(&key, &new.key);
    rename_in(&cert, &new.cert);
    let line = p.wait_for_line("TLS: public certificate reloaded");
    assert!(line.contains("cert.pem"), "{line}");

    assert_eq!(served(p.port), new.der);
    echo(&mut ws, "after");
    assert_eq!(https_get(&mut keep_alive, "/_chp_healthz").0, 200);
    assert_eq!(
        keep_alive.conn.peer_certificates().unwrap()[0].as_ref(),
        old.der
    );
    assert_eq!(days(metric(metrics, gauge)), 30.0);
    assert!(
        !p.log.iter().any(|l| l.contains("refused")),
        "a half-swapped pair was refused: {:#?}",
        p.log
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The layout of a Kubernetes secret mounted as a volume: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<timestamp>`, and an update that writes a new timestamped directory and
/// renames a new `..data` symlink over the old one.
#[test]
fn kubernetes_data_symlink_swap_is_seen() {
    let dir = temp_dir("tls-reload-k8s");
    let (old, new) = (pair(60), pair(20));
    let version = |name: &str, p: &Pair| {
        let v = dir.join(name);
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("tls.crt"), &p.cert).unwrap();
        std::fs::write(v.join("tls.key"), &p.key).unwrap();
    };
    version("..2026_01_01_00_00_00.1", &old);
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
    }
    let mut p = proxy_with(&dir.join("tls.crt"), &dir.join("tls.key"), &[]);
    assert_eq!(served(p.port), old.der);
    let mut ws = wss(p.port);
    echo(&mut ws, "before");

    version("..2026_02_01_00_00_00.2", &new);
    std::os::unix::fs::symlink("..2026_02_01_00_00_00.2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_01_01_00_00_00.1")).unwrap();

    p.wait_for_line("TLS: public certificate reloaded");
    assert_eq!(served(p.port), new.der);
    echo(&mut ws, "after");
    let _ = std::fs::remove_dir_all(dir);
}

/// A change the file watch cannot see (the certificate's directory reached through a
/// symlink that is pointed elsewhere) is picked up on SIGHUP, for the public listener
/// and the API listener alike.
#[test]
fn sighup_reloads_the_public_and_api_certificates() {
    let dir = temp_dir("tls-reload-hup");
    let (old, new, api_old, api_new) = (pair(60), pair(20), pair(50), pair(10));
    for (name, public, api) in [("a", &old, &api_old), ("b", &new, &api_new)] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cert.pem"), &public.cert).unwrap();
        std::fs::write(d.join("key.pem"), &public.key).unwrap();
        std::fs::write(d.join("api-cert.pem"), &api.cert).unwrap();
        std::fs::write(d.join("api-key.pem"), &api.key).unwrap();
    }
    let current = dir.join("current");
    std::os::unix::fs::symlink("a", &current).unwrap();
    let api_cert = current.join("api-cert.pem");
    let api_key = current.join("api-key.pem");
    let mut p = proxy_with(
        &current.join("cert.pem"),
        &current.join("key.pem"),
        &[
            "--api-ssl-cert",
            api_cert.to_str().unwrap(),
            "--api-ssl-key",
            api_key.to_str().unwrap(),
        ],
    );
    assert_eq!(served(p.port), old.der);
    assert_eq!(served(p.api_port), api_old.der);

    std::os::unix::fs::symlink("b", dir.join("next")).unwrap();
    std::fs::rename(dir.join("next"), &current).unwrap();
    p.send_signal("HUP");
    p.wait_for_line("SIGHUP: reloading the certificates");
    p.wait_for_line("TLS: public certificate reloaded");
    p.wait_for_line("TLS: api certificate reloaded");
    assert_eq!(served(p.port), new.der);
    assert_eq!(served(p.api_port), api_new.der);
    // Still running: SIGHUP reloads, it does not stop the proxy.
    assert!(p.child.try_wait().unwrap().is_none());
    let _ = std::fs::remove_dir_all(dir);
}

/// A new pair that does not load is refused with an error line naming the file and the
/// reason, and the old certificate stays: a key that is not the certificate's, an
/// expired certificate, a certificate file that is not PEM. A good pair after them is
/// taken.
#[test]
fn a_bad_new_pair_is_refused_and_the_old_one_served() {
    let dir = temp_dir("tls-reload-bad");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let old = pair(90);
    std::fs::write(&cert, &old.cert).unwrap();
    std::fs::write(&key, &old.key).unwrap();
    let mut p = proxy_with(&cert, &key, &[]);
    let mut ws = wss(p.port);

    let other = pair(90);
    let expired = pair(-1);
    let cases: [(&str, &str, &str); 3] = [
        (&old.cert, &other.key, "is not the certificate's key"),
        (&expired.cert, &expired.key, "expired"),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64\n",
            &old.key,
            "cert.pem",
        ),
    ];
    for (i, (cert_text, key_text, why)) in cases.into_iter().enumerate() {
        rename_in(&key, key_text);
        rename_in(&cert, cert_text);
        let line = p.wait_for_line("TLS reload refused: ");
        assert!(line.contains(why), "case {i}: {line}");
        assert!(line.contains("] error: "), "case {i}: {line}");
        assert!(
            line.contains(&cert.display().to_string()),
            "case {i}: {line}"
        );
        assert_eq!(served(p.port), old.der, "case {i}");
        echo(&mut ws, "still there");
        // The next case waits for a line of its own.
        p.log.clear();
    }

    let good = pair(45);
    rename_in(&key, &good.key);
    rename_in(&cert, &good.cert);
    p.wait_for_line("TLS: public certificate reloaded");
    assert_eq!(served(p.port), good.der);
    let _ = std::fs::remove_dir_all(dir);
}

/// An https target presenting `pair`'s certificate that answers `200 ok`.
fn https_target(pair: &Pair) -> u16 {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![CertificateDer::from(pair.der.clone())];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
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
                    if tls.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let _ = tls.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                );
                let _ = tls.get_mut().flush();
            });
        }
    });
    port
}

/// `--client-ssl-ca` replaced on disk: new connections to https targets trust the new CA
/// file, and the old target is no longer trusted on a new connection.
#[test]
fn client_ssl_ca_is_reloaded_for_new_target_connections() {
    let dir = temp_dir("tls-reload-client");
    let (first, second) = (pair(30), pair(30));
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &first.cert).unwrap();
    let mut p = Proxy::start(&["--client-ssl-ca", ca.to_str().unwrap()]);
    let (one, two) = (https_target(&first), https_target(&second));
    p.add("/one", &format!("https://127.0.0.1:{one}"));
    p.add("/two", &format!("https://127.0.0.1:{two}"));
    assert_eq!(p.public("GET", "/one", &[]).status, 200);
    assert_eq!(p.public("GET", "/two", &[]).status, 503);

    rename_in(&ca, &second.cert);
    p.wait_for_line("TLS: client certificate reloaded");
    assert_eq!(p.public("GET", "/two", &[]).status, 200);
    // The targets close every connection: this one is new, and no longer trusted.
    assert_eq!(p.public("GET", "/one", &[]).status, 503);
    let _ = std::fs::remove_dir_all(dir);
}

/// Browsers come back: 300 clients (more than rustls's default in-memory session cache
/// of 256 entries, which holds two tickets a connection) each make a full handshake and
/// a request, then each connects again and resumes its session with the ticket it was
/// given, and the request on the resumed connection is answered. With stateless tickets
/// the proxy keeps nothing per client; with the cache, the first clients' sessions would
/// have been evicted by the later ones.
#[test]
fn sessions_resume_with_tickets_for_many_clients() {
    const CLIENTS: usize = 300;
    let dir = temp_dir("tls-resume");
    let pair = pair(30);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pair.cert).unwrap();
    std::fs::write(&key, &pair.key).unwrap();
    let p = proxy_with(&cert, &key, &[]);
    let clients: Vec<_> = (0..CLIENTS).map(|_| client_config()).collect();
    for config in &clients {
        let mut tls = connect_with(p.port, config);
        assert_eq!(tls.conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // The tickets come after the handshake: reading the answer takes them in.
        assert_eq!(https_get(&mut tls, "/_chp_healthz").0, 200);
    }
    let mut resumed = 0;
    for config in &clients {
        let mut tls = connect_with(p.port, config);
        if tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            resumed += 1;
        }
        assert_eq!(https_get(&mut tls, "/_chp_healthz").0, 200);
    }
    assert_eq!(resumed, CLIENTS, "sessions resumed of {CLIENTS}");
}
