//! Serving HTTP: one accept loop for any `tower::Service`, on TCP or UNIX sockets, with
//! or without TLS, HTTP/1.1 and HTTP/2, with limits on request heads and a graceful
//! drain. [`Proxy::listen`] runs a proxy on it; a program of your own serves its other
//! listeners (an API, metrics) the same way.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use switchyard::server::{ListenOptions, Listener, serve};
//!
//! let listener = Listener::bind("127.0.0.1:0").await?;
//! let hello = switchyard::server::service_fn(|_req| async {
//!     Ok::<_, Infallible>(http::Response::new(switchyard::Body::from("hello")))
//! });
//! // One service per connection; `conn` tells who is connected.
//! let server = serve(listener, move |_conn| hello.clone(), ListenOptions::default());
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! With [`ListenOptions::max_connections`], a listener at its limit accepts nothing
//! until a connection ends; the system queues the new ones meanwhile.
//!
//! Each connection goes through these stages: accepted (counted by the drain from here
//! on), TLS handshake (within [`ListenOptions::tls_handshake_timeout`]), then HTTP/1.1 or
//! HTTP/2 (prior knowledge in clear text, ALPN over TLS). Every request head is checked
//! against the size limits before the service sees it (`414`, `431`, the connection
//! closed after the answer). On HTTP/1 the keep-alive timeout ends a connection idle
//! between requests, and the request-head timeout one whose head is not complete in time
//! after its first byte (with a `408`); on any connection the send timeout ends one whose
//! client takes none of what is written to it. [`Server::shutdown`] closes the listener, lets
//! in-flight requests finish (keep-alive connections are closed after their response,
//! TLS handshakes in progress are waited for) until
//! [`ListenOptions::shutdown_timeout`], then closes what is left.

mod conn;
mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, ToSocketAddrs, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower_service::Service;

pub use self::tls::TlsConfig;

use crate::drain::Drain;
use crate::error::{BoxError, ServerError};
use crate::hooks::Hooks;
use crate::proxy::hygiene::HeadLimits;
use crate::proxy::{ConnInfo, Proxy};

/// A bound listening socket, TCP or UNIX, ready for [`serve`].
#[derive(Debug)]
pub struct Listener {
    kind: Kind,
    local_addr: LocalAddr,
}

#[derive(Debug)]
enum Kind {
    Tcp(TcpListener),
    /// With the path to remove when the server ends, when this listener created it.
    Unix(UnixListener, Option<PathBuf>),
}

/// A listening socket handed from one runtime to others (see [`ListenOptions::threads`]).
#[derive(Debug)]
enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StdListener {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(l) => Self::Tcp(l.try_clone()?),
            Self::Unix(l) => Self::Unix(l.try_clone()?),
        })
    }

    /// Registered with the current runtime; the socket file stays in place at the end.
    fn into_listener(self, local_addr: LocalAddr) -> io::Result<Listener> {
        let kind = match self {
            Self::Tcp(l) => Kind::Tcp(TcpListener::from_std(l)?),
            Self::Unix(l) => Kind::Unix(UnixListener::from_std(l)?, None),
        };
        Ok(Listener { kind, local_addr })
    }
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LocalAddr {
    /// A TCP address (with the port the system chose for port 0).
    Tcp(SocketAddr),
    /// A UNIX socket path (empty for an unnamed socket).
    Unix(PathBuf),
}

/// How [`serve`] and [`Proxy::listen_with`] serve. Start from
/// [`ListenOptions::default`] and change what you need: the fields are public, and each
/// has a setter of the same name for chaining.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Serve TLS with this configuration ([`TlsConfig::from_pem`], or your own
    /// `rustls::ServerConfig`). Default none.
    pub tls: Option<TlsConfig>,
    /// Serve HTTP/2 too: prior knowledge in clear text, ALPN `h2` over TLS. Default true.
    pub http2: bool,
    /// Close an HTTP/1 connection when no byte of a next request has arrived for this
    /// long (from accept, or from the end of the previous response): the keep-alive
    /// timeout. Closed without an answer. Default 30 s.
    pub keep_alive_timeout: Option<Duration>,
    /// Answer `408 Request Timeout` and close an HTTP/1 connection whose request head is
    /// not complete this long after its first byte (slowloris). Default 60 s.
    pub request_head_timeout: Option<Duration>,
    /// Close a TLS connection whose handshake takes longer. Default 10 s.
    pub tls_handshake_timeout: Option<Duration>,
    /// Close a connection whose client takes no byte of what is written to it for this
    /// long (nginx's `send_timeout`): a slow reader of a download, or of a WebSocket's
    /// messages, cannot hold the connection and its target's for ever. Only a write
    /// that waits is timed, never an idle connection. Default 60 s.
    pub send_timeout: Option<Duration>,
    /// On HTTP/1.1 responses that keep the connection open, send `Keep-Alive:
    /// timeout=<keep-alive timeout in s>`, so that a client stops reusing an idle
    /// connection before the server closes it. Default false.
    pub keep_alive_header: bool,
    /// The largest request head accepted, in bytes; larger gets 431. Default 64 KiB.
    /// See [`HeadLimits`].
    pub max_header_size: usize,
    /// The longest request target accepted, in bytes; longer gets 414. Default 16 KiB.
    pub max_uri_length: usize,
    /// The most header fields an HTTP/1 request may have; more gets 431. Default 100
    /// (hyper's; any other value costs an allocation per request).
    pub max_headers: usize,
    /// How long a graceful shutdown waits for in-flight requests; the connections
    /// still open then are closed. Default 30 s.
    pub shutdown_timeout: Duration,
    /// The most connections served at once (TLS handshakes in progress included). At
    /// the limit the listener stops accepting: new connections wait in the system's
    /// accept queue, and are taken as open ones end. Each of a proxy's connections may
    /// hold a target connection too, so size it against the process's descriptor limit.
    /// At least 1. Default none (no limit).
    pub max_connections: Option<usize>,
    /// Serve on this many threads of the server's own, each running a current-thread
    /// Tokio runtime that accepts from the listener and serves the connections it
    /// accepted start to end, with its own share of the upstream connection pool (as
    /// nginx's worker processes do). Default none: every connection is a task of the
    /// runtime [`serve`] is called from, which with a work-stealing runtime moves tasks
    /// between its workers (one shared poller; a task woken on one worker is stolen by
    /// another), and on a machine shared with other work that costs more than the second
    /// thread gives (`bench/README.md`, "Both cores").
    pub threads: Option<NonZeroUsize>,
}

/// A running server. [`Server::shutdown`] stops it and waits for the drain; dropping it
/// stops accepting and drains in the background.
///
/// `A` is the type of its address: a `SocketAddr` from [`Proxy::listen`], which always
/// listens on TCP, a [`LocalAddr`] (TCP or UNIX) from [`serve`].
#[derive(Debug)]
pub struct Server<A = SocketAddr> {
    local_addr: A,
    cancel: CancellationToken,
    drain: Drain,
    task: Option<JoinHandle<()>>,
    /// The runtimes of its own threads ([`ListenOptions::threads`]).
    runtimes: Arc<[tokio::runtime::Handle]>,
    /// Ends those threads when the server and its stats are all dropped.
    threads: Option<Arc<DropGuard>>,
}

/// Live counts of a [`Server`], for metrics; from [`Server::stats`]. Cheap to clone, and
/// valid after the server is gone (its counts are then zero).
#[derive(Debug, Clone)]
pub struct ServerStats {
    drain: Drain,
    runtimes: Arc<[tokio::runtime::Handle]>,
    /// Kept for its drop (see [`Server`]'s field).
    _threads: Option<Arc<DropGuard>>,
}

/// A service made of a closure from a request to a future of a response: always ready,
/// called in place (see [`service_fn`]).
#[derive(Debug, Clone, Copy)]
pub struct ServiceFn<F> {
    f: F,
}

/// hyper's own header-count limit, kept on the stack.
pub(crate) const DEFAULT_MAX_HEADERS: usize = 100;

/// Serves `make_service`'s services on `listener` until [`Server::shutdown`] (or the
/// cancellation of [`Server::cancel_token`]).
///
/// `make_service` is called once per connection with what is known of the client (its
/// address and whether it came over TLS; `None` on a UNIX socket) and returns the service
/// for that connection's requests. Passing the facts once per connection, rather than in
/// each request's extensions, saves an allocation per request. The response body's
/// `Default` (an empty body) is the body of the `414` and `431` refusals, which the
/// service never sees.
///
/// Must be called inside a Tokio runtime: it spawns the accept loop and a task per
/// connection, or with [`ListenOptions::threads`] the serving threads and a task that
/// waits for them.
pub fn serve<M, S, B>(
    listener: Listener,
    make_service: M,
    options: ListenOptions,
) -> Server<LocalAddr>
where
    M: Fn(Option<ConnInfo>) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Default + Send + 'static,
    B::Error: Into<BoxError>,
{
    let local_addr = listener.local_addr.clone();
    let cancel = CancellationToken::new();
    let drain = Drain::new();
    let (task, runtimes, threads) = match options.threads {
        None => {
            let task = tokio::spawn(conn::accept_loop(
                listener,
                make_service,
                options,
                cancel.clone(),
                drain.clone(),
                None,
            ));
            (task, Vec::new(), None)
        }
        Some(threads) => {
            let (task, runtimes, release) =
                conn::serve_on_threads(listener, make_service, &options, threads, &cancel, &drain);
            (task, runtimes, Some(Arc::new(release.drop_guard())))
        }
    };
    Server {
        local_addr,
        cancel,
        drain,
        task: Some(task),
        runtimes: runtimes.into(),
        threads,
    }
}

/// A `tower::Service` made of a closure, as `tower::service_fn`, for [`serve`]'s
/// per-connection services: always ready, and its call inlined, so that the closure's
/// future is built where hyper keeps it (a proxied request's future is over a kilobyte;
/// every move of it is a copy).
pub fn service_fn<F, Fut, T, E>(f: F) -> ServiceFn<F>
where
    F: FnMut(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    ServiceFn { f }
}

impl<F, Fut, T, E> Service<Request<Incoming>> for ServiceFn<F>
where
    F: FnMut(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Response = T;
    type Error = E;
    type Future = Fut;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), E>> {
        std::task::Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, req: Request<Incoming>) -> Fut {
        (self.f)(req)
    }
}

// === impl Listener ===

impl Listener {
    /// Binds a TCP socket; each address `addr` resolves to is tried in turn (port 0: the
    /// system picks one, see [`Listener::local_addr`]).
    ///
    /// # Errors
    ///
    /// The error of the last address tried.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::tcp(TcpListener::bind(addr).await?)
    }

    /// Binds a UNIX socket at `path`. A socket file left there by a process that is gone
    /// (nothing accepts on it) is replaced; the file is removed when the server ends.
    ///
    /// # Errors
    ///
    /// When the path is in use by a live socket or cannot be bound.
    pub async fn bind_unix(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if path.exists() && tokio::net::UnixStream::connect(path).await.is_err() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        Ok(Self {
            kind: Kind::Unix(listener, Some(path.to_owned())),
            local_addr: LocalAddr::Unix(path.to_owned()),
        })
    }

    /// The socket as the standard library's, for a listener served from other threads'
    /// runtimes, and the path of a UNIX socket file this listener created.
    fn into_std(self) -> io::Result<(StdListener, LocalAddr, Option<PathBuf>)> {
        Ok(match self.kind {
            Kind::Tcp(l) => (StdListener::Tcp(l.into_std()?), self.local_addr, None),
            Kind::Unix(l, path) => (StdListener::Unix(l.into_std()?), self.local_addr, path),
        })
    }

    /// A TCP listener bound elsewhere.
    ///
    /// # Errors
    ///
    /// When its address cannot be read.
    pub fn tcp(listener: TcpListener) -> io::Result<Self> {
        let local_addr = LocalAddr::Tcp(listener.local_addr()?);
        Ok(Self {
            kind: Kind::Tcp(listener),
            local_addr,
        })
    }

    /// A UNIX listener bound elsewhere; its socket file is left in place at the end.
    ///
    /// # Errors
    ///
    /// When its address cannot be read.
    pub fn unix(listener: UnixListener) -> io::Result<Self> {
        let path = listener
            .local_addr()?
            .as_pathname()
            .map(Path::to_owned)
            .unwrap_or_default();
        Ok(Self {
            kind: Kind::Unix(listener, None),
            local_addr: LocalAddr::Unix(path),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> &LocalAddr {
        &self.local_addr
    }
}

// === impl LocalAddr ===

impl LocalAddr {
    /// The TCP address, if it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(addr) => Some(*addr),
            Self::Unix(_) => None,
        }
    }

    /// `http://ip:port` or `http+unix://<path>` (`https` with `tls`), for logs.
    pub fn url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        match self {
            Self::Tcp(addr) => format!("{scheme}://{addr}"),
            Self::Unix(path) => format!("{scheme}+unix://{}", path.display()),
        }
    }
}

impl fmt::Display for LocalAddr {
    /// The address (`127.0.0.1:8000`, `[::1]:8000`) or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix(path) => path.display().fmt(f),
        }
    }
}

// === impl ListenOptions ===

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            tls: None,
            http2: true,
            keep_alive_timeout: Some(Duration::from_secs(30)),
            request_head_timeout: Some(Duration::from_secs(60)),
            tls_handshake_timeout: Some(Duration::from_secs(10)),
            send_timeout: Some(Duration::from_secs(60)),
            keep_alive_header: false,
            max_header_size: 64 * 1024,
            max_uri_length: 16 * 1024,
            max_headers: DEFAULT_MAX_HEADERS,
            shutdown_timeout: Duration::from_secs(30),
            max_connections: None,
            threads: None,
        }
    }
}

impl ListenOptions {
    /// The size limits checked on every request head.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_uri_length: self.max_uri_length,
            max_header_size: self.max_header_size,
        }
    }

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn tls(mut self, tls: impl Into<Option<TlsConfig>>) -> Self {
        self.tls = tls.into();
        self
    }

    /// Sets [`http2`](Self::http2).
    #[must_use]
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Sets [`keep_alive_timeout`](Self::keep_alive_timeout).
    #[must_use]
    pub fn keep_alive_timeout(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.keep_alive_timeout = limit.into();
        self
    }

    /// Sets [`request_head_timeout`](Self::request_head_timeout).
    #[must_use]
    pub fn request_head_timeout(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.request_head_timeout = limit.into();
        self
    }

    /// Sets [`tls_handshake_timeout`](Self::tls_handshake_timeout).
    #[must_use]
    pub fn tls_handshake_timeout(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.tls_handshake_timeout = limit.into();
        self
    }

    /// Sets [`send_timeout`](Self::send_timeout).
    #[must_use]
    pub fn send_timeout(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.send_timeout = limit.into();
        self
    }

    /// Sets [`keep_alive_header`](Self::keep_alive_header).
    #[must_use]
    pub fn keep_alive_header(mut self, on: bool) -> Self {
        self.keep_alive_header = on;
        self
    }

    /// Sets [`max_header_size`](Self::max_header_size).
    #[must_use]
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Sets [`max_uri_length`](Self::max_uri_length).
    #[must_use]
    pub fn max_uri_length(mut self, bytes: usize) -> Self {
        self.max_uri_length = bytes;
        self
    }

    /// Sets [`max_headers`](Self::max_headers).
    #[must_use]
    pub fn max_headers(mut self, n: usize) -> Self {
        self.max_headers = n;
        self
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout).
    #[must_use]
    pub fn shutdown_timeout(mut self, limit: Duration) -> Self {
        self.shutdown_timeout = limit;
        self
    }

    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn max_connections(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.max_connections = limit.into();
        self
    }

    /// Sets [`threads`](Self::threads).
    #[must_use]
    pub fn threads(mut self, threads: impl Into<Option<NonZeroUsize>>) -> Self {
        self.threads = threads.into();
        self
    }
}

// === impl ServerStats ===

impl ServerStats {
    /// How many client connections are open, as [`Server::connections`].
    pub fn connections(&self) -> usize {
        self.drain.connections()
    }

    /// The runtimes of the server's own threads, one each ([`ListenOptions::threads`]),
    /// for their metrics or to run work on each thread; empty when it serves on the
    /// runtime [`serve`] was called from.
    pub fn runtimes(&self) -> &[tokio::runtime::Handle] {
        &self.runtimes
    }
}

// === impl Server ===

impl<A: Clone> Server<A> {
    /// The address the server listens on (the port the system chose, for port 0).
    pub fn local_addr(&self) -> A {
        self.local_addr.clone()
    }
}

impl<A> Server<A> {
    /// Stops accepting connections, lets in-flight requests finish (up to the shutdown
    /// timeout), closes what is left, and returns when that is done. On threads of its
    /// own ([`ListenOptions::threads`]) the threads go on running what else they run
    /// (WebSocket tunnels, for their closing handshakes) until the server and every
    /// [`ServerStats`] of it are dropped.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A token that starts [`Server::shutdown`]'s drain when cancelled (from a signal
    /// handler, say); the server then ends by itself.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// How many client connections are open (TLS handshakes in progress included).
    pub fn connections(&self) -> usize {
        self.drain.connections()
    }

    /// The server's counts, live: keep the handle and read it when metrics are scraped.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            drain: self.drain.clone(),
            runtimes: self.runtimes.clone(),
            _threads: self.threads.clone(),
        }
    }

    fn with_addr<B>(mut self, local_addr: B) -> Server<B> {
        Server {
            local_addr,
            cancel: self.cancel.clone(),
            drain: self.drain.clone(),
            task: self.task.take(),
            runtimes: self.runtimes.clone(),
            threads: self.threads.clone(),
        }
    }
}

impl<A> Drop for Server<A> {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancel.cancel();
        }
    }
}

// === impl Proxy ===

impl<H: Hooks> Proxy<H> {
    /// Listens on `addr` with default [`ListenOptions`] (http-proxy-3's
    /// `createProxyServer({target}).listen(port)`).
    ///
    /// # Errors
    ///
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub async fn listen(&self, addr: impl ToSocketAddrs) -> Result<Server, ServerError> {
        self.listen_with(addr, ListenOptions::default()).await
    }

    /// Listens on `addr` with these options. Each request carries the client's
    /// [`ConnInfo`] in its extensions, for the hooks; WebSocket upgrades are tunnelled
    /// when [`Options::ws`](crate::Options::ws) is on.
    ///
    /// # Errors
    ///
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub async fn listen_with(
        &self,
        addr: impl ToSocketAddrs,
        options: ListenOptions,
    ) -> Result<Server, ServerError> {
        let bind_error = |source| ServerError::Bind {
            addr: "requested address".to_owned(),
            source,
        };
        let listener = Listener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener
            .local_addr()
            .tcp()
            .ok_or_else(|| bind_error(io::ErrorKind::Unsupported.into()))?;
        let proxy = self.clone();
        let make_service = move |conn| {
            let proxy = proxy.clone();
            service_fn(move |req| proxy.listen_call(req, conn))
        };
        let server = serve(listener, make_service, options);
        Ok(server.with_addr(local_addr))
    }
}
