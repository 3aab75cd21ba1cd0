//! The load generator of `bench/` for what wrk and h2load cannot drive:
//! WebSocket messages (an echo loop per connection, a one-way stream) and TLS
//! connections that each make a full or a resumed handshake. It also serves
//! the WebSocket backend those scenarios proxy to.
//!
//! ```text
//! loadgen ws-backend 127.0.0.1:9100
//! loadgen ws-echo   ws://127.0.0.1:8000/echo --conns 64 --size 100 --duration 10 --pid PID
//! loadgen ws-stream ws://127.0.0.1:8000/stream --size 65536 --duration 10 --pid PID
//! loadgen tls       https://127.0.0.1:8443/ --handshake full --conns 32 --duration 10 --pid PID
//! ```
//!
//! Every client mode connects, warms up for `--warmup` seconds, then measures
//! for `--duration` seconds and prints one JSON line: the count in the window,
//! the rate, latency percentiles, errors, and, with `--pid`, the user and
//! system CPU ticks that process and its children (nginx's master and
//! workers) used in exactly that window. The harness turns ticks into CPU per
//! message or per handshake. One thread: the harness pins the generator to
//! the load core, and a single-threaded runtime spends that core best.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod cpu;
mod tls;
mod ws;

#[derive(Debug, Parser)]
#[command(about = "Load generator of switchyard's bench/")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// A WebSocket backend: `/stream?size=N` sends N-byte binary messages as fast as
    /// the client takes them; any other path echoes every message.
    WsBackend {
        /// Address to listen on.
        addr: String,
    },
    /// N connections, each sending a message and waiting for its echo, in a loop.
    WsEcho {
        /// ws:// URL through the proxy.
        url: String,
        /// Message size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[command(flatten)]
        window: Window,
    },
    /// Connections that only receive `--size`-byte messages from `/stream`.
    WsStream {
        /// ws:// URL through the proxy (its path should be `/stream`).
        url: String,
        /// Message size in bytes.
        #[arg(long, default_value_t = 65536)]
        size: usize,
        #[command(flatten)]
        window: Window,
    },
    /// N loops of: connect, TLS 1.3 handshake, one `GET` with `Connection: close`,
    /// read the answer to its end.
    Tls {
        /// https:// URL of the proxy.
        url: String,
        /// `full`: no resumption; `resume`: each loop keeps its own session store,
        /// so every handshake after its first offers a ticket from the last one.
        #[arg(long, default_value = "full")]
        handshake: tls::Handshake,
        #[command(flatten)]
        window: Window,
    },
}

/// The measured window, shared by every client mode.
#[derive(Debug, clap::Args)]
struct Window {
    /// Concurrent connections (or handshake loops).
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Seconds of load before the window opens.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Process whose CPU time (with its children) is read at the window's edges.
    #[arg(long)]
    pid: Option<u32>,
}

/// What the client tasks record, shared on the one thread.
#[derive(Debug, Default)]
struct Tally {
    /// Inside the measured window.
    measuring: bool,
    /// Past the window: tasks stop at their next step.
    stop: bool,
    /// Messages or handshakes completed in the window.
    count: u64,
    /// Payload bytes received in the window.
    bytes: u64,
    /// Latencies in the window, nanoseconds.
    samples: Vec<u64>,
    /// Failures (connection errors, wrong answers), in or out of the window.
    errors: u64,
    /// The last failure, for the report.
    last_error: Option<String>,
    /// TLS: handshakes in the window that resumed a session.
    resumed: u64,
}

type Shared = Rc<RefCell<Tally>>;

impl Tally {
    /// One message or handshake done; with `started`, its latency is kept.
    fn record(&mut self, bytes: usize, started: Option<Instant>) {
        if self.measuring {
            self.count += 1;
            self.bytes += bytes as u64;
            if let Some(started) = started {
                self.samples
                    .push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }

    fn fail(&mut self, err: impl std::fmt::Display) {
        self.errors += 1;
        self.last_error = Some(err.to_string());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        match cli.mode {
            Mode::WsBackend { addr } => ws::backend(&addr).await,
            Mode::WsEcho { url, size, window } => {
                let tally = Shared::default();
                ws::echo(&url, size, window.conns, &tally).await?;
                report(&window, &tally, "ws-echo").await
            }
            Mode::WsStream { url, size, window } => {
                let tally = Shared::default();
                ws::stream(&url, size, window.conns, &tally).await?;
                report(&window, &tally, "ws-stream").await
            }
            Mode::Tls {
                url,
                handshake,
                window,
            } => {
                let tally = Shared::default();
                tls::handshakes(&url, handshake, window.conns, &tally)?;
                report(&window, &tally, "tls").await
            }
        }
    })
}

/// Runs the warm-up and the window over tasks already started, then prints
/// the JSON line.
async fn report(w: &Window, tally: &Shared, mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::sleep(Duration::from_secs_f64(w.warmup)).await;
    let cpu0 = w.pid.map(cpu::ticks);
    let t0 = Instant::now();
    tally.borrow_mut().measuring = true;
    tokio::time::sleep(Duration::from_secs_f64(w.duration)).await;
    {
        let mut t = tally.borrow_mut();
        t.measuring = false;
        t.stop = true;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = w.pid.map(cpu::ticks);
    let mut t = tally.borrow_mut();
    t.samples.sort_unstable();
    let pct = |p: f64| -> serde_json::Value {
        if t.samples.is_empty() {
            return serde_json::Value::Null;
        }
        let i = ((p / 100.0) * (t.samples.len() - 1) as f64).round() as usize;
        serde_json::json!(t.samples[i] as f64 / 1e3)
    };
    let mut out = serde_json::json!({
        "mode": mode,
        "conns": w.conns,
        "seconds": secs,
        "count": t.count,
        "rate": t.count as f64 / secs,
        "bytes": t.bytes,
        "errors": t.errors,
        "resumed": t.resumed,
        "lat_us": {
            "p50": pct(50.0), "p75": pct(75.0), "p90": pct(90.0), "p99": pct(99.0),
            "p99.9": pct(99.9),
            "max": t.samples.last().map(|&n| n as f64 / 1e3),
        },
    });
    if let (Some((u0, s0)), Some((u1, s1))) = (cpu0, cpu1) {
        out["user_ticks"] = (u1 - u0).into();
        out["sys_ticks"] = (s1 - s0).into();
    }
    if let Some(e) = &t.last_error {
        out["last_error"] = e.as_str().into();
    }
    println!("{out}");
    Ok(())
}
