//! Every example of `examples/` (the use cases of the http-proxy-3
//! README's user's guide), started on free ports and driven over HTTP.
//!
//! The examples are compiled into this test with `#[path]`, and their
//! `start` functions called directly: the same code as `cargo run
//! --example`, without a nested cargo build or a subprocess to clean up.
#![allow(clippy::unwrap_used)]
// tests may unwrap (STYLE.md §7)
// Each example brings its own copy of examples/support, exactly as it is
// compiled on its own by `cargo run --example`.
#![allow(clippy::duplicate_mod)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;

#[path = "../examples/basic.rs"]
#[allow(dead_code, unreachable_pub)]
mod basic;
#[path = "../examples/custom_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod custom_server;
#[path = "../examples/error_handling.rs"]
#[allow(dead_code, unreachable_pub)]
mod error_handling;
#[path = "../examples/latency.rs"]
#[allow(dead_code, unreachable_pub)]
mod latency;
#[path = "../examples/modify_request.rs"]
#[allow(dead_code, unreachable_pub)]
mod modify_request;
#[path = "../examples/modify_response.rs"]
#[allow(dead_code, unreachable_pub)]
mod modify_response;
#[path = "../examples/self_handle_response.rs"]
#[allow(dead_code, unreachable_pub)]
mod self_handle_response;
#[path = "../examples/websocket.rs"]
#[allow(dead_code, unreachable_pub)]
mod websocket;

const ANY: &str = "127.0.0.1:0";

#[tokio::test]
async fn basic_example() {
    let r = within(basic::start(ANY, ANY)).await.unwrap();
    let (status, _, body) = get(&format!("http://{}/hello", r.proxy)).await;
    assert_eq!(status, 200);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("request successfully proxied to: /hello\n"),
        "{body}"
    );
    assert!(body.contains(&format!("host: {}", r.proxy)), "{body}");
}

#[tokio::test]
async fn custom_server_example() {
    let r = within(custom_server::start(ANY, ANY)).await.unwrap();
    let (status, _, body) = get(&format!("http://{}/health", r.proxy)).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok\n"[..]));
    let (_, _, body) = get(&format!("http://{}/api/users", r.proxy)).await;
    assert!(body.starts_with(b"request successfully proxied to: /v1/api/users\n"));
    let (_, _, body) = get(&format!("http://{}/other", r.proxy)).await;
    assert!(body.starts_with(b"request successfully proxied to: /other\n"));
}

#[tokio::test]
async fn modify_request_example() {
    let r = within(modify_request::start(ANY, ANY)).await.unwrap();
    let (status, _, body) = get(&format!("http://{}/", r.proxy)).await;
    assert_eq!(status, 200);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("x-special-proxy-header: foobar\n"), "{body}");
}

#[tokio::test]
async fn modify_response_example() {
    let r = within(modify_response::start(ANY, ANY)).await.unwrap();
    let (status, headers, body) = get(&format!("http://{}/", r.proxy)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-modified-by"], "switchyard");
    assert!(body.starts_with(b"REQUEST SUCCESSFULLY PROXIED TO: /\n"));
}

#[tokio::test]
async fn latency_example() {
    let r = within(latency::start(ANY, ANY, Duration::from_millis(100)))
        .await
        .unwrap();
    let req = Request::post(format!("http://{}/late", r.proxy))
        .body(Full::new(Bytes::from_static(b"some body")))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"request successfully proxied to: /late\n"));
    assert!(String::from_utf8_lossy(&body).contains("content-length: 9\n"));
}

#[tokio::test]
async fn self_handle_response_example() {
    let r = within(self_handle_response::start(ANY, ANY)).await.unwrap();
    let (status, _, body) = get(&format!("http://{}/", r.proxy)).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, &b"my response to cli"[..])
    );
}

#[tokio::test]
async fn error_handling_example() {
    let (_socket, dead) = refusing_port();
    let r = within(error_handling::start(ANY, &dead.to_string()))
        .await
        .unwrap();
    let (status, _, body) = get(&format!("http://{}/", r.proxy)).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        "Something went wrong. And we are reporting a custom error message.\n"
    );
}

#[tokio::test]
async fn websocket_example() {
    let r = within(websocket::start(ANY, ANY)).await.unwrap();
    let (mut ws, _) = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/",
        r.proxy
    )))
    .await
    .unwrap();
    let msg = tokio_tungstenite::tungstenite::Message::text("echo me");
    ws.send(msg.clone()).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), msg);
}
