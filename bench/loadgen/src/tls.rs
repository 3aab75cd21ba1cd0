//! Handshake loops: each connects, makes a TLS 1.3 handshake (full, or resumed
//! with a ticket from its previous connection), sends one `GET` with
//! `Connection: close` and reads the answer until the server closes.
//!
//! The client offers what a browser would and every proxy accepts alike: TLS
//! 1.3 only, X25519, ALPN `http/1.1`, and the signature schemes a browser puts
//! first (ECDSA P-256 and RSA-PSS with SHA-256), so each server signs with the
//! same algorithm. It does not check the certificate or the signature: the
//! load core spends its time making handshakes, not verifying the test's own
//! self-signed certificate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Shared;

type Error = Box<dyn std::error::Error>;

/// Whether a handshake loop may resume.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Handshake {
    /// Every handshake is a full one: key exchange and the server's signature.
    Full,
    /// Each loop keeps the tickets of its last connection and offers one.
    Resume,
}

/// Starts `conns` handshake loops against `url` (https://host:port/path).
pub(crate) fn handshakes(
    url: &str,
    kind: Handshake,
    conns: usize,
    tally: &Shared,
) -> Result<(), Error> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("the URL must start with https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_owned();
    let name = ServerName::try_from(host)?;
    let request: Arc<[u8]> =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
            .into_bytes()
            .into();
    for _ in 0..conns {
        // A session store per loop, as each browser has its own.
        let connector = TlsConnector::from(Arc::new(config(kind)?));
        tokio::task::spawn_local(handshake_loop(
            connector,
            authority.to_owned(),
            name.clone(),
            request.clone(),
            tally.clone(),
        ));
    }
    Ok(())
}

fn config(kind: Handshake) -> Result<ClientConfig, Error> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = match kind {
        Handshake::Full => Resumption::disabled(),
        Handshake::Resume => Resumption::in_memory_sessions(4),
    };
    Ok(config)
}

async fn handshake_loop(
    connector: TlsConnector,
    authority: String,
    name: ServerName<'static>,
    request: Arc<[u8]>,
    tally: Shared,
) {
    let mut buf = Vec::with_capacity(32 * 1024);
    while !tally.borrow().stop {
        let started = Instant::now();
        match once(&connector, &authority, &name, &request, &mut buf).await {
            Ok(resumed) => {
                let mut t = tally.borrow_mut();
                if resumed && t.measuring {
                    t.resumed += 1;
                }
                t.record(buf.len(), Some(started));
            }
            Err(e) => {
                tally.borrow_mut().fail(e);
                // A refused or broken connection fails fast: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection; returns whether its handshake resumed a session.
async fn once(
    connector: &TlsConnector,
    authority: &str,
    name: &ServerName<'static>,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<bool, Error> {
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    tls.write_all(request).await?;
    buf.clear();
    match tls.read_to_end(buf).await {
        Ok(_) => {}
        // A server that closes without close_notify: the answer still counts
        // when it came whole.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && complete(buf) => {}
        Err(e) => return Err(e.into()),
    }
    if !buf.starts_with(b"HTTP/1.1 200 ") || !complete(buf) {
        let head = String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned();
        return Err(format!("not a whole 200 answer: {head:?}").into());
    }
    Ok(resumed)
}

/// Whether `buf` holds a head and the `Content-Length` bytes it announces.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => buf.len() - (end + 4) >= n,
        // Chunked or close-delimited: the read to the end was the check.
        None => true,
    }
}

/// Accepts any certificate and signature (see the module's comment).
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn an_answer_is_complete_once_its_announced_body_is_in() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n".to_vec();
        assert!(!complete(&head));
        let mut half = head.clone();
        half.extend_from_slice(b"Hello,");
        assert!(!complete(&half));
        let mut whole = head;
        whole.extend_from_slice(b"Hello, world!");
        assert!(complete(&whole));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nanything"
        ));
    }
}
