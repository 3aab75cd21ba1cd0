//! The rustls crypto provider that every TLS configuration of the engine and
//! the server uses, chosen at build time: *ring* by default, *aws-lc-rs* with
//! the `aws-lc-rs` feature. `bench/run.sh` measures both side by side (TLS
//! handshakes and kept-alive TLS requests); `bench/README.md` has the figures
//! and why the default is what it is.

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
