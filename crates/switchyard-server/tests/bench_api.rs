//! Timing of the API at scale: add 10,000 routes one by one over one keep-alive
//! connection, then list them. Run with
//! `cargo test --release -p switchyard-server --test bench_api -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, reason = "benchmark support code")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::{Proxy, TOKEN};

/// Sends one request on a kept-alive connection and reads one `Content-Length` response.
fn exchange(reader: &mut BufReader<TcpStream>, req: &[u8]) -> (u16, Vec<u8>) {
    reader.get_mut().write_all(req).unwrap();
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, body)
}

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
    let stream = TcpStream::connect(("127.0.0.1", p.api_port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream);
    let started = Instant::now();
    for i in 0..10_000 {
        let body = format!(
            r#"{{"target":"http://10.0.{}.{}:8888","user":"u{i}","server_name":"","jupyterhub":true}}"#,
            i / 256,
            i % 256
        );
        let req = format!(
            "POST /api/routes/user/u{i} HTTP/1.1\r\nHost: x\r\nAuthorization: token {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, _) = exchange(&mut reader, req.as_bytes());
        assert_eq!(status, 201);
    }
    let added = started.elapsed();
    let list_req =
        format!("GET /api/routes HTTP/1.1\r\nHost: x\r\nAuthorization: token {TOKEN}\r\n\r\n");
    let mut best = std::time::Duration::MAX;
    let mut size = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = exchange(&mut reader, list_req.as_bytes());
        best = best.min(started.elapsed());
        assert_eq!(status, 200);
        size = body.len();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 10_000);
    }
    println!(
        "--log-level {level}: 10,000 POSTs over one connection: {added:?} ({:.0}/s); GET all ({size} bytes): best of 5 {best:?}",
        10_000.0 / added.as_secs_f64()
    );
}
