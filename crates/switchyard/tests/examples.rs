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
#[path = "../examples/http2_upstream.rs"]
#[allow(dead_code, unreachable_pub)]
mod http2_upstream;
#[path = "../examples/http_to_https.rs"]
#[allow(dead_code, unreachable_pub)]
mod http_to_https;
#[path = "../examples/https_to_http.rs"]
#[allow(dead_code, unreachable_pub)]
mod https_to_http;
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

/// examples/https_to_http.rs: a TLS client (trusting the example's CA, by
/// the name `localhost`) through the TLS proxy to a plain target.
#[tokio::test]
async fn https_to_http_example() {
    let r = within(https_to_http::start(ANY, ANY)).await.unwrap();
    let (tls, alpn) = tls_connect(r.proxy, &r.ca_pem, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/hello")
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        body.starts_with(b"request successfully proxied to: /hello\n"),
        "{body:?}"
    );
}

/// examples/http_to_https.rs: a plain client, the proxy verifying the
/// HTTPS target against the example's CA.
#[tokio::test]
async fn http_to_https_example() {
    let r = within(http_to_https::start(ANY, ANY)).await.unwrap();
    let (status, _, body) = get(&format!("http://{}/hello", r.proxy)).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"hello over TLS from the target: /hello\n");
}

/// examples/http2_upstream.rs: an HTTP/1.1 client, an h2c target; the
/// target saw HTTP/2 and its trailer comes back.
#[tokio::test]
async fn http2_upstream_example() {
    let r = within(http2_upstream::start(ANY, ANY)).await.unwrap();
    let (status, _, body) = get(&format!("http://{}/hello", r.proxy)).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"HTTP/2.0 /hello\n");
}
