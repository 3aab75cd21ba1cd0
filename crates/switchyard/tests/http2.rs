//! HTTP/2 on either side (RFC 9113 §8.2.2, §8.3). TLS with
//! ALPN h2 is in `tls.rs`; here, h2c (prior knowledge) on plain TCP.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use switchyard::{Body, Protocol, Proxy, Target};

/// http-proxy-3's test lib/http2-proxy, http/xfwd-http2: an
/// h2c client → `listen` → HTTP/1 upstream. `:authority` becomes `Host`
/// (and X-Forwarded-Host), pseudo-headers never reach the upstream, and a
/// request body gets its length.
#[tokio::test]
async fn h2c_client_to_an_http1_upstream() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let mut send = h2c_conn(server.local_addr()).await;
    let req = Request::post("http://front.test:8080/h2?q=1")
        .body(Body::from("sent over h2"))
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(body_bytes(res.into_body()).await, "/h2?q=1");
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(s.version, http::Version::HTTP_11);
    assert_eq!(s.uri, "/h2?q=1");
    assert_eq!(s.headers["host"], "front.test:8080");
    assert_eq!(s.headers["x-forwarded-host"], "front.test:8080");
    assert_eq!(s.headers["x-forwarded-port"], "8080");
    assert_eq!(s.headers["content-length"], "12");
    assert_eq!(&s.body[..], b"sent over h2");
    assert!(s.headers.keys().all(|k| !k.as_str().starts_with(':')));
}

/// An HTTP/1 client → an h2c upstream
/// chosen with `Target::with_protocol(Protocol::Http2)`; connection-specific
/// fields are not sent to the h2 peer.
#[tokio::test]
async fn http1_client_to_an_h2c_upstream() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target().with_protocol(Protocol::Http2))
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let out = raw_request(
        server.local_addr(),
        b"GET /up2 HTTP/1.1\r\nHost: front\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n\r\n",
        b"",
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(s.version, http::Version::HTTP_2);
    assert_eq!(http::Uri::try_from(&s.uri).unwrap().path(), "/up2");
    assert_eq!(s.headers["host"], "front");
    assert!(!s.headers.contains_key("connection") && !s.headers.contains_key("keep-alive"));
}

/// RFC 9113 §8.3.1: an intermediary forwarding over HTTP/2 builds
/// `:authority` from the original request, and a `Host` that disagrees
/// with `:authority` makes the request malformed for strict servers: the
/// upstream sees the client's `Host` in both, while the connection goes to
/// the target; with `change_origin`, the target's authority in both.
#[tokio::test]
async fn h2_upstream_authority_agrees_with_host() {
    let (b, seen) = recording_backend().await;
    let target = b.target().with_protocol(Protocol::Http2);
    let proxy = Proxy::builder().target(target.clone()).build().unwrap();
    let changed = Proxy::builder()
        .target(target.clone())
        .configure(|o| o.change_origin = true)
        .build()
        .unwrap();
    for (proxy, host) in [
        (&proxy, "front"),
        (&proxy, "other.example:8443"),
        (&changed, "front"),
    ] {
        let req = Request::get("/a").header("host", host).body(()).unwrap();
        let res = within(proxy.web(req)).await;
        assert_eq!(res.status(), 200);
    }
    let seen = seen.lock().unwrap().clone();
    let target_authority = target.host_header().to_str().unwrap().to_owned();
    let expected = ["front", "other.example:8443", target_authority.as_str()];
    assert_eq!(seen.len(), expected.len());
    for (s, want) in seen.iter().zip(expected) {
        assert_eq!(s.version, http::Version::HTTP_2);
        let uri = http::Uri::try_from(&s.uri).unwrap();
        assert_eq!(uri.authority().unwrap().as_str(), want, "{s:?}");
        assert_eq!(uri.scheme_str(), Some("http"), "{s:?}");
        assert_eq!(s.headers["host"].to_str().unwrap(), want, "{s:?}");
        assert_eq!(uri.path(), "/a");
    }
}

/// RFC 9113 §8.2.2 (`TE: trailers` is the one value allowed): gRPC-style
/// response trailers from an h2c upstream reach an h2c client through
/// `listen`, after the data; the client's `te: trailers` reaches the upstream.
#[tokio::test]
async fn response_trailers_over_h2() {
    let b = backend(|req: Request<Incoming>| async move {
        let te = req.headers().get("te").cloned();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert(
            "x-te-seen",
            te.unwrap_or_else(|| HeaderValue::from_static("none")),
        );
        let frames = futures_util::stream::iter([
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"grpc-payload"))),
            Ok(Frame::trailers(trailers)),
        ]);
        let mut r = http::Response::new(Body::new(StreamBody::new(frames)));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        r
    })
    .await;
    let proxy = Proxy::builder()
        .target(b.target().with_protocol(Protocol::Http2))
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let mut send = h2c_conn(server.local_addr()).await;
    let req = Request::post("http://front/pkg.Service/Method")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Body::from("request"))
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    let collected = within(res.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers forwarded");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-te-seen"], "trailers");
    assert_eq!(collected.to_bytes(), "grpc-payload");
}

/// An h2c upstream is multiplexed: concurrent requests share one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_multiplexes_concurrent_requests() {
    let (b, _) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target().with_protocol(Protocol::Http2))
        .build()
        .unwrap();
    // Warm the connection, then go concurrent.
    within(proxy.web(Request::get("/warm").body(()).unwrap())).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let res = proxy
                    .web(Request::get(format!("/{i}")).body(()).unwrap())
                    .await;
                body_bytes(res.into_body()).await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(
            within(t).await.unwrap(),
            format!("http://127.0.0.1:{}/{i}", b.addr.port())
        );
    }
    assert_eq!(b.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A WebSocket upgrade cannot be carried to an HTTP/2-only target: a typed
/// 501, not a broken tunnel.
#[tokio::test]
async fn websocket_to_an_h2_target_is_501() {
    let (up, _) = ws_echo_backend().await;
    let proxy = Proxy::builder()
        .target(
            Target::parse(&format!("ws://{up}"))
                .unwrap()
                .with_protocol(Protocol::Http2),
        )
        .configure(|o| o.ws = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let err = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/",
        server.local_addr()
    )))
    .await
    .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 501),
        other => panic!("{other:?}"),
    }
}

/// reply-from #424 (streams leaked until `maxConcurrentStreams`): an HTTP/2
/// client that resets its stream (drops the request)
/// cancels the upstream request; the connection serves on.
#[tokio::test]
async fn h2_stream_reset_cancels_the_upstream_request() {
    let (addr, mut heads, mut closed) = holding_backend().await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let server = listen(&proxy).await;
    let mut send = h2c_conn(server.local_addr()).await;
    let pending = tokio::spawn(
        send.send_request(
            Request::get("http://front/hold")
                .body(Body::empty())
                .unwrap(),
        ),
    );
    within(heads.recv()).await.unwrap();
    // Dropping the response future resets the stream (RST_STREAM CANCEL).
    pending.abort();
    within(closed.recv()).await.unwrap();
    // The h2 connection itself is still usable.
    within(send.ready()).await.unwrap();
}
