//! The dashboard's traffic history: a sampler task reads the metrics' running totals every
//! [`SAMPLE_EVERY`] and keeps the differences (rates, latency quantiles, connections) of
//! the last [`WINDOW`] in a ring buffer of fixed size. The request path is not involved:
//! it only adds to the counters the metrics already have.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::{CLASSES, Metrics, Totals, quantile_seconds};
use crate::time;

/// How often a sample is taken (and how often the page refreshes).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back the samples go.
pub(crate) const WINDOW: Duration = Duration::from_secs(15 * 60);
const CAPACITY: usize = (WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize;

/// The ring buffer.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

/// The traffic of one sampling interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Sample {
    /// When it was taken (the end of the interval).
    pub(crate) time: String,
    /// Requests ended per second.
    pub(crate) rps: f64,
    /// Requests ended per second, by status class (`none`: no response was sent).
    pub(crate) status: StatusRates,
    /// Time to the response head (HTTP requests, WebSockets aside), in milliseconds;
    /// `null` in an interval without requests.
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    /// Client connections open on the public port (tunnels included) at the end.
    pub(crate) connections: u64,
    /// WebSocket tunnels open at the end.
    pub(crate) websockets: u64,
}

/// Rates by status class.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct StatusRates {
    pub(crate) none: f64,
    #[serde(rename = "1xx")]
    pub(crate) c1xx: f64,
    #[serde(rename = "2xx")]
    pub(crate) c2xx: f64,
    #[serde(rename = "3xx")]
    pub(crate) c3xx: f64,
    #[serde(rename = "4xx")]
    pub(crate) c4xx: f64,
    #[serde(rename = "5xx")]
    pub(crate) c5xx: f64,
}

/// `GET /api/dashboard/traffic`.
#[derive(Debug, Serialize)]
pub(crate) struct View {
    interval_seconds: u64,
    window_seconds: u64,
    samples: Vec<Sample>,
}

/// The totals at the previous sample.
#[derive(Debug)]
pub(crate) struct Sampler {
    metrics: Arc<Metrics>,
    history: Arc<History>,
    last: Totals,
    at: Instant,
}

// === impl History ===

impl History {
    /// Appends a sample, dropping the oldest one when full.
    pub(crate) fn push(&self, sample: Sample) {
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub(crate) fn view(&self) -> View {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        View {
            interval_seconds: SAMPLE_EVERY.as_secs(),
            window_seconds: WINDOW.as_secs(),
            samples,
        }
    }
}

// === impl Sampler ===

impl Sampler {
    pub(crate) fn new(metrics: Arc<Metrics>, history: Arc<History>) -> Self {
        let last = metrics.traffic.totals();
        Self {
            metrics,
            history,
            last,
            at: Instant::now(),
        }
    }

    /// Takes a sample every [`SAMPLE_EVERY`], until the task is aborted.
    pub(crate) fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE_EVERY, SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.sample();
            }
        })
    }

    /// Records the traffic since the previous sample.
    pub(crate) fn sample(&mut self) {
        let now = Instant::now();
        let totals = self.metrics.traffic.totals();
        let seconds = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let sample = difference(&self.last, &totals, seconds, time::now_ms());
        self.history.push(Sample {
            connections: self.metrics.client_connections().unwrap_or(0) as u64,
            websockets: self.metrics.tunnels() as u64,
            ..sample
        });
        self.last = totals;
        self.at = now;
    }
}

/// The traffic between two totals `seconds` apart, sampled at `now_ms`.
fn difference(before: &Totals, after: &Totals, seconds: f64, now_ms: i64) -> Sample {
    #[allow(clippy::cast_precision_loss)]
    let rate =
        |class: usize| after.classes[class].saturating_sub(before.classes[class]) as f64 / seconds;
    let mut status = StatusRates::default();
    for (class, name) in CLASSES.iter().enumerate() {
        let r = rate(class);
        match *name {
            "1xx" => status.c1xx = r,
            "2xx" => status.c2xx = r,
            "3xx" => status.c3xx = r,
            "4xx" => status.c4xx = r,
            "5xx" => status.c5xx = r,
            _ => status.none = r,
        }
    }
    let mut head = after.head;
    for (h, b) in head.iter_mut().zip(&before.head) {
        *h = h.saturating_sub(*b);
    }
    let ms = |q| quantile_seconds(&head, q).map(|s| s * 1000.0);
    Sample {
        time: time::format_ms(now_ms),
        rps: (0..CLASSES.len()).map(rate).sum(),
        status,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        connections: 0,
        websockets: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_quantiles_of_an_interval() {
        let before = Totals::default();
        let mut after = Totals::default();
        after.classes[2] = 8; // 2xx
        after.classes[5] = 2; // 5xx
        after.head[0] = 10; // under 1 ms
        let s = difference(&before, &after, 2.0, 0);
        assert!((s.rps - 5.0).abs() < 1e-9);
        assert!((s.status.c2xx - 4.0).abs() < 1e-9);
        assert!((s.status.c5xx - 1.0).abs() < 1e-9);
        assert!(s.p50_ms.unwrap() <= 1.0);
        assert_eq!(s.time, "1970-01-01T00:00:00.000Z");
        let idle = difference(&after, &after, 2.0, 0);
        assert_eq!((idle.rps, idle.p99_ms), (0.0, None));
    }

    #[test]
    fn the_ring_keeps_the_window() {
        let h = History::default();
        let s = difference(&Totals::default(), &Totals::default(), 2.0, 0);
        for _ in 0..CAPACITY + 5 {
            h.push(s.clone());
        }
        assert_eq!(h.view().samples.len(), CAPACITY);
        assert_eq!(CAPACITY, 450);
    }
}
