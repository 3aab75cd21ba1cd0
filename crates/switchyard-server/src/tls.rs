//! rustls configuration of the listeners from CHP's `--ssl-*` and `--api-ssl-*` flags,
//! with the build's crypto provider (`switchyard::crypto`) and PEM files read by
//! `rustls-pki-types`. The `--client-ssl-*` flags go to the engine, which builds the one configuration for https targets
//! (`public::engine`).
//!
//! Differences from Node/OpenSSL, reported at start-up:
//! * `--ssl-ciphers`, `--ssl-allow-rc4`, `--ssl-dhparam` are accepted and ignored: rustls
//!   offers only modern AEAD suites with ECDHE key exchange.
//! * `--ssl-protocol` accepts `TLSv1_2`/`TLSv1.2`, `TLSv1_3`/`TLSv1.3`, `TLS`/`SSLv23`
//!   (both); TLS 1.0/1.1 are refused (rustls does not implement them).
//! * Passphrase-protected (encrypted) private keys are refused with a clear message.
//!
//! The same functions build the configurations again when the files change
//! (`reload.rs`); a certificate past its `notAfter` is refused then.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cli::{Cli, Env};

/// A TLS set-up that cannot be built; the message names the flag and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TlsError(String);

/// The TLS configurations of the public and the API listeners (none: plain HTTP), with
/// the flags they were built from.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) public: Option<Loaded>,
    pub(crate) api: Option<Loaded>,
    pub(crate) public_flags: ServerTls,
    pub(crate) api_flags: ServerTls,
}

/// A configuration built from the files, and its leaf certificate's facts.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) leaf: Leaf,
}

/// What the metrics and the logs say of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// `notAfter`, in seconds since the Unix epoch.
    pub(crate) not_after: i64,
}

/// The server-side flags of one listener (public or API).
#[derive(Debug, Clone)]
pub(crate) struct ServerTls {
    pub(crate) flag: &'static str,
    pub(crate) key: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) request_cert: bool,
    pub(crate) reject_unauthorized: bool,
    pub(crate) passphrase: bool,
    pub(crate) protocol: Option<String>,
}

// === impl Listeners ===

impl Listeners {
    /// Both listeners' configurations from the flags; `--ssl-protocol` is checked even
    /// when neither serves TLS.
    pub(crate) fn from_cli(cli: &Cli, env: &Env) -> Result<Self, TlsError> {
        protocol_versions(cli.ssl_protocol.as_deref())?;
        let public_flags = ServerTls {
            flag: "--ssl",
            key: cli.ssl_key.clone(),
            cert: cli.ssl_cert.clone(),
            ca: cli.ssl_ca.clone(),
            request_cert: cli.ssl_request_cert,
            reject_unauthorized: cli.ssl_reject_unauthorized,
            passphrase: env.ssl_key_passphrase.is_some(),
            protocol: cli.ssl_protocol.clone(),
        };
        let api_flags = ServerTls {
            flag: "--api-ssl",
            key: cli.api_ssl_key.clone(),
            cert: cli.api_ssl_cert.clone(),
            ca: cli.api_ssl_ca.clone(),
            request_cert: cli.api_ssl_request_cert,
            reject_unauthorized: cli.api_ssl_reject_unauthorized,
            passphrase: env.api_ssl_key_passphrase.is_some(),
            protocol: cli.ssl_protocol.clone(),
        };
        let public = server_config(&public_flags)?;
        let api = server_config(&api_flags)?;
        for (loaded, flags) in [(&public, &public_flags), (&api, &api_flags)] {
            if let Some(Loaded { leaf, .. }) = loaded
                && leaf.expired()
            {
                // Served all the same, as CHP would; a reload refuses it.
                tracing::warn!(
                    "{}-cert {}: the certificate expired at {}",
                    flags.flag,
                    flags.cert.as_deref().unwrap_or(Path::new("")).display(),
                    leaf.not_after_text()
                );
            }
        }
        Ok(Self {
            public,
            api,
            public_flags,
            api_flags,
        })
    }
}

// === impl ServerTls ===

impl ServerTls {
    /// The files a reload reads: key, certificate, CA.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        [&self.key, &self.cert, &self.ca]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

// === impl Leaf ===

impl Leaf {
    /// The facts of a DER certificate.
    pub(crate) fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        Ok(Self {
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether `notAfter` has passed.
    pub(crate) fn expired(&self) -> bool {
        self.not_after < jiff::Timestamp::now().as_second()
    }

    /// `notAfter` as RFC 3339.
    pub(crate) fn not_after_text(&self) -> String {
        jiff::Timestamp::from_second(self.not_after)
            .map_or_else(|_| self.not_after.to_string(), |t| t.to_string())
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
pub(crate) fn server_config(flags: &ServerTls) -> Result<Option<Loaded>, TlsError> {
    let protocol = flags.protocol.as_deref();
    let (key_path, cert_path) = match (flags.key.as_deref(), flags.cert.as_deref()) {
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
    let leaf = Leaf::of(&certs[0])
        .map_err(|e| TlsError(format!("{}-cert {}: {e}", flags.flag, cert_path.display())))?;
    let key = read_key(key_path, &format!("{}-key", flags.flag), flags.passphrase)?;
    let builder = ServerConfig::builder_with_provider(switchyard::crypto::provider())
        .with_protocol_versions(protocol_versions(protocol)?)
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?;
    let builder = if flags.request_cert {
        let roots = match flags.ca.as_deref() {
            Some(ca) => root_store(ca, &format!("{}-ca", flags.flag))?,
            None => webpki_root_store(),
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            switchyard::crypto::provider(),
        );
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
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        let e = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key is not the certificate's key".to_owned()
            }
            e => e.to_string(),
        };
        TlsError(format!(
            "{}-key {} and {}-cert {}: {e}",
            flags.flag,
            key_path.display(),
            flags.flag,
            cert_path.display()
        ))
    })?;
    // Resumption by stateless tickets, one key per configuration: a session never resumes
    // on another listener, whose client-certificate policy may differ.
    config.ticketer = switchyard::crypto::ticketer()
        .map_err(|e| TlsError(format!("{}: session tickets: {e}", flags.flag)))?;
    Ok(Some(Loaded {
        config: Arc::new(config),
        leaf,
    }))
}

/// The facts of the first certificate of a PEM file (the client certificate of
/// `--client-ssl-cert`, checked before the engine reloads it).
pub(crate) fn leaf_of_file(path: &Path, flag: &str) -> Result<Leaf, TlsError> {
    let certs = read_certs(path, flag)?;
    Leaf::of(&certs[0]).map_err(|e| TlsError(format!("{flag} {}: {e}", path.display())))
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
        let flags = |key: &Path| ServerTls {
            flag: "--ssl",
            key: Some(key.to_owned()),
            cert: Some(cert_path.clone()),
            ca: Some(cert_path.clone()),
            request_cert: true,
            reject_unauthorized: false,
            passphrase: false,
            protocol: None,
        };
        let ok = flags(&key_path);
        let loaded = server_config(&ok).unwrap().unwrap();
        assert!(!loaded.leaf.expired());
        let enc = flags(&enc_path);
        let err = server_config(&enc).unwrap_err().to_string();
        assert!(err.contains("passphrase-protected"), "{err}");

        // The key of another certificate: refused, naming both files.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other_key = dir.join("other.pem");
        std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
        let err = server_config(&flags(&other_key)).unwrap_err().to_string();
        assert!(err.contains("other.pem") && err.contains("c.pem"), "{err}");

        let only_key = ServerTls { cert: None, ..ok };
        assert!(server_config(&only_key).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
