//! Several upstreams for one route: round robin, least outstanding
//! requests or power of two choices; passive health (an upstream that
//! refuses connections is taken out for a growing back-off period) and an
//! optional active health check (an HTTP GET on a path, at an interval).
//!
//! This is what http-proxy-3 says it is "suitable for" and leaves to user
//! code, and what reply-from's `base: [a, b]` does with undici's
//! `BalancedPool`.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Version, request};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::body::Body;
use crate::error::{ConfigError, ProxyError};
use crate::target::{Protocol, Target};
use crate::upstream::Upstream;

/// A set of interchangeable upstreams for one route, and the state that
/// picks between them. Cheap to clone (one `Arc`); clones share the state.
///
/// Members are origins: the path and query used are those of the first
/// member (as reply-from uses the first `base`), so give every member the
/// same path. Use it for every request with
/// [`ProxyBuilder::upstreams`](crate::ProxyBuilder::upstreams) or for one
/// call with [`Forward::upstreams`](crate::Forward::upstreams).
///
/// When every member is out, the one due back first is tried anyway: a
/// wrong health verdict must not turn into an outage.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Pool>,
}

/// How the next upstream is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each in turn (the default).
    #[default]
    RoundRobin,
    /// The one with the fewest requests in flight (ties in turn).
    LeastOutstanding,
    /// Two at random, and the one of them with fewer requests in flight.
    PowerOfTwoChoices,
}

/// An active health check: `GET path` on every member each `interval`. A
/// member that answers anything but 2xx or 3xx, or does not answer within
/// `timeout`, is out until a check succeeds again.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    path: String,
    interval: Duration,
    timeout: Duration,
}

/// Builds [`Upstreams`].
#[derive(Debug)]
pub struct UpstreamsBuilder {
    targets: Vec<Target>,
    balance: Balance,
    backoff: Duration,
    max_backoff: Duration,
    health_check: Option<HealthCheck>,
}

struct Pool {
    members: Vec<Member>,
    balance: Balance,
    backoff: Duration,
    max_backoff: Duration,
    health_check: Option<HealthCheck>,
    checker_started: AtomicBool,
    next: AtomicUsize,
    epoch: Instant,
    random: std::hash::RandomState,
    changed: watch::Sender<u64>,
}

struct Member {
    target: Target,
    outstanding: AtomicUsize,
    /// Nanoseconds since the pool's epoch until which the member is out.
    down_until: AtomicU64,
    /// Connect failures in a row.
    failures: AtomicU32,
    /// The last active check failed.
    check_failed: AtomicBool,
}

/// One request's claim on a member: counts as outstanding until dropped.
pub(crate) struct Lease {
    pool: Upstreams,
    index: usize,
}

/// The upstream a request goes to: a lone target or a pool member.
pub(crate) struct Picked {
    pub(crate) target: Target,
    lease: Option<Lease>,
    tried: Vec<usize>,
}

// === impl Upstreams ===

impl Upstreams {
    /// A builder over these targets (round robin, 1 s initial back-off).
    pub fn builder(targets: impl IntoIterator<Item = Target>) -> UpstreamsBuilder {
        UpstreamsBuilder {
            targets: targets.into_iter().collect(),
            balance: Balance::default(),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            health_check: None,
        }
    }

    /// Round robin over these targets, every other setting at its default.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Option`] when there is no target.
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Result<Self, ConfigError> {
        Self::builder(targets).build()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    /// Never true: a pool has at least one member.
    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    /// The members, in the order given.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.inner.members.iter().map(|m| &m.target)
    }

    /// Whether member `index` is taken into account now (neither backing off
    /// after a refused connection nor failing its health check).
    pub fn is_up(&self, index: usize) -> bool {
        let now = self.inner.now();
        self.inner.members.get(index).is_some_and(|m| m.is_up(now))
    }

    /// Requests in flight to member `index` (until their response body ends).
    pub fn outstanding(&self, index: usize) -> usize {
        self.inner
            .members
            .get(index)
            .map_or(0, |m| m.outstanding.load(Ordering::Relaxed))
    }

    /// A counter that changes each time a member goes out or comes back.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Picks a member, skipping `exclude` and members that are out. `None`
    /// only when every member is excluded.
    fn pick(&self, exclude: &[usize]) -> Option<Lease> {
        let pool = &self.inner;
        let n = pool.members.len();
        let now = pool.now();
        let usable = |i: &usize| !exclude.contains(i) && pool.members[*i].is_up(now);
        let start = pool.next.fetch_add(1, Ordering::Relaxed);
        let in_turn = (0..n).map(|k| (start + k) % n);
        let load = |i: &usize| pool.members[*i].outstanding.load(Ordering::Relaxed);
        let chosen = match pool.balance {
            Balance::RoundRobin => in_turn.clone().find(usable),
            Balance::LeastOutstanding => in_turn.clone().filter(usable).min_by_key(load),
            Balance::PowerOfTwoChoices => {
                let candidates: Vec<usize> = (0..n).filter(usable).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    len => {
                        let r = pool.random();
                        let a = candidates[(r % len as u64) as usize];
                        let b = candidates[((r >> 32) % len as u64) as usize];
                        Some(if load(&b) < load(&a) { b } else { a })
                    }
                }
            }
        };
        // Fail open: with every member out, the one due back first.
        let index = chosen.or_else(|| {
            (0..n)
                .filter(|i| !exclude.contains(i))
                .min_by_key(|i| pool.members[*i].down_until.load(Ordering::Relaxed))
        })?;
        pool.members[index]
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            pool: self.clone(),
            index,
        })
    }

    /// A refused connection: out for the back-off period, which doubles
    /// with each failure in a row.
    fn failed(&self, index: usize) {
        let pool = &self.inner;
        let m = &pool.members[index];
        let n = m.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = pool
            .backoff
            .saturating_mul(1 << n)
            .min(pool.max_backoff.max(pool.backoff));
        let until = pool.now().saturating_add(nanos(backoff));
        m.down_until.store(until, Ordering::Relaxed);
        debug!(upstream = %m.target, ?backoff, "upstream out after a failed connection");
        pool.notify();
    }

    fn succeeded(&self, index: usize) {
        let m = &self.inner.members[index];
        if m.failures.swap(0, Ordering::Relaxed) != 0 {
            m.down_until.store(0, Ordering::Relaxed);
            self.inner.notify();
        }
    }

    /// Starts the active health check, once, if one is configured and a
    /// tokio runtime is running; the task ends when the pool is dropped.
    pub(crate) fn ensure_health_checks(&self, upstream: &Upstream) {
        let Some(check) = self.inner.health_check.clone() else {
            return;
        };
        if self.inner.checker_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.checker_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        rt.spawn(health_loop(weak, upstream.clone(), check));
    }
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("targets", &self.targets().collect::<Vec<_>>())
            .field("balance", &self.inner.balance)
            .finish_non_exhaustive()
    }
}

async fn health_loop(pool: Weak<Pool>, upstream: Upstream, check: HealthCheck) {
    loop {
        let Some(p) = pool.upgrade() else { return };
        let targets: Vec<Target> = p.members.iter().map(|m| m.target.clone()).collect();
        drop(p);
        let probes = targets
            .iter()
            .map(|t| probe(&upstream, t, &check.path, check.timeout));
        let results = futures_util::future::join_all(probes).await;
        let Some(p) = pool.upgrade() else { return };
        for (m, ok) in p.members.iter().zip(results) {
            if m.check_failed.swap(!ok, Ordering::Relaxed) == ok {
                if ok {
                    m.failures.store(0, Ordering::Relaxed);
                    m.down_until.store(0, Ordering::Relaxed);
                }
                info!(upstream = %m.target, healthy = ok, "health check changed");
                p.notify();
            }
        }
        drop(p);
        tokio::time::sleep(check.interval).await;
    }
}

async fn probe(upstream: &Upstream, target: &Target, path: &str, limit: Duration) -> bool {
    let Ok(uri) = target.uri_for(path) else {
        return false;
    };
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = uri;
    *req.version_mut() = version_for(target);
    req.headers_mut()
        .insert(header::HOST, target.host_header().clone());
    match tokio::time::timeout(limit, upstream.request(target, req)).await {
        Ok(Ok(res)) => {
            let ok = res.status().is_success() || res.status().is_redirection();
            let _ = tokio::time::timeout(limit, crate::upstream::drain(res.into_body())).await;
            ok
        }
        _ => false,
    }
}

// === impl Pool ===

impl Pool {
    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn random(&self) -> u64 {
        let mut h = self.random.build_hasher();
        h.write_usize(self.next.load(Ordering::Relaxed));
        h.finish()
    }
}

impl Member {
    fn is_up(&self, now: u64) -> bool {
        !self.check_failed.load(Ordering::Relaxed) && self.down_until.load(Ordering::Relaxed) <= now
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn version_for(target: &Target) -> Version {
    if target.protocol() == Protocol::Http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    }
}

// === impl UpstreamsBuilder ===

impl UpstreamsBuilder {
    /// How the next member is chosen.
    #[must_use]
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// How long a member that refused a connection stays out (default 1 s);
    /// the period doubles with each failure in a row, up to `max`
    /// (default 60 s). After it, the member gets requests again.
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max;
        self
    }

    /// Adds an active health check. It starts with the first request that
    /// uses the pool (or when the proxy is built inside a runtime) and stops
    /// when the pool is dropped.
    #[must_use]
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// Builds the pool.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Option`] when there is no target, or the health check
    /// path does not start with `/`.
    pub fn build(self) -> Result<Upstreams, ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::Option {
                name: "upstreams",
                reason: "no target".into(),
            });
        }
        if let Some(c) = &self.health_check
            && (!c.path.starts_with('/') || c.interval.is_zero() || c.timeout.is_zero())
        {
            return Err(ConfigError::Option {
                name: "health_check",
                reason: "the path must start with / and the interval and timeout be non-zero"
                    .into(),
            });
        }
        let members = self
            .targets
            .into_iter()
            .map(|target| Member {
                target,
                outstanding: AtomicUsize::new(0),
                down_until: AtomicU64::new(0),
                failures: AtomicU32::new(0),
                check_failed: AtomicBool::new(false),
            })
            .collect();
        Ok(Upstreams {
            inner: Arc::new(Pool {
                members,
                balance: self.balance,
                backoff: self.backoff,
                max_backoff: self.max_backoff,
                health_check: self.health_check,
                checker_started: AtomicBool::new(false),
                next: AtomicUsize::new(0),
                epoch: Instant::now(),
                random: std::hash::RandomState::new(),
                changed: watch::channel(0).0,
            }),
        })
    }
}

// === impl HealthCheck ===

impl HealthCheck {
    /// `GET path` every `interval`; a check times out after `interval` too
    /// (change it with [`HealthCheck::timeout`]).
    pub fn new(path: impl Into<String>, interval: Duration) -> Self {
        Self {
            path: path.into(),
            interval,
            timeout: interval,
        }
    }

    /// How long one check may take.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

// === impl Lease ===

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.inner.members[self.index]
            .outstanding
            .fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Picked ===

impl Picked {
    pub(crate) fn single(target: Target) -> Self {
        Self {
            target,
            lease: None,
            tried: Vec::new(),
        }
    }

    pub(crate) fn from_pool(pool: &Upstreams) -> Option<Self> {
        let lease = pool.pick(&[])?;
        Some(Self {
            target: pool.inner.members[lease.index].target.clone(),
            tried: vec![lease.index],
            lease: Some(lease),
        })
    }

    /// True when another member could take a request this one refused.
    pub(crate) fn can_fail_over(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.pool.len() > 1)
    }

    /// Passive health: a refused connection takes the member out; any
    /// answer brings it back.
    pub(crate) fn report<T>(&self, result: &Result<T, ProxyError>) {
        let Some(lease) = &self.lease else { return };
        match result {
            Err(e) if e.is_connect() => lease.pool.failed(lease.index),
            Ok(_) => lease.pool.succeeded(lease.index),
            Err(_) => {}
        }
    }

    /// Moves to a member not tried yet for this attempt, rewriting `head`
    /// for it. False when there is none.
    pub(crate) fn fail_over(&mut self, head: &mut request::Parts) -> bool {
        let Some(pool) = self.lease.as_ref().map(|l| l.pool.clone()) else {
            return false;
        };
        let Some(lease) = pool.pick(&self.tried) else {
            return false;
        };
        self.tried.push(lease.index);
        self.switch(lease, head);
        true
    }

    /// Picks again for a retry, preferring another member.
    pub(crate) fn next_attempt(&mut self, head: &mut request::Parts) {
        let Some(current) = self.lease.as_ref() else {
            return;
        };
        let pool = current.pool.clone();
        let Some(lease) = pool.pick(&[current.index]).or_else(|| pool.pick(&[])) else {
            return;
        };
        self.tried = vec![lease.index];
        self.switch(lease, head);
    }

    fn switch(&mut self, lease: Lease, head: &mut request::Parts) {
        let next = lease.pool.inner.members[lease.index].target.clone();
        retarget(head, &self.target, &next);
        self.target = next;
        self.lease = Some(lease);
    }

    pub(crate) fn take_lease(&mut self) -> Option<Lease> {
        self.lease.take()
    }
}

/// Points a prepared request head at another member: its origin, its
/// `Host` when the head named the old one, its HTTP version. The path stays.
fn retarget(head: &mut request::Parts, from: &Target, to: &Target) {
    let pq = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Ok(uri) = to.uri_for(pq) {
        head.uri = uri;
    }
    if head.headers.get(header::HOST) == Some(from.host_header()) {
        let host: HeaderValue = to.host_header().clone();
        head.headers.insert(header::HOST, host);
    }
    head.version = version_for(to);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(balance: Balance) -> Upstreams {
        Upstreams::builder(
            ["http://a.test", "http://b.test", "http://c.test"].map(|s| Target::parse(s).unwrap()),
        )
        .balance(balance)
        .build()
        .unwrap()
    }

    #[test]
    fn round_robin_takes_turns_and_skips_the_down() {
        let p = pool(Balance::RoundRobin);
        let order: Vec<usize> = (0..4).map(|_| p.pick(&[]).unwrap().index).collect();
        assert_eq!(order, [0, 1, 2, 0]);
        p.failed(1);
        assert!(!p.is_up(1));
        let order: Vec<usize> = (0..4).map(|_| p.pick(&[]).unwrap().index).collect();
        assert!(!order.contains(&1), "{order:?}");
        p.succeeded(1);
        assert!(p.is_up(1));
    }

    #[test]
    fn least_outstanding_prefers_the_idle() {
        let p = pool(Balance::LeastOutstanding);
        let a = p.pick(&[]).unwrap();
        let b = p.pick(&[]).unwrap();
        let c = p.pick(&[]).unwrap();
        assert_eq!(p.outstanding(0) + p.outstanding(1) + p.outstanding(2), 3);
        let busy = b.index;
        drop((a, c));
        let next = p.pick(&[]).unwrap();
        assert_ne!(next.index, busy);
    }

    #[test]
    fn power_of_two_picks_a_member() {
        let p = pool(Balance::PowerOfTwoChoices);
        for _ in 0..20 {
            assert!(p.pick(&[]).unwrap().index < 3);
        }
    }

    #[test]
    fn all_down_fails_open_and_exclusion_is_exact() {
        let p = pool(Balance::RoundRobin);
        for i in 0..3 {
            p.failed(i);
        }
        assert!(p.pick(&[]).is_some());
        assert!(p.pick(&[0, 1, 2]).is_none());
        assert_eq!(p.pick(&[0, 1]).unwrap().index, 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let p = Upstreams::builder([Target::parse("http://a.test").unwrap()])
            .backoff(Duration::from_secs(1), Duration::from_secs(3))
            .build()
            .unwrap();
        let now = p.inner.now();
        p.failed(0);
        let first = p.inner.members[0].down_until.load(Ordering::Relaxed) - now;
        p.failed(0);
        p.failed(0);
        let third = p.inner.members[0].down_until.load(Ordering::Relaxed) - now;
        assert!(first >= nanos(Duration::from_secs(1)) && first < nanos(Duration::from_secs(2)));
        assert!(third <= nanos(Duration::from_secs(4)) && third >= nanos(Duration::from_secs(3)));
    }

    #[test]
    fn empty_pools_are_refused() {
        assert!(Upstreams::new([]).is_err());
    }
}
