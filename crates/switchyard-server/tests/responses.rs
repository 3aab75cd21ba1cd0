//! What comes back, through the real binary: streamed bodies,
//! keep-alive, `Location` rewriting, and the error answers (built-in pages,
//! `--error-target`, `--error-path`, malformed bodies, timeouts).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::sync::atomic::Ordering;

use backends::*;
use common::{IO_TIMEOUT, Proxy, temp_dir};

// ============================================================================================
// Response
// ============================================================================================

/// Bodies are streamed: the client reads the first chunk while the backend
/// has not sent the second; a 200 kB request body arrives intact.
#[test]
fn bodies_are_streamed() {
    let (port, chunks, head_seen) = streaming_backend();
    let p = Proxy::start(&[]);
    p.add("/stream", &format!("http://127.0.0.1:{port}"));
    let mut c = Client::connect(p.port);
    c.send("GET", "/stream", &[], "");
    head_seen.recv_timeout(IO_TIMEOUT).unwrap();
    chunks.send("first").unwrap();
    let (status, headers) = c.head();
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("transfer-encoding").map(String::as_str),
        Some("chunked")
    );
    assert_eq!(c.chunk().as_deref(), Some("first"));
    chunks.send("second").unwrap();
    assert_eq!(c.chunk().as_deref(), Some("second"));
    chunks.send("").unwrap();
    assert_eq!(c.chunk(), None);

    let b = Backend::start(|s| respond("200 OK", &[], &s.body.len().to_string()));
    p.add("/upload", &b.url());
    let big = "x".repeat(200_000);
    let mut c = Client::connect(p.port);
    c.send("POST", "/upload", &[], &big);
    assert_eq!(c.response().body, "200000");
    let s = b.next();
    assert_eq!((s.method.as_str(), s.body.len()), ("POST", big.len()));
}

/// Keep-alive on both sides: three requests on one client connection
/// use one upstream connection, and no `Connection: close` is sent either way.
#[test]
fn keep_alive_on_both_sides() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    let mut c = Client::connect(p.port);
    for i in 0..3 {
        let path = format!("/k{i}");
        c.send("GET", &path, &[], "");
        let r = c.response();
        assert_eq!((r.status, r.body.as_str()), (200, path.as_str()));
        assert_ne!(r.header("connection"), Some("close"));
        let s = b.next();
        assert_eq!(s.target, path);
        assert_eq!(s.header("connection"), None);
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

/// Location is rewritten only with `--auto-rewrite` / `--protocol-rewrite`,
/// and only when it names the target's host. `--auto-rewrite` makes it relative
/// (no open redirect): CHP copied the client's Host in, so `Host: evil.example`
/// got `Location: http://evil.example:<target port>/elsewhere`. With `--public-host`, a
/// listed Host (compared without case) is named, with `--protocol-rewrite`'s scheme.
#[test]
fn location_rewriting() {
    let b = Backend::start(|s| {
        let location = if s.target == "/same" {
            format!(
                "http://127.0.0.1:{}/elsewhere",
                s.header("x-backend-port").unwrap()
            )
        } else {
            "http://other.example/elsewhere".to_owned()
        };
        respond("302 Found", &[("Location", &location)], "")
    });
    let bport = b.port.to_string();
    let header = format!("X-Backend-Port: {bport}");
    // (flags, Host sent or None for the client's own `127.0.0.1:<port>`, expected Location)
    let cases: [(&[&str], Option<&str>, &str); 7] = [
        (&[], None, "http://127.0.0.1:{B}/elsewhere"),
        (&["--auto-rewrite"], None, "/elsewhere"),
        (
            &["--protocol-rewrite", "https"],
            None,
            "https://127.0.0.1:{B}/elsewhere",
        ),
        (
            &["--auto-rewrite", "--protocol-rewrite", "https"],
            None,
            "/elsewhere",
        ),
        // --public-host: a listed Host is named in the Location, others get a relative one.
        (
            &["--auto-rewrite", "--public-host", "hub.example"],
            Some("HUB.example"),
            "http://HUB.example/elsewhere",
        ),
        (
            &[
                "--auto-rewrite",
                "--public-host",
                "hub.example:8443",
                "--public-host",
                "hub.example",
                "--protocol-rewrite",
                "https",
            ],
            Some("hub.example:8443"),
            "https://hub.example:8443/elsewhere",
        ),
        (
            &["--auto-rewrite", "--public-host", "hub.example"],
            None,
            "/elsewhere",
        ),
    ];
    for (flags, host, expected) in cases {
        let mut args = vec!["--custom-header", &header];
        args.extend_from_slice(flags);
        let p = Proxy::start(&args);
        p.add("/", &b.url());
        let expected = expected.replace("{B}", &bport);
        let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
        let r = get(p.port, "/same", &headers);
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some(expected.as_str()), "{flags:?}");
        if flags.contains(&"--auto-rewrite") {
            let r = get(p.port, "/same", &[("Host", "evil.example")]);
            assert_eq!(r.header("location"), Some("/elsewhere"), "{flags:?}");
        }
        let r = get(p.port, "/other", &[]);
        assert_eq!(
            r.header("location"),
            Some("http://other.example/elsewhere"),
            "{flags:?}"
        );
    }
}

// ============================================================================================
// Error responses
// ============================================================================================

/// Built-in pages: 404 for no route, 503 for a dead upstream (text/html).
#[test]
fn builtin_error_pages() {
    let p = Proxy::start(&[]);
    let r = get(p.port, "/nope", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(r.body.contains("404: Not Found"), "{}", r.body);
    p.add("/dead", DEAD);
    let r = get(p.port, "/dead/x", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(r.body.contains("503: Proxy Target Missing"), "{}", r.body);
}

/// A request body the client frames wrongly (a chunk size that is not hex, one too large to
/// count) is the client's error: 400, as Node answers under CHP, not a 503 blaming the
/// target; the proxy goes on serving.
#[test]
fn malformed_request_body_is_400() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/up", &b.url());
    for chunk in ["zz", "ffffffffffffffffffff"] {
        let sent = format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}\r\nhello\r\n0\r\n\r\n"
        );
        // Raw: no HTTP client sends a malformed chunk size.
        let answer = common::raw(p.port, sent.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400 "), "{chunk}: {answer}");
    }
    assert_eq!(get(p.port, "/up/after", &[]).body, "/up/after");
}

/// An upstream answer with both `Transfer-Encoding: chunked` and `Content-Length` cannot
/// be relayed with the length and the decoded body, which disagree (a 5-byte body cut to 1
/// byte, or a client left waiting for bytes that never come). It is refused as a malformed
/// answer (503, as CHP), and the next request gets a clean answer.
#[test]
fn upstream_answer_framed_both_ways_is_refused() {
    let b = Backend::start(|s| {
        if s.target.ends_with("/both") {
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
                .to_owned()
        } else {
            respond("200 OK", &[], "fine")
        }
    });
    let p = Proxy::start(&[]);
    p.add("/o", &b.url());
    let r = get(p.port, "/o/both", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("503"), "{}", r.body);
    assert_eq!(get(p.port, "/o/next", &[]).body, "fine");
}

/// `--proxy-timeout` with a hanging upstream is a 503.
#[test]
fn proxy_timeout_is_503() {
    let (port, requested) = hanging_backend();
    let p = Proxy::start(&["--proxy-timeout", "200"]);
    p.add("/slow", &format!("http://127.0.0.1:{port}"));
    let r = get(p.port, "/slow", &[]);
    requested.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.contains("503"), "{}", r.body);
}

/// `--error-target` is asked `GET <target>/<code>?url=<escaped url>`; the client
/// gets the original code with the error server's body and Content-Type.
#[test]
fn error_target_serves_the_body_with_the_original_code() {
    let errors = Backend::start(|s| {
        respond(
            "200 OK",
            &[("Content-Type", "text/x-custom"), ("X-Not-Copied", "1")],
            &format!("custom page for {}", s.target),
        )
    });
    let base = format!("{}/errs", errors.url());
    let p = Proxy::start(&["--error-target", &base]);
    let r = get(p.port, "/foo/bar?a=b&c=%20d", &[]);
    let expected = "/errs/404?url=%2Ffoo%2Fbar%3Fa%3Db%26c%3D%2520d";
    assert_eq!(errors.next().target, expected);
    assert_eq!(r.status, 404);
    assert_eq!(r.body, format!("custom page for {expected}"));
    assert_eq!(r.header("content-type"), Some("text/x-custom"));
    assert_eq!(r.header("x-not-copied"), None);

    p.add("/dead", DEAD);
    let r = get(p.port, "/dead/x", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(errors.next().target, "/errs/503?url=%2Fdead%2Fx");
}

/// `--error-path`: `<code>.html`, else `error.html`, else the plain text.
#[test]
fn error_path_files() {
    let dir = temp_dir("error-path");
    std::fs::write(dir.join("404.html"), "my 404 page").unwrap();
    std::fs::write(dir.join("error.html"), "my fallback page").unwrap();
    let p = Proxy::start(&["--error-path", dir.to_str().unwrap()]);
    let r = get(p.port, "/nope", &[]);
    assert_eq!((r.status, r.body.as_str()), (404, "my 404 page"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    p.add("/dead", DEAD);
    let r = get(p.port, "/dead", &[]);
    assert_eq!((r.status, r.body.as_str()), (503, "my fallback page"));

    let empty = temp_dir("error-path-empty");
    let p = Proxy::start(&["--error-path", empty.to_str().unwrap()]);
    let r = get(p.port, "/nope", &[]);
    assert_eq!((r.status, r.body.as_str()), (404, "Not Found"));
    assert_eq!(r.header("content-type"), None);
}
