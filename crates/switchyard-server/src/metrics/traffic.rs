//! What the proxied requests did, from the engine's end hook: their durations
//! (histograms by protocol and status class), the bytes they carried, and the
//! upstream failures by kind.
//!
//! Every series is a fixed array of atomics, indexed by its labels; a request
//! adds to a few of them with relaxed increments, and takes no lock.

use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Version;
use switchyard::{ErrorSide, Outcome, ProxyError};

/// Upper bounds of the duration buckets, in seconds: from a one-millisecond
/// API call to an hour-long download or WebSocket session.
const BOUNDS: [&str; 19] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10", "30", "60", "300", "900", "1800", "3600",
];
/// [`BOUNDS`] in nanoseconds, for the lookup.
const BOUNDS_NS: [u64; 19] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    300_000_000_000,
    900_000_000_000,
    1_800_000_000_000,
    3_600_000_000_000,
];

/// The `protocol` label: what the client spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1 (and HTTP/1.0).
    Http1,
    Http2,
    /// A request upgraded to a WebSocket tunnel.
    WebSocket,
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Http1, Protocol::Http2, Protocol::WebSocket];

/// The `status_class` label values; `none` is a request that got no response
/// (the client left before its head).
pub(crate) const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `kind` label of upstream errors.
const ERROR_KINDS: [&str; 6] = ["refused", "connect", "timeout", "reset", "tls", "protocol"];

/// The request series.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Time to the response head, by protocol and status class.
    head: [[Histogram; CLASSES.len()]; PROTOCOLS.len()],
    /// Time to the end, by protocol and status class.
    end: [[Histogram; CLASSES.len()]; PROTOCOLS.len()],
    /// Bytes from the clients, by protocol.
    received: [AtomicU64; PROTOCOLS.len()],
    /// Bytes to the clients, by protocol.
    sent: [AtomicU64; PROTOCOLS.len()],
    /// Upstream failures, by kind.
    upstream_errors: [AtomicU64; ERROR_KINDS.len()],
}

/// Running totals of [`Traffic`], which the dashboard's sampler takes differences of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Requests ended, by status class (in [`CLASSES`] order), every protocol.
    pub(crate) classes: [u64; CLASSES.len()],
    /// Times to the response head of HTTP requests (WebSockets aside), by bucket.
    pub(crate) head: [u64; BOUNDS.len() + 1],
}

/// A Prometheus histogram over [`BOUNDS`]: each slot counts the observations
/// that fall in it (the last one above every bound); the cumulative counts are
/// added up when rendered.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

// === impl Protocol ===

impl Protocol {
    /// The protocol of a request in `version` that ended as `outcome`.
    pub(crate) fn of(version: Version, outcome: &Outcome<'_>) -> Self {
        if outcome.tunnel.is_some() {
            Self::WebSocket
        } else if version == Version::HTTP_2 {
            Self::Http2
        } else {
            Self::Http1
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Http1 => "http1.1",
            Self::Http2 => "http2",
            Self::WebSocket => "websocket",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

// === impl Traffic ===

impl Traffic {
    /// Records a request that ended as `outcome`. `answered` is the status the
    /// server answered with when the engine gave no response (an error page).
    pub(crate) fn record(&self, protocol: Protocol, outcome: &Outcome<'_>, answered: Option<u16>) {
        // An error page is the head and the end at once.
        let head = outcome.head_time.or(answered.map(|_| outcome.duration));
        self.record_times(
            protocol,
            outcome.status.map(|s| s.as_u16()).or(answered),
            head,
            outcome.duration,
        );
        let p = protocol.index();
        self.received[p].fetch_add(outcome.bytes_in, Ordering::Relaxed);
        self.sent[p].fetch_add(outcome.bytes_out, Ordering::Relaxed);
        if let Some(kind) = upstream_error_kind(outcome) {
            self.upstream_errors[kind].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_times(
        &self,
        protocol: Protocol,
        status: Option<u16>,
        head: Option<Duration>,
        end: Duration,
    ) {
        let p = protocol.index();
        let class = status.map_or(0, |s| usize::from(s / 100).clamp(1, 5));
        if let Some(head) = head {
            self.head[p][class].observe(head);
        }
        self.end[p][class].observe(end);
    }

    /// The totals so far (relaxed reads: each count is exact, their sum may be a request
    /// apart).
    pub(crate) fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for protocol in PROTOCOLS {
            for (class, h) in self.end[protocol.index()].iter().enumerate() {
                totals.classes[class] += h.count();
            }
            if protocol == Protocol::WebSocket {
                continue;
            }
            for h in &self.head[protocol.index()] {
                for (sum, b) in totals.head.iter_mut().zip(&h.buckets) {
                    *sum += b.load(Ordering::Relaxed);
                }
            }
        }
        totals
    }

    /// How many requests of `protocol` were timed to their end (all classes).
    #[cfg(test)]
    fn count(&self, protocol: Protocol) -> u64 {
        self.end[protocol.index()]
            .iter()
            .map(Histogram::count)
            .sum()
    }

    pub(crate) fn render(&self, out: &mut String) {
        render_histograms(
            out,
            "switchyard_request_head_duration_seconds",
            "Time from a proxied request's arrival to its response head (an error page \
             included), by client protocol and status class.",
            &self.head,
        );
        render_histograms(
            out,
            "switchyard_request_duration_seconds",
            "Time from a proxied request's arrival to its end (the response's last byte, a \
             failure, or the WebSocket tunnel's close), by client protocol and status class \
             (none: no response was sent).",
            &self.end,
        );
        let mut bytes = |name: &str, help: &str, values: &[AtomicU64; PROTOCOLS.len()]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for protocol in PROTOCOLS {
                let n = values[protocol.index()].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{protocol=\"{}\"}} {n}", protocol.label());
            }
        };
        bytes(
            "switchyard_received_bytes_total",
            "Bytes of proxied request bodies and of WebSocket traffic from the clients.",
            &self.received,
        );
        bytes(
            "switchyard_sent_bytes_total",
            "Bytes of proxied response bodies and of WebSocket traffic to the clients.",
            &self.sent,
        );
        let name = "switchyard_upstream_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Proxied requests failed by their target, by kind: refused, connect \
             (another connect failure), timeout, reset (closed before or during the response), \
             tls, protocol (an invalid answer, or a failed upgrade).\n# TYPE {name} counter"
        );
        for (kind, n) in ERROR_KINDS.iter().zip(&self.upstream_errors) {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

/// One histogram family; the label sets that saw no request are left out.
fn render_histograms(
    out: &mut String,
    name: &str,
    help: &str,
    family: &[[Histogram; CLASSES.len()]; PROTOCOLS.len()],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for protocol in PROTOCOLS {
        for (class, h) in CLASSES.iter().zip(&family[protocol.index()]) {
            let counts: Vec<u64> = h
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let labels = format!("protocol=\"{}\",status_class=\"{class}\"", protocol.label());
            let mut seen = 0;
            for (bound, n) in BOUNDS.iter().zip(&counts) {
                seen += n;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {seen}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
            #[allow(clippy::cast_precision_loss)]
            let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
        }
    }
}

/// The `q` quantile (0 to 1) of observations counted by [`BOUNDS`] bucket, in seconds:
/// interpolated within its bucket, the last bound for the open one; `None` without any.
pub(crate) fn quantile_seconds(buckets: &[u64; BOUNDS.len() + 1], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && seen + n >= rank {
            let Some(&upper) = BOUNDS_NS.get(i) else {
                break;
            };
            let lower = if i == 0 { 0 } else { BOUNDS_NS[i - 1] };
            #[allow(clippy::cast_precision_loss)]
            let within = (rank - seen) as f64 / n as f64;
            #[allow(clippy::cast_precision_loss)]
            return Some((lower as f64 + (upper - lower) as f64 * within) / 1e9);
        }
        seen += n;
    }
    #[allow(clippy::cast_precision_loss)]
    Some(BOUNDS_NS[BOUNDS_NS.len() - 1] as f64 / 1e9)
}

/// The kind of an upstream failure, as an index in [`ERROR_KINDS`]; `None`
/// when the target did not fail the request.
fn upstream_error_kind(outcome: &Outcome<'_>) -> Option<usize> {
    let err = outcome.error?;
    let kind = match outcome.proxy_error() {
        Some(e) if e.side() != ErrorSide::Upstream => return None,
        Some(e) => proxy_error_kind(e),
        // A response body (or a tunnel) cut short.
        None if outcome.ended_early == Some(ErrorSide::Upstream) => {
            match chain(err).find_map(|e| e.downcast_ref::<ProxyError>()) {
                Some(e) => proxy_error_kind(e),
                None if chain(err).any(|e| e.is::<switchyard::BodyIdleTimeout>()) => "timeout",
                None if has_io(err, io::ErrorKind::TimedOut) => "timeout",
                None => "reset",
            }
        }
        None => return None,
    };
    ERROR_KINDS.iter().position(|k| *k == kind)
}

/// The kind of a failed call's error (a name of `ERROR_KINDS`), when the target failed it.
pub(crate) fn upstream_kind(e: &ProxyError) -> Option<&'static str> {
    (e.side() == ErrorSide::Upstream).then(|| proxy_error_kind(e))
}

fn proxy_error_kind(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::UpstreamConnect { source, .. } => {
            if chain(&**source).any(|e| e.is::<rustls::Error>()) {
                "tls"
            } else if has_io(&**source, io::ErrorKind::ConnectionRefused) {
                "refused"
            } else {
                "connect"
            }
        }
        e if e.is_timeout() => "timeout",
        ProxyError::UpstreamReset(_) => "reset",
        _ => "protocol",
    }
}

fn chain<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

fn has_io(err: &(dyn std::error::Error + 'static), kind: io::ErrorKind) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == kind)
    })
}

// === impl Histogram ===

impl Histogram {
    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let slot = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (s, ns) in BOUNDS.iter().zip(BOUNDS_NS) {
            let secs: f64 = s.parse().unwrap();
            #[allow(clippy::cast_precision_loss)]
            let expected = ns as f64 / 1e9;
            assert!((secs - expected).abs() < 1e-12, "{s} vs {ns}");
        }
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_micros(1001));
        h.observe(Duration::from_secs(7200));
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[1].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[BOUNDS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut b = [0u64; BOUNDS.len() + 1];
        assert_eq!(quantile_seconds(&b, 0.5), None);
        b[1] = 10; // 1 ms to 2.5 ms
        let p50 = quantile_seconds(&b, 0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        b[BOUNDS.len()] = 100;
        assert_eq!(quantile_seconds(&b, 0.99), Some(3600.0));
        let t = Traffic::default();
        t.record_times(
            Protocol::Http1,
            Some(503),
            Some(Duration::from_millis(3)),
            Duration::from_millis(3),
        );
        t.record_times(
            Protocol::WebSocket,
            Some(101),
            Some(Duration::from_secs(9)),
            Duration::from_secs(9),
        );
        let totals = t.totals();
        assert_eq!(totals.classes, [0, 1, 0, 0, 0, 1]);
        assert_eq!(totals.head.iter().sum::<u64>(), 1, "WebSockets aside");
    }

    #[test]
    fn records_by_protocol_and_class() {
        let t = Traffic::default();
        t.record_times(
            Protocol::Http2,
            Some(200),
            Some(Duration::from_millis(2)),
            Duration::from_millis(40),
        );
        t.sent[Protocol::Http2.index()].fetch_add(5, Ordering::Relaxed);
        assert_eq!(t.count(Protocol::Http2), 1);
        let mut out = String::new();
        t.render(&mut out);
        for needle in [
            "switchyard_request_head_duration_seconds_bucket{protocol=\"http2\",status_class=\"2xx\",le=\"0.001\"} 0\n",
            "switchyard_request_head_duration_seconds_bucket{protocol=\"http2\",status_class=\"2xx\",le=\"0.0025\"} 1\n",
            "switchyard_request_duration_seconds_bucket{protocol=\"http2\",status_class=\"2xx\",le=\"0.025\"} 0\n",
            "switchyard_request_duration_seconds_bucket{protocol=\"http2\",status_class=\"2xx\",le=\"0.05\"} 1\n",
            "switchyard_request_duration_seconds_count{protocol=\"http2\",status_class=\"2xx\"} 1\n",
            "switchyard_received_bytes_total{protocol=\"http2\"} 0\n",
            "switchyard_sent_bytes_total{protocol=\"http2\"} 5\n",
            "switchyard_upstream_errors_total{kind=\"refused\"} 0\n",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
    }
}
