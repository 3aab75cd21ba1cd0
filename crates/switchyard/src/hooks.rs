//! Typed hooks in place of http-proxy-3's events.
//!
//! | http-proxy-3 event | hook |
//! | --- | --- |
//! | `start` | [`Hooks::on_start`] |
//! | `proxyReq` | [`Hooks::on_proxy_request`] |
//! | `proxyReqWs` | [`Hooks::on_proxy_request_ws`] |
//! | `proxyRes` | [`Hooks::on_proxy_response`] |
//! | `end` | [`Hooks::on_end`] |
//! | `error` | [`Hooks::on_error`] |
//! | `econnreset` | [`Hooks::on_client_abort`] |
//! | `open` / `close` | [`Hooks::on_open`] / [`Hooks::on_close`] |
//!
//! Every method has a default that does nothing, so an implementation names
//! only the phases it cares about. Hooks run after the hop-by-hop fields are
//! stripped, so they see (and may add to) exactly what is sent.

use std::fmt;
use std::sync::Arc;

use http::{Method, Response, Uri, request};

use crate::body::{Body, BodyEnd};
use crate::error::ProxyError;
use crate::target::Target;

/// What a hook wants the proxy to do next.
#[derive(Debug)]
pub enum Flow {
    /// Carry on proxying.
    Continue,
    /// Stop, and answer the client with this response instead.
    Respond(Response<Body>),
}

/// Byte counts of a finished WebSocket (or other upgraded) tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Bytes from the client to the upstream.
    pub client_to_upstream: u64,
    /// Bytes from the upstream to the client.
    pub upstream_to_client: u64,
}

/// What is known of a request whose client went away before its response
/// was complete.
#[derive(Debug, Clone)]
pub struct Aborted {
    /// The request's method.
    pub method: Method,
    /// The request's URI, as the client sent it.
    pub uri: Uri,
    /// Where it was being proxied.
    pub target: Target,
}

/// The proxy's extension points. See the module docs for the mapping to
/// http-proxy-3's events.
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

    /// Whether [`Hooks::on_end`] should be called (watching the body's end
    /// costs one small allocation per request).
    fn observes_end(&self) -> bool {
        true
    }

    /// The response body ended, failed, or was dropped by the client (`end`).
    fn on_end(&self, _ctx: Self::Ctx, _end: BodyEnd) {}

    /// Proxying failed (`error`). Return a response to send it instead of
    /// the default error page; `None` keeps the default.
    fn on_error(&self, _ctx: &mut Self::Ctx, _err: &ProxyError) -> Option<Response<Body>> {
        None
    }

    /// Whether [`Hooks::on_client_abort`] should be called.
    fn observes_abort(&self) -> bool {
        true
    }

    /// The client went away before the upstream answered (`econnreset`);
    /// the upstream request has been cancelled.
    fn on_client_abort(&self, _aborted: &Aborted) {}

    /// A WebSocket tunnel is open (`open`).
    fn on_open(&self, _ctx: &mut Self::Ctx) {}

    /// Bytes passed through an open tunnel: `n` bytes, from the client when
    /// `from_client`. Called for every read, so keep it cheap.
    fn on_tunnel_data(&self, _ctx: &Self::Ctx, _from_client: bool, _n: usize) {}

    /// A WebSocket tunnel closed (`close`), with its byte counts.
    fn on_close(&self, _ctx: Self::Ctx, _stats: TunnelStats) {}
}

type RequestFn = dyn Fn(&mut request::Parts) + Send + Sync;
type ResponseFn = dyn Fn(&mut Response<Body>) + Send + Sync;
type ErrorFn = dyn Fn(&ProxyError) -> Option<Response<Body>> + Send + Sync;
type EndFn = dyn Fn(BodyEnd) + Send + Sync;

/// Hooks made of closures, set with the shortcuts on
/// [`ProxyBuilder`](crate::ProxyBuilder); the default hooks of a proxy.
#[derive(Clone, Default)]
pub struct FnHooks {
    pub(crate) proxy_request: Option<Arc<RequestFn>>,
    pub(crate) proxy_request_ws: Option<Arc<RequestFn>>,
    pub(crate) proxy_response: Option<Arc<ResponseFn>>,
    pub(crate) error: Option<Arc<ErrorFn>>,
    pub(crate) end: Option<Arc<EndFn>>,
}

impl fmt::Debug for FnHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHooks")
            .field("proxy_request", &self.proxy_request.is_some())
            .field("proxy_request_ws", &self.proxy_request_ws.is_some())
            .field("proxy_response", &self.proxy_response.is_some())
            .field("error", &self.error.is_some())
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

    fn on_end(&self, (): (), end: BodyEnd) {
        if let Some(f) = &self.end {
            f(end);
        }
    }

    fn on_error(&self, (): &mut (), err: &ProxyError) -> Option<Response<Body>> {
        self.error.as_ref().and_then(|f| f(err))
    }

    fn observes_abort(&self) -> bool {
        false
    }
}
