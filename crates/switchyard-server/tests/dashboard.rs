//! The dashboard through the real binary: the page and its policy without a token, the
//! JSON endpoints behind it, what they say after real traffic to real peers (a target that
//! answers, one that refuses, a WebSocket), the traffic sampler, the certificate and the
//! access log, a Redis store going away, and `--no-dashboard`.
//! `src/dashboard/tests.rs` drives the same router in-process; `tests/dashboard_browser.rs`
//! drives the page in Chromium.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;
mod redis_peers;

use std::time::Instant;

use backends::*;
use common::{IO_TIMEOUT, Proxy, RefusingPort, request};
use serde_json::Value;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn json(p: &Proxy, path: &str) -> Value {
    let r = p.api("GET", path, None);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.body).unwrap()
}

/// Asks `path` until `ok` holds for its answer (bounded by [`IO_TIMEOUT`]).
fn until(p: &Proxy, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let v = json(p, path);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v:#}");
        std::thread::yield_now();
    }
}

fn route<'a>(page: &'a Value, path: &str) -> &'a Value {
    page["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in {page:#}"))
}

#[test]
fn page_and_auth() {
    let p = Proxy::start(&[]);
    let page = request(p.api_port, "GET", "/dashboard", &[], None);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    assert!(
        page.body
            .contains(r#"<script src="/dashboard/app.js" defer></script>"#)
    );
    for asset in ["/dashboard/app.js", "/dashboard/app.css"] {
        let r = request(p.api_port, "GET", asset, &[], None);
        assert_eq!(r.status, 200, "{asset}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    for path in [
        "/api/dashboard/summary",
        "/api/dashboard/traffic",
        "/api/dashboard/routes",
    ] {
        let r = request(p.api_port, "GET", path, &[], None);
        assert_eq!((r.status, r.body.as_str()), (403, ""), "{path}");
        let r = request(
            p.api_port,
            "GET",
            path,
            &[("Authorization", "token wrong")],
            None,
        );
        assert_eq!(r.status, 403, "{path}");
        json(&p, path);
    }
    let r = p.api("GET", "/api/dashboard/routes?sort=nope", None);
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("Invalid 'sort'"), "{}", r.body);
    // No write action: another method is refused.
    let r = p.api("POST", "/api/dashboard/routes", Some("{}"));
    assert_eq!(r.status, 405);
}

#[test]
fn no_dashboard_is_404() {
    let p = Proxy::start(&["--no-dashboard"]);
    for path in [
        "/dashboard",
        "/dashboard/app.js",
        "/api/dashboard/summary",
        "/api/dashboard/routes",
    ] {
        let r = p.api("GET", path, None);
        assert_eq!((r.status, r.body.as_str()), (404, "Not Found"), "{path}");
    }
    // The API itself is unchanged.
    assert_eq!(p.routes(), serde_json::json!({}));
}

#[test]
fn summary_lists_the_server() {
    let p = Proxy::start(&[]);
    let s = json(&p, "/api/dashboard/summary");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["store"]["kind"], "memory");
    assert_eq!(s["store"]["ready"], true);
    assert_eq!(s["refresh_seconds"], 2);
    let listeners = s["listeners"].as_array().unwrap();
    assert_eq!(listeners[0]["name"], "public");
    assert_eq!(
        listeners[0]["address"],
        format!("http://127.0.0.1:{}", p.port)
    );
    assert_eq!(
        listeners[1]["address"],
        format!("http://127.0.0.1:{}", p.api_port)
    );
    assert_eq!(s["certificates"], serde_json::json!([]));
    assert_eq!(s["access_log"]["dropped"], 0);
}

/// With TLS on the public port and an access log: the listener says so, and the
/// certificate's expiry is listed.
#[test]
fn summary_lists_the_certificate_and_the_access_log() {
    let dir = common::temp_dir("dashboard-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_file, key_file, log) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("access.log"),
    );
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let p = Proxy::start(&[
        "--ssl-cert",
        cert_file.to_str().unwrap(),
        "--ssl-key",
        key_file.to_str().unwrap(),
        "--access-log",
        log.to_str().unwrap(),
    ]);
    let s = json(&p, "/api/dashboard/summary");
    assert_eq!(s["listeners"][0]["tls"], true);
    assert_eq!(
        s["listeners"][0]["address"],
        format!("https://127.0.0.1:{}", p.port)
    );
    let certs = s["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{s:#}");
    assert_eq!(certs[0]["listener"], "public");
    // rcgen's default validity ends in 4096.
    assert!(certs[0]["not_after"].as_str().unwrap().starts_with("4096-"));
    assert!(certs[0]["expires_in_seconds"].as_i64().unwrap() > 0);
    assert_eq!(s["access_log"]["enabled"], true);
}

/// A Redis store: connected, the two replicas on it seen, then not once Redis is gone.
#[test]
fn summary_follows_the_redis_store() {
    let mut redis = redis_peers::Redis::start();
    let p = redis_peers::replica(&redis);
    let _other = redis_peers::replica(&redis);
    let s = json(&p, "/api/dashboard/summary");
    assert_eq!(s["store"]["kind"], "redis");
    assert_eq!(
        (&s["store"]["connected"], &s["store"]["reconnects"]),
        (&Value::Bool(true), &Value::from(0))
    );
    assert_eq!(s["store"]["replicas"], 2, "{s:#}");
    redis.kill();
    let s = until(&p, "/api/dashboard/summary", "Redis seen gone", |v| {
        v["store"]["connected"] == false && v["store"]["ready"] == false
    });
    assert_eq!(s["store"]["replicas"], Value::Null);
}

/// A target that takes the request and never answers is `timing_out` once the proxy's
/// `--proxy-timeout` has passed (the 503 is the event waited for).
#[test]
fn a_silent_target_is_timing_out() {
    let (port, _requests) = hanging_backend();
    let p = Proxy::start(&["--proxy-timeout", "300"]);
    p.add("/user/slow", &format!("http://127.0.0.1:{port}"));
    assert_eq!(get(p.port, "/user/slow/x", &[]).status, 503);
    let page = json(&p, "/api/dashboard/routes");
    let slow = route(&page, "/user/slow");
    assert_eq!(slow["state"], "timing_out", "{slow:#}");
    assert_eq!(slow["errors"], 1);
}

/// A target that answers is `responding`, one that refuses `refusing` with every request
/// an error; a WebSocket is counted while open; the sampler records the traffic.
#[test]
fn routes_reflect_real_traffic() {
    let b = Backend::echo_target();
    let refusing = RefusingPort::bind();
    let (ws_port, _handshakes) = ws_backend(None);
    let p = Proxy::start(&[]);
    let r = p.api(
        "POST",
        "/api/routes/user/alice",
        Some(&format!(
            r#"{{"target":"{}","user":"alice","server_name":""}}"#,
            b.url()
        )),
    );
    assert_eq!(r.status, 201);
    p.add("/user/bob", &refusing.url());
    p.add("/ws", &format!("http://127.0.0.1:{ws_port}"));

    let page = json(&p, "/api/dashboard/routes");
    assert_eq!(page["total"], 3);
    assert_eq!(route(&page, "/user/alice")["state"], "unknown");
    assert_eq!(route(&page, "/user/alice")["user"], "alice");
    assert_eq!(route(&page, "/user/alice")["server_name"], "");

    for _ in 0..3 {
        assert_eq!(get(p.port, "/user/alice/x", &[]).status, 200);
    }
    assert_eq!(get(p.port, "/user/bob/x", &[]).status, 503);
    let page = json(&p, "/api/dashboard/routes?sort=error_rate&order=desc");
    let alice = route(&page, "/user/alice");
    assert_eq!(
        (&alice["state"], &alice["requests"], &alice["errors"]),
        (&Value::from("responding"), &Value::from(3), &Value::from(0))
    );
    assert!(alice["rps"].as_f64().unwrap() > 0.0);
    let bob = &page["routes"][0];
    assert_eq!(bob["path"], "/user/bob", "the worst first");
    assert_eq!(bob["state"], "refusing");
    assert_eq!(bob["error_rate"], 1.0);

    let (mut ws, res) = ws_connect(p.port, "/ws/k");
    assert_eq!(res.status(), 101);
    until(&p, "/api/dashboard/routes?q=/ws", "one WebSocket", |v| {
        v["routes"][0]["websockets"] == 1
    });
    let s = json(&p, "/api/dashboard/summary");
    assert_eq!(s["websockets"], 1);
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop(ws);
    until(&p, "/api/dashboard/routes?q=/ws", "no WebSocket", |v| {
        v["routes"][0]["websockets"] == 0
    });

    // The sampler's next sample (every 2 s) counts the requests above.
    let t = until(&p, "/api/dashboard/traffic", "a sample with traffic", |v| {
        v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["rps"].as_f64().unwrap() > 0.0)
    });
    let sample = t["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rps"].as_f64().unwrap() > 0.0)
        .unwrap();
    let mut keys: Vec<_> = sample.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "connections",
            "p50_ms",
            "p99_ms",
            "rps",
            "status",
            "time",
            "websockets"
        ],
        "the shape openapi.json gives (TrafficSample)"
    );
    assert!(sample["status"]["2xx"].as_f64().unwrap() > 0.0, "{sample}");
    assert!(sample["p50_ms"].as_f64().is_some(), "{sample}");
}
