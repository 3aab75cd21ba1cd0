//! The TLS configuration of a listener, held so that it can be replaced while
//! the listener runs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;

use crate::error::ConfigError;
use crate::options::Pem;

/// A listener's TLS configuration: a handle on a [`rustls::ServerConfig`]
/// that every new handshake reads, and that [`TlsConfig::replace`] swaps
/// (a renewed certificate, say) without touching the connections already
/// open. Clones share the configuration.
///
/// ALPN: a configuration whose `alpn_protocols` list is empty gets one from
/// the listener, `h2` (when [`ListenOptions::http2`](super::ListenOptions)
/// is on) and `http/1.1`; a list set by the caller is used as it is.
///
/// # Reloading
///
/// Keep a clone of the handle given to [`ListenOptions::tls`](super::ListenOptions::tls)
/// and call [`TlsConfig::replace`] when the certificate changes. Handshakes
/// that start afterwards get the new configuration; connections already
/// open, their requests in flight and their WebSocket tunnels, are not
/// touched. A configuration with a certificate resolver of its own
/// ([`rustls::server::ResolvesServerCert`]) can also pick the certificate per
/// handshake, as an ACME client answering `acme-tls/1` does.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use switchyard::server::ListenOptions;
/// use switchyard::{Pem, Proxy, TlsConfig};
/// use tokio::signal::unix::{SignalKind, signal};
///
/// let load = || TlsConfig::from_pem(Pem::File("cert.pem".into()), Pem::File("key.pem".into()));
/// let tls = load()?;
/// let proxy = Proxy::to("http://127.0.0.1:8080")?;
/// let options = ListenOptions::default().tls(tls.clone());
/// let server = proxy.listen_with("127.0.0.1:8443", options).await?;
/// let mut hup = signal(SignalKind::hangup())?;
/// while hup.recv().await.is_some() {
///     match load() {
///         Ok(new) => tls.replace(new.current()),
///         // A pair that does not load (bad PEM, the key of another
///         // certificate): keep serving the one we have.
///         Err(e) => eprintln!("keeping the certificate served now: {e}"),
///     }
/// }
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    current: Arc<ArcSwap<Versions>>,
}

/// One configuration as given and as offered with and without `h2`.
#[derive(Debug)]
struct Versions {
    given: Arc<ServerConfig>,
    with_h2: Arc<ServerConfig>,
    http1: Arc<ServerConfig>,
}

// === impl TlsConfig ===

impl TlsConfig {
    /// Serves this configuration.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Versions::of(config))),
        }
    }

    /// A configuration from a certificate chain (leaf first) and its private
    /// key (PKCS#8, PKCS#1 or SEC1), both PEM, with rustls's safe defaults
    /// (TLS 1.2 and 1.3) and no client authentication.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] when the files cannot be read, hold no
    /// certificate, or the key does not parse or match.
    pub fn from_pem(cert: impl Into<Pem>, key: impl Into<Pem>) -> Result<Self, ConfigError> {
        let (cert, key) = (cert.into(), key.into());
        let chain = CertificateDer::pem_slice_iter(&cert.read()?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Tls(format!("bad certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(ConfigError::Tls(
                "no certificate in the certificate file".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key.read()?).map_err(|e| {
            ConfigError::Tls(format!(
                "bad key PEM (encrypted keys are not supported): {e}"
            ))
        })?;
        let mut config = ServerConfig::builder_with_provider(crate::crypto::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| ConfigError::Tls(format!("certificate and key: {e}")))?;
        config.ticketer = crate::crypto::ticketer().map_err(|e| ConfigError::Tls(e.to_string()))?;
        Ok(Self::new(Arc::new(config)))
    }

    /// Serves `config` from the next handshake on; connections already open
    /// keep the one they started with.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.current.store(Arc::new(Versions::of(config)));
    }

    /// The configuration served now, as it was given.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load().given.clone()
    }

    /// The configuration for the next handshake of a listener that serves
    /// HTTP/2 or not.
    pub(crate) fn for_handshake(&self, http2: bool) -> Arc<ServerConfig> {
        let versions = self.current.load();
        if http2 {
            versions.with_h2.clone()
        } else {
            versions.http1.clone()
        }
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &current.given.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl From<Arc<ServerConfig>> for TlsConfig {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self::new(config)
    }
}

// === impl Versions ===

impl Versions {
    fn of(given: Arc<ServerConfig>) -> Self {
        if !given.alpn_protocols.is_empty() {
            return Self {
                with_h2: given.clone(),
                http1: given.clone(),
                given,
            };
        }
        let offering = |protocols: &[&[u8]]| {
            let mut config = ServerConfig::clone(&given);
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        };
        Self {
            with_h2: offering(&[b"h2", b"http/1.1"]),
            http1: offering(&[b"http/1.1"]),
            given,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn alpn_follows_the_listener_unless_given() {
        let (cert, key) = pem_pair();
        let tls = TlsConfig::from_pem(cert.as_str(), key.as_str()).unwrap();
        assert!(tls.current().alpn_protocols.is_empty());
        assert_eq!(
            tls.for_handshake(true).alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(
            tls.for_handshake(false).alpn_protocols,
            [b"http/1.1".to_vec()]
        );

        let mut own = ServerConfig::clone(&tls.current());
        own.alpn_protocols = vec![b"http/1.1".to_vec()];
        tls.replace(Arc::new(own));
        assert_eq!(
            tls.for_handshake(true).alpn_protocols,
            [b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn bad_pem_is_a_config_error() {
        let (cert, _) = pem_pair();
        let err = TlsConfig::from_pem(cert.as_str(), "not a key").unwrap_err();
        assert!(err.to_string().contains("bad key PEM"), "{err}");
        let err = TlsConfig::from_pem("", "").unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
