//! The time limits on reading request heads, without a tokio timer per request: the
//! keep-alive (idle) timeout and the request-head timeout with its `408`.
//!
//! Two deadlines apply while an HTTP/1 connection waits for a request head:
//!
//! * **idle** (the keep-alive timeout): no byte of the next head has arrived. When it
//!   passes, the connection is closed without an answer;
//! * **head** (the request-head timeout): counted from the first byte of a head, the
//!   whole head must arrive in time. When it passes, `408 Request Timeout` is written and
//!   the connection closed (a slowloris client cannot hold it for longer, whatever the
//!   keep-alive timeout).
//!
//! Three parts share one [`Clock`] per connection:
//!
//! * hyper's header read timer ([`HeadTimer`]): hyper asks it for a sleep each time it
//!   starts reading a head and drops the sleep once the head is in. The sleep it gets
//!   ([`HeadSleep`]) marks the clock "waiting for a head" and is due only when the idle
//!   deadline has passed with no byte read. A timer allocated, registered and cancelled
//!   for every request would cost 4 % of the proxy's user-space instructions (callgrind)
//!   for deadlines that almost never pass;
//! * the connection's IO ([`HeadIo`]): notes the first byte of a head, and past the head
//!   deadline writes the `408` itself (hyper has no such answer) before it reads as closed;
//! * the connection's task ([`Watched`]): keeps one tokio sleep for whichever deadline is
//!   current, moved only when it would fire too late (a busy connection re-arms once per
//!   timeout period, not once per request), and marks the clock expired when it fires.
//!
//! The common case (a head that arrives in one read) reads no clock and arms no timer
//! beyond hyper's own call: the head deadline is computed only when a poll of the
//! connection ends with a head half read.
//!
//! The clock is found through a thread-local set while [`Watched`] polls the connection:
//! hyper creates its head sleep inside that poll. A sleep created anywhere else is a plain
//! tokio one.
//!
//! A head whose first bytes hyper already holds when it starts waiting (pipelined after a
//! body) is timed as idle until more of it arrives: the IO cannot see hyper's buffer.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hyper::rt::{Sleep, Timer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

thread_local! {
    /// The clock of the connection being polled by a [`Watched`] on this thread.
    static CURRENT: Cell<Option<Arc<Clock>>> = const { Cell::new(None) };
}

/// hyper's timeout for waiting while keep-alive is off but the head timeout is on: hyper
/// only tells the clock it waits for a head when it has a header read timeout.
pub(crate) const NO_IDLE_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// What [`HeadIo::poll_read_ahead`] asks the socket for at least: the whole first head
/// of most requests, read in one system call before the version is known.
const READ_AHEAD: usize = 4096;

/// Where a connection is, as far as its head deadlines go.
const FRESH: u8 = 0;
/// A byte arrived before hyper waited for a head (read ahead to tell the protocol, or
/// HTTP/2).
const STARTED: u8 = 1;
/// hyper waits for a head; no byte of it yet.
const IDLE: u8 = 2;
/// hyper waits for the rest of a head.
const HEAD: u8 = 3;
/// hyper is not reading a head (a request is in flight, or the connection upgraded).
const BUSY: u8 = 4;
/// The phase's bits in [`Clock::state`].
const PHASE: u8 = 0b0111;
/// Set beside the phase once its deadline has passed (by [`Watched`]).
const EXPIRED: u8 = 0b1000;

/// The head deadlines of one connection. Every access comes from the connection's own
/// task, so relaxed atomics do (they only make the clock `Sync` for hyper's `Sleep`).
#[derive(Debug)]
pub(crate) struct Clock {
    /// The phase, and [`EXPIRED`] once its deadline has passed: one load tells both.
    state: AtomicU8,
    /// The idle deadline (encoded, 0: none), for `FRESH` and `IDLE`.
    idle_at: AtomicU64,
    /// The head deadline (encoded, 0: not computed yet), for `HEAD`.
    head_at: AtomicU64,
    keep_alive: Option<Duration>,
    head_timeout: Option<Duration>,
}

/// hyper's timer for an HTTP/1 server's header read timeout: cheap sleeps for
/// connections polled through [`Watched`], tokio's elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeadTimer;

// === impl Clock ===

impl Clock {
    /// A connection just accepted: idle until its first byte.
    pub(crate) fn new(keep_alive: Option<Duration>, head_timeout: Option<Duration>) -> Self {
        Self {
            state: AtomicU8::new(FRESH),
            idle_at: AtomicU64::new(keep_alive.map_or(0, |limit| encode(now() + limit))),
            head_at: AtomicU64::new(0),
            keep_alive,
            head_timeout,
        }
    }

    #[inline]
    fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    #[inline]
    fn phase(&self) -> u8 {
        self.state() & PHASE
    }

    /// Moves to `phase`, whose deadline has not passed.
    #[inline]
    fn enter(&self, phase: u8) {
        self.state.store(phase, Ordering::Relaxed);
    }

    #[inline]
    fn expired(&self) -> bool {
        self.state() & EXPIRED != 0
    }

    fn expire(&self) {
        self.state.store(self.state() | EXPIRED, Ordering::Relaxed);
    }

    /// hyper starts waiting for a head, until `deadline` (its header read timeout).
    fn arm(&self, deadline: Instant) {
        let next = match self.phase() {
            STARTED | HEAD => HEAD,
            _ => IDLE,
        };
        if next == IDLE {
            let at = if self.keep_alive.is_some() {
                encode(deadline)
            } else {
                0
            };
            self.idle_at.store(at, Ordering::Relaxed);
        }
        self.enter(next);
    }

    /// hyper has the head (or gave up waiting).
    fn disarm(&self) {
        self.idle_at.store(0, Ordering::Relaxed);
        self.head_at.store(0, Ordering::Relaxed);
        self.enter(BUSY);
    }

    /// Bytes arrived from the client.
    fn received(&self) {
        match self.phase() {
            FRESH => self.enter(STARTED),
            IDLE => self.enter(HEAD),
            _ => {}
        }
    }

    /// The deadline that applies now, unless it has passed already. The head deadline
    /// is fixed the first time it is asked for: at the end of the poll in which the
    /// head's first bytes came.
    #[inline]
    fn pending_deadline(&self) -> Option<Instant> {
        match self.state() {
            BUSY | STARTED => None,
            state if state & EXPIRED != 0 => None,
            _ => self.deadline(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let encoded = match self.phase() {
            FRESH | IDLE => self.idle_at.load(Ordering::Relaxed),
            HEAD => {
                let limit = self.head_timeout?;
                match self.head_at.load(Ordering::Relaxed) {
                    0 => {
                        let at = encode(now() + limit);
                        self.head_at.store(at, Ordering::Relaxed);
                        at
                    }
                    at => at,
                }
            }
            _ => 0,
        };
        decode(encoded)
    }
}

// === impl HeadTimer ===

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(now() + duration)
    }

    fn now(&self) -> Instant {
        now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        if with_current(|clock| clock.arm(deadline)).is_some() {
            // Zero-sized: boxing it allocates nothing.
            Box::pin(HeadSleep)
        } else {
            Box::pin(TokioSleep {
                inner: Box::pin(tokio::time::sleep_until(deadline.into())),
            })
        }
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        // The old one goes first: its drop disarms the clock, which the new one arms.
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

/// Runs `f` on the clock of the connection a [`Watched`] is polling on this thread, if
/// any (without touching its reference count).
fn with_current<T>(f: impl FnOnce(&Clock) -> T) -> Option<T> {
    CURRENT.with(|current| {
        let clock = current.take();
        let out = clock.as_deref().map(f);
        current.set(clock);
        out
    })
}

/// Tokio's clock, as hyper's `Instant`: deadlines, their checks and the connection's tokio
/// sleep all read one clock (they differ when tokio's is paused in tests).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// An instant as nanoseconds after [`epoch`], plus one (zero means none).
fn encode(at: Instant) -> u64 {
    let nanos = at.saturating_duration_since(epoch()).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
}

fn decode(encoded: u64) -> Option<Instant> {
    match encoded {
        0 => None,
        n => Some(epoch() + Duration::from_nanos(n - 1)),
    }
}

/// The sleep hyper gets inside a [`Watched`] connection: due once the idle deadline has
/// passed with no byte of the head read. While a head is half read it never is: the
/// head deadline ends the connection through [`HeadIo`], with a `408`.
///
/// It finds its clock as it was made, through [`CURRENT`]: hyper polls and drops it only
/// inside the connection's poll (after the head is parsed, or when it gives up). A drop
/// elsewhere is the connection's own drop, which takes the clock with it.
struct HeadSleep;

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let due = with_current(|clock| clock.phase() == IDLE && clock.expired());
        if due == Some(true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        with_current(Clock::disarm);
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
    /// A connection future whose [`Clock`] deadlines are woken by one tokio sleep.
    pub(crate) struct Watched<F> {
        #[pin]
        conn: F,
        clock: Option<Arc<Clock>>,
        #[pin]
        timer: tokio::time::Sleep,
        // The deadline `timer` is set for, while it is.
        set_for: Option<Instant>,
    }
}

impl<F> std::fmt::Debug for Watched<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("set_for", &self.set_for)
            .finish_non_exhaustive()
    }
}

impl<F> Watched<F> {
    /// Wraps a connection future (hyper's, from a builder given [`HeadTimer`]) served
    /// over a [`HeadIo`] with the same clock. Needs the Tokio runtime (it holds a tokio
    /// sleep).
    pub(crate) fn new(conn: F, clock: Arc<Clock>) -> Self {
        Self {
            conn,
            clock: Some(clock),
            timer: tokio::time::sleep(Duration::ZERO),
            set_for: None,
        }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        loop {
            let polled = {
                let _current = Current::set(this.clock);
                this.conn.as_mut().poll(cx)
            };
            if polled.is_ready() {
                return polled;
            }
            let Some(clock) = this.clock.as_ref() else {
                return Poll::Pending;
            };
            // Nothing to time; or the connection was told and acts on it when next read.
            let Some(at) = clock.pending_deadline() else {
                return Poll::Pending;
            };
            if this.set_for.is_none_or(|set| set > at) {
                this.timer.as_mut().reset(at.into());
                *this.set_for = Some(at);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.set_for = None;
            if at <= now() {
                clock.expire();
            }
            // Poll the connection again: it sees the expiry, or the timer is re-armed
            // for the deadline that moved on.
        }
    }
}

/// While it lives, the connection's clock is [`CURRENT`]; its drop (a panic in the
/// connection's poll included) puts both back.
struct Current<'a> {
    slot: &'a mut Option<Arc<Clock>>,
    previous: Option<Arc<Clock>>,
}

impl<'a> Current<'a> {
    fn set(slot: &'a mut Option<Arc<Clock>>) -> Self {
        let previous = CURRENT.replace(slot.take());
        Self { slot, previous }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        *self.slot = CURRENT.replace(self.previous.take());
    }
}

pin_project_lite::pin_project! {
    /// A client connection's IO, seen through its [`Clock`]: notes the first byte of each
    /// head, and once a deadline has passed, reads as closed (after writing a `408` when
    /// a head was half read). What [`HeadIo::poll_read_ahead`] read is handed out first.
    pub(crate) struct HeadIo<T> {
        #[pin]
        inner: T,
        clock: Arc<Clock>,
        // Read from the socket, not yet handed out; no allocation once empty.
        ahead: BytesMut,
        // The `408` still to write, and how much of it went out.
        refusal: Option<(Vec<u8>, usize)>,
        closed: bool,
    }
}

impl<T> std::fmt::Debug for HeadIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadIo")
            .field("clock", &self.clock)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<T> HeadIo<T> {
    pub(crate) fn new(inner: T, clock: Arc<Clock>) -> Self {
        Self {
            inner,
            clock,
            ahead: BytesMut::new(),
            refusal: None,
            closed: false,
        }
    }

    /// The socket, and what was read ahead of hyper and not handed to it: for a tunnel,
    /// which needs none of the head's timing once the connection is upgraded.
    pub(crate) fn into_parts(self) -> (T, BytesMut) {
        (self.inner, self.ahead)
    }
}

impl<T: AsyncRead + AsyncWrite> HeadIo<T> {
    /// What was read ahead and not handed out yet.
    pub(crate) fn ahead(&self) -> &[u8] {
        &self.ahead
    }

    /// Reads once more from the socket into what [`HeadIo::ahead`] holds, at least
    /// [`READ_AHEAD`] bytes' worth: `false` at the end of the stream, or once a deadline
    /// has passed. For looking at a connection's first bytes before hyper reads them.
    pub(crate) fn poll_read_ahead(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        let state = self.clock.state();
        if self.closed || state & EXPIRED != 0 {
            return Poll::Ready(Ok(false));
        }
        let this = self.project();
        this.ahead.reserve(READ_AHEAD);
        if ready!(tokio_util::io::poll_read_buf(this.inner, cx, this.ahead))? == 0 {
            return Poll::Ready(Ok(false));
        }
        if matches!(state & PHASE, FRESH | IDLE) {
            this.clock.received();
        }
        Poll::Ready(Ok(true))
    }

    /// Writes the `408` (what fits at once: a client that does not read gets the close
    /// alone), then reads as closed from now on.
    fn poll_refuse(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let (bytes, written) = this.refusal.get_or_insert_with(|| (request_timeout(), 0));
        while *written < bytes.len() {
            match this.inner.as_mut().poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(n)) if n > 0 => *written += n,
                _ => break,
            }
        }
        if *written == bytes.len() {
            let _ = this.inner.as_mut().poll_flush(cx);
        }
        *this.refusal = None;
        *this.closed = true;
        Poll::Ready(Ok(()))
    }
}

/// `408 Request Timeout`, closing the connection (RFC 9110 §15.5.9).
fn request_timeout() -> Vec<u8> {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n\
         connection: close\r\ncontent-length: 15\r\ndate: {date}\r\n\r\nRequest Timeout"
    )
    .into_bytes()
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for HeadIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        let state = self.clock.state();
        // A body or a tunnel: nothing to note.
        if state == BUSY {
            let this = self.project();
            return read(this.inner, this.ahead, cx, buf);
        }
        let phase = state & PHASE;
        if state & EXPIRED != 0 {
            match phase {
                // Idle from the start: closed without an answer.
                FRESH => {
                    *self.project().closed = true;
                    return Poll::Ready(Ok(()));
                }
                HEAD => return self.poll_refuse(cx),
                _ => {}
            }
        }
        let this = self.project();
        let before = buf.filled().len();
        ready!(read(this.inner, this.ahead, cx, buf))?;
        if buf.filled().len() > before && matches!(phase, FRESH | IDLE) {
            this.clock.received();
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads what `ahead` holds first, then from `inner`.
fn read<T: AsyncRead>(
    inner: Pin<&mut T>,
    ahead: &mut BytesMut,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if ahead.is_empty() {
        return inner.poll_read(cx, buf);
    }
    let n = ahead.len().min(buf.remaining());
    buf.put_slice(&ahead[..n]);
    ahead.advance(n);
    if ahead.is_empty() {
        // Its memory goes back now, not when the connection ends.
        *ahead = BytesMut::new();
    }
    Poll::Ready(Ok(()))
}

impl<T: AsyncWrite> AsyncWrite for HeadIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
