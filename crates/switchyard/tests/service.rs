//! The engine as a tower `Service` and `Layer`, and inside axum
//! (reply-from's test async-route-handler).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Request as AxumRequest, State};
use axum::routing;
use bytes::Bytes;
use common::*;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use switchyard::{Body, Proxy};
use tower::{Layer, ServiceExt};

/// `Proxy` is a `tower::Service` for any body of bytes; it never fails,
/// errors are answered with their status.
#[tokio::test]
async fn proxy_is_a_tower_service() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let req = Request::post("/svc?x=1")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let res = within(proxy.clone().oneshot(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_bytes(res.into_body()).await, "/svc?x=1");
    assert_eq!(seen.lock().unwrap()[0].body, "payload");

    let (_socket, dead) = refusing_port();
    let proxy = Proxy::to(&format!("http://{dead}")).unwrap();
    let res = within(proxy.oneshot(Request::get("/").body(Full::<Bytes>::default()).unwrap()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
}

/// `ProxyLayer` proxies what its predicate picks and hands the rest to the
/// inner service.
#[tokio::test]
async fn proxy_layer_splits_requests() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"local"))))
    });
    let svc = proxy
        .layer()
        .when(|parts| parts.uri.path().starts_with("/api/"))
        .layer(inner);
    let req = |p: &str| Request::get(p).body(Full::<Bytes>::default()).unwrap();
    let res = within(svc.clone().oneshot(req("/api/x"))).await.unwrap();
    assert_eq!(body_bytes(res.into_body()).await, "/api/x");
    let res = within(svc.oneshot(req("/home"))).await.unwrap();
    assert_eq!(body_bytes(res.into_body()).await, "local");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// reply-from's test async-route-handler: `forward` from an async axum handler,
/// whose return value axum sends as it is (205 and headers relayed); the proxy
/// mounted with `route_service` and `fallback_service` next to routes the app
/// serves itself, on a real socket.
#[tokio::test]
async fn axum_handlers_and_mounted_services() {
    let b = backend(|req: Request<Incoming>| async move {
        let mut r = Response::new(Body::from(format!("upstream {}", req.uri())));
        *r.status_mut() = StatusCode::RESET_CONTENT;
        r.headers_mut()
            .insert("x-my-header", HeaderValue::from_static("hello!"));
        r
    })
    .await;
    let proxy = Proxy::to(&b.url()).unwrap();
    async fn handler(State(proxy): State<Proxy>, req: AxumRequest) -> Response<Body> {
        proxy.forward(req, "/from-handler").await
    }
    let app = Router::new()
        .route("/local", routing::get(|| async { "served locally" }))
        .route("/handler", routing::get(handler))
        .route_service("/mounted/{*rest}", proxy.clone())
        .fallback_service(proxy.clone())
        .with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, _, body) = get(&format!("http://{addr}/local")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"served locally"[..]));
    let (status, headers, body) = get(&format!("http://{addr}/handler?q=1")).await;
    assert_eq!(status, 205);
    assert_eq!(headers["x-my-header"], "hello!");
    assert_eq!(body, "upstream /from-handler?q=1");
    let (_, _, body) = get(&format!("http://{addr}/mounted/a/b")).await;
    assert_eq!(body, "upstream /mounted/a/b");
    let (_, _, body) = get(&format!("http://{addr}/elsewhere")).await;
    assert_eq!(body, "upstream /elsewhere");
}
