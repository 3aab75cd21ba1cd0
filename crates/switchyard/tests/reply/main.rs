//! `Proxy::forward`: @fastify/reply-from's options, one test per
//! applicable file of reply-from's test suite (named in each doc comment).
//! Retries are in `retry.rs`, several upstreams in `balance.rs`, the tower
//! and axum integration in `service.rs`.
//!
//! Not applicable, with the reason:
//! * custom-undici-instance, http-agents, http-global-agent, https-agents,
//!   https-global-agent, undici-agent, undici-custom-dispatcher,
//!   undici-global-agent, undici-no-destroy, undici-options,
//!   undici-proxy-agent: the transport is the engine's one pooled client,
//!   configured with `ClientOptions`; there is no agent to pass in.
//! * fastify-multipart-incompatibility, modifyCoreObjects-false,
//!   multipart-custom-parser, text-event-stream-custom-parser,
//!   post-formbody, full-post-extended-content-type, padded-body,
//!   post-with-custom-encoded-contenttype, undici-body: Fastify's body
//!   parsers. Here the body is never parsed: it streams through byte for
//!   byte, whatever its type (`bodies_of_any_type_stream_through`).
//! * fix-GHSA-v574-6498-x57v, get-upstream-cache: there is no URL cache to
//!   poison; `get_upstream_is_asked_per_call` shows each call is resolved
//!   anew.
//! * rewrite-headers-type, rewrite-request-headers-type: type tests; the
//!   closures' types are checked by the compiler.
//! * no-stream-body-option: `Forward::body` takes bytes, so a stream cannot
//!   be passed (a streamed body is the request's own).
//! * utils-filter-pseudo-headers: hyper never puts pseudo-headers in a
//!   `HeaderMap` (h2 → h1 is covered in `http2.rs`).
//! * full-https-get: reply-from accepts self-signed certificates by
//!   default; the engine verifies them (`tls.rs` covers custom CAs and
//!   `secure: false`).
//! * http2-*, incomplete-request: the engine's HTTP/2 and framing, covered
//!   in `http2.rs` and `http.rs`.
//! * http-invalid-target (DNS failure → 503): a refused or unresolvable
//!   upstream is `UpstreamConnect`, 502 (`refused_upstream_is_502`); no DNS
//!   lookup is made in tests.
//! * undici-connect-timeout: `ConnectTimeout` is covered in `timeouts.rs`.
//! * unexpected-error: every failure is a typed kind (crate docs table).
//!
//! disable-request-logging is in `access_log.rs`, alone in its binary:
//! tracing's per-callsite interest cache is global, so a scoped subscriber
//! races with tests on other threads.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod bodies;
#[path = "../common/mod.rs"]
mod common;
mod failures;
mod source;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use switchyard::{Body, Forward, Protocol, Proxy, ProxyError, Target};

fn req(method: Method, uri: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "front.test")
        .body(Full::default())
        .unwrap()
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    req(Method::GET, uri)
}

async fn run(f: Forward) -> (StatusCode, http::HeaderMap, Bytes) {
    let res = within(f.into_future()).await;
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body_bytes(body).await)
}

/// A backend answering 205 with a content type and a custom header.
async fn answer_205() -> Backend {
    backend(|req: Request<Incoming>| async move {
        let mut r = Response::new(Body::from(req.uri().to_string()));
        *r.status_mut() = StatusCode::RESET_CONTENT;
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        r.headers_mut()
            .insert("x-my-header", HeaderValue::from_static("hello!"));
        r
    })
    .await
}

fn seen_one(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    let s = seen.lock().unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    s[0].clone()
}
