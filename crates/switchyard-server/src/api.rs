//! The REST API of CHP: `/api/routes[/<path>]` with GET, POST and DELETE.
//!
//! Status codes and bodies are CHP's, byte for byte: plain-text error bodies without a
//! `Content-Type`, 201/204 with empty bodies, JSON objects for GET. Deliberate differences,
//! none of which JupyterHub can observe:
//! * a malformed `%` escape in the path is `400` and `DELETE /api/routes` is `404` (CHP hangs);
//! * the token is checked before the body is read (CHP parses JSON first), the header must
//!   be exactly `token <t>` (scheme case-insensitive) and is compared in constant time;
//! * targets must be `http`, `https`, `http+unix` or `unix+http` URLs without credentials;
//! * bodies above [`BODY_LIMIT`] get `413`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use switchyard::routing::normalize_key;

use crate::metrics::Metrics;
use crate::path;
use crate::store::{Route, RouteStore, StoreError, Target};
use crate::time;

/// Largest accepted POST body. JupyterHub's route bodies are a few hundred bytes.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// What the API handlers share.
#[derive(Debug)]
pub(crate) struct ApiState {
    pub(crate) store: Arc<dyn RouteStore>,
    pub(crate) auth_token: Option<String>,
    pub(crate) host_routing: bool,
    pub(crate) metrics: Arc<Metrics>,
    /// The dashboard's page and endpoints (`None` with `--no-dashboard`).
    pub(crate) dashboard: Option<Arc<crate::dashboard::Dashboard>>,
}

/// The API as an axum router (one handler: CHP dispatches on the raw path itself, and so
/// must we, to resolve dot segments and decode exactly as it does), after the dashboard's
/// exact paths when it is on.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    let dashboard = state
        .dashboard
        .clone()
        .map(|d| crate::dashboard::router(d, state.auth_token.as_deref()));
    let api = Router::new().fallback(handle).with_state(state);
    match dashboard {
        Some(dashboard) => dashboard.merge(api),
        None => api,
    }
}

async fn handle(State(state): State<Arc<ApiState>>, req: Request) -> Response<Body> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_owned();
    let response = dispatch(&state, req).await;
    let status = response.status();
    state.metrics.requests_api.inc(status.as_u16());
    // CHP's access line: `<code> <METHOD> <path> <message>` (the message is empty here).
    let code = status.as_u16();
    if status.is_server_error() {
        tracing::error!("{code} {method} {raw_path} ");
    } else if status.is_client_error() {
        tracing::warn!("{code} {method} {raw_path} ");
    } else {
        tracing::info!("{code} {method} {raw_path} ");
    }
    response
}

async fn dispatch(state: &ApiState, req: Request) -> Response<Body> {
    let normalized = path::normalize(req.uri().path()).into_owned();
    let captured = if normalized == "/api/routes" {
        None
    } else if let Some(rest) = normalized
        .strip_prefix("/api/routes")
        .filter(|r| r.starts_with('/'))
    {
        Some(rest.to_owned())
    } else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let method = req.method().clone();
    if method != Method::GET && method != Method::POST && method != Method::DELETE {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method not supported");
        // RFC 9110 §15.5.6: a 405 names the methods the resource supports.
        response.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, POST, DELETE"),
        );
        return response;
    }
    let route_path = match captured.as_deref().map(path::decode).transpose() {
        Ok(p) => p.map(|p| p.into_owned()),
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid route path: malformed percent-encoding",
            );
        }
    };
    if !authorized(state.auth_token.as_deref(), req.headers()) {
        tracing::debug!(
            "Rejecting API request from: {}",
            if req.headers().contains_key(header::AUTHORIZATION) {
                "<authorization redacted>"
            } else {
                "no authorization"
            }
        );
        return empty(StatusCode::FORBIDDEN);
    }
    match method {
        Method::GET => match route_path.as_deref() {
            None | Some("/") => get_all(state, req.uri().query()).await,
            Some(p) => get_one(state, p).await,
        },
        Method::POST => post(state, route_path.as_deref().unwrap_or("/"), req.into_body()).await,
        _ => delete(state, route_path.as_deref()).await,
    }
}

/// `Authorization: token <t>`, nothing else, compared in constant time.
pub(crate) fn authorized(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(presented) = parse_token(value.as_bytes()) else {
        return false;
    };
    constant_time_eq(presented, expected.as_bytes())
}

/// `token` (any case), one or more spaces or tabs, then the token with no whitespace.
fn parse_token(value: &[u8]) -> Option<&[u8]> {
    let trimmed = value.trim_ascii();
    let (scheme, rest) = trimmed.split_at_checked(5)?;
    if !scheme.eq_ignore_ascii_case(b"token") || !matches!(rest.first(), Some(b' ' | b'\t')) {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty() && !token.iter().any(u8::is_ascii_whitespace)).then_some(token)
}

/// Time depends on the expected token's length only, never on where the inputs differ.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut equal = presented.len().ct_eq(&expected.len());
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!*e);
        equal &= p.ct_eq(e);
    }
    equal.into()
}

async fn get_all(state: &ApiState, query: Option<&str>) -> Response<Body> {
    let mut since = None;
    for (name, value) in query_pairs(query.unwrap_or_default()) {
        if (name == "inactive_since" || name == "inactiveSince") && !value.is_empty() {
            match time::parse_date_ms(&value) {
                Some(ms) => since = Some(ms),
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid datestamp '{value}' must be ISO8601."),
                    );
                }
            }
        }
    }
    let routes = match state.store.get_all().await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let selected = routes
        .iter()
        .filter(|r| since.is_none_or(|s| r.last_activity_ms() < s));
    let body = routes_json(selected);
    state.metrics.api_route_get.inc();
    json(body)
}

fn routes_json<'a>(routes: impl Iterator<Item = &'a Arc<Route>> + Clone) -> Vec<u8> {
    let size = routes.clone().map(|r| r.member_len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(size);
    out.push(b'{');
    for (i, route) in routes.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        route.write_member(&mut out);
    }
    out.push(b'}');
    out
}

async fn get_one(state: &ApiState, route_path: &str) -> Response<Body> {
    let key = normalize_key(route_path);
    match state.store.get(&key).await {
        Ok(Some(route)) => json(route.json()),
        Ok(None) => empty(StatusCode::NOT_FOUND),
        Err(e) => store_error(&e),
    }
}

async fn post(state: &ApiState, route_path: &str, body: Body) -> Response<Body> {
    let bytes: Bytes = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "Request body could not be read"),
    };
    let parsed: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(
                "Bad POST data: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
            return text(
                StatusCode::BAD_REQUEST,
                format!("Body not valid JSON: SyntaxError: {e}"),
            );
        }
    };
    let mut data = match parsed {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let Some(Value::String(target)) = data.get("target") else {
        return text(StatusCode::BAD_REQUEST, "Must specify 'target' as string");
    };
    let target = match Target::parse(target) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid 'target': {e}")),
    };
    let key = normalize_key(route_path).into_owned();
    if state.host_routing
        && key != "/"
        && let Some(host) = key.split('/').nth(1)
    {
        data.insert("host".to_owned(), Value::String(host.to_owned()));
    }
    tracing::info!("Adding route {key} -> {target}");
    match state.store.add(&key, target.clone(), data).await {
        Ok(()) => {
            tracing::info!("Route added {key} -> {target}");
            state.metrics.api_route_add.inc();
            empty(StatusCode::CREATED)
        }
        Err(StoreError::TooDeep) => {
            text(StatusCode::BAD_REQUEST, "Route path has too many segments")
        }
        Err(e) => store_error(&e),
    }
}

async fn delete(state: &ApiState, route_path: Option<&str>) -> Response<Body> {
    state.metrics.api_route_delete.inc();
    let Some(route_path) = route_path else {
        return empty(StatusCode::NOT_FOUND);
    };
    let key = normalize_key(route_path);
    match state.store.delete(&key).await {
        Ok(true) => {
            tracing::info!("Removing route {key}");
            empty(StatusCode::NO_CONTENT)
        }
        Ok(false) => empty(StatusCode::NOT_FOUND),
        Err(e) => store_error(&e),
    }
}

/// 503 (JupyterHub retries 5xx) with a plain-text reason that says whether the change was
/// made: not at all, or perhaps (the Redis store's writes explain when each is said).
fn store_error(e: &StoreError) -> Response<Body> {
    tracing::error!("route store error: {e}");
    let reason = match e {
        StoreError::Unconfirmed(_) => {
            "Route store unavailable (Redis did not confirm the change in time); the change \
             may or may not have been made. Repeating the request is safe: POST and DELETE are \
             idempotent (a repeated DELETE answers 404 if the first one was made)"
        }
        _ => "Route store unavailable (Redis cannot be reached); nothing was changed, retry later",
    };
    text(StatusCode::SERVICE_UNAVAILABLE, reason)
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space), undecodable ones kept raw.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_encoding::percent_decode_str(&s)
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

fn json(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in value {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        authorized(Some("secret"), &headers)
    }

    /// The `Authorization` parsing matrix: CHP's unanchored `/token\s+(\S+)/` accepted
    /// `xtoken <t>`; only `token <t>` is accepted here.
    #[test]
    fn token_parsing_matrix() {
        assert!(auth(&["token secret"]));
        assert!(auth(&["token\tsecret"]));
        assert!(auth(&["TOKEN  secret "]));
        assert!(!auth(&[]));
        assert!(!auth(&["Bearer secret"]));
        assert!(!auth(&["xtoken secret"]));
        assert!(!auth(&["notatoken secret"]));
        assert!(!auth(&["token secret extra"]));
        assert!(!auth(&["token secre"]));
        assert!(!auth(&["token secrets"]));
        assert!(!auth(&["token "]));
        assert!(!auth(&["tokensecret"]));
        assert!(!auth(&["token secret", "token secret"]));
        assert!(authorized(None, &HeaderMap::new()));
    }

    #[test]
    fn query_pairs_decode_form_encoding() {
        let pairs: Vec<_> =
            query_pairs("inactive_since=2999-01-01T00%3A00%3A00%2B05%3A00&x&a=b+c").collect();
        assert_eq!(pairs[0].1, "2999-01-01T00:00:00+05:00");
        assert_eq!(pairs[1], ("x".to_owned(), String::new()));
        assert_eq!(pairs[2].1, "b c");
    }
}
