//! rustls configuration of the listeners from CHP's `--ssl-*` and `--api-ssl-*` flags,
//! with the `ring` provider and PEM files read by `rustls-pki-types`. The `--client-ssl-*`
//! flags go to the engine, which builds the one configuration for https targets
//! (`public::engine`).
//!
//! Differences from Node/OpenSSL, reported at start-up:
//! * `--ssl-ciphers`, `--ssl-allow-rc4`, `--ssl-dhparam` are accepted and ignored: rustls
//!   offers only modern AEAD suites with ECDHE key exchange.
//! * `--ssl-protocol` accepts `TLSv1_2`/`TLSv1.2`, `TLSv1_3`/`TLSv1.3`, `TLS`/`SSLv23`
//!   (both); TLS 1.0/1.1 are refused (rustls does not implement them).
//! * Passphrase-protected (encrypted) private keys are refused with a clear message.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cli::{Cli, Env};

/// A TLS set-up that cannot be built; the message names the flag and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TlsError(String);

/// The TLS configurations of the public and the API listeners (none: plain HTTP).
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) public: Option<Arc<ServerConfig>>,
    pub(crate) api: Option<Arc<ServerConfig>>,
}

/// The server-side flags of one listener (public or API).
#[derive(Debug)]
pub(crate) struct ServerTls<'a> {
    pub(crate) flag: &'static str,
    pub(crate) key: Option<&'a Path>,
    pub(crate) cert: Option<&'a Path>,
    pub(crate) ca: Option<&'a Path>,
    pub(crate) request_cert: bool,
    pub(crate) reject_unauthorized: bool,
    pub(crate) passphrase: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// === impl Listeners ===

impl Listeners {
    /// Both listeners' configurations from the flags; `--ssl-protocol` is checked even
    /// when neither serves TLS.
    pub(crate) fn from_cli(cli: &Cli, env: &Env) -> Result<Self, TlsError> {
        let protocol = cli.ssl_protocol.as_deref();
        protocol_versions(protocol)?;
        let public = server_config(
            &ServerTls {
                flag: "--ssl",
                key: cli.ssl_key.as_deref(),
                cert: cli.ssl_cert.as_deref(),
                ca: cli.ssl_ca.as_deref(),
                request_cert: cli.ssl_request_cert,
                reject_unauthorized: cli.ssl_reject_unauthorized,
                passphrase: env.ssl_key_passphrase.is_some(),
            },
            protocol,
        )?;
        let api = server_config(
            &ServerTls {
                flag: "--api-ssl",
                key: cli.api_ssl_key.as_deref(),
                cert: cli.api_ssl_cert.as_deref(),
                ca: cli.api_ssl_ca.as_deref(),
                request_cert: cli.api_ssl_request_cert,
                reject_unauthorized: cli.api_ssl_reject_unauthorized,
                passphrase: env.api_ssl_key_passphrase.is_some(),
            },
            protocol,
        )?;
        Ok(Self { public, api })
    }
}

/// Protocol versions from `--ssl-protocol`.
pub(crate) fn protocol_versions(
    protocol: Option<&str>,
) -> Result<&'static [&'static SupportedProtocolVersion], TlsError> {
    static BOTH: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static V12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static V13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    let Some(p) = protocol else {
        return Ok(&BOTH);
    };
    let p = p
        .trim_end_matches("_method")
        .replace('.', "_")
        .to_ascii_lowercase();
    match p.as_str() {
        "tlsv1_2" | "tls1_2" => Ok(&V12),
        "tlsv1_3" | "tls1_3" => Ok(&V13),
        "tls" | "sslv23" | "tls_server" | "tls_client" => Ok(&BOTH),
        _ => Err(TlsError(format!(
            "--ssl-protocol {}: unsupported; use TLSv1_2 or TLSv1_3 (TLS 1.0/1.1 and SSL are not available)",
            protocol.unwrap_or_default()
        ))),
    }
}

/// Logs the OpenSSL-only options that rustls ignores.
pub(crate) fn warn_ignored(cli: &Cli) {
    if cli.ssl_ciphers.is_some() {
        tracing::warn!("--ssl-ciphers is ignored: rustls uses its own modern cipher suites");
    }
    if cli.ssl_dhparam.is_some() {
        tracing::warn!("--ssl-dhparam is ignored: rustls offers ECDHE key exchange only");
    }
    if cli.ssl_allow_rc4 {
        tracing::warn!("--ssl-allow-rc4 is ignored: RC4 is never enabled");
    }
}

/// A server config, or `None` when neither key nor certificate was given.
pub(crate) fn server_config(
    flags: &ServerTls<'_>,
    protocol: Option<&str>,
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (key_path, cert_path) = match (flags.key, flags.cert) {
        (None, None) => return Ok(None),
        (Some(k), Some(c)) => (k, c),
        _ => {
            return Err(TlsError(format!(
                "{0}-key and {0}-cert must be given together",
                flags.flag
            )));
        }
    };
    let certs = read_certs(cert_path, &format!("{}-cert", flags.flag))?;
    let key = read_key(key_path, &format!("{}-key", flags.flag), flags.passphrase)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(protocol_versions(protocol)?)
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?;
    let builder = if flags.request_cert {
        let roots = match flags.ca {
            Some(ca) => root_store(ca, &format!("{}-ca", flags.flag))?,
            None => webpki_root_store(),
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let verifier = if flags.reject_unauthorized {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsError(format!("{}-ca: {e}", flags.flag)))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    // No ALPN list: the listener offers `h2` where it serves HTTP/2, and `http/1.1`.
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("{}-key/{}-cert: {e}", flags.flag, flags.flag)))?;
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| TlsError(format!("{flag} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{flag} {}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path, flag: &str, passphrase: bool) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text =
        std::fs::read(path).map_err(|e| TlsError(format!("{flag} {}: {e}", path.display())))?;
    if text.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(TlsError(format!(
            "{flag} {}: passphrase-protected keys are not supported{}; decrypt it first \
             (openssl pkey -in key.pem -out plain.pem)",
            path.display(),
            if passphrase {
                " (the passphrase variable is set but cannot be used)"
            } else {
                ""
            }
        )));
    }
    PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| TlsError(format!("{flag} {}: {e}", path.display())))
}

fn root_store(path: &Path, flag: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(read_certs(path, flag)?);
    if added == 0 {
        return Err(TlsError(format!(
            "{flag} {}: no usable CA certificate",
            path.display()
        )));
    }
    Ok(roots)
}

fn webpki_root_store() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_versions(None).unwrap().len(), 2);
        assert_eq!(protocol_versions(Some("TLSv1_2")).unwrap().len(), 1);
        assert_eq!(protocol_versions(Some("TLSv1.3")).unwrap().len(), 1);
        assert_eq!(protocol_versions(Some("TLSv1_2_method")).unwrap().len(), 1);
        assert!(protocol_versions(Some("TLSv1")).is_err());
        assert!(protocol_versions(Some("SSLv3")).is_err());
    }

    #[test]
    fn server_config_from_generated_pem_and_encrypted_key_refused() {
        let dir = std::env::temp_dir().join(format!("switchyard-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert_path, key_path, enc_path) =
            (dir.join("c.pem"), dir.join("k.pem"), dir.join("e.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(
            &enc_path,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let flags = |key: &'static Path| ServerTls {
            flag: "--ssl",
            key: Some(key),
            cert: Some(Box::leak(cert_path.clone().into_boxed_path())),
            ca: Some(Box::leak(cert_path.clone().into_boxed_path())),
            request_cert: true,
            reject_unauthorized: false,
            passphrase: false,
        };
        let ok = flags(Box::leak(key_path.into_boxed_path()));
        assert!(server_config(&ok, None).unwrap().is_some());
        let enc = flags(Box::leak(enc_path.into_boxed_path()));
        let err = server_config(&enc, None).unwrap_err().to_string();
        assert!(err.contains("passphrase-protected"), "{err}");
        let only_key = ServerTls { cert: None, ..ok };
        assert!(server_config(&only_key, None).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
