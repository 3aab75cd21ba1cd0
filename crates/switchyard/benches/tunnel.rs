//! The WebSocket tunnel's copy loop: how long 1 MiB of client frames takes to cross a
//! tunnel of `Proxy::listen` over loopback, in 64-byte frames (a chatty session: a frame
//! header every 70 bytes) and in 16 KiB frames. It justifies following the frame headers
//! in the copy loop (so `close_tunnels` can put a close frame between two frames): the
//! cost must stay within noise of a plain byte copy.
//!
//! Run with `cargo bench -p switchyard --bench tunnel`; CI only compiles it.

#![allow(
    clippy::unwrap_used,
    reason = "the benchmark's setup panics on failure"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use switchyard::{Proxy, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const TOTAL: usize = 1 << 20;

/// A stream of masked binary frames of `payload` bytes each, about `TOTAL` in all.
fn frames(payload: usize) -> Vec<u8> {
    let mut one = vec![0x82u8];
    match payload {
        0..=125 => one.push(0x80 | payload as u8),
        _ => {
            one.push(0x80 | 126);
            one.extend_from_slice(&(payload as u16).to_be_bytes());
        }
    }
    one.extend_from_slice(&[1, 2, 3, 4]);
    one.extend(std::iter::repeat_n(0x55u8, payload));
    let mut all = Vec::with_capacity(TOTAL + one.len());
    while all.len() < TOTAL {
        all.extend_from_slice(&one);
    }
    all
}

/// A tunnel through a proxy: the client's end, and a target that counts what it reads
/// and notifies `arrived` at each `expect` bytes.
async fn tunnel(expect: usize, arrived: Arc<Notify>) -> (TcpStream, switchyard::Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = 0usize;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            seen += n;
            while seen >= expect {
                seen -= expect;
                arrived.notify_one();
            }
        }
    });
    let proxy = Proxy::builder()
        .target(Target::parse(&format!("ws://{up}")).unwrap())
        .configure(|o| o.ws = true)
        .build()
        .unwrap();
    let server = proxy.listen("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(server.local_addr()).await.unwrap();
    client
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        client.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    (client, server)
}

fn client_to_target(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("tunnel_1MiB");
    for payload in [64usize, 16 * 1024] {
        let data = frames(payload);
        let arrived = Arc::new(Notify::new());
        let (mut client, _server) = rt.block_on(tunnel(data.len(), arrived.clone()));
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::new("frames", payload), &data, |b, data| {
            b.iter(|| {
                rt.block_on(async {
                    client.write_all(data).await.unwrap();
                    arrived.notified().await;
                });
            });
        });
    }
    group.finish();
}

/// The benchmark group, a public function that criterion's macro makes.
mod group {
    #![allow(
        missing_docs,
        reason = "criterion's macro makes an undocumented function"
    )]
    use super::client_to_target;
    criterion::criterion_group!(benches, client_to_target);
}
use group::benches;
criterion_main!(benches);
