//! Plain HTTP proxying through `listen` and `web`, against real backends.

mod common;

use common::*;
use http::Request;
use http_body_util::Full;
use switchyard::{Options, Proxy};

/// http-proxy-3 test http/basic-proxy: `createProxyServer({target}).listen()`.
#[tokio::test]
async fn basic_listen_proxies_get() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let server = listen(&proxy).await;
    let (status, _, body) = get(&format!("http://{}/hello?x=1", server.local_addr())).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"/hello?x=1");
    assert_eq!(seen.lock().unwrap()[0].uri, "/hello?x=1");
    server.shutdown().await;
}

/// research/library.md §6 item 6, CVE-2026-29057: a chunked DELETE reaches
/// the upstream chunked, with its body, and never with `Content-Length: 0`.
#[tokio::test]
async fn chunked_delete_is_not_smuggled() {
    let (addr, log) = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let proxy = Proxy::to(&format!("http://{addr}")).unwrap();
    let server = listen(&proxy).await;
    let req = b"DELETE /del HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nGET /smuggled HTTP/1.1\r\n\r\n\r\n0\r\n\r\n";
    let out = raw_request(server.local_addr(), req, b"ok").await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let seen = log.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(!text.contains("content-length: 0"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    // The smuggled line is inside the chunked body, never a request line.
    assert!(!text.contains("\r\n\r\nget /smuggled"), "{text}");
}

/// `web` from inside an app, with per-call options.
#[tokio::test]
async fn web_with_per_call_target() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder().build().unwrap();
    let opts = Options::to(switchyard::Target::parse(&format!("{}/base?t=1", b.url())).unwrap());
    let req = Request::get("/a?x=1")
        .body(Full::<bytes::Bytes>::default())
        .unwrap();
    let res = proxy.web_with(req.map(switchyard::Body::new), &opts).await;
    assert_eq!(res.status(), 200);
    assert_eq!(seen.lock().unwrap()[0].uri, "/base/a?t=1&x=1");
}
