//! The metrics beyond CHP's nine, through the real binary: after known traffic, each new
//! series has the values that traffic implies, and `promtool check metrics` finds nothing
//! to say about them.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::time::{Duration, Instant};

use backends::*;
use common::{IO_TIMEOUT, Proxy};
use tokio_tungstenite::tungstenite::Message;

/// A proxy with a metrics server on loopback, and its port.
fn proxy_with_metrics(extra: &[&str]) -> (Proxy, u16) {
    let mut args = vec!["--metrics-port", "0", "--metrics-ip", "127.0.0.1"];
    args.extend_from_slice(extra);
    let mut p = Proxy::start(&args);
    let port = p.metrics_port();
    (p, port)
}

fn scrape(port: u16) -> String {
    let r = common::request(port, "GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    r.body
}

/// The value of the sample `series` (name and labels, exactly as rendered).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

/// Scrapes until `series` reaches `want` (a request is recorded when its response has
/// ended, a moment after the client read its last byte), then returns the scrape.
fn scrape_once(port: u16, series: &str, want: f64) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let m = scrape(port);
        if value(&m, series) == Some(want) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {:?}, not {want}, in\n{m}",
            value(&m, series)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` HTTP/2 GETs on one connection, with prior knowledge.
fn h2_gets(port: u16, path: &str, n: usize) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let url = format!("http://127.0.0.1:{port}{path}");
    common::block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..n {
            let req = http::Request::get(&url)
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            assert_eq!(res.status(), 200);
            res.into_body().collect().await.unwrap();
        }
    });
}

/// An HTTP/2 connection (prior knowledge) that has made one GET and stays open until
/// the returned sender is dropped.
fn h2_held(port: u16, path: &str) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let url = format!("http://127.0.0.1:{port}{path}");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        common::block_on(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            let conn = tokio::spawn(conn);
            let req = http::Request::get(&url)
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            res.into_body().collect().await.unwrap();
            ready_tx.send(()).unwrap();
            // Until the test drops its sender.
            tokio::task::spawn_blocking(move || while stop_rx.recv().is_ok() {})
                .await
                .unwrap();
            drop(send);
            conn.abort();
        });
    });
    ready_rx.recv().expect("the HTTP/2 GET");
    (stop_tx, thread)
}

const CONNS: &str = "switchyard_client_connections";

/// The `switchyard_client_connections` series of `protocol`.
fn conns(protocol: &str) -> String {
    format!("{CONNS}{{protocol=\"{protocol}\"}}")
}

const HEAD: &str = "switchyard_request_head_duration_seconds";
const END: &str = "switchyard_request_duration_seconds";

/// Known traffic of each protocol and outcome, then every count it implies: the
/// histograms by protocol and status class (count, `+Inf` bucket, a plausible sum), the
/// bytes each way, the refused upstream; and promtool is content.
#[test]
fn request_histograms_bytes_and_errors_after_known_traffic() {
    let b = Backend::echo_target();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap().port();
    drop(closed);
    let (ws_port, _handshakes) = ws_backend(None);
    let (p, metrics) = proxy_with_metrics(&[]);
    p.add("/m", &b.url());
    p.add("/down", &format!("http://127.0.0.1:{down}"));
    p.add("/ws", &format!("http://127.0.0.1:{ws_port}"));

    for i in 0..5 {
        assert_eq!(get(p.port, &format!("/m/{i}"), &[]).status, 200);
    }
    let mut c = common::Client::connect(p.port);
    c.send("POST", "/m/post", &[], "0123456789");
    assert_eq!(c.response().status, 200);
    h2_gets(p.port, "/m/h2", 2);
    assert_eq!(get(p.port, "/down/x", &[]).status, 503);
    // No route: answered before the engine, so in none of the new series.
    assert_eq!(get(p.port, "/missing", &[]).status, 404);
    let (mut ws, res) = ws_connect(p.port, "/ws/k");
    assert_eq!(res.status(), 101);
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop(ws);

    let labels =
        |proto: &str, class: &str| format!("{{protocol=\"{proto}\",status_class=\"{class}\"}}");
    let h1 = labels("http1.1", "2xx");
    scrape_once(metrics, &format!("{END}_count{h1}"), 6.0);
    scrape_once(
        metrics,
        &format!("{END}_count{}", labels("websocket", "1xx")),
        1.0,
    );
    let m = scrape_once(
        metrics,
        &format!("{END}_count{}", labels("http2", "2xx")),
        2.0,
    );
    for (set, n) in [
        (h1.clone(), 6.0),
        (labels("http2", "2xx"), 2.0),
        (labels("http1.1", "5xx"), 1.0),
        (labels("websocket", "1xx"), 1.0),
    ] {
        for family in [HEAD, END] {
            assert_eq!(
                value(&m, &format!("{family}_count{set}")),
                Some(n),
                "{family}{set}\n{m}"
            );
            let inf = format!("{family}_bucket{}", set.replace('}', ",le=\"+Inf\"}"));
            assert_eq!(value(&m, &inf), Some(n), "{inf}\n{m}");
            let sum = value(&m, &format!("{family}_sum{set}")).unwrap();
            assert!(
                sum > 0.0 && sum < n * IO_TIMEOUT.as_secs_f64(),
                "{family}{set} sum {sum}"
            );
        }
    }
    // Exactly those: no 404, nothing else.
    let counted: f64 = m
        .lines()
        .filter(|l| l.starts_with(&format!("{END}_count{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(counted, 10.0, "{m}");
    // Time to the head never exceeds the time to the end, bucket by bucket.
    let head_sum = value(&m, &format!("{HEAD}_sum{h1}")).unwrap();
    let end_sum = value(&m, &format!("{END}_sum{h1}")).unwrap();
    assert!(head_sum <= end_sum, "{head_sum} > {end_sum}");

    // The POST's 10 bytes; the WebSocket's masked frame (2 + 4 + 5) and its close.
    assert_eq!(
        value(&m, "switchyard_received_bytes_total{protocol=\"http1.1\"}"),
        Some(10.0)
    );
    assert_eq!(
        value(&m, "switchyard_received_bytes_total{protocol=\"http2\"}"),
        Some(0.0)
    );
    assert!(
        value(
            &m,
            "switchyard_received_bytes_total{protocol=\"websocket\"}"
        )
        .unwrap()
            >= 11.0
    );
    assert!(value(&m, "switchyard_sent_bytes_total{protocol=\"websocket\"}").unwrap() >= 7.0);
    // The echo target answers each path: "/m/0" … "/m/4" and "/m/post", then the 503's
    // page (the error page is the server's, not proxied bytes).
    assert_eq!(
        value(&m, "switchyard_sent_bytes_total{protocol=\"http1.1\"}"),
        Some(5.0 * 4.0 + 7.0)
    );
    assert_eq!(
        value(&m, "switchyard_sent_bytes_total{protocol=\"http2\"}"),
        Some(2.0 * 5.0)
    );
    assert_eq!(
        value(&m, "switchyard_upstream_errors_total{kind=\"refused\"}"),
        Some(1.0)
    );
    for kind in ["connect", "timeout", "reset", "tls", "protocol"] {
        let series = format!("switchyard_upstream_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(value(&m, &series), Some(0.0), "{series}");
    }
    // CHP's counters are still counted as before.
    assert_eq!(value(&m, "requests_web"), Some(10.0));
    assert_eq!(value(&m, "requests_ws"), Some(1.0));

    let complaints = common::promtool_complaints(&m);
    assert!(complaints.is_empty(), "promtool: {complaints:?}\n{m}");
}

/// Before any traffic the histogram families are declared, with no sample yet, and
/// promtool accepts that.
#[test]
fn promtool_is_content_before_any_traffic() {
    let (_p, metrics) = proxy_with_metrics(&[]);
    let m = scrape(metrics);
    assert!(m.contains(&format!("# TYPE {END} histogram")), "{m}");
    assert!(m.contains(&format!("# TYPE {HEAD} histogram")), "{m}");
    let complaints = common::promtool_complaints(&m);
    assert!(complaints.is_empty(), "promtool: {complaints:?}\n{m}");
}

/// The gauges follow what is open: routes in the table, client connections on the
/// public port (a WebSocket's among them), WebSocket tunnels, idle upstream connections;
/// back to zero when the clients leave.
#[test]
fn gauges_follow_routes_connections_and_tunnels() {
    let b = Backend::echo_target();
    let (ws_port, _handshakes) = ws_backend(None);
    // Idle connections stay open for as long as the test needs them. One serving thread:
    // each thread keeps its own idle target connections, and the two clients below could
    // land on two of them.
    let (p, metrics) =
        proxy_with_metrics(&["--keep-alive-timeout", "600000", "--worker-threads", "1"]);
    let m = scrape(metrics);
    assert_eq!(value(&m, "switchyard_routes"), Some(0.0), "{m}");
    for protocol in ["http1.1", "http2", "websocket", "pending"] {
        assert_eq!(value(&m, &conns(protocol)), Some(0.0), "{m}");
    }
    assert_eq!(value(&m, "switchyard_websocket_tunnels"), Some(0.0), "{m}");
    assert_eq!(
        value(&m, "switchyard_upstream_idle_connections"),
        Some(0.0),
        "{m}"
    );
    p.add("/a", &b.url());
    p.add("/b", &b.url());
    p.add("/ws", &format!("http://127.0.0.1:{ws_port}"));
    assert_eq!(value(&scrape(metrics), "switchyard_routes"), Some(3.0));

    // Two keep-alive connections, each idle after one exchange.
    let mut clients: Vec<common::Client> = (0..2)
        .map(|_| {
            let mut c = common::Client::connect(p.port);
            c.send("GET", "/a/x", &[], "");
            assert_eq!(c.response().status, 200);
            c
        })
        .collect();
    scrape_once(metrics, &conns("http1.1"), 2.0);
    // A connection that has sent nothing yet.
    let silent = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    scrape_once(metrics, &conns("pending"), 1.0);
    let (h2, h2_thread) = h2_held(p.port, "/a/h2");
    scrape_once(metrics, &conns("http2"), 1.0);
    // One after the other, the two requests used one upstream connection, now idle.
    scrape_once(metrics, "switchyard_upstream_idle_connections", 1.0);
    let (mut ws, res) = ws_connect(p.port, "/ws/k");
    assert_eq!(res.status(), 101);
    scrape_once(metrics, "switchyard_websocket_tunnels", 1.0);
    // The upgraded connection has left HTTP/1.1 for its tunnel.
    let m = scrape_once(metrics, &conns("websocket"), 1.0);
    assert_eq!(value(&m, &conns("http1.1")), Some(2.0), "{m}");
    assert_eq!(value(&m, &conns("http2")), Some(1.0), "{m}");
    assert_eq!(value(&m, &conns("pending")), Some(1.0), "{m}");

    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop(ws);
    scrape_once(metrics, "switchyard_websocket_tunnels", 0.0);
    scrape_once(metrics, &conns("websocket"), 0.0);
    clients.clear();
    drop(silent);
    drop(h2);
    h2_thread.join().unwrap();
    // Each count only goes down now: wait for each in turn.
    for protocol in ["http1.1", "http2", "pending"] {
        scrape_once(metrics, &conns(protocol), 0.0);
    }

    p.api("DELETE", "/api/routes/b", None);
    assert_eq!(value(&scrape(metrics), "switchyard_routes"), Some(2.0));
}

/// Upstream failures by kind: a refused connection, a target that reads the request and
/// closes without a word (reset), one that never answers (timeout); and the failures
/// the client causes are not the upstream's.
#[test]
fn upstream_errors_by_kind() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = closed.local_addr().unwrap().port();
    drop(closed);
    let closer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reset = closer.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in closer.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream);
            read_request(&mut reader);
        }
    });
    let (hanging, _requests) = hanging_backend();
    let (p, metrics) = proxy_with_metrics(&["--proxy-timeout", "300"]);
    p.add("/refused", &format!("http://127.0.0.1:{refused}"));
    p.add("/reset", &format!("http://127.0.0.1:{reset}"));
    p.add("/hang", &format!("http://127.0.0.1:{hanging}"));

    assert_eq!(get(p.port, "/refused/x", &[]).status, 503);
    assert_eq!(get(p.port, "/reset/x", &[]).status, 503);
    assert_eq!(get(p.port, "/hang/x", &[]).status, 503);
    let kind = |k: &str| format!("switchyard_upstream_errors_total{{kind=\"{k}\"}}");
    scrape_once(metrics, &kind("timeout"), 1.0);
    let m = scrape_once(
        metrics,
        &format!("{END}_count{{protocol=\"http1.1\",status_class=\"5xx\"}}"),
        3.0,
    );
    assert_eq!(value(&m, &kind("refused")), Some(1.0), "{m}");
    assert_eq!(value(&m, &kind("reset")), Some(1.0), "{m}");
    for k in ["connect", "tls", "protocol"] {
        assert_eq!(value(&m, &kind(k)), Some(0.0), "{k}\n{m}");
    }
    // The timed-out request is timed to its timeout at least.
    let sum = value(
        &m,
        &format!("{END}_sum{{protocol=\"http1.1\",status_class=\"5xx\"}}"),
    )
    .unwrap();
    assert!(sum >= 0.3, "{sum}");
}
