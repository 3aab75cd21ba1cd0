//! The accept loop and what happens to each connection: TLS, HTTP, the head checks, the
//! keep-alive hint and the drain.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::{debug, warn};

use super::{DEFAULT_MAX_HEADERS, Kind, ListenOptions, Listener};
use crate::body::Body;
use crate::drain::{Drain, Drained, Graceful, Registration};
use crate::error::{BoxError, ProxyError};
use crate::head_timer::{self, Clock, HeadIo, HeadTimer, Watched};
use crate::hooks::Hooks;
use crate::proxy::hygiene::HeadLimits;
use crate::proxy::{ConnInfo, Proxy};
use crate::send_timer::SendTimed;

/// A listener's service for one connection, as `make_service` gives it: a tower service
/// for hyper's requests whose future and errors cross tasks. Named once for the functions
/// that pass it on.
pub(super) trait Handler<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> Handler<B> for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
}

/// The body of a response a connection writes.
pub(super) trait ResponseBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Default + Send + 'static
{
}

impl<B> ResponseBody for B
where
    B: http_body::Body<Data = Bytes> + Default + Send + 'static,
    B::Error: Into<BoxError>,
{
}

/// What every connection of one listener shares.
struct Shared<M> {
    make_service: M,
    /// HTTP/1.1, for connections known to speak it.
    http1: http1::Builder,
    /// HTTP/2 (when on), with HTTP/1.1 for a TLS client that named no protocol.
    builder: auto::Builder<TokioExecutor>,
    options: ListenOptions,
    limits: HeadLimits,
    /// `Keep-Alive: timeout=N`, when the listener sends it.
    hint: Option<HeaderValue>,
    drain: Drain,
}

/// The accept loop of [`serve`](super::serve): runs until `cancel`, then drains.
pub(super) async fn accept_loop<M, S, B>(
    listener: Listener,
    make_service: M,
    options: ListenOptions,
    cancel: CancellationToken,
    drain: Drain,
    shared_slots: Option<Slots>,
) where
    M: Fn(Option<ConnInfo>) -> S + Send + Sync + 'static,
    S: Handler<B>,
    B: ResponseBody,
{
    let shared = Arc::new(Shared {
        make_service,
        http1: http1_builder(&options),
        builder: http_builder(&options),
        limits: options.head_limits(),
        hint: options
            .keep_alive_header
            .then_some(options.keep_alive_timeout)
            .flatten()
            .map(keep_alive_hint),
        drain,
        options,
    });
    let url = listener.local_addr.url(shared.options.tls.is_some());
    // Shared with the other threads' loops on the same listener, or this loop's own.
    let mut slots = shared_slots.or_else(|| {
        shared
            .options
            .max_connections
            .map(|n| Slots::new(n, url.clone()))
    });
    let mut accept_errors = AcceptErrors::new(url);
    loop {
        // A permit per connection, held by its task: at the limit, nothing is accepted
        // until a connection ends, and the kernel queues the new ones meanwhile.
        let permit = match &mut slots {
            None => None,
            Some(slots) => tokio::select! {
                () = cancel.cancelled() => break,
                permit = slots.acquire() => permit,
            },
        };
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, remote)) => {
                accept_errors.succeeded();
                let _ = stream.set_nodelay(true);
                let conn = ConnInfo {
                    remote,
                    tls: shared.options.tls.is_some(),
                };
                spawn_connection(stream, Some(conn), &shared, permit);
            }
            Ok(Accepted::Unix(stream)) => {
                accept_errors.succeeded();
                spawn_connection(stream, None, &shared, permit);
            }
            Err(err) => {
                // Out of file descriptors or similar: back off, then go on; the shutdown
                // still ends the pause.
                accept_errors.failed(&err);
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(AcceptErrors::BACKOFF) => {}
                }
            }
        }
    }
    // Draining before the listener closes: once a client's connection attempt is
    // refused, a response still in flight is the last on its connection (`Connection:
    // close`, no keep-alive hint). Taken the other way round, a response that came
    // between the two went out as if nothing were stopping.
    shared.drain.start();
    // Closed at once: a connection attempt from now on is refused, not left waiting.
    match listener.kind {
        Kind::Tcp(tcp) => drop(tcp),
        Kind::Unix(unix, path) => {
            drop(unix);
            if let Some(path) = path {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    // `timeout` polls the drain once before it looks at the clock, so with a zero timeout
    // a server without connections still ends quietly.
    let limit = shared.options.shutdown_timeout;
    if tokio::time::timeout(limit, shared.drain.shutdown())
        .await
        .is_err()
    {
        warn!(
            "shutdown timeout ({} ms) reached; closing the remaining connections",
            limit.as_millis()
        );
    }
    // Whatever is left (nothing, after a drain that ended in time) ends now.
    shared.drain.close();
}

/// Serves `listener` on `threads` threads of their own, each a current-thread runtime
/// running an [`accept_loop`] on a duplicate of the socket, with one drain, one
/// cancellation and one connection limit for all. A thread that cannot start is logged
/// and left out; the others serve.
///
/// Returns a task of the calling runtime that ends once every loop has drained, the
/// threads' runtime handles, and a token: the threads go on running their runtimes (the
/// WebSocket tunnels, the target connections) until it is cancelled, which the
/// [`Server`](super::Server) does when its last handle is dropped.
pub(super) fn serve_on_threads<M, S, B>(
    listener: Listener,
    make_service: M,
    options: &ListenOptions,
    threads: std::num::NonZeroUsize,
    cancel: &CancellationToken,
    drain: &Drain,
) -> (
    tokio::task::JoinHandle<()>,
    Vec<tokio::runtime::Handle>,
    CancellationToken,
)
where
    M: Fn(Option<ConnInfo>) -> S + Send + Sync + 'static,
    S: Handler<B>,
    B: ResponseBody,
{
    let url = listener.local_addr.url(options.tls.is_some());
    let slots = options.max_connections.map(|n| Slots::new(n, url.clone()));
    let make_service = Arc::new(make_service);
    let (socket, local_addr, path) = match listener.into_std() {
        Ok(parts) => parts,
        Err(e) => {
            warn!(error = %e, "cannot hand {url} to its serving threads");
            return (tokio::spawn(async {}), Vec::new(), CancellationToken::new());
        }
    };
    let mut ended = Vec::with_capacity(threads.get());
    let mut handles = Vec::with_capacity(threads.get());
    let release = CancellationToken::new();
    for index in 0..threads.get() {
        let socket = match socket.try_clone() {
            Ok(socket) => socket,
            Err(e) => {
                warn!(error = %e, "serving {url} on {index} threads, not {threads}");
                break;
            }
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                warn!(error = %e, "serving {url} on {index} threads, not {threads}");
                break;
            }
        };
        let handle = runtime.handle().clone();
        let (done, end) = tokio::sync::oneshot::channel::<()>();
        let (make_service, local_addr) = (make_service.clone(), local_addr.clone());
        let (options, cancel, drain, slots) = (
            options.clone(),
            cancel.clone(),
            drain.clone(),
            slots.clone(),
        );
        let at = url.clone();
        // Registered with the thread's own runtime, inside it.
        let serve = async move {
            match socket.into_listener(local_addr) {
                Ok(listener) => {
                    let make_service = move |conn| make_service(conn);
                    accept_loop(listener, make_service, options, cancel, drain, slots).await;
                }
                Err(e) => warn!(error = %e, "serving thread {index} cannot listen on {at}"),
            }
        };
        let released = release.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("switchyard-{index}"))
            .spawn(move || {
                crate::upstream::set_shard(index);
                runtime.block_on(serve);
                drop(done);
                // Its tasks go on (a tunnel being closed, say) until the server is let go.
                runtime.block_on(released.cancelled());
                runtime.shutdown_timeout(Duration::from_secs(1));
            });
        match spawned {
            Ok(_) => {
                ended.push(end);
                handles.push(handle);
            }
            Err(e) => {
                warn!(error = %e, "serving {url} on {index} threads, not {threads}");
                break;
            }
        }
    }
    // The duplicates keep the socket open; this one is not needed.
    drop(socket);
    let task = tokio::spawn(async move {
        for end in ended {
            let _ = end.await;
        }
        if let Some(path) = path {
            let _ = std::fs::remove_file(path);
        }
    });
    (task, handles, release)
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match &listener.kind {
        Kind::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Kind::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// HTTP/2 streams open at once on one connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// Streams reset by the client before they were accepted, at once, before GOAWAY.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams reset because of the client's errors, over a connection's life, before GOAWAY.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Bytes queued per HTTP/2 stream for a client that does not take them.
const H2_MAX_SEND_BUF_SIZE: usize = 400 * 1024;

/// hyper's HTTP/1 read timeout for a head: hyper tells the head clock that it waits for
/// a head only when it has one; the keep-alive timeout, or one that never ends first.
fn head_wait(options: &ListenOptions) -> Option<Duration> {
    match (options.keep_alive_timeout, options.request_head_timeout) {
        (Some(idle), _) => Some(idle),
        (None, Some(_)) => Some(head_timer::NO_IDLE_LIMIT),
        (None, None) => None,
    }
}

/// The HTTP/1.1 connection builder of a listener.
fn http1_builder(options: &ListenOptions) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // hyper's buffer has room for a long URI too, so that it reaches the 414 check
    // instead of being hyper's 431 (see `HeadLimits`).
    builder
        .timer(HeadTimer)
        .header_read_timeout(head_wait(options))
        .max_buf_size(options.head_limits().read_buffer());
    if options.max_headers != DEFAULT_MAX_HEADERS {
        // Off the default, hyper allocates the header array per request.
        builder.max_headers(options.max_headers);
    }
    builder
}

/// The connection builder of a listener for HTTP/2, or a protocol to be told from the
/// first bytes: its HTTP/1.1 side is set up as [`http1_builder`]'s.
fn http_builder(options: &ListenOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let read_buffer = options.head_limits().read_buffer();
    builder
        .http1()
        .timer(HeadTimer)
        .header_read_timeout(head_wait(options))
        .max_buf_size(read_buffer);
    if options.max_headers != DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(options.max_headers);
    }
    // HTTP/2's limits, each set here rather than left to hyper's and h2's defaults, so
    // that what a hostile client can cost is written down (docs/security.md, "HTTP/2").
    builder
        .http2()
        .timer(TokioTimer::new())
        // The decoded header list, as for HTTP/1. h2 also caps the CONTINUATION frames of
        // one header block at 5/4 of what this size needs (at least 5), and a block over
        // this size or a decoded list over 4 times it ends the connection with GOAWAY:
        // a CONTINUATION flood is cut after a handful of frames.
        .max_header_list_size(u32::try_from(read_buffer).unwrap_or(u32::MAX))
        // Streams open at once per connection (RFC 9113 §6.5.2 advises no fewer than
        // 100; nginx's default is 128). Streams beyond it are refused, and each refusal
        // counts towards `max_local_error_reset_streams`.
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        // Rapid Reset (CVE-2023-44487): streams the client resets before hyper has taken
        // them no longer count as concurrent; past this many waiting, GOAWAY
        // (ENHANCE_YOUR_CALM). h2's own default, made explicit.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        // Streams the server had to reset because of the client's errors (malformed
        // frames, streams over the concurrency limit), over the connection's life: past
        // this many, GOAWAY (ENHANCE_YOUR_CALM). A well-behaved client causes none.
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        // What one stream may queue for a client that does not take it (hyper's default,
        // 400 KiB); beyond it the response body is not polled. The send timeout drops a
        // connection whose client takes nothing.
        .max_send_buf_size(H2_MAX_SEND_BUF_SIZE);
    // No keep-alive PING: a client that stops taking bytes while the proxy writes goes
    // after the send timeout, and an idle connection costs no more than its buffers.
    if options.http2 {
        builder
    } else {
        builder.http1_only()
    }
}

/// Serves one connection in a task of its own.
fn spawn_connection<IO, M, S, B>(
    stream: IO,
    conn: Option<ConnInfo>,
    shared: &Arc<Shared<M>>,
    permit: Option<OwnedSemaphorePermit>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    M: Fn(Option<ConnInfo>) -> S + Send + Sync + 'static,
    S: Handler<B>,
    B: ResponseBody,
{
    // Counted from now on: a shutdown waits for the TLS handshake too.
    let registration = shared.drain.register();
    let shared = shared.clone();
    // Boxed: the connection's future is several KiB, and a task moves its future a few
    // times on the way into its cell and writes its whole stage again when it ends. A box
    // makes those moves a pointer's (callgrind, a new connection per request: see
    // bench/README.md, "New connections").
    tokio::spawn(Box::pin(async move {
        // Given back when the task ends, however it ends.
        let _permit = permit;
        // Timed below TLS: what counts is whether the client takes bytes off the socket.
        let stream = SendTimed::new(stream, shared.options.send_timeout);
        let service = ConnService {
            inner: RefCell::new((shared.make_service)(conn)),
            limits: shared.limits,
            hint: shared.hint.clone(),
            drain: shared.drain.clone(),
        };
        let result = match &shared.options.tls {
            None => serve_io(stream, service, &shared, registration, None).await,
            // Boxed: the handshake's state (rustls's connection inside tokio-rustls's
            // accept future, about 5 KiB) would otherwise be room in the task of every
            // connection, plain ones too.
            Some(tls) => Box::pin(serve_tls(stream, tls, service, &shared, registration)).await,
        };
        // Ends at the drain's deadline too (`Drain::close`: the connection is dropped).
        if let Err(err) = result {
            debug!(error = %err, "connection ended with an error");
        }
    }));
}

/// A TLS connection: the handshake (within its time limit, unless the drain closes
/// first), then [`serve_io`]. A failed handshake ends the connection quietly.
async fn serve_tls<IO, M, S, B>(
    stream: IO,
    tls: &super::TlsConfig,
    service: ConnService<S>,
    shared: &Shared<M>,
    mut registration: Registration,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler<B>,
    B: ResponseBody,
{
    let acceptor = TlsAcceptor::from(tls.for_handshake(shared.options.http2));
    let accept = acceptor.accept(stream);
    let limit = shared.options.tls_handshake_timeout;
    let handshake = registration.unless_closed(async {
        match limit {
            Some(limit) => tokio::time::timeout(limit, accept).await.ok(),
            None => Some(accept.await),
        }
    });
    // Closed by the drain, or past the handshake's time limit.
    let Some(Some(stream)) = handshake.await else {
        return Ok(());
    };
    match stream {
        Ok(stream) => {
            // ALPN's choice, when the client named protocols.
            let version = stream.get_ref().1.alpn_protocol().map(|p| {
                if p == b"h2" {
                    Protocol::H2
                } else {
                    Protocol::H1
                }
            });
            serve_io(stream, service, shared, registration, version).await
        }
        Err(err) => {
            debug!(error = %err, "TLS handshake failed");
            Ok(())
        }
    }
}

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    H1,
    H2,
}

/// HTTP/2's connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one connection: `version` is ALPN's choice over TLS; without one, the first
/// bytes tell HTTP/2 (when it is on) from HTTP/1.1.
///
/// hyper-util's `auto` connection could tell them too, but it reads the first 24 bytes
/// alone and hands them to hyper in a read of their own (hyper#3511): a second system
/// call for the rest of the head, a parse of the 24 bytes that fails, and hyper's read
/// buffer grown from 8 to 16 KiB on every connection to hold both reads. Here the first
/// read takes the whole head, hyper gets it in one read, and HTTP/1.1 connections are
/// hyper's own (one read layer less than `auto`'s on every read). Over TLS, a client
/// that agreed on `http/1.1` cannot switch to HTTP/2 by sending its preface.
///
/// Not an `async fn`: one would keep `io` and the connection in its future beside the
/// watched connection that holds them (two TLS streams' worth of room over TLS, with a
/// kilobyte each), in the task of every connection.
fn serve_io<'a, IO, M, S, B>(
    io: IO,
    service: ConnService<S>,
    shared: &'a Shared<M>,
    registration: Registration,
    version: Option<Protocol>,
) -> Watched<Drained<ServedConn<'a, IO, S>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler<B>,
    B: ResponseBody,
{
    let options = &shared.options;
    let clock = Arc::new(Clock::new(
        options.keep_alive_timeout,
        options.request_head_timeout,
    ));
    let io = HeadIo::new(io, clock.clone());
    let builders = (&shared.http1, &shared.builder);
    let conn = match version {
        Some(version) => Served::with(version, io, service, builders),
        None if !options.http2 => Served::with(Protocol::H1, io, service, builders),
        None => Served::Sniffing {
            io: Some(io),
            service: Some(service),
            builders,
            stop: false,
        },
    };
    Watched::new(registration.watch(conn), clock)
}

/// Reads ahead until the first bytes are HTTP/2's preface or cannot be: `None` when the
/// connection ends (or its idle time runs out) before.
fn poll_version<T: AsyncRead + AsyncWrite>(
    mut io: Pin<&mut HeadIo<T>>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<Option<Protocol>>> {
    loop {
        let seen = io.ahead();
        if seen.len() >= H2_PREFACE.len() {
            let h2 = seen.starts_with(H2_PREFACE);
            return Poll::Ready(Ok(Some(if h2 { Protocol::H2 } else { Protocol::H1 })));
        }
        if !H2_PREFACE.starts_with(seen) {
            return Poll::Ready(Ok(Some(Protocol::H1)));
        }
        if !ready!(io.as_mut().poll_read_ahead(cx))? {
            return Poll::Ready(Ok(None));
        }
    }
}

/// A connection's hyper connection, for HTTP/1.1 its own, for HTTP/2 hyper-util's.
type H1Conn<IO, S> = http1::UpgradeableConnection<TokioIo<HeadIo<IO>>, ConnService<S>>;
type AutoConn<IO, S> =
    auto::UpgradeableConnection<'static, TokioIo<HeadIo<IO>>, ConnService<S>, TokioExecutor>;
type ServedConn<'a, IO, S> = Served<'a, IO, S, H1Conn<IO, S>, AutoConn<IO, S>>;
/// The listener's builders: HTTP/1.1's, and hyper-util's for HTTP/2.
type Builders<'a> = (&'a http1::Builder, &'a auto::Builder<TokioExecutor>);

pin_project_lite::pin_project! {
    /// A connection, served: its first bytes read until they tell the protocol, then
    /// hyper's connection for it.
    #[project = ServedProj]
    enum Served<'a, IO, S, H1, A> {
        Sniffing {
            io: Option<HeadIo<IO>>,
            service: Option<ConnService<S>>,
            builders: Builders<'a>,
            // The drain began: ended before a request was read (as hyper-util's would).
            stop: bool,
        },
        H1 { #[pin] conn: H1 },
        // Boxed: HTTP/2's state is larger than HTTP/1's, and the task of every HTTP/1.1
        // connection would carry room for it.
        Auto { conn: Pin<Box<A>> },
    }
}

impl<'a, IO, S, B> ServedConn<'a, IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    // `Response = …` again: an impl's parameter must appear outside a trait's parameters.
    S: Handler<B> + Service<Request<Incoming>, Response = Response<B>>,
    B: ResponseBody,
{
    /// hyper's connection for `protocol`.
    fn with(
        protocol: Protocol,
        io: HeadIo<IO>,
        service: ConnService<S>,
        (http1, auto): Builders<'a>,
    ) -> Self {
        let io = TokioIo::new(io);
        match protocol {
            Protocol::H1 => Self::H1 {
                conn: http1.serve_connection(io, service).with_upgrades(),
            },
            Protocol::H2 => Self::Auto {
                conn: Box::pin(
                    auto.serve_connection_with_upgrades(io, service)
                        .into_owned(),
                ),
            },
        }
    }
}

impl<IO, S, B> Future for ServedConn<'_, IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler<B> + Service<Request<Incoming>, Response = Response<B>>,
    B: ResponseBody,
{
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ServedProj::H1 { conn } => return conn.poll(cx).map_err(Into::into),
                ServedProj::Auto { conn } => return conn.as_mut().poll(cx).map_err(Into::into),
                ServedProj::Sniffing {
                    io,
                    service,
                    builders,
                    stop,
                } => {
                    let (Some(head_io), false) = (io.as_mut(), *stop) else {
                        return Poll::Ready(Ok(()));
                    };
                    let Some(protocol) = ready!(poll_version(Pin::new(head_io), cx))? else {
                        return Poll::Ready(Ok(()));
                    };
                    let (Some(io), Some(service)) = (io.take(), service.take()) else {
                        return Poll::Ready(Ok(()));
                    };
                    let builders = *builders;
                    self.set(Self::with(protocol, io, service, builders));
                }
            }
        }
    }
}

impl<IO, S, H1, A> Graceful for Served<'_, IO, S, H1, A>
where
    Self: Future<Output = Result<(), BoxError>>,
    H1: Graceful,
    A: Graceful,
{
    type Error = BoxError;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServedProj::Sniffing { stop, .. } => *stop = true,
            ServedProj::H1 { conn } => conn.graceful_shutdown(),
            ServedProj::Auto { conn } => conn.as_mut().graceful_shutdown(),
        }
    }
}

/// The service hyper calls for each request of one connection: the head checks, then the
/// listener's service, then the keep-alive hint.
///
/// hyper calls with `&self`, a `tower::Service` with `&mut self`: the connection's
/// service sits in a `RefCell` (hyper calls from the connection's task, one request at a
/// time), so that a request does not cost a clone of it.
struct ConnService<S> {
    inner: RefCell<S>,
    limits: HeadLimits,
    hint: Option<HeaderValue>,
    drain: Drain,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ConnFuture<S, S::Future, B>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if let Err(err) = self.limits.check(&req) {
            return ConnFuture::other(Other::Refused(Some(refusal(&req, &err))), None);
        }
        let hint = match &self.hint {
            Some(hint) if keeps_alive(req.version(), req.headers()) => {
                Some((hint.clone(), self.drain.clone()))
            }
            _ => None,
        };
        let Ok(mut service) = self.inner.try_borrow_mut() else {
            // Not reached: hyper does not call again from inside a call.
            let service = self.inner.borrow().clone();
            return ConnFuture::other(Other::Waiting(service, Some(req)), hint);
        };
        // Most services are always ready: ask once without waiting, so that the request
        // goes to the service now instead of into this future.
        let mut cx = Context::from_waker(Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => ConnFuture::called(&mut service, req, hint),
            Poll::Ready(Err(err)) => ConnFuture::other(Other::Failed(Some(err.into())), None),
            // Waited for in the future, on a clone of the service, ready or not.
            Poll::Pending => ConnFuture::other(Other::Waiting(service.clone(), Some(req)), hint),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request, from [`ConnService`]: the service's future (at once,
    /// usually), or what else the request came to.
    struct ConnFuture<S, F, B> {
        #[pin]
        future: Option<F>,
        // Rare, and boxed so that the common case carries and moves only the future.
        other: Option<Box<Other<S, B>>>,
        // `Keep-Alive: timeout=N`, for a request that keeps the connection.
        hint: Option<(HeaderValue, Drain)>,
    }
}

/// A request that did not go to the service at once.
enum Other<S, B> {
    /// The service was not ready: waited for, then called.
    Waiting(S, Option<Request<Incoming>>),
    /// Over the head limits.
    Refused(Option<Response<B>>),
    /// The service failed when asked whether it was ready.
    Failed(Option<BoxError>),
}

impl<S, B> ConnFuture<S, S::Future, B>
where
    S: Service<Request<Incoming>>,
{
    /// Calls the service. The one place that does, and not inlined: the service's call
    /// (the public handler's routing, say) is inlined here instead, and builds its
    /// future (a kilobyte or more) where this returns it, in hyper's slot, rather than
    /// in a temporary that would then be copied.
    #[inline(never)]
    fn called(service: &mut S, req: Request<Incoming>, hint: Option<(HeaderValue, Drain)>) -> Self {
        Self {
            future: Some(service.call(req)),
            other: None,
            hint,
        }
    }
}

impl<S, F, B> ConnFuture<S, F, B> {
    fn other(other: Other<S, B>, hint: Option<(HeaderValue, Drain)>) -> Self {
        Self {
            future: None,
            other: Some(Box::new(other)),
            hint,
        }
    }
}

impl<S, B> Future for ConnFuture<S, S::Future, B>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.as_mut().project();
        if let Some(Other::Waiting(service, req)) = this.other.as_deref_mut() {
            if let Err(err) = ready!(service.poll_ready(cx)) {
                return Poll::Ready(Err(err.into()));
            }
            let Some(req) = req.take() else {
                return Poll::Ready(Err("polled after completion".into()));
            };
            let called = Self::called(service, req, this.hint.take());
            self.set(called);
        }
        let this = self.project();
        if let Some(other) = this.other.as_deref_mut() {
            match other {
                Other::Refused(response) => {
                    let done = response.take();
                    return Poll::Ready(done.ok_or_else(|| "polled after completion".into()));
                }
                Other::Failed(error) => {
                    let error = error.take();
                    return Poll::Ready(Err(
                        error.unwrap_or_else(|| "polled after completion".into())
                    ));
                }
                // Called above.
                Other::Waiting(..) => {}
            }
        }
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(Err("polled after completion".into()));
        };
        let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
        if let Some((value, drain)) = this.hint.take()
            && drain.serving()
        {
            add_hint(&mut response, value);
        }
        Poll::Ready(Ok(response))
    }
}

/// The answer to a head over the limits: 414 or 431 with an empty body (the service's
/// body type's default), as hyper answers a head too large for its buffer, and the
/// connection closed: what follows on it was not read as intended either (RFC 9112 §6.3).
fn refusal<B: Default>(req: &Request<Incoming>, err: &ProxyError) -> Response<B> {
    let status = err.status().unwrap_or(http::StatusCode::BAD_REQUEST);
    warn!("{} {} refused: {err}", status.as_u16(), req.method());
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The `Keep-Alive` header name (not one of `http`'s standard names), made at compile
/// time.
const KEEP_ALIVE: header::HeaderName = header::HeaderName::from_static("keep-alive");

/// An HTTP/1.1 request whose connection stays open after its answer, as far as the
/// request goes.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11 && !has_token(headers, "close")
}

/// One of the `Connection` header's tokens is `token`. Most messages have no `Connection`
/// field: a scan of the few names present (comparing standard names is a byte compare)
/// tells, cheaper than hashing the name for a lookup.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    if !headers.keys().any(|name| *name == header::CONNECTION) {
        return false;
    }
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Adds `Keep-Alive: timeout=N` unless the response closes or switches the connection,
/// or names its own.
fn add_hint<B>(response: &mut Response<B>, value: HeaderValue) {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
        || has_token(response.headers(), "close")
    {
        return;
    }
    response.headers_mut().entry(KEEP_ALIVE).or_insert(value);
}

/// `timeout=<whole seconds>`, made once per distinct value and kept: a static header
/// value costs nothing to copy into each response.
fn keep_alive_hint(timeout: Duration) -> HeaderValue {
    static MADE: Mutex<Option<HashMap<u64, &'static str>>> = Mutex::new(None);
    let secs = timeout.as_secs();
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    let text = *made
        .get_or_insert_with(HashMap::new)
        .entry(secs)
        .or_insert_with(|| Box::leak(format!("timeout={secs}").into_boxed_str()));
    HeaderValue::from_static(text)
}

/// Logs `accept` failures (out of file descriptors and the like) without flooding the
/// log: an accept loop that backs off and retries fails again on every retry for as long
/// as the condition lasts. The first failure is logged, then a summary after 10, 100,
/// 1,000… failures, and one line when an accept succeeds again.
#[derive(Debug)]
/// The connection limit of a listener: one permit per open connection.
#[derive(Clone)]
pub(super) struct Slots {
    permits: Arc<Semaphore>,
    limit: usize,
    listener: String,
    /// When reaching the limit was last logged.
    logged: Option<std::time::Instant>,
}

impl Slots {
    /// Reaching the limit is logged at most this often: a listener kept at its limit
    /// reaches it again each time a connection ends.
    const LOG_EVERY: Duration = Duration::from_secs(60);

    fn new(limit: usize, listener: String) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            listener,
            logged: None,
        }
    }

    /// A permit for the next connection; at the limit, waits for a connection to end.
    /// `None` (not reached: the semaphore is never closed) lets the connection in.
    async fn acquire(&mut self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.logged.is_none_or(|at| at.elapsed() >= Self::LOG_EVERY) {
            self.logged = Some(std::time::Instant::now());
            warn!(
                "{} connections open on {}, the limit: new connections wait until one ends",
                self.limit, self.listener
            );
        }
        self.permits.clone().acquire_owned().await.ok()
    }
}

struct AcceptErrors {
    listener: String,
    count: u64,
    since: Option<std::time::Instant>,
}

impl AcceptErrors {
    /// The pause after a failure: while no descriptor is free, `accept` fails at once
    /// whatever the backlog holds, so retrying at once would spin.
    const BACKOFF: Duration = Duration::from_millis(50);

    fn new(listener: String) -> Self {
        Self {
            listener,
            count: 0,
            since: None,
        }
    }

    /// Records one failure, logging it if it is the first or a power of ten.
    fn failed(&mut self, err: &std::io::Error) {
        self.count += 1;
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if self.count == 1 {
            warn!(
                "accept failed on {}: {err}; retrying every {:?}",
                self.listener,
                Self::BACKOFF
            );
        } else if self
            .count
            .checked_ilog10()
            .is_some_and(|e| 10u64.pow(e) == self.count)
        {
            warn!(
                "accept still failing on {}: {} failures in {:?}: {err}",
                self.listener,
                self.count,
                since.elapsed()
            );
        }
    }

    /// Records a successful accept, logging the recovery after failures.
    fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            warn!(
                "accept recovered on {} after {} failures in {:?}",
                self.listener,
                self.count,
                since.elapsed()
            );
            self.count = 0;
        }
    }
}

// === Proxy::listen's service ===

impl<H: Hooks> Proxy<H> {
    /// One request of [`Proxy::listen`](crate::Proxy::listen): the client's [`ConnInfo`]
    /// goes into the request's extensions (hooks may look for it), upgrades are
    /// tunnelled only with `ws`, and errors become their default answer.
    pub(crate) fn listen_call(
        &self,
        mut req: Request<Incoming>,
        conn: Option<ConnInfo>,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + use<H> {
        if let Some(conn) = conn {
            req.extensions_mut().insert(conn);
        }
        if !self.options().ws {
            req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
        }
        let proxy = self.clone();
        // Not boxed: hyper keeps a slot the size of this future in each connection and
        // moves it in per request; at ~1.4 KiB (the request, and the engine's call, which
        // holds the prepared head and not the request) that is cheaper than a box per
        // request.
        async move {
            match proxy.try_web(req, crate::proxy::Call::new()).await {
                Ok(res) => Ok(res),
                Err(err) => match err.status() {
                    Some(_) => {
                        crate::proxy::log_error(&err);
                        Ok(crate::proxy::error_response(&err))
                    }
                    // Client gone or idle: close without an answer.
                    None => Err(err),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
