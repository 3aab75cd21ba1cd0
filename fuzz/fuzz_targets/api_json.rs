//! The REST API's real handler (the server's axum router over an in-memory route table)
//! with arbitrary bytes as a POST body and an arbitrary route path, driven in-process.
//! It must never panic or answer 5xx; a route it accepts (201) must then be found at
//! its path (200 with JSON), and the table must still list as JSON.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

async fn call(router: &axum::Router, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .expect("the URI was checked");
    let res = router.clone().oneshot(req).await.expect("the router is infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("an in-memory body").to_bytes();
    (status, bytes.to_vec())
}

fuzz_target!(|input: (&[u8], &str)| {
    let (body, path) = input;
    let uri = format!("/api/routes{path}");
    if uri.parse::<http::Uri>().is_err() {
        return;
    }
    let router = switchyard_server::in_process::api_router(None);
    runtime().block_on(async {
        let (status, answer) = call(&router, Method::POST, &uri, body.to_vec()).await;
        assert!(!status.is_server_error(), "POST {uri}: {status} {answer:?}");
        if status != StatusCode::CREATED {
            return;
        }
        let (status, answer) = call(&router, Method::GET, &uri, Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "GET {uri} after its POST: {answer:?}");
        assert!(serde_json::from_slice::<serde_json::Value>(&answer).is_ok(), "{answer:?}");
        let (status, listed) = call(&router, Method::GET, "/api/routes", Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(serde_json::from_slice::<serde_json::Value>(&listed).is_ok(), "{listed:?}");
    });
});
