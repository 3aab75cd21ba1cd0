//! [`Proxy::forward`]: @fastify/reply-from's `reply.from(source, opts)` for
//! a handler in axum or any tower stack.
//!
//! A [`Forward`] is a typed builder for one call's options on top of the
//! engine: the same request and response passes, client, hooks, retries
//! and errors as [`Proxy::web`]. Await it for a `Response<Body>` (errors
//! become their status with a short generic body), or call
//! [`Forward::try_send`] for the typed error.
//!
//! | reply-from | here |
//! | --- | --- |
//! | `base` | the proxy's target or [`Upstreams`], or [`Forward::base`] |
//! | `source` | the second argument of [`Proxy::forward`]; the request's path with [`Proxy::forward_request`] |
//! | `queryString` (object / function) | [`Forward::query_string`] / [`Forward::query_string_with`] |
//! | `body`, `contentType` | [`Forward::body`], [`Forward::no_body`], [`Forward::content_type`] |
//! | `method` | [`Forward::method`] |
//! | `rewriteRequestHeaders` | [`Forward::rewrite_request_headers`] |
//! | `rewriteHeaders` | [`Forward::rewrite_headers`] |
//! | `onResponse` | [`Forward::on_response`] |
//! | `onError` | the `Err` of [`Forward::try_send`] |
//! | `getUpstream` | [`Forward::get_upstream`] |
//! | `retriesCount`, `retryMethods`, `maxRetriesOn503`, `retryDelay` | [`Forward::retry`] with a [`Retry`] |
//! | `timeout` | [`Forward::headers_timeout`], [`Forward::body_timeout`], [`Forward::total_timeout`] |
//! | `disableRequestLogging` | [`Forward::disable_request_logging`] |
//! | `base: [a, b]` (BalancedPool) | [`Forward::upstreams`] with [`Upstreams`] |
//!
//! Differences, on purpose:
//!
//! * The base path is a jail, as in reply-from: a source whose path has a
//!   `..` segment, also percent-encoded (`%2e%2e`, `..%2f`) or with `\`, is
//!   a 400 (GHSA-2q7r-29rg-6m5h); a source outside the base path is a 400
//!   too (reply-from: 500), since sources are usually built from the
//!   client's path.
//! * `body` is bytes, sent as they are; there is no JSON re-encoding (use
//!   your serializer and [`Forward::content_type`]). Without
//!   `content_type`, the client's `Content-Type` is kept.
//! * The `Host` sent is the upstream's, as in reply-from
//!   ([`Forward::keep_host`] keeps the client's).
//! * TLS certificates are verified (reply-from: not by default).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, request};
use percent_encoding::percent_decode_str;
use tokio::time::Instant;
use tracing::info;

use crate::balance::Upstreams;
use crate::body::Body;
use crate::error::{BoxError, ProxyError};
use crate::hooks::{FnHooks, Hooks};
use crate::options::Options;
use crate::proxy::{Extras, HeadersFn, Proxy, error_response};
use crate::retry::Retry;
use crate::target::Target;

type QueryFn = Box<dyn FnOnce(Option<&str>, &request::Parts) -> String + Send>;
type UpstreamFn = Box<dyn FnOnce(&request::Parts, Option<&Target>) -> Target + Send>;
type ResponseFn = Box<dyn FnOnce(Response<Body>) -> Response<Body> + Send>;

/// One forwarded request and its options; see the module docs. Await it,
/// or call [`Forward::try_send`].
#[must_use = "a Forward does nothing until awaited"]
pub struct Forward<H: Hooks = FnHooks> {
    proxy: Proxy<H>,
    req: Request<Body>,
    source: Option<String>,
    base: Option<Target>,
    upstreams: Option<Upstreams>,
    get_upstream: Option<UpstreamFn>,
    query: Option<Query>,
    body: Option<Replacement>,
    content_type: Option<Result<HeaderValue, ()>>,
    method: Option<Method>,
    rewrite_request_headers: Option<HeadersFn>,
    rewrite_headers: Option<HeadersFn>,
    on_response: Option<ResponseFn>,
    retry: Option<Arc<Retry>>,
    options: Option<Options>,
    log: bool,
    keep_host: bool,
}

enum Query {
    Replace(String),
    With(QueryFn),
}

enum Replacement {
    Bytes(Bytes),
    Null,
}

// === impl Proxy ===

impl<H: Hooks> Proxy<H> {
    /// Forwards `req` to `source` (reply-from's `reply.from(source)`): a
    /// path (with an optional query) resolved under the base's path, or an
    /// absolute URL (which must lie under the base, if there is one).
    ///
    /// The body streams through; any body type of bytes works (axum's
    /// `Body`, hyper's `Incoming`, [`Body`]).
    pub fn forward<B>(&self, req: Request<B>, source: &str) -> Forward<H>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut f = self.forward_request(req);
        f.source = Some(source.to_owned());
        f
    }

    /// Forwards `req` to its own path (reply-from's `reply.from()`).
    pub fn forward_request<B>(&self, req: Request<B>) -> Forward<H>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Forward {
            proxy: self.clone(),
            req: req.map(Body::from_request_body),
            source: None,
            base: None,
            upstreams: None,
            get_upstream: None,
            query: None,
            body: None,
            content_type: None,
            method: None,
            rewrite_request_headers: None,
            rewrite_headers: None,
            on_response: None,
            retry: None,
            options: None,
            log: true,
            keep_host: false,
        }
    }
}

// === impl Forward ===

impl<H: Hooks> Forward<H> {
    /// The base URL for this call, instead of the proxy's target: the
    /// upstream, and the path the source must stay under.
    pub fn base(mut self, base: Target) -> Self {
        self.base = Some(base);
        self
    }

    /// Several upstreams for this call (the base path is the first one's).
    pub fn upstreams(mut self, upstreams: Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// Picks the base from the request (`getUpstream`); `f` also gets the
    /// base it would otherwise use.
    pub fn get_upstream(
        mut self,
        f: impl FnOnce(&request::Parts, Option<&Target>) -> Target + Send + 'static,
    ) -> Self {
        self.get_upstream = Some(Box::new(f));
        self
    }

    /// Replaces the query (`queryString` as an object): an empty string
    /// sends no `?`.
    pub fn query_string(mut self, query: impl Into<String>) -> Self {
        self.query = Some(Query::Replace(query.into()));
        self
    }

    /// Replaces the query with what `f` makes of the incoming one (without
    /// `?`) and the request head (`queryString` as a function). An empty
    /// result sends no `?`.
    pub fn query_string_with(
        mut self,
        f: impl FnOnce(Option<&str>, &request::Parts) -> String + Send + 'static,
    ) -> Self {
        self.query = Some(Query::With(Box::new(f)));
        self
    }

    /// Sends these bytes instead of the request's body, with a
    /// `Content-Length`. Not allowed on GET and HEAD (an error, 500).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(Replacement::Bytes(body.into()));
        self
    }

    /// Sends no body: `Content-Length: 0` and no `Content-Type`
    /// (reply-from's `body: null`).
    pub fn no_body(mut self) -> Self {
        self.body = Some(Replacement::Null);
        self
    }

    /// The `Content-Type` of the [`Forward::body`]. An invalid value is an
    /// error of the call (500).
    pub fn content_type<V: TryInto<HeaderValue>>(mut self, value: V) -> Self {
        self.content_type = Some(value.try_into().map_err(|_| ()));
        self
    }

    /// The method sent upstream.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Edits the outgoing request headers last: after hop-by-hop
    /// stripping, `Host`, `X-Forwarded-*` and the proxy's hooks. Capture
    /// what you need of the original request in the closure.
    pub fn rewrite_request_headers(
        mut self,
        f: impl FnOnce(&mut HeaderMap) + Send + 'static,
    ) -> Self {
        self.rewrite_request_headers = Some(Box::new(f));
        self
    }

    /// Edits the response headers before they go to the client.
    pub fn rewrite_headers(mut self, f: impl FnOnce(&mut HeaderMap) + Send + 'static) -> Self {
        self.rewrite_headers = Some(Box::new(f));
        self
    }

    /// Takes the response over (`onResponse`): `f` gets it with its headers
    /// already rewritten and returns what the client gets. Remove
    /// `Content-Length` if you change the body's length.
    pub fn on_response(
        mut self,
        f: impl FnOnce(Response<Body>) -> Response<Body> + Send + 'static,
    ) -> Self {
        self.on_response = Some(Box::new(f));
        self
    }

    /// The retry policy for this call, instead of the proxy's.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(Arc::new(retry));
        self
    }

    /// Changes the engine's options for this call (a copy of the proxy's).
    pub fn configure(mut self, f: impl FnOnce(&mut Options)) -> Self {
        let opts = self
            .options
            .get_or_insert_with(|| Options::clone(self.proxy.options()));
        f(opts);
        self
    }

    /// A limit on the wait for the response head: 504 when it expires.
    pub fn headers_timeout(self, limit: Duration) -> Self {
        self.configure(|o| o.headers_timeout = Some(limit))
    }

    /// A limit on each gap in the response body.
    pub fn body_timeout(self, limit: Duration) -> Self {
        self.configure(|o| o.body_timeout = Some(limit))
    }

    /// A limit on the whole exchange, retries included.
    pub fn total_timeout(self, limit: Duration) -> Self {
        self.configure(|o| o.total_timeout = Some(limit))
    }

    /// Keeps the client's `Host` instead of sending the upstream's.
    pub fn keep_host(mut self) -> Self {
        self.keep_host = true;
        self
    }

    /// No access log line for this call (`disableRequestLogging`). By
    /// default one `info` event on target `switchyard::access` is emitted
    /// when the response head (or the error) is known.
    pub fn disable_request_logging(mut self) -> Self {
        self.log = false;
        self
    }

    /// Sends the request.
    ///
    /// # Errors
    ///
    /// The [`ProxyError`] when forwarding failed, to answer as you like
    /// (reply-from's `onError`); awaiting the `Forward` answers it with
    /// [`error_response`](crate::error_response).
    pub async fn try_send(self) -> Result<Response<Body>, ProxyError> {
        let started = Instant::now();
        let log = self.log.then(|| {
            let source = self
                .source
                .clone()
                .unwrap_or_else(|| self.req.uri().path().to_owned());
            (self.req.method().clone(), source)
        });
        let result = self.run().await;
        if let Some((method, source)) = log {
            let status = result.as_ref().map_or(0, |r| r.status().as_u16());
            info!(
                target: "switchyard::access",
                %method,
                source,
                status,
                elapsed_ms = started.elapsed().as_millis(),
                "forwarded"
            );
        }
        result
    }

    async fn run(mut self) -> Result<Response<Body>, ProxyError> {
        let rewrite_headers = self.rewrite_headers.take();
        let on_response = self.on_response.take();
        let mut call = Extras {
            change_origin: !self.keep_host,
            rewrite_request_headers: self.rewrite_request_headers.take(),
            retry: self.retry.take(),
            ..Extras::default()
        };
        let proxy = self.proxy.clone();
        let options = self.options.take();
        let opts = options.as_ref().unwrap_or_else(|| proxy.options());
        let prepared = self.prepare(opts, &mut call);
        let result = match prepared {
            Ok((req, target)) => proxy.run(req, opts, target.as_ref(), call).await,
            Err(e) => proxy.fail_call(e),
        };
        result.map(|mut res| {
            if let Some(f) = rewrite_headers {
                f(res.headers_mut());
            }
            match on_response {
                Some(f) => f(res),
                None => res,
            }
        })
    }

    /// The `body` and `no_body` options: the request body replaced, with its
    /// framing and content type.
    fn replace_body(
        &mut self,
        parts: &mut http::request::Parts,
        body: &mut Body,
    ) -> Result<(), ProxyError> {
        match self.body.take() {
            Some(Replacement::Bytes(bytes)) => {
                if parts.method == Method::GET || parts.method == Method::HEAD {
                    return Err(ProxyError::InvalidCall(
                        "a replacement body on a GET or HEAD request",
                    ));
                }
                if let Some(ct) = self.content_type.take() {
                    let ct = ct.map_err(|()| ProxyError::InvalidCall("invalid content_type"))?;
                    parts.headers.insert(header::CONTENT_TYPE, ct);
                }
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                *body = Body::full(bytes);
            }
            Some(Replacement::Null) => {
                parts.headers.remove(header::CONTENT_TYPE);
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                *body = Body::empty();
            }
            None => {}
        }
        Ok(())
    }

    /// Applies the method and body options, picks the base and computes the
    /// outgoing path and query into `call`.
    fn prepare(
        &mut self,
        opts: &Options,
        call: &mut Extras,
    ) -> Result<(Request<Body>, Option<Target>), ProxyError> {
        let req = std::mem::take(&mut self.req);
        let (mut parts, mut body) = req.into_parts();
        if let Some(m) = self.method.take() {
            parts.method = m;
        }
        self.replace_body(&mut parts, &mut body)?;
        let mut base = self.base.take();
        if let Some(f) = self.get_upstream.take() {
            let fallback = base.as_ref().or(opts.target.as_ref());
            base = Some(f(&parts, fallback));
        }
        call.upstreams = self.upstreams.take();
        let proxy_pool = self.proxy.upstreams();
        let base_path = match (&base, &call.upstreams, &opts.target, proxy_pool) {
            (Some(t), ..) | (None, None, Some(t), _) => Some(t),
            (None, Some(pool), ..) | (None, None, None, Some(pool)) => pool.targets().next(),
            _ => None,
        }
        .map(|t| t.path().to_owned());
        let source = self
            .source
            .take()
            .unwrap_or_else(|| parts.uri.path().to_owned());
        let (target, path, source_query) = if source.contains("://") {
            let abs = Target::parse(&source)
                .map_err(|_| ProxyError::BadRequest("source is not a valid URL"))?;
            let any_base = base.as_ref().or(opts.target.as_ref());
            let path = match (any_base, &base_path) {
                (Some(b), Some(bp)) if same_origin(b, &abs) => build_path(abs.path(), bp)?,
                (Some(_), _) => {
                    return Err(ProxyError::BadRequest("source is outside the base"));
                }
                _ => build_path(abs.path(), "/")?,
            };
            let query = abs.query().map(str::to_owned);
            (base.or(Some(abs)), path, query)
        } else {
            let (src_path, src_query) = match source.split_once('?') {
                Some((p, q)) => (p, Some(q.to_owned())),
                None => (source.as_str(), None),
            };
            let path = build_path(src_path, base_path.as_deref().unwrap_or("/"))?;
            (base, path, src_query)
        };
        let incoming = parts.uri.query();
        let query = match self.query.take() {
            Some(Query::Replace(q)) => Some(q),
            Some(Query::With(f)) => Some(f(incoming, &parts)),
            None => source_query.or_else(|| incoming.map(str::to_owned)),
        };
        call.path = Some(match query.filter(|q| !q.is_empty()) {
            Some(q) => format!("{path}?{q}"),
            None => path,
        });
        Ok((Request::from_parts(parts, body), target))
    }
}

impl<H: Hooks> IntoFuture for Forward<H> {
    type Output = Response<Body>;
    type IntoFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.try_send().await.unwrap_or_else(|e| {
                crate::proxy::log_error(&e);
                error_response(&e)
            })
        })
    }
}

impl<H: Hooks> std::fmt::Debug for Forward<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("uri", self.req.uri())
            .field("source", &self.source)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn same_origin(a: &Target, b: &Target) -> bool {
    match (a.uri_for("/"), b.uri_for("/")) {
        (Ok(a), Ok(b)) => a.scheme() == b.scheme() && a.authority() == b.authority(),
        _ => false,
    }
}

/// reply-from's `buildURL` for the path: the source path resolved against
/// `base` (an absolute path replaces it, a relative one joins its
/// directory, `//x` is a path, not a host), refused with a `..` segment
/// (decoded, `\` read as `/`) or outside `base`.
pub(crate) fn build_path(source: &str, base: &str) -> Result<String, ProxyError> {
    let decoded = percent_decode_str(source).decode_utf8_lossy();
    if decoded.split(['/', '\\']).any(|seg| seg == "..") {
        return Err(ProxyError::BadRequest(
            "source/request contain invalid characters",
        ));
    }
    let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
    let dest = if source.is_empty() {
        base.to_owned()
    } else if let Some(rest) = source.strip_prefix("//") {
        format!("{dir}/{rest}")
    } else if source.starts_with('/') {
        source.to_owned()
    } else {
        format!("{dir}{source}")
    };
    let dest = if dest.starts_with('/') {
        dest
    } else {
        format!("/{dest}")
    };
    let inside = dest.starts_with(base)
        && (base.ends_with('/') || dest.len() == base.len() || dest.as_bytes()[base.len()] == b'/');
    if inside {
        Ok(dest)
    } else {
        Err(ProxyError::BadRequest("source is outside the base path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(source: &str, base: &str) -> String {
        build_path(source, base).unwrap()
    }

    fn refused(source: &str, base: &str) -> bool {
        matches!(build_path(source, base), Err(ProxyError::BadRequest(_)))
    }

    /// reply-from's `build-url` tests: the join rules, `//host` as a
    /// path, escapes refused, `..`, `%2e%2e` and `..%2f` refused, `[...slug]`
    /// and `...` allowed.
    #[test]
    fn build_url_rules() {
        assert_eq!(ok("hi", "/hi"), "/hi");
        assert_eq!(ok("/hello", "/"), "/hello");
        assert_eq!(ok("/hello", "/hello"), "/hello");
        assert_eq!(ok("x", "/api/"), "/api/x");
        assert_eq!(ok("/api/x", "/api/"), "/api/x");
        assert_eq!(ok("//10.0.0.10/hi", "/"), "//10.0.0.10/hi");
        assert_eq!(ok("", "/base/"), "/base/");
        assert!(refused("/private", "/exposed/"));
        assert!(refused("/exposed-extra", "/exposed"));
        assert_eq!(ok("/exposed/x", "/exposed"), "/exposed/x");
        for bad in [
            "..",
            "/../x",
            "/a/../../b",
            "/ho/%2E%2E/hi",
            "/%2e%2e/x",
            "/a/..%2fb",
            "/a/..%2Fb",
            "/a\\..\\b",
            "%2e%2e",
        ] {
            assert!(refused(bad, "/"), "{bad} should be refused");
        }
        assert_eq!(ok("/[...slug]", "/"), "/[...slug]");
        assert_eq!(ok("/...", "/"), "/...");
        assert_eq!(ok("/..foo", "/"), "/..foo");
    }

    /// reply-from's GHSA-2q7r-29rg-6m5h: `%2E%2E` must not escape the base.
    #[test]
    fn ghsa_2q7r_traversal_under_a_base() {
        assert!(refused("/ho/%2E%2E/hi", "/hi/"));
    }
}
