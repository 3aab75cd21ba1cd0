//! The public listener (chp.md §4–§8): health check, route lookup (path or host routing),
//! prefix stripping, `last_activity`, and the error pages. The forwarding itself is
//! [`forward`], the single place where the engine is called.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error_pages::{self, ErrorPages};
use crate::metrics::Metrics;
use crate::path;
use crate::store::{Route, RouteStore};

/// Proxy options from the command line, handed to the engine at integration.
#[derive(Debug, Clone, Default)]
#[allow(
    dead_code,
    reason = "read by the engine call in `forward` at integration"
)]
pub(crate) struct ForwardOptions {
    pub(crate) x_forward: bool,
    pub(crate) prepend_path: bool,
    pub(crate) change_origin: bool,
    pub(crate) auto_rewrite: bool,
    pub(crate) protocol_rewrite: Option<String>,
    pub(crate) custom_headers: Vec<(String, String)>,
    pub(crate) insecure: bool,
    /// `--timeout`: idle timeout of the client socket during a web request.
    pub(crate) timeout: Option<Duration>,
    /// `--proxy-timeout`: idle timeout on the upstream (fires → 503).
    pub(crate) proxy_timeout: Option<Duration>,
}

/// What the public listener shares.
#[derive(Debug)]
pub(crate) struct PublicState {
    pub(crate) store: Arc<dyn RouteStore>,
    pub(crate) host_routing: bool,
    pub(crate) include_prefix: bool,
    pub(crate) error_pages: ErrorPages,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) options: ForwardOptions,
}

/// The outcome of the route lookup for one request.
#[derive(Debug)]
pub(crate) struct Routed {
    /// The matched route (its target, data and `last_activity`).
    pub(crate) route: Arc<Route>,
    /// The matched key, e.g. `/user/alice` (or `/alice.hub.example/user/alice`).
    pub(crate) prefix: Arc<str>,
    /// Path and query to forward, before the target's own path is prepended: the raw
    /// request path with dot segments resolved (escapes kept) and, with
    /// `--no-include-prefix`, the matched segments removed (host segment excluded).
    pub(crate) forward_path_and_query: String,
    /// The request asks for a protocol upgrade (WebSocket).
    pub(crate) upgrade: bool,
}

/// Entry point of every public request.
pub(crate) async fn handle(
    state: Arc<PublicState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Exact `req.url` match, before routing and not counted (chp.md §9).
    if req
        .uri()
        .path_and_query()
        .map(http::uri::PathAndQuery::as_str)
        == Some("/_chp_healthz")
    {
        let mut response = Response::new(Body::from(r#"{"status":"OK"}"#));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let upgrade = is_upgrade(&req);
    if upgrade {
        state.metrics.requests_ws.inc();
    } else {
        state.metrics.requests_web.inc();
    }
    let original_url = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());

    let routed = match route(&state, &req) {
        Ok(r) => r,
        Err(status) => {
            tracing::error!("{} {} {} ", status.as_u16(), req.method(), req.uri().path());
            state.metrics.requests_proxy.inc(status.as_u16());
            return Ok(error_response(&state, status, upgrade, &original_url).await);
        }
    };
    tracing::debug!(
        "PROXY {} {} to {}",
        if upgrade { "WS" } else { "WEB" },
        req.uri().path(),
        routed.route.target()
    );
    let route = routed.route.clone();
    let response = forward(
        &state,
        routed,
        record_request_activity(req, &route, &state.metrics),
    )
    .await;
    if !upgrade {
        state.metrics.requests_proxy.inc(response.status().as_u16());
    }
    // A web response finished with status < 300 counts as activity (chp.md §7). We record
    // it when the head arrives; the Hub reads last_activity every 300 s, so the difference
    // between head and end of body is not observable.
    if !upgrade && response.status().as_u16() < 300 {
        touch(&route, &state.metrics);
    }
    Ok(response)
}

/// Looks the request up; `Err` is the status to answer (404 no route, 400 bad path/host).
pub(crate) fn route<B>(state: &PublicState, req: &Request<B>) -> Result<Routed, StatusCode> {
    let normalized = path::normalize(req.uri().path());
    let decoded = path::decode(&normalized).map_err(|_| StatusCode::BAD_REQUEST)?;
    let lookup_path = if state.host_routing {
        let host = request_host(req).ok_or(StatusCode::BAD_REQUEST)?;
        format!("/{host}{decoded}")
    } else {
        decoded.into_owned()
    };
    let started = Instant::now();
    let found = state.store.lookup(&lookup_path);
    state.metrics.find_target_for_req.observe(started.elapsed());
    let found = found.ok_or(StatusCode::NOT_FOUND)?;
    let mut forward_path_and_query = if state.include_prefix {
        normalized.into_owned()
    } else {
        // In host-routing mode the first key segment is the host, not part of the URL.
        let host_segment = usize::from(state.host_routing && found.depth > 0);
        path::strip_segments(&normalized, found.depth - host_segment)
            .map_err(|_| StatusCode::BAD_REQUEST)?
    };
    if let Some(query) = req.uri().query() {
        forward_path_and_query.push('?');
        forward_path_and_query.push_str(query);
    }
    Ok(Routed {
        route: found.value,
        prefix: found.prefix,
        forward_path_and_query,
        upgrade: is_upgrade(req),
    })
}

// ============================================================================================
// INTEGRATION POINT: the engine is called here, and only here.
// ============================================================================================
/// Forwards a routed request to `routed.route.target()` and returns the response.
///
/// The engine call goes here: `switchyard::Proxy::web` (or its upgrade path when
/// `routed.upgrade`) with the target, `routed.forward_path_and_query` as the path and
/// `state.options` as per-request options. Engine errors map to 503 (connect, reset,
/// `--proxy-timeout`) or 500 and go through [`error_response`] (web) / a bare
/// `503` + close (WebSocket), and count in `requests_proxy`.
pub(crate) async fn forward(
    state: &PublicState,
    routed: Routed,
    req: Request<Body>,
) -> Response<Body> {
    // wired to switchyard::Proxy in the integration step
    drop(req);
    tracing::error!(
        "502 {} -> {}{} (upgrade: {}, options: {:?}): proxying is not wired to the engine yet",
        routed.prefix,
        routed.route.target(),
        routed.forward_path_and_query,
        routed.upgrade,
        state.options,
    );
    error_pages::plain(StatusCode::BAD_GATEWAY)
}
// ============================================================================================

/// Every data chunk of the request body counts as activity (chp.md §7).
fn record_request_activity(
    req: Request<Incoming>,
    route: &Arc<Route>,
    metrics: &Arc<Metrics>,
) -> Request<Body> {
    let route = route.clone();
    let metrics = metrics.clone();
    req.map(move |body| {
        Body::new(body.map_frame(move |frame| {
            if frame.is_data() {
                touch(&route, &metrics);
            }
            frame
        }))
    })
}

fn touch(route: &Route, metrics: &Metrics) {
    let started = Instant::now();
    route.touch();
    metrics.last_activity_updating.observe(started.elapsed());
}

/// The error page for a web request; a bare status and `Connection: close` for an upgrade
/// (chp.md §6: no error pages for WebSockets; CHP's open socket after a 404 is fixed).
pub(crate) async fn error_response(
    state: &PublicState,
    status: StatusCode,
    upgrade: bool,
    url: &str,
) -> Response<Body> {
    if upgrade {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    state.error_pages.respond(status, url).await
}

/// Node's `upgrade` event: a `Connection: upgrade` request with an `Upgrade` header.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request's host without the port (`[v6]:p` → `[v6]`), case kept (chp.md §4.4).
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let value = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?.to_owned(),
        None => req.uri().authority()?.as_str().to_owned(),
    };
    let value = value.rsplit_once('@').map_or(value.as_str(), |(_, h)| h);
    let host = if value.starts_with('[') {
        value.find(']').map(|end| &value[..=end])?
    } else {
        value.split(':').next()?
    };
    (!host.is_empty() && !host.contains('/')).then(|| host.to_owned())
}

/// The `--redirect-port` server: 301 to the HTTPS port (chp.md §11).
pub(crate) fn redirect(req: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let host = request_host(req);
    let Some(host) = host else {
        let mut response = Response::new(Body::from(format!(
            "This server is HTTPS-only on port {https_port}, but an HTTP request was made and the host could not be determined from the request."
        )));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let url = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let location = if https_port == 443 {
        format!("https://{host}{url}")
    } else {
        format!("https://{host}:{https_port}{url}")
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::store::Target;
    use crate::store::memory::MemoryStore;

    async fn state(host_routing: bool, include_prefix: bool, keys: &[&str]) -> PublicState {
        let store = MemoryStore::new();
        for k in keys {
            store
                .add(
                    k,
                    Target::parse("http://127.0.0.1:1/base").unwrap(),
                    Map::new(),
                )
                .await
                .unwrap();
        }
        PublicState {
            store: Arc::new(store),
            host_routing,
            include_prefix,
            error_pages: ErrorPages::builtin(),
            metrics: Arc::new(Metrics::new()),
            options: ForwardOptions::default(),
        }
    }

    fn req(uri: &str, host: &str) -> Request<()> {
        Request::get(uri)
            .header(header::HOST, host)
            .body(())
            .unwrap()
    }

    fn routed(state: &PublicState, uri: &str, host: &str) -> Result<(String, String), StatusCode> {
        route(state, &req(uri, host)).map(|r| (r.prefix.to_string(), r.forward_path_and_query))
    }

    /// chp.md §4.2 and §5.1: routing and the forwarded path agree.
    #[tokio::test]
    async fn path_routing_and_forward_path() {
        let s = state(false, true, &["/", "/user/foo", "/b@r/b r"]).await;
        assert_eq!(
            routed(&s, "/user/foo/bar?x=1&y=%20", "h").unwrap(),
            ("/user/foo".into(), "/user/foo/bar?x=1&y=%20".into())
        );
        assert_eq!(
            routed(&s, "/user/foo/../x", "h").unwrap(),
            ("/".into(), "/user/x".into())
        );
        assert_eq!(routed(&s, "/user/foobar", "h").unwrap().0, "/");
        assert_eq!(routed(&s, "/b%40r/b%20r/x", "h").unwrap().0, "/b@r/b r");
        assert_eq!(routed(&s, "/__proto__", "h").unwrap().0, "/");
        assert_eq!(routed(&s, "/%", "h"), Err(StatusCode::BAD_REQUEST));
        let empty = state(false, true, &["/a"]).await;
        assert_eq!(routed(&empty, "/b", "h"), Err(StatusCode::NOT_FOUND));
    }

    /// chp.md §5.1 / §13 #11: `--no-include-prefix` strips the matched segments.
    #[tokio::test]
    async fn no_include_prefix_strips_segments() {
        let s = state(false, false, &["/bar", "/b@r"]).await;
        assert_eq!(
            routed(&s, "/bar/rest/of/it?q=1", "h").unwrap().1,
            "/rest/of/it?q=1"
        );
        assert_eq!(routed(&s, "/b%40r/x", "h").unwrap().1, "/x");
        let h = state(true, false, &["/h.io/abcdefgh"]).await;
        assert_eq!(routed(&h, "/abcdefgh/ij", "h.io:8000").unwrap().1, "/ij");
    }

    /// chp.md §4.4: host routing, case-sensitive, `/` catches every host.
    #[tokio::test]
    async fn host_routing() {
        let s = state(true, true, &["/", "/alice.hub.example/user/alice"]).await;
        assert_eq!(
            routed(&s, "/user/alice/lab", "alice.hub.example:443").unwrap(),
            (
                "/alice.hub.example/user/alice".into(),
                "/user/alice/lab".into()
            )
        );
        assert_eq!(
            routed(&s, "/user/alice", "ALICE.hub.example").unwrap().0,
            "/"
        );
        assert_eq!(routed(&s, "/x", "[::1]:80").unwrap().0, "/");
        let no_host = Request::get("/x").body(()).unwrap();
        assert_eq!(route(&s, &no_host).err(), Some(StatusCode::BAD_REQUEST));
    }
}
