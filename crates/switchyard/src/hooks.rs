//! Typed hooks in place of http-proxy-3's events.
//!
//! | http-proxy-3 event | hook |
//! | --- | --- |
//! | `start` | [`Hooks::on_start`] |
//! | `proxyReq` | [`Hooks::on_proxy_request`] |
//! | `proxyReqWs` | [`Hooks::on_proxy_request_ws`] |
//! | `proxyRes` | [`Hooks::on_proxy_response`] |
//! | `open` | [`Hooks::on_open`] |
//! | `end`, `close`, `econnreset`, `error` | [`Hooks::on_end`], with the request's [`Outcome`] |
//!
//! Every method has a default that does nothing, so an implementation names
//! only the phases it cares about. Hooks run after the hop-by-hop fields are
//! stripped, so they see (and may add to) exactly what is sent.
//!
//! Hooks observe and edit; they do not answer errors. A failed call's
//! [`ProxyError`] is the `Err` of [`Proxy::try_web`](crate::Proxy::try_web)
//! (see the crate docs, "Handling errors"), and [`Hooks::on_end`] sees it too.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode, request};

use crate::body::Body;
use crate::error::{ErrorSide, ProxyError};
use crate::target::Target;

/// What a hook wants the proxy to do next.
#[derive(Debug)]
pub enum Flow {
    /// Carry on proxying.
    Continue,
    /// Stop, and answer the client with this response instead.
    Respond(Response<Body>),
}

/// What a finished WebSocket (or other upgraded) tunnel carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelStats {
    /// Bytes from the client to the upstream.
    pub client_to_upstream: u64,
    /// Bytes from the upstream to the client.
    pub upstream_to_client: u64,
    /// From the switch of protocols to the close.
    pub duration: Duration,
}

/// How one request ended, handed to [`Hooks::on_end`]: what an access log
/// line or a request metric needs.
///
/// Times count from the call into the engine. For a WebSocket, the response
/// is the `101` and `tunnel` holds the session; `bytes_in` and `bytes_out`
/// are the tunnel's bytes each way.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Outcome<'a> {
    /// The status of the response the engine gave the caller; `None` when it
    /// gave none (the call failed, or the client left before the head).
    pub status: Option<StatusCode>,
    /// What failed, if anything: the [`ProxyError`] of a call that got no
    /// response (see [`Outcome::proxy_error`]), or the error that cut a
    /// response body short (an upstream reset, an idle timeout).
    pub error: Option<&'a (dyn StdError + Send + Sync + 'static)>,
    /// Which side ended the exchange before its end: the client
    /// ([`ErrorSide::Downstream`]: it went away, or stalled), the upstream
    /// ([`ErrorSide::Upstream`]), or neither (`None`).
    pub ended_early: Option<ErrorSide>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes handed to the client.
    pub bytes_out: u64,
    /// Time to the response head; `None` without one.
    pub head_time: Option<Duration>,
    /// Time to the end: the body's last byte, the failure, the client's
    /// departure, or the tunnel's close.
    pub duration: Duration,
    /// Attempts after the first (retries and failovers).
    pub retries: u32,
    /// The tunnel of an upgraded request, once it closed.
    pub tunnel: Option<TunnelStats>,
}

/// The proxy's extension points. See the module docs for the mapping to
/// http-proxy-3's events.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use switchyard::{Flow, Hooks, Outcome, Proxy, Target};
///
/// /// Tags each request, and counts the bytes served.
/// #[derive(Default)]
/// struct Tagged {
///     served: AtomicU64,
/// }
///
/// impl Hooks for Tagged {
///     // Per-request state: here, the path the client asked for.
///     type Ctx = String;
///
///     fn new_ctx(&self) -> String {
///         String::new()
///     }
///
///     fn on_start(&self, path: &mut String, req: &http::request::Parts, _: &Target) -> Flow {
///         path.push_str(req.uri.path());
///         Flow::Continue
///     }
///
///     fn on_proxy_request(&self, _: &mut String, req: &mut http::request::Parts) -> Flow {
///         req.headers.insert("x-via", http::HeaderValue::from_static("switchyard"));
///         Flow::Continue
///     }
///
///     fn on_end(&self, path: String, outcome: &Outcome<'_>) {
///         self.served.fetch_add(outcome.bytes_out, Ordering::Relaxed);
///         if let Some(err) = outcome.proxy_error() {
///             eprintln!("{path}: {err}");
///         }
///     }
/// }
///
/// # fn main() -> Result<(), switchyard::ConfigError> {
/// let proxy = Proxy::builder()
///     .target(Target::parse("http://127.0.0.1:9000")?)
///     .hooks(Tagged::default())
///     .build()?;
/// # drop(proxy);
/// # Ok(())
/// # }
/// ```
pub trait Hooks: Send + Sync + 'static {
    /// Per-request state, created by [`Hooks::new_ctx`] and handed to each phase.
    type Ctx: Send + Sync + 'static;

    /// Creates the state for one request.
    fn new_ctx(&self) -> Self::Ctx;

    /// Before anything is sent upstream (`start`).
    fn on_start(&self, _ctx: &mut Self::Ctx, _req: &request::Parts, _target: &Target) -> Flow {
        Flow::Continue
    }

    /// The outgoing request head, ready to send (`proxyReq`): edit it freely.
    fn on_proxy_request(&self, _ctx: &mut Self::Ctx, _req: &mut request::Parts) -> Flow {
        Flow::Continue
    }

    /// The outgoing head of a WebSocket upgrade (`proxyReqWs`).
    fn on_proxy_request_ws(&self, _ctx: &mut Self::Ctx, _req: &mut request::Parts) -> Flow {
        Flow::Continue
    }

    /// The upstream's response (`proxyRes`), before `Location` and cookie
    /// rewriting: edit the head, replace the body, or answer otherwise.
    fn on_proxy_response(&self, _ctx: &mut Self::Ctx, _res: &mut Response<Body>) -> Flow {
        Flow::Continue
    }

    /// A WebSocket tunnel is open (`open`).
    fn on_open(&self, _ctx: &mut Self::Ctx) {}

    /// Bytes passed through an open tunnel: `n` bytes, from the client when
    /// `from_client`. Called for every read, so keep it cheap.
    fn on_tunnel_data(&self, _ctx: &Self::Ctx, _from_client: bool, _n: usize) {}

    /// Whether [`Hooks::on_end`] should be called. Watching a request to its
    /// end costs a clock read and, for a response with a body, one small
    /// allocation; a proxy whose hooks say `false` pays nothing.
    fn observes_end(&self) -> bool {
        true
    }

    /// The request is over, whatever happened: its response body ended,
    /// failed or was dropped by the client, its tunnel closed, the call
    /// failed, or the client went away before the answer (the upstream
    /// request is then cancelled). Called exactly once per call, from the
    /// task that ends it, so keep it short (hand heavy work to a channel).
    fn on_end(&self, _ctx: Self::Ctx, _outcome: &Outcome<'_>) {}
}

type RequestFn = dyn Fn(&mut request::Parts) + Send + Sync;
type ResponseFn = dyn Fn(&mut Response<Body>) + Send + Sync;
type EndFn = dyn Fn(&Outcome<'_>) + Send + Sync;

/// Hooks made of closures, set with the shortcuts on
/// [`ProxyBuilder`](crate::ProxyBuilder); the default hooks of a proxy.
#[derive(Clone, Default)]
pub struct FnHooks {
    pub(crate) proxy_request: Option<Arc<RequestFn>>,
    pub(crate) proxy_request_ws: Option<Arc<RequestFn>>,
    pub(crate) proxy_response: Option<Arc<ResponseFn>>,
    pub(crate) end: Option<Arc<EndFn>>,
}

// === impl Outcome ===

impl Outcome<'_> {
    /// The error as a [`ProxyError`], when the call failed before a response.
    pub fn proxy_error(&self) -> Option<&ProxyError> {
        self.error.and_then(|e| e.downcast_ref::<ProxyError>())
    }
}

// === impl FnHooks ===

impl fmt::Debug for FnHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHooks")
            .field("proxy_request", &self.proxy_request.is_some())
            .field("proxy_request_ws", &self.proxy_request_ws.is_some())
            .field("proxy_response", &self.proxy_response.is_some())
            .field("end", &self.end.is_some())
            .finish()
    }
}

impl Hooks for FnHooks {
    type Ctx = ();

    fn new_ctx(&self) {}

    fn on_proxy_request(&self, (): &mut (), req: &mut request::Parts) -> Flow {
        if let Some(f) = &self.proxy_request {
            f(req);
        }
        Flow::Continue
    }

    fn on_proxy_request_ws(&self, (): &mut (), req: &mut request::Parts) -> Flow {
        if let Some(f) = &self.proxy_request_ws {
            f(req);
        }
        Flow::Continue
    }

    fn on_proxy_response(&self, (): &mut (), res: &mut Response<Body>) -> Flow {
        if let Some(f) = &self.proxy_response {
            f(res);
        }
        Flow::Continue
    }

    fn observes_end(&self) -> bool {
        self.end.is_some()
    }

    fn on_end(&self, (): (), outcome: &Outcome<'_>) {
        if let Some(f) = &self.end {
            f(outcome);
        }
    }
}
