//! The `forward` option: http-proxy-3's copy of each request to a second
//! target, whose answer is ignored.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use switchyard::{Proxy, Target};

/// http-proxy-3's test http/forward-and-target-proxy: with `forward` and
/// `target`, both get one request each and the client gets the target's
/// answer, body included.
#[tokio::test]
async fn forward_and_target_both_get_the_request() {
    let (target, mut at_target) = channel_backend("from target").await;
    let (fwd, mut at_forward) = channel_backend("from forward").await;
    let proxy = Proxy::builder()
        .target(target.target())
        .configure(|o| o.forward = Some(fwd.target()))
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req = Request::post(format!("http://{}/both?q=1", server.local_addr()))
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(body, "from target");
    let t = within(at_target.recv()).await.unwrap();
    let f = within(at_forward.recv()).await.unwrap();
    for s in [&t, &f] {
        assert_eq!((s.method.as_str(), s.uri.as_str()), ("POST", "/both?q=1"));
        assert_eq!(&s.body[..], b"payload");
    }
    // One each.
    assert!(at_target.try_recv().is_err() && at_forward.try_recv().is_err());
}

/// http-proxy-3's test http/forward-proxy: `forward` only: the forward server
/// gets the request and the client gets an empty 200.
#[tokio::test]
async fn forward_only_gives_an_empty_200() {
    let (fwd, mut at_forward) = channel_backend("ignored").await;
    let proxy = Proxy::builder()
        .configure(|o| o.forward = Some(fwd.target()))
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req = Request::put(format!("http://{}/only", server.local_addr()))
        .body(Full::new(Bytes::from_static(b"copy me")))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    let f = within(at_forward.recv()).await.unwrap();
    assert_eq!((f.method.as_str(), f.uri.as_str()), ("PUT", "/only"));
    assert_eq!(&f.body[..], b"copy me");
}

/// http-proxy-3's test lib/http-proxy ("forward + xfwd"): the forward copy
/// carries the X-Forwarded-* headers too.
#[tokio::test]
async fn forward_copy_carries_forwarded_headers() {
    let (fwd, mut at_forward) = channel_backend("").await;
    let proxy = Proxy::builder()
        .configure(|o| {
            o.forward = Some(fwd.target());
            o.xfwd = true;
        })
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    get(&format!("http://{}/x", server.local_addr())).await;
    let f = within(at_forward.recv()).await.unwrap();
    assert_eq!(f.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(f.headers["x-forwarded-proto"], "http");
}

/// http-proxy-3's test lib/http-proxy-passes-web-incoming ("forward error"):
/// a dead forward target does not disturb the real request.
#[tokio::test]
async fn forward_failure_does_not_affect_the_target() {
    let (target, _) = channel_backend("fine").await;
    let (_socket, dead) = refusing_port();
    let proxy = Proxy::builder()
        .target(target.target())
        .configure(|o| o.forward = Some(Target::parse(&format!("http://{dead}")).unwrap()))
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    for _ in 0..2 {
        let req = Request::post(format!("http://{}/", server.local_addr()))
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap();
        let (status, _, body) = send(req).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"fine"[..]));
    }
}

/// `forward` with a target path: the forward target's own
/// path prefix applies to its copy.
#[tokio::test]
async fn forward_target_path_prefixes_its_copy() {
    let (target, mut at_target) = channel_backend("t").await;
    let (fwd, mut at_forward) = channel_backend("f").await;
    let proxy = Proxy::builder()
        .target(target.target())
        .configure(|o| {
            o.forward = Some(Target::parse(&format!("{}/mirror", fwd.url())).unwrap());
        })
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/a").body(()).unwrap())).await;
    assert_eq!(body_bytes(res.into_body()).await, "t");
    assert_eq!(within(at_target.recv()).await.unwrap().uri, "/a");
    assert_eq!(within(at_forward.recv()).await.unwrap().uri, "/mirror/a");
}
