//! What goes upstream, through the real binary: the path and query,
//! the target's path, `--no-include-prefix` / `--no-prepend-path`, the request headers and
//! `Host` (which Hosts are accepted, the absolute form, UNIX sockets).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::io::{BufRead, BufReader, Read, Write};

use backends::*;
use common::{IO_TIMEOUT, Proxy, temp_dir};

// ============================================================================================
// Upstream URL
// ============================================================================================

/// The raw path and query reach the backend byte for byte (escapes kept).
#[test]
fn raw_path_and_query_are_kept() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/user/foo", &b.url());
    for path in [
        "/user/foo/bar?x=1&y=%20",
        "/user/foo/a%2Fb%40c?q=%2F&q=2",
        "/user/foo",
        "/user/foo/",
    ] {
        let r = get(p.port, path, &[]);
        assert_eq!((r.status, r.body.as_str()), (200, path));
        assert_eq!(b.next().target, path);
    }
}

/// The target's path is prepended and its query merged (target's first).
#[test]
fn target_path_is_prepended() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/prefixed", &format!("{}/base/path", b.url()));
    p.add("/tq", &format!("{}/t?tq=1", b.url()));
    assert_eq!(
        get(p.port, "/prefixed/rest?q=1", &[]).body,
        "/base/path/prefixed/rest?q=1"
    );
    assert_eq!(get(p.port, "/tq/x?a=b", &[]).body, "/t/tq/x?tq=1&a=b");
}

/// `--no-prepend-path` forwards the request path alone.
#[test]
fn no_prepend_path() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--no-prepend-path"]);
    p.add("/bar", &format!("{}/foo", b.url()));
    assert_eq!(
        get(p.port, "/bar/rest/of/it?q=1", &[]).body,
        "/bar/rest/of/it?q=1"
    );
}

/// `--no-include-prefix` strips the matched route prefix, with and without
/// `--no-prepend-path`; an escaped prefix is stripped by segments (CHP cut characters).
#[test]
fn no_include_prefix() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--no-include-prefix"]);
    p.add("/bar", &format!("{}/foo", b.url()));
    p.add("/b%40r", &format!("{}/foo", b.url()));
    assert_eq!(
        get(p.port, "/bar/rest/of/it?q=1", &[]).body,
        "/foo/rest/of/it?q=1"
    );
    assert_eq!(get(p.port, "/b%40r/x", &[]).body, "/foo/x");
    // A key of two segments loses both.
    p.add("/user/alice", &format!("{}/foo", b.url()));
    assert_eq!(get(p.port, "/user/alice/lab?x", &[]).body, "/foo/lab?x");
    let both = Proxy::start(&["--no-include-prefix", "--no-prepend-path"]);
    both.add("/bar", &format!("{}/foo", b.url()));
    assert_eq!(
        get(both.port, "/bar/rest/of/it?q=1", &[]).body,
        "/rest/of/it?q=1"
    );
}

/// With host routing, `--no-include-prefix` strips the path
/// segments of the key, not the host (CHP sent `/efgh/ij` here).
#[test]
fn no_include_prefix_with_host_routing() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--host-routing", "--no-include-prefix"]);
    p.add("/h.io/abcdefgh", &b.url());
    p.add("/h.io", &format!("{}/root", b.url()));
    let host = [("Host", "h.io:8000")];
    assert_eq!(get(p.port, "/abcdefgh/ij?k=1", &host).body, "/ij?k=1");
    assert_eq!(get(p.port, "/other/x", &host).body, "/root/other/x");
}

// ============================================================================================
// Request headers
// ============================================================================================

/// X-Forwarded-For/-Port/-Proto are appended with `,`; X-Forwarded-Host is
/// kept if present, else the Host header; Host itself is unchanged.
#[test]
fn x_forwarded_headers_are_appended() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    get(p.port, "/a", &[("Host", "front.example:8123")]);
    let s = b.next();
    assert_eq!(s.header("host"), Some("front.example:8123"));
    assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(s.header("x-forwarded-port"), Some("8123"));
    assert_eq!(s.header("x-forwarded-proto"), Some("http"));
    assert_eq!(s.header("x-forwarded-host"), Some("front.example:8123"));

    get(
        p.port,
        "/b",
        &[
            ("Host", "front.example"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "outer.example"),
        ],
    );
    let s = b.next();
    assert_eq!(s.header("x-forwarded-for"), Some("1.2.3.4,127.0.0.1"));
    assert_eq!(s.header("x-forwarded-port"), Some("443,80"));
    assert_eq!(s.header("x-forwarded-proto"), Some("https,http"));
    assert_eq!(s.header("x-forwarded-host"), Some("outer.example"));
}

/// `--no-x-forward` adds no X-Forwarded-* header (client ones pass through).
#[test]
fn no_x_forward() {
    let b = Backend::echo_target();
    let p = Proxy::start(&["--no-x-forward"]);
    p.add("/", &b.url());
    get(p.port, "/", &[("X-Forwarded-For", "1.2.3.4")]);
    let s = b.next();
    assert_eq!(s.header("x-forwarded-for"), Some("1.2.3.4"));
    for name in ["x-forwarded-port", "x-forwarded-proto", "x-forwarded-host"] {
        assert_eq!(s.header(name), None, "{name}");
    }
}

/// Host is kept by default; `--change-origin` sets the target's host:port.
#[test]
fn host_kept_unless_change_origin() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    get(p.port, "/", &[("Host", "front.example")]);
    assert_eq!(b.next().header("host"), Some("front.example"));

    let mut changed = Proxy::start(&["--change-origin"]);
    changed.wait_for_line("Change Origin of host headers enabled.");
    changed.add("/", &b.url());
    get(changed.port, "/", &[("Host", "front.example")]);
    let expected = format!("127.0.0.1:{}", b.port);
    assert_eq!(b.next().header("host"), Some(expected.as_str()));
}

/// `--custom-header` adds headers and overrides same-named client headers.
#[test]
fn custom_headers_are_added_and_override() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[
        "--custom-header",
        " X-Custom : one:two ",
        "--custom-header",
        "X-Other: 3",
    ]);
    p.add("/", &b.url());
    get(p.port, "/", &[("X-Custom", "from-client")]);
    let s = b.next();
    assert_eq!(s.all("x-custom"), ["one:two"]);
    assert_eq!(s.header("x-other"), Some("3"));
}

/// CHP 5.3.0's answers for every shape of request on route `/a` → `<backend>/t` with
/// `--no-include-prefix`, with and without `--no-prepend-path`: nothing left of the path
/// sends the target's path as it is (`/t`, not `/t/`), a query joins it without a `/`.
#[test]
fn no_include_prefix_shapes_match_chp() {
    let b = Backend::echo_target();
    let shapes = [
        // request, upstream path, upstream path with --no-prepend-path
        ("/a", "/t", "/"),
        ("/a/", "/t/", "/"),
        ("/a?x=1", "/t?x=1", "/?x=1"),
        ("/a/?x=1", "/t/?x=1", "/?x=1"),
        ("/a/b?x=1", "/t/b?x=1", "/b?x=1"),
        ("/a/b", "/t/b", "/b"),
        ("/a?", "/t", "/"),
    ];
    let prepend = Proxy::start(&["--no-include-prefix"]);
    let alone = Proxy::start(&["--no-include-prefix", "--no-prepend-path"]);
    for p in [&prepend, &alone] {
        p.add("/a", &format!("{}/t", b.url()));
    }
    for (request, with_path, without_path) in shapes {
        let r = get(prepend.port, request, &[]);
        assert_eq!((r.status, r.body.as_str()), (200, with_path), "{request}");
        assert_eq!(b.next().target, with_path);
        let r = get(alone.port, request, &[]);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, without_path),
            "{request}"
        );
        assert_eq!(b.next().target, without_path);
    }
    // A target without a path, and one whose path ends in `/`.
    prepend.add("/bare", &b.url());
    prepend.add("/slash", &format!("{}/s/", b.url()));
    assert_eq!(get(prepend.port, "/bare", &[]).body, "/");
    assert_eq!(get(prepend.port, "/slash", &[]).body, "/s/");
    assert_eq!(get(prepend.port, "/slash?q", &[]).body, "/s/?q");
}

/// The head as an HTTP/1.1 client sends it with `host` as its `Host` line (`None`: no
/// line at all); returns the status code and the raw answer. Raw bytes: the Host line is
/// what is under test, exactly as written, and the cases include none at all.
fn with_host(port: u16, target: &str, host: Option<&str>) -> (u16, String) {
    let host = host.map_or(String::new(), |h| format!("Host: {h}\r\n"));
    let answer = common::raw(
        port,
        format!("GET {target} HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
    );
    (common::parse_response(answer.as_bytes()).status, answer)
}

/// RFC 9110 §7.2 / RFC 3986 §3.2.2: every Host the grammar allows is proxied as sent
/// (percent-encodings, sub-delimiters, IP literals, an empty port); what it does not allow
/// is a 400 that never reaches the target.
#[test]
fn hosts_rfc_3986_allows_are_proxied() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    for host in [
        "%2Ftmp%2Fpytest-of-root%2Fproxy.sock",
        "a.test:",
        "!$&'()*+,;=",
        "[::1]:8000",
        "[v1.fe80::a+en1]",
        "",
    ] {
        let (status, answer) = with_host(p.port, "/x", Some(host));
        assert_eq!(status, 200, "{host:?}: {answer}");
        assert_eq!(b.next().header("host"), Some(host));
    }
    for host in [
        "user@example.com",
        "example.com/evil",
        "a b",
        "a\tb",
        "%zz",
        "a:80x",
        "[::1",
    ] {
        let (status, answer) = with_host(p.port, "/x", Some(host));
        assert_eq!(status, 400, "{host:?}: {answer}");
    }
    assert_eq!(with_host(p.port, "/x", None).0, 400);
    let two = common::raw(
        p.port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    // Nothing refused reached the backend: the next request it sees is this one.
    get(p.port, "/last", &[]);
    assert_eq!(b.next().target, "/last");
}

/// JupyterHub on UNIX sockets: its client (aiohttp) sends the percent-encoded socket path
/// as `Host`. Such a request over `--socket` is proxied, the Host kept; one with no Host
/// is refused there as over TCP.
#[test]
fn aiohttp_request_over_the_unix_socket() {
    use std::os::unix::net::UnixStream;

    let b = Backend::echo_target();
    let dir = temp_dir("host-sock");
    let (public, api) = (dir.join("proxy.sock"), dir.join("api.sock"));
    let target = b.url();
    let mut child = common::command(
        &[
            "--socket",
            public.to_str().unwrap(),
            "--api-socket",
            api.to_str().unwrap(),
            "--default-target",
            &target,
        ],
        Some(common::TOKEN),
    )
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    assert!(
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("Proxy API at")),
        "the proxy did not start"
    );
    let host: String = public
        .to_str()
        .unwrap()
        .replace('%', "%25")
        .replace('/', "%2F");
    // Raw: the head is aiohttp's, byte for byte.
    let mut s = UnixStream::connect(&public).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "GET /hub/api/info HTTP/1.1\r\nHost: {host}\r\nAuthorization: token x\r\n\
         Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n\
         User-Agent: Python/3.11 aiohttp/3.14.5\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("/hub/api/info"), "{answer}");
    let seen = b.next();
    assert_eq!(seen.header("host"), Some(host.as_str()));
    assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
    // The socket has no client address, but its requests get the checks of the wire:
    // an HTTP/1.1 request with no Host is refused (RFC 9112 §3.2), as over TCP.
    let mut s = UnixStream::connect(&public).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /hub/api/info HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let _ = child.kill();
    let _ = child.wait();
}

/// RFC 9112 §3.2.2: with an absolute-form target the target's authority is the host, for
/// routing and for the `Host` sent upstream alike; user information in it is a 400.
#[test]
fn absolute_form_authority_wins_over_host() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    let (status, answer) = with_host(p.port, "http://a.test:8000/x?y", Some("b.test"));
    assert_eq!(status, 200, "{answer}");
    let seen = b.next();
    assert_eq!(seen.target, "/x?y");
    assert_eq!(seen.header("host"), Some("a.test:8000"));
    assert_eq!(seen.all("host").len(), 1);
    assert_eq!(seen.header("x-forwarded-host"), Some("a.test:8000"));
    assert_eq!(
        with_host(p.port, "http://u@a.test/x", Some("a.test")).0,
        400
    );
    // HTTP/1.0 needs no Host; the target's authority is sent as one.
    let answer = common::raw(p.port, b"GET http://a.test:8000/y HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert_eq!(b.next().header("host"), Some("a.test:8000"));

    let h = Proxy::start(&["--host-routing"]);
    h.add("/", &format!("{}/default", b.url()));
    h.add("/a.test", &format!("{}/a", b.url()));
    let (status, answer) = with_host(h.port, "http://a.test:8000/x", Some("b.test"));
    assert!(status == 200 && answer.ends_with("/a/x"), "{answer}");
    assert_eq!(b.next().header("host"), Some("a.test:8000"));
    let (status, answer) = with_host(h.port, "http://b.test/x", Some("a.test"));
    assert!(status == 200 && answer.ends_with("/default/x"), "{answer}");
    assert_eq!(b.next().header("host"), Some("b.test"));
}

/// RFC 9110 §7.2: an empty `Host` is valid. Path routing is unchanged; in host-routing mode
/// it reaches the default target, never a host's route, whatever the path says.
#[test]
fn empty_host_is_routed() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/user/a", &format!("{}/ua", b.url()));
    let (status, answer) = with_host(p.port, "/user/a/lab", Some(""));
    assert!(
        status == 200 && answer.ends_with("/ua/user/a/lab"),
        "{answer}"
    );
    assert_eq!(b.next().header("host"), Some(""));

    let h = Proxy::start(&["--host-routing"]);
    h.add("/h.io", &format!("{}/hio", b.url()));
    // No default target yet: 404.
    assert_eq!(with_host(h.port, "/h.io/x", Some("")).0, 404);
    h.add("/", &format!("{}/default", b.url()));
    let (status, answer) = with_host(h.port, "/h.io/x", Some(""));
    assert!(
        status == 200 && answer.ends_with("/default/h.io/x"),
        "{answer}"
    );
    assert_eq!(b.next().header("host"), Some(""));
    let (status, answer) = with_host(h.port, "/x", Some("h.io"));
    assert!(status == 200 && answer.ends_with("/hio/x"), "{answer}");
    b.next();
    let (status, answer) = with_host(h.port, "/x", Some("user@h.io"));
    assert_eq!(status, 400, "{answer}");
}
