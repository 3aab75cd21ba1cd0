//! The rustls crypto provider that every TLS configuration of the engine and
//! the server uses, chosen at build time: *ring* unless the `aws-lc-rs` feature
//! is on. The engine library defaults to ring (the smaller build; the program
//! that embeds it chooses); the server binary turns `aws-lc-rs` on by default,
//! because it measured as cheap or cheaper everywhere and about half of ring's
//! CPU for an RSA handshake on CPUs with AVX-512 IFMA. `bench/run.sh` measures
//! both side by side; `bench/README.md` has the figures.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;

/// The crypto provider this build uses.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc-rs"))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// Makes this build's provider the process's default, for TLS configurations built
/// by other crates with `ClientConfig::builder()` (the Redis client's `rediss://`, for
/// one). rustls picks a default by itself only when exactly one provider is compiled
/// in; with both ring and aws-lc-rs in the process (the ACME client brings ring), those
/// builders would panic without it. Returns whether this call installed it: `false`
/// when a default was already set, by an earlier call or by the application.
pub fn install_default() -> bool {
    CryptoProvider::install_default(Arc::unwrap_or_clone(provider())).is_ok()
}

/// A session-ticket issuer for a server configuration (RFC 8446 §4.6.1), from this
/// build's provider: tickets are encrypted with a key of the process's own, rotated
/// every six hours, so resumption holds no memory per client. Without one, rustls
/// resumes TLS 1.3 sessions from an in-memory cache of 256 entries, too few for a
/// proxy in front of many browsers.
///
/// # Errors
///
/// When the system's random number generator fails.
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    #[cfg(feature = "aws-lc-rs")]
    return rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(not(feature = "aws-lc-rs"))]
    rustls::crypto::ring::Ticketer::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_default_is_this_builds_provider() {
        install_default();
        let default = CryptoProvider::get_default().expect("a default is installed");
        let names = |p: &CryptoProvider| format!("{:?} {:?}", p.kx_groups, p.cipher_suites);
        assert_eq!(names(default), names(&provider()));
        assert!(!install_default(), "the second call finds it set");
    }
}
