//! The connector: TCP (with a local address and a connect timeout), unix
//! sockets, and TLS over either, for the HTTP/1 pool and the hyper-util clients.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::record::{Record, Wire};
use super::tls::{Offer, UpstreamTls};
use crate::options::ClientOptions;
use crate::target::Address;

/// Connects to the address a pool URI names, with TLS when it says so; or, when
/// it has a destination, to that address whatever the URI.
#[derive(Clone)]
pub(crate) struct Connector {
    inner: Arc<ConnectorInner>,
    destination: Option<Uri>,
}

struct ConnectorInner {
    tls: UpstreamTls,
    offer: Offer,
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

/// A connection to an upstream; on the HTTP/1 pool's connections, with a
/// [`Record`] of the request in flight.
#[derive(Debug)]
pub(crate) struct Stream {
    io: Io,
    record: Option<Record>,
}

#[derive(Debug)]
enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
    TcpTls(Box<TlsStream<TcpStream>>),
    UnixTls(Box<TlsStream<UnixStream>>),
}

// === impl Connector ===

impl Connector {
    /// A connector with this TLS configuration and ALPN offer, and
    /// the connection options of `opts`; with a `destination`, it dials that
    /// whatever the URI it is given.
    pub(crate) fn new(
        tls: UpstreamTls,
        offer: Offer,
        opts: &ClientOptions,
        destination: Option<Uri>,
    ) -> Self {
        Self {
            inner: Arc::new(ConnectorInner {
                tls,
                offer,
                local_address: opts.local_address,
                connect_timeout: opts.connect_timeout,
            }),
            destination,
        }
    }

    /// The same connector, dialling `destination` whatever the URI.
    pub(crate) fn to(&self, destination: Option<Uri>) -> Self {
        Self {
            inner: self.inner.clone(),
            destination,
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("local_address", &self.inner.local_address)
            .finish()
    }
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
            .map(|io| TokioIo::new(Stream { io, record: None }))
        })
    }
}

impl ConnectorInner {
    async fn connect(&self, address: Address, tls: bool) -> Result<Io, ConnectError> {
        match address {
            Address::Unix(path) => {
                let stream = UnixStream::connect(&path)
                    .await
                    .map_err(ConnectError::Connect)?;
                if tls {
                    let name =
                        ServerName::try_from("localhost").map_err(|_| ConnectError::Address)?;
                    let s = self
                        .tls_connector()
                        .connect(name, stream)
                        .await
                        .map_err(ConnectError::Tls)?;
                    Ok(Io::UnixTls(Box::new(s)))
                } else {
                    Ok(Io::Unix(stream))
                }
            }
            Address::Tcp { host, port } => {
                let stream = self.tcp(&host, port).await?;
                if tls {
                    let name = ServerName::try_from(host.as_str())
                        .map_err(|_| ConnectError::Address)?
                        .to_owned();
                    let s = self
                        .tls_connector()
                        .connect(name, stream)
                        .await
                        .map_err(ConnectError::Tls)?;
                    Ok(Io::TcpTls(Box::new(s)))
                } else {
                    Ok(Io::Tcp(stream))
                }
            }
        }
    }

    /// The TLS configuration as it is now, for one new connection.
    fn tls_connector(&self) -> TlsConnector {
        TlsConnector::from(self.tls.for_offer(self.offer))
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

impl Stream {
    /// Starts recording the requests on this connection; the pool's handle.
    pub(crate) fn record(&mut self) -> Arc<Wire> {
        let (record, wire) = Record::new();
        self.record = Some(record);
        wire
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let alpn_h2 = |alpn: Option<&[u8]>| alpn == Some(b"h2");
        match &self.io {
            Io::Tcp(_) | Io::Unix(_) => Connected::new(),
            Io::TcpTls(s) if alpn_h2(s.get_ref().1.alpn_protocol()) => {
                Connected::new().negotiated_h2()
            }
            Io::UnixTls(s) if alpn_h2(s.get_ref().1.alpn_protocol()) => {
                Connected::new().negotiated_h2()
            }
            Io::TcpTls(_) | Io::UnixTls(_) => Connected::new(),
        }
    }
}

macro_rules! delegate {
    ($io:expr, $s:ident => $e:expr) => {
        match $io {
            Io::Tcp($s) => $e,
            Io::Unix($s) => $e,
            Io::TcpTls($s) => $e,
            Io::UnixTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(record) = &mut this.record else {
            return delegate!(&mut this.io, s => Pin::new(s).poll_read(cx, buf));
        };
        let room = buf.remaining();
        let polled = delegate!(&mut this.io, s => Pin::new(s).poll_read(cx, buf));
        if buf.remaining() < room {
            record.read();
        }
        polled
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = delegate!(&mut this.io, s => Pin::new(s).poll_write(cx, buf));
        if let (Poll::Ready(Ok(n)), Some(record)) = (&polled, &mut this.record) {
            record.wrote(&[io::IoSlice::new(buf)], *n);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = delegate!(&mut this.io, s => Pin::new(s).poll_write_vectored(cx, bufs));
        if let (Poll::Ready(Ok(n)), Some(record)) = (&polled, &mut this.record) {
            record.wrote(bufs, *n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        delegate!(&self.io, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(&mut self.get_mut().io, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(&mut self.get_mut().io, s => Pin::new(s).poll_shutdown(cx))
    }
}
