//! Run with: cargo run -p switchyard --example http_to_https
//!
//! The http-proxy-3 README's "HTTP → HTTPS": a plain proxy on
//! 127.0.0.1:8080 in front of an HTTPS target on 127.0.0.1:9443 whose
//! certificate is signed by a CA made at start. The proxy verifies the
//! target's certificate and host name against that CA (the `ca` option;
//! verification is on by default and `secure: false` turns it off).
//!
//! ```text
//! curl -i http://127.0.0.1:8080/hello
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use switchyard::{Body, Pem, Proxy, Target};
use tokio::net::TcpListener;

#[path = "support/mod.rs"]
mod support;
use support::{Pki, env_addr, pki};

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's (plain HTTP) address.
    pub proxy: SocketAddr,
    /// The running proxy; dropping it stops the proxy.
    pub server: switchyard::Server,
    /// The HTTPS target's address.
    pub target: SocketAddr,
}

/// Starts an HTTPS target and a plain proxy to it that trusts its CA.
///
/// # Errors
///
/// When an address cannot be bound or the TLS material cannot be made.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let pki = pki()?;
    let target = https_target(target_addr, &pki).await?;
    let proxy = Proxy::builder()
        .target(Target::parse(&format!(
            "https://localhost:{}",
            target.port()
        ))?)
        .configure(|o| o.change_origin = true)
        .configure_client(|c| c.ca = Some(Pem::from(pki.ca_pem.as_str())))
        .build()?;
    let server = proxy.listen(proxy_addr).await?;
    Ok(Running {
        proxy: server.local_addr(),
        server,
        target,
    })
}

/// An HTTPS origin that says which TLS-protected path it was asked for.
async fn https_target(addr: &str, pki: &Pki) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let chain =
        CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Body::from(format!(
                        "hello over TLS from the target: {}\n",
                        req.uri()
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:8080"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9443"),
    )
    .await?;
    println!(
        "proxy on http://{} -> https://localhost:{}\ntry: curl -i http://{}/hello",
        running.proxy,
        running.target.port(),
        running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
