//! TLS towards upstreams: the client configuration (roots, `ca`, a client
//! certificate) and the verifier used when `secure` is off.

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
        if let Some(ca) = &opts.ca {
            let pem = ca.read()?;
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ConfigError::Tls(format!("bad CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::Tls(format!("bad CA certificate: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(ConfigError::Tls("the CA file holds no certificate".into()));
            }
        }
        builder.with_root_certificates(roots)
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
