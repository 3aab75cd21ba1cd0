//! Every example of `examples/` (the use cases of the http-proxy-3
//! README's user's guide), started on free ports and driven over HTTP.
//!
//! The examples are compiled into this test with `#[path]`, and their
//! `start` functions called directly: the same code as `cargo run
//! --example`, without a nested cargo build or a subprocess to clean up.
#![allow(clippy::unwrap_used)]
// tests may unwrap
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

#[path = "../examples/axum_forward.rs"]
#[allow(dead_code, unreachable_pub)]
mod axum_forward;
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
#[path = "../examples/load_balancer.rs"]
#[allow(dead_code, unreachable_pub)]
mod load_balancer;
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

#[tokio::test]
async fn axum_forward_example() {
    let r = within(axum_forward::start(ANY, ANY)).await.unwrap();
    let (status, _, body) = get(&format!("http://{}/health", r.app)).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok\n"[..]));
    let (status, headers, body) = get(&format!("http://{}/users/42", r.app)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-proxied-by"], "switchyard");
    assert_eq!(
        body,
        "upstream got /v1/users/42 (x-from-app: axum_forward)\n"
    );
    let (_, _, body) = get(&format!("http://{}/search?q=rust", r.app)).await;
    assert_eq!(
        body,
        "upstream got /v1/search?q=rust&limit=10 (x-from-app: -)\n"
    );
    let (_, _, body) = get(&format!("http://{}/api/anything?x=1", r.app)).await;
    assert_eq!(body, "upstream got /api/anything?x=1 (x-from-app: -)\n");
    let (status, _, _) = get(&format!("http://{}/nowhere", r.app)).await;
    assert_eq!(status, 404);
}

/// Three upstreams; the second is killed and restarted while two clients
/// send GETs without pause: no request fails, and the restarted upstream
/// gets traffic again. Every step waits for an event (requests done, hits
/// counted), never for time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_balancer_example() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let mut r = within(load_balancer::start(ANY)).await.unwrap();
    let url = format!("http://{}/", r.server.local_addr());
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (url, done, failed, stop, progress) = (
            url.clone(),
            done.clone(),
            failed.clone(),
            stop.clone(),
            progress.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let req = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
                match within(client.request(req)).await {
                    Ok(res) if res.status() == 200 => {
                        let _ = body_bytes(res.into_body()).await;
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                progress.notify_waiters();
            }
        }));
    }
    let until = |f: Box<dyn Fn() -> bool + Send>| {
        let progress = progress.clone();
        async move {
            loop {
                let next = progress.notified();
                if f() {
                    return;
                }
                within(next).await;
            }
        }
    };
    let d = done.clone();
    until(Box::new(move || d.load(Ordering::SeqCst) >= 30)).await;
    r.upstreams[1].kill().await;
    let d = done.clone();
    let at_kill = d.load(Ordering::SeqCst);
    until(Box::new(move || d.load(Ordering::SeqCst) >= at_kill + 60)).await;
    r.upstreams[1].restart().await.unwrap();
    let hits = r.upstreams[1].hits.clone();
    let before = hits.load(Ordering::SeqCst);
    until(Box::new(move || hits.load(Ordering::SeqCst) > before)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        within(c).await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(
        r.upstreams
            .iter()
            .all(|u| u.hits.load(Ordering::SeqCst) > 0)
    );
    assert!(r.pool.is_up(1));
}
