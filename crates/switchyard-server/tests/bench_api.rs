//! Timing of the API at scale: add 10,000 routes one by one over one keep-alive
//! connection, then list them. Run with
//! `cargo test --release -p switchyard-server --test bench_api -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, reason = "benchmark support code")]

mod common;

use std::time::Instant;

use common::{Client, Proxy, TOKEN};

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn add_and_list_10k_routes() {
    // With the default log level (three stdout lines per POST) and with `warn`.
    for level in ["info", "warn"] {
        add_and_list(level);
    }
}

fn add_and_list(level: &str) {
    let p = Proxy::start(&["--log-level", level]);
    let mut client = Client::connect(p.api_port);
    let auth = format!("token {TOKEN}");
    let started = Instant::now();
    for i in 0..10_000 {
        let body = format!(
            r#"{{"target":"http://10.0.{}.{}:8888","user":"u{i}","server_name":"","jupyterhub":true}}"#,
            i / 256,
            i % 256
        );
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        client.send("POST", &format!("/api/routes/user/u{i}"), &headers, &body);
        assert_eq!(client.response().status, 201);
    }
    let added = started.elapsed();
    let mut best = std::time::Duration::MAX;
    let mut size = 0;
    for _ in 0..5 {
        let started = Instant::now();
        client.send("GET", "/api/routes", &[("Authorization", &auth)], "");
        let r = client.response();
        best = best.min(started.elapsed());
        assert_eq!(r.status, 200);
        size = r.body.len();
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 10_000);
    }
    println!(
        "--log-level {level}: 10,000 POSTs over one connection: {added:?} ({:.0}/s); GET all ({size} bytes): best of 5 {best:?}",
        10_000.0 / added.as_secs_f64()
    );
}
