//! A tunnel's sockets, taken out of hyper's `Upgraded` when they are this crate's own.
//!
//! hyper gives an upgraded connection back as an `Upgraded`: the connection's IO behind a
//! trait object, behind a buffer for what hyper read past the head. Every read and write
//! of a tunnel used to pass through that, hyper-util's adapter on each side of it and the
//! head timer's IO before reaching the socket. When the connection is one this crate made
//! (its server's TCP and TLS connections, its client's connections to targets), the
//! socket is taken out and used as it is; the bytes read past the head are handed back,
//! for the tunnel to pass on before anything else. Any other connection (another
//! server's, an HTTP/2 stream) stays behind its `Upgraded`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::head_timer::HeadIo;
use crate::send_timer::SendTimed;
use crate::upstream::connect::Stream;

/// One side of a tunnel.
pub(super) enum Socket {
    /// A plain TCP connection of the crate's server.
    Tcp(SendTimed<TcpStream>),
    /// A TLS connection of the crate's server. Boxed: rustls's state is over a kilobyte,
    /// which would otherwise be room in every tunnel, plain ones too.
    Tls(Box<TlsStream<SendTimed<TcpStream>>>),
    /// A connection of the crate's client to a target.
    Target(Stream),
    /// Any other upgraded connection.
    Upgraded(TokioIo<Upgraded>),
}

impl Socket {
    /// The socket under `upgraded`, and the bytes already read from it past the head, to
    /// be passed on first (empty when they stay inside an [`Socket::Upgraded`]). The
    /// bytes are a slice of hyper's read buffer, which they keep alive: they are to be
    /// dropped once passed on, not kept for the tunnel's life.
    pub(super) fn new(upgraded: Upgraded) -> (Self, Bytes) {
        let upgraded = match served::<SendTimed<TcpStream>>(upgraded) {
            Ok((io, first)) => return (Self::Tcp(io), first),
            Err(upgraded) => upgraded,
        };
        let upgraded = match served::<TlsStream<SendTimed<TcpStream>>>(upgraded) {
            Ok((io, first)) => return (Self::Tls(Box::new(io)), first),
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<Stream>>() {
            Ok(parts) => (
                Self::Target(parts.io.into_inner()),
                unshared(parts.read_buf),
            ),
            Err(upgraded) => (Self::Upgraded(TokioIo::new(upgraded)), Bytes::new()),
        }
    }
}

/// A connection of the crate's server over `T`, as the server hands it to hyper: the
/// socket and what was read from it past the head, in order (hyper's unparsed bytes,
/// then what the head timer read ahead of hyper).
fn served<T>(upgraded: Upgraded) -> Result<(T, Bytes), Upgraded>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let parts = upgraded.downcast::<TokioIo<HeadIo<T>>>()?;
    let (io, ahead) = parts.io.into_inner().into_parts();
    let first = if ahead.is_empty() {
        unshared(parts.read_buf)
    } else {
        let mut first = BytesMut::from(parts.read_buf);
        first.extend_from_slice(&ahead);
        first.freeze()
    };
    Ok((io, first))
}

/// `bytes`, or when empty a `Bytes` that holds no buffer: hyper's read buffer (8 KiB or
/// more) is freed as soon as nothing else refers to it.
fn unshared(bytes: Bytes) -> Bytes {
    if bytes.is_empty() {
        Bytes::new()
    } else {
        bytes
    }
}

/// Runs `$body` with `$s` bound to the pinned socket of whichever kind `$socket` is.
macro_rules! each {
    ($socket:expr, $s:ident => $body:expr) => {
        match $socket.get_mut() {
            Socket::Tcp(s) => {
                let $s = Pin::new(s);
                $body
            }
            Socket::Tls(s) => {
                let $s = Pin::new(&mut **s);
                $body
            }
            Socket::Target(s) => {
                let $s = Pin::new(s);
                $body
            }
            Socket::Upgraded(s) => {
                let $s = Pin::new(s);
                $body
            }
        }
    };
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}
