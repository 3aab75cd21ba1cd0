//! The public listener: health check, route lookup (path or host routing),
//! prefix stripping, `last_activity`, and the error pages. The engine is called in one
//! place, [`handle`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use switchyard::Body;

use crate::access_log::{AccessLog, Ended, Facts};
use crate::error_pages::ErrorPages;
use crate::metrics::Metrics;
use crate::path;
use crate::request_id::RequestIds;
use crate::route_stats::TargetState;
use crate::store::{Route, RouteStore};
use hooks::RouteOf;
pub(crate) use hooks::{ActivityHooks, engine};

mod hooks;

/// The engine with the server's hooks: `last_activity` on client→server
/// WebSocket traffic.
pub(crate) type Engine = switchyard::Proxy<ActivityHooks>;

/// What the public listener shares.
#[derive(Debug)]
pub(crate) struct PublicState {
    pub(crate) store: Arc<dyn RouteStore>,
    pub(crate) host_routing: bool,
    pub(crate) include_prefix: bool,
    pub(crate) error_pages: ErrorPages,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) engine: Engine,
    /// Set at the first stop signal: `/_chp_readyz` answers 503 from then on.
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// `None` with `--no-request-id`.
    pub(crate) request_ids: Option<RequestIds>,
    /// Each route's recent requests are counted (for the dashboard; off with
    /// `--no-dashboard`, which saves a clock read per request).
    pub(crate) route_stats: bool,
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

/// Entry point of every public request. Everything up to the engine's call runs now
/// ([`plan`]); the future only waits for the engine, or for an error page.
///
/// Not an `async fn`: one would keep the request in its future twice, for as long as the
/// engine runs (see `switchyard::Proxy::run`).
pub(crate) fn handle(
    state: Arc<PublicState>,
    req: Request<Incoming>,
    conn: Option<switchyard::ConnInfo>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    let plan = plan(&state, req, conn);
    async move {
        Ok(match plan {
            Plan::Answer(response) => response,
            Plan::Refuse {
                status,
                upgrade,
                ref original_url,
                facts,
                request_id,
            } => {
                let mut response = error_response(&state, status, upgrade, original_url).await;
                log_answer(&state, facts.as_deref(), &response, None);
                return_id(&state, &mut response, request_id);
                response
            }
            Plan::Forward {
                req,
                ref routed,
                ref original_url,
                facts,
                request_id,
            } => {
                let mut call = switchyard::Call::new().target(routed.route.target().engine());
                if let Some(conn) = conn {
                    call = call.conn(conn);
                }
                let result = state.engine.try_web(req, call).await;
                let record = |status: StatusCode, target: Option<TargetState>| {
                    if state.route_stats {
                        let now = crate::time::now_ms();
                        routed
                            .route
                            .stats()
                            .record(now, status.is_server_error(), target);
                    }
                };
                let mut response = match answer(routed, result, request_id.as_ref()) {
                    Ok(response) => {
                        record(response.status(), Some(TargetState::Responding));
                        response
                    }
                    Err((status, err)) => {
                        record(status, TargetState::of_error(&err));
                        let response =
                            error_response(&state, status, routed.upgrade, original_url).await;
                        log_answer(&state, facts.as_deref(), &response, Some(&err));
                        response
                    }
                };
                if !routed.upgrade {
                    state.metrics.requests_proxy.inc(response.status().as_u16());
                }
                // A web response finished with status < 300 counts as activity, as in
                // CHP. We record it when the head arrives; the Hub reads last_activity
                // every 300 s, so the difference between head and end of body is not
                // observable.
                if !routed.upgrade && response.status().as_u16() < 300 {
                    touch(&routed.route, &state.metrics);
                }
                return_id(&state, &mut response, request_id);
                response
            }
        })
    }
}

/// The request's ID, back to the client.
fn return_id(state: &PublicState, response: &mut Response<Body>, id: Option<HeaderValue>) {
    if let (Some(ids), Some(id)) = (&state.request_ids, id) {
        response.headers_mut().insert(ids.header().clone(), id);
    }
}

/// What [`handle`] does with a request, decided before anything waits.
#[allow(
    clippy::large_enum_variant,
    reason = "the large variant is the common one; boxing it would cost an allocation per request"
)]
enum Plan {
    /// The health check.
    Answer(Response<Body>),
    /// An error page (or a bare status for an upgrade), already counted.
    Refuse {
        status: StatusCode,
        upgrade: bool,
        original_url: http::Uri,
        facts: Option<Arc<Facts>>,
        request_id: Option<HeaderValue>,
    },
    /// To the engine, with the path to forward in the URI.
    Forward {
        req: Request<Body>,
        routed: Routed,
        original_url: http::Uri,
        facts: Option<Arc<Facts>>,
        request_id: Option<HeaderValue>,
    },
}

fn plan(
    state: &PublicState,
    mut req: Request<Incoming>,
    conn: Option<switchyard::ConnInfo>,
) -> Plan {
    // Exact `req.url` matches (a query string makes it a proxied request), before routing
    // and not counted, as CHP's health check.
    if let Some(answer) = probe(state, req.uri()) {
        return Plan::Answer(answer);
    }
    let upgrade = is_upgrade(&req);
    if upgrade {
        state.metrics.requests_ws.inc();
    } else {
        state.metrics.requests_web.inc();
    }
    // Kept for the error page (a clone shares the request's bytes).
    let original_url = req.uri().clone();
    let request_id = state
        .request_ids
        .as_ref()
        .map(|ids| ids.take(req.headers_mut()));
    let mut facts = state.access_log.as_ref().map(|_| {
        Box::new(Facts::of(
            &req,
            conn.map(|c| c.remote.ip()),
            request_id.clone(),
        ))
    });

    let mut routed = match route_as(state, &req, upgrade) {
        Ok(r) => r,
        Err(status) => {
            error_line(
                request_id.as_ref(),
                format_args!("{} {} {} ", status.as_u16(), req.method(), req.uri().path()),
            );
            state.metrics.requests_proxy.inc(status.as_u16());
            return Plan::Refuse {
                status,
                upgrade,
                original_url,
                facts: facts.map(Arc::from),
                request_id,
            };
        }
    };
    if let Some(f) = &mut facts {
        f.route = Some(routed.prefix.clone());
        f.target = Some(routed.route.target().to_string().into());
    }
    tracing::debug!(
        "PROXY {} {} to {}",
        if upgrade { "WS" } else { "WEB" },
        req.uri().path(),
        routed.route.target()
    );
    let facts: Option<Arc<Facts>> = facts.map(Arc::from);
    match forward_request(req, &mut routed, &state.metrics, facts.as_ref()) {
        Some(req) => Plan::Forward {
            req,
            routed,
            original_url,
            facts,
            request_id,
        },
        None => {
            if !upgrade {
                state
                    .metrics
                    .requests_proxy
                    .inc(StatusCode::BAD_REQUEST.as_u16());
            }
            Plan::Refuse {
                status: StatusCode::BAD_REQUEST,
                upgrade,
                original_url,
                facts,
                request_id,
            }
        }
    }
}

/// The health check `/_chp_healthz` (alive: always 200) and the readiness check
/// `/_chp_readyz` (200 when this replica should get traffic: the routes are the store's
/// and no stop signal has come; else 503 with the reason), or `None` for any other URL.
fn probe(state: &PublicState, uri: &http::Uri) -> Option<Response<Body>> {
    let url = uri.path_and_query().map(http::uri::PathAndQuery::as_str)?;
    // One comparison on the hot path; both probes share the prefix.
    let rest = url.strip_prefix("/_chp_")?;
    let (status, body): (_, Cow<'static, str>) = match rest {
        "healthz" => (StatusCode::OK, Cow::Borrowed(r#"{"status":"OK"}"#)),
        "readyz" => {
            let not_ready = if state.stopping.load(Ordering::Relaxed) {
                Err("shutting down")
            } else {
                state.store.ready()
            };
            match not_ready {
                Ok(()) => (StatusCode::OK, Cow::Borrowed(r#"{"status":"OK"}"#)),
                Err(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Cow::Owned(serde_json::json!({ "status": reason }).to_string()),
                ),
            }
        }
        _ => return None,
    };
    let mut response = Response::new(match body {
        Cow::Borrowed(s) => Body::from(s),
        Cow::Owned(s) => Body::from(s),
    });
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(response)
}

/// Looks the request up; `Err` is the status to answer (404 no route, 400 bad path/host).
#[cfg(test)]
pub(crate) fn route<B>(state: &PublicState, req: &Request<B>) -> Result<Routed, StatusCode> {
    route_as(state, req, is_upgrade(req))
}

/// `route`, told whether the request asks for an upgrade.
fn route_as<B>(state: &PublicState, req: &Request<B>, upgrade: bool) -> Result<Routed, StatusCode> {
    let normalized = path::normalize(req.uri().path());
    let decoded = path::decode(&normalized).map_err(|_| StatusCode::BAD_REQUEST)?;
    let lookup_path = if state.host_routing {
        match request_host(req).map_err(|_| StatusCode::BAD_REQUEST)? {
            Some(host) => Cow::Owned(format!("/{host}{decoded}")),
            // No host named (an empty `Host`, or none on HTTP/1.0): the default target
            // only, never a host's route.
            None => Cow::Borrowed("/"),
        }
    } else {
        decoded
    };
    let metrics = &state.metrics;
    let found = metrics.timed(&metrics.find_target_for_req, || {
        state.store.lookup(&lookup_path)
    });
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
    } else if forward_path_and_query.is_empty() {
        // `--no-include-prefix` and a request for the prefix itself: nothing of the path
        // is left, so the target's path goes upstream as it is (`/a` on `/a` → `http://o/t`
        // goes as `/t`, as in CHP, where `/a/` goes as `/t/`). A URI cannot hold an empty
        // path (it reads as `/`, which the engine joins as `/t/`); a lone `?`, an empty
        // path with an empty query, joins as the target's path alone.
        forward_path_and_query.push('?');
    }
    Ok(Routed {
        route: found.value,
        prefix: found.prefix,
        forward_path_and_query,
        upgrade,
    })
}

// ============================================================================================
// INTEGRATION POINT: what the engine gets (`forward_request`), what its answers become
// (`answer`); [`handle`] makes the one call.
// ============================================================================================
/// The request as the engine gets it: its path replaced by
/// `routed.forward_path_and_query`, moved out (the target's own path is prepended by the
/// engine, per `--no-prepend-path`), its body data counted as activity. `None` when that
/// path does not make a URI (400).
fn forward_request(
    req: Request<Incoming>,
    routed: &mut Routed,
    metrics: &Arc<Metrics>,
    facts: Option<&Arc<Facts>>,
) -> Option<Request<Body>> {
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query =
        http::uri::PathAndQuery::try_from(std::mem::take(&mut routed.forward_path_and_query)).ok();
    let uri = http::Uri::from_parts(parts).ok()?;
    let mut req = record_request_activity(req, &routed.route, metrics);
    *req.uri_mut() = uri;
    if routed.upgrade {
        // Only tunnels read it (`on_tunnel_data`); the engine tunnels a subset of
        // the requests `is_upgrade` accepts.
        req.extensions_mut().insert(RouteOf(routed.route.clone()));
    }
    if let Some(facts) = facts {
        req.extensions_mut().insert(facts.clone());
    }
    Some(req)
}

/// The status of the error page for a failed call.
fn error_status(err: &switchyard::ProxyError) -> StatusCode {
    match err.status() {
        // Not CHP's 503: nothing is wrong with the target's reachability, its
        // answer is refused (nginx and HAProxy say 502 here too).
        _ if matches!(err, switchyard::ProxyError::UpstreamHeadTooLarge(_)) => {
            StatusCode::BAD_GATEWAY
        }
        Some(StatusCode::BAD_REQUEST) => StatusCode::BAD_REQUEST,
        Some(s) if s.is_server_error() && err.side() == switchyard::ErrorSide::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The engine's answer as the client gets it. Errors map as CHP's: anything on
/// the upstream side is 503, a request that cannot be forwarded 400, anything else 500;
/// `Err` is the status of the error page (a WebSocket gets a bare status and a close).
fn answer(
    routed: &Routed,
    result: Result<Response<Body>, switchyard::ProxyError>,
    request_id: Option<&HeaderValue>,
) -> Result<Response<Body>, (StatusCode, switchyard::ProxyError)> {
    let err = match result {
        Ok(res) => return Ok(res),
        Err(err) => err,
    };
    let status = error_status(&err);
    if let switchyard::ProxyError::UpstreamHeadTooLarge(_) = err {
        error_line(
            request_id,
            format_args!(
                "502 {} response head from {} larger than --max-response-header-size \
                 or with more fields than --max-response-headers: {}",
                routed.prefix,
                routed.route.target(),
                switchyard::error_chain(&err)
            ),
        );
        return Err((status, err));
    }
    error_line(
        request_id,
        format_args!(
            "{} {} {}",
            status.as_u16(),
            routed.prefix,
            switchyard::error_chain(&err)
        ),
    );
    Err((status, err))
}

/// An error line in CHP's words, with the request's ID as a field when it has one.
fn error_line(request_id: Option<&HeaderValue>, line: std::fmt::Arguments<'_>) {
    match request_id.and_then(|v| v.to_str().ok()) {
        Some(id) => tracing::error!(request_id = %id, "{line}"),
        None => tracing::error!("{line}"),
    }
}

/// The access log entry of a request the server answered itself: a refusal, or an
/// error page for the engine's `err`.
fn log_answer(
    state: &PublicState,
    facts: Option<&Facts>,
    response: &Response<Body>,
    err: Option<&switchyard::ProxyError>,
) {
    let (Some(log), Some(facts)) = (&state.access_log, facts) else {
        return;
    };
    use http_body::Body as _;
    let upstream = err.is_some_and(|e| e.side() == switchyard::ErrorSide::Upstream);
    let ended = Ended {
        status: response.status().as_u16(),
        bytes_out: response.body().size_hint().exact().unwrap_or(0),
        head_time: Some(facts.start.elapsed()),
        duration: facts.start.elapsed(),
        ended_early: upstream.then_some("upstream"),
        error: err.map(|e| switchyard::error_chain(e)),
        ..Ended::default()
    };
    log.record(facts, &ended);
}

/// Every data chunk of the request body counts as activity, whatever the answer (CHP).
fn record_request_activity(
    req: Request<Incoming>,
    route: &Arc<Route>,
    metrics: &Arc<Metrics>,
) -> Request<Body> {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return req.map(Body::from);
    }
    let route = route.clone();
    let metrics = metrics.clone();
    req.map(move |body| Body::from(body).on_data(move |_| touch(&route, &metrics)))
}

fn touch(route: &Route, metrics: &Metrics) {
    metrics.timed(&metrics.last_activity_updating, || route.touch());
}

/// The error page for a web request; a bare status and `Connection: close` for an upgrade
/// (no error pages for WebSockets, as since CHP 5.1; the socket is closed, which CHP's
/// 404 left open).
pub(crate) async fn error_response(
    state: &PublicState,
    status: StatusCode,
    upgrade: bool,
    url: &http::Uri,
) -> Response<Body> {
    if upgrade {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    // The URL as the client sent it (its path and query, as CHP's `req.url`).
    let url = url
        .path_and_query()
        .map_or_else(|| url.path(), http::uri::PathAndQuery::as_str);
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

/// The host a request names, without the port (`[v6]:p` → `[v6]`), case kept (host
/// routing is case-sensitive, as in CHP): the request target's authority when it has one (the absolute form, where RFC
/// 9112 §3.2.2 has the server ignore `Host`, and HTTP/2's `:authority`), else `Host`.
/// `Ok(None)` when there is none, or it is empty (RFC 9110 §7.2 allows an empty `Host`);
/// `Err` when it is not a valid host (a `/`, user information, spaces...).
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, InvalidHost> {
    let value = match (req.uri().authority(), req.headers().get(header::HOST)) {
        (Some(authority), _) => authority.as_str().as_bytes(),
        (None, Some(host)) => host.as_bytes(),
        (None, None) => return Ok(None),
    };
    if !switchyard::is_valid_host(value) {
        return Err(InvalidHost);
    }
    // Valid hosts are ASCII.
    let value = std::str::from_utf8(value).map_err(|_| InvalidHost)?;
    let host = match value.strip_prefix('[') {
        Some(_) => value.find(']').map_or(value, |end| &value[..=end]),
        None => value.split(':').next().unwrap_or(value),
    };
    Ok((!host.is_empty()).then_some(host))
}

/// A `Host` (or request target authority) that RFC 9110 §7.2 does not allow.
#[derive(Debug)]
struct InvalidHost;

/// The `--redirect-port` server: 301 to the HTTPS port.
pub(crate) fn redirect(req: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let Ok(Some(host)) = request_host(req) else {
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
mod tests;
