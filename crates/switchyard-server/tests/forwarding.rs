//! What goes upstream, through the real binary (chp.md §5.1–§5.2): the path and query,
//! the target's path, `--no-include-prefix` / `--no-prepend-path`, the request headers and
//! `Host` (which Hosts are accepted, the absolute form, UNIX sockets).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use backends::*;
use common::Proxy;

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
