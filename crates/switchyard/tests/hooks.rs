//! Hooks in place of http-proxy-3's events (`start`, `proxyReq`, `proxyRes`,
//! `end`, `error`, `econnreset`, `proxyReqWs`, `open`, `close`), and the one
//! end hook with each request's outcome. WebSocket hooks
//! (`on_proxy_request_ws`, `on_open`, a tunnel's outcome) are in
//! `websocket.rs`.
//!
//! Not applicable: middleware/gzip (compression is a tower layer in front
//! of the proxy, not an engine feature).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Request, Response, request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use switchyard::{
    Body, ErrorSide, Flow, Hooks, Options, Outcome, Proxy, ProxyError, Retry, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a test keeps of an [`Outcome`].
#[derive(Debug, Clone)]
struct Ended {
    status: Option<u16>,
    error: Option<String>,
    client_gone: bool,
    ended_early: Option<ErrorSide>,
    bytes_in: u64,
    bytes_out: u64,
    head_time: Option<std::time::Duration>,
    duration: std::time::Duration,
    retries: u32,
}

impl Ended {
    fn of(o: &Outcome<'_>) -> Self {
        Self {
            status: o.status.map(|s| s.as_u16()),
            error: o.error.map(ToString::to_string),
            client_gone: matches!(o.proxy_error(), Some(ProxyError::ClientGone)),
            ended_early: o.ended_early,
            bytes_in: o.bytes_in,
            bytes_out: o.bytes_out,
            head_time: o.head_time,
            duration: o.duration,
            retries: o.retries,
        }
    }
}

/// Hooks that log every phase, and can short-circuit at start or response.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    respond_at_start: bool,
    take_over_response: bool,
    ends: Option<mpsc::UnboundedSender<Ended>>,
}

impl Recorder {
    fn push(&self, s: impl Into<String>) {
        self.log.lock().unwrap().push(s.into());
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Hooks for Recorder {
    type Ctx = u32;

    fn new_ctx(&self) -> u32 {
        7
    }

    fn on_start(&self, ctx: &mut u32, req: &request::Parts, target: &Target) -> Flow {
        self.push(format!("start {} {} {}", req.uri, target.port(), ctx));
        *ctx += 1;
        if self.respond_at_start {
            return Flow::Respond(text(403, "stopped at start"));
        }
        Flow::Continue
    }

    fn on_proxy_request(&self, ctx: &mut u32, req: &mut request::Parts) -> Flow {
        self.push(format!("proxy_request {ctx}"));
        req.headers
            .insert("x-from-hook", HeaderValue::from_static("1"));
        Flow::Continue
    }

    fn on_proxy_response(&self, _: &mut u32, res: &mut Response<Body>) -> Flow {
        self.push(format!("proxy_response {}", res.status().as_u16()));
        if self.take_over_response {
            return Flow::Respond(text(299, "taken over"));
        }
        res.headers_mut()
            .insert("x-seen-by-hook", HeaderValue::from_static("yes"));
        Flow::Continue
    }

    fn on_end(&self, ctx: u32, outcome: &Outcome<'_>) {
        let e = Ended::of(outcome);
        self.push(format!(
            "end {:?} out={} err={} {ctx}",
            e.status,
            e.bytes_out,
            e.error.is_some()
        ));
        if let Some(tx) = &self.ends {
            let _ = tx.send(e);
        }
    }
}

/// http-proxy-3's event order for a successful web request (start →
/// proxyReq → proxyRes → end), with per-request state carried between
/// phases; the request hook's header reaches the upstream (its test
/// lib/http-proxy-passes-web-incoming "proxyReq event can modify headers"),
/// the response hook's the client ("proxyRes args").
#[tokio::test]
async fn phases_run_in_order_with_shared_state() {
    let (b, seen) = recording_backend().await;
    let hooks = Recorder::default();
    let proxy = Proxy::builder()
        .target(b.target())
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/p").body(()).unwrap())).await;
    assert_eq!(res.headers()["x-seen-by-hook"], "yes");
    assert_eq!(body_bytes(res.into_body()).await, "/p");
    assert_eq!(seen.lock().unwrap()[0].headers["x-from-hook"], "1");
    assert_eq!(
        hooks.log(),
        [
            format!("start /p {} 7", b.addr.port()),
            "proxy_request 8".into(),
            "proxy_response 200".into(),
            "end Some(200) out=2 err=false 8".into(),
        ]
    );
}

/// `on_start` can answer by itself; the upstream is never contacted.
#[tokio::test]
async fn on_start_can_answer() {
    let (b, _) = recording_backend().await;
    let hooks = Recorder {
        respond_at_start: true,
        ..Recorder::default()
    };
    let proxy = Proxy::builder()
        .target(b.target())
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 403);
    assert_eq!(body_bytes(res.into_body()).await, "stopped at start");
    assert_eq!(b.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(hooks.log()[1..], ["end Some(403) out=16 err=false 8"]);
}

/// `on_proxy_response` can take the response over (its own answer replaces
/// the upstream's).
#[tokio::test]
async fn on_proxy_response_can_take_over() {
    let (b, _) = recording_backend().await;
    let hooks = Recorder {
        take_over_response: true,
        ..Recorder::default()
    };
    let proxy = Proxy::builder()
        .target(b.target())
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 299);
    assert_eq!(body_bytes(res.into_body()).await, "taken over");
}

/// A failed call (http-proxy-3's `error` event) ends once, in `on_end`, with
/// the typed error, no status, the upstream as the side that ended it, and
/// no time to a head.
#[tokio::test]
async fn on_end_sees_a_failure_once() {
    let (_socket, addr) = refusing_port();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hooks = Recorder {
        ends: Some(tx),
        ..Recorder::default()
    };
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{addr}")).unwrap())
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 502);
    let e = within(rx.recv()).await.unwrap();
    assert_eq!(e.status, None);
    assert!(e.error.unwrap().starts_with("connect to upstream"));
    assert_eq!(e.ended_early, Some(ErrorSide::Upstream));
    assert_eq!((e.head_time, e.bytes_out, e.retries), (None, 0, 0));
    drop(proxy);
    assert!(rx.try_recv().is_err(), "one end per call");
    assert_eq!(
        hooks.log().iter().filter(|l| l.starts_with("end")).count(),
        1
    );
}

/// http-proxy-3's `econnreset` (node-http-proxy #1455): a client that goes
/// away before the answer ends the call in `on_end` as the client's doing,
/// and the upstream request is cancelled.
#[tokio::test]
async fn on_end_when_the_client_leaves() {
    let (addr, mut heads, mut closed) = holding_backend().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hooks = Recorder {
        ends: Some(tx),
        ..Recorder::default()
    };
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{addr}")).unwrap())
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let mut c = within(tokio::net::TcpStream::connect(server.local_addr()))
        .await
        .unwrap();
    c.write_all(b"GET /gone?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    within(heads.recv()).await.unwrap();
    drop(c);
    let e = within(rx.recv()).await.unwrap();
    assert!(e.client_gone, "{e:?}");
    assert_eq!(e.status, None);
    assert_eq!(e.ended_early, Some(ErrorSide::Downstream));
    within(closed.recv()).await.unwrap();
}

/// The outcome of a POST: the request body's bytes in, the answer's bytes
/// out, the head before the end.
#[tokio::test]
async fn on_end_counts_bytes_both_ways() {
    let (b, _) = recording_backend().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hooks = Recorder {
        ends: Some(tx),
        ..Recorder::default()
    };
    let proxy = Proxy::builder()
        .target(b.target())
        .hooks(hooks)
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let req = Request::post(format!("http://{}/upload", server.local_addr()))
        .body(Full::new(Bytes::from_static(b"0123456789")))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"/upload"[..]));
    let e = within(rx.recv()).await.unwrap();
    assert_eq!((e.status, e.bytes_in, e.bytes_out), (Some(200), 10, 7));
    assert_eq!((e.ended_early, e.error), (None, None));
    assert!(e.head_time.unwrap() <= e.duration);
}

/// A body the upstream stalls ends as the upstream's doing, with the body's
/// error; the retries of a policy are counted.
#[tokio::test]
async fn on_end_sees_a_cut_body_and_retries() {
    let (addr, _) = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hooks = Recorder {
        ends: Some(tx),
        ..Recorder::default()
    };
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("http://{addr}")).unwrap())
        .configure(|o| o.body_timeout = Some(std::time::Duration::from_millis(50)))
        .hooks(hooks.clone())
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    let _ = within(res.into_body().collect()).await;
    let e = within(rx.recv()).await.unwrap();
    assert_eq!((e.status, e.bytes_out), (Some(200), 7));
    assert_eq!(e.ended_early, Some(ErrorSide::Upstream));
    assert!(e.error.unwrap().starts_with("body idle"));

    let unavailable = backend(|_| async { text(503, "busy") }).await;
    let proxy = Proxy::builder()
        .target(unavailable.target())
        .retry(Retry::default().max_retries_on_503(2))
        .hooks(hooks)
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 503);
    drop(res);
    let e = within(rx.recv()).await.unwrap();
    assert_eq!((e.status, e.retries), (Some(503), 2));
    assert_eq!(
        e.ended_early,
        Some(ErrorSide::Downstream),
        "the body was dropped unread"
    );
}

/// The builder's closure hooks (the README's `proxy.on("proxyReq")`
/// example): `on_proxy_request` adds a header, `on_proxy_response` edits the
/// answer, `on_end` reports the bytes sent.
#[tokio::test]
async fn closure_hooks() {
    let (b, seen) = recording_backend().await;
    let ends = Arc::new(Mutex::new(Vec::new()));
    let e = ends.clone();
    let proxy = Proxy::builder()
        .target(b.target())
        .on_proxy_request(|req| {
            req.headers
                .insert("x-special-proxy-header", HeaderValue::from_static("foobar"));
        })
        .on_proxy_response(|res| {
            res.headers_mut().remove("content-length");
            res.headers_mut()
                .insert("x-proxied", HeaderValue::from_static("1"));
        })
        .on_end(move |o| e.lock().unwrap().push((o.status, o.bytes_out)))
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/abc").body(()).unwrap())).await;
    assert_eq!(res.headers()["x-proxied"], "1");
    assert_eq!(body_bytes(res.into_body()).await, "/abc");
    assert_eq!(
        seen.lock().unwrap()[0].headers["x-special-proxy-header"],
        "foobar"
    );
    assert_eq!(*ends.lock().unwrap(), [(Some(http::StatusCode::OK), 4)]);
}

/// http-proxy-3's test middleware/modify-response (Rust equivalent): a response
/// hook rewrites the body as it streams.
#[tokio::test]
async fn response_hook_rewrites_the_body_as_it_streams() {
    let b = backend(|_| async { text(200, "hello world") }).await;
    let proxy = Proxy::builder()
        .target(b.target())
        .on_proxy_response(|res| {
            let body = std::mem::take(res.body_mut());
            *res.body_mut() =
                Body::new(body.map_frame(|f| f.map_data(|d| Bytes::from(d.to_ascii_uppercase()))));
        })
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(body_bytes(res.into_body()).await, "HELLO WORLD");
}

/// http-proxy-3's `selfHandleResponse` and its test
/// lib/http-proxy-passes-web-incoming: the rewriting passes are skipped and the
/// caller gets the upstream's response as it is, to answer as it likes.
#[tokio::test]
async fn self_handle_response_skips_the_passes() {
    let b = backend(|_| async {
        let mut r = text(302, "res from proxied server");
        r.headers_mut().insert(
            "location",
            HeaderValue::from_static("http://internal.test/x"),
        );
        r.headers_mut().insert(
            "set-cookie",
            HeaderValue::from_static("a=1; Domain=internal.test"),
        );
        r
    })
    .await;
    let mut opts = Options::to(b.target());
    opts.self_handle_response = true;
    opts.host_rewrite = Some("public.test".into());
    opts.cookie_domain_rewrite = switchyard::CookieRewrite::all("public.test");
    let proxy = Proxy::builder().build().unwrap();
    let res = within(proxy.try_web(Request::get("/").body(()).unwrap(), &opts))
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "http://internal.test/x");
    assert_eq!(res.headers()["set-cookie"], "a=1; Domain=internal.test");
    let body = body_bytes(res.into_body()).await;
    assert_eq!(body, "res from proxied server");
}

/// http-proxy-3's test lib/http-proxy-passes-web-incoming
/// ("proxyReq is skipped with `expect: 100-continue`"): here the hook runs
/// before anything is sent, so it applies to `Expect: 100-continue`
/// requests too; the client gets its `100 Continue` and the body goes
/// through.
#[tokio::test]
async fn expect_100_continue_with_a_request_hook() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .on_proxy_request(|req| {
            req.headers
                .insert("x-hook", HeaderValue::from_static("ran"));
        })
        .build()
        .unwrap();
    let server = listen(&proxy).await;
    let mut c = within(tokio::net::TcpStream::connect(server.local_addr()))
        .await
        .unwrap();
    c.write_all(
        b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = within(c.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue"));
    c.write_all(b"body").await.unwrap();
    let mut out = Vec::new();
    within(c.read_to_end(&mut out)).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(s.headers["x-hook"], "ran");
    assert_eq!(&s.body[..], b"body");
}

/// http-proxy-3's test middleware/body-decoder (Rust equivalent): an app that
/// has read and changed the body hands `web` a new one; its framing comes
/// from the new body, not from the client's `Content-Length`.
#[tokio::test]
async fn rewritten_request_body_gets_its_own_length() {
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    let front = serve_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let changed = String::from_utf8_lossy(&body).replace("}", ",\"added\":true}");
                proxy
                    .web(Request::from_parts(parts, Body::from(changed)))
                    .await
            }
        },
    );
    let req = Request::post(format!("{}/json", front.url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
        .unwrap();
    assert_eq!(send(req).await.0, 200);
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(&s.body[..], b"{\"a\":1,\"added\":true}");
    assert_eq!(s.headers["content-length"], "20");
}
