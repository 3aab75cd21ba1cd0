//! Upstream connection settings against real peers: the local address of
//! outgoing connections, client certificates for upstreams that ask for
//! one, and an HTTP/2 upstream that says GOAWAY (the connection is replaced,
//! never kept: reply-from #409).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Body, Pem, Protocol, Proxy, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// http-proxy-3's `localAddress`: outgoing connections come from the
/// configured address (127.0.0.2, also on loopback).
#[tokio::test]
async fn local_address_binds_outgoing_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let _ = tx.send(peer.ip());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{addr}")).unwrap())
        .configure_client(|c| c.local_address = Some(local))
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let (status, _, body) = get(&format!("http://{}/", server.local_addr())).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    assert_eq!(within(rx.recv()).await.unwrap(), local);
}

/// An HTTPS upstream that requires a client certificate signed by its CA.
async fn mtls_backend(pki: &Pki) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain =
        vec![rustls::pki_types::CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Body::from("mutual")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// Issue 3: client certificates for upstreams (PEM). Without one the
/// handshake fails (502); with one signed by the upstream's CA it works.
#[tokio::test]
async fn client_certificate_for_an_upstream_that_asks_for_one() {
    let pki = pki();
    let addr = mtls_backend(&pki).await;
    let target = Target::parse(&format!("https://localhost:{}", addr.port())).unwrap();
    let without = Proxy::builder()
        .target(target.clone())
        .configure_client(|c| c.ca = Some(Pem::from(pki.ca_pem.as_str())))
        .build()
        .unwrap();
    let server = listen(&without).await;
    let (status, _, _) = get(&format!("http://{}/", server.local_addr())).await;
    assert_eq!(status, 502);
    let with = Proxy::builder()
        .target(target)
        .configure_client(|c| {
            c.ca = Some(Pem::from(pki.ca_pem.as_str()));
            c.client_cert = Some((
                Pem::from(pki.cert_pem.as_str()),
                Pem::from(pki.key_pem.as_str()),
            ));
        })
        .build()
        .unwrap();
    let server = listen(&with).await;
    let (status, _, body) = get(&format!("http://{}/", server.local_addr())).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"mutual"[..]));
}

/// reply-from #409: an h2c upstream that sends
/// GOAWAY after its first answer. The closed connection is never reused:
/// the next request opens a new one and succeeds.
#[tokio::test]
async fn goaway_connection_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let closed = closed_tx.clone();
            tokio::spawn(async move {
                let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let answered = answered_tx.clone();
                    async move {
                        let _ = answered.send(());
                        Ok::<_, Infallible>(Response::new(Body::from("h2")))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = answered_rx.recv() => {
                        // GOAWAY once the first answer is on its way.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    let proxy = Proxy::builder()
        .target(
            Target::parse(&format!("http://{addr}"))
                .unwrap()
                .with_protocol(Protocol::Http2),
        )
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let url = format!("http://{}/", server.local_addr());
    let (status, _, body) = get(&url).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"h2"[..]));
    within(closed_rx.recv()).await.unwrap();
    for _ in 0..3 {
        let (status, _, body) = get(&url).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"h2"[..]));
        within(closed_rx.recv()).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

/// A backend that answers each request on a connection with a keep-alive
/// `200 ok`; after `answers` answers it closes the connection. Reports
/// accepted connections and each close.
async fn closing_backend(
    answers: usize,
) -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (closed, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut answered = 0;
                let mut buf = [0u8; 4096];
                while answered < answers {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                        answered += 1;
                    }
                }
                drop(s);
                let _ = closed.send(());
            });
        }
    });
    (addr, accepted, closed_rx)
}

/// An upstream that closes a kept-alive connection after one answer (its
/// keep-alive timeout, say): the next request goes out on a fresh connection
/// and gets its answer, never a 502 for the stale one.
#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_reused() {
    let (addr, accepted, mut closed) = closing_backend(1).await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let server = listen(&proxy).await;
    let url = format!("http://{}/", server.local_addr());
    for i in 1..=4 {
        let (status, _, body) = get(&url).await;
        assert_eq!(
            (status.as_u16(), &body[..]),
            (200, &b"ok"[..]),
            "request {i}"
        );
        within(closed.recv()).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

/// A proxy listening in front of `addr` with these client options.
async fn pooling_proxy(
    addr: std::net::SocketAddr,
    client: switchyard::ClientOptions,
) -> switchyard::Server {
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{addr}")).unwrap())
        .client_options(client)
        .build()
        .unwrap();
    listen(&proxy).await
}

/// `pool_idle_timeout`: an upstream connection left idle that long is closed
/// by the proxy; until then requests share it.
#[tokio::test]
async fn idle_upstream_connections_close_after_the_pool_idle_timeout() {
    let (addr, accepted, mut closed) = closing_backend(usize::MAX).await;
    let server = pooling_proxy(addr, {
        let mut c = switchyard::ClientOptions::default();
        c.pool_idle_timeout = Some(std::time::Duration::from_millis(200));
        c
    })
    .await;
    let url = format!("http://{}/", server.local_addr());
    let start = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(get(&url).await.0, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    within(closed.recv()).await.unwrap();
    assert!(start.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(get(&url).await.0, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A proxy used from one runtime and then another (a runtime per test, or per
/// request handler pool): the idle sweep started on the first ends with it, and
/// the second runtime's idle connection is still closed after
/// `pool_idle_timeout` (the sweep is not left marked as running).
#[test]
fn the_idle_sweep_survives_its_runtime() {
    let backend_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, accepted, mut closed) = backend_rt.block_on(closing_backend(usize::MAX));
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    let proxy = Proxy::builder()
        .client_options({
            let mut c = switchyard::ClientOptions::default();
            c.pool_idle_timeout = Some(std::time::Duration::from_millis(200));
            c
        })
        .build()
        .unwrap();
    let get_once = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let req = Request::get("/").body(Body::empty()).unwrap();
            let res = within(proxy.try_web(req, switchyard::Call::new().target(&target)))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            body_bytes(res.into_body()).await
        })
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };

    let first = runtime();
    get_once(&first);
    // Gone with its runtime: the connection's task and the sweep.
    drop(first);
    backend_rt.block_on(async { within(closed.recv()).await.unwrap() });

    let second = runtime();
    get_once(&second);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // The second runtime's sweep closes its idle connection.
    second.block_on(async { within(closed.recv()).await.unwrap() });
}

/// `pool_max_idle_per_host: 0` keeps no idle connection: one per request.
#[tokio::test]
async fn no_idle_connections_kept_when_the_pool_holds_none() {
    let (addr, accepted, mut closed) = closing_backend(usize::MAX).await;
    let server = pooling_proxy(addr, {
        let mut c = switchyard::ClientOptions::default();
        c.pool_max_idle_per_host = 0;
        c
    })
    .await;
    let url = format!("http://{}/", server.local_addr());
    for i in 1..=3 {
        assert_eq!(get(&url).await.0, 200);
        // The proxy closes the connection it will not keep.
        within(closed.recv()).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), i);
    }
}
