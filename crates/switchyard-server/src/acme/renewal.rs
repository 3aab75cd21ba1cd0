//! ACME Renewal Information (ARI, RFC 9773): the ACME server's suggested renewal window
//! for the served certificate, when its directory has `renewalInfo`.
//!
//! The certificate is due at the earlier of the `--acme-renew-at` point and a uniformly
//! random point of the suggested window (now, for a window that has started), chosen once
//! per window. The window is asked for again after the server's `Retry-After`, bounded to
//! [`MIN_REFETCH`]..[`MAX_REFETCH`]; `SWITCHYARD_ACME_ARI_MIN_RETRY` (seconds) lowers the
//! lower bound, for tests only. A server without ARI leaves the `--acme-renew-at` point
//! alone; a query that fails (or an invalid window) keeps the last window, or that point
//! when there is none: that is logged, and is neither fatal nor a failed order.

use std::time::Duration;

use instant_acme::{CertificateIdentifier, RenewalInfo};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::time::Instant;

use super::store::StoredCert;

/// The shortest and longest wait before the window is asked for again, whatever the
/// server's `Retry-After` says.
pub(super) const MIN_REFETCH: Duration = Duration::from_secs(60);
pub(super) const MAX_REFETCH: Duration = Duration::from_secs(86_400);
/// The wait after a query that failed (the ACME server down, a bad answer).
const AFTER_FAILURE: Duration = Duration::from_secs(600);
/// The environment variable that lowers [`MIN_REFETCH`] (seconds), for tests.
pub(super) const MIN_REFETCH_ENV: &str = "SWITCHYARD_ACME_ARI_MIN_RETRY";

/// What ARI says about the served certificate.
#[derive(Debug)]
pub(super) struct Renewal {
    /// The certificate's ARI identifier (RFC 9773 §4.1).
    pub(super) id: CertificateIdentifier<'static>,
    /// The last window the server suggested, as Unix seconds.
    window: Option<(i64, i64)>,
    /// The point chosen in it.
    at: Option<i64>,
    /// When to ask again.
    pub(super) next_fetch: Instant,
}

/// The outcome of one query, for the log line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fetched {
    /// A window not seen before, and the point chosen in it.
    NewWindow { start: i64, end: i64, at: i64 },
    /// The same window as before.
    Unchanged,
    /// A window that ends before it starts, or when it starts: RFC 9773 §4.2 has the
    /// client treat it as no answer.
    Invalid,
}

// === impl Renewal ===

impl Renewal {
    /// The state for `stored`'s leaf, asked for at once.
    pub(super) fn new(stored: &StoredCert) -> Result<Self, String> {
        Ok(Self {
            id: identifier(stored)?,
            window: None,
            at: None,
            next_fetch: Instant::now(),
        })
    }

    /// When ARI says the certificate is due (Unix seconds), if it said anything.
    pub(super) fn at(&self) -> Option<i64> {
        self.at
    }

    /// Whether the server answered for this certificate (its ARI works).
    pub(super) fn answered(&self) -> bool {
        self.window.is_some()
    }

    /// Takes the server's answer: a point in a new window (the old point is kept while
    /// the window is the same, so asking often does not make renewal earlier), and when
    /// to ask again.
    pub(super) fn update(
        &mut self,
        info: &RenewalInfo,
        retry_after: Duration,
        min_refetch: Duration,
        now: i64,
    ) -> Fetched {
        let start = info.suggested_window.start.unix_timestamp();
        let end = info.suggested_window.end.unix_timestamp();
        if end <= start {
            self.failed(min_refetch);
            return Fetched::Invalid;
        }
        self.next_fetch = Instant::now() + retry_after.clamp(min_refetch, MAX_REFETCH);
        if self.window == Some((start, end)) && self.at.is_some() {
            return Fetched::Unchanged;
        }
        let at = pick(start, end, now, random_u64());
        self.window = Some((start, end));
        self.at = Some(at);
        Fetched::NewWindow { start, end, at }
    }

    /// A failed query: asked again later, the chosen point (if any) kept.
    pub(super) fn failed(&mut self, min_refetch: Duration) {
        self.next_fetch = Instant::now() + AFTER_FAILURE.clamp(min_refetch, MAX_REFETCH);
    }
}

/// The lower bound of the wait between queries: [`MIN_REFETCH`], or the value of
/// [`MIN_REFETCH_ENV`] in seconds (at least 1).
pub(super) fn min_refetch(env: Option<&str>) -> Duration {
    env.and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(MIN_REFETCH, |s| Duration::from_secs(s.max(1)))
        .min(MIN_REFETCH)
}

/// The ARI identifier (authority key identifier and serial) of `stored`'s leaf.
pub(super) fn identifier(stored: &StoredCert) -> Result<CertificateIdentifier<'static>, String> {
    let leaf = CertificateDer::pem_slice_iter(stored.chain.as_bytes())
        .next()
        .ok_or("no certificate in the chain")?
        .map_err(|e| format!("certificate PEM: {e}"))?;
    CertificateIdentifier::try_from(&leaf).map(CertificateIdentifier::into_owned)
}

/// A uniformly random second of `start..=end` given `random`; `now` when the window has
/// started, `start` when it is empty or inverted ([`Renewal::update`] refuses those).
fn pick(start: i64, end: i64, now: i64, random: u64) -> i64 {
    if start <= now {
        return now;
    }
    if end <= start {
        return start;
    }
    let span = u64::try_from(end - start).unwrap_or(0).saturating_add(1);
    start.saturating_add(i64::try_from(random % span).unwrap_or(0))
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    // The system's generator does not fail on Linux; a zero would pick the window's start.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_window_is_now() {
        assert_eq!(pick(100, 200, 150, 7), 150);
        assert_eq!(pick(100, 200, 300, 7), 300);
        assert_eq!(pick(100, 100, 150, 7), 150);
    }

    #[test]
    fn a_future_window_is_a_point_inside_it() {
        for random in [0, 1, 99, 100, 101, u64::MAX] {
            let at = pick(1_000, 1_100, 10, random);
            assert!((1_000..=1_100).contains(&at), "{random}: {at}");
        }
        assert_eq!(pick(1_000, 1_100, 10, 0), 1_000);
        assert_eq!(pick(1_000, 1_100, 10, 100), 1_100);
    }

    #[test]
    fn an_empty_or_inverted_window_is_its_start() {
        assert_eq!(pick(2_000, 2_000, 10, 5), 2_000);
        assert_eq!(pick(2_000, 1_000, 10, 5), 2_000);
    }

    fn info(start: &str, end: &str) -> RenewalInfo {
        serde_json::from_value(serde_json::json!({
            "suggestedWindow": { "start": start, "end": end },
        }))
        .unwrap()
    }

    #[test]
    fn a_point_is_chosen_once_per_window() {
        let mut r = Renewal {
            id: CertificateIdentifier {
                authority_key_identifier: "aki".into(),
                serial: "serial".into(),
            },
            window: None,
            at: None,
            next_fetch: Instant::now(),
        };
        assert!(!r.answered());
        // 2030-01-01 to 2030-01-02, asked in 2026.
        let ahead = info("2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z");
        let now = 1_800_000_000;
        let Fetched::NewWindow { start, end, at } =
            r.update(&ahead, MAX_REFETCH * 2, MIN_REFETCH, now)
        else {
            panic!("a first window is new");
        };
        assert_eq!((start, end), (1_893_456_000, 1_893_542_400));
        assert!((start..=end).contains(&at));
        assert!(r.answered());
        assert!(r.next_fetch <= Instant::now() + MAX_REFETCH);
        // The same window again: the same point, however often it is asked for.
        for _ in 0..10 {
            assert_eq!(
                r.update(&ahead, Duration::ZERO, MIN_REFETCH, now),
                Fetched::Unchanged
            );
            assert_eq!(r.at(), Some(at));
        }
        assert!(r.next_fetch >= Instant::now() + MIN_REFETCH - Duration::from_secs(1));
        // An invalid window: no answer, the point kept.
        let inverted = info("2030-01-02T00:00:00Z", "2030-01-01T00:00:00Z");
        assert_eq!(
            r.update(&inverted, Duration::ZERO, MIN_REFETCH, now),
            Fetched::Invalid
        );
        assert_eq!(r.at(), Some(at));
        // A window that has started: now.
        let started = info("2020-01-01T00:00:00Z", "2030-01-02T00:00:00Z");
        let fetched = r.update(&started, Duration::ZERO, MIN_REFETCH, now);
        assert_eq!(
            fetched,
            Fetched::NewWindow {
                start: 1_577_836_800,
                end: 1_893_542_400,
                at: now
            }
        );
    }

    #[test]
    fn the_lower_bound_is_only_lowered() {
        assert_eq!(min_refetch(None), MIN_REFETCH);
        assert_eq!(min_refetch(Some("1")), Duration::from_secs(1));
        assert_eq!(min_refetch(Some("0")), Duration::from_secs(1));
        assert_eq!(min_refetch(Some("3600")), MIN_REFETCH);
        assert_eq!(min_refetch(Some("soon")), MIN_REFETCH);
    }
}
