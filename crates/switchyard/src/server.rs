//! `listen`: serve a [`Proxy`] on its own, over TCP or TLS, HTTP/1.1 and
//! HTTP/2, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use crate::drain::{Drain, Drained, Registration};
pub use crate::head_timer::{HeadTimer, Watched};

use crate::error::{ConfigError, ProxyError, ServerError};
use crate::hooks::Hooks;
use crate::options::Pem;
use crate::proxy::hygiene::HeadLimits;
use crate::proxy::{ConnInfo, Proxy};

/// How `listen` serves.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Serve TLS with this certificate chain and key (PEM), as http-proxy-3's
    /// `ssl` option; HTTP/2 is offered by ALPN.
    pub tls: Option<ServerTls>,
    /// Accept HTTP/2 (prior knowledge on plain TCP, ALPN on TLS). Default true.
    pub http2: bool,
    /// Close a connection whose request head has not arrived in this long
    /// (slowloris). Default 30 s.
    pub header_read_timeout: Option<Duration>,
    /// The largest request head accepted, in bytes; larger gets 431.
    /// Default 64 KiB.
    pub max_header_size: usize,
    /// The longest request target accepted, in bytes; longer gets 414.
    /// Default 16 KiB. See [`HeadLimits`].
    pub max_uri_length: usize,
    /// The most header fields an HTTP/1 request may have; more gets 431.
    /// Default 100 (hyper's; a larger value costs one allocation per request).
    pub max_headers: usize,
    /// How long a graceful shutdown waits for in-flight requests; the
    /// connections still open then are closed. Default 30 s.
    pub shutdown_timeout: Duration,
}

/// A certificate chain and private key for a TLS listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate chain, leaf first (PEM).
    pub cert: Pem,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Pem,
}

/// A running stand-alone proxy server. Dropping it stops accepting and
/// drains in the background; [`Server::shutdown`] waits for the drain.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// hyper's own header-count limit, kept on the stack.
const DEFAULT_MAX_HEADERS: usize = 100;

// === impl ListenOptions ===

impl ListenOptions {
    /// The size limits checked on every request head.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_uri_length: self.max_uri_length,
            max_header_size: self.max_header_size,
        }
    }
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            tls: None,
            http2: true,
            header_read_timeout: Some(Duration::from_secs(30)),
            max_header_size: 64 * 1024,
            max_uri_length: 16 * 1024,
            max_headers: DEFAULT_MAX_HEADERS,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

// === impl Server ===

impl Server {
    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets in-flight requests finish (up to
    /// the shutdown timeout), and returns when the server is done.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A token that stops the server when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
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

    /// Listens on `addr` with these options.
    ///
    /// # Errors
    ///
    /// [`ServerError::Bind`] when the address cannot be bound, and
    /// [`ServerError::Config`] when the TLS material is unusable.
    pub async fn listen_with(
        &self,
        addr: impl ToSocketAddrs,
        opts: ListenOptions,
    ) -> Result<Server, ServerError> {
        let tls = opts
            .tls
            .as_ref()
            .map(|t| tls_acceptor(t, opts.http2))
            .transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: "requested address".to_owned(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: "requested address".to_owned(),
            source,
        })?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, self.clone(), opts, tls, cancel.clone()));
        Ok(Server {
            local_addr,
            cancel,
            task: Some(task),
        })
    }
}

/// Builds the HTTP/1.1 + HTTP/2 connection builder `listen` uses.
pub(crate) fn http_builder(
    opts: &ListenOptions,
    preserve_case: bool,
) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(HeadTimer)
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.head_limits().read_buffer())
        .preserve_header_case(preserve_case)
        .keep_alive(true);
    if opts.max_headers != DEFAULT_MAX_HEADERS {
        b.http1().max_headers(opts.max_headers);
    }
    b.http2().timer(TokioTimer::new());
    if opts.http2 { b } else { b.http1_only() }
}

/// Builds a rustls acceptor from PEM material.
///
/// # Errors
///
/// [`ConfigError::Tls`] when the files cannot be read or parsed.
pub fn tls_acceptor(tls: &ServerTls, http2: bool) -> Result<TlsAcceptor, ConfigError> {
    let chain = CertificateDer::pem_slice_iter(&tls.cert.read()?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Tls(format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(ConfigError::Tls(
            "no certificate in the certificate file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key.read()?).map_err(|e| {
        ConfigError::Tls(format!(
            "bad key PEM (encrypted keys are not supported): {e}"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ConfigError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Logs `accept` failures (out of file descriptors and the like) without flooding the
/// log: an accept loop that backs off and retries fails again on every retry for as long
/// as the condition lasts. The first failure is logged, then a summary after 10, 100,
/// 1,000… failures, and one line when an accept succeeds again.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: String,
    count: u64,
    since: Option<std::time::Instant>,
}

impl AcceptErrors {
    /// For the listener `listener` names in the log (its address, say).
    #[must_use]
    pub fn new(listener: impl Into<String>) -> Self {
        Self {
            listener: listener.into(),
            count: 0,
            since: None,
        }
    }

    /// The pause an accept loop should take after a failure: while no descriptor is
    /// free, `accept` fails at once whatever the backlog holds, so retrying at once
    /// would spin.
    pub const BACKOFF: Duration = Duration::from_millis(50);

    /// Records one failure, logging it if it is the first or a power of ten.
    pub fn failed(&mut self, err: &std::io::Error) {
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
    pub fn succeeded(&mut self) {
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

async fn serve<H: Hooks>(
    listener: TcpListener,
    proxy: Proxy<H>,
    opts: ListenOptions,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
) {
    let builder = http_builder(&opts, false);
    let drain = Drain::new();
    let ws = proxy.options().ws;
    let limits = opts.head_limits();
    let mut accept_errors = AcceptErrors::new(
        listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
    );
    loop {
        let (stream, remote) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors or similar: back off, then go on.
                    accept_errors.failed(&err);
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(AcceptErrors::BACKOFF) => continue,
                    }
                }
            },
        };
        accept_errors.succeeded();
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            remote,
            tls: tls.is_some(),
        };
        let proxy = proxy.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(info);
            if !ws {
                req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
            }
            if let Err(err) = limits.check(&req) {
                crate::proxy::log_error(&err);
                let refused = Ok::<_, ProxyError>(crate::proxy::error_response(&err));
                return Either::Right(std::future::ready(refused));
            }
            let proxy = proxy.clone();
            // Not boxed: hyper keeps a slot the size of this future in each connection
            // and moves it in per request; at ~1.4 KiB (the request, and the engine's
            // call, which holds the prepared head and not the request) that is cheaper
            // than a box per request.
            Either::Left(async move {
                match proxy.try_web_with(req, proxy.options()).await {
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
            })
        });
        let builder = builder.clone();
        // Counted from now on: a shutdown waits for the TLS handshake too.
        let mut registration = drain.register();
        let tls = tls.clone();
        let handshake_limit = opts.header_read_timeout;
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    Watched::new(registration.watch(conn.into_owned())).await
                }
                Some(acceptor) => {
                    let accept = acceptor.accept(stream);
                    let accept = registration.unless_closed(async {
                        match handshake_limit {
                            Some(limit) => tokio::time::timeout(limit, accept).await.ok(),
                            None => Some(accept.await),
                        }
                    });
                    // Closed, or past the handshake's time limit.
                    let Some(Some(stream)) = accept.await else {
                        return;
                    };
                    let stream = match stream {
                        Ok(s) => s,
                        Err(err) => {
                            debug!(error = %err, "TLS handshake failed");
                            return;
                        }
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    Watched::new(registration.watch(conn.into_owned())).await
                }
            };
            if let Err(err) = result {
                debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(opts.shutdown_timeout, drain.shutdown())
        .await
        .is_err()
    {
        warn!("shutdown timeout: closing connections with requests in flight");
    }
    // Whatever is left (nothing, after a drain that ended in time) ends now.
    drain.close();
}
