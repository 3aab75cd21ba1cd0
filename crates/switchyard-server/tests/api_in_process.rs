//! The REST API's router driven in-process with `tower::ServiceExt::oneshot`, no sockets:
//! the token, add, get, list and delete, bad JSON, and a bad target answered with the
//! target parser's own reason. `tests/api.rs` drives the same API through the binary.
#![allow(clippy::unwrap_used)] // tests may unwrap

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard_server::in_process::api_router;
use tower::ServiceExt;

const TOKEN: &str = "in-process";

/// One request to a router; the status and the body as text.
async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("authorization", format!("token {token}"));
    }
    let req = req.body(Body::from(body.to_owned())).unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn authed(
    router: &axum::Router,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    call(router, method, path, Some(TOKEN), body).await
}

#[tokio::test]
async fn the_token_is_required() {
    let router = api_router(Some(TOKEN));
    for token in [None, Some("wrong"), Some("in-process-not")] {
        let (status, body) = call(&router, Method::GET, "/api/routes", token, "").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::FORBIDDEN, ""),
            "{token:?}"
        );
    }
    let (status, body) = authed(&router, Method::GET, "/api/routes", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));

    let open = api_router(None);
    let (status, _) = call(&open, Method::GET, "/api/routes", None, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn add_get_list_and_delete() {
    let router = api_router(Some(TOKEN));
    let (status, body) = authed(
        &router,
        Method::POST,
        "/api/routes/user/alice",
        r#"{"target":"http://127.0.0.1:9","user":"alice"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, ""));

    let (status, body) = authed(&router, Method::GET, "/api/routes/user/alice", "").await;
    assert_eq!(status, StatusCode::OK);
    let route: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(route["target"], "http://127.0.0.1:9");
    assert_eq!(route["user"], "alice");
    assert!(route["last_activity"].is_string(), "{route}");

    let (status, body) = authed(&router, Method::GET, "/api/routes", "").await;
    assert_eq!(status, StatusCode::OK);
    let all: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(all["/user/alice"], route);

    let (status, _) = authed(&router, Method::DELETE, "/api/routes/user/alice", "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = authed(&router, Method::GET, "/api/routes/user/alice", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = authed(&router, Method::DELETE, "/api/routes/user/alice", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = authed(&router, Method::GET, "/api/routes", "").await;
    assert_eq!(body, "{}");
}

#[tokio::test]
async fn bad_json_and_missing_target() {
    let router = api_router(Some(TOKEN));
    let (status, body) = authed(&router, Method::POST, "/api/routes/x", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.starts_with("Body not valid JSON: SyntaxError: "),
        "{body}"
    );
    for missing in ["{}", r#"{"target":7}"#, "[]", r#""http://h""#] {
        let (status, body) = authed(&router, Method::POST, "/api/routes/x", missing).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, "Must specify 'target' as string"),
            "{missing}"
        );
    }
    let (_, body) = authed(&router, Method::GET, "/api/routes", "").await;
    assert_eq!(body, "{}", "nothing was added");
}

/// The target parser's reason reaches the answer: the server's own rules, then the
/// engine's.
#[tokio::test]
async fn a_bad_target_is_answered_with_the_parsers_reason() {
    let router = api_router(Some(TOKEN));
    for (target, reason) in [
        (
            "ftp://h",
            "target must be an absolute URL with scheme http, https, http+unix or unix+http",
        ),
        (
            "http://u:p@h",
            "target must not contain credentials (user:password@)",
        ),
        ("http://h:99999", "invalid port"),
        ("http:///x", "no host"),
        ("http://h/a b", "invalid characters in the path or query"),
        (
            "http+unix://tmp%2Fs.sock",
            "the socket path must be absolute (percent-encode it: %2Fpath%2Fto.sock)",
        ),
    ] {
        let body = serde_json::json!({ "target": target }).to_string();
        let (status, answer) = authed(&router, Method::POST, "/api/routes/x", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{target}");
        assert_eq!(answer, format!("Invalid 'target': {reason}"), "{target}");
    }
}

#[tokio::test]
async fn other_paths_and_methods() {
    let router = api_router(Some(TOKEN));
    let (status, body) = call(&router, Method::GET, "/elsewhere", None, "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "Not Found")
    );
    let (status, body) = call(&router, Method::PUT, "/api/routes/x", None, "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "Method not supported")
    );
}
