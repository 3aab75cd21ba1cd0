//! TLS towards upstreams: the client configuration (roots, `ca`, a client
//! certificate), the verifier that accepts a `ca` certificate presented as a
//! target's own ([`anchor`]), the one used when `secure` is off, and the
//! handle that replaces the configuration for new connections
//! ([`UpstreamTls`]).

mod anchor;

use std::sync::Arc;

use arc_swap::ArcSwap;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;

use crate::error::ConfigError;
use crate::options::ClientOptions;

/// The ALPN offers of the connectors, by [`Offer`]: HTTP/1.1 only, `h2` or
/// HTTP/1.1, `h2` only.
const ALPN: [&[&[u8]]; 3] = [&[b"http/1.1"], &[b"h2", b"http/1.1"], &[b"h2"]];

/// Which ALPN list a connector offers (an index into [`ALPN`]).
pub(crate) type Offer = usize;

/// The TLS configuration of a proxy's connections to its targets, as a handle
/// that replaces it for the connections opened from then on (a renewed client
/// certificate or CA, say); connections already open, pooled ones included,
/// keep the configuration they were made with. From [`Proxy::upstream_tls`];
/// clones share it.
///
/// [`Proxy::upstream_tls`]: crate::Proxy::upstream_tls
///
/// # Examples
///
/// Reload the client certificate and CA files the proxy was built with, on
/// SIGHUP:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use switchyard::{Pem, Proxy};
/// use tokio::signal::unix::{SignalKind, signal};
///
/// let proxy = Proxy::builder()
///     .configure_client(|c| {
///         c.ca = Some(Pem::File("/etc/targets/ca.pem".into()));
///         c.client_cert = Some((
///             Pem::File("/etc/targets/client.pem".into()),
///             Pem::File("/etc/targets/client.key".into()),
///         ));
///     })
///     .build()?;
/// let tls = proxy.upstream_tls();
/// let mut hup = signal(SignalKind::hangup())?;
/// while hup.recv().await.is_some() {
///     // A file that does not load leaves the configuration as it was.
///     if let Err(e) = tls.reload() {
///         eprintln!("keeping the client certificate: {e}");
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct UpstreamTls {
    inner: Arc<UpstreamTlsInner>,
}

struct UpstreamTlsInner {
    /// The options the configuration is built from (their PEM files are read
    /// again by [`UpstreamTls::reload`]).
    opts: ClientOptions,
    /// One configuration per [`ALPN`] offer.
    configs: ArcSwap<[Arc<rustls::ClientConfig>; 3]>,
}

// === impl UpstreamTls ===

impl UpstreamTls {
    pub(crate) fn new(opts: &ClientOptions) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: Arc::new(UpstreamTlsInner {
                configs: ArcSwap::from_pointee(offers(config(opts)?)),
                opts: opts.clone(),
            }),
        })
    }

    /// Reads the client options' PEM files again (`ca`, `client_cert`) and
    /// uses the configuration they make for new connections.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] when a file cannot be read or does not load; the
    /// configuration in use is then kept.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.inner
            .configs
            .store(Arc::new(offers(config(&self.inner.opts)?)));
        Ok(())
    }

    /// Uses `config` for new connections; its ALPN list is replaced by each
    /// connector's own.
    pub fn replace(&self, config: rustls::ClientConfig) {
        self.inner.configs.store(Arc::new(offers(config)));
    }

    /// The configuration of a connector's next connection.
    pub(crate) fn for_offer(&self, offer: Offer) -> Arc<rustls::ClientConfig> {
        self.inner.configs.load()[offer].clone()
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("secure", &self.inner.opts.secure)
            .finish_non_exhaustive()
    }
}

/// `base` with each connector's ALPN list.
fn offers(base: rustls::ClientConfig) -> [Arc<rustls::ClientConfig>; 3] {
    let offering = |alpn: &[&[u8]], mut config: rustls::ClientConfig| {
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    };
    [
        offering(ALPN[0], base.clone()),
        offering(ALPN[1], base.clone()),
        offering(ALPN[2], base),
    ]
}

/// The client TLS configuration the options describe (no ALPN: each
/// connector sets its own).
pub(crate) fn config(opts: &ClientOptions) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = crate::crypto::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let builder = if opts.secure {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let anchors = match &opts.ca {
            Some(ca) => ca_certificates(&ca.read()?)?,
            None => Vec::new(),
        };
        for cert in &anchors {
            roots
                .add(cert.clone())
                .map_err(|e| ConfigError::Tls(format!("bad CA certificate: {e}")))?;
        }
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ConfigError::Tls(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(anchor::AnchorVerifier::new(
                webpki, anchors,
            )))
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    match &opts.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => {
            let chain = chain.read()?;
            let chain = CertificateDer::pem_slice_iter(&chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Tls(format!("bad client certificate PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key.read()?)
                .map_err(|e| ConfigError::Tls(format!("bad client key PEM: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::Tls(format!("client certificate: {e}")))
        }
    }
}

/// The certificates of a `ca` file: at least one, all parsed.
fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Tls(format!("bad CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls("the CA file holds no certificate".into()));
    }
    Ok(certs)
}

/// `secure: false`: accept any certificate, but still check the handshake
/// signatures, so the session is at least bound to the key presented.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
