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
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::{Inner, headers};
use crate::body::Body;
use crate::hooks::{Hooks, TunnelStats};

/// How long the other direction may go on after one side has ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
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
        return Response::from_parts(head, Body::from(body));
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
                return;
            }
        };
        inner.hooks.on_open(&mut ctx);
        let stats = tunnel(client, upstream, &*inner, &ctx).await;
        inner.hooks.on_close(ctx, stats);
    });
    Response::from_parts(head, Body::empty())
}

async fn tunnel<H: Hooks>(
    client: Upgraded,
    upstream: Upgraded,
    inner: &Inner<H>,
    ctx: &H::Ctx,
) -> TunnelStats {
    let (mut cr, mut cw) = tokio::io::split(TokioIo::new(client));
    let (mut ur, mut uw) = tokio::io::split(TokioIo::new(upstream));
    let (mut up, mut down) = (0u64, 0u64);
    {
        let mut c2u = std::pin::pin!(copy(&mut cr, &mut uw, &mut up, |n| {
            inner.hooks.on_tunnel_data(ctx, true, n);
        }));
        let mut u2c = std::pin::pin!(copy(&mut ur, &mut cw, &mut down, |n| {
            inner.hooks.on_tunnel_data(ctx, false, n);
        }));
        let (result, client_ended) = tokio::select! {
            r = &mut c2u => (r, true),
            r = &mut u2c => (r, false),
        };
        if result.is_ok() {
            // One side ended cleanly; let the other drain briefly.
            if client_ended {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut u2c).await;
            } else {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut c2u).await;
            }
        }
    }
    TunnelStats {
        client_to_upstream: up,
        upstream_to_client: down,
    }
}

async fn copy<R, W>(
    r: &mut R,
    w: &mut W,
    count: &mut u64,
    mut on_data: impl FnMut(usize),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Most tunnels (notebook kernels, terminals) sit idle for hours: read
    // into a small buffer, take a large one only while reads fill the small
    // one, and give it back when traffic calms down. Idle memory per tunnel
    // stays at a few hundred bytes per direction instead of a full buffer.
    let mut small = [0u8; IDLE_BUF];
    let mut large: Option<Box<[u8]>> = None;
    loop {
        let n = match large.as_deref_mut() {
            Some(buf) => r.read(buf).await?,
            None => r.read(&mut small).await?,
        };
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        on_data(n);
        let data = match large.as_deref() {
            Some(buf) => &buf[..n],
            None => &small[..n],
        };
        w.write_all(data).await?;
        w.flush().await?;
        *count += n as u64;
        match &large {
            None if n == IDLE_BUF => large = Some(vec![0u8; BUF].into_boxed_slice()),
            Some(_) if n < IDLE_BUF => large = None,
            _ => {}
        }
    }
}
