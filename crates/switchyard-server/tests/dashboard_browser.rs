//! The dashboard in a real browser: headless Chromium (Debian package `chromium`, which
//! `scripts/test` installs; the test fails without it) driven over the DevTools protocol
//! against the real binary, with real targets and live traffic. The page must load
//! without a console error or an exception, take the token from the `#token=` fragment
//! and drop it from the URL, show the routes added through the API, and show within the
//! refresh interval a route added afterwards and a target that went down. Then the token
//! is forgotten, a wrong one refused, and the right one entered through the form.
//!
//! Waiting is on events: each check is a promise in the page that a `MutationObserver`
//! resolves when the DOM says what is expected (with a safety timeout). A screenshot is
//! taken into the test's temporary directory, and to the path in `DASHBOARD_SCREENSHOT`
//! when it is set (`DASHBOARD_SCREENSHOT=docs/dashboard.png` refreshes the README's).

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod backends;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use backends::{Backend, get, read_request};
use base64::Engine as _;
use common::{Proxy, TOKEN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The page's refresh interval (the server samples traffic as often).
const REFRESH: Duration = Duration::from_secs(2);
/// How long a change may take to show: a refresh, plus the slack of a loaded machine.
const SHOWN_WITHIN: Duration = Duration::from_secs(REFRESH.as_secs() * 3);
/// The safety net of one wait in the page.
const SAFETY: Duration = Duration::from_secs(20);

/// A headless Chromium, killed on drop.
struct Chromium {
    child: Child,
    /// The browser's DevTools WebSocket URL.
    ws_url: String,
    dir: std::path::PathBuf,
}

impl Chromium {
    fn launch() -> Self {
        let dir = common::temp_dir("dashboard-chromium");
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                // Root in a container has no user namespace for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromium ({e}): this test needs headless Chromium \
                     (Debian package chromium; scripts/test installs it)"
                )
            });
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let ws_url = rx
            .recv_timeout(SAFETY)
            .expect("chromium did not say where DevTools listens");
        Self { child, ws_url, dir }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol client attached to one page (a flat session on the browser's
/// socket), with the events it has seen.
struct Cdp {
    rt: tokio::runtime::Runtime,
    ws: Socket,
    next_id: u64,
    session: Option<String>,
    events: Vec<Value>,
}

impl Cdp {
    fn connect(url: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ws, _) = rt
            .block_on(tokio_tungstenite::connect_async(url))
            .expect("DevTools WebSocket");
        Self {
            rt,
            ws,
            next_id: 0,
            session: None,
            events: Vec::new(),
        }
    }

    /// Sends a command (to the page's session once attached) and waits for its result,
    /// keeping the events that come meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method});
        message["params"] = params;
        if let Some(s) = &self.session {
            message["sessionId"] = Value::from(s.clone());
        }
        let (ws, events) = (&mut self.ws, &mut self.events);
        let deadline = SAFETY + Duration::from_secs(5);
        self.rt.block_on(async {
            ws.send(Message::text(message.to_string())).await.unwrap();
            loop {
                let next = tokio::time::timeout(deadline, ws.next())
                    .await
                    .unwrap_or_else(|_| panic!("no answer to {method}"));
                let Some(Ok(Message::Text(text))) = next else {
                    panic!("DevTools socket closed during {method}: {next:?}");
                };
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["id"] == id {
                    if let Some(err) = v.get("error") {
                        panic!("{method}: {err}");
                    }
                    return v["result"].clone();
                }
                if v.get("method").is_some() {
                    events.push(v);
                }
            }
        })
    }

    fn attach_page(&mut self) {
        let target = self.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.call(domain, json!({}));
        }
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until the JavaScript condition `check` holds in the page, watching the DOM's
    /// changes; how long it took. Panics after [`SAFETY`].
    fn wait_for(&mut self, what: &str, check: &str) -> Duration {
        let started = Instant::now();
        let ms = SAFETY.as_millis();
        let held = self.eval(&format!(
            "new Promise((resolve) => {{
                const check = () => {{ try {{ return Boolean({check}); }} catch (e) {{ return false; }} }};
                if (check()) return resolve(true);
                const o = new MutationObserver(() => {{
                    if (check()) {{ o.disconnect(); resolve(true); }}
                }});
                o.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
                setTimeout(() => {{ o.disconnect(); resolve(false); }}, {ms});
            }})"
        ));
        let took = started.elapsed();
        assert_eq!(
            held,
            Value::Bool(true),
            "{what}: not shown within {SAFETY:?}; page text: {}",
            self.eval("document.body.innerText")
        );
        took
    }

    /// Console errors, exceptions and error log entries seen so far.
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| match e["method"].as_str() {
                Some("Runtime.consoleAPICalled") => e["params"]["type"] == "error",
                Some("Runtime.exceptionThrown") => true,
                Some("Log.entryAdded") => e["params"]["entry"]["level"] == "error",
                _ => false,
            })
            .map(|e| e["params"].to_string())
            .collect()
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }
}

/// A target that can go down: answers `200 ok` (closing each connection, so the proxy
/// keeps none pooled) until [`Stoppable::stop`], then refuses connections.
struct Stoppable {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stoppable {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if read_request(&mut reader).is_some() {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes the listener: connections are refused from now on.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag and returns, dropping the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.thread.take().unwrap().join().unwrap();
    }
}

fn add_route(p: &Proxy, path: &str, target: &str, user: &str, server_name: &str) {
    let r = p.api(
        "POST",
        &format!("/api/routes{path}"),
        Some(&format!(
            r#"{{"target":"{target}","user":"{user}","server_name":"{server_name}"}}"#
        )),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Requests to `paths` in turn, until the returned flag is set.
fn live_traffic(port: u16, paths: Vec<String>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let thread = std::thread::spawn(move || {
        for path in paths.iter().cycle() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let _ = get(port, path, &[]);
        }
    });
    (done, thread)
}

fn row_has(path: &str, text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#route-rows tr')].some(tr => tr.dataset.path === {path:?} \
         && tr.textContent.includes({text:?}))"
    )
}

#[test]
fn the_page_shows_routes_traffic_and_a_target_going_down() {
    let alice = Backend::echo_target();
    let mut bob = Stoppable::start();
    let p = Proxy::start(&[]);
    add_route(&p, "/user/alice", &alice.url(), "alice", "");
    add_route(&p, "/user/bob", &bob.url(), "bob", "");
    for (i, name) in ["chen", "dana", "emeka", "farah", "goran", "hana"]
        .iter()
        .enumerate()
    {
        let server = if i % 2 == 0 { "" } else { "gpu" };
        let path = if server.is_empty() {
            format!("/user/{name}")
        } else {
            format!("/user/{name}/{server}")
        };
        add_route(&p, &path, &alice.url(), name, server);
    }
    assert_eq!(get(p.port, "/user/bob/lab", &[]).status, 200);
    let (traffic_done, traffic) = live_traffic(
        p.port,
        vec![
            "/user/alice/api/kernels".to_owned(),
            "/user/chen/lab".to_owned(),
            "/user/dana/gpu/tree".to_owned(),
            "/user/nobody".to_owned(),
        ],
    );

    let chromium = Chromium::launch();
    let mut cdp = Cdp::connect(&chromium.ws_url);
    cdp.attach_page();
    let url = format!("http://127.0.0.1:{}/dashboard#token={TOKEN}", p.api_port);
    cdp.call("Page.navigate", json!({"url": url}));

    cdp.wait_for("the routes added before", &row_has("/user/alice", "alice"));
    cdp.wait_for(
        "bob's target answering",
        &row_has("/user/bob", "responding"),
    );
    cdp.wait_for(
        "the version",
        &format!(
            "document.querySelector('#health-list').textContent.includes({:?})",
            env!("CARGO_PKG_VERSION")
        ),
    );
    assert_eq!(
        cdp.eval("location.hash + '|' + sessionStorage.getItem('switchyard-dashboard-token')"),
        Value::from(format!("|{TOKEN}")),
        "the fragment is dropped, the token kept in sessionStorage"
    );
    assert_eq!(cdp.eval("document.cookie"), Value::from(""));

    add_route(&p, "/user/zoe", &alice.url(), "zoe", "");
    let took = cdp.wait_for("a route added afterwards", &row_has("/user/zoe", "zoe"));
    assert!(took <= SHOWN_WITHIN, "the new route took {took:?}");

    bob.stop();
    assert_eq!(get(p.port, "/user/bob/lab", &[]).status, 503);
    let took = cdp.wait_for("bob's target refusing", &row_has("/user/bob", "refusing"));
    assert!(took <= SHOWN_WITHIN, "the target's state took {took:?}");

    // Samples of live traffic on the charts: two, or eight for the README's screenshot.
    let samples = if std::env::var_os("DASHBOARD_SCREENSHOT").is_some() {
        8
    } else {
        2
    };
    cdp.wait_for(
        "the traffic chart",
        &format!(
            "document.querySelector('#chart-rps polyline').getAttribute('points').split(' ').length >= {samples}"
        ),
    );
    let dir = common::temp_dir("dashboard-shot");
    cdp.screenshot(&dir.join("dashboard.png"));
    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        // Relative to the workspace root, where `docs/` is.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        cdp.screenshot(&path);
    }
    traffic_done.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    let errors = cdp.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // "Forget token" empties sessionStorage and asks again; a wrong token is refused and
    // forgotten; the right one through the form shows the routes again.
    cdp.eval("document.querySelector('#forget').click()");
    cdp.wait_for("the token form", "!document.querySelector('#login').hidden");
    assert_eq!(
        cdp.eval("sessionStorage.length"),
        Value::from(0),
        "the token is forgotten"
    );
    let submit = |token: &str| {
        format!(
            "document.querySelector('#token').value = {token:?}; \
             document.querySelector('#login').requestSubmit(); true"
        )
    };
    cdp.eval(&submit("wrong"));
    cdp.wait_for(
        "the refusal",
        "document.querySelector('#login-error').textContent.includes('refused')",
    );
    assert_eq!(cdp.eval("sessionStorage.length"), Value::from(0));
    cdp.eval(&submit(TOKEN));
    cdp.wait_for(
        "the routes after the form",
        "!document.querySelector('#main').hidden && document.querySelector('#login').hidden",
    );
    cdp.wait_for("the routes after the form", &row_has("/user/zoe", "zoe"));

    // A fragment with a malformed escape, given to the open page (a same-document
    // navigation), is a wrong token, not an exception.
    cdp.call(
        "Page.navigate",
        json!({"url": format!("http://127.0.0.1:{}/dashboard#token=%E0%A4%A", p.api_port)}),
    );
    cdp.wait_for(
        "the malformed token refused",
        "location.hash === '' && document.querySelector('#login-error').textContent.includes('refused')",
    );

    // The wrong token's 403s are the only errors since (Chromium logs each as one).
    let errors: Vec<_> = cdp
        .errors()
        .into_iter()
        .filter(|e| !(e.contains("status of 403") && e.contains("/api/dashboard/")))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    assert!(
        cdp.events
            .iter()
            .any(|e| e["method"] == "Page.loadEventFired"),
        "the page loaded"
    );
}
