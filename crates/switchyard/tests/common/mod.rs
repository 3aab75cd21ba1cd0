//! Real peers on 127.0.0.1 for the integration tests: hyper backends, a raw
//! TCP recorder, a client, and a timeout helper for every network await.
// Tests may unwrap; tungstenite's handshake callbacks return its large error type.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::result_large_err
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Connections accepted so far (to check pooling).
    pub accepted: Arc<AtomicUsize>,
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
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
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
    Backend {
        addr,
        task,
        accepted,
    }
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
    recording_backend_on("127.0.0.1:0").await
}

/// [`recording_backend`] on another address (`[::1]:0` for IPv6).
pub async fn recording_backend_on(addr: &str) -> (Backend, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler = move |req: Request<Incoming>| {
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
    };
    let b = serve_on(TcpListener::bind(addr).await.unwrap(), handler);
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

/// A value from /proc/self/status in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One HTTP/1.1 client connection (no pool): every request on it goes over
/// the same TCP connection, and the connection task reports when it ends.
pub async fn h1_conn(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<switchyard::Body>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let (send, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(tcp)))
        .await
        .unwrap();
    (send, tokio::spawn(conn))
}

/// One HTTP/2 prior-knowledge (h2c) client connection.
pub async fn h2c_conn(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<switchyard::Body> {
    h2_over(within(TcpStream::connect(addr)).await.unwrap()).await
}

/// An HTTP/2 client connection over `io` (a TCP stream, or a TLS one that agreed on h2
/// or on nothing), its task spawned.
pub async fn h2_over<IO>(io: IO) -> hyper::client::conn::http2::SendRequest<switchyard::Body>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = within(hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(io),
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// Collects a response body, under the safety net.
pub async fn body_bytes<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    within(body.collect()).await.unwrap().to_bytes()
}

/// A request body generated on the fly: `total` bytes in `chunk`-sized
/// frames, of unknown length (sent chunked), never held in memory at once.
pub struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    pub fn new(total: u64, chunk_size: usize) -> Self {
        Self {
            remaining: total,
            chunk: Bytes::from(vec![b'x'; chunk_size]),
        }
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        let data = self.chunk.slice(..n as usize);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }
}

/// Counts the data bytes of a body without keeping them.
pub async fn count_bytes<B>(mut body: B) -> u64
where
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut n = 0u64;
    while let Some(frame) = within(body.frame()).await {
        if let Ok(d) = frame.unwrap().into_data() {
            n += bytes::Buf::remaining(&d) as u64;
        }
    }
    n
}

/// A raw TCP peer that reads one request head, reports it on `head`, then
/// holds the connection without answering, and reports on `closed` when the
/// proxy closes its side.
pub async fn holding_backend() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (head_tx, head_rx) = tokio::sync::mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let head_tx = head_tx.clone();
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut reported = false;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = closed_tx.send(());
                            return;
                        }
                        Ok(n) => {
                            seen.extend_from_slice(&buf[..n]);
                            if !reported && contains(&seen, b"\r\n\r\n") {
                                reported = true;
                                let _ = head_tx.send(String::from_utf8_lossy(&seen).into_owned());
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, head_rx, closed_rx)
}

/// A test PKI made at test time: a CA, and a leaf it signed for
/// `localhost` and `127.0.0.1`.
#[derive(Clone)]
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchyard test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// A self-signed certificate as `openssl req -x509 -newkey … -subj /CN=<first
/// name> -addext subjectAltName=<names>` makes one: its own issuer, with
/// `basicConstraints CA:TRUE`. Its `ca_pem` is the certificate itself. The key
/// is ECDSA P-256 rather than openssl's RSA (ring makes no RSA keys); the CA
/// flag is what matters. `expired` makes it valid in 2000 only.
pub fn self_signed_ca(names: &[&str], expired: bool) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2000, 12, 31);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pki {
        ca_pem: cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config for the PKI's leaf, offering `alpn`.
pub fn tls_server_config(pki: &Pki, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain =
        vec![rustls::pki_types::CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A rustls client config trusting only `ca_pem`, offering `alpn`.
pub fn tls_client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An HTTPS backend (HTTP/1.1, and HTTP/2 when `alpn` offers `h2`).
pub async fn tls_backend<F, Fut>(pki: &Pki, alpn: &[&[u8]], f: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<switchyard::Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_server_config(pki, alpn));
    let f = Arc::new(f);
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let f = f.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(move |req| {
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        task,
        accepted,
    }
}

/// One HTTP/1.1 or HTTP/2 client connection over TLS to `addr`, verified
/// against `ca_pem` for the name `localhost`. Returns the negotiated ALPN.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem, alpn));
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within(connector.connect(name, tcp)).await.unwrap();
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (tls, negotiated)
}

/// A WebSocket echo server on a raw TCP listener (tokio-tungstenite): it
/// echoes text and binary messages, answers pings, and closes with code
/// 4001 "server bye" when it receives the text `close-me`. It records the
/// headers of every handshake.
pub async fn ws_echo_backend() -> (SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let callback =
                    move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, res| {
                        s.lock().unwrap().push(req.headers().clone());
                        Ok(res)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let echo = match msg {
                        Message::Text(t) if t.as_str() == "close-me" => {
                            let _ = ws
                                .close(Some(CloseFrame {
                                    code: CloseCode::from(4001),
                                    reason: "server bye".into(),
                                }))
                                .await;
                            continue;
                        }
                        m @ (Message::Text(_) | Message::Binary(_)) => m,
                        _ => continue,
                    };
                    if ws.send(echo).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A backend that answers `answer` and sends what it saw on a channel, so a
/// test can wait for a request that is not on the client's path (forward).
pub async fn channel_backend(
    answer: &'static str,
) -> (Backend, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let b = backend(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let _ = tx.send(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                version: parts.version,
                headers: parts.headers,
                body,
            });
            Response::new(switchyard::Body::from(answer))
        }
    })
    .await;
    (b, rx)
}

/// A port that refuses connections (bound, not listening) until `listen`
/// is called on the returned socket.
pub fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}
