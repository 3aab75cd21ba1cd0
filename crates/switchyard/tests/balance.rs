//! Several upstreams for one route (`Upstreams`): round robin, least
//! outstanding requests, passive health (a refused connection takes a
//! member out for a back-off period) and the active health check
//! (reply-from's test balanced-pool, http2-target-multi-crash).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Balance, Body, HealthCheck, Proxy, Retry, Upstreams};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

fn get() -> Request<Body> {
    Request::get("/").body(Body::empty()).unwrap()
}

async fn body_of(res: Response<Body>) -> String {
    String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap()
}

/// A backend answering its name, that can be killed (listener and every
/// connection closed) and started again on the same port.
struct Killable {
    addr: SocketAddr,
    name: &'static str,
    tasks: JoinSet<()>,
    hits: Arc<Mutex<Vec<&'static str>>>,
    healthy: Arc<AtomicBool>,
}

impl Killable {
    async fn start(name: &'static str, hits: Arc<Mutex<Vec<&'static str>>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut k = Self {
            addr: listener.local_addr().unwrap(),
            name,
            tasks: JoinSet::new(),
            hits,
            healthy: Arc::new(AtomicBool::new(true)),
        };
        k.serve(listener);
        k
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, hits, healthy) = (self.name, self.hits.clone(), self.healthy.clone());
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let c2 = conns.clone();
        self.tasks.spawn(async move {
            // Aborting this task drops the connection set, which aborts them all.
            let _conns = c2;
            while let Ok((stream, _)) = listener.accept().await {
                let (hits, healthy) = (hits.clone(), healthy.clone());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (hits, healthy) = (hits.clone(), healthy.clone());
                    async move {
                        if req.uri().path() == "/health" {
                            let ok = healthy.load(Ordering::SeqCst);
                            return Ok::<_, std::convert::Infallible>(text(
                                if ok { 200 } else { 503 },
                                "health",
                            ));
                        }
                        hits.lock().unwrap().push(name);
                        Ok(Response::new(Body::from(name)))
                    }
                });
                _conns.lock().unwrap().spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        drop(conns);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn kill(&mut self) {
        self.tasks.shutdown().await;
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

fn pool(members: &[&Killable], balance: Balance) -> Upstreams {
    Upstreams::builder(
        members
            .iter()
            .map(|k| switchyard::Target::parse(&k.url()).unwrap()),
    )
    .balance(balance)
    .backoff(Duration::from_secs(10), Duration::from_secs(60))
    .build()
    .unwrap()
}

/// Two upstreams receive requests in round-robin order.
#[tokio::test]
async fn round_robin_order() {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let a = Killable::start("a", hits.clone()).await;
    let b = Killable::start("b", hits.clone()).await;
    let proxy = Proxy::builder()
        .upstreams(pool(&[&a, &b], Balance::RoundRobin))
        .build()
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(body_of(within(proxy.web(get())).await).await);
    }
    assert_eq!(answers, ["a", "b", "a", "b"]);
}

/// reply-from's test balanced-pool: a pool given to one `forward` call spreads
/// requests across both upstreams (the proxy itself has no target).
#[tokio::test]
async fn forward_with_a_pool() {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let a = Killable::start("a", hits.clone()).await;
    let b = Killable::start("b", hits.clone()).await;
    let upstreams = pool(&[&a, &b], Balance::RoundRobin);
    let proxy = Proxy::builder().build().unwrap();
    for _ in 0..4 {
        let req = Request::get("/x").body(Full::<Bytes>::default()).unwrap();
        let res = within(
            proxy
                .forward(req, "/x")
                .upstreams(upstreams.clone())
                .into_future(),
        )
        .await;
        assert_eq!(res.status(), 200);
    }
    let hits = hits.lock().unwrap();
    assert_eq!(hits.iter().filter(|h| **h == "a").count(), 2);
    assert_eq!(hits.iter().filter(|h| **h == "b").count(), 2);
}

/// Least outstanding requests: while one upstream holds a request, the
/// others get the next ones; the count drops when the body ends.
#[tokio::test]
async fn least_outstanding_avoids_the_busy_upstream() {
    let release = Arc::new(tokio::sync::Notify::new());
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let r2 = release.clone();
    let slow = backend(move |_req: Request<Incoming>| {
        let (release, arrived_tx) = (r2.clone(), arrived_tx.clone());
        async move {
            let _ = arrived_tx.send(());
            release.notified().await;
            text(200, "slow")
        }
    })
    .await;
    let fast = backend(|_req: Request<Incoming>| async { text(200, "fast") }).await;
    let upstreams = Upstreams::builder([slow.target(), fast.target()])
        .balance(Balance::LeastOutstanding)
        .build()
        .unwrap();
    let proxy = Proxy::builder()
        .upstreams(upstreams.clone())
        .build()
        .unwrap();
    let p2 = proxy.clone();
    let held = tokio::spawn(async move { body_of(p2.web(get()).await).await });
    within(arrived.recv()).await.unwrap();
    assert_eq!(upstreams.outstanding(0), 1);
    for _ in 0..3 {
        assert_eq!(body_of(within(proxy.web(get())).await).await, "fast");
    }
    release.notify_one();
    assert_eq!(within(held).await.unwrap(), "slow");
    assert_eq!(upstreams.outstanding(0), 0);
    assert_eq!(upstreams.outstanding(1), 0);
}

/// A safety net on the wall clock for the paused-clock test (see
/// `retry.rs`): never a timing assertion.
async fn wall_within<F: Future>(f: F) -> F::Output {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = tx.send(());
    });
    tokio::select! {
        out = f => out,
        _ = rx => panic!("not done after 30 s of wall time (safety net)"),
    }
}

/// reply-from's test http2-target-multi-crash, and http-proxy-3's "suitable for
/// load balancing": a dead upstream is skipped while it is down (the request
/// that finds it refusing fails over, so no request fails), and used again once
/// its back-off period is over and it is back. The back-off runs on tokio's
/// paused clock, advanced by hand; no other timer exists.
#[tokio::test(start_paused = true)]
async fn dead_upstream_is_skipped_then_used_again() {
    wall_within(async {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let a = Killable::start("a", hits.clone()).await;
        let mut b = Killable::start("b", hits.clone()).await;
        let upstreams = pool(&[&a, &b], Balance::RoundRobin);
        let proxy = Proxy::builder()
            .upstreams(upstreams.clone())
            .retry(Retry::default().retries_count(2))
            .configure_client(|c| {
                c.pool_idle_timeout = None;
                c.connect_timeout = None;
            })
            .build()
            .unwrap();
        let ask = || async { body_of(proxy.web(get()).await).await };
        assert_eq!([ask().await, ask().await], ["a", "b"]);

        b.kill().await;
        for _ in 0..4 {
            assert_eq!(ask().await, "a");
        }
        assert!(!upstreams.is_up(1));
        b.restart().await;
        // Still in its back-off period: not asked.
        for _ in 0..2 {
            assert_eq!(ask().await, "a");
        }
        let b_hits = || hits.lock().unwrap().iter().filter(|h| **h == "b").count();
        assert_eq!(b_hits(), 1);

        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(upstreams.is_up(1));
        let answers = [ask().await, ask().await];
        assert!(answers.contains(&"b".to_owned()), "{answers:?}");
        assert_eq!(b_hits(), 2);
    })
    .await;
}

/// The active health check takes an upstream whose health path fails out
/// of rotation while it still accepts connections, and brings it back
/// when the check passes again. The test waits for the pool's change
/// notifications, not for time.
#[tokio::test]
async fn active_health_check() {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let a = Killable::start("a", hits.clone()).await;
    let b = Killable::start("b", hits.clone()).await;
    let upstreams = Upstreams::builder([
        switchyard::Target::parse(&a.url()).unwrap(),
        switchyard::Target::parse(&b.url()).unwrap(),
    ])
    .health_check(HealthCheck::new("/health", Duration::from_millis(20)))
    .build()
    .unwrap();
    let mut changes = upstreams.watch();
    let proxy = Proxy::builder()
        .upstreams(upstreams.clone())
        .build()
        .unwrap();

    b.healthy.store(false, Ordering::SeqCst);
    while upstreams.is_up(1) {
        within(changes.changed()).await.unwrap();
    }
    for _ in 0..4 {
        assert_eq!(body_of(within(proxy.web(get())).await).await, "a");
    }
    b.healthy.store(true, Ordering::SeqCst);
    while !upstreams.is_up(1) {
        within(changes.changed()).await.unwrap();
    }
    let answers = [
        body_of(within(proxy.web(get())).await).await,
        body_of(within(proxy.web(get())).await).await,
    ];
    assert!(answers.contains(&"b".to_owned()), "{answers:?}");
}
