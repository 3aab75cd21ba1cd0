//! The `forward` option: a fire-and-forget copy of each request to a second
//! target, whose answer is read and discarded.
//!
//! The copy never slows the real request: its body is fed through a bounded
//! queue, and if the forward target falls behind, its copy is aborted (as a
//! failed body, never as a shorter one) while the real request goes on.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Uri, request};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tracing::debug;

use super::headers::{self, Downstream, clone_head};
use super::{ConnInfo, Inner, path};
use crate::body::Body;
use crate::error::BoxError;
use crate::hooks::Hooks;
use crate::options::Options;
use crate::target::{Protocol, Target};

/// Frames queued for the forward copy before it counts as too slow.
const QUEUE: usize = 64;

enum Msg {
    Frame(Frame<Bytes>),
    End,
}

/// Sends the whole request to `fwd` in the background (forward without target).
pub(crate) fn send<H: Hooks>(
    inner: &Arc<Inner<H>>,
    req: Request<Body>,
    fwd: &Target,
    opts: &Options,
    conn: Option<ConnInfo>,
) {
    let (mut parts, body) = req.into_parts();
    let body_len = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let conn = conn.or_else(|| parts.extensions.get::<ConnInfo>().copied());
    let Ok(uri) = fwd.uri_for(path::outgoing_path(fwd, &parts.uri, opts)) else {
        return;
    };
    let down = Downstream {
        remote_ip: conn.map(|c| c.remote.ip()),
        tls: conn.is_some_and(|c| c.tls),
        upgrade: false,
        body_len,
    };
    headers::request_headers(&mut parts, fwd, opts, down);
    let mut head = clone_head(&parts);
    head.uri = uri;
    spawn(inner, head, body, fwd);
}

/// Starts the forward copy of a request whose head is `parts` (already
/// prepared for the real target) and returns the body to send to the target.
pub(crate) fn tee<H: Hooks>(
    inner: &Arc<Inner<H>>,
    parts: &request::Parts,
    fwd_uri: Uri,
    body: Body,
    fwd: &Target,
) -> Body {
    let mut head = clone_head(parts);
    head.uri = fwd_uri;
    if body.is_end_stream() {
        spawn(inner, head, Body::empty(), fwd);
        return body;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    spawn(inner, head, Body::new(Receiver { rx, done: false }), fwd);
    Body::new(Tee {
        inner: body,
        tx: Some(tx),
    })
}

fn spawn<H: Hooks>(inner: &Arc<Inner<H>>, mut head: request::Parts, body: Body, fwd: &Target) {
    head.version = if fwd.protocol() == Protocol::Http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    let sent = inner.upstream.request(fwd, Request::from_parts(head, body));
    let name = fwd.as_str().to_owned();
    tokio::spawn(async move {
        match sent.await {
            Ok(res) => {
                // Read the answer to the end so the connection can be reused.
                let _ = res.into_body().collect().await;
            }
            Err(err) => debug!(forward = %name, error = %err, "forward request failed"),
        }
    });
}

struct Tee {
    inner: Body,
    tx: Option<mpsc::Sender<Msg>>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let copy = match &polled {
            Some(Ok(frame)) => frame
                .data_ref()
                .map(|d| Frame::data(d.clone()))
                .or_else(|| frame.trailers_ref().map(|t| Frame::trailers(t.clone())))
                .map(Msg::Frame),
            Some(Err(_)) => None,
            None => Some(Msg::End),
        };
        if let Some(tx) = &self.tx {
            let sent = copy.map(|m| tx.try_send(m).is_ok()).unwrap_or(false);
            if !sent || polled.is_none() {
                // Too slow, failed or finished: either way the copy is on its own now.
                self.tx = None;
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Receiver {
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the forward copy fell behind or the request body failed")]
struct CopyAborted;

impl http_body::Body for Receiver {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(Msg::Frame(f)) => Poll::Ready(Some(Ok(f))),
            Some(Msg::End) => {
                self.done = true;
                Poll::Ready(None)
            }
            None => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(CopyAborted))))
            }
        }
    }
}
