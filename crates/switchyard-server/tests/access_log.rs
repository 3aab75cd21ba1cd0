//! The access log (`--access-log`), through the real binary: the fields of each kind of
//! entry, the redaction of secrets, the status filter, rotation (SIGUSR1 and
//! copytruncate), a destination nobody reads; and the request IDs it carries.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use backends::*;
use common::{IO_TIMEOUT, Proxy, temp_dir};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The log's lines once it has at least `n` (bounded wait: the writer is a thread of its
/// own, so an entry lands a moment after its response).
fn lines_once(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines of {n} in {}: {text}",
            lines.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn json_entries(path: &Path, n: usize) -> Vec<Value> {
    lines_once(path, n)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn json_proxy(log: &Path, extra: &[&str]) -> Proxy {
    let mut args = vec![
        "--access-log",
        log.to_str().unwrap(),
        "--access-log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

/// Every field of a GET's entry, and a POST's bytes in.
#[test]
fn json_entries_of_a_get_and_a_post() {
    let dir = temp_dir("access-get");
    let log = dir.join("access.log");
    let b = Backend::echo_target();
    let p = json_proxy(&log, &[]);
    p.add("/user/a", &b.url());
    let r = get(
        p.port,
        "/user/a/x?q=1",
        &[
            ("User-Agent", "tester/1.0"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("Referer", "http://hub.test/home"),
        ],
    );
    assert_eq!(r.status, 200);
    let e = &json_entries(&log, 1)[0];
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/user/a/x?q=1");
    assert_eq!(e["version"], "HTTP/1.1");
    assert_eq!(e["status"], 200);
    assert_eq!(e["client"], "127.0.0.1");
    assert_eq!(e["forwarded_for"], "203.0.113.9");
    assert_eq!(e["user_agent"], "tester/1.0");
    assert_eq!(e["referer"], "http://hub.test/home");
    assert_eq!(e["route"], "/user/a");
    assert_eq!(e["target"], b.url());
    assert_eq!(e["bytes_in"], 0);
    assert_eq!(e["bytes_out"], r.body.len());
    assert_eq!(e["ended_early"], Value::Null);
    assert_eq!(e["error"], Value::Null);
    assert_eq!(e["retries"], 0);
    let head = e["time_to_head_seconds"].as_f64().unwrap();
    let total = e["duration_seconds"].as_f64().unwrap();
    assert!(head > 0.0 && head <= total && total < 10.0, "{e}");
    assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    assert!(e.get("websocket").is_none());

    let mut c = Client::connect(p.port);
    c.send("POST", "/user/a/upload", &[], "0123456789");
    assert_eq!(c.response().status, 200);
    let e = &json_entries(&log, 2)[1];
    assert_eq!(
        (e["method"].as_str(), e["bytes_in"].as_u64()),
        (Some("POST"), Some(10))
    );
}

/// A target that refuses: the error page's status, the error, the upstream's doing.
#[test]
fn json_entry_of_an_error() {
    let dir = temp_dir("access-error");
    let log = dir.join("access.log");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = json_proxy(&log, &[]);
    p.add("/down", &format!("http://127.0.0.1:{port}"));
    let r = get(p.port, "/down/x", &[]);
    assert_eq!(r.status, 503);
    let e = &json_entries(&log, 1)[0];
    assert_eq!(e["status"], 503);
    assert_eq!(e["route"], "/down");
    assert_eq!(e["ended_early"], "upstream");
    assert!(e["error"].as_str().unwrap().contains("connect"), "{e}");
    assert_eq!(e["bytes_out"], r.body.len());
}

/// A download the client abandons: its status, the bytes it got, the client's doing.
#[test]
fn json_entry_of_an_aborted_download() {
    let dir = temp_dir("access-abort");
    let log = dir.join("access.log");
    let (port, chunks, head_seen) = streaming_backend();
    let p = json_proxy(&log, &[]);
    p.add("/dl", &format!("http://127.0.0.1:{port}"));
    let mut c = Client::connect(p.port);
    c.send("GET", "/dl/big", &[], "");
    head_seen.recv_timeout(IO_TIMEOUT).unwrap();
    chunks.send("first").unwrap();
    assert_eq!(c.head().0, 200);
    assert_eq!(c.chunk().as_deref(), Some("first"));
    drop(c);
    let e = &json_entries(&log, 1)[0];
    assert_eq!(e["status"], 200);
    assert_eq!(e["ended_early"], "client");
    assert_eq!(e["bytes_out"], 5);
    drop(chunks);
}

/// A WebSocket session: one entry when it closes, with its duration and bytes each way.
#[test]
fn json_entry_of_a_websocket_session() {
    let dir = temp_dir("access-ws");
    let log = dir.join("access.log");
    let (port, _handshakes) = ws_backend(None);
    let p = json_proxy(&log, &[]);
    p.add("/ws", &format!("http://127.0.0.1:{port}"));
    let (mut ws, res) = ws_connect(p.port, "/ws/kernel?token=abc");
    assert_eq!(res.status(), 101);
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop(ws);
    let e = &json_entries(&log, 1)[0];
    assert_eq!(e["status"], 101);
    assert_eq!(e["path"], "/ws/kernel?token=REDACTED");
    let t = &e["websocket"];
    // A masked client frame: 2 + 4 + 5 bytes, then its close frame.
    assert!(t["bytes_from_client"].as_u64().unwrap() >= 11, "{e}");
    assert!(t["bytes_to_client"].as_u64().unwrap() >= 7, "{e}");
    assert_eq!(e["bytes_in"], t["bytes_from_client"]);
    assert!(t["duration_seconds"].as_f64().unwrap() <= e["duration_seconds"].as_f64().unwrap());
}

/// A request carrying every secret leaves none of them in the log, in either format.
#[test]
fn secrets_never_reach_the_log() {
    for format in ["text", "json"] {
        let dir = temp_dir(&format!("access-redact-{format}"));
        let log = dir.join("access.log");
        let b = Backend::start(|_| {
            respond("200 OK", &[("Set-Cookie", "session=SETCOOKIESECRET")], "ok")
        });
        let p = Proxy::start(&[
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-format",
            format,
            "--access-log-redact",
            "token,_xsrf,access_token,api_key,extra",
        ]);
        p.add("/r", &b.url());
        let r = get(
            p.port,
            "/r/p?token=TOKENSECRET&_xsrf=XSRFSECRET&access_token=ACCESSSECRET&api_key=APISECRET&extra=EXTRASECRET&keep=visible",
            &[
                ("Authorization", "token AUTHSECRET"),
                ("Cookie", "jupyterhub-session=COOKIESECRET"),
                ("X-Xsrftoken", "XSRFHEADERSECRET"),
                ("Referer", "http://hub.test/?token=REFERERSECRET"),
            ],
        );
        assert_eq!(r.status, 200);
        let text = lines_once(&log, 1).join("\n");
        assert!(text.contains("keep=visible"), "{text}");
        assert!(text.contains("token=REDACTED"), "{text}");
        assert!(!text.contains("SECRET"), "{format}: {text}");
    }
}

/// The text format: nginx's combined, then the duration, the route and the target.
#[test]
fn text_entry_shape() {
    let dir = temp_dir("access-text");
    let log = dir.join("access.log");
    let b = Backend::echo_target();
    let p = Proxy::start(&["--access-log", log.to_str().unwrap()]);
    p.add("/t", &b.url());
    get(p.port, "/t/a", &[("User-Agent", "ua \"quoted\"")]);
    let line = &lines_once(&log, 1)[0];
    let expected_start = "127.0.0.1 - - [";
    assert!(line.starts_with(expected_start), "{line}");
    let after_time = line.split_once("] ").unwrap().1;
    let target = format!("route=/t target={} id=", b.url());
    assert!(
        after_time.starts_with("\"GET /t/a HTTP/1.1\" 200 4 \"-\" \"ua \\\"quoted\\\"\" "),
        "{line}"
    );
    let (rest, id) = after_time.rsplit_once(' ').unwrap();
    assert!(
        format!("{rest} ").ends_with(&target.replace(" id=", " ")),
        "{line}"
    );
    let id = id.strip_prefix("id=").unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
}

/// `--access-log-status 4xx`: only the 404 is written.
#[test]
fn status_filter_keeps_only_the_chosen_statuses() {
    let dir = temp_dir("access-status");
    let log = dir.join("access.log");
    let b = Backend::echo_target();
    let p = json_proxy(&log, &["--access-log-status", "4xx"]);
    p.add("/ok", &b.url());
    assert_eq!(get(p.port, "/ok", &[]).status, 200);
    assert_eq!(get(p.port, "/missing", &[]).status, 404);
    let entries = json_entries(&log, 1);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["status"], 404);
    assert_eq!(entries[0]["route"], Value::Null);
    let bad = common::run_to_exit(&["--access-log-status", "6xx"]);
    assert_eq!(bad.status.code(), Some(1));
}

/// logrotate's two ways: the file moved and SIGUSR1 (the next entry goes to a new file),
/// and copytruncate (appends continue at the new end, with no hole).
#[test]
fn rotation_by_sigusr1_and_by_copytruncate() {
    let dir = temp_dir("access-rotate");
    let log = dir.join("access.log");
    let b = Backend::echo_target();
    let mut p = json_proxy(&log, &[]);
    p.add("/a", &b.url());
    get(p.port, "/a/1", &[]);
    lines_once(&log, 1);
    let moved = dir.join("access.log.1");
    std::fs::rename(&log, &moved).unwrap();
    p.send_signal("USR1");
    p.wait_for_line("Access log reopened");
    get(p.port, "/a/2", &[]);
    let now = json_entries(&log, 1);
    assert_eq!(now[0]["path"], "/a/2");
    assert_eq!(json_entries(&moved, 1).len(), 1);

    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(0).unwrap();
    get(p.port, "/a/3", &[]);
    let after = std::fs::read(&log).unwrap();
    let after = if after.is_empty() {
        lines_once(&log, 1).join("\n").into_bytes()
    } else {
        after
    };
    assert_eq!(after[0], b'{', "{}", String::from_utf8_lossy(&after));
    assert_eq!(json_entries(&log, 1)[0]["path"], "/a/3");
}

/// A FIFO nobody reads: requests go on at their pace, and the entries that do not fit
/// are dropped and counted.
#[test]
fn a_log_nobody_reads_does_not_slow_requests() {
    let dir = temp_dir("access-fifo");
    let fifo = dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo is needed for this test");
    // Open for reading and writing: a reader that never reads, without blocking here.
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let b = Backend::echo_target();
    let mut p = json_proxy(&fifo, &["--metrics-port", "0", "--metrics-ip", "127.0.0.1"]);
    let metrics_port = p.metrics_port();
    p.add("/f", &b.url());
    let mut c = Client::connect(p.port);
    let started = Instant::now();
    for i in 0..2000 {
        c.send("GET", &format!("/f/{i}"), &[], "");
        assert_eq!(c.response().status, 200);
    }
    let took = started.elapsed();
    let m = common::request(metrics_port, "GET", "/metrics", &[], None).body;
    let dropped: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_access_log_dropped_total "))
        .unwrap_or_else(|| panic!("{m}"))
        .parse()
        .unwrap();
    assert!(dropped > 0, "{m}");
    // A safety net, not a measurement: blocked writes would hold every request forever.
    assert!(took < Duration::from_secs(120), "{took:?}");
}

// ============================================================================================
// Request IDs
// ============================================================================================

/// A sane client ID is kept, sent upstream, returned, logged and put on error lines; a
/// missing or bad one is replaced by a made one, the same everywhere.
#[test]
fn request_id_round_trip() {
    let dir = temp_dir("access-rid");
    let log = dir.join("access.log");
    let b = Backend::echo_target();
    let mut p = json_proxy(&log, &[]);
    p.add("/r", &b.url());
    let r = get(p.port, "/r/1", &[("X-Request-Id", "client-id_1.2")]);
    assert_eq!(r.header("x-request-id"), Some("client-id_1.2"));
    assert_eq!(b.next().header("x-request-id"), Some("client-id_1.2"));
    assert_eq!(json_entries(&log, 1)[0]["request_id"], "client-id_1.2");

    let r = get(p.port, "/r/2", &[]);
    let made = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(made.len(), 32, "{made}");
    assert!(made.bytes().all(|c| c.is_ascii_hexdigit()), "{made}");
    assert_eq!(b.next().header("x-request-id"), Some(made.as_str()));
    assert_eq!(json_entries(&log, 2)[1]["request_id"], made.as_str());

    let r = get(p.port, "/r/3", &[("X-Request-Id", "has space\"quote")]);
    let replaced = r.header("x-request-id").unwrap().to_owned();
    assert_ne!(replaced, made);
    assert_eq!(replaced.len(), 32);
    assert_eq!(b.next().header("x-request-id"), Some(replaced.as_str()));

    let r = get(p.port, "/nowhere", &[("X-Request-Id", "lost-42")]);
    assert_eq!((r.status, r.header("x-request-id")), (404, Some("lost-42")));
    let line = p.wait_for_line("404 GET /nowhere");
    assert!(line.contains("request_id=lost-42"), "{line}");
}

/// `--request-id-header` names the header; `--no-request-id` passes it through untouched.
#[test]
fn request_id_header_and_off() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--request-id-header", "X-Trace"]);
    p.add("/r", &b.url());
    let r = get(p.port, "/r", &[]);
    let id = r.header("x-trace").unwrap().to_owned();
    assert_eq!(b.next().header("x-trace"), Some(id.as_str()));
    assert_eq!(r.header("x-request-id"), None);

    let p = Proxy::start(&["--no-request-id"]);
    p.add("/r", &b.url());
    let r = get(p.port, "/r", &[("X-Request-Id", "bad value")]);
    assert_eq!(r.header("x-request-id"), None);
    assert_eq!(b.next().header("x-request-id"), Some("bad value"));
    let r = get(p.port, "/r", &[]);
    assert_eq!(r.header("x-request-id"), None);
    assert_eq!(b.next().header("x-request-id"), None);
}

// ============================================================================================
// Application logs
// ============================================================================================

/// `--log-format json`: every stdout line is a JSON object with a timestamp, a level and
/// a message; an error line carries the request's ID as a field.
#[test]
fn json_application_logs_parse_line_by_line() {
    let mut p = Proxy::start(&["--log-format", "json"]);
    let r = get(p.port, "/nowhere", &[("X-Request-Id", "json-7")]);
    assert_eq!(r.status, 404);
    p.wait_for_line("404 GET /nowhere");
    let mut lines = p.log.clone();
    lines.extend(p.lines.try_iter());
    assert!(lines.len() >= 3, "{lines:?}");
    let mut error = None;
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(v["message"].is_string(), "{line}");
        if v["message"].as_str().unwrap().contains("404 GET /nowhere") {
            error = Some(v);
        }
    }
    let error = error.unwrap();
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["request_id"], "json-7");
}

// ============================================================================================
// Metrics
// ============================================================================================

/// `promtool check metrics` on `/metrics`, after traffic, with the access log on: the
/// only complaints are the `_total` suffix of CHP's own counter names, which stay as CHP
/// has them (JupyterHub's dashboards read them).
#[test]
fn promtool_finds_nothing_but_chps_names() {
    let dir = temp_dir("access-promtool");
    let log = dir.join("access.log");
    let b = Backend::echo_target();
    let mut p = json_proxy(&log, &["--metrics-port", "0", "--metrics-ip", "127.0.0.1"]);
    let metrics_port = p.metrics_port();
    p.add("/m", &b.url());
    assert_eq!(get(p.port, "/m/1", &[]).status, 200);
    assert_eq!(get(p.port, "/missing", &[]).status, 404);
    let m = common::request(metrics_port, "GET", "/metrics", &[], None).body;
    assert!(m.contains("switchyard_access_log_dropped_total 0\n"), "{m}");
    let complaints = common::promtool_complaints(&m);
    assert!(complaints.is_empty(), "promtool: {complaints:?}\n{m}");
}
