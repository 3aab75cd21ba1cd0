//! TLS towards upstreams: the client configuration (roots, `ca`, a client
//! certificate), the verifier that accepts a `ca` certificate presented as a
//! target's own ([`anchor`]), and the one used when `secure` is off.

mod anchor;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;

use crate::error::ConfigError;
use crate::options::ClientOptions;

/// The client TLS configuration the options describe (no ALPN: each
/// connector sets its own).
pub(crate) fn config(opts: &ClientOptions) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
