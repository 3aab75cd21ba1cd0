//! Micro-benchmarks of the per-request hot paths: route lookup at 1, 10,000 and 100,000
//! routes, and the request and response header passes.
//!
//! Run with `cargo bench -p switchyard --bench hot_paths`; CI only compiles them (clippy
//! `--all-targets`). Lookup time must stay flat as the table grows: each lookup walks at
//! most depth-of-path trie nodes, one hash probe each.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_main};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use switchyard::routing::RouteTable;
use switchyard::{Options, Target};

/// A JupyterHub-like table: the hub at `/`, one route per user.
fn table(routes: usize) -> RouteTable<String> {
    let table = RouteTable::new();
    table
        .insert("/", "http://127.0.0.1:8081".to_owned())
        .expect("valid key");
    for i in 1..routes {
        table
            .insert(
                &format!("/user/u{i}"),
                format!("http://10.0.{}.{}:8888", i / 256 % 256, i % 256),
            )
            .expect("valid key");
    }
    table
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for routes in [1, 10_000, 100_000] {
        let table = table(routes);
        let user = format!("/user/u{}/lab/tree/notebooks/analysis.ipynb", routes / 2);
        group.bench_with_input(BenchmarkId::new("user_path", routes), &user, |b, path| {
            b.iter(|| table.lookup(black_box(path)).map(|m| m.depth));
        });
        group.bench_with_input(
            BenchmarkId::new("catch_all", routes),
            "/hub/api/users/alice/server/progress",
            |b, path| {
                b.iter(|| table.lookup(black_box(path)).map(|m| m.depth));
            },
        );
    }
    group.finish();
}

/// A browser's request as it reaches the proxy.
fn browser_request() -> http::request::Parts {
    let (parts, ()) = Request::get("/user/alice/api/contents/work?content=1&_=1700000000000")
        .header("host", "hub.example.org")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
        .header("accept", "application/json, text/plain, */*")
        .header("accept-language", "en-GB,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("referer", "https://hub.example.org/user/alice/lab")
        .header("x-xsrftoken", "2|5a0c2b1e|8d4f0c6b0e1c5f3a9b7d2e4f6a8c0b1d|1700000000")
        .header("connection", "keep-alive")
        .header("cookie", "_xsrf=2|5a0c2b1e|8d4f0c6b0e1c5f3a9b7d2e4f6a8c0b1d|1700000000; jupyterhub-user-alice=2|1:0|10:1700000000|22:jupyterhub-user-alice|44:YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo=|0123456789abcdef")
        .header("sec-fetch-dest", "empty")
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "same-origin")
        .body(())
        .expect("valid request")
        .into_parts();
    parts
}

fn header_passes(c: &mut Criterion) {
    let target: Target = "http://127.0.0.1:8888".parse().expect("valid target");
    let mut opts = Options::default();
    opts.xfwd = true;
    let request = browser_request();
    c.bench_function("request_head_pass", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |parts| switchyard::fuzzing::request_head(parts, Some(0), &target, &opts),
            criterion::BatchSize::SmallInput,
        );
    });

    let mut response = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-length", "1873"),
        ("date", "Thu, 23 Nov 2026 11:00:00 GMT"),
        ("server", "TornadoServer/6.4"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("x-content-type-options", "nosniff"),
        (
            "cache-control",
            "no-store, no-cache, must-revalidate, max-age=0",
        ),
        (
            "content-security-policy",
            "frame-ancestors 'self'; report-uri /user/alice/api/security/csp-report",
        ),
        (
            "set-cookie",
            "_xsrf=2|5a0c2b1e|8d4f0c6b; Path=/user/alice/; SameSite=Lax",
        ),
    ] {
        response.append(name, HeaderValue::from_static(value));
    }
    let host = HeaderValue::from_static("hub.example.org");
    c.bench_function("response_head_pass", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |headers| {
                switchyard::fuzzing::response_head(
                    headers,
                    StatusCode::OK,
                    &target,
                    Some(&host),
                    &opts,
                );
            },
            criterion::BatchSize::SmallInput,
        );
    });
}

/// The benchmark group, a public function that criterion's macro makes.
mod group {
    #![allow(
        missing_docs,
        reason = "criterion's macro makes an undocumented function"
    )]
    use super::{header_passes, route_lookup};
    criterion::criterion_group!(benches, route_lookup, header_passes);
}
use group::benches;
criterion_main!(benches);
