//! The health check and metrics, and what goes beyond CHP: HTTPS targets with
//! `--insecure`, HTTP/2 on the public port.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use backends::*;
use common::{IO_TIMEOUT, Proxy, request};
use tokio_tungstenite::tungstenite::Message;

// ============================================================================================
// Health check and metrics
// ============================================================================================

/// `/_chp_healthz` answers before routing (never reaches the `/` route, any
/// method); with a query string it is a normal proxied request.
#[test]
fn health_check_is_not_proxied() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    for method in ["GET", "POST"] {
        let r = request(p.port, method, "/_chp_healthz", &[], None);
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"OK"}"#));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = get(p.port, "/_chp_healthz?x=1", &[]);
    assert_eq!(r.body, "/_chp_healthz?x=1");
    // The first request the backend saw is the one with the query.
    assert_eq!(b.next().target, "/_chp_healthz?x=1");
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The counters move with proxied traffic: `requests_web`, `requests_ws`,
/// `requests_proxy{status}`, `find_target_for_req` and `last_activity_updating`.
#[test]
fn metrics_count_proxied_requests() {
    let b = Backend::echo_target();
    let (ws_port, _h) = ws_backend(None);
    let mut p = Proxy::start(&["--metrics-ip", "127.0.0.1", "--metrics-port", "0"]);
    let metrics_port = p.metrics_port();
    let scrape = || request(metrics_port, "GET", "/metrics", &[], None).body;
    let m0 = scrape();
    p.add("/", &b.url());
    p.add("/ws", &format!("http://127.0.0.1:{ws_port}"));
    p.add("/dead", DEAD);
    assert_eq!(get(p.port, "/a", &[]).status, 200);
    assert_eq!(get(p.port, "/b", &[]).status, 200);
    assert_eq!(get(p.port, "/dead", &[]).status, 503);
    get(p.port, "/_chp_healthz", &[]);
    let (mut ws, _) = ws_connect(p.port, "/ws");
    ws.send(Message::text("x")).unwrap();
    ws.read().unwrap();
    ws.close(None).unwrap();
    let m1 = scrape();
    let delta = |name: &str| metric(&m1, name) - metric(&m0, name);
    assert_eq!(delta("requests_web"), 3.0, "{m1}");
    assert_eq!(delta("requests_ws"), 1.0, "{m1}");
    assert_eq!(delta(r#"requests_proxy{status="200"}"#), 2.0, "{m1}");
    assert_eq!(delta(r#"requests_proxy{status="503"}"#), 1.0, "{m1}");
    assert_eq!(delta("find_target_for_req_count"), 4.0, "{m1}");
    assert!(delta("last_activity_updating_count") >= 3.0, "{m1}");
}

/// `--insecure` reaches an https target with a self-signed
/// certificate (CHP 5.3.0 ignored the flag and answered 503); without it, 503.
#[test]
fn insecure_reaches_self_signed_https_targets() {
    let target = format!("https://127.0.0.1:{}", https_backend());
    let strict = Proxy::start(&[]);
    strict.add("/", &target);
    assert_eq!(get(strict.port, "/x", &[]).status, 503);
    let p = Proxy::start(&["--insecure"]);
    p.add("/", &target);
    let r = get(p.port, "/x?y=1", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "/x?y=1"));
}

// ============================================================================================
// Beyond CHP
// ============================================================================================

/// Not in CHP (HTTP/1.1 only there): the public port also speaks HTTP/2 (prior
/// knowledge in clear text); the backend still gets HTTP/1.1 with the `:authority` as Host
/// and the usual X-Forwarded-* headers, and the route's last_activity moves.
#[test]
fn http2_on_the_public_port() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/h2", &b.url());
    let before = last_activity(&p, "/h2");
    clock_past(&before);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (version, status, body) = rt.block_on(async {
        tokio::time::timeout(IO_TIMEOUT, async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
                .await
                .unwrap();
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get(format!("http://127.0.0.1:{}/h2/x?y=%20", p.port))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            let (version, status) = (res.version(), res.status());
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (version, status, body)
        })
        .await
        .expect("HTTP/2 request timed out (safety net)")
    });
    assert_eq!((version, status.as_u16()), (http::Version::HTTP_2, 200));
    assert_eq!(body, "/h2/x?y=%20");
    let s = b.next();
    let host = format!("127.0.0.1:{}", p.port);
    assert_eq!(s.header("host"), Some(host.as_str()));
    assert_eq!(s.header("x-forwarded-proto"), Some("http"));
    assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(last_activity(&p, "/h2") > before);
}
