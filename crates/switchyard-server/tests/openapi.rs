//! `openapi.json` is true: every documented operation is called on the real
//! binary; each answer's status must be one the operation lists, its body must match the
//! listed content (JSON schema shape, plain-text enum/pattern, or empty), and every listed
//! status must actually be produced by some request. Also checks the Content-Type
//! convention of the file's description (JSON answers typed, plain-text ones untyped).
//!
//! The schema check is deliberately small: `$ref`, `oneOf`, `enum`, `type`, `nullable`,
//! `required`, `properties`, `additionalProperties`, `items`, and `pattern` in the subset
//! the file uses (`^`, `$`, `.*`, `[0-9]{n}`, `\.`). The dashboard page (`text/html`)
//! must carry its `Content-Security-Policy`.

#![allow(clippy::unwrap_used, reason = "test helpers panic on failure")]

mod common;

use std::collections::BTreeSet;

use common::{Proxy, TOKEN, request};
use serde_json::Value;

const SPEC: &str = include_str!("../openapi.json");

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref only");
            resolve(spec, spec.pointer(pointer).unwrap_or_else(|| panic!("{r}")))
        }
        None => v,
    }
}

fn validate(spec: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let ok = options
            .iter()
            .filter(|s| validate(spec, s, value).is_ok())
            .count();
        return if ok == 1 {
            Ok(())
        } else {
            Err(format!("{value} matches {ok} of oneOf {schema}"))
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{value} not in {allowed:?}"));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let obj = value
                .as_object()
                .ok_or(format!("{value} is not an object"))?;
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap();
                if !obj.contains_key(key) {
                    return Err(format!("{value} lacks required {key}"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in obj {
                match (
                    props.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => validate(spec, s, v)?,
                    (None, Some(Value::Bool(false))) => return Err(format!("extra key {k}")),
                    (None, Some(s @ Value::Object(_))) => validate(spec, s, v)?,
                    (None, _) => {}
                }
            }
        }
        Some("string") => {
            let s = value.as_str().ok_or(format!("{value} is not a string"))?;
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && !pattern_matches(p, s)
            {
                return Err(format!("{s:?} does not match {p}"));
            }
        }
        Some("boolean") if !value.is_boolean() => return Err(format!("{value} not boolean")),
        Some("number") if !value.is_number() => return Err(format!("{value} not a number")),
        Some("integer") if !value.is_i64() && !value.is_u64() => {
            return Err(format!("{value} not an integer"));
        }
        Some("array") => {
            let items = value.as_array().ok_or(format!("{value} not an array"))?;
            if let Some(item) = schema.get("items") {
                for v in items {
                    validate(spec, item, v)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Char(char),
    Digit,
    AnyRun,
}

/// The anchored regex subset the spec uses: `^`, `$`, `.*`, `[0-9]{n}`, `\x`, literals.
fn pattern_matches(pattern: &str, s: &str) -> bool {
    let body = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .expect("patterns are anchored");
    let chars: Vec<char> = body.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                tokens.push(Token::Char(chars[i + 1]));
                i += 2;
            }
            '.' if chars.get(i + 1) == Some(&'*') => {
                tokens.push(Token::AnyRun);
                i += 2;
            }
            '[' => {
                assert_eq!(&chars[i..i + 5], &['[', '0', '-', '9', ']'], "{pattern}");
                i += 5;
                let mut n = 1;
                if chars.get(i) == Some(&'{') {
                    let end = i + chars[i..].iter().position(|&c| c == '}').unwrap();
                    n = chars[i + 1..end]
                        .iter()
                        .collect::<String>()
                        .parse()
                        .unwrap();
                    i = end + 1;
                }
                tokens.extend(std::iter::repeat_n(Token::Digit, n));
            }
            c => {
                assert!(!"()|+?*{}.".contains(c), "unsupported regex in {pattern}");
                tokens.push(Token::Char(c));
                i += 1;
            }
        }
    }
    fn go(t: &[Token], s: &[char]) -> bool {
        match t.split_first() {
            None => s.is_empty(),
            Some((Token::AnyRun, rest)) => (0..=s.len()).any(|k| go(rest, &s[k..])),
            Some((Token::Digit, rest)) => {
                s.first().is_some_and(char::is_ascii_digit) && go(rest, &s[1..])
            }
            Some((Token::Char(c), rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(&tokens, &s.chars().collect::<Vec<_>>())
}

/// (operationId, method, path, authorised, body)
type Call = (&'static str, &'static str, String, bool, Option<String>);

fn calls() -> Vec<Call> {
    let c = |op, m, p: &str, auth, body: Option<&str>| -> Call {
        (op, m, p.to_owned(), auth, body.map(str::to_owned))
    };
    let route = Some(
        r#"{"user":"alice","server_name":"","target":"http://127.0.0.1:9","jupyterhub":true,"extra":{"n":[1]}}"#,
    );
    let big = format!(r#"{{"target":"http://h","pad":"{}"}}"#, "x".repeat(2 << 20));
    let deep = "/a".repeat(600);
    vec![
        c(
            "addDefaultRoute",
            "POST",
            "/api/routes",
            true,
            Some(r#"{"target":"http://127.0.0.1:8","hub":true}"#),
        ),
        c("addDefaultRoute", "POST", "/api/routes", true, Some("{bad")),
        c(
            "addDefaultRoute",
            "POST",
            "/api/routes",
            true,
            Some(r#"{"target":5}"#),
        ),
        c(
            "addDefaultRoute",
            "POST",
            "/api/routes",
            true,
            Some(r#"{"target":"ftp://x"}"#),
        ),
        c("addDefaultRoute", "POST", "/api/routes", false, route),
        c("addDefaultRoute", "POST", "/api/routes", true, Some(&big)),
        c("addRoute", "POST", "/api/routes/user/alice", true, route),
        c("addRoute", "POST", "/api/routes/user/bob%40x/", true, route),
        c("addRoute", "POST", "/api/routes/user/x", true, Some("null")),
        c("addRoute", "POST", "/api/routes/bad%ZZ", true, route),
        c(
            "addRoute",
            "POST",
            &format!("/api/routes{deep}"),
            true,
            route,
        ),
        c("addRoute", "POST", "/api/routes/user/x", false, route),
        c("addRoute", "POST", "/api/routes/user/x", true, Some(&big)),
        c("getRoutes", "GET", "/api/routes", true, None),
        c(
            "getRoutes",
            "GET",
            "/api/routes?inactive_since=2999-01-01",
            true,
            None,
        ),
        c(
            "getRoutes",
            "GET",
            "/api/routes?inactive_since=nope",
            true,
            None,
        ),
        c("getRoutes", "GET", "/api/routes", false, None),
        c("getRoute", "GET", "/api/routes/user/alice", true, None),
        c("getRoute", "GET", "/api/routes/user/bob@x", true, None),
        c("getRoute", "GET", "/api/routes/user/nobody", true, None),
        c("getRoute", "GET", "/api/routes/bad%ZZ", true, None),
        c("getRoute", "GET", "/api/routes/user/alice", false, None),
        c("getDashboard", "GET", "/dashboard", false, None),
        c(
            "getDashboardSummary",
            "GET",
            "/api/dashboard/summary",
            true,
            None,
        ),
        c(
            "getDashboardSummary",
            "GET",
            "/api/dashboard/summary",
            false,
            None,
        ),
        c(
            "getDashboardTraffic",
            "GET",
            "/api/dashboard/traffic",
            true,
            None,
        ),
        c(
            "getDashboardTraffic",
            "GET",
            "/api/dashboard/traffic",
            false,
            None,
        ),
        c(
            "getDashboardRoutes",
            "GET",
            "/api/dashboard/routes",
            true,
            None,
        ),
        c(
            "getDashboardRoutes",
            "GET",
            "/api/dashboard/routes?q=ALICE&sort=user&order=desc&page=1&per_page=1",
            true,
            None,
        ),
        c(
            "getDashboardRoutes",
            "GET",
            "/api/dashboard/routes?sort=size",
            true,
            None,
        ),
        c(
            "getDashboardRoutes",
            "GET",
            "/api/dashboard/routes?page=0",
            true,
            None,
        ),
        c(
            "getDashboardRoutes",
            "GET",
            "/api/dashboard/routes",
            false,
            None,
        ),
        c(
            "deleteRoute",
            "DELETE",
            "/api/routes/user/alice/",
            true,
            None,
        ),
        c(
            "deleteRoute",
            "DELETE",
            "/api/routes/user/alice",
            true,
            None,
        ),
        c("deleteRoute", "DELETE", "/api/routes/bad%ZZ", true, None),
        c(
            "deleteRoute",
            "DELETE",
            "/api/routes/user/bob@x",
            false,
            None,
        ),
        c("deleteWithoutPath", "DELETE", "/api/routes", true, None),
        c("deleteWithoutPath", "DELETE", "/api/routes", false, None),
    ]
}

/// Every operation of `openapi.json` answers as documented, and every documented status
/// is produced.
#[test]
fn server_answers_match_openapi_json() {
    let spec: Value = serde_json::from_str(SPEC).expect("openapi.json is JSON");
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        spec["components"]["securitySchemes"]["token"],
        serde_json::json!({"type": "apiKey", "in": "header", "name": "Authorization",
            "description": spec["components"]["securitySchemes"]["token"]["description"]})
    );
    // operationId → (method, path template, operation)
    let mut ops = std::collections::BTreeMap::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method != "parameters" {
                let id = op["operationId"].as_str().unwrap();
                ops.insert(id.to_owned(), (method.to_uppercase(), path.clone(), op));
            }
        }
    }
    let mut documented = BTreeSet::new();
    for (id, (_, _, op)) in &ops {
        for status in op["responses"].as_object().unwrap().keys() {
            documented.insert((id.clone(), status.clone()));
        }
    }

    let p = Proxy::start(&[]);
    let mut produced = BTreeSet::new();
    for (id, method, path, auth, body) in calls() {
        let (op_method, template, op) = ops
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not in openapi.json"));
        assert_eq!(method, op_method, "{id}");
        let prefix = template.split("/{").next().unwrap();
        assert!(path.starts_with(prefix), "{path} is not {template}");
        let token = format!("token {TOKEN}");
        let headers: Vec<(&str, &str)> = if auth {
            vec![("Authorization", &token)]
        } else {
            vec![]
        };
        let r = request(p.api_port, method, &path, &headers, body.as_deref());
        let what = format!(
            "{method} {} → {} {:?}",
            &path[..path.len().min(60)],
            r.status,
            r.body
        );
        let status = r.status.to_string();
        let response = op["responses"]
            .get(&status)
            .unwrap_or_else(|| panic!("{what}: status not documented for {id}"));
        let response = resolve(&spec, response);
        produced.insert((id.to_owned(), status));
        let content = response.get("content").and_then(Value::as_object);
        match content.map(|c| c.iter().next().unwrap()) {
            None => assert_eq!(r.body, "", "{what}: documented as empty"),
            Some((media, c)) if media == "application/json" => {
                assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
                let value: Value = serde_json::from_str(&r.body).unwrap();
                validate(&spec, &c["schema"], &value).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            Some((media, _)) if media == "text/html" => {
                let kind = r.header("content-type").unwrap_or_default();
                assert!(kind.starts_with("text/html"), "{what}: {kind}");
                let csp = r.header("content-security-policy").unwrap_or_default();
                assert!(
                    csp.starts_with("default-src 'none'; "),
                    "{what}: CSP {csp:?}"
                );
            }
            Some((media, c)) => {
                assert_eq!(media, "text/plain", "{what}");
                assert_eq!(r.header("content-type"), None, "{what}: untyped text");
                validate(&spec, &c["schema"], &Value::String(r.body.clone()))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
    // 503 needs a Redis outage: tests/redis.rs produces it and checks its body.
    let never: Vec<_> = documented
        .difference(&produced)
        .filter(|(_, status)| status != "503")
        .collect();
    assert!(never.is_empty(), "documented but never produced: {never:?}");
}

/// The small pattern matcher agrees with the patterns the spec uses.
#[test]
fn pattern_subset() {
    let la = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$";
    assert!(pattern_matches(la, "2026-11-23T06:44:49.187Z"));
    assert!(!pattern_matches(la, "2026-11-23T06:44:49Z"));
    assert!(pattern_matches(r"^Invalid '.*' x\.$", "Invalid 'a b' x."));
    assert!(!pattern_matches(r"^Invalid '.*' x\.$", "Invalid 'a b' x"));
}
