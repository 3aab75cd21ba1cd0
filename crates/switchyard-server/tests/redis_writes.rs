//! The Redis store's API writes when Redis hangs rather than dies: a 503 says what became of
//! the change, and both replicas' tables and Redis agree with it afterwards.
//!
//! Two replicas of the real binary share one real `redis-server`. Redis is stopped with
//! SIGSTOP (nothing is answered) or holds writes with `CLIENT PAUSE ... WRITE` (it answers
//! reads such as `TIME` but holds the write script), then resumed. Synchronisation is by
//! events: the API's answers, and a marker route written after the resume that each
//! replica must see (the connections answer in order, so everything queued before it has
//! been run by then).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod common;
mod redis_peers;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{Proxy, Response, TOKEN, request};
use redis_peers::*;

const NOTHING_CHANGED: &str = "nothing was changed";
const MAYBE_CHANGED: &str = "may or may not have been made";

fn signal(redis: &Redis, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &redis.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} redis-server");
}

/// POST `/during` on `a` and DELETE `/keep` on `b` at the same time; their answers.
fn write_on_both(a: &Proxy, b: &Proxy) -> (Response, Response) {
    let api = |port: u16, method: &'static str, path: &'static str, body: Option<&'static str>| {
        let auth = format!("token {TOKEN}");
        std::thread::spawn(move || {
            request(
                port,
                method,
                path,
                &[("Authorization", auth.as_str())],
                body,
            )
        })
    };
    let post = api(
        a.api_port,
        "POST",
        "/api/routes/during",
        Some(r#"{"target":"http://127.0.0.1:1"}"#),
    );
    let delete = api(b.api_port, "DELETE", "/api/routes/keep", None);
    (post.join().unwrap(), delete.join().unwrap())
}

/// Writes a marker route through each replica (retried while Redis recovers) and waits
/// until both replicas see both markers: every write queued before them has been run.
fn settle(a: &Proxy, b: &Proxy, round: &str) {
    for (p, name) in [(a, "a"), (b, "b")] {
        let path = format!("/api/routes/marker-{round}-{name}");
        eventually("a marker write after the resume", || {
            p.api("POST", &path, Some(r#"{"target":"http://127.0.0.1:1"}"#))
                .status
                == 201
        });
    }
    for p in [a, b] {
        eventually("both markers on both replicas", || {
            let keys = routes(p);
            keys.contains(&format!("/marker-{round}-a"))
                && keys.contains(&format!("/marker-{round}-b"))
        });
    }
}

fn routes(p: &Proxy) -> BTreeSet<String> {
    p.routes().as_object().unwrap().keys().cloned().collect()
}

/// Both tables are the same, hold `/keep` and not `/during`, and so does Redis.
fn unchanged(redis: &Redis, a: &Proxy, b: &Proxy) {
    let (on_a, on_b) = (routes(a), routes(b));
    assert_eq!(on_a, on_b, "the replicas' tables agree");
    assert!(
        on_a.contains("/keep") && !on_a.contains("/during"),
        "{on_a:?}"
    );
    assert_eq!(status(a, "/keep"), 200);
    assert_eq!(status(b, "/during"), 404);
    assert!(redis.cmd(&["GET", "chp:/keep"]).is_some());
    assert_eq!(redis.cmd(&["GET", "chp:/during"]), None);
}

fn setup() -> (Redis, Proxy, Proxy) {
    let redis = Redis::start();
    let (a, b) = (replica(&redis), replica(&redis));
    a.add("/keep", &backend("keep"));
    eventually("/keep on b", || status(&b, "/keep") == 200);
    (redis, a, b)
}

/// Redis stopped with SIGSTOP: a POST and a DELETE on two replicas answer 503 "nothing was
/// changed", within the response timeout; after SIGCONT nothing was changed indeed, on
/// either replica or in Redis (before, the queued commands ran on resume).
#[test]
fn writes_to_a_stopped_redis_change_nothing() {
    let (redis, a, b) = setup();
    signal(&redis, "STOP");
    let started = Instant::now();
    let (post, delete) = write_on_both(&a, &b);
    let waited = started.elapsed();
    signal(&redis, "CONT");
    for r in [&post, &delete] {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains(NOTHING_CHANGED), "{}", r.body);
    }
    assert!(waited.as_secs() < 4, "answered after {waited:?}");
    settle(&a, &b, "stop");
    unchanged(&redis, &a, &b);
}

/// Redis answers `TIME` but holds the write script past its deadline (`CLIENT PAUSE 4000
/// WRITE`): the 503 says the change may or may not have been made, and when Redis runs the
/// script it does nothing, so the tables and Redis still agree with what they held. A hold
/// shorter than the deadline only makes the write slower.
#[test]
fn writes_held_past_their_deadline_are_not_made() {
    let (redis, a, b) = setup();
    assert_eq!(
        redis.cmd(&["CLIENT", "PAUSE", "4000", "WRITE"]).as_deref(),
        Some("OK")
    );
    let (post, delete) = write_on_both(&a, &b);
    for r in [&post, &delete] {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains(MAYBE_CHANGED), "{}", r.body);
        assert!(r.body.contains("safe"), "{}", r.body);
    }
    settle(&a, &b, "pause");
    unchanged(&redis, &a, &b);

    // The 503's advice: the same requests again, now answered.
    let (post, delete) = write_on_both(&a, &b);
    assert_eq!((post.status, delete.status), (201, 204));
    for p in [&a, &b] {
        eventually("the repeated writes on both replicas", || {
            let keys = routes(p);
            keys.contains("/during") && !keys.contains("/keep")
        });
    }

    assert_eq!(
        redis.cmd(&["CLIENT", "PAUSE", "300", "WRITE"]).as_deref(),
        Some("OK")
    );
    let started = Instant::now();
    let r = a.api(
        "POST",
        "/api/routes/slow",
        Some(r#"{"target":"http://127.0.0.1:1"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        started.elapsed().as_millis() >= 250,
        "the write waited for the pause"
    );
    eventually("the slow write on b", || routes(&b).contains("/slow"));
}
