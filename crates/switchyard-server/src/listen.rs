//! Listeners: TCP or UNIX socket, optional TLS, HTTP/1.1 (plus HTTP/2 where
//! enabled: prior knowledge in clear text, ALPN `h2` over TLS), graceful shutdown.
//!
//! One accept loop serves the public proxy, the API, the metrics and the redirect servers.
//! On shutdown the listener closes at once, open connections finish their in-flight
//! request (keep-alive connections are told to close) until `--shutdown-timeout`; the
//! connections still open then are closed.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::future::Either;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use switchyard::server::{Drain, HeadTimer, Watched};

/// hyper's default limit on request header fields (kept on the stack).
const HYPER_MAX_HEADERS: usize = 100;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Connection settings of one server.
#[derive(Clone)]
pub(crate) struct ServeOptions {
    pub(crate) tls: Option<TlsAcceptor>,
    /// Largest request head (431 beyond) and longest request target (414 beyond), checked
    /// on every request before it reaches the service (so before routing).
    pub(crate) head_limits: switchyard::HeadLimits,
    /// Most header fields in an HTTP/1 request (431 beyond, from hyper).
    pub(crate) max_headers: usize,
    /// Closes a connection that sends no complete request head for this long (this is
    /// also the keep-alive idle timeout: hyper starts the timer when it waits for a head).
    pub(crate) header_read_timeout: Duration,
    /// Also serve HTTP/2 (the public listener; CHP's servers are HTTP/1.1 only).
    pub(crate) http2: bool,
    /// How long in-flight requests may run after the shutdown signal before their
    /// connections are closed (`--shutdown-timeout`; zero closes them at once).
    pub(crate) shutdown_timeout: Duration,
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tls", &self.tls.is_some())
            .field("head_limits", &self.head_limits)
            .field("max_headers", &self.max_headers)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("http2", &self.http2)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

// === impl Listener ===

impl Listener {
    /// Binds `host:port`; no host means all interfaces (IPv6 dual-stack, else IPv4).
    pub(crate) async fn bind_tcp(host: Option<&str>, port: u16) -> io::Result<Self> {
        let candidates: Vec<SocketAddr> = match host {
            None => vec![
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
            ],
            Some(h) => {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                let mut addrs: Vec<SocketAddr> =
                    tokio::net::lookup_host((h, port)).await?.collect();
                // `localhost` → prefer 127.0.0.1, as Node resolved it for CHP.
                addrs.sort_by_key(|a| !a.is_ipv4());
                addrs
            }
        };
        let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to bind");
        for addr in candidates {
            match TcpListener::bind(addr).await {
                Ok(l) => return Ok(Self::Tcp(l)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Binds a UNIX socket, replacing a stale socket file nobody listens on.
    pub(crate) async fn bind_unix(path: &Path) -> io::Result<Self> {
        if path.exists() && tokio::net::UnixStream::connect(path).await.is_err() {
            std::fs::remove_file(path)?;
        }
        Ok(Self::Unix(UnixListener::bind(path)?, path.to_owned()))
    }

    /// `http://ip:port` or `http+unix://<path>` (for start-up logs).
    pub(crate) fn url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        match self {
            Self::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("{scheme}://{a}"),
                Err(_) => format!("{scheme}://?"),
            },
            Self::Unix(_, p) => format!("{scheme}+unix://{}", p.display()),
        }
    }
}

/// Serves `service` on `listener` until `shutdown`; then closes the listener at once and
/// lets open connections finish their request for up to `options.shutdown_timeout`, after
/// which the remaining ones are closed. Returns when the drain is over.
pub(crate) async fn serve<S, F>(
    listener: Listener,
    options: ServeOptions,
    service: S,
    shutdown: CancellationToken,
) where
    S: Fn(Request<Incoming>, Option<switchyard::ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !options.http2 {
        builder = builder.http1_only();
    }
    // hyper's buffer has room for a long URI too, so that it reaches the 414 check below
    // instead of being hyper's 431 (see `switchyard::HeadLimits`).
    let read_buffer = options.head_limits.read_buffer();
    builder
        .http1()
        .timer(HeadTimer)
        .max_buf_size(read_buffer)
        .header_read_timeout(options.header_read_timeout);
    if options.max_headers != HYPER_MAX_HEADERS {
        // Off the default, hyper allocates the header array per request.
        builder.http1().max_headers(options.max_headers);
    }
    if options.http2 {
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(read_buffer).unwrap_or(u32::MAX));
    }
    let builder = Arc::new(builder);
    // Told at shutdown (each connection finishes its request in flight), closed at the
    // deadline: every connection still open is dropped (closing the socket and any
    // request to a target it was waiting for).
    let drain = Drain::new();
    let unix_path = match &listener {
        Listener::Unix(_, p) => Some(p.clone()),
        Listener::Tcp(_) => None,
    };
    // EMFILE, ENFILE, ENOBUFS: while no descriptor is free every accept fails at once, so
    // the loop pauses before retrying instead of spinning, and the log says so once
    // rather than on every retry.
    let mut accept_errors =
        switchyard::server::AcceptErrors::new(listener.url(options.tls.is_some()));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        if accepted.is_ok() {
            accept_errors.succeeded();
        }
        match accepted {
            Ok(Accepted::Tcp(stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let conn = Some(switchyard::ConnInfo {
                    remote,
                    tls: options.tls.is_some(),
                });
                spawn_connection(stream, conn, &options, &builder, &drain, service.clone());
            }
            Ok(Accepted::Unix(stream)) => {
                spawn_connection(stream, None, &options, &builder, &drain, service.clone());
            }
            Err(e) => {
                // Back off instead of spinning; the shutdown signal still ends the pause.
                accept_errors.failed(&e);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(switchyard::server::AcceptErrors::BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(path);
    }
    // `timeout` polls the drain once before it looks at the clock, so with a zero timeout
    // a server without connections still ends quietly.
    if tokio::time::timeout(options.shutdown_timeout, drain.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown timeout ({} ms) reached; closing the remaining connections",
            options.shutdown_timeout.as_millis()
        );
    }
    drain.close();
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Serves one connection. `conn` (the client's address, TLS or not) is handed to the
/// service with every request, and from there to the engine for `X-Forwarded-For` and
/// `X-Forwarded-Proto` (UNIX sockets have no client address). Not through the request's
/// extensions: their map is an allocation per request.
fn spawn_connection<IO, S, F>(
    stream: IO,
    conn: Option<switchyard::ConnInfo>,
    options: &ServeOptions,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    drain: &Drain,
    service: S,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>, Option<switchyard::ConnInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let builder = builder.clone();
    // Counted from now on: a shutdown waits for the TLS handshake too.
    let mut registration = drain.register();
    let tls = options.tls.clone();
    let limits = options.head_limits;
    tokio::spawn(async move {
        let service =
            hyper::service::service_fn(move |req: Request<Incoming>| match limits.check(&req) {
                Ok(()) => Either::Left(service(req, conn)),
                Err(err) => Either::Right(std::future::ready(Ok(refusal(&req, &err)))),
            });
        let serve = async move {
            match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    Watched::new(registration.watch(conn.into_owned())).await
                }
                Some(acceptor) => {
                    let handshake = registration.unless_closed(tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    ));
                    let Some(Ok(Ok(tls_stream))) = handshake.await else {
                        tracing::debug!("TLS handshake failed, timed out or cut by the shutdown");
                        return Ok(());
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                    Watched::new(registration.watch(conn.into_owned())).await
                }
            }
        };
        // Ends at the drain's deadline too (`Drain::close`: the connection is dropped).
        if let Err(e) = serve.await {
            tracing::debug!("connection ended with error: {e}");
        }
    });
}

/// The answer to a head over the limits: 414 or 431, plain text, and the connection
/// closed (what follows on it was not read as intended either).
fn refusal<B>(req: &Request<B>, err: &switchyard::ProxyError) -> Response<Body> {
    let status = err.status().unwrap_or(http::StatusCode::BAD_REQUEST);
    tracing::warn!("{} {} refused: {err}", status.as_u16(), req.method());
    let mut response = Response::new(Body::from(err.public_message()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}
