//! Streaming: bodies pass through frame by frame, never collected.
//!
//! This file runs alone in its own test process, so the memory measure of
//! `large_bodies_stream_with_bounded_memory` sees only its own transfer.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use switchyard::{Body, Proxy};

const SIZE: u64 = 256 * 1024 * 1024;

/// Bodies stream through: a 256 MiB upload and a 256 MiB
/// download, generated on the fly, cross `listen` while the process's peak
/// resident memory grows by far less than one body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_with_bounded_memory() {
    let b = backend(|req: Request<Incoming>| async move {
        if req.uri().path() == "/download" {
            http::Response::new(Body::new(Generated::new(SIZE, 64 * 1024)))
        } else {
            let n = count_bytes(req.into_body()).await;
            http::Response::new(Body::from(n.to_string()))
        }
    })
    .await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let server = listen(&proxy).await;
    let before = proc_status_kib("VmRSS");

    let (mut send, _conn) = h1_conn(server.local_addr()).await;
    let req = Request::post("/upload")
        .header("host", "front")
        .body(Body::new(Generated::new(SIZE, 64 * 1024)))
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_bytes(res.into_body()).await, SIZE.to_string());

    within(send.ready()).await.unwrap();
    let req = Request::get("/download")
        .header("host", "front")
        .body(Body::empty())
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(count_bytes(res.into_body()).await, SIZE);

    let peak = proc_status_kib("VmHWM");
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB while streaming 256 MiB each way"
    );
    server.shutdown().await;
}

/// http-proxy-3's test http/server-sent-events: events arrive one by one; the
/// first reaches the client while the upstream has not finished.
#[tokio::test]
async fn server_sent_events_arrive_incrementally() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let b = backend(move |_| {
        let rx = rx.lock().unwrap().take().unwrap();
        async move {
            let events = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            let mut r = http::Response::new(Body::new(StreamBody::new(events)));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
    })
    .await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let server = listen(&proxy).await;
    tx.send(Bytes::from_static(b"data: one\n\n")).unwrap();
    let res = within(
        client().request(
            Request::get(format!("http://{}/events", server.local_addr()))
                .body(Default::default())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let first = within(body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
    // Only now does the upstream send its second event and finish.
    tx.send(Bytes::from_static(b"data: two\n\n")).unwrap();
    drop(tx);
    assert_eq!(body_bytes(body).await, "data: two\n\n");
}
