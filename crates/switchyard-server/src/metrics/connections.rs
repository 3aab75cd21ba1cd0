//! `switchyard_client_connections{protocol}`: the public port's connections by the
//! protocol they speak. The serving layer counts connections, not protocols, and hyper
//! settles a connection's protocol inside it; a connection is therefore labelled by its
//! first request, through a mark its service holds: one relaxed load per request, and a
//! compare-and-swap at a connection's first.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::Metrics;

/// Open connections that have served HTTP/1 or HTTP/2 requests.
#[derive(Debug, Default)]
pub(crate) struct ByProtocol {
    http1: AtomicUsize,
    http2: AtomicUsize,
}

/// Not labelled yet: no request has arrived.
const UNSEEN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// A connection's label, held by its service (and every clone of it) and given back to
/// the counts when the last one is dropped, that is when the connection ends (or leaves
/// the server for a WebSocket tunnel).
#[derive(Debug)]
pub(crate) struct ConnProtocol {
    metrics: Arc<Metrics>,
    seen: AtomicU8,
}

// === impl ByProtocol ===

impl ByProtocol {
    /// The gauge's lines: `open` connections on the server (TLS handshakes and
    /// connections yet to send a request are `pending`), `tunnels` WebSocket tunnels.
    pub(super) fn render(&self, out: &mut String, open: usize, tunnels: usize) {
        let http1 = self.http1.load(Ordering::Relaxed);
        let http2 = self.http2.load(Ordering::Relaxed);
        // The counts are read one after the other: a connection that just ended may be
        // in `open` and not yet out of its protocol's count, or the reverse.
        let pending = open.saturating_sub(http1 + http2);
        let _ = writeln!(
            out,
            "# HELP switchyard_client_connections Client connections open on the public \
             port, by protocol (pending: in the TLS handshake or before a first request).\n\
             # TYPE switchyard_client_connections gauge"
        );
        for (protocol, n) in [
            ("http1.1", http1),
            ("http2", http2),
            ("websocket", tunnels),
            ("pending", pending),
        ] {
            let _ = writeln!(
                out,
                "switchyard_client_connections{{protocol=\"{protocol}\"}} {n}"
            );
        }
    }
}

// === impl ConnProtocol ===

impl ConnProtocol {
    /// The mark of a new connection.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            seen: AtomicU8::new(UNSEEN),
        }
    }

    /// Labels the connection by the version of its first request.
    pub(crate) fn saw(&self, version: http::Version) {
        if self.seen.load(Ordering::Relaxed) != UNSEEN {
            return;
        }
        let (label, count) = if version == http::Version::HTTP_2 {
            (HTTP2, &self.metrics.protocols.http2)
        } else {
            (HTTP1, &self.metrics.protocols.http1)
        };
        // Concurrent HTTP/2 streams may race to the first: one wins.
        if self
            .seen
            .compare_exchange(UNSEEN, label, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ConnProtocol {
    fn drop(&mut self) {
        let count = match *self.seen.get_mut() {
            HTTP1 => &self.metrics.protocols.http1,
            HTTP2 => &self.metrics.protocols.http2,
            _ => return,
        };
        count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(metrics: &Metrics, open: usize, tunnels: usize) -> Vec<String> {
        let mut out = String::new();
        metrics.protocols.render(&mut out, open, tunnels);
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_connection_counts_once_under_its_first_protocol_until_dropped() {
        let metrics = Arc::new(Metrics::new());
        let h1 = Arc::new(ConnProtocol::new(metrics.clone()));
        let h2 = ConnProtocol::new(metrics.clone());
        let idle = ConnProtocol::new(metrics.clone());
        h1.saw(http::Version::HTTP_11);
        h1.saw(http::Version::HTTP_11);
        h2.saw(http::Version::HTTP_2);
        let clone = h1.clone();
        assert_eq!(
            lines(&metrics, 4, 1),
            [
                "switchyard_client_connections{protocol=\"http1.1\"} 1",
                "switchyard_client_connections{protocol=\"http2\"} 1",
                "switchyard_client_connections{protocol=\"websocket\"} 1",
                "switchyard_client_connections{protocol=\"pending\"} 2",
            ]
        );
        drop((h1, h2, idle));
        // A clone of the service still holds the first connection's mark.
        assert_eq!(
            lines(&metrics, 1, 0)[..2],
            [
                "switchyard_client_connections{protocol=\"http1.1\"} 1",
                "switchyard_client_connections{protocol=\"http2\"} 0",
            ]
        );
        drop(clone);
        assert_eq!(
            lines(&metrics, 0, 0)[0],
            "switchyard_client_connections{protocol=\"http1.1\"} 0"
        );
    }
}
