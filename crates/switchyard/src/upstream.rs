//! The upstream side: where a prepared request is sent and its response head
//! comes from.
//!
//! * [`h1`]: an HTTP/1 connection pool of our own, the main path;
//! * pooled hyper-util clients for targets that may speak HTTP/2 (one per
//!   target, kept in a [`recent`] map, so that `:authority` can carry the
//!   forwarded `Host` while the connection goes to the target);
//! * [`connect`]: the one connector under both, for TCP, unix sockets and TLS
//!   ([`tls`]: rustls);
//! * [`classify`]: what a failure means, as a [`ProxyError`] kind.
//!
//! This module knows nothing of the proxy above it: it takes a request whose
//! URI names the target and answers a response head or an error.

mod classify;
mod connect;
mod h1;
mod recent;
mod tls;

use std::future::Future;
use std::pin::Pin;
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
}

/// A response head over `max_response_header_size`.
#[derive(Debug, thiserror::Error)]
#[error("response head of about {size} bytes exceeds the limit of {limit} bytes")]
pub(crate) struct HeadTooLarge {
    size: usize,
    limit: usize,
}

/// Why an upstream exchange failed: from the HTTP/1 pool or a hyper-util client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error(transparent)]
    H1(#[from] h1::H1Error),
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
}

/// The response head from [`Upstream::request`].
pub(crate) enum ResponseFuture {
    H1(Pin<Box<dyn Future<Output = Result<Response<Incoming>, h1::H1Error>> + Send>>),
    Client(hyper_util::client::legacy::ResponseFuture),
}

// === impl Upstream ===

impl Upstream {
    pub(crate) fn new(opts: &ClientOptions) -> Result<Self, ConfigError> {
        let base = tls::config(opts)?;
        // Only a limit other than hyper's own is set: setting one costs an
        // allocation per response.
        let max_headers =
            Some(opts.max_response_headers.max(1)).filter(|n| *n != HYPER_MAX_HEADERS);
        let connectors = [&[&b"http/1.1"[..]][..], &[b"h2", b"http/1.1"], &[b"h2"]].map(|alpn| {
            let mut tls = base.clone();
            tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Connector::new(Arc::new(tls), opts, None)
        });
        let http1 = {
            let mut b = hyper::client::conn::http1::Builder::new();
            b.preserve_header_case(opts.preserve_header_key_case)
                .max_buf_size(opts.max_response_header_size.max(8 * 1024));
            if let Some(n) = max_headers {
                b.max_headers(n);
            }
            h1::Pool::new(
                connectors[0].clone(),
                b,
                opts.pool_idle_timeout,
                opts.pool_max_idle_per_host,
            )
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
                .http1_max_buf_size(opts.max_response_header_size.max(8 * 1024))
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
            max_response_head: opts.max_response_header_size.max(8 * 1024),
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
            return ResponseFuture::Client(shared.request(req));
        };
        let client = self
            .per_target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[usize::from(h2_only)]
        .get_or_insert(target.as_str(), || {
            (self.make)(h2_only, Some(req.uri().clone()))
        });
        *req.uri_mut() = uri;
        ResponseFuture::Client(client.request(req))
    }

    /// Refuses a response head over the limit. hyper's `max_buf_size` only
    /// fails a head still incomplete when the buffer is full; one read can
    /// overshoot it, and a head that arrives whole is parsed whatever its size.
    /// Dropping the response drops its connection (its body is unread).
    ///
    /// Also refuses an HTTP/1 answer framed both ways: with `Transfer-Encoding`
    /// and `Content-Length`, the body is read chunked but the length would be
    /// forwarded with it, and the two disagree (RFC 9112 §6.3 asks an
    /// intermediary to drop the length or treat the answer as an error; Node's
    /// parser, under CHP, refuses it).
    pub(crate) fn check_head<B>(&self, res: &http::Response<B>) -> Result<(), ProxyError> {
        // `HTTP/1.1 200 <reason>\r\n`, then `name: value\r\n` per field, then `\r\n`.
        let mut size = 32;
        let (mut chunked, mut length) = (false, false);
        for (k, v) in res.headers() {
            size += k.as_str().len() + v.len() + 4;
            chunked |= k == header::TRANSFER_ENCODING;
            length |= k == header::CONTENT_LENGTH;
        }
        if chunked && length {
            return Err(ProxyError::UpstreamMalformed(
                "response has both Transfer-Encoding and Content-Length".into(),
            ));
        }
        if size > self.max_response_head {
            return Err(ProxyError::UpstreamHeadTooLarge(Box::new(HeadTooLarge {
                size,
                limit: self.max_response_head,
            })));
        }
        Ok(())
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
            Self::H1(f) => f.as_mut().poll(cx).map_err(SendError::H1),
            Self::Client(f) => Pin::new(f).poll(cx).map_err(SendError::Client),
        }
    }
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
