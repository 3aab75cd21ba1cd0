//! WebSocket (HTTP/1.1 `Upgrade`) tunnelling.
//!
//! The handshake is forwarded as an ordinary request. Only when the upstream
//! answers `101 Switching Protocols` do both sides switch to a raw byte
//! tunnel; switching earlier lets a client smuggle requests past the proxy
//! (Pingora's CVE-2026-2833). Any other answer is relayed as a normal
//! response with `Connection: close`, so the client's socket does not stay
//! open waiting for a switch that never comes (http-proxy-3 #26, CHP #557).
//!
//! Once switched, bytes are copied as they come, never re-framed. When one
//! side ends, its end is passed on and the other direction gets a short
//! grace to finish; an error on either side drops both sockets at once.
//! After the 101, nothing but the tunnel's own bytes is ever written to the
//! client: a failure closes the connection instead of writing an error page
//! into the stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::task::{ArcWake, AtomicWaker, waker_ref};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::end::{self, Ending};
use super::{Inner, headers};
use crate::body::Body;
use crate::drain::Registration;
use crate::error::BoxError;
use crate::hooks::{Hooks, TunnelStats};

mod socket;

use socket::Socket;

/// How long the other direction may go on after one side has ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// At `close_tunnels`, how long a direction may take to finish the frame it is in.
const FINISH_FRAME: Duration = Duration::from_secs(2);
/// After the close frames, how long the peers have to close their side.
const CLOSE_REPLY: Duration = Duration::from_secs(1);
/// Copy buffer per direction while data flows.
const BUF: usize = 16 * 1024;
/// Buffer per direction while the tunnel is quiet.
const IDLE_BUF: usize = 512;

/// An upstream's answer to an upgrade request, with the client's half.
pub(crate) struct Pending {
    pub(crate) on_upgrade: OnUpgrade,
    pub(crate) response: Response<Incoming>,
}

/// Turns the upstream's answer into the client's response, and on a 101
/// starts the tunnel in its own task.
pub(crate) fn finish<H: Hooks>(
    inner: &std::sync::Arc<Inner<H>>,
    mut ctx: H::Ctx,
    ending: Option<Ending>,
    pending: Pending,
) -> Response<Body> {
    let Pending {
        on_upgrade,
        mut response,
    } = pending;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut head, body) = response.into_parts();
        headers::response_headers(&mut head.headers, false);
        head.version = http::Version::HTTP_11;
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return end::watch_response(
            inner,
            Response::from_parts(head, Body::from(body)),
            ctx,
            ending,
        );
    }
    let upstream = hyper::upgrade::on(&mut response);
    let (mut head, _) = response.into_parts();
    headers::response_headers(&mut head.headers, true);
    let inner = inner.clone();
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(on_upgrade, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                debug!(error = %err, "upgrade did not complete");
                if let Some(ending) = ending {
                    let err: BoxError = Box::new(err);
                    inner
                        .hooks
                        .on_end(ctx, &ending.tunnel_closed(None, Some(&err)));
                }
                return;
            }
        };
        inner.hooks.on_open(&mut ctx);
        let opened = Instant::now();
        let mut stats = tunnel(client, upstream, &*inner, &ctx).await;
        if let Some(ending) = ending {
            stats.duration = opened.elapsed();
            inner
                .hooks
                .on_end(ctx, &ending.tunnel_closed(Some(stats), None));
        }
    });
    Response::from_parts(head, Body::empty())
}

async fn tunnel<H: Hooks>(
    client: Upgraded,
    upstream: Upgraded,
    inner: &Inner<H>,
    ctx: &H::Ctx,
) -> TunnelStats {
    // One task owns both sockets, so one poll can drive both directions, each borrowing
    // the reader of one socket and the writer of the other, without splitting the
    // sockets into halves behind locks.
    let hooks = &inner.hooks;
    let (mut client, mut upstream, mut c2u, mut u2c) = {
        let (client, client_first) = Socket::new(client);
        let (upstream, upstream_first) = Socket::new(upstream);
        // One registration per direction: each direction watches for `close_tunnels`
        // while it waits to read, so a close never interrupts a write.
        let c2u = Direction::new(inner.tunnels.register(), &client_first);
        let u2c = Direction::new(inner.tunnels.register(), &upstream_first);
        for (from_client, first) in [(true, &client_first), (false, &upstream_first)] {
            if !first.is_empty() {
                hooks.on_tunnel_data(ctx, from_client, first.len());
            }
        }
        // The first bytes end here, copied: kept in the tunnel's future, they would hold
        // hyper's read buffers for the tunnel's life (3.5 → 11.7 KiB per idle WebSocket in
        // `bench/ws_idle.py`).
        (client, upstream, c2u, u2c)
    };
    let (result, client_ended) = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = c2u.poll_woken(cx, &mut client, &mut upstream, |n| {
            hooks.on_tunnel_data(ctx, true, n)
        }) {
            return Poll::Ready((r, true));
        }
        u2c.poll_woken(cx, &mut upstream, &mut client, |n| {
            hooks.on_tunnel_data(ctx, false, n)
        })
        .map(|r| (r, false))
    })
    .await;
    // One side ended cleanly: let the other drain briefly. Closing: the other
    // direction is closing too, bounded by its own deadline.
    let limit = match result {
        Ok(End::Eof) => Some(CLOSE_GRACE),
        Ok(End::Closing) => Some(FINISH_FRAME + CLOSE_GRACE),
        Err(_) => None,
    };
    let other = match limit {
        Some(limit) if client_ended => {
            let rest = std::future::poll_fn(|cx| {
                u2c.poll_woken(cx, &mut upstream, &mut client, |n| {
                    hooks.on_tunnel_data(ctx, false, n)
                })
            });
            tokio::time::timeout(limit, rest).await
        }
        Some(limit) => {
            let rest = std::future::poll_fn(|cx| {
                c2u.poll_woken(cx, &mut client, &mut upstream, |n| {
                    hooks.on_tunnel_data(ctx, true, n)
                })
            });
            tokio::time::timeout(limit, rest).await
        }
        None => Ok(Err(io::ErrorKind::ConnectionAborted.into())),
    }
    .unwrap_or(Ok(End::Eof));
    let (up_end, down_end) = if client_ended {
        (result, other)
    } else {
        (other, result)
    };
    // Closing at a frame boundary: a close frame each way that is at one (the target's
    // masked, as a client's must be, RFC 6455 §5.3), then a short wait for the peers'
    // answers before the sockets are dropped.
    let up_at_boundary = matches!(up_end, Ok(End::Closing));
    let down_at_boundary = matches!(down_end, Ok(End::Closing));
    if up_at_boundary || down_at_boundary {
        let goodbye = async {
            if down_at_boundary {
                let _ = client.write_all(&close_frame(None)).await;
                let _ = client.shutdown().await;
            }
            if up_at_boundary {
                let _ = upstream.write_all(&close_frame(Some(mask_key()))).await;
                let _ = upstream.shutdown().await;
            }
            // The peers' close frames and ends, read and dropped.
            let (mut sink_c, mut sink_u) = ([0u8; IDLE_BUF], [0u8; IDLE_BUF]);
            tokio::join!(
                async { while matches!(client.read(&mut sink_c).await, Ok(n) if n > 0) {} },
                async { while matches!(upstream.read(&mut sink_u).await, Ok(n) if n > 0) {} },
            );
        };
        // Boxed, as it runs once at the end: kept inline, its state would be a part of
        // every idle tunnel's task.
        let _ = tokio::time::timeout(CLOSE_REPLY, Box::pin(goodbye)).await;
        debug!("WebSocket tunnel closed (1001)");
    }
    TunnelStats {
        client_to_upstream: c2u.count,
        upstream_to_client: u2c.count,
        duration: Duration::ZERO,
    }
}

/// How a direction of a tunnel ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reader's side closed; its end was passed on.
    Eof,
    /// [`Proxy::close_tunnels`](crate::Proxy::close_tunnels) was called and the stream
    /// stands at a frame boundary: a close frame may be written.
    Closing,
}

/// One direction of a tunnel: a copy loop written as a state machine, so that both
/// directions can be polled from one task, each given its reader and writer per poll.
struct Direction {
    // Most tunnels (notebook kernels, terminals) sit idle for hours: read
    // into a small buffer, take a large one only while reads fill the small
    // one, and give it back when traffic calms down. Idle memory per tunnel
    // stays at a few hundred bytes per direction instead of a full buffer.
    small: [u8; IDLE_BUF],
    large: Option<Box<[u8]>>,
    /// Where the frames of this direction end, so a close frame can be put between two.
    frames: Frames,
    /// Bytes written to the other side.
    count: u64,
    closing: Registration,
    /// Once `close_tunnels` was seen: the deadline for the frame in progress to end.
    /// Boxed, as it is needed once at a close: inline, it would be a part of every
    /// idle tunnel.
    finishing: Option<Pin<Box<Sleep>>>,
    step: Step,
    /// The waker this direction is polled with: a wake-up of the tunnel's task polls
    /// only the directions that were woken.
    wake: Arc<Woken>,
}

/// A direction's waker: marks the direction as woken, then wakes the tunnel's task.
/// Without it each wake-up would poll both directions, and the one with nothing to do
/// would go through every layer of its reader to learn that.
struct Woken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Woken {
    /// Whether the direction was woken since the last call (or never polled), with the
    /// task's waker registered for its next wake-up.
    fn take(&self, cx: &Context<'_>) -> bool {
        // Registered before the flag is read: a wake in between is not lost.
        self.task.register(cx.waker());
        self.woken.swap(false, Ordering::AcqRel)
    }
}

impl ArcWake for Woken {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

/// Where a [`Direction`]'s copy loop stands.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Waiting for bytes to read.
    Read,
    /// Writing `buf[at..len]` of what was read.
    Write { at: usize, len: usize },
    /// Flushing the `len` bytes just written.
    Flush { len: usize },
    /// The reader's side ended: passing its end on.
    Shutdown,
}

impl Direction {
    /// A direction whose first bytes to pass on, `first`, were read already (by hyper,
    /// past the head that asked for the upgrade).
    fn new(closing: Registration, first: &[u8]) -> Self {
        let mut direction = Self {
            small: [0u8; IDLE_BUF],
            large: None,
            frames: Frames::default(),
            count: 0,
            closing,
            finishing: None,
            step: Step::Read,
            wake: Arc::new(Woken {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        };
        if !first.is_empty() {
            let buf = if first.len() <= IDLE_BUF {
                &mut direction.small[..]
            } else {
                direction
                    .large
                    .insert(vec![0u8; first.len().max(BUF)].into_boxed_slice())
            };
            buf[..first.len()].copy_from_slice(first);
            direction.frames.feed(first, false);
            direction.step = Step::Write {
                at: 0,
                len: first.len(),
            };
        }
        direction
    }

    /// Copies from `r` to `w` until the reader's side ends (its end passed on to `w`:
    /// `Eof`), an error, or [`close_tunnels`](crate::Proxy::close_tunnels): then the
    /// rest of the frame in progress, if any, is copied and nothing after it (`Closing`
    /// once at a boundary; an error when the frame does not end within
    /// [`FINISH_FRAME`]). `on_data` is told of each read while copying. Polled with the
    /// direction's own waker, and only if the direction was woken since its last poll
    /// (`Pending` otherwise). Not to be polled again once ready.
    fn poll_woken<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        on_data: impl FnMut(usize),
    ) -> Poll<io::Result<End>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if !self.wake.take(cx) {
            return Poll::Pending;
        }
        // Everything the direction waits on (its reader and writer, the drain, the frame's
        // deadline, the runtime's budget) registers this waker. A clone of the `Arc`, so
        // that the waker does not borrow `self`.
        let wake = Arc::clone(&self.wake);
        let waker = waker_ref(&wake);
        let cx = &mut Context::from_waker(&waker);
        let copied = self.poll_steps(cx, r, w, on_data);
        if copied.is_pending()
            && let Some(deadline) = &mut self.finishing
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        copied
    }

    /// The copy loop of [`poll_woken`](Self::poll_woken): its steps, as far as they go
    /// without waiting.
    fn poll_steps<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        mut on_data: impl FnMut(usize),
    ) -> Poll<io::Result<End>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Whether this poll has looked at the drain yet.
        let mut looked = false;
        loop {
            let finishing = self.finishing.is_some();
            let buf = match self.large.as_deref_mut() {
                Some(buf) => buf,
                None => &mut self.small[..],
            };
            match self.step {
                Step::Read if finishing => {
                    if self.frames.at_boundary() {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        return Poll::Ready(Ok(End::Closing));
                    }
                    let n = ready!(poll_read(cx, r, buf))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    let len = self.frames.feed(&buf[..n], true);
                    self.step = Step::Write { at: 0, len };
                }
                Step::Read => {
                    // Checked before the first read of each poll: from then on nothing
                    // past the frame in progress is copied. Once a poll is enough: a
                    // close that begins during the poll wakes the direction, and the next
                    // poll sees it (a message is two reads, the second one `Pending`).
                    let stopping = !looked && self.closing.poll_stopping(cx);
                    looked = true;
                    if stopping {
                        self.finishing = Some(Box::pin(tokio::time::sleep(FINISH_FRAME)));
                        continue;
                    }
                    let n = ready!(poll_read(cx, r, buf))?;
                    if n == 0 {
                        self.step = Step::Shutdown;
                        continue;
                    }
                    on_data(n);
                    self.frames.feed(&buf[..n], false);
                    self.step = Step::Write { at: 0, len: n };
                }
                Step::Write { mut at, len } => {
                    while at < len {
                        let written = Pin::new(&mut *w).poll_write(cx, &buf[at..len]);
                        match written {
                            Poll::Ready(Ok(0)) => {
                                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                            }
                            Poll::Ready(Ok(n)) => at += n,
                            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                            Poll::Pending => {
                                self.step = Step::Write { at, len };
                                return Poll::Pending;
                            }
                        }
                    }
                    if finishing {
                        // While finishing a frame, one flush at its end.
                        self.count += len as u64;
                        self.step = Step::Read;
                    } else {
                        self.step = Step::Flush { len };
                    }
                }
                Step::Flush { len } => {
                    ready!(Pin::new(&mut *w).poll_flush(cx))?;
                    self.count += len as u64;
                    match &self.large {
                        None if len == IDLE_BUF => {
                            self.large = Some(vec![0u8; BUF].into_boxed_slice());
                        }
                        Some(_) if len < IDLE_BUF => self.large = None,
                        _ => {}
                    }
                    self.step = Step::Read;
                }
                Step::Shutdown => {
                    let _ = ready!(Pin::new(&mut *w).poll_shutdown(cx));
                    return Poll::Ready(Ok(End::Eof));
                }
            }
        }
    }
}

/// Reads into `buf`: how many bytes were read.
fn poll_read<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    r: &mut R,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = ReadBuf::new(buf);
    ready!(Pin::new(r).poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().len()))
}

/// A close frame with status 1001, "going away" (RFC 6455 §5.5.1, §7.4.1): unmasked for
/// the client, masked with `mask` for the target.
fn close_frame(mask: Option<[u8; 4]>) -> Vec<u8> {
    const PAYLOAD: [u8; 2] = 1001u16.to_be_bytes();
    let mut frame = vec![0x88]; // FIN, opcode 8 (close)
    match mask {
        None => {
            frame.push(PAYLOAD.len() as u8);
            frame.extend_from_slice(&PAYLOAD);
        }
        Some(key) => {
            frame.push(0x80 | PAYLOAD.len() as u8);
            frame.extend_from_slice(&key);
            frame.extend(PAYLOAD.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
    }
    frame
}

/// A masking key a peer cannot predict (RFC 6455 §5.3): std's randomly keyed hasher.
fn mask_key() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let bits = h.finish().to_le_bytes();
    [bits[0], bits[1], bits[2], bits[3]]
}

/// Where one direction of a WebSocket stream stands among its frames (RFC 6455 §5.2),
/// followed from the bytes as they pass: the header of each frame is read, its payload
/// skipped. A few comparisons per read; nothing per payload byte.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Frames {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The header read so far, when it was split across reads (at most 14 bytes).
    head: [u8; 14],
    head_len: u8,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.head_len == 0
    }

    /// Follows `data`. With `stop_at_boundary`, stops where the first frame ends and
    /// returns how many bytes that took; otherwise takes all of `data`.
    fn feed(&mut self, data: &[u8], stop_at_boundary: bool) -> usize {
        if stop_at_boundary && self.at_boundary() {
            return 0;
        }
        let mut at = 0;
        while at < data.len() {
            if self.remaining > 0 {
                let left = (data.len() - at) as u64;
                let take = self.remaining.min(left);
                self.remaining -= take;
                at += take as usize;
            } else if self.head_len == 0
                && let Some(len) = header_len(&data[at..])
                && len <= data.len() - at
            {
                // The whole header in this read (the usual case): no copy.
                self.remaining = payload_len(&data[at..at + len]);
                at += len;
            } else {
                self.head[usize::from(self.head_len)] = data[at];
                self.head_len += 1;
                at += 1;
                let head = &self.head[..usize::from(self.head_len)];
                if header_len(head) != Some(head.len()) {
                    continue;
                }
                self.remaining = payload_len(head);
                self.head_len = 0;
            }
            if stop_at_boundary && self.at_boundary() {
                break;
            }
        }
        at
    }
}

/// The length of the frame header that starts with `head`, once its second byte is known.
fn header_len(head: &[u8]) -> Option<usize> {
    let second = *head.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// The payload length of the complete frame header `head`.
fn payload_len(head: &[u8]) -> u64 {
    match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&head[2..10]);
            u64::from_be_bytes(bytes)
        }
        n => u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match payload_len {
            0..=125 => f.push(m | payload_len as u8),
            126..=0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, payload_len));
        f
    }

    #[test]
    fn frames_are_followed_across_any_split() {
        let mut stream = Vec::new();
        for (len, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (126, true),
            (300, false),
            (70_000, true),
        ] {
            stream.extend(frame(len, masked));
        }
        for split in [1, 2, 3, 7, 13, 64, 1000, stream.len()] {
            let mut frames = Frames::default();
            for chunk in stream.chunks(split) {
                assert_eq!(frames.feed(chunk, false), chunk.len());
            }
            assert!(frames.at_boundary(), "split {split}");
        }
    }

    #[test]
    fn feed_stops_where_the_frame_in_progress_ends() {
        let first = frame(10, true);
        let second = frame(3, true);
        let mut frames = Frames::default();
        // Header and 4 of 10 payload bytes: mid-frame.
        assert_eq!(frames.feed(&first[..10], false), 10);
        assert!(!frames.at_boundary());
        let mut rest = first[10..].to_vec();
        rest.extend(&second);
        assert_eq!(frames.feed(&rest, true), first.len() - 10);
        assert!(frames.at_boundary());
        assert_eq!(frames.feed(&second, true), 0);
        // A header split across reads is not a boundary.
        let mut frames = Frames::default();
        assert_eq!(frames.feed(&second[..1], false), 1);
        assert!(!frames.at_boundary());
    }

    #[test]
    fn close_frames_are_well_formed() {
        assert_eq!(close_frame(None), [0x88, 2, 0x03, 0xe9]);
        let key = [0x11, 0x22, 0x33, 0x44];
        assert_eq!(
            close_frame(Some(key)),
            [0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xe9 ^ 0x22]
        );
        let mut frames = Frames::default();
        assert_eq!(frames.feed(&close_frame(Some(mask_key())), false), 8);
        assert!(frames.at_boundary());
    }
}
