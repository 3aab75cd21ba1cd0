//! WebSockets and `last_activity`, through the real binary: echo through
//! the proxy, the upgrade's headers, error answers that close the socket, and which
//! traffic counts as activity.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use backends::*;
use common::{IO_TIMEOUT, Proxy};
use tokio_tungstenite::tungstenite::Message;

// ============================================================================================
// WebSockets
// ============================================================================================

/// A WebSocket through the proxy echoes; the upgrade carries X-Forwarded-For/
/// -Port/-Proto (`ws`) but no X-Forwarded-Host, plus custom headers; the path is kept.
#[test]
fn websocket_echo_with_forwarded_headers() {
    let (port, handshakes) = ws_backend(None);
    let p = Proxy::start(&["--custom-header", "X-Custom: ws"]);
    p.add("/user/ws", &format!("http://127.0.0.1:{port}"));
    let (mut ws, res) = ws_connect(p.port, "/user/ws/api/kernels?x=%20");
    assert_eq!(res.status(), 101);
    let seen = handshakes.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(seen.target, "/user/ws/api/kernels?x=%20");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let proxy_port = p.port.to_string();
    assert_eq!(seen.header("x-forwarded-port"), Some(proxy_port.as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("ws"));
    assert_eq!(seen.header("x-forwarded-host"), None);
    assert_eq!(seen.header("x-custom"), Some("ws"));
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).unwrap();
}

/// A WebSocket to a backend that does not upgrade gets the backend's answer,
/// then the connection is closed.
#[test]
fn websocket_to_plain_backend_gets_its_answer_and_is_closed() {
    let b = Backend::start(|_| respond("200 OK", &[], "plain"));
    let p = Proxy::start(&[]);
    p.add("/", &b.url());
    let out = raw_upgrade(p.port, "/ws").expect("the proxy must close the connection");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("plain"), "{out}");
    assert_eq!(b.next().header("upgrade"), Some("websocket"));
}

/// A WebSocket with no route gets a bare 404 and is closed (CHP left
/// the socket open); a dead upstream gets a bare 503 and a close.
#[test]
fn websocket_errors_are_answered_and_closed() {
    let p = Proxy::start(&[]);
    let out = raw_upgrade(p.port, "/nope").expect("the proxy must close after the 404");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(
        !out.contains("<html"),
        "no error page for WebSockets: {out}"
    );
    p.add("/", DEAD);
    let out = raw_upgrade(p.port, "/dead").expect("the proxy must close after the 503");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
}

// ============================================================================================
// last_activity
// ============================================================================================

/// A request body counts as activity, even when the backend answers 404.
#[test]
fn last_activity_bumped_by_request_body() {
    let b = Backend::start(|_| respond("404 Not Found", &[], ""));
    let p = Proxy::start(&[]);
    p.add("/r", &b.url());
    let before = last_activity(&p, "/r");
    clock_past(&before);
    let mut c = Client::connect(p.port);
    c.send("POST", "/r/x", &[], "some body");
    assert_eq!(c.response().status, 404);
    assert!(last_activity(&p, "/r") > before);
}

/// A response with status < 300 counts as activity.
#[test]
fn last_activity_bumped_by_2xx_response() {
    let b = Backend::echo_target();
    let p = Proxy::start(&[]);
    p.add("/r", &b.url());
    let before = last_activity(&p, "/r");
    clock_past(&before);
    assert_eq!(get(p.port, "/r/x", &[]).status, 200);
    assert!(last_activity(&p, "/r") > before);
}

/// 3xx and 4xx answers without a request body, a 503 (dead upstream) and a 404
/// (no route) leave last_activity alone.
#[test]
fn last_activity_not_bumped_by_errors_or_redirects() {
    let b = Backend::start(|s| match s.target.as_str() {
        "/r/redirect" => respond("302 Found", &[("Location", "/elsewhere")], ""),
        _ => respond("404 Not Found", &[], ""),
    });
    let p = Proxy::start(&[]);
    p.add("/r", &b.url());
    p.add("/dead", DEAD);
    let (r, dead) = (last_activity(&p, "/r"), last_activity(&p, "/dead"));
    clock_past(&r.clone().max(dead.clone()));
    assert_eq!(get(p.port, "/r/redirect", &[]).status, 302);
    assert_eq!(get(p.port, "/r/missing", &[]).status, 404);
    assert_eq!(get(p.port, "/dead/x", &[]).status, 503);
    assert_eq!(get(p.port, "/unrouted", &[]).status, 404);
    assert_eq!(last_activity(&p, "/r"), r);
    assert_eq!(last_activity(&p, "/dead"), dead);
}

/// On a WebSocket, the handshake and server→client frames do not
/// count; every client→server frame does.
#[test]
fn last_activity_and_websocket_frames() {
    let (port, _handshakes) = ws_backend(Some("server says hi"));
    let p = Proxy::start(&[]);
    p.add("/ws", &format!("http://127.0.0.1:{port}"));
    let before = last_activity(&p, "/ws");
    clock_past(&before);
    let (mut ws, _) = ws_connect(p.port, "/ws");
    assert_eq!(ws.read().unwrap(), Message::text("server says hi"));
    assert_eq!(last_activity(&p, "/ws"), before, "handshake + server frame");
    ws.send(Message::text("client says hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("client says hi"));
    let after = last_activity(&p, "/ws");
    assert!(after > before, "client frame: {after} vs {before}");
    ws.close(None).unwrap();
}
