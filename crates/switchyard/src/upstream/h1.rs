//! The HTTP/1 connection pool: the proxy's main path.
//!
//! hyper-util's pooled client does more per request than a proxy needs (a
//! connect future built and raced against the pool checkout, its own clones and
//! boxes), and that showed in the profile. This pool keeps, per scheme and
//! authority, a stack of idle connections (hyper's `client::conn::http1`), takes
//! the most recent one that is ready, and dials when there is none. The same
//! rules as hyper-util's hold: a connection goes back to the pool once it can
//! take the next request (at once when the response was read whole with its
//! head, otherwise when its body has been read), a request that a reused
//! connection refused before sending a byte is sent again on a fresh one, idle
//! connections go after `pool_idle_timeout`, and at most
//! `pool_max_idle_per_host` wait per target.
//!
//! Two more rules, for targets that close idle connections (Node after 5 s,
//! gunicorn after 2 s). A connection whose answers say `Keep-Alive: timeout=N`
//! leaves the pool before N runs out. And when a target closes a connection
//! just as a request is written on it, the request went out and no answer will
//! come: a request that went out on a reused connection and got no byte of an
//! answer before the connection closed or reset is sent once more, on a new
//! connection, if sending it twice is safe (an idempotent method, RFC 9110
//! §9.2.2, and a body held in memory, or none). Each retry is counted
//! ([`Counters`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::Either;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower_service::Service as _;
use tracing::debug;

use super::connect::{ConnectError, Connector};
use super::record::Wire;
use super::{Counters, SendError, head};
use crate::body::Body;

/// Why an HTTP/1 exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error(transparent)]
    Connect(ConnectError),
    #[error("HTTP/1 handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("upstream request failed")]
    Request(#[source] hyper::Error),
    #[error("request URI has no scheme or authority")]
    Uri,
}

/// Where a pooled connection goes: the URI's scheme and authority, compared and
/// hashed as the bytes the target wrote (one hash write each; `Authority`'s own
/// `Hash` lowercases byte by byte, and this runs twice per request). The map
/// hashes with foldhash, not SipHash: its keys are targets (configured, or a
/// target's redirect when `follow_redirects` is on), never what a client sends.
#[derive(Clone)]
struct Key {
    scheme: Scheme,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.scheme.as_str() == other.scheme.as_str()
            && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scheme.as_str().hash(state);
        self.authority.as_str().hash(state);
    }
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

/// A handle on a pool's idle connections that does not keep the pool alive.
#[derive(Clone)]
pub(crate) struct IdleCount(Weak<Shared>);

/// The idle connections of each key, most recently used last.
type IdleMap = HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>;

/// Shards of the idle connections: one per serving thread (modulo), see [`set_shard`].
const SHARDS: usize = 16;

thread_local! {
    /// The shard this thread takes idle connections from and gives them back to.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread take and give back the idle connections of shard `index` (modulo
/// [`SHARDS`]). A connection is driven by a task on the runtime of the thread that
/// dialed it; used from another thread, every exchange would wake that thread and wait
/// on it. The server's serving threads, each with a runtime of its own, call this with
/// their number; every other thread shares shard 0, as a work-stealing runtime's workers
/// do (their tasks move between threads anyway).
pub(crate) fn set_shard(index: usize) {
    SHARD.with(|s| s.set(index % SHARDS));
}

struct Shared {
    idle: [Mutex<IdleMap>; SHARDS],
    connector: Connector,
    builder: Builder,
    idle_timeout: Option<Duration>,
    /// 0 when nothing may be kept (also for a zero `idle_timeout`).
    max_idle: usize,
    /// `ClientOptions::max_response_header_size`, for the head checks.
    max_head: usize,
    /// Whether a task is sweeping expired and closed connections.
    sweeping: AtomicBool,
    counters: Arc<Counters>,
}

/// A connection: its sender, and the pool's handle on what its stream
/// records of the request in flight.
struct Conn {
    tx: SendRequest<Body>,
    wire: Arc<Wire>,
}

struct Idle {
    conn: Conn,
    since: Instant,
    /// When the target's `Keep-Alive: timeout` has all but run out.
    keep_until: Option<Instant>,
}

impl Pool {
    pub(crate) fn new(
        connector: Connector,
        builder: Builder,
        opts: &crate::options::ClientOptions,
        counters: Arc<Counters>,
    ) -> Self {
        let idle_timeout = opts.pool_idle_timeout;
        Self {
            shared: Arc::new(Shared {
                idle: std::array::from_fn(|_| Mutex::default()),
                connector,
                builder,
                idle_timeout,
                max_idle: if idle_timeout == Some(Duration::ZERO) {
                    0
                } else {
                    opts.pool_max_idle_per_host
                },
                max_head: head::limit(opts),
                sweeping: AtomicBool::new(false),
                counters,
            }),
        }
    }

    /// Sends `req`, whose URI is absolute, to the address the URI names. Takes
    /// the (cheap) pool by value so the future owns it and needs no wrapper.
    /// Not an `async fn`: the future holds the request once, not twice.
    pub(crate) fn send(
        self,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + Send {
        let Some(key) = key(req.uri()) else {
            return Either::Right(std::future::ready(Err(H1Error::Uri.into())));
        };
        prepare(&mut req, &key.authority);
        Either::Left(async move {
            // After a race, a new connection, whatever the pool holds.
            let mut fresh = false;
            loop {
                let pooled = if fresh { None } else { self.checkout(&key) };
                let (mut conn, reused) = match pooled {
                    Some(conn) => (conn, true),
                    // Boxed: the connector's future is several KiB, and this
                    // one is moved into a box per request; most reuse a connection.
                    None => (Box::pin(self.connect(&key)).await?, false),
                };
                // On a reused connection, a request safe to send twice has
                // its bytes kept as they go out, and its body copied (cheap:
                // none, or held in memory), in case the target closes the
                // connection under it.
                let body = reused.then(|| resendable(&req)).flatten();
                if reused {
                    conn.wire.keep_next(body.is_some());
                }
                let err = match conn.tx.try_send_request(req).await {
                    Ok(res) => {
                        return match head::check(res.headers(), self.shared.max_head) {
                            Ok(keep_alive) => {
                                self.release(key, conn, keep_alive);
                                Ok(res)
                            }
                            // Dropped with its unread body: the connection goes too.
                            Err(e) => Err(SendError::Head(Box::new(e))),
                        };
                    }
                    Err(err) => err,
                };
                // Boxed: a rare path, and this future is boxed per request
                // (the error, with the request it may hold, goes in the box).
                (req, fresh) = Box::pin(self.recover(err, reused, body, &conn.wire)).await?;
            }
        })
    }

    /// After a failed exchange: the request to send again, and whether on a
    /// new connection, or the error to answer.
    async fn recover(
        &self,
        mut err: TrySendError<Request<Body>>,
        reused: bool,
        body: Option<Body>,
        wire: &Wire,
    ) -> Result<(Request<Body>, bool), H1Error> {
        let back = err.take_message();
        let error = err.into_error();
        match back {
            // The connection closed before the request went out (the target
            // timed it out while it sat idle): any connection will do.
            Some(back) if reused => {
                debug!(%error, "pooled connection closed; retrying on a new one");
                self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                return Ok((back, false));
            }
            Some(_) => return Err(H1Error::Request(error)),
            None => {}
        }
        // It went out, and the connection closed: when no byte of an answer
        // came, the target closed it as the request arrived.
        let Some(body) = body.filter(|_| closed_under(&error)) else {
            return Err(H1Error::Request(error));
        };
        let Some(again) = unanswered(wire, body).await else {
            return Err(H1Error::Request(error));
        };
        debug!(
            %error,
            "pooled connection closed before answering; sending the request again on a new one"
        );
        self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        Ok((again, true))
    }

    /// The most recently used connection of `key` that can take a request now.
    fn checkout(&self, key: &Key) -> Option<Conn> {
        let mut idle = self.shared.lock();
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        let expired = self.shared.expired_before(now);
        while let Some(entry) = list.pop() {
            if expired.is_some_and(|at| entry.since <= at) {
                // Older entries sit below this one: all expired.
                list.clear();
                break;
            }
            if entry.keep_until.is_none_or(|at| now < at) && entry.conn.tx.is_ready() {
                return Some(entry.conn);
            }
        }
        None
    }

    async fn connect(&self, key: &Key) -> Result<Conn, H1Error> {
        let uri = Uri::from_parts({
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(key.scheme.clone());
            parts.authority = Some(key.authority.clone());
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
            parts
        })
        .map_err(|_| H1Error::Uri)?;
        let io = self
            .shared
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(H1Error::Connect)?;
        let mut stream = io.into_inner();
        let wire = stream.record();
        let io = TokioIo::new(stream);
        let (tx, conn) = self
            .shared
            .builder
            .handshake(io)
            .await
            .map_err(H1Error::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn { tx, wire })
    }

    /// Returns a connection whose response head has arrived: now when it is
    /// ready for the next request, else once it is (its body read), from a
    /// task of its own. An upgraded or failed connection never becomes ready.
    /// `keep_alive` is the target's `Keep-Alive: timeout`, if it gave one.
    #[inline]
    fn release(&self, key: Key, mut conn: Conn, keep_alive: Option<Duration>) {
        if keep_alive == Some(Duration::ZERO) {
            return;
        }
        if conn.tx.is_ready() {
            self.put(key, conn, keep_alive);
        } else if !conn.tx.is_closed() {
            let pool = self.clone();
            tokio::spawn(async move {
                if poll_fn(|cx| conn.tx.poll_ready(cx)).await.is_ok() {
                    pool.put(key, conn, keep_alive);
                }
            });
        }
    }

    fn put(&self, key: Key, conn: Conn, keep_alive: Option<Duration>) {
        if self.shared.max_idle == 0 {
            return;
        }
        {
            let mut idle = self.shared.lock();
            let list = idle.entry(key).or_default();
            if list.len() >= self.shared.max_idle {
                return;
            }
            let since = Instant::now();
            list.push(Idle {
                conn,
                since,
                keep_until: keep_alive.map(|t| since + head::usable_for(t)),
            });
        }
        if let Some(period) = self.shared.idle_timeout
            && !self.shared.sweeping.swap(true, Ordering::AcqRel)
        {
            let tick = period.max(Duration::from_millis(100));
            // The guard goes in as an argument: dropped with the task even if
            // it never ran (its runtime shut down first), it clears the flag.
            tokio::spawn(sweep(Sweeping(Arc::downgrade(&self.shared)), tick));
        }
    }
}

impl Pool {
    /// A handle that counts the idle connections, for metrics.
    pub(crate) fn idle_count(&self) -> IdleCount {
        IdleCount(Arc::downgrade(&self.shared))
    }
}

impl IdleCount {
    /// The connections idle in the pool now; 0 once the pool is gone.
    pub(crate) fn get(&self) -> usize {
        self.0.upgrade().map_or(0, |shared| shared.idle_total())
    }
}

impl std::fmt::Debug for IdleCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IdleCount").field(&self.get()).finish()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.shared.idle_total();
        f.debug_struct("Pool")
            .field("idle", &idle)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Idle since this instant or earlier means expired; `None` when nothing is.
    fn expired_before(&self, now: Instant) -> Option<Instant> {
        self.idle_timeout.and_then(|t| now.checked_sub(t))
    }

    /// This thread's shard of the idle connections.
    fn lock(&self) -> MutexGuard<'_, IdleMap> {
        lock(&self.idle[SHARD.with(Cell::get)])
    }

    fn idle_total(&self) -> usize {
        self.idle
            .iter()
            .map(|shard| lock(shard).values().map(Vec::len).sum::<usize>())
            .sum()
    }
}

fn lock(shard: &Mutex<IdleMap>) -> MutexGuard<'_, IdleMap> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {}

/// Closes connections idle for longer than the pool's idle timeout (and those
/// their upstream closed), every `tick`, while any are idle; a later `put`
/// starts it again.
async fn sweep(running: Sweeping, tick: Duration) {
    // Dropped with its runtime (a runtime per test, say), the task would leave
    // `sweeping` set and no later `put` would start another: `running` clears it.
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = running.0.upgrade() else {
            return;
        };
        let now = Instant::now();
        let expired = shared.expired_before(now);
        let mut kept = false;
        for shard in &shared.idle {
            let mut idle = lock(shard);
            idle.retain(|_, list| {
                list.retain(|e| {
                    expired.is_none_or(|at| e.since > at)
                        && e.keep_until.is_none_or(|at| now < at)
                        && !e.conn.tx.is_closed()
                });
                !list.is_empty()
            });
            kept |= !idle.is_empty();
        }
        if !kept {
            // Cleared under every shard's lock (taken in order, as no `put` takes two):
            // a `put` after it sees the flag clear and starts a sweep.
            let all: Vec<_> = shared.idle.iter().map(lock).collect();
            if all.iter().all(|idle| idle.is_empty()) {
                drop(running);
                return;
            }
        }
    }
}

/// Clears the pool's `sweeping` flag when its sweep ends, however it ends.
struct Sweeping(Weak<Shared>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.sweeping.store(false, Ordering::Release);
        }
    }
}

fn key(uri: &Uri) -> Option<Key> {
    Some(Key {
        scheme: uri.scheme()?.clone(),
        authority: uri.authority()?.clone(),
    })
}

/// Gives the request a `Host` when it has none and puts its URI in origin
/// form (`/path?query`), or authority form for `CONNECT`.
fn prepare(req: &mut Request<Body>, authority: &Authority) {
    if !req.headers().contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let mut parts = http::uri::Parts::default();
    if req.method() == Method::CONNECT {
        parts.authority = Some(authority.clone());
    } else {
        parts.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// A copy of the body of `req`, when sending the request twice is safe: an
/// idempotent method (RFC 9110 §9.2.2) and a body held in memory, or none.
fn resendable(req: &Request<Body>) -> Option<Body> {
    if req.method().is_idempotent() {
        req.body().try_clone()
    } else {
        None
    }
}

/// The request again, rebuilt with `body`, if its connection ended with no
/// byte of an answer and its bytes were kept. The stream hands its record over
/// as the connection task ends, which it does on the error just seen; a
/// second is the safety net.
async fn unanswered(wire: &Wire, body: Body) -> Option<Request<Body>> {
    let ended = tokio::time::timeout(Duration::from_secs(1), wire.ended())
        .await
        .ok()?;
    if ended.answered {
        return None;
    }
    rebuild(&ended.request, body)
}

/// A request rebuilt from the bytes that carried it: its head as hyper wrote
/// it (a request line, then `name: value` lines, then an empty line), and
/// `body` for what followed. `None` when the bytes are not such a head (cut
/// short, say).
fn rebuild(bytes: &[u8], body: Body) -> Option<Request<Body>> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut lines = bytes[..end]
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut words = lines.next()?.split(|b| *b == b' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .version(match version {
            b"HTTP/1.0" => http::Version::HTTP_10,
            b"HTTP/1.1" => http::Version::HTTP_11,
            _ => return None,
        });
    for line in lines {
        let colon = line.iter().position(|b| *b == b':')?;
        let value = line[colon + 1..].trim_ascii_start();
        req = req.header(&line[..colon], value);
    }
    req.body(body).ok()
}

/// The connection closed or reset under the request, as opposed to an answer
/// that could not be read or a request body that failed.
fn closed_under(err: &hyper::Error) -> bool {
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return true;
    }
    std::iter::successors(
        std::error::Error::source(err),
        |e: &&(dyn std::error::Error + 'static)| e.source(),
    )
    .filter_map(|e| e.downcast_ref::<io::Error>())
    .any(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exchange's future is boxed for every request: it must stay a small
    /// object for the allocator (mimalloc serves up to 1 KiB from its fast
    /// path; past it, each request paid ~150 instructions more). Nothing large
    /// is to be alive across its waits: the request is in hyper's hands, and
    /// the rare paths are boxed.
    #[tokio::test]
    async fn the_exchange_future_is_a_small_allocation() {
        let upstream = super::super::Upstream::new(&crate::ClientOptions::default()).unwrap();
        let req = Request::get("http://127.0.0.1:1/")
            .body(Body::empty())
            .unwrap();
        let exchange = upstream.http1.send(req);
        let size = std::mem::size_of_val(&exchange);
        assert!(size <= 800, "{size} bytes");
    }

    #[test]
    fn a_request_is_rebuilt_from_its_bytes() {
        let bytes = b"DELETE /a/b?c=d HTTP/1.1\r\nhost: t:8080\r\ncontent-length: 0\r\nx-y: 1\r\nx-y: 2\r\n\r\n";
        let req = rebuild(bytes, Body::empty()).unwrap();
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.headers()["host"], "t:8080");
        assert_eq!(req.headers().get_all("x-y").iter().count(), 2);
        // Cut short: nothing to send again.
        assert!(rebuild(&bytes[..30], Body::empty()).is_none());
        assert!(rebuild(b"", Body::empty()).is_none());
    }
}
