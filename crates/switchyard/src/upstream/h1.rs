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

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::Either;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use tokio::time::Instant;
use tower_service::Service as _;
use tracing::debug;

use super::connect::{ConnectError, Connector};
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

/// The idle connections of each key, most recently used last.
type IdleMap = HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>;

struct Shared {
    idle: Mutex<IdleMap>,
    connector: Connector,
    builder: Builder,
    idle_timeout: Option<Duration>,
    /// 0 when nothing may be kept (also for a zero `idle_timeout`).
    max_idle: usize,
    /// Whether a task is sweeping expired and closed connections.
    sweeping: AtomicBool,
}

struct Idle {
    tx: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    pub(crate) fn new(
        connector: Connector,
        builder: Builder,
        idle_timeout: Option<Duration>,
        max_idle: usize,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                idle: Mutex::default(),
                connector,
                builder,
                idle_timeout,
                max_idle: if idle_timeout == Some(Duration::ZERO) {
                    0
                } else {
                    max_idle
                },
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req`, whose URI is absolute, to the address the URI names. Takes
    /// the (cheap) pool by value so the future owns it and needs no wrapper.
    /// Not an `async fn`: the future holds the request once, not twice.
    pub(crate) fn send(
        self,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, H1Error>> + Send {
        let Some(key) = key(req.uri()) else {
            return Either::Right(std::future::ready(Err(H1Error::Uri)));
        };
        prepare(&mut req, &key.authority);
        Either::Left(async move {
            loop {
                let (mut tx, reused) = match self.checkout(&key) {
                    Some(tx) => (tx, true),
                    // Boxed: the connector's future is several KiB, and this
                    // one is moved into a box per request; most reuse a connection.
                    None => (Box::pin(self.connect(&key)).await?, false),
                };
                match tx.try_send_request(req).await {
                    Ok(res) => {
                        self.release(key, tx);
                        return Ok(res);
                    }
                    Err(mut err) => match err.take_message() {
                        // The connection closed before the request went out (the
                        // target timed it out while it sat idle): try a fresh one.
                        Some(back) if reused => {
                            debug!(error = %err.error(), "pooled connection closed; retrying on a new one");
                            req = back;
                        }
                        _ => return Err(H1Error::Request(err.into_error())),
                    },
                }
            }
        })
    }

    /// The most recently used connection of `key` that can take a request now.
    fn checkout(&self, key: &Key) -> Option<SendRequest<Body>> {
        let mut idle = self.shared.lock();
        let list = idle.get_mut(key)?;
        let expired = self.shared.expired_before();
        while let Some(entry) = list.pop() {
            if expired.is_some_and(|at| entry.since <= at) {
                // Older entries sit below this one: all expired.
                list.clear();
                break;
            }
            if entry.tx.is_ready() {
                return Some(entry.tx);
            }
        }
        None
    }

    async fn connect(&self, key: &Key) -> Result<SendRequest<Body>, H1Error> {
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
        Ok(tx)
    }

    /// Returns a connection whose response head has arrived: now when it is
    /// ready for the next request, else once it is (its body read), from a
    /// task of its own. An upgraded or failed connection never becomes ready.
    fn release(&self, key: Key, mut tx: SendRequest<Body>) {
        if tx.is_ready() {
            self.put(key, tx);
        } else if !tx.is_closed() {
            let pool = self.clone();
            tokio::spawn(async move {
                if poll_fn(|cx| tx.poll_ready(cx)).await.is_ok() {
                    pool.put(key, tx);
                }
            });
        }
    }

    fn put(&self, key: Key, tx: SendRequest<Body>) {
        if self.shared.max_idle == 0 {
            return;
        }
        {
            let mut idle = self.shared.lock();
            let list = idle.entry(key).or_default();
            if list.len() >= self.shared.max_idle {
                return;
            }
            list.push(Idle {
                tx,
                since: Instant::now(),
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

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = self.shared.lock().values().map(Vec::len).sum();
        f.debug_struct("Pool")
            .field("idle", &idle)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Idle since this instant or earlier means expired; `None` when nothing is.
    fn expired_before(&self) -> Option<Instant> {
        self.idle_timeout
            .and_then(|t| Instant::now().checked_sub(t))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleMap> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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
        let expired = shared.expired_before();
        let mut idle = shared.lock();
        idle.retain(|_, list| {
            list.retain(|e| expired.is_none_or(|at| e.since > at) && !e.tx.is_closed());
            !list.is_empty()
        });
        if idle.is_empty() {
            // Cleared under the lock: a `put` after it sees the flag clear and
            // starts a sweep.
            drop(running);
            return;
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
