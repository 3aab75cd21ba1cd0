//! The serving layer's TLS accept path: a client connects over loopback, makes a TLS 1.3
//! handshake (full, or resumed with a ticket from its previous connection), sends one
//! `GET` with `Connection: close` and reads the answer to the end, against `serve` with
//! an ECDSA P-256 certificate and a service that answers at once. It measures what a
//! browser's new connection costs the proxy's TLS side (and the client's, which is in
//! the same process), so that a change to the handshake's configuration (the ticketer,
//! the crypto provider, ALPN) shows up here before `bench/run.sh`'s `https` scenario.
//!
//! Run with `cargo bench -p switchyard --bench tls_accept`; CI only compiles it.

#![allow(
    clippy::unwrap_used,
    reason = "the benchmark's setup panics on failure"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{Criterion, criterion_main};
use rustls::pki_types::{CertificateDer, ServerName};
use switchyard::server::{ListenOptions, Listener, serve, service_fn};
use switchyard::{Body, Pem, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A server on 127.0.0.1 with a fresh self-signed ECDSA P-256 certificate; its address
/// and the certificate, for the client to trust.
async fn server() -> (
    SocketAddr,
    CertificateDer<'static>,
    switchyard::Server<switchyard::server::LocalAddr>,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = TlsConfig::from_pem(
        Pem::Bytes(cert.pem().into_bytes()),
        Pem::Bytes(key.serialize_pem().into_bytes()),
    )
    .unwrap();
    let hello = service_fn(|_req| async {
        Ok::<_, Infallible>(http::Response::new(Body::from("Hello, world!")))
    });
    let listener = Listener::bind("127.0.0.1:0").await.unwrap();
    let server = serve(
        listener,
        move |_conn| hello,
        ListenOptions::default().tls(tls),
    );
    let addr = server.local_addr().tcp().unwrap();
    (addr, cert.der().clone(), server)
}

/// The client's configuration: trusts `cert`, TLS 1.3, `http/1.1` by ALPN, and rustls's
/// session store (so its next connection offers a ticket).
fn client(cert: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(switchyard::crypto::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One connection: handshake, `GET /` with `Connection: close`, the answer read to the end.
async fn one(connector: &TlsConnector, addr: SocketAddr) -> rustls::HandshakeKind {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    kind
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (addr, cert, _server) = rt.block_on(server());
    let mut group = c.benchmark_group("tls_accept");
    group.bench_function("full handshake, ECDSA P-256", |b| {
        b.iter(|| {
            // A new client each time: nothing to resume.
            let connector = client(cert.clone());
            let kind = rt.block_on(one(&connector, addr));
            assert_eq!(kind, rustls::HandshakeKind::Full);
        });
    });
    let connector = client(cert.clone());
    rt.block_on(one(&connector, addr));
    group.bench_function("resumed handshake (ticket)", |b| {
        b.iter(|| {
            let kind = rt.block_on(one(&connector, addr));
            assert_eq!(kind, rustls::HandshakeKind::Resumed);
        });
    });
    group.finish();
}

/// The benchmark group, a public function that criterion's macro makes.
mod group {
    #![allow(
        missing_docs,
        reason = "criterion's macro makes an undocumented function"
    )]
    use super::bench;
    criterion::criterion_group!(benches, bench);
}
use group::benches;
criterion_main!(benches);
