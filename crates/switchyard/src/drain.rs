//! Stopping a listener's connections: first gracefully (each finishes the
//! request in flight, keep-alive ends), then, past a deadline, at once.
//!
//! hyper-util's `GracefulShutdown` and a `CancellationToken` do the same, but
//! a connection wrapped in them polls a watch channel and a token each time it
//! is polled, both taking a lock to re-register its waker: about 640
//! instructions per proxied request, 2 % of the whole. Here a connection reads
//! one atomic per poll, and registers its waker again only when it changed
//! (a task's waker never does).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// hyper's error bound (`crate::error`'s alias is a layer above this module).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

/// The stop signal of a listener's connections. Clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    phase: AtomicU8,
    conns: Mutex<Conns>,
    /// Signalled when the last watched connection ends.
    gone: Notify,
}

#[derive(Debug, Default)]
struct Conns {
    next_id: u64,
    /// Every watched connection still alive, with the waker of its last poll.
    wakers: HashMap<u64, Option<Waker>, foldhash::fast::RandomState>,
}

impl Drain {
    /// A drain with nothing watched yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wraps a connection: served as it is until [`Drain::shutdown`], then
    /// told once to shut down gracefully; ended (dropped, closing its socket)
    /// at [`Drain::close`].
    #[cfg(test)]
    pub(crate) fn watch<C: Graceful>(&self, conn: C) -> Drained<C> {
        self.register().watch(conn)
    }

    /// Counts a connection from now on, before it can be watched (while its
    /// TLS handshake runs, say): [`Drain::shutdown`] waits for it too. Take
    /// it where the connection is accepted, not in the task that serves it.
    pub(crate) fn register(&self) -> Registration {
        let id = {
            let mut conns = self.shared.lock();
            let id = conns.next_id;
            conns.next_id += 1;
            conns.wakers.insert(id, None);
            id
        };
        Registration {
            shared: self.shared.clone(),
            id,
            waker: None,
        }
    }

    /// Tells every watched connection to finish (the first step of
    /// [`Drain::shutdown`], to take before anything else a client could see).
    pub(crate) fn start(&self) {
        self.shared.enter(DRAINING);
    }

    /// Tells every watched connection to finish, and waits until all have
    /// ended. Bound it with a timeout, then [`Drain::close`].
    pub(crate) async fn shutdown(&self) {
        self.shared.enter(DRAINING);
        loop {
            let gone = self.shared.gone.notified();
            tokio::pin!(gone);
            // Registered before the count is read: an end in between still wakes us.
            gone.as_mut().enable();
            if self.shared.lock().wakers.is_empty() {
                return;
            }
            gone.await;
        }
    }

    /// Ends every connection still registered: each is dropped at its next
    /// poll (a handshake in [`Registration::unless_closed`] too), which this
    /// causes.
    pub(crate) fn close(&self) {
        self.shared.enter(CLOSED);
    }

    /// How many connections are registered (watched, or in their TLS handshake).
    pub(crate) fn connections(&self) -> usize {
        self.shared.lock().wakers.len()
    }

    /// Still serving: no shutdown has started.
    pub(crate) fn serving(&self) -> bool {
        self.shared.phase.load(Ordering::Relaxed) == SERVING
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `phase` (never back) and wakes every connection to see it.
    fn enter(&self, phase: u8) {
        self.phase.fetch_max(phase, Ordering::SeqCst);
        // Under the lock: a connection registering now sees the phase after it.
        let conns = self.lock();
        for waker in conns.wakers.values().flatten() {
            waker.wake_by_ref();
        }
    }
}

/// A connection counted by a [`Drain`] (see [`Drain::register`]); dropping it
/// ends the count.
#[derive(Debug)]
pub(crate) struct Registration {
    shared: Arc<Shared>,
    id: u64,
    /// The waker registered last, to compare without the lock.
    waker: Option<Waker>,
}

impl Registration {
    /// Serves `conn` under the drain (as [`Drain::watch`]).
    pub(crate) fn watch<C: Graceful>(self, conn: C) -> Drained<C> {
        Drained {
            conn,
            told: false,
            registration: self,
        }
    }

    /// Runs `work` (a TLS handshake, say) unless the drain closes first:
    /// `None` then, and `work` is dropped.
    pub(crate) async fn unless_closed<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if self.phase(cx) == CLOSED {
                return Poll::Ready(None);
            }
            work.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// Whether the drain has begun ([`Drain::shutdown`] or [`Drain::close`] called), with
    /// the task's waker registered for the change. One atomic read while nothing changes.
    pub(crate) fn poll_stopping(&mut self, cx: &Context<'_>) -> bool {
        self.phase(cx) != SERVING
    }

    /// The drain's phase, with the task's waker registered for its changes.
    fn phase(&mut self, cx: &Context<'_>) -> u8 {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            self.shared
                .lock()
                .wakers
                .insert(self.id, Some(waker.clone()));
            self.waker = Some(waker);
        }
        // Read after registering: `enter` stores the phase, then wakes under the lock.
        self.shared.phase.load(Ordering::SeqCst)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let empty = {
            let mut conns = self.shared.lock();
            conns.wakers.remove(&self.id);
            conns.wakers.is_empty()
        };
        // `shutdown` waits only once the phase has moved; while serving, the
        // table empties often and nobody waits.
        if empty && self.shared.phase.load(Ordering::SeqCst) != SERVING {
            self.shared.gone.notify_waiters();
        }
    }
}

/// A connection that can be asked to finish what it is doing and close: hyper's. (The
/// like trait of hyper-util, `GracefulConnection`, is sealed and leaves out hyper's
/// HTTP/1 connection with upgrades.)
pub(crate) trait Graceful: Future<Output = Result<(), Self::Error>> {
    type Error;

    /// Starts the graceful shutdown: no new request is taken, the one in flight ends.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    type Error = hyper::Error;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        Self::graceful_shutdown(self);
    }
}

impl<I, S, B, E> Graceful for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Error = BoxError;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

pin_project_lite::pin_project! {
    /// A connection watched by a [`Drain`] (see [`Drain::watch`]).
    #[derive(Debug)]
    pub(crate) struct Drained<C> {
        #[pin]
        conn: C,
        told: bool,
        registration: Registration,
    }
}

impl<C: Graceful> Future for Drained<C> {
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.registration.phase(cx) {
            SERVING => {}
            DRAINING => {
                if !*this.told {
                    *this.told = true;
                    this.conn.as_mut().graceful_shutdown();
                }
            }
            _ => return Poll::Ready(Ok(())),
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;

    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A real HTTP/1 connection on loopback, served through the drain; the
    /// handler answers once `release` is notified. Returns the client side and
    /// the serving task.
    async fn served(
        drain: &Drain,
        release: Arc<Notify>,
        started: Arc<AtomicUsize>,
    ) -> (TcpStream, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(move |_req| {
            let release = release.clone();
            started.fetch_add(1, Ordering::SeqCst);
            async move {
                release.notified().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
            }
        });
        let conn = drain.watch(
            http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades(),
        );
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (client, task)
    }

    /// Sends a request and returns once the handler has it.
    async fn request_in_flight(client: &mut TcpStream, started: &AtomicUsize) {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    }

    /// A safety net: what should end at once fails the test instead of hanging it.
    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(30), f)
            .await
            .expect("the drain did not end")
    }

    /// Everything the server sends until it closes the connection.
    async fn read_all(client: &mut TcpStream) -> String {
        let mut out = Vec::new();
        within(client.read_to_end(&mut out)).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_then_closes() {
        let drain = Drain::new();
        let release = Arc::new(Notify::new());
        let started = Arc::new(AtomicUsize::new(0));
        let (mut client, task) = served(&drain, release.clone(), started.clone()).await;
        request_in_flight(&mut client, &started).await;
        let shutdown = tokio::spawn({
            let drain = drain.clone();
            async move { drain.shutdown().await }
        });
        // Still waiting on the request in flight.
        tokio::task::yield_now().await;
        assert!(!shutdown.is_finished());
        assert_eq!(drain.connections(), 1);
        release.notify_one();
        let answer = read_all(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        // The keep-alive connection was closed after its answer, and the drain is over.
        within(shutdown).await.unwrap();
        task.await.unwrap();
        assert_eq!(drain.connections(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn close_ends_a_connection_still_busy() {
        let drain = Drain::new();
        let release = Arc::new(Notify::new());
        let started = Arc::new(AtomicUsize::new(0));
        let (mut client, task) = served(&drain, release, started.clone()).await;
        request_in_flight(&mut client, &started).await;
        let timed_out =
            tokio::time::timeout(std::time::Duration::from_millis(50), drain.shutdown())
                .await
                .is_err();
        assert!(timed_out, "the request never finishes");
        drain.close();
        within(task).await.unwrap();
        assert_eq!(drain.connections(), 0);
        // Closed without an answer.
        assert_eq!(read_all(&mut client).await, "");
    }

    /// A connection registered but not served yet (in its TLS handshake) is waited
    /// for, and cut at close.
    #[tokio::test(start_paused = true)]
    async fn a_registered_handshake_is_waited_for_and_cut_at_close() {
        let drain = Drain::new();
        let mut registration = drain.register();
        let handshake = tokio::spawn(async move {
            registration
                .unless_closed(std::future::pending::<()>())
                .await
        });
        let timed_out =
            tokio::time::timeout(std::time::Duration::from_millis(50), drain.shutdown())
                .await
                .is_err();
        assert!(timed_out, "the shutdown did not wait for the handshake");
        assert_eq!(drain.connections(), 1);
        drain.close();
        assert_eq!(within(handshake).await.unwrap(), None);
        assert_eq!(drain.connections(), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_ends_at_shutdown_and_nothing_watched_ends_at_once() {
        let drain = Drain::new();
        drain.shutdown().await;
        let drain = Drain::new();
        let (mut client, task) = served(
            &drain,
            Arc::new(Notify::new()),
            Arc::new(AtomicUsize::new(0)),
        )
        .await;
        // Let the connection be polled (and register its waker) before the drain starts.
        tokio::task::yield_now().await;
        within(drain.shutdown()).await;
        task.await.unwrap();
        assert_eq!(read_all(&mut client).await, "");
    }
}
