//! Shared helpers: start the real `switchyard` binary and talk HTTP/1.1 to it with
//! hyper's client ([`request`]), or with raw bytes ([`raw`]) where the bytes on the wire
//! are the point of a test.
//!
//! The binary binds port 0 and its ports are read from its start-up lines (`Proxying
//! http://127.0.0.1:<port>`, `Proxy API at http://127.0.0.1:<port>/api/routes`), which it
//! logs once every listener is bound: readiness is a log line, never a sleep, and no test
//! races another for a port. Every blocking read has a timeout.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support code"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

pub const TOKEN: &str = "s3cret-token";
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `switchyard` process, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub api_port: u16,
    pub lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

/// A loopback port where connections are refused: bound but not listening, and held
/// while the value lives, so nothing else can take it meanwhile.
pub struct RefusingPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

impl RefusingPort {
    pub fn bind() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let port = socket.local_addr().unwrap().port();
        Self {
            port,
            _socket: socket,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub fn command(args: &[&str], token: Option<&str>) -> Command {
    command_under(&[], args, token)
}

/// The binary run through `wrapper` (a program and its arguments that ends by exec'ing
/// the command line it is given, such as `prlimit --nofile=64:64 --`), so the child's pid
/// is the proxy's.
pub fn command_under(wrapper: &[&str], args: &[&str], token: Option<&str>) -> Command {
    let binary = env!("CARGO_BIN_EXE_switchyard");
    let mut cmd = match wrapper.split_first() {
        None => Command::new(binary),
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(binary);
            cmd
        }
    };
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("CONFIGPROXY_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("CONFIGPROXY_AUTH_TOKEN", t);
    }
    cmd
}

impl Proxy {
    /// Starts the proxy on free ports with the API token set, plus `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, Some(TOKEN))
    }

    /// Like [`Proxy::start`], with the API token `token` (none: unauthenticated).
    pub fn start_with(extra: &[&str], token: Option<&str>) -> Self {
        Self::start_under(&[], extra, token)
    }

    /// Like [`Proxy::start_with`], the binary run through `wrapper` (see [`command_under`]).
    pub fn start_under(wrapper: &[&str], extra: &[&str], token: Option<&str>) -> Self {
        let mut args = vec![
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            "0",
        ];
        args.extend_from_slice(extra);
        let mut cmd = command_under(wrapper, &args, token);
        let quiet = extra
            .windows(2)
            .find(|w| w[0] == "--log-level" && matches!(w[1], "error" | "warn" | "warning"));
        if let Some(level) = quiet {
            // The start-up lines are info: keep them, and the level asked for elsewhere.
            cmd.env(
                "RUST_LOG",
                format!("{},switchyard_server::listeners=info", level[1]),
            );
        }
        Self::from_child(cmd.spawn().unwrap())
    }

    /// A started binary (stdout piped), once it has logged its ports.
    pub fn from_child(mut child: Child) -> Self {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Self {
            child,
            port: 0,
            api_port: 0,
            lines: rx,
            log: Vec::new(),
        };
        proxy.port = port_in(&proxy.wait_for_line("Proxying "));
        proxy.api_port = port_in(&proxy.wait_for_line("Proxy API at "));
        proxy
    }

    /// The metrics server's port (started with `--metrics-port 0`), from its start-up line.
    pub fn metrics_port(&mut self) -> u16 {
        port_in(&self.wait_for_line("Serve metrics at "))
    }

    /// Waits (bounded) for a stdout line containing `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_either(needle, needle)
    }

    /// Waits (bounded) for a stdout line containing `a` or `b`; returns it.
    pub fn wait_for_either(&mut self, a: &str, b: &str) -> String {
        let needle = a;
        if let Some(l) = self.log.iter().find(|l| l.contains(a) || l.contains(b)) {
            return l.clone();
        }
        loop {
            match self.lines.recv_timeout(IO_TIMEOUT) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(a) || line.contains(b) {
                        return line;
                    }
                }
                Err(e) => {
                    let mut stderr = String::new();
                    if let Some(mut err) = self.child.stderr.take() {
                        let _ = self.child.kill();
                        let _ = err.read_to_string(&mut stderr);
                    }
                    panic!(
                        "no line {needle:?} ({e}); log: {:#?}; stderr: {stderr}",
                        self.log
                    );
                }
            }
        }
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        request(
            self.api_port,
            method,
            path,
            &[("Authorization", &format!("token {TOKEN}"))],
            body,
        )
    }

    pub fn public(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, method, path, headers, None)
    }

    /// `GET /api/routes` parsed.
    pub fn routes(&self) -> serde_json::Value {
        let r = self.api("GET", "/api/routes", None);
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    pub fn add(&self, path: &str, target: &str) {
        let r = self.api(
            "POST",
            &format!("/api/routes{path}"),
            Some(&format!(r#"{{"target":"{target}"}}"#)),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        self.send_signal(sig);
        self.child.wait().unwrap()
    }

    /// Sends a signal and returns at once.
    pub fn send_signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded by `limit`) for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How many file descriptors the process has open (Linux `/proc`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// How many of the process's open descriptors are sockets (Linux `/proc`): unlike
    /// [`Proxy::open_fds`], not moved by a file the process opens for a moment.
    pub fn open_sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// The process's resident memory, in KiB (Linux `/proc`, `VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }
}

/// The port of the first URL (`http://127.0.0.1:<port>`, `https://[::]:<port>`) in a log
/// line.
pub fn port_in(line: &str) -> u16 {
    let url = &line[line
        .find("://")
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        + 3..];
    let after_host = if url.starts_with('[') {
        &url[url.find(']').unwrap_or_else(|| panic!("no ] in {line:?}")) + 1..]
    } else {
        &url[url
            .find(':')
            .unwrap_or_else(|| panic!("no port in {line:?}"))..]
    };
    let digits: String = after_host
        .trim_start_matches(':')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no port in {line:?}"))
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    /// Reads a whole response: its status, its headers (names in lower case; of a name
    /// sent twice, the last value) and its body as text.
    pub async fn read(res: http::Response<Incoming>) -> Result<Self, ClientError> {
        let (head, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Self::from_parts(&head, &body))
    }

    /// A response from a head and a body already read.
    pub fn from_parts(head: &http::response::Parts, body: &[u8]) -> Self {
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), v)
            })
            .collect();
        Self {
            status: head.status.as_u16(),
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One request on a fresh connection (`Connection: close`), sent and read by hyper's
/// HTTP/1.1 client: `Host: 127.0.0.1:<port>` unless `headers` has a Host, and with a
/// body, `Content-Type: application/json` and its `Content-Length`. Panics when no
/// response comes back.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut all: Vec<(&str, &str)> = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    if body.is_some() {
        all.push(("Content-Type", "application/json"));
    }
    let req = build_request(port, method, path, &all, body);
    let what = format!("{method} {}", path.chars().take(80).collect::<String>());
    block_on(async move {
        let mut sender = connect(port).await?;
        let res = sender.send_request(req).await?;
        Response::read(res).await
    })
    .unwrap_or_else(|e| panic!("{what} on port {port}: no response ({e})"))
}

/// An HTTP/1.1 connection to `127.0.0.1:<port>`, driven by a task of the client runtime
/// until the sender is dropped. It takes response heads of up to 1,000 fields (hyper's
/// default is 100), so the limit under test is always the proxy's.
async fn connect(port: u16) -> Result<http1::SendRequest<Full<Bytes>>, ClientError> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::Builder::new()
        .max_headers(1000)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The client's error: the connection or the exchange failed.
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

/// A request as [`request`] and the keep-alive client send it: `Host: 127.0.0.1:<port>`
/// unless `headers` has a Host, then `headers` in order (a name given twice is sent
/// twice), and a `Content-Length` when there is a body.
pub fn build_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let method = http::Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|e| panic!("method {method:?} ({e}): send it with `raw`"));
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .unwrap_or_else(|e| {
            let shown: String = path.chars().take(80).collect();
            panic!("request target {shown:?}… ({e}): send it with `raw`")
        });
    let map = req.headers_mut();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        map.insert(
            http::header::HOST,
            HeaderValue::from_str(&format!("127.0.0.1:{port}")).unwrap(),
        );
    }
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .unwrap_or_else(|e| panic!("header name {k:?} ({e}): send it with `raw`"));
        let value = HeaderValue::from_str(v)
            .unwrap_or_else(|e| panic!("header value {v:?} ({e}): send it with `raw`"));
        map.append(name, value);
    }
    if let Some(b) = body {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    req
}

/// A keep-alive HTTP/1.1 client connection to the proxy (hyper's client): requests go
/// one after another on one connection, and a body can be read frame by frame.
pub struct Client {
    pub port: u16,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    pending: Option<tokio::task::JoinHandle<hyper::Result<http::Response<Incoming>>>>,
    body: Option<Incoming>,
}

impl Client {
    pub fn connect(port: u16) -> Self {
        let sender =
            block_on(connect(port)).unwrap_or_else(|e| panic!("connecting to port {port}: {e}"));
        Self {
            port,
            sender: Some(sender),
            pending: None,
            body: None,
        }
    }

    /// Sends a request; `Host: 127.0.0.1:<port>` unless `headers` has a Host, and a
    /// `Content-Length` when `body` is not empty. The response is read by [`Self::head`]
    /// or [`Self::response`].
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let body = (!body.is_empty()).then_some(body);
        let req = build_request(self.port, method, path, headers, body);
        let mut sender = self.sender.take().expect("the connection is gone");
        let (sender, res) = block_on(async move {
            sender.ready().await.unwrap();
            let res = sender.send_request(req);
            (sender, tokio::spawn(res))
        });
        self.sender = Some(sender);
        self.pending = Some(res);
    }

    /// Reads a response head: the status and the headers (names in lower case).
    pub fn head(&mut self) -> (u16, HashMap<String, String>) {
        let pending = self.pending.take().expect("no request sent");
        let res = block_on(async move { pending.await.unwrap() })
            .unwrap_or_else(|e| panic!("no response: {e}"));
        let (head, body) = res.into_parts();
        self.body = Some(body);
        let r = Response::from_parts(&head, &[]);
        (r.status, r.headers)
    }

    /// Reads the next piece of the body as it arrives (`None` at its end).
    pub fn chunk(&mut self) -> Option<String> {
        self.data()
            .map(|d| String::from_utf8_lossy(&d).into_owned())
    }

    fn data(&mut self) -> Option<Bytes> {
        let mut body = self.body.take().expect("no response head read");
        let (body, data) = block_on(async move {
            loop {
                match body.frame().await {
                    None => return (body, None),
                    Some(frame) => {
                        if let Ok(data) = frame.unwrap().into_data() {
                            return (body, Some(data));
                        }
                    }
                }
            }
        });
        self.body = Some(body);
        data
    }

    /// Reads a whole response.
    pub fn response(&mut self) -> Response {
        let (status, headers) = self.head();
        let mut body = Vec::new();
        while let Some(d) = self.data() {
            body.extend_from_slice(&d);
        }
        Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// The runtime the blocking client helpers run on: its own, so they work from any test
/// thread, inside an async test too.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-client")
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Runs `fut` on the client runtime and waits for it; panics after [`IO_TIMEOUT`]
/// (a safety net: the tests wait on events, never on this bound).
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    runtime().spawn(async move {
        let out = tokio::time::timeout(IO_TIMEOUT, fut).await;
        let _ = tx.send(out);
    });
    match rx.recv() {
        Ok(Ok(out)) => out,
        Ok(Err(_)) => panic!("no answer within {IO_TIMEOUT:?}"),
        Err(_) => panic!("the client task panicked (its message is above)"),
    }
}

/// A raw request (bytes as given) on a fresh connection; returns everything read. For
/// the tests whose point is the bytes on the wire (malformed or ambiguous requests,
/// exact framing), which an HTTP client would refuse to send or would normalise.
pub fn raw(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses what [`raw`] read (one response; a chunked body is decoded).
pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        // A chunk size may carry extensions (`5;name=value`, RFC 9112 §7.1.1).
        let size = size.split(';').next().unwrap_or_default();
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Runs the binary to completion (for flag errors, --help, --version).
pub fn run_to_exit(args: &[&str]) -> std::process::Output {
    let child = command(args, None).spawn().unwrap();
    child.wait_with_output().unwrap()
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// `promtool check metrics` on `m`: its complaints, but for the `_total` suffix that
/// CHP's own counter names lack (they stay as CHP has them).
pub fn promtool_complaints(m: &str) -> Vec<String> {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed for this test (Debian package prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), m.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let chp = [
        "api_route_add",
        "api_route_delete",
        "api_route_get",
        "requests_api",
        "requests_proxy",
        "requests_web",
        "requests_ws",
    ];
    said.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let name = l.split(' ').next().unwrap();
            !(chp.contains(&name) && l.ends_with("should have \"_total\" suffix"))
        })
        .map(str::to_owned)
        .collect()
}

/// A TLS client's verifier that accepts any certificate: for tests that look at the one
/// presented.
#[derive(Debug)]
pub struct AnyCert(pub std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
