//! Failures: every kind has one status, a generic body (never the upstream's
//! address or error text), and a hook.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use http::Request;
use switchyard::{Body, ErrorSide, Options, Proxy, ProxyError, Target};

fn target(addr: std::net::SocketAddr) -> Target {
    Target::parse(&format!("http://{addr}")).unwrap()
}

/// http-proxy-3's test lib/http-proxy ("ECONNREFUSED error
/// event"): a refused connection is a 502 whose body is generic and never
/// names the upstream.
#[tokio::test]
async fn refused_is_502_with_a_generic_body() {
    let (_socket, addr) = refusing_port();
    let proxy = Proxy::builder().target(target(addr)).build().unwrap();
    let server = listen(&proxy).await;
    let (status, headers, body) = get(&format!("http://{}/", server.local_addr())).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(body, "Bad Gateway");
    assert!(!body.contains(&addr.port().to_string()) && !body.contains("127.0.0.1"));
}

/// http-proxy-3's tests http/error-handling and
/// lib/http-proxy-passes-web-incoming ("errors via callback …
/// ECONNREFUSED"): `try_web` hands the typed error to the caller
/// instead of an error page.
#[tokio::test]
async fn refused_is_a_typed_connect_error() {
    let (_socket, addr) = refusing_port();
    let proxy = Proxy::builder().build().unwrap();
    let req = Request::get("/").body(()).unwrap();
    let err = within(proxy.try_web(req, &Options::to(target(addr))))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamConnect { .. }), "{err:?}");
    assert!(err.is_connect());
    assert_eq!(err.side(), ErrorSide::Upstream);
    assert_eq!(err.status().unwrap(), 502);
    // The address is in the error for logs, not in what clients see.
    assert!(err.to_string().contains(&addr.to_string()));
    assert!(!err.public_message().contains(&addr.to_string()));
}

/// http-proxy-3's test http/custom-proxy-error: the caller answers the typed
/// error itself (a 500 with a custom body) for an unreachable target.
#[tokio::test]
async fn the_caller_writes_a_custom_answer() {
    let (_socket, addr) = refusing_port();
    let proxy = Proxy::builder().target(target(addr)).build().unwrap();
    let front = serve_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        move |req: Request<hyper::body::Incoming>| {
            let proxy = proxy.clone();
            async move {
                match proxy.try_web(req, switchyard::Call::new()).await {
                    Ok(res) => res,
                    Err(err) => {
                        assert!(err.is_connect());
                        text(
                            500,
                            "Something went wrong. And we are reporting a custom error message.",
                        )
                    }
                }
            }
        },
    );
    let (status, _, body) = get(&format!("{}/", front.url())).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        "Something went wrong. And we are reporting a custom error message."
    );
}

/// An upstream answering bytes that are not HTTP is a 502
/// (`UpstreamMalformed`), not a hang or a panic.
#[tokio::test]
async fn garbage_upstream_answer_is_502() {
    let (addr, _) = raw_backend(b"SSH-2.0-OpenSSH_9.6\r\n\r\nnot http at all\r\n").await;
    let proxy = Proxy::builder().build().unwrap();
    let req = Request::get("/").body(()).unwrap();
    let err = within(proxy.try_web(req, &Options::to(target(addr))))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamMalformed(_)), "{err:?}");
    let server = listen(&Proxy::builder().target(target(addr)).build().unwrap()).await;
    let (status, _, body) = get(&format!("http://{}/", server.local_addr())).await;
    assert_eq!(status, 502);
    assert_eq!(body, "Bad Gateway");
}

/// http-proxy-3's test lib/http-proxy ("client closed if upstream closes
/// before…"): an upstream that closes without answering is a 502
/// (`UpstreamReset`).
#[tokio::test]
async fn upstream_closing_before_the_answer_is_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            // Read the head, then close without a word.
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        }
    });
    let proxy = Proxy::builder().build().unwrap();
    let req = Request::get("/").body(()).unwrap();
    let err = within(proxy.try_web(req, &Options::to(target(addr))))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamReset(_)), "{err:?}");
    assert_eq!(err.status().unwrap(), 502);
}

/// http-proxy-3's "Must set target or forward": no target is a typed
/// error and a 500, never a panic.
#[tokio::test]
async fn no_target_is_a_500() {
    let proxy = Proxy::builder().build().unwrap();
    let err = within(proxy.try_web(Request::get("/").body(()).unwrap(), &Options::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::NoTarget));
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 500);
    assert_eq!(body_bytes(res.into_body()).await, "Internal Server Error");
}

/// node-http-proxy #1618 ("never recovers after an upstream
/// outage"): once the upstream is back, the next request succeeds.
#[tokio::test]
async fn recovers_when_the_upstream_comes_back() {
    let (socket, addr) = refusing_port();
    let proxy = Proxy::builder().target(target(addr)).build().unwrap();
    let server = listen(&proxy).await;
    let url = format!("http://{}/", server.local_addr());
    assert_eq!(get(&url).await.0, 502);
    let _b = serve_on(socket.listen(16).unwrap(), |_| async { text(200, "back") });
    let (status, _, body) = get(&url).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"back"[..]));
}

/// `error_response` is what `web` and `listen` send: status and generic text.
#[tokio::test]
async fn error_response_matches_the_status_table() {
    let res = switchyard::error_response(&ProxyError::UpstreamTimeout(
        std::time::Duration::from_secs(1),
    ));
    assert_eq!(res.status(), 504);
    assert_eq!(body_bytes(res.into_body()).await, "Gateway Timeout");
    let res = switchyard::error_response(&ProxyError::BadRequest("x"));
    assert_eq!(res.status(), 400);
    let _: Body = res.into_body();
}
