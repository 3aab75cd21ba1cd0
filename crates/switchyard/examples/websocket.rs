//! Run with: cargo run -p switchyard --example websocket
//!
//! The http-proxy-3 README's "proxying WebSockets" (`ws: true`): a proxy
//! on 127.0.0.1:8014 in front of a WebSocket echo server on 127.0.0.1:9014.
//! The tunnel opens only after the upstream's `101 Switching Protocols`;
//! the hooks print when it opens and how many bytes went each way when it
//! closes. Try (with websocat, https://github.com/vi/websocat):
//!
//! ```text
//! websocat ws://127.0.0.1:8014/
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use switchyard::{Hooks, Outcome, Proxy, Target};
use tokio::net::TcpListener;

#[path = "support/mod.rs"]
mod support;
use support::env_addr;

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The running proxy; dropping it stops the proxy.
    pub server: switchyard::Server,
    /// The echo server's address.
    pub target: SocketAddr,
}

/// Hooks that log the tunnel's life (Node's `open` and `close` events).
#[derive(Debug, Clone, Copy)]
pub struct LogTunnels;

impl Hooks for LogTunnels {
    type Ctx = ();
    fn new_ctx(&self) {}
    fn on_open(&self, (): &mut ()) {
        println!("tunnel open");
    }
    fn on_end(&self, (): (), outcome: &Outcome<'_>) {
        if let Some(t) = outcome.tunnel {
            println!(
                "tunnel closed after {:?}: {} bytes from the client, {} to it",
                t.duration, t.client_to_upstream, t.upstream_to_client
            );
        }
    }
}

/// Starts the echo server and a proxy with `ws: true` in front of it.
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = echo_server(target_addr).await?;
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{target}"))?)
        .configure(|o| o.ws = true)
        .hooks(LogTunnels)
        .build()?;
    let server = proxy.listen(proxy_addr).await?;
    Ok(Running {
        proxy: server.local_addr(),
        server,
        target,
    })
}

/// A WebSocket server that echoes every text and binary message.
async fn echo_server(addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(local)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:8014"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9014"),
    )
    .await?;
    println!(
        "proxy on ws://{} -> echo server ws://{}\ntry: websocat ws://{}/",
        running.proxy, running.target, running.proxy
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
