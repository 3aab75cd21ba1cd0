//! Run with: cargo run -p switchyard --example load_balancer
//!
//! A load balancer over three upstreams (round robin, passive health,
//! active health check on `/health`, retries for idempotent requests).
//! The demo sends a steady stream of GETs, kills the second upstream, then
//! restarts it: the stream sees no failed request, and the restarted
//! upstream gets traffic again. Set `PROXY_ADDR` to listen elsewhere.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Balance, Body, HealthCheck, Proxy, Retry, Server, Target, Upstreams};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// One upstream server that can be killed (listener and connections
/// closed at once) and restarted on the same port.
#[derive(Debug)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests it has answered (not counting health checks).
    pub hits: Arc<AtomicUsize>,
    name: String,
    tasks: JoinSet<()>,
}

/// The running example.
#[derive(Debug)]
pub struct Running {
    /// The load balancer.
    pub server: Server,
    /// The three upstreams.
    pub upstreams: Vec<Upstream>,
    /// The pool, to watch its health.
    pub pool: Upstreams,
}

/// Starts three upstreams and the load balancer in front of them.
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn start(proxy_addr: &str) -> Result<Running, Box<dyn std::error::Error>> {
    let mut upstreams = Vec::new();
    for name in ["one", "two", "three"] {
        upstreams.push(Upstream::start(name).await?);
    }
    let targets = upstreams
        .iter()
        .map(|u| Target::parse(&format!("http://{}", u.addr)))
        .collect::<Result<Vec<_>, _>>()?;
    let pool = Upstreams::builder(targets)
        .balance(Balance::RoundRobin)
        // A member that refuses a connection is out for 200 ms, then 400 ms…
        .backoff(Duration::from_millis(200), Duration::from_secs(2))
        .health_check(HealthCheck::new("/health", Duration::from_millis(500)))
        .build()?;
    let proxy = Proxy::builder()
        .upstreams(pool.clone())
        // Idempotent requests without a body survive a reset connection.
        .retry(Retry::default().retries_count(2))
        .build()?;
    let server = proxy.listen(proxy_addr).await?;
    Ok(Running {
        server,
        upstreams,
        pool,
    })
}

impl Upstream {
    async fn start(name: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut u = Self {
            addr: listener.local_addr()?,
            hits: Arc::new(AtomicUsize::new(0)),
            name: name.to_owned(),
            tasks: JoinSet::new(),
        };
        u.serve(listener);
        Ok(u)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, hits) = (self.name.clone(), self.hits.clone());
        self.tasks.spawn(async move {
            // Dropped with this task: aborts every connection.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (name, hits) = (name.clone(), hits.clone());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (name, hits) = (name.clone(), hits.clone());
                    async move {
                        if req.uri().path() != "/health" {
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Body::from(name)))
                    }
                });
                conns.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
    }

    /// Closes the listener and every connection, and waits until they are.
    pub async fn kill(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Listens again on the same port.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound again.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("PROXY_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".to_owned());
    let mut running = start(&addr).await?;
    let url = format!("http://{}/", running.server.local_addr());
    println!("load balancer on {url}");
    let failures = Arc::new(Mutex::new(0u32));
    let f = failures.clone();
    let traffic = tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        for _ in 0..400 {
            let ok = match client.get(url.parse().expect("a valid URL")).await {
                Ok(res) => res.status().is_success(),
                Err(_) => false,
            };
            if !ok {
                *f.lock().expect("not poisoned") += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("killing upstream two");
    running.upstreams[1].kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("restarting upstream two");
    running.upstreams[1].restart().await?;
    traffic.await?;
    for u in &running.upstreams {
        println!(
            "upstream {} answered {}",
            u.name,
            u.hits.load(Ordering::Relaxed)
        );
    }
    println!(
        "failed requests: {}",
        *failures.lock().expect("not poisoned")
    );
    running.server.shutdown().await;
    Ok(())
}
