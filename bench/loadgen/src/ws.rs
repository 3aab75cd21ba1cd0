//! WebSocket clients (echo loops, one-way streams) and the backend they reach
//! through the proxy.

use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async, client_async};

use crate::Shared;

type Error = Box<dyn std::error::Error>;

/// Connections opened at once while setting up.
const CONNECT_BATCH: usize = 64;

/// Serves WebSockets until killed: `/stream?size=N` streams N-byte messages,
/// anything else is echoed.
pub(crate) async fn backend(addr: &str) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await?;
    println!("ws backend listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::task::spawn_local(async move {
            let mut path = String::new();
            #[expect(
                clippy::result_large_err,
                reason = "the signature tungstenite asks for"
            )]
            let callback = |req: &Request, res: Response| {
                path = req.uri().to_string();
                Ok(res)
            };
            let ws = accept_hdr_async(tcp, callback).await;
            let Ok(ws) = ws else { return };
            let size = path
                .strip_prefix("/stream?size=")
                .and_then(|s| s.parse::<usize>().ok());
            match size {
                Some(size) => serve_stream(ws, size).await,
                None => serve_echo(ws).await,
            }
        });
    }
}

async fn serve_echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(msg)) = ws.next().await {
        let echo = match msg {
            Message::Binary(_) | Message::Text(_) => msg,
            Message::Close(_) => return,
            _ => continue,
        };
        if ws.send(echo).await.is_err() {
            return;
        }
    }
}

async fn serve_stream(mut ws: WebSocketStream<TcpStream>, size: usize) {
    let payload = Bytes::from(vec![b'x'; size]);
    while ws.send(Message::Binary(payload.clone())).await.is_ok() {}
}

/// The address to dial and the URL to ask for.
fn dial(url: &str) -> Result<String, Error> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("the URL must start with ws://")?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

async fn connect(url: &str, addr: &str) -> Result<WebSocketStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = client_async(url, tcp).await?;
    Ok(ws)
}

/// Opens `conns` connections (a batch at a time) and starts an echo loop on
/// each; returns once all are open.
pub(crate) async fn echo(
    url: &str,
    size: usize,
    conns: usize,
    tally: &Shared,
) -> Result<(), Error> {
    let addr = dial(url)?;
    let payload = Bytes::from(vec![b'x'; size]);
    let mut opened = 0;
    while opened < conns {
        let batch = CONNECT_BATCH.min(conns - opened);
        let all = futures_util::future::join_all((0..batch).map(|_| connect(url, &addr))).await;
        for ws in all {
            let ws = ws.map_err(|e| format!("connect {url}: {e}"))?;
            tokio::task::spawn_local(echo_loop(ws, payload.clone(), tally.clone()));
        }
        opened += batch;
    }
    Ok(())
}

async fn echo_loop(mut ws: WebSocketStream<TcpStream>, payload: Bytes, tally: Shared) {
    let size = payload.len();
    while !tally.borrow().stop {
        let started = Instant::now();
        if let Err(e) = ws.send(Message::Binary(payload.clone())).await {
            tally.borrow_mut().fail(e);
            return;
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.len() == size => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => {
                    tally
                        .borrow_mut()
                        .fail(format!("unexpected message {other:?}"));
                    return;
                }
                Some(Err(e)) => {
                    tally.borrow_mut().fail(e);
                    return;
                }
                None => {
                    tally.borrow_mut().fail("connection closed");
                    return;
                }
            }
        }
        tally.borrow_mut().record(size, Some(started));
    }
    let _ = ws.close(None).await;
}

/// Opens `conns` connections to `url?size=N` and counts what arrives.
pub(crate) async fn stream(
    url: &str,
    size: usize,
    conns: usize,
    tally: &Shared,
) -> Result<(), Error> {
    let addr = dial(url)?;
    let url = format!("{url}?size={size}");
    for _ in 0..conns {
        let ws = connect(&url, &addr)
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        tokio::task::spawn_local(stream_loop(ws, size, tally.clone()));
    }
    Ok(())
}

async fn stream_loop(mut ws: WebSocketStream<TcpStream>, size: usize, tally: Shared) {
    while !tally.borrow().stop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b.len() == size => {
                tally.borrow_mut().record(size, None)
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => {
                tally
                    .borrow_mut()
                    .fail(format!("unexpected message {other:?}"));
                return;
            }
            Some(Err(e)) => {
                tally.borrow_mut().fail(e);
                return;
            }
            None => {
                tally.borrow_mut().fail("connection closed");
                return;
            }
        }
    }
}
