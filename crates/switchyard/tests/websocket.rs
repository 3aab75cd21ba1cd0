//! WebSocket tunnelling against a real tokio-tungstenite server: a tunnel
//! only after a real 101 (RFC 6455 §4.1), bytes relayed both ways, both
//! sides torn down together.
//!
//! Not applicable here: the socket.io variants of http-proxy-3's tests
//! (balancer/simple-balancer-with-websockets, websocket/websocket-proxy's
//! long-polling fallback) need a socket.io server; the tunnel is
//! byte-for-byte, so a raw WebSocket peer exercises the same path. Frame
//! shapes (64 KB single frames, continuation frames) are not the proxy's
//! business after the 101: it copies bytes, never re-frames (the 10 MiB
//! message below crosses many reads).
// Tests may unwrap; tungstenite's handshake callbacks return
// its large error type.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, request};
use hyper::body::Incoming;
use switchyard::{Flow, Hooks, Outcome, Proxy, Target, TunnelStats};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn ws_proxy(upstream: std::net::SocketAddr) -> switchyard::Server {
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{upstream}")).unwrap())
        .configure(|o| o.ws = true)
        .build()
        .unwrap();
    listen(&proxy).await
}

async fn connect(
    addr: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (ws, res) = within(tokio_tungstenite::connect_async(format!(
        "ws://{addr}/socket"
    )))
    .await
    .unwrap();
    assert_eq!(res.status(), 101);
    ws
}

/// The next data or control message, skipping nothing.
async fn next(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Message {
    within(ws.next()).await.unwrap().unwrap()
}

/// http-proxy-3's test websocket/simple-websocket-proxy and lib/http-proxy
/// ("ws proxying"): text and binary messages echo through `listen` with
/// `ws: true`.
#[tokio::test]
async fn text_and_binary_echo() {
    let (up, _) = ws_echo_backend().await;
    let server = ws_proxy(up).await;
    let mut ws = connect(server.local_addr()).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 1, 2, 255]));
}

/// http-proxy-3's test lib/http-proxy ("64 KB single-frame and continuation-
/// frame payloads"), scaled up: a 10 MiB message each way.
#[tokio::test]
async fn ten_mib_message() {
    let (up, _) = ws_echo_backend().await;
    let server = ws_proxy(up).await;
    let mut ws = connect(server.local_addr()).await;
    let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next(&mut ws).await {
        Message::Binary(b) => assert!(b == big, "payload corrupted"),
        other => panic!("{other:?}"),
    }
}

/// Control frames pass through: a ping is answered by the upstream's pong.
#[tokio::test]
async fn ping_pong() {
    let (up, _) = ws_echo_backend().await;
    let server = ws_proxy(up).await;
    let mut ws = connect(server.local_addr()).await;
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(Bytes::from_static(b"are you there"))
    );
}

/// Close codes are relayed both ways: the client's close is echoed by the
/// upstream, the upstream's own close reaches the client with its code and
/// reason.
#[tokio::test]
async fn close_codes_are_relayed() {
    let (up, _) = ws_echo_backend().await;
    let server = ws_proxy(up).await;
    let mut ws = connect(server.local_addr()).await;
    ws.send(Message::text("close-me")).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::from(4001));
            assert_eq!(f.reason.as_str(), "server bye");
        }
        other => panic!("{other:?}"),
    }

    let mut ws = connect(server.local_addr()).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "client bye".into(),
    }))
    .await
    .unwrap();
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::from(4000)),
        other => panic!("{other:?}"),
    }
}

/// http-proxy-3's test websocket/websocket-proxy-http (hp3 #26, CHP #557): a
/// WebSocket request to a backend that answers 418 gets the 418 and its
/// body, and then the connection is closed (no socket left waiting).
#[tokio::test]
async fn non_101_answer_is_relayed_then_closed() {
    let b = backend(|_| async { text(418, "I'm a teapot") }).await;
    let server = ws_proxy(b.addr).await;
    let req = b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    // raw_request reads to EOF: it returns only because the proxy closes.
    let out = raw_request(server.local_addr(), req, b"").await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 418"), "{text}");
    assert!(text.ends_with("I'm a teapot"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

/// As in http-proxy-3: with `xfwd`, an upgrade gets
/// `X-Forwarded-Proto: ws` and no `X-Forwarded-Host`.
#[tokio::test]
async fn forwarded_proto_is_ws() {
    let (up, seen) = ws_echo_backend().await;
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{up}")).unwrap())
        .configure(|o| {
            o.ws = true;
            o.xfwd = true;
        })
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let _ws = connect(server.local_addr()).await;
    let h = seen.lock().unwrap()[0].clone();
    assert_eq!(h["x-forwarded-proto"], "ws");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(!h.contains_key("x-forwarded-host"));
    assert_eq!(h["upgrade"], "websocket");
}

/// Hooks that report the tunnel's life.
#[derive(Clone)]
struct WsHooks {
    opened: mpsc::UnboundedSender<()>,
    closed: mpsc::UnboundedSender<TunnelStats>,
    data_up: Arc<AtomicU64>,
    data_down: Arc<AtomicU64>,
}

impl Hooks for WsHooks {
    type Ctx = ();
    fn new_ctx(&self) {}
    fn on_proxy_request_ws(&self, (): &mut (), req: &mut request::Parts) -> Flow {
        req.headers
            .insert("x-ws-hook", HeaderValue::from_static("set"));
        Flow::Continue
    }
    fn on_open(&self, (): &mut ()) {
        let _ = self.opened.send(());
    }
    fn on_tunnel_data(&self, (): &(), from_client: bool, n: usize) {
        let c = if from_client {
            &self.data_up
        } else {
            &self.data_down
        };
        c.fetch_add(n as u64, Ordering::SeqCst);
    }
    fn on_end(&self, (): (), outcome: &Outcome<'_>) {
        let stats = outcome.tunnel.expect("a tunnel's outcome");
        assert_eq!(outcome.status, Some(http::StatusCode::SWITCHING_PROTOCOLS));
        assert_eq!(outcome.bytes_in, stats.client_to_upstream);
        assert_eq!(outcome.bytes_out, stats.upstream_to_client);
        assert!(outcome.head_time.unwrap() + stats.duration <= outcome.duration);
        let _ = self.closed.send(stats);
    }
}

/// http-proxy-3's events `proxyReqWs → open → close` and its test
/// lib/http-proxy ("proxyReqWs can set headers", "open/close counts (25
/// each)"): the ws request hook's header reaches the upstream; 25 tunnels each
/// open and close once, with byte counts that match the data hook.
#[tokio::test]
async fn ws_hooks_open_close_and_byte_counts() {
    let (up, seen) = ws_echo_backend().await;
    let (otx, mut opened) = mpsc::unbounded_channel();
    let (ctx, mut closed) = mpsc::unbounded_channel();
    let hooks = WsHooks {
        opened: otx,
        closed: ctx,
        data_up: Arc::default(),
        data_down: Arc::default(),
    };
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{up}")).unwrap())
        .configure(|o| o.ws = true)
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let (mut up_total, mut down_total) = (0, 0);
    for i in 0..25 {
        let mut ws = connect(server.local_addr()).await;
        within(opened.recv()).await.unwrap();
        let msg = format!("message {i}");
        ws.send(Message::text(msg.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(msg.clone()));
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = within(ws.next()).await {}
        // Both sides have closed now (the tunnel gives a half-closed peer
        // a grace period, so keeping `ws` alive would delay `on_end`).
        drop(ws);
        let stats = within(closed.recv()).await.unwrap();
        // A masked client frame: 2 header + 4 mask + payload; the echo: 2 + payload.
        assert!(
            stats.client_to_upstream >= (msg.len() + 6) as u64,
            "{stats:?}"
        );
        assert!(
            stats.upstream_to_client >= (msg.len() + 2) as u64,
            "{stats:?}"
        );
        up_total += stats.client_to_upstream;
        down_total += stats.upstream_to_client;
    }
    assert_eq!(hooks.data_up.load(Ordering::SeqCst), up_total);
    assert_eq!(hooks.data_down.load(Ordering::SeqCst), down_total);
    assert!(opened.try_recv().is_err() && closed.try_recv().is_err());
    assert!(seen.lock().unwrap().iter().all(|h| h["x-ws-hook"] == "set"));
}

/// http-proxy-3's test http/error-handling (ws part) and lib/http-proxy ("ws
/// error on a dead target"), node-http-proxy #1468: the client gets a 502
/// instead of a hang or a crash.
#[tokio::test]
async fn dead_target_is_502() {
    let (_socket, dead) = refusing_port();
    let server = ws_proxy(dead).await;
    let err = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/",
        server.local_addr()
    )))
    .await
    .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 502),
        other => panic!("{other:?}"),
    }
}

/// http-proxy-3's test lib/http-proxy ("client closed if upstream closes
/// before upgrade"): an upstream that hangs up on the handshake is a 502.
#[tokio::test]
async fn upstream_closing_before_the_upgrade_is_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        }
    });
    let server = ws_proxy(up).await;
    let err = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/",
        server.local_addr()
    )))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 502),
        "{err:?}"
    );
}

/// http-proxy-3's test lib/http-proxy ("all Set-Cookie of the 101 passed
/// through"): every Set-Cookie line of the upstream's 101 reaches the client.
#[tokio::test]
async fn set_cookies_of_the_101_pass_through() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let cb = |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          mut res: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    res.headers_mut()
                        .append("set-cookie", HeaderValue::from_static("a=1"));
                    res.headers_mut()
                        .append("set-cookie", HeaderValue::from_static("b=2"));
                    Ok(res)
                };
                let mut ws = tokio_tungstenite::accept_hdr_async(s, cb).await.unwrap();
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    let server = ws_proxy(up).await;
    let (_ws, res) = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/",
        server.local_addr()
    )))
    .await
    .unwrap();
    let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
}

/// http-proxy-3's test lib/http-proxy-passes-ws-incoming (checkMethodAndHeader):
/// only `GET` + `Upgrade: websocket` is tunnelled. A POST asking for an
/// upgrade is proxied as a plain request, its Upgrade stripped.
#[tokio::test]
async fn only_get_websocket_upgrades_are_tunnelled() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.ws = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let out = raw_request(
        server.local_addr(),
        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        b"",
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let h = seen.lock().unwrap()[0].headers.clone();
    assert!(!h.contains_key("upgrade") && !h.contains_key("connection"));
}

/// http-proxy-3's `ws` option only wires `listen`'s upgrades to `ws()`:
/// without `ws: true`, `listen` does not tunnel, so the handshake fails.
#[tokio::test]
async fn listen_without_ws_does_not_tunnel() {
    let (up, _) = ws_echo_backend().await;
    let proxy = Proxy::to(&format!("ws://{up}")).unwrap();
    let server = listen(&proxy).await;
    let res = within(tokio_tungstenite::connect_async(format!(
        "ws://{}/",
        server.local_addr()
    )))
    .await;
    assert!(res.is_err());
}

/// http-proxy-3's test websocket/standalone-websocket-proxy and
/// websocket/latent-websocket-proxy: an application's own hyper server
/// hands every request, upgrades included, to `web` — here after a delay.
#[tokio::test]
async fn own_server_proxies_upgrades_through_web() {
    let (up, _) = ws_echo_backend().await;
    let proxy = Proxy::to(&format!("ws://{up}")).unwrap();
    let front = serve_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                proxy.web(req).await
            }
        },
    );
    let mut ws = connect(front.addr).await;
    ws.send(Message::text("through web")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("through web"));
}

/// http-proxy-3's test websocket/websocket-proxy-websocket: a two-level chain
/// (proxy → proxy → server).
#[tokio::test]
async fn two_proxies_in_a_chain() {
    let (up, _) = ws_echo_backend().await;
    let inner = ws_proxy(up).await;
    let outer = ws_proxy(inner.local_addr()).await;
    let mut ws = connect(outer.local_addr()).await;
    ws.send(Message::text("twice")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("twice"));
}

/// `close_tunnels` (a server going away): the client gets a close frame 1001 and the
/// target a masked one (tungstenite refuses an unmasked frame from a client), the call
/// returns once the tunnel has ended, and a tunnel opened afterwards is closed at once.
#[tokio::test]
async fn close_tunnels_sends_going_away_both_ways() {
    let (codes_tx, mut codes) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let codes_tx = codes_tx.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    match m {
                        Message::Close(frame) => {
                            let _ = codes_tx.send(frame.map(|f| f.code));
                        }
                        m if m.is_text() => ws.send(m).await.unwrap(),
                        _ => {}
                    }
                }
            });
        }
    });
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{up}")).unwrap())
        .configure(|o| o.ws = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let mut ws = connect(server.local_addr()).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    assert_eq!(proxy.tunnels(), 1);

    let closing = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.close_tunnels().await }
    });
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        within(codes.recv()).await.unwrap(),
        Some(CloseCode::Away),
        "the target's close code"
    );
    drop(ws);
    within(closing).await.unwrap();
    assert_eq!(proxy.tunnels(), 0);

    // Closing: a new tunnel gets its 1001 as soon as it opens.
    let mut ws = connect(server.local_addr()).await;
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
}

/// A frame half sent when the close comes is finished first: the target gets the rest of
/// it, then the close frame, and nothing the client sent after that frame.
#[tokio::test]
async fn close_tunnels_finishes_the_frame_in_progress() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (upstream_tx, upstream_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        let _ = upstream_tx.send(s);
    });
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{up}")).unwrap())
        .configure(|o| o.ws = true)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let mut client = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    client
        .write_all(
            b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        within(client.read_exact(&mut b)).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let mut upstream = within(upstream_rx).await.unwrap();

    // A masked binary frame of 10 bytes: its header and 4 bytes, then the rest later.
    let frame: Vec<u8> = [0x82, 0x8a, 1, 2, 3, 4]
        .into_iter()
        .chain([9u8; 10])
        .collect();
    client.write_all(&frame[..10]).await.unwrap();
    let mut got = [0u8; 10];
    within(upstream.read_exact(&mut got)).await.unwrap();
    assert_eq!(got[..], frame[..10]);

    // The close starts (its first poll tells the tunnels) while the frame is half through.
    let mut closing = std::pin::pin!(proxy.close_tunnels());
    tokio::select! {
        biased;
        () = &mut closing => panic!("closed with a frame in progress"),
        () = std::future::ready(()) => {}
    }
    let mut rest = frame[10..].to_vec();
    rest.extend_from_slice(&[0x81, 0x82, 5, 6, 7, 8, b'n' ^ 5, b'o' ^ 6]); // "no": dropped
    client.write_all(&rest).await.unwrap();

    let (to_target, to_client, ()) = within(async {
        tokio::join!(
            async {
                let mut all = Vec::new();
                upstream.read_to_end(&mut all).await.unwrap();
                drop(upstream);
                all
            },
            async {
                let mut all = Vec::new();
                client.read_to_end(&mut all).await.unwrap();
                all
            },
            closing,
        )
    })
    .await;
    assert_eq!(to_target[..6], frame[10..], "the rest of the frame");
    let close = &to_target[6..];
    assert_eq!(
        close.len(),
        8,
        "a masked close frame and nothing else: {close:?}"
    );
    assert_eq!(close[..2], [0x88, 0x82]);
    let code = [close[6] ^ close[2], close[7] ^ close[3]];
    assert_eq!(u16::from_be_bytes(code), 1001);
    assert_eq!(to_client, [0x88, 2, 0x03, 0xe9]);
}

/// Reads from `stream` until `buf` holds `end` somewhere: what was read, all of it.
async fn read_until(stream: &mut tokio::net::TcpStream, end: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    while !buf.windows(end.len()).any(|w| w == end) {
        let mut chunk = [0u8; 1024];
        let n = within(stream.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "closed before {end:?} arrived: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

const UPGRADE: &[u8] = b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// A target that writes its first bytes in the same write as its 101 (hyper's client reads
/// them with the head): the client gets them right after the 101, and the tunnel goes on.
/// More than the tunnel's small buffer holds.
#[tokio::test]
async fn bytes_sent_with_the_101_reach_the_client() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_until(&mut s, b"\r\n\r\n").await;
        let first = [&[b'x'; 2000][..], b"first words"].concat();
        s.write_all(&[SWITCHED, &first].concat()).await.unwrap();
        // Then an echo of whatever comes.
        let got = read_until(&mut s, b"ping").await;
        s.write_all(&got).await.unwrap();
    });
    let server = ws_proxy(target).await;
    let mut client = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    client.write_all(UPGRADE).await.unwrap();
    let got = read_until(&mut client, b"first words").await;
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let first = [b"\r\n\r\n", &[b'x'; 2000][..], b"first words"].concat();
    assert!(got.ends_with(&first), "{}", String::from_utf8_lossy(&got));
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_until(&mut client, b"ping").await, b"ping");
}

/// A client that sends its first bytes in the same write as its upgrade request (hyper's
/// server reads them with the head): the target gets them right after its 101, and the
/// tunnel goes on.
#[tokio::test]
async fn bytes_sent_with_the_upgrade_request_reach_the_target() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (early_tx, early) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let head = read_until(&mut s, b"\r\n\r\n").await;
        s.write_all(SWITCHED).await.unwrap();
        let mut got = head[head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..].to_vec();
        if !got.ends_with(b"early words") {
            got = read_until(&mut s, b"early words").await;
        }
        early_tx.send(got).unwrap();
        s.write_all(b"pong").await.unwrap();
    });
    let server = ws_proxy(target).await;
    let mut client = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    client
        .write_all(&[UPGRADE, b"early words"].concat())
        .await
        .unwrap();
    assert_eq!(within(early).await.unwrap(), b"early words");
    let got = read_until(&mut client, b"pong").await;
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.ends_with(b"\r\n\r\npong"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// A client that stops reading a WebSocket while its target goes on sending is cut off at
/// the send timeout, and so is the target's connection: the tunnel does not hold both for
/// ever.
#[tokio::test]
async fn a_websocket_client_that_stops_reading_is_cut_at_the_send_timeout() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (cut_tx, cut) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_until(&mut s, b"\r\n\r\n").await;
        s.write_all(SWITCHED).await.unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        let err = loop {
            match s.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(err) => break err,
            }
        };
        cut_tx.send((sent, err.kind())).unwrap();
    });
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{target}")).unwrap())
        .configure(|o| o.ws = true)
        .build()
        .unwrap();
    let options = switchyard::server::ListenOptions::default()
        .send_timeout(std::time::Duration::from_millis(300));
    let server = proxy.listen_with("127.0.0.1:0", options).await.unwrap();
    let mut client = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    client.write_all(UPGRADE).await.unwrap();
    // The client reads nothing: the target's bytes fill the sockets, the proxy's write to
    // the client waits past the limit, and the tunnel drops both connections.
    let (sent, kind) = within(cut).await.unwrap();
    assert!(sent > 0, "the target sent nothing before it was cut off");
    assert!(
        matches!(
            kind,
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{kind:?}"
    );
    // The client's connection ends too, after what reached it.
    let mut rest = Vec::new();
    let ended = within(tokio::io::AsyncReadExt::read_to_end(&mut client, &mut rest)).await;
    assert!(rest.starts_with(b"HTTP/1.1 101"));
    assert!(ended.is_ok() || ended.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset));
}
