//! Real peers on 127.0.0.1 for the integration tests: hyper backends, a raw
//! TCP recorder, a client, and a timeout helper for every network await.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Response<switchyard::Body>> + Send>>
        + Send
        + Sync,
>;

/// A real HTTP/1.1 + HTTP/2 backend running `handler` for every request.
pub struct Backend {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn target(&self) -> switchyard::Target {
        switchyard::Target::parse(&self.url()).unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a backend whose handler is an async closure.
pub async fn backend<F, Fut>(f: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<switchyard::Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, f)
}

pub fn serve_on<F, Fut>(listener: TcpListener, f: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<switchyard::Body>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let f = Arc::new(f);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let f = f.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend { addr, task }
}

/// What an echo backend saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A backend that records each request and answers 200 with its path.
pub async fn recording_backend() -> (Backend, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let b = backend(move |req: Request<Incoming>| {
        let s = s.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let uri = parts.uri.to_string();
            s.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: uri.clone(),
                version: parts.version,
                headers: parts.headers,
                body,
            });
            Response::new(switchyard::Body::from(uri))
        }
    })
    .await;
    (b, seen)
}

/// A raw TCP peer that records every byte it receives and answers each
/// connection with `answer` once it has read `until` (or EOF).
pub async fn raw_backend(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let l = l.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut answered = false;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    l.lock().unwrap().extend_from_slice(&buf[..n]);
                    if !answered && contains(&l.lock().unwrap(), b"\r\n\r\n") {
                        answered = true;
                        let _ = s.write_all(answer).await;
                    }
                }
            });
        }
    });
    (addr, log)
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A pooled HTTP/1.1 client for driving the proxy.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// Sends a GET and returns status, headers and the whole body.
pub async fn get(url: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

pub async fn send(req: Request<Full<Bytes>>) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let res = within(client().request(req)).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = within(body.collect()).await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// Writes raw bytes to `addr` and reads until the peer closes or `until`
/// appears in what was read.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8], until: &[u8]) -> Vec<u8> {
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match within(s.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if !until.is_empty() && contains(&out, until) {
                    break;
                }
            }
        }
    }
    out
}

/// Every network await in a test goes through this: a generous safety net,
/// never a timing assertion.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out after 30 s (safety net)")
}

/// Starts a proxy with `listen` on an ephemeral port.
pub async fn listen(proxy: &switchyard::Proxy<impl switchyard::Hooks>) -> switchyard::Server {
    proxy.listen("127.0.0.1:0").await.unwrap()
}

/// A string body response.
pub fn text(status: u16, body: &'static str) -> Response<switchyard::Body> {
    let mut r = Response::new(switchyard::Body::from(body));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}
