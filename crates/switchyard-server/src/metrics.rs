//! Prometheus metrics: CHP's nine custom metrics with the same names, types
//! and labels, the standard `process_*` family read from `/proc`, and
//! Switchyard's own `switchyard_*` series: request durations, bytes and
//! upstream errors ([`traffic`]), and gauges read from the engine, the serving
//! layer and the route store at scrape time.
//!
//! Everything the request path touches is an atomic: counters, per-status counters (an
//! array indexed by status code) and summaries (log-scale buckets). Quantiles are estimated
//! from the buckets at scrape time (each bucket spans ±9%), over the whole process life
//! rather than prom-client's 10-minute window.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod connections;
mod traffic;

pub(crate) use connections::ConnProtocol;

pub(crate) use traffic::{CLASSES, Protocol, Totals, quantile_seconds, upstream_kind};

/// Content type of the Prometheus text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const QUANTILES: [f64; 7] = [0.01, 0.05, 0.5, 0.9, 0.95, 0.99, 0.999];
/// Buckets per power of two, and powers of two covered (1 ns … ~68 s).
const SUB: usize = 8;
const OCTAVES: usize = 36;

/// All metrics of the server.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) api_route_get: Counter,
    pub(crate) api_route_add: Counter,
    pub(crate) api_route_delete: Counter,
    pub(crate) find_target_for_req: Summary,
    pub(crate) last_activity_updating: Summary,
    pub(crate) requests_ws: Counter,
    pub(crate) requests_web: Counter,
    pub(crate) requests_proxy: StatusCounter,
    pub(crate) requests_api: StatusCounter,
    /// Durations, bytes and upstream errors of the proxied requests.
    pub(crate) traffic: traffic::Traffic,
    /// The engine's own counters, once it is built.
    engine: OnceLock<switchyard::ProxyStats>,
    /// The access log, when there is one (its dropped entries).
    access_log: OnceLock<Arc<crate::access_log::AccessLog>>,
    /// `notAfter` (Unix seconds) of each [`CertListener`]'s certificate; `i64::MIN`: none.
    certificates: [AtomicI64; 3],
    /// The ACME side's counters, exported once `--acme-domain` is on.
    pub(crate) acme: crate::acme::AcmeCounters,
    acme_on: std::sync::atomic::AtomicBool,
    /// The route store (its table's size).
    store: OnceLock<Arc<dyn crate::store::RouteStore>>,
    /// The public server (its open connections).
    public: OnceLock<switchyard::ServerStats>,
    /// Its connections by the protocol of their first request.
    pub(crate) protocols: connections::ByProtocol,
    /// Whether [`Metrics::timed`] reads the clock: only when a metrics server exports the
    /// timings (CHP collects no metrics at all without one). The two summaries time a
    /// route lookup and an atomic store, each shorter than the two clock reads that time
    /// it, and `last_activity_updating` is observed on every WebSocket message.
    timings: bool,
}

/// Whose certificate: the `listener` label of the expiry gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertListener {
    /// The public port's (`--ssl-cert`, or the ACME certificate).
    Public,
    /// The REST API's (`--api-ssl-cert`).
    Api,
    /// The one presented to https targets (`--client-ssl-cert`).
    Client,
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

/// A counter with a `status` label.
#[derive(Debug)]
pub(crate) struct StatusCounter(Box<[AtomicU64]>);

/// Durations with estimated quantiles, `_sum` and `_count`.
#[derive(Debug)]
pub(crate) struct Summary {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

// === impl CertListener ===

impl CertListener {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Api => "api",
            Self::Client => "client",
        }
    }
}

// === impl Metrics ===

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            api_route_get: Counter::default(),
            api_route_add: Counter::default(),
            api_route_delete: Counter::default(),
            find_target_for_req: Summary::new(),
            last_activity_updating: Summary::new(),
            requests_ws: Counter::default(),
            requests_web: Counter::default(),
            requests_proxy: StatusCounter::new(),
            requests_api: StatusCounter::new(),
            traffic: traffic::Traffic::default(),
            engine: OnceLock::new(),
            access_log: OnceLock::new(),
            certificates: std::array::from_fn(|_| AtomicI64::new(i64::MIN)),
            acme: crate::acme::AcmeCounters::default(),
            acme_on: std::sync::atomic::AtomicBool::new(false),
            store: OnceLock::new(),
            public: OnceLock::new(),
            protocols: connections::ByProtocol::default(),
            timings: true,
        }
    }

    /// Whether [`Metrics::timed`] times anything (on by default).
    pub(crate) fn with_timings(mut self, on: bool) -> Self {
        self.timings = on;
        self
    }

    /// Runs `work`, timed into `summary` when the timings are on.
    #[inline]
    pub(crate) fn timed<T>(&self, summary: &Summary, work: impl FnOnce() -> T) -> T {
        if !self.timings {
            return work();
        }
        let started = std::time::Instant::now();
        let out = work();
        summary.observe(started.elapsed());
        out
    }

    /// Exports the ACME counters.
    pub(crate) fn watch_acme(&self) {
        self.acme_on.store(true, Ordering::Relaxed);
    }

    /// Records the certificate `listener` serves now.
    pub(crate) fn set_certificate(&self, listener: CertListener, leaf: Option<crate::tls::Leaf>) {
        self.certificates[listener as usize]
            .store(leaf.map_or(i64::MIN, |l| l.not_after), Ordering::Relaxed);
    }

    /// Exports the engine's counters too (built after these metrics, which
    /// its hooks use).
    pub(crate) fn watch_engine(&self, stats: switchyard::ProxyStats) {
        let _ = self.engine.set(stats);
    }

    pub(crate) fn watch_access_log(&self, log: Option<Arc<crate::access_log::AccessLog>>) {
        if let Some(log) = log {
            let _ = self.access_log.set(log);
        }
    }

    /// Seconds until each served certificate's `notAfter` (negative once expired), from
    /// the clock at scrape time.
    fn render_certificates(&self, out: &mut String) {
        let now = jiff::Timestamp::now().as_second();
        let mut head = false;
        for listener in [
            CertListener::Public,
            CertListener::Api,
            CertListener::Client,
        ] {
            let not_after = self.certificates[listener as usize].load(Ordering::Relaxed);
            if not_after == i64::MIN {
                continue;
            }
            if !head {
                out.push_str(
                    "# HELP switchyard_tls_certificate_expiry_seconds Seconds until the notAfter \
                     date of the certificate a listener serves (negative once expired).\n\
                     # TYPE switchyard_tls_certificate_expiry_seconds gauge\n",
                );
                head = true;
            }
            let _ = writeln!(
                out,
                "switchyard_tls_certificate_expiry_seconds{{listener=\"{}\"}} {}",
                listener.as_str(),
                not_after - now
            );
        }
    }

    fn render_acme(&self, out: &mut String) {
        if !self.acme_on.load(Ordering::Relaxed) {
            return;
        }
        for (name, help, value) in [
            (
                "switchyard_acme_orders_total",
                "Certificate orders this replica started.",
                &self.acme.orders,
            ),
            (
                "switchyard_acme_certificates_issued_total",
                "Certificates this replica got issued and stored.",
                &self.acme.issued,
            ),
            (
                "switchyard_acme_failures_total",
                "Failed ACME attempts (order, validation, lock or store), each retried with backoff.",
                &self.acme.failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }

    /// Each listener's certificate and its `notAfter` (Unix seconds).
    pub(crate) fn certificates(&self) -> Vec<(CertListener, i64)> {
        [
            CertListener::Public,
            CertListener::Api,
            CertListener::Client,
        ]
        .into_iter()
        .filter_map(|l| {
            let not_after = self.certificates[l as usize].load(Ordering::Relaxed);
            (not_after != i64::MIN).then_some((l, not_after))
        })
        .collect()
    }

    /// Access log entries dropped so far (0 without an access log).
    pub(crate) fn access_log_dropped(&self) -> u64 {
        self.access_log.get().map_or(0, |l| l.dropped())
    }

    /// WebSocket tunnels open (none before the engine is built).
    pub(crate) fn tunnels(&self) -> usize {
        self.engine.get().map_or(0, switchyard::ProxyStats::tunnels)
    }

    /// Client connections open on the public port, tunnels included (`None` before it
    /// serves).
    pub(crate) fn client_connections(&self) -> Option<usize> {
        self.public
            .get()
            .map(|public| public.connections() + self.tunnels())
    }

    /// Exports the size of the store's route table.
    pub(crate) fn watch_store(&self, store: Arc<dyn crate::store::RouteStore>) {
        let _ = self.store.set(store);
    }

    /// Exports the public server's open connections.
    pub(crate) fn watch_public(&self, server: switchyard::ServerStats) {
        let _ = self.public.set(server);
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        process::render(&mut out);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // Tasks alive in the runtime: back to its baseline after every
            // request and tunnel has ended, or something leaked (the soak test
            // reads it).
            out.push_str(
                "# HELP switchyard_tokio_alive_tasks Tasks alive in the async runtime.\n\
                 # TYPE switchyard_tokio_alive_tasks gauge\n",
            );
            let serving = self.public.get().map_or(&[][..], |p| p.runtimes());
            let alive = handle.metrics().num_alive_tasks()
                + serving
                    .iter()
                    .map(|r| r.metrics().num_alive_tasks())
                    .sum::<usize>();
            out.push_str(&format!("switchyard_tokio_alive_tasks {alive}\n"));
            out.push_str(
                "# HELP switchyard_tokio_workers Threads serving connections (--worker-threads).\n\
                 # TYPE switchyard_tokio_workers gauge\n",
            );
            let workers = if serving.is_empty() {
                handle.metrics().num_workers()
            } else {
                serving.len()
            };
            out.push_str(&format!("switchyard_tokio_workers {workers}\n"));
        }
        if let Some(engine) = self.engine.get() {
            let _ = writeln!(
                out,
                "# HELP switchyard_upstream_retries_total Requests sent again on a new upstream \
                 connection because the pooled one closed before answering them.\n\
                 # TYPE switchyard_upstream_retries_total counter\n\
                 switchyard_upstream_retries_total {}",
                engine.upstream_retries()
            );
        }
        self.traffic.render(&mut out);
        self.render_gauges(&mut out);
        // Always there, 0 without an access log, so that alerts on it need no `absent`.
        let _ = writeln!(
            out,
            "# HELP switchyard_access_log_dropped_total Access log entries dropped because \
             the writer was behind.\n\
             # TYPE switchyard_access_log_dropped_total counter\n\
             switchyard_access_log_dropped_total {}",
            self.access_log_dropped()
        );
        self.render_certificates(&mut out);
        self.render_acme(&mut out);
        self.api_route_get
            .render(&mut out, "api_route_get", "Count of API route get requests");
        self.api_route_add
            .render(&mut out, "api_route_add", "Count of API route add requests");
        self.api_route_delete.render(
            &mut out,
            "api_route_delete",
            "Count of API route delete requests",
        );
        self.find_target_for_req.render(
            &mut out,
            "find_target_for_req",
            "Summary of find target requests",
        );
        self.last_activity_updating.render(
            &mut out,
            "last_activity_updating",
            "Summary of last activity updating requests",
        );
        self.requests_ws
            .render(&mut out, "requests_ws", "Count of websocket requests");
        self.requests_web
            .render(&mut out, "requests_web", "Count of web requests");
        self.requests_proxy
            .render(&mut out, "requests_proxy", "Count of proxy requests");
        self.requests_api
            .render(&mut out, "requests_api", "Count of API requests");
        out
    }

    fn render_gauges(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, value: usize| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        if let Some(engine) = self.engine.get() {
            gauge(
                "switchyard_websocket_tunnels",
                "WebSocket tunnels open.",
                engine.tunnels(),
            );
            gauge(
                "switchyard_upstream_idle_connections",
                "HTTP/1 connections to targets idle in the pool.",
                engine.idle_upstream_connections(),
            );
        }
        if let Some(store) = self.store.get() {
            gauge("switchyard_routes", "Routes in the table.", store.len());
        }
        // An upgraded connection leaves the server for its tunnel: counted as `websocket`.
        if let Some(public) = self.public.get() {
            self.protocols
                .render(out, public.connections(), self.tunnels());
        }
        if let Some(n) = self.store.get().and_then(|s| s.reconnects()) {
            let _ = writeln!(
                out,
                "# HELP switchyard_redis_reconnects_total Times the connection to Redis was \
                 lost and then restored (the table reloaded).\n\
                 # TYPE switchyard_redis_reconnects_total counter\n\
                 switchyard_redis_reconnects_total {n}"
            );
        }
    }
}

// === impl Counter ===

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            self.get()
        );
    }
}

// === impl StatusCounter ===

impl StatusCounter {
    fn new() -> Self {
        Self((0..1000).map(|_| AtomicU64::new(0)).collect())
    }

    /// Counts one response with this status (codes outside 0..=999 are ignored).
    pub(crate) fn inc(&self, status: u16) {
        if let Some(c) = self.0.get(usize::from(status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (status, c) in self.0.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(out, "{name}{{status=\"{status}\"}} {n}");
            }
        }
        out.push('\n');
    }
}

// === impl Summary ===

impl Summary {
    fn new() -> Self {
        Self {
            buckets: (0..SUB * OCTAVES).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        let idx = bucket_index(ns).min(self.buckets.len() - 1);
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn quantile(&self, counts: &[u64], total: u64, q: f64) -> f64 {
        if total == 0 {
            return 0.0;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_mid_ns(i) / 1e9;
            }
        }
        bucket_mid_ns(counts.len() - 1) / 1e9
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for q in QUANTILES {
            let v = self.quantile(&counts, total, q);
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v}");
        }
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}\n", self.count());
    }
}

/// Log-linear bucket: the octave (position of the top bit) and the next 3 bits.
fn bucket_index(ns: u64) -> usize {
    let octave = 63 - ns.leading_zeros() as usize;
    let frac = if octave >= 3 {
        ((ns >> (octave - 3)) & 0b111) as usize
    } else {
        ((ns << (3 - octave)) & 0b111) as usize
    };
    octave * SUB + frac
}

#[allow(clippy::cast_precision_loss)]
fn bucket_mid_ns(idx: usize) -> f64 {
    let octave = (idx / SUB) as i32;
    let frac = (idx % SUB) as f64;
    2f64.powi(octave) * (1.0 + (frac + 0.5) / SUB as f64)
}

/// `process_*` metrics from `/proc/self` (the names prom-client and the Go client use).
mod process {
    use std::fmt::Write as _;

    /// Linux reports CPU times in USER_HZ ticks, which the kernel ABI fixes at 100.
    const TICKS_PER_SEC: f64 = 100.0;
    const PAGE_SIZE: f64 = 4096.0;

    pub(super) fn render(out: &mut String) {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the `(comm)`, which may itself contain spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| -> f64 {
            // `n` is the 1-based field number of proc(5); fields[0] is field 3.
            fields
                .get(n.wrapping_sub(3))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let user = field(14) / TICKS_PER_SEC;
        let system = field(15) / TICKS_PER_SEC;
        let start = boot_time() + field(22) / TICKS_PER_SEC;
        let vsize = field(23);
        let rss = field(24) * PAGE_SIZE;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
        let max_fds = max_fds();

        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "process_cpu_user_seconds_total",
            "counter",
            "Total user CPU time spent in seconds.",
            user,
        );
        metric(
            "process_cpu_system_seconds_total",
            "counter",
            "Total system CPU time spent in seconds.",
            system,
        );
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            user + system,
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start.floor(),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vsize,
        );
        #[allow(clippy::cast_precision_loss)]
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open_fds as f64,
        );
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max_fds,
        );
    }

    fn boot_time() -> f64 {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    fn max_fds() -> f64 {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_nine_chp_metrics() {
        let m = Metrics::new();
        m.requests_proxy.inc(404);
        m.requests_api.inc(201);
        m.api_route_add.inc();
        m.find_target_for_req.observe(Duration::from_micros(3));
        let text = m.render();
        for needle in [
            "# TYPE api_route_get counter\napi_route_get 0",
            "api_route_add 1",
            "# TYPE api_route_delete counter",
            "# TYPE find_target_for_req summary",
            "find_target_for_req{quantile=\"0.999\"}",
            "find_target_for_req_count 1",
            "# TYPE last_activity_updating summary",
            "last_activity_updating_count 0",
            "# TYPE requests_ws counter",
            "# TYPE requests_web counter",
            "requests_proxy{status=\"404\"} 1",
            "requests_api{status=\"201\"} 1",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_open_fds gauge",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    /// Timed work runs either way; it is observed only with the timings on.
    #[test]
    fn timings_are_observed_only_when_on() {
        for on in [true, false] {
            let m = Metrics::new().with_timings(on);
            let mut ran = 0;
            m.timed(&m.last_activity_updating, || ran += 1);
            assert_eq!(ran, 1);
            let count = format!("last_activity_updating_count {}", u8::from(on));
            assert!(m.render().contains(&count), "timings {on}: no {count:?}");
        }
    }

    #[test]
    fn quantiles_are_close() {
        let s = Summary::new();
        for us in 1..=1000 {
            s.observe(Duration::from_micros(us));
        }
        let counts: Vec<u64> = s
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let median = s.quantile(&counts, 1000, 0.5);
        assert!((median - 500e-6).abs() < 500e-6 * 0.1, "{median}");
        s.observe(Duration::from_secs(10_000));
        s.observe(Duration::ZERO);
    }
}
