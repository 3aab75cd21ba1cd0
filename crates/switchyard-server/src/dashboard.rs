//! The live dashboard on the API port: a page (`GET /dashboard` and its two assets, built
//! into the binary) and three read-only JSON endpoints it polls, with the API's token:
//!
//! * `GET /api/dashboard/summary`: version, uptime, listeners, route store, certificates,
//!   access-log drops;
//! * `GET /api/dashboard/traffic`: the last 15 minutes of traffic, one sample every 2 s
//!   ([`history`]);
//! * `GET /api/dashboard/routes?q=&sort=&order=&page=&per_page=`: the routes with their
//!   last minute (see [`crate::route_stats`]), searched, sorted and paged on the server so
//!   that 10,000 routes cost the browser one page.
//!
//! The page needs no token and holds no data; it keeps the token in the tab's
//! `sessionStorage` and sends it as `Authorization: token …`. Its policy
//! ([`CSP`]) allows scripts, styles and fetches from the API's own origin only, and no
//! inline script or style; the script writes text with `textContent`, never markup.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use serde::Serialize;
use serde_json::Value;

use crate::api;
use crate::metrics::Metrics;
use crate::store::{Route, RouteStore};
use crate::time;

pub(crate) mod history;

pub(crate) use history::History;

/// The page's `Content-Security-Policy`: its own origin only, nothing inline.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Routes per page unless `per_page` says otherwise, and the most it may say.
const PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 500;
/// Longest accepted search string.
const MAX_QUERY: usize = 200;

/// What the dashboard reads.
#[derive(Debug)]
pub(crate) struct Dashboard {
    pub(crate) started: Instant,
    pub(crate) started_ms: i64,
    pub(crate) listeners: Vec<ListenerInfo>,
    /// `memory`, `file` (memory with `--state-file`) or `redis`.
    pub(crate) store_kind: &'static str,
    pub(crate) store: Arc<dyn RouteStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) history: Arc<History>,
    pub(crate) access_log: bool,
}

/// One listener of the server, as bound.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListenerInfo {
    /// `public`, `api`, `metrics` or `redirect`.
    pub(crate) name: &'static str,
    /// `http://127.0.0.1:8000`, or a UNIX socket path.
    pub(crate) address: String,
    pub(crate) tls: bool,
}

#[derive(Debug, Clone)]
struct DashState {
    dashboard: Arc<Dashboard>,
    auth_token: Option<Arc<str>>,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    version: &'static str,
    started: String,
    uptime_seconds: u64,
    refresh_seconds: u64,
    listeners: &'a [ListenerInfo],
    store: StoreSummary,
    routes: usize,
    certificates: Vec<Certificate>,
    access_log: AccessLogSummary,
    client_connections: Option<usize>,
    websockets: usize,
}

#[derive(Debug, Serialize)]
struct StoreSummary {
    kind: &'static str,
    /// Whether the routes are the store's (a shared store: connected and loaded).
    ready: bool,
    /// Redis only: connected now.
    connected: Option<bool>,
    reconnects: Option<u64>,
    /// Redis: the replicas sharing it now, this one included (subscribers to its change
    /// channel); `null` for the other stores, or when Redis does not answer in time.
    replicas: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Certificate {
    listener: &'static str,
    not_after: String,
    expires_in_seconds: i64,
}

#[derive(Debug, Serialize)]
struct AccessLogSummary {
    enabled: bool,
    dropped: u64,
}

#[derive(Debug, Serialize)]
struct RoutesPage {
    total: usize,
    page: usize,
    per_page: usize,
    pages: usize,
    sort: &'static str,
    order: &'static str,
    routes: Vec<RouteRow>,
}

#[derive(Debug, Serialize)]
struct RouteRow {
    path: String,
    target: String,
    user: Option<String>,
    server_name: Option<String>,
    data: Value,
    last_activity: String,
    rps: f64,
    requests: u64,
    errors: u64,
    error_rate: Option<f64>,
    websockets: u64,
    state: &'static str,
}

/// How the routes are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Path,
    Target,
    User,
    LastActivity,
    Rps,
    ErrorRate,
    Websockets,
    State,
}

/// `GET /api/dashboard/routes`'s query, validated.
#[derive(Debug, PartialEq)]
struct RoutesQuery {
    q: String,
    sort: Sort,
    descending: bool,
    page: usize,
    per_page: usize,
}

/// A route with its numbers, while sorting.
struct Entry {
    route: Arc<Route>,
    snap: crate::route_stats::Snapshot,
    user: Option<String>,
}

/// The page and the JSON endpoints, as a router of their own (merged before the CHP API's
/// fallback).
pub(crate) fn router(dashboard: Arc<Dashboard>, auth_token: Option<&str>) -> Router {
    let state = DashState {
        dashboard,
        auth_token: auth_token.map(Arc::from),
    };
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/api/dashboard/summary", get(summary))
        .route("/api/dashboard/traffic", get(traffic))
        .route("/api/dashboard/routes", get(routes))
        .with_state(state)
}

async fn page() -> Response<Body> {
    let mut response = asset(PAGE, "text/html; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn script() -> Response<Body> {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response<Body> {
    asset(STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The binary is the version: a new one may change the assets.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn summary(State(state): State<DashState>, headers: HeaderMap) -> Response<Body> {
    if let Some(refused) = check(&state, &headers) {
        return refused;
    }
    let d = &state.dashboard;
    let now = time::now_ms();
    let certificates = d
        .metrics
        .certificates()
        .into_iter()
        .map(|(listener, not_after)| Certificate {
            listener: listener.as_str(),
            not_after: time::format_ms(not_after.saturating_mul(1000)),
            expires_in_seconds: not_after - now / 1000,
        })
        .collect();
    let reconnects = d.store.reconnects();
    let ready = d.store.ready().is_ok();
    let body = Summary {
        version: env!("CARGO_PKG_VERSION"),
        started: time::format_ms(d.started_ms),
        uptime_seconds: d.started.elapsed().as_secs(),
        refresh_seconds: history::SAMPLE_EVERY.as_secs(),
        listeners: &d.listeners,
        store: StoreSummary {
            kind: d.store_kind,
            ready,
            connected: reconnects.is_some().then_some(ready),
            reconnects,
            replicas: d.store.replicas().await,
        },
        routes: d.store.len(),
        certificates,
        access_log: AccessLogSummary {
            enabled: d.access_log,
            dropped: d.metrics.access_log_dropped(),
        },
        client_connections: d.metrics.client_connections(),
        websockets: d.metrics.tunnels(),
    };
    json(&body)
}

async fn traffic(State(state): State<DashState>, headers: HeaderMap) -> Response<Body> {
    if let Some(refused) = check(&state, &headers) {
        return refused;
    }
    json(&state.dashboard.history.view())
}

async fn routes(State(state): State<DashState>, headers: HeaderMap, uri: Uri) -> Response<Body> {
    if let Some(refused) = check(&state, &headers) {
        return refused;
    }
    let query = match RoutesQuery::parse(uri.query().unwrap_or_default()) {
        Ok(q) => q,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    json(&routes_page(
        state.dashboard.store.snapshot(),
        &query,
        time::now_ms(),
    ))
}

/// The page of routes `query` asks for, out of `all`.
fn routes_page(all: Vec<Arc<Route>>, query: &RoutesQuery, now_ms: i64) -> RoutesPage {
    let needle = query.q.to_lowercase();
    let mut entries: Vec<Entry> = all
        .into_iter()
        .filter(|r| needle.is_empty() || matches(r, &needle))
        .map(|route| {
            let snap = route.stats().snapshot(now_ms);
            let user = (query.sort == Sort::User)
                .then(|| user_of(&route))
                .flatten();
            Entry { route, snap, user }
        })
        .collect();
    entries.sort_by(|a, b| {
        let order = match query.sort {
            Sort::Path => std::cmp::Ordering::Equal,
            Sort::Target => a.route.target().as_str().cmp(b.route.target().as_str()),
            Sort::User => a.user.cmp(&b.user),
            Sort::LastActivity => a.route.last_activity_ms().cmp(&b.route.last_activity_ms()),
            Sort::Rps => a.snap.rps.total_cmp(&b.snap.rps),
            Sort::ErrorRate => error_rate(a)
                .unwrap_or(-1.0)
                .total_cmp(&error_rate(b).unwrap_or(-1.0)),
            Sort::Websockets => a.snap.websockets.cmp(&b.snap.websockets),
            Sort::State => (a.snap.state as u8).cmp(&(b.snap.state as u8)),
        };
        // Ties (and `path`) in path order, so that a page is stable between refreshes.
        let order = order.then_with(|| a.route.key().cmp(b.route.key()));
        if query.descending {
            order.reverse()
        } else {
            order
        }
    });
    let total = entries.len();
    let pages = total.div_ceil(query.per_page).max(1);
    let rows = entries
        .into_iter()
        .skip((query.page - 1).saturating_mul(query.per_page))
        .take(query.per_page)
        .map(|e| row(&e))
        .collect();
    RoutesPage {
        total,
        page: query.page,
        per_page: query.per_page,
        pages,
        sort: query.sort.as_str(),
        order: if query.descending { "desc" } else { "asc" },
        routes: rows,
    }
}

fn error_rate(e: &Entry) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (e.snap.requests > 0).then(|| e.snap.errors as f64 / e.snap.requests as f64)
}

fn row(e: &Entry) -> RouteRow {
    let (user, server_name, data) = data_of(&e.route);
    RouteRow {
        path: e.route.key().to_string(),
        target: e.route.target().as_str().to_owned(),
        user,
        server_name,
        data,
        last_activity: time::format_ms(e.route.last_activity_ms()),
        rps: e.snap.rps,
        requests: e.snap.requests,
        errors: e.snap.errors,
        error_rate: error_rate(e),
        websockets: e.snap.websockets,
        state: e.snap.state.as_str(),
    }
}

/// The route's `user` and `server_name` (JupyterHub's), and its whole JSON.
fn data_of(route: &Route) -> (Option<String>, Option<String>, Value) {
    let data: Value = serde_json::from_slice(&route.json()).unwrap_or(Value::Null);
    let field = |name: &str| data.get(name).and_then(Value::as_str).map(str::to_owned);
    (field("user"), field("server_name"), data)
}

/// The route's `user` alone: the other values are skipped, not built (sorting 10,000
/// routes by user reads each one's JSON).
fn user_of(route: &Route) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct User {
        #[serde(default)]
        user: Value,
    }
    match serde_json::from_slice::<User>(&route.json()) {
        Ok(User {
            user: Value::String(user),
        }) => Some(user),
        _ => None,
    }
}

/// Whether the path, the target or the data contain `needle` (lower case).
fn matches(route: &Route, needle: &str) -> bool {
    route.key().to_lowercase().contains(needle)
        || String::from_utf8_lossy(&route.json())
            .to_lowercase()
            .contains(needle)
}

/// `None` when the token is right; else the API's answer to a wrong one (403, empty).
fn check(state: &DashState, headers: &HeaderMap) -> Option<Response<Body>> {
    if api::authorized(state.auth_token.as_deref(), headers) {
        None
    } else {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::FORBIDDEN;
        Some(response)
    }
}

fn json(body: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            tracing::error!("dashboard: cannot serialise an answer: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error".to_owned(),
            )
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

// === impl Sort ===

impl Sort {
    const ALL: [Self; 8] = [
        Self::Path,
        Self::Target,
        Self::User,
        Self::LastActivity,
        Self::Rps,
        Self::ErrorRate,
        Self::Websockets,
        Self::State,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Target => "target",
            Self::User => "user",
            Self::LastActivity => "last_activity",
            Self::Rps => "rps",
            Self::ErrorRate => "error_rate",
            Self::Websockets => "websockets",
            Self::State => "state",
        }
    }
}

// === impl RoutesQuery ===

impl RoutesQuery {
    /// Reads `q`, `sort`, `order`, `page` and `per_page`; unknown names are ignored, bad
    /// values (an empty one but for `q`) are refused with the reason.
    fn parse(query: &str) -> Result<Self, String> {
        let mut parsed = Self {
            q: String::new(),
            sort: Sort::Path,
            descending: false,
            page: 1,
            per_page: PER_PAGE,
        };
        let number = |name: &str, value: &str, max: usize| {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("Invalid '{name}': a whole number from 1 to {max}"))
        };
        for (name, value) in api::query_pairs(query) {
            match name.as_str() {
                "q" if value.chars().count() > MAX_QUERY => {
                    return Err(format!("Invalid 'q': at most {MAX_QUERY} characters"));
                }
                "q" => parsed.q = value.trim().to_owned(),
                "sort" => {
                    parsed.sort = Sort::ALL
                        .into_iter()
                        .find(|s| s.as_str() == value)
                        .ok_or_else(|| {
                            let names: Vec<_> = Sort::ALL.iter().map(|s| s.as_str()).collect();
                            format!("Invalid 'sort': one of {}", names.join(", "))
                        })?;
                }
                "order" => {
                    parsed.descending = match value.as_str() {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err("Invalid 'order': asc or desc".to_owned()),
                    };
                }
                "page" => parsed.page = number("page", &value, 1_000_000)?,
                "per_page" => {
                    parsed.per_page = number("per_page", &value, MAX_PER_PAGE)?;
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests;
