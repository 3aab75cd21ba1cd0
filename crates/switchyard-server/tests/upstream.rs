//! The binary's upstream side: https targets checked against `--client-ssl-ca`.
//!
//! Real targets on 127.0.0.1 in this process, certificates made by rcgen now.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

use common::{Proxy, temp_dir};

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
