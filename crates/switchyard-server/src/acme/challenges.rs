//! The challenges this replica answers, and the public port's certificate resolver.
//!
//! TLS-ALPN-01 (RFC 8737): a handshake that offers only the `acme-tls/1` protocol and
//! names a domain being validated gets a self-signed certificate for that name carrying
//! the SHA-256 digest of the key authorization in its `acmeIdentifier` extension
//! (RFC 8737 §3). Every other handshake gets the current certificate, or none before the
//! first one is issued (the handshake then fails with an `access_denied` alert).
//!
//! HTTP-01 (RFC 8555 §8.3): `GET /.well-known/acme-challenge/<token>` on the plain-HTTP
//! port answers the key authorization.
//!
//! The maps are read only by these two answers, never on the path of an ordinary
//! request, so a lock is fine here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The challenges in progress: by domain (TLS-ALPN-01) and by token (HTTP-01).
#[derive(Debug, Default)]
pub(crate) struct Challenges {
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    http: RwLock<HashMap<String, String>>,
}

/// One challenge as it is stored and shared between replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// TLS-ALPN-01 for a domain.
    TlsAlpn { domain: String },
    /// HTTP-01 for a token.
    Http { token: String },
}

/// The public port's certificate: the current one, or a challenge's.
#[derive(Debug)]
pub(crate) struct Resolver {
    pub(crate) current: Option<Arc<CertifiedKey>>,
    pub(crate) challenges: Arc<Challenges>,
}

// === impl Challenge ===

impl Challenge {
    /// The name it is stored under: `tls-alpn:<domain>` or `http:<token>`.
    pub(crate) fn name(&self) -> String {
        match self {
            Self::TlsAlpn { domain } => format!("tls-alpn:{domain}"),
            Self::Http { token } => format!("http:{token}"),
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        if let Some(domain) = name.strip_prefix("tls-alpn:") {
            return Some(Self::TlsAlpn {
                domain: domain.to_owned(),
            });
        }
        name.strip_prefix("http:").map(|token| Self::Http {
            token: token.to_owned(),
        })
    }
}

// === impl Challenges ===

impl Challenges {
    /// Answers `challenge` with `key_authorization` from now on.
    pub(crate) fn insert(
        &self,
        challenge: &Challenge,
        key_authorization: &str,
    ) -> Result<(), String> {
        match challenge {
            Challenge::TlsAlpn { domain } => {
                let cert = Arc::new(tls_alpn_certificate(domain, key_authorization)?);
                write(&self.tls_alpn).insert(domain.to_ascii_lowercase(), cert);
            }
            Challenge::Http { token } => {
                write(&self.http).insert(token.clone(), key_authorization.to_owned());
            }
        }
        Ok(())
    }

    /// Stops answering `challenge`.
    pub(crate) fn remove(&self, challenge: &Challenge) {
        match challenge {
            Challenge::TlsAlpn { domain } => {
                write(&self.tls_alpn).remove(&domain.to_ascii_lowercase());
            }
            Challenge::Http { token } => {
                write(&self.http).remove(token);
            }
        }
    }

    /// Replaces every challenge with `all` (a replica catching up with the store).
    pub(crate) fn replace_all(&self, all: &[(Challenge, String)]) {
        let mut tls_alpn = HashMap::new();
        let mut http = HashMap::new();
        for (challenge, key_authorization) in all {
            match challenge {
                Challenge::TlsAlpn { domain } => {
                    match tls_alpn_certificate(domain, key_authorization) {
                        Ok(cert) => {
                            tls_alpn.insert(domain.to_ascii_lowercase(), Arc::new(cert));
                        }
                        Err(e) => tracing::warn!("ACME: challenge for {domain}: {e}"),
                    }
                }
                Challenge::Http { token } => {
                    http.insert(token.clone(), key_authorization.clone());
                }
            }
        }
        *write(&self.tls_alpn) = tls_alpn;
        *write(&self.http) = http;
    }

    /// The key authorization for an HTTP-01 token.
    pub(crate) fn http(&self, token: &str) -> Option<String> {
        self.http
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    fn tls_alpn(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&domain.to_ascii_lowercase())
            .cloned()
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The TLS-ALPN-01 certificate of RFC 8737 §3: self-signed, for `domain` alone, with the
/// critical `acmeIdentifier` extension holding SHA-256 of the key authorization.
fn tls_alpn_certificate(domain: &str, key_authorization: &str) -> Result<CertifiedKey, String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])
        .map_err(|e| format!("challenge certificate: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = switchyard::crypto::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

// === impl Resolver ===

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: the validation offers `acme-tls/1` and nothing else.
        let acme = hello.alpn().is_some_and(|mut offered| {
            offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
        });
        if acme {
            // Only the challenge certificate, and only for a name being validated; an
            // unknown name fails the handshake.
            return self.challenges.tls_alpn(hello.server_name()?);
        }
        self.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [
            Challenge::TlsAlpn {
                domain: "a.example".to_owned(),
            },
            Challenge::Http {
                token: "tok_-1".to_owned(),
            },
        ] {
            assert_eq!(Challenge::from_name(&c.name()), Some(c));
        }
        assert_eq!(Challenge::from_name("other"), None);
    }

    #[test]
    fn challenges_are_answered_until_removed() {
        let challenges = Challenges::default();
        let tls = Challenge::TlsAlpn {
            domain: "A.example".to_owned(),
        };
        let http = Challenge::Http {
            token: "t".to_owned(),
        };
        challenges.insert(&tls, "t.thumb").unwrap();
        challenges.insert(&http, "t.thumb").unwrap();
        assert!(challenges.tls_alpn("a.example").is_some());
        assert_eq!(challenges.http("t").as_deref(), Some("t.thumb"));
        challenges.remove(&tls);
        challenges.remove(&http);
        assert!(challenges.tls_alpn("a.example").is_none());
        assert!(challenges.http("t").is_none());
        challenges.replace_all(&[(http, "k".to_owned())]);
        assert_eq!(challenges.http("t").as_deref(), Some("k"));
    }
}
