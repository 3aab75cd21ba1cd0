//! What each route's requests did lately, for the dashboard: requests and errors over the
//! last minute, the WebSockets open, and the state of the target as the last requests
//! found it.
//!
//! The counters live in the [`Route`](crate::store::Route) itself, so recording costs no
//! lookup, no lock and no allocation: the public handler already holds the route, and adds
//! to two relaxed atomics of the current ten-second slot (plus one clock read). A slot is
//! reset by the first request that finds it holding an older period; a request racing with
//! that reset may be lost, which a rate shown to a person can afford. A route that is
//! replaced (`POST` of the same path) starts from zero, as its target may have changed.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};

/// Length of a slot, in seconds.
const SLOT_SECS: i64 = 10;
/// Slots kept: the window is the current one and the five before it (50 to 60 seconds),
/// plus one being reset.
const SLOTS: usize = 7;
const WINDOW_SLOTS: i64 = 6;

/// The state of a route's target, from the last request that reached a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum TargetState {
    /// No request yet.
    Unknown = 0,
    /// The target answered (any status).
    Responding = 1,
    /// The connection was refused.
    Refusing = 2,
    /// The target did not answer in time (connect or response timeout).
    TimingOut = 3,
    /// Another failure of the target: reset, TLS, an invalid answer.
    Failing = 4,
}

/// The per-route counters.
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    slots: [Slot; SLOTS],
    websockets: AtomicI64,
    state: AtomicU8,
}

/// One route's numbers as the dashboard shows them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    /// Requests per second over the window.
    pub(crate) rps: f64,
    /// Requests in the window.
    pub(crate) requests: u64,
    /// Of which answered 5xx.
    pub(crate) errors: u64,
    pub(crate) websockets: u64,
    pub(crate) state: TargetState,
}

#[derive(Debug, Default)]
struct Slot {
    /// The period (Unix seconds / [`SLOT_SECS`]) the counts belong to.
    period: AtomicU32,
    requests: AtomicU32,
    errors: AtomicU32,
}

// === impl TargetState ===

impl TargetState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Responding => "responding",
            Self::Refusing => "refusing",
            Self::TimingOut => "timing_out",
            Self::Failing => "failing",
        }
    }

    /// What a failed call shows of the target: `None` when the failure was not the
    /// target's (the client left, the request was bad).
    pub(crate) fn of_error(err: &switchyard::ProxyError) -> Option<Self> {
        Some(match crate::metrics::upstream_kind(err)? {
            "refused" => Self::Refusing,
            "timeout" => Self::TimingOut,
            _ => Self::Failing,
        })
    }

    fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::Responding,
            2 => Self::Refusing,
            3 => Self::TimingOut,
            4 => Self::Failing,
            _ => Self::Unknown,
        }
    }
}

// === impl RouteStats ===

impl RouteStats {
    /// Counts one request answered at `now_ms`; `error` when its status was 5xx. `state` is
    /// what it showed of the target, `None` when nothing (the client's fault).
    pub(crate) fn record(&self, now_ms: i64, error: bool, state: Option<TargetState>) {
        let period = period_of(now_ms);
        let slot = &self.slots[slot_index(period)];
        if slot.period.load(Ordering::Relaxed) != period {
            slot.period.store(period, Ordering::Relaxed);
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(state) = state
            && self.state.load(Ordering::Relaxed) != state as u8
        {
            self.state.store(state as u8, Ordering::Relaxed);
        }
    }

    /// A WebSocket tunnel of the route opened.
    pub(crate) fn tunnel_opened(&self) {
        self.websockets.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket tunnel of the route closed.
    pub(crate) fn tunnel_closed(&self) {
        self.websockets.fetch_sub(1, Ordering::Relaxed);
    }

    /// The numbers over the window that ends at `now_ms`.
    pub(crate) fn snapshot(&self, now_ms: i64) -> Snapshot {
        let current = i64::from(period_of(now_ms));
        let first = current - (WINDOW_SLOTS - 1);
        let (mut requests, mut errors) = (0u64, 0u64);
        for slot in &self.slots {
            let period = i64::from(slot.period.load(Ordering::Relaxed));
            if (first..=current).contains(&period) {
                requests += u64::from(slot.requests.load(Ordering::Relaxed));
                errors += u64::from(slot.errors.load(Ordering::Relaxed));
            }
        }
        // From the start of the oldest slot to now: 50 to 60 seconds.
        #[allow(clippy::cast_precision_loss)]
        let seconds = (now_ms - first * SLOT_SECS * 1000).max(1) as f64 / 1000.0;
        #[allow(clippy::cast_precision_loss)]
        let rps = requests as f64 / seconds;
        Snapshot {
            rps,
            requests,
            errors,
            websockets: u64::try_from(self.websockets.load(Ordering::Relaxed)).unwrap_or(0),
            state: TargetState::from_u8(self.state.load(Ordering::Relaxed)),
        }
    }
}

fn period_of(now_ms: i64) -> u32 {
    u32::try_from(now_ms.max(0) / 1000 / SLOT_SECS).unwrap_or(u32::MAX)
}

fn slot_index(period: u32) -> usize {
    usize::try_from(period).unwrap_or(0) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_over_the_last_minute() {
        let s = RouteStats::default();
        let t0 = 1_000_000_000_000; // a multiple of 10 s
        assert_eq!(s.snapshot(t0).state, TargetState::Unknown);
        for i in 0..30 {
            s.record(t0 + i * 1000, i % 3 == 0, Some(TargetState::Responding));
        }
        let snap = s.snapshot(t0 + 30_000);
        assert_eq!((snap.requests, snap.errors), (30, 10));
        // The window began 50 s before: 20 s before t0 and the 30 s since.
        assert!((snap.rps - 30.0 / 50.0).abs() < 1e-9, "{}", snap.rps);
        assert_eq!(snap.state, TargetState::Responding);
        // Two minutes later, all of it is out of the window; new requests reset old slots.
        let later = t0 + 120_000;
        assert_eq!(s.snapshot(later).requests, 0);
        s.record(later, true, Some(TargetState::Refusing));
        s.record(later, false, None);
        let snap = s.snapshot(later);
        assert_eq!((snap.requests, snap.errors), (2, 1));
        assert_eq!(snap.state, TargetState::Refusing, "None keeps the state");
    }

    #[test]
    fn websockets_count_up_and_down() {
        let s = RouteStats::default();
        s.tunnel_opened();
        s.tunnel_opened();
        s.tunnel_closed();
        assert_eq!(s.snapshot(0).websockets, 1);
    }
}
