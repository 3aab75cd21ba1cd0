//! CHP's command line and process behaviour (start-up lines, signals, exit codes), against
//! the binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

use common::{Proxy, TOKEN, run_to_exit, temp_dir};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--help` lists CHP's flags (stdout, exit 0); `--version` exits 0.
#[test]
fn help_and_version() {
    let out = run_to_exit(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--ip",
        "--port",
        "--socket",
        "--ssl-key",
        "--ssl-cert",
        "--ssl-ca",
        "--ssl-request-cert",
        "--ssl-reject-unauthorized",
        "--ssl-protocol",
        "--ssl-ciphers",
        "--ssl-allow-rc4",
        "--ssl-dhparam",
        "--api-ip",
        "--api-port",
        "--api-socket",
        "--api-ssl-key",
        "--api-ssl-cert",
        "--api-ssl-ca",
        "--api-ssl-request-cert",
        "--api-ssl-reject-unauthorized",
        "--client-ssl-key",
        "--client-ssl-cert",
        "--client-ssl-ca",
        "--client-ssl-request-cert",
        "--client-ssl-reject-unauthorized",
        "--default-target",
        "--error-target",
        "--error-path",
        "--redirect-port",
        "--redirect-to",
        "--pid-file",
        "--no-x-forward",
        "--no-prepend-path",
        "--no-include-prefix",
        "--auto-rewrite",
        "--change-origin",
        "--protocol-rewrite",
        "--custom-header",
        "--insecure",
        "--host-routing",
        "--metrics-ip",
        "--metrics-port",
        "--metrics-socket",
        "--log-level",
        "--timeout",
        "--proxy-timeout",
        "--storage-backend",
        "--redis-key-prefix",
        "--state-file",
        "--keep-alive-timeout",
        "--max-header-size",
        "CONFIGPROXY_AUTH_TOKEN",
        "CONFIGPROXY_SSL_KEY_PASSPHRASE",
        "CONFIGPROXY_API_SSL_KEY_PASSPHRASE",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let out = run_to_exit(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("5.3.0"));
}

/// Unknown options and bad values exit 1 with a message on stderr.
#[test]
fn bad_flags_exit_1() {
    for (args, needle) in [
        (&["--x"][..], "--x"),
        (&["--port", "abc"][..], "--port"),
        (&["--port", "70000"][..], "--port"),
        (&["--socket", "/tmp/s", "--port", "1"][..], "--socket"),
        (
            &["--error-target", "http://h", "--error-path", "/e"][..],
            "--error",
        ),
        (
            &["--custom-header", "nocolon"][..],
            "A colon was expected in custom header: nocolon",
        ),
        (&["--log-level", "loud"][..], "loud"),
        (
            &["--storage-backend", "configurable-http-proxy-redis-backend"][..],
            "cannot load Node modules",
        ),
        (
            &["--storage-backend", "redis://127.0.0.1:1/0"][..],
            "cannot connect to Redis at redis://127.0.0.1:1/0",
        ),
        (
            &["--storage-backend", "redis://u:hunter2@h:x/0"][..],
            "invalid Redis URL redis://u:***@h:x/0",
        ),
        (
            &["--redirect-port", "8080"][..],
            "HTTPS redirection specified but certificates not provided.",
        ),
        (
            &[
                "--ssl-key",
                "/nonexistent/k.pem",
                "--ssl-cert",
                "/nonexistent/c.pem",
            ][..],
            "/nonexistent/c.pem",
        ),
        (
            &["--ssl-key", "/nonexistent/k.pem"][..],
            "must be given together",
        ),
        (
            &["--default-target", "file:///etc/passwd"][..],
            "--default-target",
        ),
        (
            &["--public-host", "user@hub.example"][..],
            "is not a host or host:port",
        ),
        (
            &["--public-host", "hub.example/path"][..],
            "is not a host or host:port",
        ),
    ] {
        let out = run_to_exit(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let text = format!(
            "{}{}",
            stderr_of(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}

/// A bind failure exits non-zero (CHP kept running half up).
#[test]
fn bind_failure_exits_non_zero() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run_to_exit(&["--ip", "127.0.0.1", "--port", &port, "--api-port", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot listen on the public address"));
}

/// Start-up lines (`Route added / -> X` is what CHP's cli_spec waits for),
/// `--pid-file` written and removed, SIGTERM logged as `Terminated` and a clean stop.
#[test]
fn startup_log_pid_file_and_sigterm() {
    let dir = temp_dir("pid");
    let pid_file = dir.join("proxy.pid");
    let mut p = Proxy::start(&[
        "--default-target",
        "http://127.0.0.1:9",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    p.wait_for_line("Adding route / -> http://127.0.0.1:9");
    p.wait_for_line("Route added / -> http://127.0.0.1:9");
    assert!(
        p.wait_for_line("Proxying ")
            .contains("to http://127.0.0.1:9")
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        p.child.id().to_string()
    );
    let status = p.signal("TERM");
    assert!(status.success(), "{status:?}");
    p.wait_for_line("Terminated");
    assert!(!pid_file.exists());
}

/// The allocator (mimalloc) is built to turn transparent huge pages off for the process
/// (`.cargo/config.toml`): with them, on a host whose THP setting is `always`, its
/// segments go to 2 MiB pages and the idle RSS doubles (bench/README.md).
#[test]
fn transparent_huge_pages_are_off() {
    let mut p = Proxy::start(&["--default-target", "http://127.0.0.1:9"]);
    p.wait_for_line("Proxying ");
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("no THP_enabled line in /proc/PID/status (Linux 5.0+)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

/// SIGINT is logged as `Interrupted`; in-flight-free stop is immediate.
#[test]
fn sigint_stops() {
    let mut p = Proxy::start(&[]);
    let started = Instant::now();
    assert!(p.signal("INT").success());
    p.wait_for_line("Interrupted");
    assert!(started.elapsed().as_secs() < 5);
}

/// `--socket` / `--api-socket` / `--metrics-socket` serve on UNIX sockets.
#[test]
fn unix_sockets() {
    let dir = temp_dir("sock");
    let (public, api, metrics) = (dir.join("p.sock"), dir.join("a.sock"), dir.join("m.sock"));
    let mut child = common::command(
        &[
            "--socket",
            public.to_str().unwrap(),
            "--api-socket",
            api.to_str().unwrap(),
            "--metrics-socket",
            metrics.to_str().unwrap(),
        ],
        Some(TOKEN),
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("Proxy API at"))
    );
    let exchange = |path: &std::path::Path, req: &str| {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let r = exchange(
        &api,
        &format!(
            "GET /api/routes HTTP/1.1\r\nHost: x\r\nAuthorization: token {TOKEN}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = exchange(
        &public,
        "GET /_chp_healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = exchange(
        &metrics,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("requests_web"), "{r}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert!(!public.exists() && !api.exists());
}

/// `--error-path`: `<code>.html`, else `error.html`, as text/html.
#[test]
fn error_path_pages() {
    let dir = temp_dir("errors");
    std::fs::write(dir.join("404.html"), "custom 404").unwrap();
    std::fs::write(dir.join("error.html"), "custom error").unwrap();
    let p = Proxy::start(&["--error-path", dir.to_str().unwrap()]);
    let r = p.public("GET", "/missing", &[]);
    assert_eq!((r.status, r.body.as_str()), (404, "custom 404"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    let r = p.public("GET", "/%", &[]);
    assert_eq!((r.status, r.body.as_str()), (400, "custom error"));
}

/// `--error-target`: `GET <target>/<code>?url=<escaped url>`, original status kept,
/// Content-Type copied; an unreachable error target falls back to the plain text.
#[test]
fn error_target_pages() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!(
        "http://127.0.0.1:{}/errs",
        server.local_addr().unwrap().port()
    );
    let p = Proxy::start(&["--error-target", &target]);
    let handle = std::thread::spawn(move || {
        let (s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        error_page_once(s, "hello")
    });
    let r = p.public("GET", "/foo/bar?a=b&c=%20d", &[]);
    let head = handle.join().unwrap();
    assert!(
        head.starts_with("GET /errs/404?url=%2Ffoo%2Fbar%3Fa%3Db%26c%3D%2520d HTTP/1.1"),
        "{head}"
    );
    assert_eq!((r.status, r.body.as_str()), (404, "hello"));
    assert_eq!(r.header("content-type"), Some("text/x-err"));

    let dead = common::RefusingPort::bind();
    let p = Proxy::start(&["--error-target", &dead.url()]);
    let r = p.public("GET", "/x", &[]);
    assert_eq!((r.status, r.body.as_str()), (404, "Not Found"));
}

/// `--error-target` on a UNIX socket (`http+unix://`, accepted as targets are):
/// fetched through the engine like any target, not refused for its scheme.
#[test]
fn error_target_on_a_unix_socket() {
    let dir = temp_dir("error-unix");
    let sock = dir.join("errors.sock");
    let server = UnixListener::bind(&sock).unwrap();
    let target = format!(
        "http+unix://{}/errs",
        sock.to_str().unwrap().replace('/', "%2F")
    );
    let p = Proxy::start(&["--error-target", &target]);
    let handle = std::thread::spawn(move || {
        let (s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        error_page_once(s, "from the socket")
    });
    let r = p.public("GET", "/nope?x=1", &[]);
    let head = handle.join().unwrap();
    assert!(
        head.starts_with("GET /errs/404?url=%2Fnope%3Fx%3D1 HTTP/1.1"),
        "{head}"
    );
    assert_eq!((r.status, r.body.as_str()), (404, "from the socket"));
    assert_eq!(r.header("content-type"), Some("text/x-err"));
}

/// An error server's side of one exchange: reads the request head, answers `page` as
/// `text/x-err` and closes; returns the head.
fn error_page_once(mut s: impl Read + Write, page: &str) -> String {
    let mut buf = [0u8; 4096];
    let n = s
        .read(&mut buf)
        .expect("the proxy's request for the error page");
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/x-err\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    s.write_all(answer.as_bytes()).expect("answering the proxy");
    head
}

/// A WebSocket upgrade with no route gets 404 and the socket closes.
#[test]
fn websocket_without_route_is_closed() {
    let p = Proxy::start(&[]);
    // Raw: what comes back on the upgrade request is read until the proxy closes.
    let out = common::raw(
        p.port,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
}

/// Request heads beyond `--max-header-size` get 431; 20 KiB passes by default (CHP #207:
/// Node's 16 KiB limit broke large cookies).
#[test]
fn max_header_size() {
    let p = Proxy::start(&[]);
    let big = "x".repeat(20 * 1024);
    assert_eq!(
        p.public("GET", "/_chp_healthz", &[("X-Big", &big)]).status,
        200
    );
    let p = Proxy::start(&["--max-header-size", "16384"]);
    let r = p.public("GET", "/", &[("X-Big", &big)]);
    assert_eq!(r.status, 431, "{r:?}");
}

/// `--redirect-port`: 301 to https with the proxy port (none for 443).
#[test]
fn redirect_port() {
    let dir = temp_dir("redirect");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let mut p = Proxy::start(&[
        "--ssl-key",
        k.to_str().unwrap(),
        "--ssl-cert",
        c.to_str().unwrap(),
        "--redirect-port",
        "0",
        "--redirect-to",
        "443",
    ]);
    let redirect = common::port_in(&p.wait_for_line("Added HTTP to HTTPS redirection"));
    let r = common::request(redirect, "GET", "/a?b=1", &[], None);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://127.0.0.1/a?b=1"));
}

/// `--worker-threads`: the runtime has exactly that many workers (the metrics gauge reads
/// tokio's own count), and still serves both listeners; 0 is refused at start.
#[test]
fn worker_threads() {
    for (flag, expected) in [("1", 1), ("3", 3)] {
        let mut p = Proxy::start(&[
            "--worker-threads",
            flag,
            "--metrics-ip",
            "127.0.0.1",
            "--metrics-port",
            "0",
        ]);
        let metrics = p.metrics_port();
        assert_eq!(p.public("GET", "/_chp_healthz", &[]).status, 200);
        assert_eq!(p.api("GET", "/api/routes", None).status, 200);
        let m = common::request(metrics, "GET", "/metrics", &[], None);
        let line = m
            .body
            .lines()
            .find(|l| l.starts_with("switchyard_tokio_workers "))
            .unwrap_or_else(|| panic!("no workers gauge in {}", m.body));
        assert_eq!(line, format!("switchyard_tokio_workers {expected}"));
    }
    let out = common::run_to_exit(&["--worker-threads", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("--worker-threads"),
        "{}",
        stderr_of(&out)
    );
}

/// Without `--worker-threads`, one worker per CPU the process may run on: limited to one
/// CPU (as a container with a one-CPU quota is), it serves on a current-thread runtime, as
/// `--worker-threads 1` does, not on a work-stealing runtime with one worker;
/// `TOKIO_WORKER_THREADS` still sets the count.
#[test]
fn default_worker_threads_follow_the_cpus() {
    let serving = |wrapper: &[&str]| {
        let mut p = Proxy::start_under(
            wrapper,
            &["--metrics-ip", "127.0.0.1", "--metrics-port", "0"],
            Some(TOKEN),
        );
        let metrics = p.metrics_port();
        let line = p.wait_for_line("Serving on ");
        assert_eq!(p.public("GET", "/_chp_healthz", &[]).status, 200);
        let m = common::request(metrics, "GET", "/metrics", &[], None);
        let workers = m
            .body
            .lines()
            .find_map(|l| l.strip_prefix("switchyard_tokio_workers "))
            .unwrap_or_else(|| panic!("no workers gauge in {}", m.body))
            .to_owned();
        (line, workers)
    };
    let (line, workers) = serving(&["env", "-u", "TOKIO_WORKER_THREADS", "taskset", "-c", "0"]);
    assert!(line.ends_with("Serving on one thread"), "{line}");
    assert_eq!(workers, "1");
    let (line, workers) = serving(&["env", "TOKIO_WORKER_THREADS=2", "taskset", "-c", "0"]);
    assert!(line.ends_with("Serving on 2 worker threads"), "{line}");
    assert_eq!(workers, "2");
}

/// With the container image's environment (`SWITCHYARD_CHP_IMAGE=1`), the binary does what
/// configurable-http-proxy's image entrypoint does: the API on every interface unless
/// `--api-ip` is given, and the token read from `CONFIGPROXY_AUTH_TOKEN_FILE` (exclusive
/// with `CONFIGPROXY_AUTH_TOKEN`). Without it, neither happens.
#[test]
fn image_entrypoint_defaults() {
    let dir = temp_dir("image-defaults");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let start = |image: bool, extra: &[&str]| {
        let mut args = vec!["--ip", "127.0.0.1", "--port", "0", "--api-port", "0"];
        args.extend_from_slice(extra);
        let mut cmd = common::command(&args, None);
        cmd.env("CONFIGPROXY_AUTH_TOKEN_FILE", &token_file);
        if image {
            cmd.env("SWITCHYARD_CHP_IMAGE", "1");
        } else {
            cmd.env_remove("SWITCHYARD_CHP_IMAGE");
        }
        Proxy::from_child(cmd.spawn().unwrap())
    };

    let mut p = start(true, &[]);
    let api = p.wait_for_line("Proxy API at ");
    assert!(api.contains("http://0.0.0.0:"), "{api}");
    assert_eq!(p.api("GET", "/api/routes", None).status, 200);
    let r = common::request(p.api_port, "GET", "/api/routes", &[], None);
    assert_eq!(r.status, 403, "the token from the file is required");
    p.signal("TERM");

    let mut p = start(true, &["--api-ip", "127.0.0.1"]);
    let api = p.wait_for_line("Proxy API at ");
    assert!(api.contains("http://127.0.0.1:"), "{api}");
    p.signal("TERM");

    // Outside the image: the default API address, and the file is not read.
    let mut p = start(false, &[]);
    let api = p.wait_for_line("Proxy API at ");
    assert!(!api.contains("0.0.0.0"), "{api}");
    let r = common::request(p.api_port, "GET", "/api/routes", &[], None);
    assert_eq!(r.status, 200, "no token outside the image");
    p.signal("TERM");

    let out = common::command(&["--port", "0"], Some(TOKEN))
        .env("SWITCHYARD_CHP_IMAGE", "1")
        .env("CONFIGPROXY_AUTH_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("both CONFIGPROXY_AUTH_TOKEN and"),
        "{}",
        stderr_of(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
