//! The dashboard's router in-process: the page and its policy, the token on every JSON
//! endpoint, the answers' shapes, the routes' search, sort and pages, and bad queries.

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use tower::ServiceExt;

use super::*;
use crate::api::ApiState;
use crate::store::Target;
use crate::store::memory::MemoryStore;

const TOKEN: &str = "dash";

fn setup() -> (axum::Router, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(Metrics::new());
    let dashboard = Dashboard {
        started: Instant::now(),
        started_ms: time::now_ms(),
        listeners: vec![ListenerInfo {
            name: "public",
            address: "http://127.0.0.1:1".to_owned(),
            tls: false,
        }],
        store_kind: "memory",
        store: store.clone(),
        metrics: metrics.clone(),
        history: Arc::new(History::default()),
        access_log: false,
    };
    let router = api::router(Arc::new(ApiState {
        store: store.clone(),
        auth_token: Some(TOKEN.to_owned()),
        host_routing: false,
        metrics,
        dashboard: Some(Arc::new(dashboard)),
    }));
    (router, store)
}

async fn call(
    router: &axum::Router,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::builder().method(Method::GET).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("token {t}"));
    }
    let res = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

async fn add(store: &MemoryStore, key: &str, user: &str) {
    let mut data = Map::new();
    data.insert("user".to_owned(), Value::from(user));
    data.insert("server_name".to_owned(), Value::from(""));
    store
        .add(key, Target::parse("http://127.0.0.1:9").unwrap(), data)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_page_needs_no_token_and_carries_its_policy() {
    let (router, _) = setup();
    let (status, headers, body) = call(&router, "/dashboard", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-security-policy"], CSP);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(body.contains("/dashboard/app.js"));
    assert!(
        !body.contains("<script>") && !body.contains("style="),
        "nothing inline"
    );
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let (status, headers, _) = call(&router, path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
    }
    assert!(
        PAGE.len() + SCRIPT.len() + STYLE.len() < 100 * 1024,
        "assets under 100 KB"
    );
}

#[tokio::test]
async fn the_json_needs_the_token() {
    let (router, _) = setup();
    for path in [
        "/api/dashboard/summary",
        "/api/dashboard/traffic",
        "/api/dashboard/routes",
    ] {
        for token in [None, Some("wrong")] {
            let (status, _, body) = call(&router, path, token).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::FORBIDDEN, ""),
                "{path}"
            );
        }
        let (status, headers, body) = call(&router, path, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], "application/json");
        serde_json::from_str::<Value>(&body).unwrap();
    }
    // The CHP API is still behind.
    let (status, _, body) = call(&router, "/api/routes", Some(TOKEN)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
    let (status, _, _) = call(&router, "/api/dashboard/nope", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Without `CONFIGPROXY_AUTH_TOKEN` the API is open, the dashboard's JSON too.
#[tokio::test]
async fn an_open_api_needs_no_token() {
    let (_, store) = setup();
    let dashboard = Dashboard {
        started: Instant::now(),
        started_ms: 0,
        listeners: Vec::new(),
        store_kind: "memory",
        store: store.clone(),
        metrics: Arc::new(Metrics::new()),
        history: Arc::new(History::default()),
        access_log: false,
    };
    let open = router(Arc::new(dashboard), None);
    let (status, _, _) = call(&open, "/api/dashboard/summary", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn summary_and_traffic_shapes() {
    let (router, store) = setup();
    add(&store, "/user/a", "a").await;
    let (_, _, body) = call(&router, "/api/dashboard/summary", Some(TOKEN)).await;
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["routes"], 1);
    assert_eq!(s["store"]["kind"], "memory");
    assert_eq!(s["store"]["connected"], Value::Null);
    assert_eq!(s["store"]["replicas"], Value::Null);
    assert_eq!(s["listeners"][0]["name"], "public");
    assert_eq!(s["access_log"]["enabled"], false);
    let (_, _, body) = call(&router, "/api/dashboard/traffic", Some(TOKEN)).await;
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (t["interval_seconds"].as_u64(), t["window_seconds"].as_u64()),
        (Some(2), Some(900))
    );
    assert_eq!(t["samples"], serde_json::json!([]));
}

#[tokio::test]
async fn routes_are_searched_sorted_and_paged() {
    let (router, store) = setup();
    for i in 0..120 {
        add(&store, &format!("/user/u{i:03}"), &format!("u{i:03}")).await;
    }
    let refused = store.get("/user/u007").await.unwrap().unwrap();
    refused.stats().record(
        time::now_ms(),
        true,
        Some(crate::route_stats::TargetState::Refusing),
    );
    let get = |q: &'static str| {
        let router = router.clone();
        async move {
            let (status, _, body) =
                call(&router, &format!("/api/dashboard/routes{q}"), Some(TOKEN)).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let first = get("").await;
    assert_eq!(
        (first["total"].as_u64(), first["pages"].as_u64()),
        (Some(120), Some(3))
    );
    assert_eq!(first["routes"].as_array().unwrap().len(), 50);
    assert_eq!(first["routes"][0]["path"], "/user/u000");
    assert_eq!(first["routes"][0]["user"], "u000");
    assert_eq!(first["routes"][0]["state"], "unknown");
    assert_eq!(first["routes"][0]["error_rate"], Value::Null);
    let last = get("?page=3").await;
    assert_eq!(last["routes"].as_array().unwrap().len(), 20);
    let found = get("?q=U11").await;
    assert_eq!(found["total"], 10, "u110..u119, case-insensitive");
    let worst = get("?sort=error_rate&order=desc&per_page=1").await;
    assert_eq!(worst["routes"][0]["path"], "/user/u007");
    assert_eq!(worst["routes"][0]["state"], "refusing");
    assert_eq!(worst["routes"][0]["error_rate"], 1.0);
    let by_user = get("?sort=user&order=desc&per_page=1").await;
    assert_eq!(by_user["routes"][0]["user"], "u119");
    let beyond = get("?page=9").await;
    assert_eq!(beyond["routes"], serde_json::json!([]));
}

#[tokio::test]
async fn bad_queries_get_a_reason() {
    let (router, _) = setup();
    for (q, reason) in [
        ("?sort=size", "Invalid 'sort'"),
        ("?sort=", "Invalid 'sort'"),
        ("?order=", "Invalid 'order'"),
        ("?per_page=", "Invalid 'per_page'"),
        ("?order=up", "Invalid 'order'"),
        ("?page=0", "Invalid 'page'"),
        ("?page=x", "Invalid 'page'"),
        ("?per_page=501", "Invalid 'per_page'"),
    ] {
        let (status, _, body) =
            call(&router, &format!("/api/dashboard/routes{q}"), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert!(body.starts_with(reason), "{q}: {body}");
    }
    let long = format!("/api/dashboard/routes?q={}", "x".repeat(201));
    let (status, _, _) = call(&router, &long, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
