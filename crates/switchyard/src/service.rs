//! The engine as a tower [`Service`] and [`Layer`], so that axum and any
//! tower stack can mount it (the way @fastify/reply-from is used in Fastify).
//!
//! * `Proxy` itself is a `Service<Request<B>>` for any body of bytes: each
//!   request goes through [`Proxy::web`]. It never fails (`Infallible`):
//!   errors are answered with their status. In axum:
//!   `Router::new().route_service("/api/{*rest}", proxy)` or
//!   `.fallback_service(proxy)`.
//! * [`ProxyLayer`] wraps another service: the requests its predicate
//!   picks (all by default) are proxied, the others go to the inner
//!   service.
//!
//! For per-call options from inside a handler, use
//! [`Proxy::forward`](crate::Proxy::forward).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, request};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::error::BoxError;
use crate::hooks::{FnHooks, Hooks};
use crate::proxy::Proxy;

/// The future of a proxied request.
pub type ResponseFuture<E = Infallible> =
    Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send + 'static>>;

type Predicate = dyn Fn(&request::Parts) -> bool + Send + Sync;

/// A [`Layer`] that proxies the requests its predicate picks and passes the
/// others to the service it wraps.
pub struct ProxyLayer<H: Hooks = FnHooks> {
    proxy: Proxy<H>,
    when: Option<Arc<Predicate>>,
}

/// The service [`ProxyLayer`] makes.
pub struct ProxyService<S, H: Hooks = FnHooks> {
    inner: S,
    proxy: Proxy<H>,
    when: Option<Arc<Predicate>>,
}

// === impl Proxy ===

impl<H, B> Service<Request<B>> for Proxy<H>
where
    H: Hooks,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move { Ok(proxy.web(req.map(Body::from_request_body)).await) })
    }
}

impl<H: Hooks> Proxy<H> {
    /// A [`ProxyLayer`] that proxies every request.
    pub fn layer(&self) -> ProxyLayer<H> {
        ProxyLayer {
            proxy: self.clone(),
            when: None,
        }
    }
}

// === impl ProxyLayer ===

impl<H: Hooks> ProxyLayer<H> {
    /// Proxies only the requests for which `f` is true.
    #[must_use]
    pub fn when(mut self, f: impl Fn(&request::Parts) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(f));
        self
    }
}

impl<H: Hooks> Clone for ProxyLayer<H> {
    fn clone(&self) -> Self {
        Self {
            proxy: self.proxy.clone(),
            when: self.when.clone(),
        }
    }
}

impl<H: Hooks> std::fmt::Debug for ProxyLayer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyLayer")
            .field("proxy", &self.proxy)
            .field("when", &self.when.is_some())
            .finish()
    }
}

impl<S, H: Hooks> Layer<S> for ProxyLayer<H> {
    type Service = ProxyService<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        ProxyService {
            inner,
            proxy: self.proxy.clone(),
            when: self.when.clone(),
        }
    }
}

// === impl ProxyService ===

impl<S: Clone, H: Hooks> Clone for ProxyService<S, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            proxy: self.proxy.clone(),
            when: self.when.clone(),
        }
    }
}

impl<S: std::fmt::Debug, H: Hooks> std::fmt::Debug for ProxyService<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyService")
            .field("inner", &self.inner)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl<S, H, B, ResBody> Service<Request<B>> for ProxyService<S, H>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    H: Hooks,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    /// Ready when the inner service is: a request may go either way.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let proxied = self.when.as_ref().is_none_or(|f| f(&parts));
        let req = Request::from_parts(parts, body);
        if proxied {
            let proxy = self.proxy.clone();
            return Box::pin(async move { Ok(proxy.web(req.map(Body::from_request_body)).await) });
        }
        // The readied service takes the request; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move { fut.await.map(|res| res.map(Body::new)) })
    }
}
