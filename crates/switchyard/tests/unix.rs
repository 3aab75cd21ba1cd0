//! Unix-socket upstreams (`unix:/path` and `unix+http://%2F…`, CHP's
//! `http+unix://` form; http-proxy-3's `target.socketPath`).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::convert::Infallible;
use std::path::PathBuf;

use common::*;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Body, Proxy, Target};

/// A hyper backend on a fresh unix socket, answering with the request URI
/// and Host. The socket file is removed when the guard drops.
struct UnixBackend {
    path: PathBuf,
}

impl Drop for UnixBackend {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn unix_backend(name: &str) -> UnixBackend {
    let path = std::env::temp_dir().join(format!("switchyard-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_owned());
                    let answer = format!("{} {}", req.uri(), host.unwrap_or_default());
                    Ok::<_, Infallible>(http::Response::new(Body::from(answer)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    UnixBackend { path }
}

/// `unix:/path/to.sock`, through `listen`; the client's Host goes through,
/// and `change_origin` sends `localhost`.
#[tokio::test]
async fn unix_path_target() {
    let b = unix_backend("plain");
    let target = Target::parse(&format!("unix:{}", b.path.display())).unwrap();
    assert_eq!(target.unix_socket(), Some(b.path.as_path()));
    let proxy = Proxy::builder().target(target.clone()).build().unwrap();
    let server = listen(&proxy).await;
    let (status, _, body) = get(&format!("http://{}/over/unix?x=1", server.local_addr())).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("/over/unix?x=1 {}", server.local_addr()));

    let proxy = Proxy::builder()
        .target(target)
        .configure(|o| o.change_origin = true)
        .build()
        .unwrap();
    let res = within(proxy.web(Request::get("/").header("host", "front").body(()).unwrap())).await;
    assert_eq!(body_bytes(res.into_body()).await, "/ localhost");
}

/// `unix+http://%2Fpath%2Fto.sock/prefix` (and CHP's `http+unix://`): the
/// percent-encoded socket path, with a path prefix.
#[tokio::test]
async fn percent_encoded_unix_targets() {
    let b = unix_backend("encoded");
    let encoded = b.path.display().to_string().replace('/', "%2F");
    for scheme in ["unix+http", "http+unix"] {
        let proxy = Proxy::to(&format!("{scheme}://{encoded}/prefix")).unwrap();
        let res = within(proxy.web(Request::get("/a").header("host", "h").body(()).unwrap())).await;
        assert_eq!(res.status(), 200, "{scheme}");
        assert_eq!(body_bytes(res.into_body()).await, "/prefix/a h");
    }
}

/// A missing socket is a 502 like a refused TCP port.
#[tokio::test]
async fn missing_socket_is_502() {
    let path = std::env::temp_dir().join(format!("switchyard-{}-missing.sock", std::process::id()));
    let proxy = Proxy::to(&format!("unix:{}", path.display())).unwrap();
    let res = within(proxy.web(Request::get("/").body(()).unwrap())).await;
    assert_eq!(res.status(), 502);
}

/// HTTP/2 with prior knowledge over a unix socket: the upstream sees
/// `:scheme` `http` and the client's `Host` as `:authority`, not the socket.
#[tokio::test]
async fn h2c_over_a_unix_socket() {
    let b = unix_backend("h2c");
    let target = Target::parse(&format!("unix:{}", b.path.display()))
        .unwrap()
        .with_protocol(switchyard::Protocol::Http2);
    let proxy = Proxy::builder().target(target).build().unwrap();
    let req = Request::get("/p?q=1")
        .header("host", "front")
        .body(())
        .unwrap();
    let res = within(proxy.web(req)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        body_bytes(res.into_body()).await,
        &b"http://front/p?q=1 front"[..]
    );
}
