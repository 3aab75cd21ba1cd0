//! Route lookup and the forwarded path: unit tests of CHP's routing rules and a property
//! test that routing the forwarded path finds the route the request was given (a proxy
//! that routes one path and forwards another lets `/user/a/../b` reach the wrong server).

use serde_json::Map;

use super::*;
use crate::store::Target;
use crate::store::memory::MemoryStore;

async fn state(host_routing: bool, include_prefix: bool, keys: &[&str]) -> PublicState {
    let store = MemoryStore::new();
    for k in keys {
        store
            .add(
                k,
                Target::parse("http://127.0.0.1:1/base").unwrap(),
                Map::new(),
            )
            .await
            .unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    PublicState {
        store: Arc::new(store),
        host_routing,
        include_prefix,
        error_pages: ErrorPages::builtin(),
        metrics: metrics.clone(),
        engine: engine(&clap::Parser::parse_from(["switchyard"]), metrics, None).unwrap(),
        stopping: Arc::default(),
        access_log: None,
        request_ids: None,
        route_stats: true,
    }
}

/// The probes answer their exact URLs only; readiness follows the stop flag.
#[tokio::test]
async fn probes_answer_exact_urls() {
    let state = state(false, true, &[]).await;
    let status = |url: &str| probe(&state, &url.parse().unwrap()).map(|r| r.status());
    assert_eq!(status("/_chp_healthz"), Some(StatusCode::OK));
    assert_eq!(status("/_chp_readyz"), Some(StatusCode::OK));
    for other in [
        "/_chp_readyz?x",
        "/_chp_ready",
        "/_chp_",
        "/_chp_readyz/",
        "/",
    ] {
        assert_eq!(status(other), None, "{other}");
    }
    state.stopping.store(true, Ordering::Relaxed);
    assert_eq!(
        status("/_chp_readyz"),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(status("/_chp_healthz"), Some(StatusCode::OK));
}

fn req(uri: &str, host: &str) -> Request<()> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(())
        .unwrap()
}

fn routed(state: &PublicState, uri: &str, host: &str) -> Result<(String, String), StatusCode> {
    route(state, &req(uri, host)).map(|r| (r.prefix.to_string(), r.forward_path_and_query))
}

/// Longest segment prefix on the decoded path; routing and the forwarded path agree.
#[tokio::test]
async fn path_routing_and_forward_path() {
    let s = state(false, true, &["/", "/user/foo", "/b@r/b r"]).await;
    assert_eq!(
        routed(&s, "/user/foo/bar?x=1&y=%20", "h").unwrap(),
        ("/user/foo".into(), "/user/foo/bar?x=1&y=%20".into())
    );
    assert_eq!(
        routed(&s, "/user/foo/../x", "h").unwrap(),
        ("/".into(), "/user/x".into())
    );
    assert_eq!(routed(&s, "/user/foobar", "h").unwrap().0, "/");
    assert_eq!(routed(&s, "/b%40r/b%20r/x", "h").unwrap().0, "/b@r/b r");
    assert_eq!(routed(&s, "/__proto__", "h").unwrap().0, "/");
    assert_eq!(routed(&s, "/%", "h"), Err(StatusCode::BAD_REQUEST));
    let empty = state(false, true, &["/a"]).await;
    assert_eq!(routed(&empty, "/b", "h"), Err(StatusCode::NOT_FOUND));
}

/// `--no-include-prefix` strips the matched segments (CHP cut a character count).
#[tokio::test]
async fn no_include_prefix_strips_segments() {
    let s = state(false, false, &["/bar", "/b@r"]).await;
    assert_eq!(
        routed(&s, "/bar/rest/of/it?q=1", "h").unwrap().1,
        "/rest/of/it?q=1"
    );
    assert_eq!(routed(&s, "/b%40r/x", "h").unwrap().1, "/x");
    let h = state(true, false, &["/h.io/abcdefgh"]).await;
    assert_eq!(routed(&h, "/abcdefgh/ij", "h.io:8000").unwrap().1, "/ij");
}

/// Host routing: case-sensitive, `/` catches every host.
#[tokio::test]
async fn host_routing() {
    let s = state(true, true, &["/", "/alice.hub.example/user/alice"]).await;
    assert_eq!(
        routed(&s, "/user/alice/lab", "alice.hub.example:443").unwrap(),
        (
            "/alice.hub.example/user/alice".into(),
            "/user/alice/lab".into()
        )
    );
    assert_eq!(
        routed(&s, "/user/alice", "ALICE.hub.example").unwrap().0,
        "/"
    );
    assert_eq!(routed(&s, "/x", "[::1]:80").unwrap().0, "/");
    // No host named: the default target, whatever the path says.
    let no_host = Request::get("/alice.hub.example/user/alice")
        .body(())
        .unwrap();
    assert_eq!(route(&s, &no_host).unwrap().prefix.as_ref(), "/");
    assert_eq!(
        routed(&s, "/alice.hub.example/user/alice", "").unwrap(),
        ("/".into(), "/alice.hub.example/user/alice".into())
    );
    // The absolute form's authority, not Host (RFC 9112 §3.2.2).
    assert_eq!(
        routed(&s, "http://alice.hub.example/user/alice", "b")
            .unwrap()
            .0,
        "/alice.hub.example/user/alice"
    );
    for bad in ["a/b", "user@alice.hub.example", "a b"] {
        assert_eq!(routed(&s, "/x", bad), Err(StatusCode::BAD_REQUEST), "{bad}");
    }
    let socket = "%2Ftmp%2Fproxy.sock";
    assert_eq!(routed(&s, "/user/alice", socket).unwrap().0, "/");
    let without_default = state(true, true, &["/alice.hub.example/user/alice"]).await;
    assert_eq!(
        routed(&without_default, "/alice.hub.example/user/alice", ""),
        Err(StatusCode::NOT_FOUND)
    );
}

/// `--no-include-prefix` with a key of several segments strips all of them.
#[tokio::test]
async fn no_include_prefix_strips_every_key_segment() {
    let s = state(false, false, &["/user/alice", "/a/b/c"]).await;
    assert_eq!(routed(&s, "/user/alice/lab", "h").unwrap().1, "/lab");
    assert_eq!(routed(&s, "/a/b/c/d?e", "h").unwrap().1, "/d?e");
    assert_eq!(routed(&s, "/a/b/c", "h").unwrap().1, "?");
    assert_eq!(routed(&s, "/user%2Falice/x", "h").unwrap().1, "/x");
}

/// One path segment for the property test: plain names, dot segments (raw and
/// percent-encoded), encoded slashes and backslashes, empty segments (double slashes),
/// escapes that are malformed or not UTF-8, unicode (raw, which is not a valid request
/// target, and encoded), and JavaScript object names.
fn segment() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        prop::sample::select(vec![
            "a",
            "b",
            "user",
            "alice",
            "h.io",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            ".%2E",
            "%2e.",
            "...",
            "%2F",
            "a%2Fb",
            "a%2fb",
            "..%2f",
            "%2f..",
            "%2e%2e%2f",
            "",
            "%5C",
            "a%5Cb",
            "\\",
            "%C3%A9",
            "é",
            "%",
            "%zz",
            "%4",
            "%FF",
            "%00",
            "__proto__",
            "constructor",
            "a%20b",
            "%2525",
            ";x",
            "a;b=c",
        ])
        .prop_map(str::to_owned),
        "[a-z.%2eEfF]{1,5}",
    ]
}

/// For any request path the route chosen for it is the route chosen for the path that is
/// forwarded (and forwarding it again changes nothing), or the request is refused with 400
/// (or 404 where no route matches); the engine sends that forwarded path upstream byte for
/// byte.
#[test]
fn routing_the_forwarded_path_finds_the_same_route() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let paths = ["/", "/a", "/a/b", "/user/alice", "/é", "/a b", "/__proto__"];
    let states = [
        rt.block_on(state(false, true, &paths)),
        rt.block_on(state(false, true, &["/user/alice", "/a/b"])),
        rt.block_on(state(
            true,
            true,
            &["/h.io", "/h.io/user/alice", "/other.io/a"],
        )),
    ];
    let target = switchyard::Target::parse("http://127.0.0.1:1").unwrap();
    let opts = switchyard::Options::default();
    let strategy = (
        0..states.len(),
        prop::collection::vec(segment(), 0..7),
        any::<bool>(),
        prop::option::of("[a-z=&%./]{0,6}"),
    );
    let mut runner = TestRunner::new(Config {
        cases: 2048,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(which, segments, trailing_slash, query)| {
            let s = &states[which];
            let mut uri = format!("/{}", segments.join("/"));
            if trailing_slash {
                uri.push('/');
            }
            if let Some(q) = &query {
                uri.push('?');
                uri.push_str(q);
            }
            let Ok(request) = Request::get(uri.as_str())
                .header(header::HOST, "h.io:8000")
                .body(())
            else {
                // Not a valid request target (raw unicode, `\`): hyper refuses it first.
                return Ok(());
            };
            let first = match route(s, &request) {
                Ok(r) => r,
                Err(StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND) => return Ok(()),
                Err(other) => {
                    return Err(TestCaseError::fail(format!("{uri}: status {other}")));
                }
            };
            let forwarded = first.forward_path_and_query.clone();
            let again = Request::get(forwarded.as_str())
                .header(header::HOST, "h.io:8000")
                .body(())
                .map_err(|e| TestCaseError::fail(format!("{uri} → {forwarded}: {e}")))?;
            let second = route(s, &again)
                .map_err(|e| TestCaseError::fail(format!("{uri} → {forwarded}: {e}")))?;
            prop_assert_eq!(&first.prefix, &second.prefix, "{} → {}", uri, forwarded);
            prop_assert_eq!(
                &second.forward_path_and_query,
                &forwarded,
                "forwarding is not idempotent for {}",
                uri
            );
            // What the engine sends to a target without a path: exactly that path.
            let mut parts = again.into_parts().0;
            let sent = switchyard::fuzzing::request_head(&mut parts, Some(0), &target, &opts)
                .map_err(|e| TestCaseError::fail(format!("{uri} → {forwarded}: {e}")))?;
            // (An empty query, `/x?`, is dropped, as http-proxy-3 does.)
            prop_assert_eq!(
                sent.as_str(),
                forwarded.strip_suffix('?').unwrap_or(&forwarded)
            );
            Ok(())
        })
        .unwrap();
}
