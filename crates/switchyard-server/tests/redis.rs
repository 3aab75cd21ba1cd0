//! Several replicas on one Redis (`--storage-backend redis://…`), and `--state-file`.
//!
//! Every test starts its own `redis-server` (the Debian package; `scripts/test` installs it) on
//! a UNIX socket (and a TCP port where the test is about `redis://` or `rediss://` URLs)
//! without persistence, real `switchyard` processes and real HTTP backends. A
//! missing `redis-server` fails the tests: it is never a silent skip. Synchronisation is by
//! events only: a log line, a response, or polling an API with a deadline.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;
mod redis_peers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Proxy, request, temp_dir};
use redis_peers::*;

// ============================================================================================
// Tests
// ============================================================================================

/// Add on one replica, proxy through the others; delete on one, 404 on all. The key
/// layout is the Node redis backend's (`chp:<path>` → JSON).
#[test]
fn add_on_one_serve_on_all_delete_on_one_404_on_all() {
    let redis = Redis::start();
    let (a, b, c) = (replica(&redis), replica(&redis), replica(&redis));
    let alice = backend("alice");
    a.api(
        "POST",
        "/api/routes/user/alice",
        Some(&format!(r#"{{"target":"{alice}","user":"alice"}}"#)),
    );
    assert_eq!(
        status(&a, "/user/alice/lab"),
        200,
        "served at once where added"
    );
    for p in [&b, &c] {
        eventually("the route on every replica", || {
            status(p, "/user/alice/lab") == 200
        });
        assert_eq!(p.public("GET", "/user/alice/x", &[]).body, "alice");
        let route: serde_json::Value =
            serde_json::from_str(&p.api("GET", "/api/routes/user/alice", None).body).unwrap();
        assert_eq!(route["user"], "alice");
    }

    let stored: serde_json::Value =
        serde_json::from_str(&redis.cmd(&["GET", "chp:/user/alice"]).unwrap()).unwrap();
    assert_eq!(stored["target"], alice.as_str());
    assert_eq!(stored["user"], "alice");
    assert!(stored["last_activity"].is_string());
    assert!(
        redis
            .cmd(&["HGET", "switchyard:chp:activity", "/user/alice"])
            .is_some()
    );

    let r = b.api("DELETE", "/api/routes/user/alice", None);
    assert_eq!(r.status, 204);
    for p in [&a, &b, &c] {
        eventually("the delete on every replica", || {
            status(p, "/user/alice/lab") == 404
        });
        assert_eq!(p.api("GET", "/api/routes/user/alice", None).status, 404);
    }
    assert_eq!(redis.cmd(&["GET", "chp:/user/alice"]), None);
    assert_eq!(
        redis.cmd(&["HGET", "switchyard:chp:activity", "/user/alice"]),
        None
    );
    assert_eq!(a.api("DELETE", "/api/routes/user/alice", None).status, 404);
}

/// `last_activity` seen by one replica shows on the others (flushed in batches).
#[test]
fn activity_through_one_is_visible_from_all() {
    let redis = Redis::start();
    let (a, b, c) = (replica(&redis), replica(&redis), replica(&redis));
    a.add("/user/bob", &backend("bob"));
    eventually("the route on b", || status(&b, "/user/bob") == 200);
    let before = |p: &Proxy| p.routes()["/user/bob"]["last_activity"].clone();
    let on_c = before(&c);
    // Make sure the clock has moved past the stored value (ms precision).
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2) {
        std::thread::yield_now();
    }
    assert_eq!(status(&b, "/user/bob/api"), 200);
    let after_b = before(&b);
    assert_ne!(after_b, on_c, "b recorded the request");
    for p in [&a, &c] {
        eventually("b's activity on the other replicas", || {
            before(p) == after_b
        });
    }
}

/// Redis going away: traffic flows, writes get 503 and leave nothing, replicas reconnect,
/// catch up, and (Redis came back empty) write their table back.
#[test]
fn redis_outage_keeps_traffic_and_recovers() {
    let mut redis = Redis::start();
    let mut a = Proxy::start(&[
        "--storage-backend",
        &redis.url(),
        "--metrics-port",
        "0",
        "--metrics-ip",
        "127.0.0.1",
    ]);
    a.wait_for_line("Loaded");
    let metrics = a.metrics_port();
    let reconnects = || {
        let m = request(metrics, "GET", "/metrics", &[], None).body;
        let line = m
            .lines()
            .find(|l| l.starts_with("switchyard_redis_reconnects_total "))
            .unwrap_or_else(|| panic!("no reconnect counter in\n{m}"))
            .to_owned();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(reconnects(), 0);
    let mut b = replica(&redis);
    a.add("/keep", &backend("keep"));
    eventually("the route on b", || status(&b, "/keep") == 200);

    // Traffic through both replicas for the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        let ports = [a.port, b.port];
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for port in ports {
                    if request(port, "GET", "/keep/x", &[], None).status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    assert_eq!(
        request(a.port, "GET", "/_chp_readyz", &[], None).status,
        200
    );
    redis.kill();
    a.wait_for_line("Lost Redis");
    b.wait_for_line("Lost Redis");
    // Not ready while the table may be stale (still alive, still serving).
    let r = request(a.port, "GET", "/_chp_readyz", &[], None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("Redis unavailable"), "{}", r.body);
    assert_eq!(
        request(a.port, "GET", "/_chp_healthz", &[], None).status,
        200
    );
    let served = ok.load(Ordering::Relaxed);
    eventually("traffic during the outage", || {
        ok.load(Ordering::Relaxed) > served + 20
    });
    let r = a.api(
        "POST",
        "/api/routes/during",
        Some(r#"{"target":"http://127.0.0.1:1"}"#),
    );
    assert_eq!(r.status, 503);
    assert!(r.body.contains("Route store unavailable"), "{}", r.body);
    assert_eq!(b.api("DELETE", "/api/routes/keep", None).status, 503);
    assert_eq!(a.routes().as_object().unwrap().len(), 1, "reads still work");

    // Back, empty (no persistence): writes work again, the table is written back.
    let redis = redis.restart();
    eventually("writes on b after the restart", || {
        b.api(
            "POST",
            "/api/routes/after",
            Some(&format!(r#"{{"target":"{}"}}"#, backend("after"))),
        )
        .status
            == 201
    });
    eventually("b's new route on a", || status(&a, "/after") == 200);
    a.wait_for_line("Reconnected to Redis");
    b.wait_for_line("Reconnected to Redis");
    assert_eq!(reconnects(), 1);
    for p in [&a, &b] {
        assert_eq!(
            request(p.port, "GET", "/_chp_readyz", &[], None).status,
            200
        );
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert_eq!(bad.load(Ordering::Relaxed), 0, "every request was served");
    for p in [&a, &b] {
        assert_eq!(status(p, "/keep"), 200);
        assert_eq!(status(p, "/during"), 404, "the refused write left nothing");
        assert_eq!(route_count(p), 2);
    }
    assert!(redis.cmd(&["GET", "chp:/keep"]).is_some(), "written back");
    assert_eq!(redis.cmd(&["GET", "chp:/during"]), None);
    for p in [&mut a, &mut b] {
        let err = stderr_of(p);
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A replica killed and started again serves every route as soon as its port accepts.
#[test]
fn restarted_replica_has_every_route_before_serving() {
    let redis = Redis::start();
    let (a, mut b) = (replica(&redis), replica(&redis));
    let target = backend("r");
    for i in 0..50 {
        a.add(&format!("/r/{i}"), &target);
    }
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let b = replica(&redis);
    for i in 0..50 {
        assert_eq!(status(&b, &format!("/r/{i}/x")), 200, "/r/{i}");
    }
    drop(a);
    let a = replica(&redis);
    assert_eq!(route_count(&a), 50);
    assert_eq!(status(&a, "/r/49"), 200);
}

/// 1,000 routes added concurrently through three replicas: exactly 1,000 on each.
#[test]
fn thousand_concurrent_adds_through_three_replicas() {
    let redis = Redis::start();
    let replicas = [replica(&redis), replica(&redis), replica(&redis)];
    let ports: Vec<u16> = replicas.iter().map(|p| p.api_port).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..12)
        .map(|w| {
            let (next, ports) = (next.clone(), ports.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 1000 {
                        return;
                    }
                    let r = request(
                        ports[(i + w) % 3],
                        "POST",
                        &format!("/api/routes/user/u{i}"),
                        &[("Authorization", &format!("token {}", common::TOKEN))],
                        Some(r#"{"target":"http://127.0.0.1:1"}"#),
                    );
                    assert_eq!(r.status, 201, "{}", r.body);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    for p in &replicas {
        eventually("1,000 routes on every replica", || route_count(p) == 1000);
    }
    // Routes plus the activity hash and the epoch.
    assert_eq!(redis.cmd(&["DBSIZE"]).unwrap(), "1002");
}

/// `unix://` sockets work, and replicas on TCP and on the socket share one table.
#[test]
fn unix_socket_url() {
    let redis = Redis::start_tcp(&[]);
    let a = replica_at(&format!("unix://{}?db=0", redis.socket.display()));
    let b = replica_at(&redis.tcp_url());
    a.add("/via/socket", &backend("s"));
    eventually("the route on b", || status(&b, "/via/socket") == 200);
}

/// The memory store with `--state-file`: a killed proxy restarts with its routes.
#[test]
fn state_file_restores_routes_after_a_kill() {
    let dir = temp_dir("state-file");
    let file = dir.join("routes.json");
    let file_s = file.to_str().unwrap();
    let target = backend("m");
    let mut p = Proxy::start(&["--state-file", file_s]);
    p.add("/one", &target);
    p.add("/two", &target);
    assert_eq!(p.api("DELETE", "/api/routes/two", None).status, 204);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let p = Proxy::start(&["--state-file", file_s]);
    assert_eq!(status(&p, "/one/x"), 200);
    assert_eq!(status(&p, "/two"), 404);
    assert_eq!(route_count(&p), 1);
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary file left");
}

/// Propagation delay (add on A, seen by B's API) and nothing else: a measurement, not a
/// pass/fail test. Run: `cargo test --release -p switchyard-server --test redis -- --ignored
/// --nocapture propagation`.
#[test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
fn propagation_delay() {
    let redis = Redis::start();
    let (a, b) = (
        Proxy::start(&["--storage-backend", &redis.url(), "--log-level", "warn"]),
        Proxy::start(&["--storage-backend", &redis.url(), "--log-level", "warn"]),
    );
    let mut delays = Vec::with_capacity(1000);
    for i in 0..1000 {
        let path = format!("/p/{i}");
        a.add(&path, "http://127.0.0.1:1");
        let added = Instant::now();
        let api = format!("/api/routes{path}");
        while b.api("GET", &api, None).status != 200 {
            assert!(added.elapsed() < CONVERGE);
        }
        delays.push(added.elapsed());
    }
    delays.sort();
    println!(
        "propagation over 1000 adds: median {:?}, p99 {:?}, max {:?}",
        delays[500], delays[990], delays[999]
    );
}

/// `rediss://`: two replicas share a table through a TLS-only Redis whose certificate is
/// signed by a private CA, trusted through `SSL_CERT_FILE` (the redis client reads the
/// platform's trust store, and that variable names it). A replica that does not trust the
/// CA refuses to start, with the reason, instead of running with an empty table.
#[test]
fn rediss_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    let dir = temp_dir("rediss");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, server.pem()).unwrap();
    std::fs::write(&key_pem, server_key.serialize_pem()).unwrap();

    // The UNIX socket is only for this test's own checks; the replicas use TLS.
    let redis = Redis::start_tls(&[
        "--tls-cert-file",
        cert_pem.to_str().unwrap(),
        "--tls-key-file",
        key_pem.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca_pem.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let url = redis.tcp_url();
    assert!(url.starts_with("rediss://localhost:"), "{url}");
    let trust = format!("SSL_CERT_FILE={}", ca_pem.display());
    let (a, b) = (
        replica_with_env(&trust, &url),
        replica_with_env(&trust, &url),
    );

    let alice = add_alice(&a);
    assert!(
        redis
            .cmd(&["GET", "chp:/user/alice"])
            .is_some_and(|v| v.contains(&alice)),
        "the route is in Redis under the Node backend's key"
    );
    eventually("the other replica to serve the route", || {
        status(&b, "/user/alice/lab") == 200
    });
    assert_eq!(b.public("GET", "/user/alice/lab", &[]).body, "alice");

    // Without the CA the TLS handshake fails: the replica exits non-zero and says why.
    let out = common::run_to_exit(&[
        "--ip",
        "127.0.0.1",
        "--port",
        "0",
        "--api-ip",
        "127.0.0.1",
        "--api-port",
        "0",
        "--storage-backend",
        &url,
    ]);
    assert!(!out.status.success(), "an untrusted Redis must not be used");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("cannot connect to Redis") && said.contains("UnknownIssuer"),
        "{said}"
    );
}

/// A Redis that requires a password: the password comes from
/// `CONFIGPROXY_REDIS_PASSWORD`, so the URL (and the command line `ps` shows) has none.
/// Without it the replica stops at start and says why; with a password in both places
/// it refuses to guess. The password is never logged.
#[test]
fn password_from_the_environment() {
    const PASSWORD: &str = "s3cret-for-the-test";
    let redis = Redis::start_tcp(&["--requirepass", PASSWORD]);
    let url = redis.tcp_url();
    let with_password = format!("CONFIGPROXY_REDIS_PASSWORD={PASSWORD}");
    let (a, b) = (
        replica_with_env(&with_password, &url),
        replica_with_env(&with_password, &url),
    );
    add_alice(&a);
    eventually("the other replica to serve the route", || {
        status(&b, "/user/alice/lab") == 200
    });
    for p in [&a, &b] {
        assert!(p.log.iter().all(|l| !l.contains(PASSWORD)), "{:#?}", p.log);
    }

    let args = |url: &str| {
        vec![
            "--ip".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            "0".to_owned(),
            "--api-ip".to_owned(),
            "127.0.0.1".to_owned(),
            "--api-port".to_owned(),
            "0".to_owned(),
            "--storage-backend".to_owned(),
            url.to_owned(),
        ]
    };
    let said = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // No password: Redis refuses, the replica exits non-zero.
    let plain = args(&url);
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let out = common::run_to_exit(&plain);
    assert!(!out.status.success());
    let text = said(&out);
    assert!(
        text.contains("from Redis at") && text.contains("NOAUTH"),
        "{text}"
    );

    // A password in the URL and in the environment: which one? Neither; it says so.
    let in_url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.tcp_port());
    let both = args(&in_url);
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    let out = common::command_under(&["env", &with_password], &both, None)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = said(&out);
    assert!(text.contains("give it once"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}
