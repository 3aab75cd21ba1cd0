//! TLS both ways, with certificates made by rcgen at test time (http-proxy-3's
//! `secure`, `ca` and `ssl`; upstream certificates are verified by default).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchyard::{
    Body, ListenOptions, Options, Pem, Protocol, Proxy, ProxyError, Target, TlsConfig,
};

async fn https_echo(pki: &Pki, alpn: &[&[u8]]) -> Backend {
    tls_backend(pki, alpn, |req: Request<Incoming>| async move {
        let answer = format!(
            "{:?} {} {}",
            req.version(),
            req.uri(),
            req.headers()["host"].to_str().unwrap()
        );
        http::Response::new(Body::from(answer))
    })
    .await
}

fn https_target(b: &Backend) -> Target {
    Target::parse(&format!("https://localhost:{}", b.addr.port())).unwrap()
}

/// http-proxy-3's test lib/https-proxy (HTTP→HTTPS) and its `ca`: an HTTPS
/// upstream signed by a custom CA is verified against `ClientOptions.ca`.
#[tokio::test]
async fn https_upstream_with_a_custom_ca() {
    let pki = pki();
    let b = https_echo(&pki, &[b"http/1.1"]).await;
    let proxy = Proxy::builder()
        .target(https_target(&b))
        .configure_client(|c| c.ca = Some(Pem::from(pki.ca_pem.as_str())))
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/s").header("host", "front").body(()).unwrap())).await;
    assert_eq!(res.status(), 200);
    assert_eq!(body_bytes(res.into_body()).await, "HTTP/1.1 /s front");
}

/// http-proxy-3's test lib/https-proxy ("`secure:true` rejects a
/// self-signed certificate"): verification is on by default, and a
/// certificate from an unknown CA is a 502 connect error.
#[tokio::test]
async fn unknown_ca_is_rejected_by_default() {
    let pki = pki();
    let b = https_echo(&pki, &[b"http/1.1"]).await;
    let proxy = Proxy::builder().build().unwrap();
    let err = within(proxy.try_web(
        Request::get("/").body(()).unwrap(),
        &Options::to(https_target(&b)),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, ProxyError::UpstreamConnect { .. }), "{err:?}");
    let res = within(proxy.web_with(
        Request::get("/").body(()).unwrap(),
        &Options::to(https_target(&b)),
    ))
    .await;
    assert_eq!(res.status(), 502);
}

/// http-proxy-3's test http/proxy-https-to-https (`secure: false`): with
/// verification off, the self-signed upstream is accepted.
#[tokio::test]
async fn secure_false_accepts_any_certificate() {
    let pki = pki();
    let b = https_echo(&pki, &[b"http/1.1"]).await;
    let proxy = Proxy::builder()
        .target(https_target(&b))
        .configure_client(|c| c.secure = false)
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 200);
}

/// A proxy to `https://127.0.0.1:<port>` of `b`, trusting `ca_pem` alone.
fn proxy_trusting(b: &Backend, ca_pem: &str) -> Proxy {
    let target = Target::parse(&format!("https://127.0.0.1:{}", b.addr.port())).unwrap();
    Proxy::builder()
        .target(target)
        .configure_client(|c| c.ca = Some(Pem::from(ca_pem)))
        .build()
        .unwrap()
}

/// A target whose certificate is self-signed with `CA:TRUE` (what `openssl req
/// -x509` makes) is reachable when that certificate is the `ca`, as with
/// OpenSSL: a trust anchor presented by the server is the whole chain.
#[tokio::test]
async fn a_self_signed_ca_certificate_given_as_ca_is_reachable() {
    let pki = self_signed_ca(&["127.0.0.1"], false);
    let b = https_echo(&pki, &[b"http/1.1"]).await;
    let proxy = proxy_trusting(&b, &pki.ca_pem);
    for path in ["/a", "/b"] {
        let res = within(proxy.web(Request::get(path).header("host", "f").body(()).unwrap())).await;
        assert_eq!(res.status(), 200, "{path}");
        let want = format!("HTTP/1.1 {path} f");
        assert_eq!(body_bytes(res.into_body()).await, want.as_str());
    }
}

/// Only the anchor itself, valid now and naming the target, gets through: a
/// different self-signed certificate, an expired one and one for another name
/// are 502s whose error (the logged chain) says which check failed.
#[tokio::test]
async fn other_self_signed_certificates_stay_refused() {
    let expired = self_signed_ca(&["127.0.0.1"], true);
    let elsewhere = self_signed_ca(&["other.test"], false);
    let cases = [
        (
            self_signed_ca(&["127.0.0.1"], false),
            self_signed_ca(&["127.0.0.1"], false).ca_pem,
            "not one of the `ca` certificates",
        ),
        (expired.clone(), expired.ca_pem, "expired"),
        (elsewhere.clone(), elsewhere.ca_pem, "not valid for name"),
    ];
    for (served, ca, why) in cases {
        let b = https_echo(&served, &[b"http/1.1"]).await;
        let proxy = proxy_trusting(&b, &ca);
        let err = within(proxy.try_web(
            Request::get("/").body(()).unwrap(),
            switchyard::Call::new().target(&proxy_target(&b)),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(err, ProxyError::UpstreamConnect { .. }),
            "{why}: {err:?}"
        );
        let chain = switchyard::error_chain(&err);
        assert!(chain.contains(why), "{why}: {chain}");
        let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
        assert_eq!(res.status(), 502, "{why}");
    }
}

fn proxy_target(b: &Backend) -> Target {
    Target::parse(&format!("https://127.0.0.1:{}", b.addr.port())).unwrap()
}

async fn tls_listen(proxy: &Proxy, pki: &Pki) -> switchyard::Server {
    proxy
        .listen_with(
            "127.0.0.1:0",
            ListenOptions::default()
                .tls(TlsConfig::from_pem(pki.cert_pem.as_str(), pki.key_pem.as_str()).unwrap()),
        )
        .await
        .unwrap()
}

/// http-proxy-3's test http/proxy-https-to-http and lib/https-proxy
/// (HTTPS→HTTP), its `listen` with `ssl`: `listen_with` TLS serves HTTPS;
/// with `xfwd` the upstream learns the client used https on port 443.
#[tokio::test]
async fn tls_listener_to_an_http_upstream() {
    let pki = pki();
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = tls_listen(&proxy, &pki).await;
    let (tls, alpn) = tls_connect(server.local_addr(), &pki.ca_pem, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(tls)))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/secure")
        .header("host", "localhost")
        .body(Body::empty())
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_bytes(res.into_body()).await, "/secure");
    let h = seen.lock().unwrap()[0].headers.clone();
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-port"], "443");
}

/// http-proxy-3's test http/proxy-http2-to-http and lib/http2-proxy: an HTTP/2
/// client (ALPN h2) to the TLS listener, in front of an HTTP/1 upstream;
/// `:authority` becomes Host and X-Forwarded-Host keeps its port.
#[tokio::test]
async fn h2_over_tls_to_an_http1_upstream() {
    let pki = pki();
    let (b, seen) = recording_backend().await;
    let proxy = Proxy::builder()
        .target(b.target())
        .configure(|o| o.xfwd = true)
        .build()
        .unwrap();
    let server = tls_listen(&proxy, &pki).await;
    let (tls, alpn) = tls_connect(server.local_addr(), &pki.ca_pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let mut send = h2_over(tls).await;
    let req = Request::get("https://localhost:8443/h2")
        .body(Body::empty())
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(body_bytes(res.into_body()).await, "/h2");
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(s.version, http::Version::HTTP_11);
    assert_eq!(s.headers["host"], "localhost:8443");
    assert_eq!(s.headers["x-forwarded-host"], "localhost:8443");
    assert_eq!(s.headers["x-forwarded-port"], "8443");
    assert_eq!(s.headers["x-forwarded-proto"], "https");
}

/// http-proxy-3's test http/proxy-https-to-https and http/proxy-http2-to-https:
/// TLS on both sides.
#[tokio::test]
async fn tls_listener_to_an_https_upstream() {
    let pki = pki();
    let b = https_echo(&pki, &[b"http/1.1"]).await;
    let proxy = Proxy::builder()
        .target(https_target(&b))
        .configure(|o| o.change_origin = true)
        .configure_client(|c| c.ca = Some(Pem::from(pki.ca_pem.as_str())))
        .build()
        .unwrap();
    let server = tls_listen(&proxy, &pki).await;
    let (tls, _) = tls_connect(server.local_addr(), &pki.ca_pem, &[b"http/1.1"]).await;
    let (mut send, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(tls)))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/both")
        .header("host", "front")
        .body(Body::empty())
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    let want = format!("HTTP/1.1 /both localhost:{}", b.addr.port());
    assert_eq!(body_bytes(res.into_body()).await, want);
}

/// http-proxy-3's test http/proxy-http2-to-http2 (and http/customFetch): with
/// `Protocol::Auto`, a TLS upstream that offers h2 by ALPN is spoken to in
/// HTTP/2, verified as the target's name (`localhost`), with the client's
/// `Host` in `:authority` as well as in `Host` (RFC 9113 §8.3.1).
#[tokio::test]
async fn h2_upstream_over_tls_by_alpn() {
    let pki = pki();
    let b = https_echo(&pki, &[b"h2", b"http/1.1"]).await;
    let proxy = Proxy::builder()
        .target(https_target(&b).with_protocol(Protocol::Auto))
        .configure_client(|c| c.ca = Some(Pem::from(pki.ca_pem.as_str())))
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/x").header("host", "front").body(()).unwrap())).await;
    assert_eq!(res.status(), 200);
    let body = body_bytes(res.into_body()).await;
    assert_eq!(body, &b"HTTP/2.0 https://front/x front"[..]);
}

/// WebSocket over the TLS listener (wss) gets
/// `X-Forwarded-Proto: wss`.
#[tokio::test]
async fn wss_through_the_tls_listener() {
    let pki = pki();
    let (up, seen) = ws_echo_backend().await;
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{up}")).unwrap())
        .configure(|o| {
            o.ws = true;
            o.xfwd = true;
        })
        .build()
        .unwrap();
    let server = tls_listen(&proxy, &pki).await;
    let (tls, _) = tls_connect(server.local_addr(), &pki.ca_pem, &[b"http/1.1"]).await;
    let (mut ws, _) = within(tokio_tungstenite::client_async("wss://localhost/ws", tls))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("secret"))
        .await
        .unwrap();
    let back = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(
        back,
        tokio_tungstenite::tungstenite::Message::text("secret")
    );
    assert_eq!(seen.lock().unwrap()[0]["x-forwarded-proto"], "wss");
}

/// `Proxy::upstream_tls`: `reload` reads the `ca` file again for new connections (a
/// file that does not load leaves the configuration as it was), and `replace` swaps in
/// a configuration of the caller's.
#[tokio::test]
async fn upstream_tls_reload_and_replace_apply_to_new_connections() {
    let (first, second) = (pki(), pki());
    let b = https_echo(&second, &[b"http/1.1"]).await;
    let dir = std::env::temp_dir().join(format!("switchyard-upstream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &first.ca_pem).unwrap();
    let target = Target::parse(&format!("https://localhost:{}", b.addr.port())).unwrap();
    let proxy = Proxy::builder()
        .target(target)
        .configure_client(|c| c.ca = Some(Pem::File(ca.clone())))
        .build()
        .unwrap();
    let status = || async {
        within(proxy.web(Request::get("/").header("host", "f").body(()).unwrap()))
            .await
            .status()
    };
    assert_eq!(status().await, 502, "the target's CA is not trusted yet");

    std::fs::write(&ca, "not a certificate").unwrap();
    let err = proxy.upstream_tls().reload().unwrap_err();
    assert!(err.to_string().contains("CA"), "{err}");
    assert_eq!(status().await, 502);

    std::fs::write(&ca, &second.ca_pem).unwrap();
    proxy.upstream_tls().reload().unwrap();
    assert_eq!(status().await, 200);

    // A configuration that trusts nothing of ours: new connections fail again (the
    // target closes none, so the pooled one still works: drop it first).
    let proxy = {
        let fresh = Proxy::builder()
            .target(Target::parse(&format!("https://localhost:{}", b.addr.port())).unwrap())
            .configure_client(|c| c.ca = Some(Pem::from(second.ca_pem.as_str())))
            .build()
            .unwrap();
        let untrusting = (*tls_client_config(&first.ca_pem, &[])).clone();
        fresh.upstream_tls().replace(untrusting);
        fresh
    };
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 502);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Over TLS, the protocol ALPN agreed on is the one served: a client that agreed on
/// `http/1.1` and then sends HTTP/2's preface is not answered with HTTP/2 (hyper's
/// HTTP/1.1 side closes the connection on the `HTTP/2.0` request line). A
/// client that named no protocol is served what its first bytes are: HTTP/2 here.
#[tokio::test]
async fn alpn_decides_the_protocol_and_without_it_the_first_bytes_do() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pki();
    let (b, _seen) = recording_backend().await;
    let proxy = Proxy::builder().target(b.target()).build().unwrap();
    let server = tls_listen(&proxy, &pki).await;

    let (mut tls, alpn) = tls_connect(server.local_addr(), &pki.ca_pem, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    // The preface and an empty SETTINGS frame.
    let mut h2_start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_start.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tls.write_all(&h2_start).await.unwrap();
    let mut answer = Vec::new();
    let _ = within(tls.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
        "HTTP/2 frames after ALPN http/1.1: {answer:?}"
    );

    let (tls, alpn) = tls_connect(server.local_addr(), &pki.ca_pem, &[]).await;
    assert_eq!(alpn, None);
    let mut send = h2_over(tls).await;
    let req = Request::get("https://localhost/prior")
        .body(Body::empty())
        .unwrap();
    let res = within(send.send_request(req)).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(body_bytes(res.into_body()).await, "/prior");
}
