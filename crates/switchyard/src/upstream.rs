//! The upstream client: an HTTP/1 connection pool of our own for the main path
//! ([`h1`]), pooled hyper-util clients for targets that may speak HTTP/2 (one per
//! target, so that `:authority` can carry the forwarded `Host` while the
//! connection goes to the target), all on one connector that speaks TCP, unix
//! sockets and TLS (rustls).

mod h1;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::Body;
use crate::error::{BoxError, ConfigError, ProxyError};
use crate::options::ClientOptions;
use crate::target::{Address, Protocol, Target};

pub(crate) type HttpClient = Client<Connector, Body>;

/// Builds a pooled client for `Auto` (false) or `Http2` (true); with a
/// destination, its connector connects there whatever the request URI names.
type MakeClient = dyn Fn(bool, Option<Uri>) -> HttpClient + Send + Sync;

/// How many per-target clients are kept (per protocol); past that, the one used
/// longest ago is dropped for each new one.
const TARGET_CLIENTS: usize = 1024;

/// hyper's own limit on response header fields, kept on the stack; setting any
/// value, even this one, makes it allocate a table per response.
const HYPER_MAX_HEADERS: usize = 100;

/// The HTTP/1 pool, the two pooled clients for the other [`Protocol`]s, and the
/// per-target clients.
#[derive(Clone)]
pub(crate) struct Upstream {
    http1: h1::Pool,
    auto: HttpClient,
    http2: HttpClient,
    make: Arc<MakeClient>,
    /// HTTP/2-capable targets: a client each, by target URL, for `Auto` and `Http2`.
    per_target: Arc<Mutex<[Recent<HttpClient>; 2]>>,
    /// `ClientOptions::max_response_header_size`, checked on each parsed head too:
    /// hyper's buffer limit only stops heads that arrive in pieces.
    max_response_head: usize,
}

/// A response head over `max_response_header_size`.
#[derive(Debug, thiserror::Error)]
#[error("response head of about {size} bytes exceeds the limit of {limit} bytes")]
pub(crate) struct HeadTooLarge {
    size: usize,
    limit: usize,
}

/// Connects to the address a pool URI names, with TLS when it says so; or, when
/// it has a destination, to that address whatever the URI.
#[derive(Clone)]
pub(crate) struct Connector {
    inner: Arc<ConnectorInner>,
    destination: Option<Uri>,
}

struct ConnectorInner {
    tls: TlsConnector,
    local_address: Option<IpAddr>,
    connect_timeout: Option<Duration>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("name resolution failed")]
    Resolve(#[source] io::Error),
    #[error("connection failed")]
    Connect(#[source] io::Error),
    #[error("TLS handshake failed")]
    Tls(#[source] io::Error),
    #[error("not an upstream address")]
    Address,
}

/// A connection to an upstream.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    TcpTls(Box<TlsStream<TcpStream>>),
    UnixTls(Box<TlsStream<UnixStream>>),
}

// === impl Upstream ===

impl Upstream {
    pub(crate) fn new(opts: &ClientOptions) -> Result<Self, ConfigError> {
        let base = tls_config(opts)?;
        // Only a limit other than hyper's own is set: setting one costs an
        // allocation per response.
        let max_headers =
            Some(opts.max_response_headers.max(1)).filter(|n| *n != HYPER_MAX_HEADERS);
        let connectors = [&[&b"http/1.1"[..]][..], &[b"h2", b"http/1.1"], &[b"h2"]].map(|alpn| {
            let mut tls = base.clone();
            tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(ConnectorInner {
                tls: TlsConnector::from(Arc::new(tls)),
                local_address: opts.local_address,
                connect_timeout: opts.connect_timeout,
            })
        });
        let http1 = {
            let mut b = hyper::client::conn::http1::Builder::new();
            b.preserve_header_case(opts.preserve_header_key_case)
                .max_buf_size(opts.max_response_header_size.max(8 * 1024));
            if let Some(n) = max_headers {
                b.max_headers(n);
            }
            let connector = Connector {
                inner: connectors[0].clone(),
                destination: None,
            };
            h1::Pool::new(
                connector,
                b,
                opts.pool_idle_timeout,
                opts.pool_max_idle_per_host,
            )
        };
        let opts = opts.clone();
        let make = move |h2_only: bool, destination: Option<Uri>| {
            let connector = Connector {
                inner: connectors[1 + usize::from(h2_only)].clone(),
                destination,
            };
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(opts.pool_idle_timeout)
                .pool_max_idle_per_host(opts.pool_max_idle_per_host)
                .http1_preserve_header_case(opts.preserve_header_key_case)
                .http1_max_buf_size(opts.max_response_header_size.max(8 * 1024))
                .http2_only(h2_only);
            if let Some(n) = max_headers {
                b.http1_max_headers(n);
            }
            if let Some(interval) = opts.http2_keep_alive_interval {
                b.http2_keep_alive_interval(interval)
                    .http2_keep_alive_while_idle(true);
            }
            b.build(connector)
        };
        Ok(Self {
            http1,
            auto: make(false, None),
            http2: make(true, None),
            make: Arc::new(make),
            per_target: Arc::new(Mutex::new([
                Recent::new(TARGET_CLIENTS),
                Recent::new(TARGET_CLIENTS),
            ])),
            max_response_head: opts.max_response_header_size.max(8 * 1024),
        })
    }

    /// Sends `req`, whose URI is `target`'s, to `target`.
    ///
    /// Over HTTP/1 the request line carries the path and `Host` the authority, so
    /// the shared client of the protocol serves. Over HTTP/2 `:authority` is taken
    /// from the URI, and it must agree with `Host` (RFC 9113 §8.3.1): a target that
    /// may speak HTTP/2 gets a client of its own whose connector always dials the
    /// target, and the URI is given the forwarded `Host` as its authority.
    pub(crate) fn request(&self, target: &Target, mut req: Request<Body>) -> ResponseFuture {
        let protocol = target.protocol();
        if protocol == Protocol::Http1 {
            return ResponseFuture::H1(Box::pin(self.http1.clone().send(req)));
        }
        let h2_only = protocol == Protocol::Http2;
        let Some(uri) = authority_from_host(&req, target) else {
            let shared = if h2_only { &self.http2 } else { &self.auto };
            return ResponseFuture::Client(shared.request(req));
        };
        let client = self
            .per_target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[usize::from(h2_only)]
        .get_or_insert(target.as_str(), || {
            (self.make)(h2_only, Some(req.uri().clone()))
        });
        *req.uri_mut() = uri;
        ResponseFuture::Client(client.request(req))
    }

    /// Refuses a response head over the limit. hyper's `max_buf_size` only
    /// fails a head still incomplete when the buffer is full; one read can
    /// overshoot it, and a head that arrives whole is parsed whatever its size.
    /// Dropping the response drops its connection (its body is unread).
    ///
    /// Also refuses an HTTP/1 answer framed both ways: with `Transfer-Encoding`
    /// and `Content-Length`, the body is read chunked but the length would be
    /// forwarded with it, and the two disagree (RFC 9112 §6.3 asks an
    /// intermediary to drop the length or treat the answer as an error; Node's
    /// parser, under CHP, refuses it).
    pub(crate) fn check_head<B>(&self, res: &http::Response<B>) -> Result<(), ProxyError> {
        // `HTTP/1.1 200 <reason>\r\n`, then `name: value\r\n` per field, then `\r\n`.
        let mut size = 32;
        let (mut chunked, mut length) = (false, false);
        for (k, v) in res.headers() {
            size += k.as_str().len() + v.len() + 4;
            chunked |= k == header::TRANSFER_ENCODING;
            length |= k == header::CONTENT_LENGTH;
        }
        if chunked && length {
            return Err(ProxyError::UpstreamMalformed(
                "response has both Transfer-Encoding and Content-Length".into(),
            ));
        }
        if size > self.max_response_head {
            return Err(ProxyError::UpstreamHeadTooLarge(Box::new(HeadTooLarge {
                size,
                limit: self.max_response_head,
            })));
        }
        Ok(())
    }
}

/// Why an upstream exchange failed: from the HTTP/1 pool or a hyper-util client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error(transparent)]
    H1(#[from] h1::H1Error),
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
}

/// The response head from [`Upstream::request`].
pub(crate) enum ResponseFuture {
    H1(Pin<Box<dyn Future<Output = Result<Response<Incoming>, h1::H1Error>> + Send>>),
    Client(hyper_util::client::legacy::ResponseFuture),
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::H1(f) => f.as_mut().poll(cx).map_err(SendError::H1),
            Self::Client(f) => Pin::new(f).poll(cx).map_err(SendError::Client),
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

fn tls_config(opts: &ClientOptions) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let builder = if opts.secure {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &opts.ca {
            let pem = ca.read()?;
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ConfigError::Tls(format!("bad CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::Tls(format!("bad CA certificate: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(ConfigError::Tls("the CA file holds no certificate".into()));
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    match &opts.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => {
            let chain = chain.read()?;
            let chain = CertificateDer::pem_slice_iter(&chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Tls(format!("bad client certificate PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key.read()?)
                .map_err(|e| ConfigError::Tls(format!("bad client key PEM: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::Tls(format!("client certificate: {e}")))
        }
    }
}

/// `secure: false`: accept any certificate, but still check the handshake
/// signatures, so the session is at least bound to the key presented.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// === impl Connector ===

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("local_address", &self.inner.local_address)
            .finish()
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("http1", &self.http1)
            .field("auto", &self.auto)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

/// A bounded map from target URL to its client. When it is full, a new target
/// takes the place of the one used longest ago: that client's idle connections
/// close, requests in flight keep theirs. Finding the victim scans the map, which
/// happens only when a target not seen recently arrives at a full map.
struct Recent<V> {
    capacity: usize,
    /// Counts uses; each entry keeps the count of its last use.
    clock: u64,
    entries: HashMap<String, (V, u64)>,
}

impl<V: Clone> Recent<V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
        }
    }

    fn get_or_insert(&mut self, key: &str, make: impl FnOnce() -> V) -> V {
        self.clock += 1;
        if let Some((value, used)) = self.entries.get_mut(key) {
            *used = self.clock;
            return value.clone();
        }
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let value = make();
        self.entries
            .insert(key.to_owned(), (value.clone(), self.clock));
        value
    }
}

/// The URI to give a per-target client: the request's path, the target's scheme
/// (`http` or `https`, a unix socket included) and the outgoing `Host` as the
/// authority. `None` when there is no usable `Host` or it names the target anyway.
fn authority_from_host(req: &Request<Body>, target: &Target) -> Option<Uri> {
    let host = req.headers().get(header::HOST)?;
    let authority = Authority::try_from(host.as_bytes()).ok()?;
    let scheme = if target.is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let uri = req.uri();
    if uri.authority() == Some(&authority) && uri.scheme() == Some(&scheme) {
        return None;
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    Uri::from_parts(parts).ok()
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let inner = self.inner.clone();
        let uri = self.destination.clone().unwrap_or(uri);
        Box::pin(async move {
            let (address, tls) = Address::from_uri(&uri).ok_or(ConnectError::Address)?;
            let connect = inner.connect(address, tls);
            match inner.connect_timeout {
                Some(limit) => tokio::time::timeout(limit, connect)
                    .await
                    .map_err(|_| ConnectError::Timeout(limit))?,
                None => connect.await,
            }
            .map(TokioIo::new)
        })
    }
}

impl ConnectorInner {
    async fn connect(&self, address: Address, tls: bool) -> Result<Stream, ConnectError> {
        match address {
            Address::Unix(path) => {
                let stream = UnixStream::connect(&path)
                    .await
                    .map_err(ConnectError::Connect)?;
                if tls {
                    let name =
                        ServerName::try_from("localhost").map_err(|_| ConnectError::Address)?;
                    let s = self
                        .tls
                        .connect(name, stream)
                        .await
                        .map_err(ConnectError::Tls)?;
                    Ok(Stream::UnixTls(Box::new(s)))
                } else {
                    Ok(Stream::Unix(stream))
                }
            }
            Address::Tcp { host, port } => {
                let stream = self.tcp(&host, port).await?;
                if tls {
                    let name = ServerName::try_from(host.as_str())
                        .map_err(|_| ConnectError::Address)?
                        .to_owned();
                    let s = self
                        .tls
                        .connect(name, stream)
                        .await
                        .map_err(ConnectError::Tls)?;
                    Ok(Stream::TcpTls(Box::new(s)))
                } else {
                    Ok(Stream::Tcp(stream))
                }
            }
        }
    }

    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(ConnectError::Resolve)?
                .collect(),
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            if let Some(local) = self.local_address
                && local.is_ipv4() != addr.is_ipv4()
            {
                continue;
            }
            match self.tcp_one(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(ConnectError::Connect(last))
    }

    async fn tcp_one(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(local) = self.local_address {
            socket.bind(SocketAddr::new(local, 0))?;
        }
        socket.set_nodelay(true)?;
        socket.connect(addr).await
    }
}

// === impl Stream ===

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let alpn_h2 = |alpn: Option<&[u8]>| alpn == Some(b"h2");
        match self {
            Self::Tcp(_) | Self::Unix(_) => Connected::new(),
            Self::TcpTls(s) if alpn_h2(s.get_ref().1.alpn_protocol()) => {
                Connected::new().negotiated_h2()
            }
            Self::UnixTls(s) if alpn_h2(s.get_ref().1.alpn_protocol()) => {
                Connected::new().negotiated_h2()
            }
            Self::TcpTls(_) | Self::UnixTls(_) => Connected::new(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::TcpTls($s) => $e,
            Stream::UnixTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
            Self::TcpTls(s) => s.is_write_vectored(),
            Self::UnixTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Maps a client error to one [`ProxyError`] kind.
pub(crate) fn classify(err: SendError, target: &str) -> ProxyError {
    match err {
        SendError::Client(err) => classify_client(err, target),
        SendError::H1(h1::H1Error::Connect(ConnectError::Timeout(d))) => {
            ProxyError::ConnectTimeout(d)
        }
        SendError::H1(err @ (h1::H1Error::Connect(_) | h1::H1Error::Uri)) => {
            ProxyError::UpstreamConnect {
                target: target.to_owned(),
                source: Box::new(err),
            }
        }
        SendError::H1(err) => classify_exchange(Box::new(err)),
    }
}

fn classify_client(err: hyper_util::client::legacy::Error, target: &str) -> ProxyError {
    if err.is_connect() {
        let source = std::error::Error::source(&err);
        if let Some(ConnectError::Timeout(d)) =
            source.and_then(|s| s.downcast_ref::<ConnectError>())
        {
            return ProxyError::ConnectTimeout(*d);
        }
        return ProxyError::UpstreamConnect {
            target: target.to_owned(),
            source: Box::new(err),
        };
    }
    classify_exchange(Box::new(err))
}

/// Sorts a failure after the connection was made: the client's request body,
/// an oversized or malformed response head, or else a reset.
fn classify_exchange(err: BoxError) -> ProxyError {
    // A failure of the request body is the client's doing.
    let chain = || {
        std::iter::successors(Some(&*err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
    };
    if let Some(c) = chain().find_map(|e| e.downcast_ref::<ClientBodyError>()) {
        return c.to_proxy_error();
    }
    for h in chain().filter_map(|e| e.downcast_ref::<hyper::Error>()) {
        if h.is_parse_too_large() {
            return ProxyError::UpstreamHeadTooLarge(err);
        }
        if h.is_parse() || h.is_parse_status() {
            return ProxyError::UpstreamMalformed(err);
        }
    }
    ProxyError::UpstreamReset(err)
}

/// The error an incoming body yields when the client stalls or goes away, so
/// that it can be told apart from an upstream failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("client idle for more than {0:?}")]
    Timeout(Duration),
    #[error("client request body failed")]
    Failed(#[source] BoxError),
}

impl ClientBodyError {
    /// A body the client framed wrongly (a bad chunk size line, say) is a 400;
    /// one cut short or reset means the client went away.
    pub(crate) fn to_proxy_error(&self) -> ProxyError {
        match self {
            Self::Timeout(d) => ProxyError::ClientTimeout(*d),
            Self::Failed(e) if malformed(&**e) => ProxyError::BadRequest("malformed request body"),
            Self::Failed(_) => ProxyError::ClientGone,
        }
    }
}

/// hyper reports a body it cannot decode as an I/O error of kind
/// `InvalidData` or `InvalidInput`, and one cut short as `UnexpectedEof`.
fn malformed(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source())
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            )
        })
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn a_full_map_drops_the_client_used_longest_ago() {
        let mut made = Vec::new();
        let mut recent = Recent::new(2);
        let mut get = |recent: &mut Recent<String>, key: &str| {
            recent.get_or_insert(key, || {
                made.push(key.to_owned());
                format!("client of {key}")
            })
        };
        assert_eq!(get(&mut recent, "a"), "client of a");
        get(&mut recent, "b");
        // `a` is used again, so `b` is now the one used longest ago.
        assert_eq!(get(&mut recent, "a"), "client of a");
        get(&mut recent, "c");
        // `a` kept its client; `b` lost its own and gets a new one.
        get(&mut recent, "a");
        get(&mut recent, "b");
        assert_eq!(made, ["a", "b", "c", "b"]);
        assert_eq!(recent.entries.len(), 2);
        assert!(recent.entries.contains_key("a") && recent.entries.contains_key("b"));
    }
}
