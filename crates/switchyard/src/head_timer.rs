//! hyper's HTTP/1 header read timeout (our keep-alive timeout) without a tokio timer per
//! request.
//!
//! hyper asks its `Timer` for a new sleep each time it starts reading a request head and
//! drops it once the head is in: a timer allocated, registered and cancelled for every
//! request, 4 % of the proxy's user-space instructions (callgrind), for deadlines that
//! almost never pass. Here the sleep hyper gets ([`HeadSleep`]) only writes its deadline
//! into its connection's [`Deadline`]. The connection's task ([`Watched`]) keeps one tokio sleep for it, moved only when it would
//! fire too late: a busy connection re-arms once per timeout period, not once per request.
//! When that sleep fires, the task polls the connection again, and hyper finds its head
//! sleep due (or a later deadline, which the task then arms).
//!
//! The connection is found through a thread-local set while [`Watched`] polls it: hyper
//! creates its head sleep inside that poll. A sleep created anywhere else is a plain tokio
//! one, so a builder given [`HeadTimer`] works without [`Watched`], only not cheaper.
//!
//! [`Proxy::listen`](crate::Proxy::listen) uses both; a server of your own on hyper can
//! too: `http1().timer(HeadTimer).header_read_timeout(..)` on the builder, and each
//! connection future wrapped in [`Watched::new`].

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

thread_local! {
    /// The deadline of the connection being polled by a [`Watched`] on this thread.
    static CURRENT: Cell<Option<Arc<Deadline>>> = const { Cell::new(None) };
}

/// hyper's timer for an HTTP/1 server's header read timeout: cheap sleeps for
/// connections polled through [`Watched`], tokio's elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadTimer;

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(now() + duration)
    }

    fn now(&self) -> Instant {
        now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        match current() {
            Some(conn) => {
                conn.arm(deadline);
                Box::pin(HeadSleep { deadline, conn })
            }
            None => Box::pin(TokioSleep {
                inner: Box::pin(tokio::time::sleep_until(deadline.into())),
            }),
        }
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        // The old one goes first: its drop disarms its deadline, which may be the new one.
        *sleep = Box::pin(Unarmed);
        *sleep = self.sleep_until(new_deadline);
    }
}

/// A placeholder while a sleep is replaced (zero-sized: boxing it allocates nothing).
struct Unarmed;

impl Future for Unarmed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Sleep for Unarmed {}

/// The deadline of the connection a [`Watched`] is polling on this thread, if any.
fn current() -> Option<Arc<Deadline>> {
    CURRENT.with(|current| {
        let conn = current.take();
        let copy = conn.clone();
        current.set(conn);
        copy
    })
}

/// Tokio's clock, as hyper's `Instant`: deadlines, their checks and the connection's tokio
/// sleep all read one clock (they differ when tokio's is paused in tests).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The head deadline of one connection: nanoseconds after [`epoch`], plus one; zero when
/// no head is being read.
#[derive(Debug, Default)]
struct Deadline {
    at: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Deadline {
    fn encode(at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(epoch()).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn arm(&self, at: Instant) {
        self.at.store(Self::encode(at), Ordering::Relaxed);
    }

    fn disarm(&self, at: Instant) {
        // Only its own: a newer sleep may have armed since.
        let _ = self
            .at
            .compare_exchange(Self::encode(at), 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn get(&self) -> Option<Instant> {
        match self.at.load(Ordering::Relaxed) {
            0 => None,
            n => Some(epoch() + Duration::from_nanos(n - 1)),
        }
    }
}

/// The sleep hyper gets inside a [`Watched`] connection: due when its deadline has passed,
/// which it tells whenever hyper asks; [`Watched`] sees that hyper asks in time.
struct HeadSleep {
    deadline: Instant,
    conn: Arc<Deadline>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if now() >= self.deadline {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        self.conn.disarm(self.deadline);
    }
}

/// A sleep created outside a [`Watched`] poll.
struct TokioSleep {
    inner: Pin<Box<tokio::time::Sleep>>,
}

impl Future for TokioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl Sleep for TokioSleep {}

pin_project_lite::pin_project! {
    /// A connection future whose [`HeadTimer`] sleeps are woken by one tokio sleep.
    pub struct Watched<F> {
        #[pin]
        conn: F,
        deadline: Option<Arc<Deadline>>,
        #[pin]
        timer: tokio::time::Sleep,
        // The deadline `timer` is set for, while it is.
        set_for: Option<Instant>,
        // A head deadline the timer fired for, after which the connection was polled
        // again: not armed again (hyper was not reading a head, or it would have ended).
        fired_for: Option<Instant>,
    }
}

impl<F> std::fmt::Debug for Watched<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("set_for", &self.set_for)
            .field("fired_for", &self.fired_for)
            .finish_non_exhaustive()
    }
}

impl<F> Watched<F> {
    /// Wraps a connection future (hyper's, from a builder given [`HeadTimer`]).
    /// Needs the Tokio runtime (it holds a tokio sleep).
    pub fn new(conn: F) -> Self {
        Self {
            conn,
            deadline: Some(Arc::default()),
            timer: tokio::time::sleep(Duration::ZERO),
            set_for: None,
            fired_for: None,
        }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        loop {
            let polled = {
                let _current = Current::set(this.deadline);
                this.conn.as_mut().poll(cx)
            };
            if polled.is_ready() {
                return polled;
            }
            let Some(at) = this.deadline.as_ref().and_then(|d| d.get()) else {
                return Poll::Pending;
            };
            if *this.fired_for == Some(at) {
                return Poll::Pending;
            }
            if this.set_for.is_none_or(|set| set > at) {
                this.timer.as_mut().reset(at.into());
                *this.set_for = Some(at);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.set_for = None;
            if at <= now() {
                *this.fired_for = Some(at);
            }
        }
    }
}

/// While it lives, the connection's deadline is [`CURRENT`]; its drop (a panic in the
/// connection's poll included) puts both back.
struct Current<'a> {
    slot: &'a mut Option<Arc<Deadline>>,
    previous: Option<Arc<Deadline>>,
}

impl<'a> Current<'a> {
    fn set(slot: &'a mut Option<Arc<Deadline>>) -> Self {
        let previous = CURRENT.replace(slot.take());
        Self { slot, previous }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        *self.slot = CURRENT.replace(self.previous.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_round_trips_and_disarms_only_its_own() {
        let d = Deadline::default();
        assert_eq!(d.get(), None);
        let a = Instant::now() + Duration::from_secs(5);
        d.arm(a);
        let got = d.get().unwrap();
        assert!(
            got.max(a) - got.min(a) < Duration::from_micros(1),
            "{got:?} vs {a:?}"
        );
        let b = a + Duration::from_millis(1);
        d.arm(b);
        d.disarm(a);
        assert!(d.get().is_some(), "a newer deadline stays");
        d.disarm(b);
        assert_eq!(d.get(), None);
    }

    /// A reset to the same instant keeps the connection's deadline armed.
    #[test]
    fn reset_to_the_same_deadline_stays_armed() {
        let conn = Arc::new(Deadline::default());
        let previous = CURRENT.replace(Some(conn.clone()));
        let at = Instant::now() + Duration::from_secs(5);
        let mut sleep = HeadTimer.sleep_until(at);
        HeadTimer.reset(&mut sleep, at);
        CURRENT.set(previous);
        assert!(conn.get().is_some(), "disarmed by the replaced sleep");
        drop(sleep);
        assert_eq!(conn.get(), None);
    }

    /// Outside a `Watched` poll, the timer's sleeps are tokio's: they end on their own.
    #[tokio::test]
    async fn outside_a_watched_connection_sleeps_are_tokio_sleeps() {
        let started = Instant::now();
        HeadTimer.sleep(Duration::from_millis(20)).await;
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    /// A "connection" that, like hyper, holds one head sleep at a time, creates, polls
    /// and drops it inside its own poll, and ends at the second one's deadline.
    fn two_heads() -> impl Future<Output = usize> {
        let mut sleep: Option<Pin<Box<dyn Sleep>>> = None;
        let mut due = 0;
        std::future::poll_fn(move |cx| {
            assert!(current().is_some(), "polled without its deadline");
            loop {
                let head = sleep.get_or_insert_with(|| HeadTimer.sleep(Duration::from_millis(30)));
                if head.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                sleep = None;
                due += 1;
                if due == 2 {
                    return Poll::Ready(due);
                }
            }
        })
    }

    /// Inside, the connection's timer wakes the task when the head deadline passes, and
    /// a later deadline (the next request's) moves it.
    #[tokio::test]
    async fn a_watched_connection_wakes_at_its_head_deadline() {
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), Watched::new(two_heads())).await;
        assert_eq!(ended.expect("never woken"), 2);
        assert!(started.elapsed() >= Duration::from_millis(60));
    }

    /// With tokio's clock paused (and jumping ahead of the system's), the same: deadlines
    /// and their checks read tokio's clock, so nothing spins or waits forever.
    #[tokio::test(start_paused = true)]
    async fn a_watched_connection_follows_a_paused_clock() {
        let started = tokio::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), Watched::new(two_heads())).await;
        assert_eq!(ended.expect("never woken"), 2);
        assert!(started.elapsed() >= Duration::from_millis(60));
    }
}
