//! The send timeout: a client that takes no byte of what the server has to write for this
//! long is dropped, as nginx's `send_timeout` does. Only a write that has to wait is
//! timed: an idle connection, or one the client reads from, never is, and no timer exists
//! until a first write has had to wait.
//!
//! Without it, a client that asks for a large download (or a WebSocket's messages) and
//! stops reading holds its connection, and the target's, for ever: once the socket's
//! buffer is full the server stops asking the response body for more, so the body's own
//! idle limit is never looked at.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// A client connection whose waiting writes are timed.
    pub(crate) struct SendTimed<T> {
        #[pin]
        inner: T,
        limit: Option<Duration>,
        // Armed when a write has to wait, disarmed when one goes out; kept for reuse.
        stall: Option<Pin<Box<Sleep>>>,
        stalled: bool,
    }
}

/// The error of a write that waited longer than the send timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client took no byte for {0:?} (send timeout)")]
pub(crate) struct SendTimeout(pub(crate) Duration);

impl<T> SendTimed<T> {
    pub(crate) fn new(inner: T, limit: Option<Duration>) -> Self {
        Self {
            inner,
            limit,
            stall: None,
            stalled: false,
        }
    }
}

/// Times the write that `polled` is the outcome of: `progressed` tells whether a ready
/// one moved bytes.
fn timed<R>(
    polled: Poll<io::Result<R>>,
    limit: Option<Duration>,
    stall: &mut Option<Pin<Box<Sleep>>>,
    stalled: &mut bool,
    cx: &mut Context<'_>,
    progressed: impl FnOnce(&R) -> bool,
) -> Poll<io::Result<R>> {
    match polled {
        Poll::Pending => {
            let Some(limit) = limit else {
                return Poll::Pending;
            };
            if !*stalled {
                *stalled = true;
                let at = Instant::now() + limit;
                match stall {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => *stall = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
            let due = stall
                .as_mut()
                .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
            if due {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    SendTimeout(limit),
                )))
            } else {
                Poll::Pending
            }
        }
        Poll::Ready(Ok(done)) => {
            if *stalled && progressed(&done) {
                *stalled = false;
            }
            Poll::Ready(Ok(done))
        }
        failed @ Poll::Ready(Err(_)) => failed,
    }
}

impl<T: AsyncRead> AsyncRead for SendTimed<T> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for SendTimed<T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        timed(polled, *this.limit, this.stall, this.stalled, cx, |n| {
            *n > 0
        })
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        timed(polled, *this.limit, this.stall, this.stalled, cx, |n| {
            *n > 0
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        timed(polled, *this.limit, this.stall, this.stalled, cx, |()| true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_shutdown(cx);
        timed(polled, *this.limit, this.stall, this.stalled, cx, |()| true)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A write that waits is cut at the limit; one that goes out in time is not, and
    /// the limit counts again from the next wait.
    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_past_the_limit_fails() {
        let (client, server) = tokio::io::duplex(16);
        let mut timed = SendTimed::new(server, Some(Duration::from_secs(5)));
        timed.write_all(&[0; 16]).await.unwrap();
        // The pipe is full: the next write waits; the reader takes it after 4 s.
        let mut client = client;
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut buf = [0; 16];
            tokio::io::AsyncReadExt::read_exact(&mut client, &mut buf)
                .await
                .unwrap();
            client
        });
        let started = Instant::now();
        timed.write_all(&[1; 16]).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        let _client = reader.await.unwrap();
        // Nobody reads any more: the next wait ends in an error 5 s later.
        let started = Instant::now();
        let err = timed.write_all(&[2; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(err.to_string().contains("send timeout"), "{err}");
    }

    /// Without a limit, a write waits as long as it takes.
    #[tokio::test(start_paused = true)]
    async fn no_limit_waits() {
        let (_client, server) = tokio::io::duplex(4);
        let mut timed = SendTimed::new(server, None);
        let wait = tokio::time::timeout(Duration::from_secs(3600), timed.write_all(&[0; 8]));
        assert!(wait.await.is_err());
    }
}
