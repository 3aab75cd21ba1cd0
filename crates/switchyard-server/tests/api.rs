//! CHP's REST API, driven over TCP against the real binary.

mod common;

use common::{Proxy, TOKEN, request};
use serde_json::{Value, json};

fn auth_get(p: &Proxy, header: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = header.map(|h| ("Authorization", h)).into_iter().collect();
    request(p.api_port, "GET", "/api/routes", &headers, None).status
}

/// Token auth; 403 with an empty body; anchored `token <t>` only.
#[test]
fn auth_requires_token_header() {
    let p = Proxy::start(&[]);
    assert_eq!(auth_get(&p, Some(&format!("token {TOKEN}"))), 200);
    assert_eq!(auth_get(&p, Some(&format!("token\t{TOKEN}"))), 200);
    for bad in [
        None,
        Some("token wrong".to_owned()),
        Some(format!("Bearer {TOKEN}")),
        Some(format!("xtoken {TOKEN}")),
        Some(format!("token {TOKEN} extra")),
    ] {
        assert_eq!(auth_get(&p, bad.as_deref()), 403, "{bad:?}");
    }
    let r = request(p.api_port, "GET", "/api/routes", &[], None);
    assert_eq!(r.body, "");
}

/// No CONFIGPROXY_AUTH_TOKEN → unauthenticated API plus a warning.
#[test]
fn no_token_means_open_api() {
    let mut p = Proxy::start_with(&[], None);
    assert_eq!(auth_get(&p, None), 200);
    p.wait_for_line("REST API is not authenticated.");
}

/// Unknown paths 404 and other methods 405, before auth.
#[test]
fn not_found_and_method_not_supported_before_auth() {
    let p = Proxy::start(&[]);
    for path in ["/", "/api", "/api/", "/api/routesx", "/other"] {
        let r = request(p.api_port, "GET", path, &[], None);
        assert_eq!((r.status, r.body.as_str()), (404, "Not Found"), "{path}");
    }
    for method in ["PUT", "PATCH", "OPTIONS"] {
        let r = request(p.api_port, method, "/api/routes/x", &[], None);
        assert_eq!(
            (r.status, r.body.as_str()),
            (405, "Method not supported"),
            "{method}"
        );
        assert_eq!(r.header("content-type"), None);
    }
}

/// GET all (with `/api/routes/` too), JSON content type, `/` included.
#[test]
fn get_all_routes_includes_default() {
    let p = Proxy::start(&["--default-target", "http://127.0.0.1:9"]);
    p.add("/user/a", "http://127.0.0.1:10");
    for path in ["/api/routes", "/api/routes/"] {
        let r = p.api("GET", path, None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["/", "/user/a"], "insertion order");
        assert_eq!(v["/"]["target"], "http://127.0.0.1:9");
    }
}

/// GET one (trailing slash cleaned), 404 with an empty body.
#[test]
fn get_one_route() {
    let p = Proxy::start(&[]);
    p.add("/user/foo", "http://127.0.0.1:10");
    for path in ["/api/routes/user/foo", "/api/routes/user/foo/"] {
        let r = p.api("GET", path, None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["target"], "http://127.0.0.1:10");
        assert!(v["last_activity"].is_string());
    }
    let r = p.api("GET", "/api/routes/user/nope", None);
    assert_eq!((r.status, r.body.as_str()), (404, ""));
}

/// POST → 201 with an empty body and no Content-Type; replaces; no path → `/`.
#[test]
fn post_creates_and_replaces() {
    let p = Proxy::start(&[]);
    let r = p.api(
        "POST",
        "/api/routes/x",
        Some(r#"{"target":"http://127.0.0.1:1","a":1}"#),
    );
    assert_eq!((r.status, r.body.as_str()), (201, ""));
    assert_eq!(r.header("content-type"), None);
    p.api(
        "POST",
        "/api/routes/x?ignored=1",
        Some(r#"{"target":"http://127.0.0.1:2"}"#),
    );
    let v = p.routes();
    assert_eq!(
        v["/x"],
        json!({"target": "http://127.0.0.1:2", "last_activity": v["/x"]["last_activity"]})
    );
    assert_eq!(
        p.api(
            "POST",
            "/api/routes",
            Some(r#"{"target":"http://127.0.0.1:3"}"#)
        )
        .status,
        201
    );
    assert_eq!(p.routes()["/"]["target"], "http://127.0.0.1:3");
}

/// POST validation messages, byte for byte.
#[test]
fn post_validation() {
    let p = Proxy::start(&[]);
    let r = p.api("POST", "/api/routes/x", Some("{bad"));
    assert_eq!(r.status, 400);
    assert!(
        r.body.starts_with("Body not valid JSON: SyntaxError: "),
        "{}",
        r.body
    );
    assert_eq!(r.header("content-type"), None);
    assert_eq!(p.api("POST", "/api/routes/x", Some("")).status, 400);
    for body in ["null", "[]", "{}", r#"{"target":5}"#] {
        let r = p.api("POST", "/api/routes/x", Some(body));
        assert_eq!(
            (r.status, r.body.as_str()),
            (400, "Must specify 'target' as string"),
            "{body}"
        );
    }
}

/// Unusable targets (empty, `file:`, `gopher:`, with credentials) are 400, not CHP's 201.
#[test]
fn post_rejects_unusable_targets() {
    let p = Proxy::start(&[]);
    for target in [
        "",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "http://u:p@host",
        "ftp://x",
    ] {
        let r = p.api(
            "POST",
            "/api/routes/x",
            Some(&format!(r#"{{"target":"{target}"}}"#)),
        );
        assert_eq!(r.status, 400, "{target}");
        assert!(r.body.starts_with("Invalid 'target'"), "{}", r.body);
    }
    for target in [
        "https://h",
        "http+unix://%2Ftmp%2Fs",
        "unix+http://%2Ftmp%2Fs/p",
    ] {
        let r = p.api(
            "POST",
            "/api/routes/x",
            Some(&format!(r#"{{"target":"{target}"}}"#)),
        );
        assert_eq!(r.status, 201, "{target}");
    }
}

/// A bound on the body size (413).
#[test]
fn post_body_is_bounded() {
    let p = Proxy::start(&[]);
    let big = format!(
        r#"{{"target":"http://h","pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    assert_eq!(p.api("POST", "/api/routes/x", Some(&big)).status, 413);
}

/// DELETE → 204 / 404 empty; `DELETE /api/routes/` deletes `/`.
#[test]
fn delete_routes() {
    let p = Proxy::start(&["--default-target", "http://127.0.0.1:9"]);
    p.add("/user/foo", "http://127.0.0.1:10");
    let r = p.api("DELETE", "/api/routes/user/foo/", None);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert_eq!(p.api("DELETE", "/api/routes/user/foo", None).status, 404);
    assert_eq!(p.api("DELETE", "/api/routes/", None).status, 204);
    assert_eq!(p.routes(), json!({}));
}

/// Data stored verbatim, key order kept, last_activity overwritten and formatted
/// as `Date.toJSON()`.
#[test]
fn data_model_round_trips() {
    let p = Proxy::start(&[]);
    let body = r#"{"user":"alice","server_name":"","target":"http://10.0.0.5:8888","jupyterhub":true,"extra":{"n":[1,{"x":null}]},"last_activity":"1999"}"#;
    assert_eq!(
        p.api("POST", "/api/routes/user/alice", Some(body)).status,
        201
    );
    let raw = p.api("GET", "/api/routes", None).body;
    let expected_prefix = r#"{"/user/alice":{"user":"alice","server_name":"","target":"http://10.0.0.5:8888","jupyterhub":true,"extra":{"n":[1,{"x":null}]},"last_activity":""#;
    assert!(raw.starts_with(expected_prefix), "{raw}");
    let v: Value = serde_json::from_str(&raw).unwrap();
    let la = v["/user/alice"]["last_activity"].as_str().unwrap();
    assert_eq!(la.len(), 24, "{la}");
    let b = la.as_bytes();
    assert!(
        la.ends_with('Z') && b[4] == b'-' && b[10] == b'T' && b[19] == b'.',
        "{la}"
    );
    assert!(la.starts_with("20"), "client value overwritten: {la}");
}

/// Host routing adds `host` (not for `/`), after the POSTed keys.
#[test]
fn host_routing_adds_host() {
    let p = Proxy::start(&["--host-routing"]);
    p.add("/alice.hub.example/user/alice", "http://127.0.0.1:1");
    p.add("/", "http://127.0.0.1:2");
    let raw = p.api("GET", "/api/routes", None).body;
    assert!(raw.contains(r#""/alice.hub.example/user/alice":{"target":"http://127.0.0.1:1","host":"alice.hub.example","last_activity""#), "{raw}");
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert!(v["/"].get("host").is_none());
}

/// `inactive_since` / `inactiveSince`, strict `<`, empty = no filter, 400 text.
#[test]
fn inactive_since_filter() {
    let p = Proxy::start(&[]);
    p.add("/a", "http://127.0.0.1:1");
    let count = |q: &str| {
        let r = p.api("GET", &format!("/api/routes?{q}"), None);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        serde_json::from_str::<Value>(&r.body)
            .unwrap()
            .as_object()
            .unwrap()
            .len()
    };
    assert_eq!(count("inactive_since=2999-01-01T00:00:00Z"), 1);
    assert_eq!(count("inactiveSince=2999-01-01T00:00:00.123Z"), 1);
    assert_eq!(count("inactive_since=2999-01-01"), 1);
    assert_eq!(count("inactive_since=2999-01-01T00:00:00%2B05:00"), 1);
    assert_eq!(
        count("inactive_since=Tue,%2001%20Jan%202999%2000:00:00%20GMT"),
        1
    );
    assert_eq!(count("inactive_since=2000-01-01T00:00:00Z"), 0);
    assert_eq!(count("inactive_since="), 1);
    let r = p.api("GET", "/api/routes?inactive_since=endoftheuniverse", None);
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Invalid datestamp 'endoftheuniverse' must be ISO8601.")
    );
    assert_eq!(
        p.api("GET", "/api/routes?inactive_since=32503680000000", None)
            .status,
        400
    );
}

/// API path decoding edge cases, with the two hangs fixed (400 / 404).
#[test]
fn api_path_decoding() {
    let p = Proxy::start(&[]);
    for (path, key) in [
        ("/user/foo%40bar", "/user/foo@bar"),
        ("/has%20space/x", "/has space/x"),
        ("/trail/", "/trail"),
        ("//double", "//double"),
        ("/q?x=1", "/q"),
        ("/a%2Fb", "/a/b"),
        ("/dots/x/../y", "/dots/y"),
    ] {
        p.add(path, "http://127.0.0.1:1");
        let v = p.routes();
        assert!(v.get(key).is_some(), "{path} → {key}: {v}");
        assert_eq!(
            p.api(
                "DELETE",
                &format!("/api/routes{key}").replace(' ', "%20"),
                None
            )
            .status,
            204,
            "{key}"
        );
    }
    let r = p.api(
        "POST",
        "/api/routes/bad%ZZ",
        Some(r#"{"target":"http://h"}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(p.api("GET", "/api/routes/bad%ZZ", None).status, 400);
    assert_eq!(p.api("DELETE", "/api/routes", None).status, 404);
}

/// Routing through the real public listener: longest segment prefix, `/` catch-all,
/// decoded matching; a matched route to a dead target answers 503, no route 404.
#[test]
fn routing_semantics_on_public_port() {
    let p = Proxy::start(&[]);
    assert_eq!(p.public("GET", "/anything", &[]).status, 404);
    p.add("/user/foo", "http://127.0.0.1:1");
    p.add("/b%40r/b%20r", "http://127.0.0.1:1");
    let status = |path: &str| p.public("GET", path, &[]).status;
    assert_eq!(status("/user/foo"), 503);
    assert_eq!(status("/user/foo/"), 503);
    assert_eq!(status("/user/foo/x?y=1"), 503);
    assert_eq!(status("/user/foobar"), 404);
    assert_eq!(status("/user"), 404);
    assert_eq!(status("/b%40r/b%20r/x"), 503);
    assert_eq!(status("/b@r/b%20r/x"), 503);
    assert_eq!(status("/user/foo/../x"), 404);
    assert_eq!(status("/x/../user/foo/y"), 503);
    assert_eq!(status("/%"), 400);
    assert_eq!(status("/__proto__"), 404);
    p.add("/", "http://127.0.0.1:1");
    assert_eq!(status("/__proto__"), 503);
    assert_eq!(status("/user/foobar"), 503);
    let r = p.public("GET", "/nope", &[]);
    p.api("DELETE", "/api/routes/", None);
    let r404 = p.public("GET", "/nope", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r404.status, 404);
    assert_eq!(r404.header("content-type"), Some("text/html"));
    assert!(r404.body.contains("404: Not Found"));
}

/// Host routing on the public port; case-sensitive; `/` catches every host.
#[test]
fn host_routing_on_public_port() {
    let p = Proxy::start(&["--host-routing"]);
    p.add("/alice.hub.example", "http://127.0.0.1:1");
    let status = |host: &str, path: &str| p.public("GET", path, &[("Host", host)]).status;
    assert_eq!(status("alice.hub.example:8000", "/user/alice"), 503);
    assert_eq!(status("ALICE.hub.example", "/user/alice"), 404);
    assert_eq!(status("bob.hub.example", "/"), 404);
    p.add("/", "http://127.0.0.1:2");
    assert_eq!(status("bob.hub.example", "/"), 503);
}

/// `/_chp_healthz` (exact URL) and the metrics server with CHP's names.
#[test]
fn health_check_and_metrics() {
    let mut p = Proxy::start(&["--metrics-ip", "127.0.0.1", "--metrics-port", "0"]);
    let metrics_port = p.metrics_port();
    let r = p.public("GET", "/_chp_healthz", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"OK"}"#));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(p.public("GET", "/_chp_healthz?x", &[]).status, 404);
    p.api("GET", "/api/routes", None);
    let m = request(metrics_port, "GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for name in [
        "api_route_get 1",
        "requests_web 1",
        "requests_proxy{status=\"404\"} 1",
        "requests_api{status=\"200\"} 1",
        "# TYPE find_target_for_req summary",
        "process_resident_memory_bytes",
    ] {
        assert!(m.body.contains(name), "{name} in {}", m.body);
    }
    assert_eq!(
        request(metrics_port, "GET", "/metrics?x", &[], None).status,
        404
    );
    assert_eq!(request(metrics_port, "GET", "/", &[], None).status, 404);
}

/// A concurrent add/delete storm gives no 5xx and a consistent table.
#[test]
fn concurrent_add_delete_storm_is_consistent() {
    let p = Proxy::start(&[]);
    let port = p.api_port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..50 {
                    let key = format!("/k{}", (i * 7 + t) % 10);
                    let auth = [("Authorization", format!("token {TOKEN}"))];
                    let auth: Vec<(&str, &str)> =
                        auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let r = if i % 3 == 0 {
                        request(port, "DELETE", &format!("/api/routes{key}"), &auth, None)
                    } else {
                        request(
                            port,
                            "POST",
                            &format!("/api/routes{key}"),
                            &auth,
                            Some(r#"{"target":"http://h"}"#),
                        )
                    };
                    assert!(r.status < 500, "{r:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = p.routes();
    for i in 0..10 {
        let key = format!("/k{i}");
        let one = p.api("GET", &format!("/api/routes{key}"), None);
        assert_eq!(one.status == 200, all.get(&key).is_some(), "{key}");
    }
}
