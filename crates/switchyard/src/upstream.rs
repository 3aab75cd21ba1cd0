//! The upstream side: where a prepared request is sent and its response head
//! comes from.
//!
//! * [`h1`]: an HTTP/1 connection pool of our own, the main path;
//! * pooled hyper-util clients for targets that may speak HTTP/2 (one per
//!   target, kept in a [`recent`] map, so that `:authority` can carry the
//!   forwarded `Host` while the connection goes to the target);
//! * [`connect`]: the one connector under both, for TCP, unix sockets and TLS
//!   ([`tls`]: rustls);
//! * [`head`]: the checks every response head passes;
//! * [`classify`]: what a failure means, as a [`ProxyError`] kind.
//!
//! This module knows nothing of the proxy above it: it takes a request whose
//! URI names the target and answers a response head or an error.

mod classify;
pub(crate) mod connect;
mod h1;
mod head;
mod recent;
mod record;
pub(crate) mod tls;

pub(crate) use h1::{IdleCount, set_shard};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub(crate) use classify::classify;
use connect::Connector;
use recent::Recent;

use crate::body::Body;
use crate::error::{ConfigError, ProxyError};
use crate::options::ClientOptions;
use crate::target::{Protocol, Target};

type HttpClient = Client<Connector, Body>;

/// Builds a pooled client for `Auto` (false) or `Http2` (true); with a
/// destination, its connector connects there whatever the request URI names.
type MakeClient = dyn Fn(bool, Option<Uri>) -> HttpClient + Send + Sync;

/// How many per-target clients are kept (per protocol); past that, the one used
/// longest ago is dropped for each new one.
const TARGET_CLIENTS: usize = 1024;

/// hyper's own limit on response header fields, kept on the stack; setting any
/// value, even this one, makes it allocate a table per response.
const HYPER_MAX_HEADERS: usize = 100;

/// How much of a discarded response body is read so that its connection
/// can be reused; a longer one is dropped with its connection.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// The HTTP/1 pool, the two pooled clients for the other [`Protocol`]s, and the
/// per-target clients.
#[derive(Clone)]
pub(crate) struct Upstream {
    http1: h1::Pool,
    auto: HttpClient,
    http2: HttpClient,
    make: Arc<MakeClient>,
    /// HTTP/2-capable targets: a client each, by target URL, for `Auto` and `Http2`.
    per_target: Arc<Mutex<[Recent<HttpClient>; 2]>>,
    /// `ClientOptions::max_response_header_size`, checked on each parsed head too:
    /// hyper's buffer limit only stops heads that arrive in pieces.
    max_response_head: usize,
    counters: Arc<Counters>,
    tls: tls::UpstreamTls,
}

/// What the upstream side counts, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests sent again on a new connection because the pooled one they
    /// were given closed before answering them.
    pub(crate) retries: AtomicU64,
}

/// Why an upstream exchange failed: from the HTTP/1 pool or a hyper-util client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error(transparent)]
    H1(#[from] h1::H1Error),
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
    /// The response head failed its checks.
    #[error(transparent)]
    Head(Box<ProxyError>),
}

/// The response head from [`Upstream::request`], checked ([`head::check`]).
pub(crate) enum ResponseFuture {
    /// The pool's exchange (its error already a `SendError`, so that its
    /// answer passes through as it is).
    H1(Pin<Box<dyn Future<Output = Result<Response<Incoming>, SendError>> + Send>>),
    /// A hyper-util client's exchange, and the response head limit.
    Client(hyper_util::client::legacy::ResponseFuture, usize),
}

// === impl Upstream ===

impl Upstream {
    pub(crate) fn new(opts: &ClientOptions) -> Result<Self, ConfigError> {
        let tls = tls::UpstreamTls::new(opts)?;
        // Only a limit other than hyper's own is set: setting one costs an
        // allocation per response.
        let max_headers =
            Some(opts.max_response_headers.max(1)).filter(|n| *n != HYPER_MAX_HEADERS);
        let counters = Arc::new(Counters::default());
        let max_response_head = head::limit(opts);
        let connectors = [0, 1, 2].map(|offer| Connector::new(tls.clone(), offer, opts, None));
        let http1 = {
            let mut b = hyper::client::conn::http1::Builder::new();
            b.preserve_header_case(opts.preserve_header_key_case)
                .max_buf_size(max_response_head);
            if let Some(n) = max_headers {
                b.max_headers(n);
            }
            h1::Pool::new(connectors[0].clone(), b, opts, counters.clone())
        };
        let opts = opts.clone();
        let make = move |h2_only: bool, destination: Option<Uri>| {
            let connector = connectors[1 + usize::from(h2_only)].to(destination);
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(opts.pool_idle_timeout)
                .pool_max_idle_per_host(opts.pool_max_idle_per_host)
                .http1_preserve_header_case(opts.preserve_header_key_case)
                .http1_max_buf_size(max_response_head)
                .http2_only(h2_only);
            if let Some(n) = max_headers {
                b.http1_max_headers(n);
            }
            if let Some(interval) = opts.http2_keep_alive_interval {
                b.http2_keep_alive_interval(interval)
                    .http2_keep_alive_while_idle(true);
            }
            b.build(connector)
        };
        Ok(Self {
            http1,
            auto: make(false, None),
            http2: make(true, None),
            make: Arc::new(make),
            per_target: Arc::new(Mutex::new([
                Recent::new(TARGET_CLIENTS),
                Recent::new(TARGET_CLIENTS),
            ])),
            max_response_head,
            counters,
            tls,
        })
    }

    /// Sends `req`, whose URI is `target`'s, to `target`.
    ///
    /// Over HTTP/1 the request line carries the path and `Host` the authority, so
    /// the shared client of the protocol serves. Over HTTP/2 `:authority` is taken
    /// from the URI, and it must agree with `Host` (RFC 9113 §8.3.1): a target that
    /// may speak HTTP/2 gets a client of its own whose connector always dials the
    /// target, and the URI is given the forwarded `Host` as its authority.
    pub(crate) fn request(&self, target: &Target, mut req: Request<Body>) -> ResponseFuture {
        let protocol = target.protocol();
        if protocol == Protocol::Http1 {
            return ResponseFuture::H1(Box::pin(self.http1.clone().send(req)));
        }
        let h2_only = protocol == Protocol::Http2;
        let Some(uri) = authority_from_host(&req, target) else {
            let shared = if h2_only { &self.http2 } else { &self.auto };
            return ResponseFuture::Client(shared.request(req), self.max_response_head);
        };
        let client = self
            .per_target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[usize::from(h2_only)]
        .get_or_insert(target.as_str(), || {
            (self.make)(h2_only, Some(req.uri().clone()))
        });
        *req.uri_mut() = uri;
        ResponseFuture::Client(client.request(req), self.max_response_head)
    }

    /// The handle on the TLS configuration of new connections.
    pub(crate) fn tls(&self) -> &tls::UpstreamTls {
        &self.tls
    }

    /// The upstream side's counters.
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The HTTP/1 pool's idle connections, counted at each read.
    pub(crate) fn idle_count(&self) -> IdleCount {
        self.http1.idle_count()
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("http1", &self.http1)
            .field("auto", &self.auto)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

/// The URI to give a per-target client: the request's path, the target's scheme
/// (`http` or `https`, a unix socket included) and the outgoing `Host` as the
/// authority. `None` when there is no usable `Host` or it names the target anyway.
fn authority_from_host(req: &Request<Body>, target: &Target) -> Option<Uri> {
    let host = req.headers().get(header::HOST)?;
    let authority = Authority::try_from(host.as_bytes()).ok()?;
    let scheme = if target.is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let uri = req.uri();
    if uri.authority() == Some(&authority) && uri.scheme() == Some(&scheme) {
        return None;
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    Uri::from_parts(parts).ok()
}

// === impl ResponseFuture ===

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::H1(f) => f.as_mut().poll(cx),
            Self::Client(f, limit) => poll_checked(f, *limit, cx),
        }
    }
}

/// A hyper-util client's exchange, its head checked (the pool checks its own):
/// apart, so that the main path's `poll` stays small enough to be inlined.
#[inline(never)]
fn poll_checked(
    f: &mut hyper_util::client::legacy::ResponseFuture,
    limit: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<Incoming>, SendError>> {
    let res = std::task::ready!(Pin::new(f).poll(cx))?;
    Poll::Ready(match head::check(res.headers(), limit) {
        Ok(_) => Ok(res),
        Err(e) => Err(SendError::Head(Box::new(e))),
    })
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

/// Reads a discarded response body to its end (up to [`DRAIN_LIMIT`]) so that
/// its connection goes back to the pool; a longer or failing one is dropped.
pub(crate) async fn drain(mut body: Incoming) {
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            read += d.len() as u64;
            if read > DRAIN_LIMIT {
                return;
            }
        }
    }
}
