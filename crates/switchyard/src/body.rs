//! The body type the proxy reads and returns: streaming, never collected.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future as _;
use tokio::time::{Instant, Sleep};

use crate::error::{BoxError, ProxyError};

/// A streaming HTTP body: what [`Proxy::web`](crate::Proxy::web) takes and returns.
///
/// Bodies pass through frame by frame; the proxy never holds a whole body in
/// memory. Size hints are kept, so a body of known length is forwarded with a
/// `Content-Length` and one of unknown length with chunked framing.
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    /// A client's request body: its errors are the client's doing.
    Downstream(Incoming),
    Boxed(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static>>),
    Watched(Box<Watched>),
}

/// How a watched body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyEnd {
    /// Every frame was read, `bytes` data bytes in all.
    Complete {
        /// Data bytes that went through.
        bytes: u64,
    },
    /// The body failed (the peer reset, or an idle timeout fired).
    Failed {
        /// Data bytes that went through before the failure.
        bytes: u64,
    },
    /// The reader dropped the body before its end (the client went away).
    Dropped {
        /// Data bytes that went through before the drop.
        bytes: u64,
    },
}

/// Called once at the body's end, with the error that failed it, if one did.
pub(crate) type EndCallback = Box<dyn FnOnce(BodyEnd, Option<&BoxError>) + Send + 'static>;
pub(crate) type FrameCallback = Box<dyn FnMut(usize) + Send + 'static>;

struct Watched {
    inner: Body,
    bytes: u64,
    idle: Option<Idle>,
    on_frame: Option<FrameCallback>,
    on_end: Option<EndCallback>,
}

struct Idle {
    limit: Duration,
    /// When the body fails unless a frame arrives first. An idle limit's is set at the
    /// first wait after a frame (and after the start), not at the frame: a body whose
    /// frames are ready when asked for (most small ones) reads no clock, and the time
    /// its reader takes between frames (a client slow to take them) does not count
    /// against the body.
    at: Option<Instant>,
    /// Armed at the first wait only: a body whose frames are ready when asked
    /// for (most small ones) never touches the timer wheel.
    sleep: Option<Pin<Box<Sleep>>>,
    error: fn(Duration) -> BoxError,
    /// An idle limit restarts on every frame; a deadline does not.
    resets: bool,
}

/// The error a body yields when no frame arrived within its idle limit.
#[derive(Debug, thiserror::Error)]
#[error("body idle for more than {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

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

// === impl Body ===

impl Body {
    /// An empty body.
    pub const fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// A body of one chunk.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        Self {
            kind: Kind::Full(Some(bytes)),
        }
    }

    /// Wraps any body whose data is [`Bytes`].
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Self {
            kind: Kind::Boxed(Box::pin(body.map_err(Into::into))),
        }
    }

    /// A copy to send again, for a body held in memory: none, or one chunk
    /// not yet read. `None` for a streamed body.
    pub(crate) fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Full(bytes) => Some(Self {
                kind: Kind::Full(bytes.clone()),
            }),
            _ if self.is_end_stream() => Some(Self::empty()),
            _ => None,
        }
    }

    /// Adds an idle limit: if no frame arrives for `limit`, the body fails
    /// with the error `error(limit)` builds.
    pub(crate) fn with_idle_timeout(
        self,
        limit: Duration,
        error: fn(Duration) -> BoxError,
    ) -> Self {
        self.with_timer(limit, None, error, true)
    }

    /// Adds a deadline: if the body has not ended by `at`, it fails with
    /// `error(limit)`.
    pub(crate) fn with_deadline(
        self,
        at: Instant,
        limit: Duration,
        error: fn(Duration) -> BoxError,
    ) -> Self {
        self.with_timer(limit, Some(at), error, false)
    }

    fn with_timer(
        self,
        limit: Duration,
        at: Option<Instant>,
        error: fn(Duration) -> BoxError,
        resets: bool,
    ) -> Self {
        let mut w = match self.kind {
            // One timer per layer: a second one wraps the first.
            Kind::Watched(w) if w.idle.is_some() => Self {
                kind: Kind::Watched(w),
            }
            .into_fresh_watched(),
            kind => Self { kind }.into_watched(),
        };
        w.idle = Some(Idle {
            limit,
            at,
            sleep: None,
            error,
            resets,
        });
        Self {
            kind: Kind::Watched(w),
        }
    }

    /// Calls `f` with the size of every data frame as it passes.
    pub fn on_data(self, f: impl FnMut(usize) + Send + 'static) -> Self {
        let mut w = match self.kind {
            // One frame callback per layer: a second one wraps the first.
            Kind::Watched(w) if w.on_frame.is_some() => Self {
                kind: Kind::Watched(w),
            }
            .into_fresh_watched(),
            kind => Self { kind }.into_watched(),
        };
        w.on_frame = Some(Box::new(f));
        Self {
            kind: Kind::Watched(w),
        }
    }

    /// Calls `f` once when the body ends, fails, or is dropped unfinished.
    pub fn on_end(self, f: impl FnOnce(BodyEnd) + Send + 'static) -> Self {
        self.on_end_with_error(move |end, _| f(end))
    }

    /// [`on_end`](Self::on_end), also handed the error that failed the body.
    pub(crate) fn on_end_with_error(
        self,
        f: impl FnOnce(BodyEnd, Option<&BoxError>) + Send + 'static,
    ) -> Self {
        let mut w = self.into_watched();
        debug_assert!(w.on_end.is_none(), "one end callback per body");
        w.on_end = Some(Box::new(f));
        Self {
            kind: Kind::Watched(w),
        }
    }

    /// Whether this is a body hyper read from a connection (possibly watched): the
    /// request it belongs to came from a client, not from the application.
    pub(crate) fn came_in(&self) -> bool {
        match &self.kind {
            Kind::Incoming(_) | Kind::Downstream(_) => true,
            Kind::Watched(w) => w.inner.came_in(),
            _ => false,
        }
    }

    /// Marks a hyper body as the client's, so that its failures are told
    /// apart from the upstream's.
    pub(crate) fn into_downstream(self) -> Self {
        match self.kind {
            Kind::Incoming(b) => Self {
                kind: Kind::Downstream(b),
            },
            // A body the caller watches (the server's `last_activity`, say) is
            // still the client's underneath.
            Kind::Watched(mut w) => {
                w.inner = std::mem::take(&mut w.inner).into_downstream();
                Self {
                    kind: Kind::Watched(w),
                }
            }
            kind => Self { kind },
        }
    }

    fn into_watched(self) -> Box<Watched> {
        match self.kind {
            Kind::Watched(w) if w.on_end.is_none() => w,
            kind => Self { kind }.into_fresh_watched(),
        }
    }

    fn into_fresh_watched(self) -> Box<Watched> {
        Box::new(Watched {
            inner: self,
            bytes: 0,
            idle: None,
            on_frame: None,
            on_end: None,
        })
    }

    /// Wraps any request body, marking its errors as the client's; a
    /// [`Body`] or hyper's `Incoming` is used as it is, without boxing.
    pub(crate) fn from_request_body<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        let any = &mut slot as &mut dyn std::any::Any;
        if let Some(b) = any.downcast_mut::<Option<Self>>().and_then(Option::take) {
            return b.into_downstream();
        }
        if let Some(b) = any
            .downcast_mut::<Option<Incoming>>()
            .and_then(Option::take)
        {
            return Self::from(b).into_downstream();
        }
        match slot {
            Some(b) => {
                use http_body_util::BodyExt;
                Self {
                    kind: Kind::Boxed(Box::pin(
                        b.map_err(|e| Box::new(ClientBodyError::Failed(e.into())) as BoxError),
                    )),
                }
            }
            None => Self::empty(),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Incoming(_) => "incoming",
            Kind::Downstream(_) => "downstream",
            Kind::Boxed(_) => "boxed",
            Kind::Watched(_) => "watched",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

impl From<Incoming> for Body {
    fn from(body: Incoming) -> Self {
        Self {
            kind: Kind::Incoming(body),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::full(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::full(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Self::full(v)
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Self::empty()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Downstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(ClientBodyError::Failed(e.into())) as BoxError),
            Kind::Boxed(body) => body.as_mut().poll_frame(cx),
            Kind::Watched(w) => w.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) | Kind::Downstream(body) => body.is_end_stream(),
            Kind::Boxed(body) => body.is_end_stream(),
            Kind::Watched(w) => w.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(body) | Kind::Downstream(body) => body.size_hint(),
            Kind::Boxed(body) => body.size_hint(),
            Kind::Watched(w) => w.inner.size_hint(),
        }
    }
}

// === impl Watched ===

impl Watched {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Pending => {
                if let Some(idle) = &mut self.idle {
                    let at = *idle.at.get_or_insert_with(|| Instant::now() + idle.limit);
                    let sleep = idle
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if sleep.deadline() != at {
                        sleep.as_mut().reset(at);
                    }
                    ready!(sleep.as_mut().poll(cx));
                    let err = (idle.error)(idle.limit);
                    self.finish(BodyEnd::Failed { bytes: self.bytes }, Some(&err));
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                    if let Some(f) = &mut self.on_frame {
                        f(data.len());
                    }
                }
                if let Some(idle) = &mut self.idle
                    && idle.resets
                {
                    idle.at = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.finish(BodyEnd::Failed { bytes: self.bytes }, Some(&err));
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.finish(BodyEnd::Complete { bytes: self.bytes }, None);
                Poll::Ready(None)
            }
        }
    }

    fn finish(&mut self, end: BodyEnd, err: Option<&BoxError>) {
        self.idle = None;
        if let Some(f) = self.on_end.take() {
            f(end, err);
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.on_end.is_some() {
            // A body that reports its end without a final `None` poll (hyper
            // stops at `is_end_stream`) has completed, not been abandoned.
            let end = if self.inner.is_end_stream() {
                BodyEnd::Complete { bytes: self.bytes }
            } else {
                BodyEnd::Dropped { bytes: self.bytes }
            };
            self.finish(end, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn full_body_keeps_its_exact_size() {
        let body = Body::full("hello");
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn end_callback_sees_complete_and_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let body = Body::full("abc").on_end(move |e| s.lock().unwrap().push(e));
        let _ = body.collect().await.unwrap();
        let s = seen.clone();
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_shim::ReceiverStream(rx));
        drop(Body::new(stream).on_end(move |e| s.lock().unwrap().push(e)));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                BodyEnd::Complete { bytes: 3 },
                BodyEnd::Dropped { bytes: 0 }
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fails_a_silent_body() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_shim::ReceiverStream(rx));
        let body = Body::new(stream)
            .with_idle_timeout(Duration::from_secs(5), |d| Box::new(BodyIdleTimeout(d)));
        let err = body.collect().await.unwrap_err();
        assert!(err.is::<BodyIdleTimeout>());
    }

    /// The idle limit counts while the body is waited on, from the first wait after a
    /// frame: a reader that takes 10 s over a frame does not fail a body whose limit is
    /// 5 s, and a body silent for 5 s from then fails.
    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_wait_not_the_frame() {
        let limit = Duration::from_secs(5);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_shim::ReceiverStream(rx));
        let mut body = Body::new(stream).with_idle_timeout(limit, |d| Box::new(BodyIdleTimeout(d)));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        tokio::time::advance(limit * 2).await;
        let waited = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyIdleTimeout>());
        assert_eq!(waited.elapsed(), limit);
    }

    /// A minimal receiver stream, to avoid a dependency on tokio-stream.
    mod tokio_stream_shim {
        use super::*;
        pub(super) struct ReceiverStream<T>(pub(super) tokio::sync::mpsc::Receiver<T>);
        impl<T> futures_util::Stream for ReceiverStream<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }
}
