//! The access log (`--access-log`): one entry per proxied request when its response ends
//! (or is cut short), one per WebSocket session when its tunnel closes, and one per
//! request the server answers itself (no route, a bad path, an error page).
//!
//! An entry is formatted on the request's task and handed to a bounded channel; a
//! thread of its own writes the channel out, so a slow destination (a full disk, a pipe
//! nobody reads) never holds up a request: when the channel is full the entry is dropped
//! and counted. A file is opened for appending (`O_APPEND`), so logrotate's
//! `copytruncate` works, and opened again on `SIGUSR1` (its `postrotate`).
//!
//! Secrets never reach the log: no request header is written but `User-Agent`, `Referer`
//! and `X-Forwarded-For` (so `Authorization`, `Cookie`, `Set-Cookie` and `X-Xsrftoken`
//! never are), and the values of the query parameters named by `--access-log-redact`
//! (`token`, `_xsrf`, `access_token`, `api_key` by default) become `REDACTED`, in the
//! path and in the `Referer`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Uri, Version, header};
use serde::Serialize;

use crate::time;

/// Entries waiting for the writer; more are dropped and counted.
const CHANNEL: usize = 1024;
/// The writer gathers up to this much before one write.
const BATCH: usize = 64 * 1024;
/// What replaces a secret query value.
const REDACTED: &str = "REDACTED";
/// The query parameters redacted by default.
pub(crate) const DEFAULT_REDACT: &str = "token,_xsrf,access_token,api_key";

/// Where the entries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

/// The shape of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// nginx's `combined`, then the duration, the route, the target and the request ID.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which statuses are written (`--access-log-status`): ranges, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusFilter(Vec<(u16, u16)>);

/// The access log: the formatting rules and the channel to the writer.
#[derive(Debug)]
pub(crate) struct AccessLog {
    format: Format,
    statuses: Option<StatusFilter>,
    redact: Vec<String>,
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

enum Msg {
    Line(Vec<u8>),
    Reopen,
}

/// What the server knows of a request when it arrives, for its entry: taken from the
/// client's head before anything changes it.
#[derive(Debug)]
pub(crate) struct Facts {
    pub(crate) start: std::time::Instant,
    pub(crate) time_ms: i64,
    pub(crate) client: Option<IpAddr>,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) forwarded_for: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) target: Option<Arc<str>>,
}

/// How a request ended, from the engine's outcome or the server's own answer.
#[derive(Debug, Default)]
pub(crate) struct Ended {
    /// The status sent; 499 (nginx's) when the client left before an answer.
    pub(crate) status: u16,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) head_time: Option<Duration>,
    pub(crate) duration: Duration,
    /// `client` or `upstream`.
    pub(crate) ended_early: Option<&'static str>,
    pub(crate) error: Option<String>,
    pub(crate) retries: u32,
    pub(crate) websocket: Option<switchyard::TunnelStats>,
}

#[derive(Serialize)]
struct JsonEntry<'a> {
    time: &'a str,
    client: Option<String>,
    forwarded_for: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    version: &'a str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    time_to_head_seconds: Option<f64>,
    duration_seconds: f64,
    route: Option<&'a str>,
    target: Option<&'a str>,
    ended_early: Option<&'a str>,
    error: Option<&'a str>,
    retries: u32,
    user_agent: Option<&'a str>,
    referer: Option<&'a str>,
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: Option<JsonTunnel>,
}

#[derive(Serialize)]
struct JsonTunnel {
    duration_seconds: f64,
    bytes_from_client: u64,
    bytes_to_client: u64,
}

// === impl Destination ===

impl Destination {
    /// `--access-log`: `off` (none), `-` (stdout), `stderr`, or a file path.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" => return Err("empty; use off, -, stderr or a file path".to_owned()),
            "off" => Self::Off,
            "-" | "stdout" => Self::Stdout,
            "stderr" => Self::Stderr,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

// === impl StatusFilter ===

impl StatusFilter {
    /// `5xx,4xx`, `500-599`, `404`, or a comma-separated mix.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let bad = || format!("{part:?} is not a status, a class (4xx) or a range (500-599)");
            let range = if let Some(class) = part.strip_suffix("xx") {
                let c: u16 = class.parse().map_err(|_| bad())?;
                if !(1..=5).contains(&c) {
                    return Err(bad());
                }
                (c * 100, c * 100 + 99)
            } else if let Some((a, b)) = part.split_once('-') {
                let a: u16 = a.trim().parse().map_err(|_| bad())?;
                let b: u16 = b.trim().parse().map_err(|_| bad())?;
                (a, b)
            } else {
                let n: u16 = part.parse().map_err(|_| bad())?;
                (n, n)
            };
            if range.0 > range.1 || range.0 < 100 || range.1 > 599 {
                return Err(bad());
            }
            ranges.push(range);
        }
        Ok(Self(ranges))
    }

    fn allows(&self, status: u16) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&status))
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// Opens the destination (a file: created if missing, appended to) and starts the
    /// writer thread. A FIFO is opened by the writer, which waits for a reader.
    pub(crate) fn start(
        destination: Destination,
        format: Format,
        statuses: Option<StatusFilter>,
        redact: Vec<String>,
    ) -> io::Result<Arc<Self>> {
        let out = Output::open(destination)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_loop(&rx, out))?;
        Ok(Arc::new(Self {
            format,
            statuses,
            redact,
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Entries dropped because the writer was behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Opens the file again (after logrotate moved it).
    pub(crate) fn reopen(&self) {
        // Blocking only the signal's task, and only while the channel is full.
        let _ = self.tx.send(Msg::Reopen);
    }

    /// Writes the entry of one request, if its status passes the filter.
    pub(crate) fn record(&self, facts: &Facts, ended: &Ended) {
        if self
            .statuses
            .as_ref()
            .is_some_and(|f| !f.allows(ended.status))
        {
            return;
        }
        let line = match self.format {
            Format::Text => self.text(facts, ended),
            Format::Json => self.json(facts, ended),
        };
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn path(&self, uri: &Uri) -> String {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        redact_query(path_and_query, &self.redact)
    }

    fn text(&self, f: &Facts, e: &Ended) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        let client = f.client.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        let time = jiff::Timestamp::from_millisecond(f.time_ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .strftime("%d/%b/%Y:%H:%M:%S +0000");
        let referer = f
            .referer
            .as_ref()
            .map(|r| redact_query(&lossy(r), &self.redact));
        let _ = write!(
            s,
            "{client} - - [{time}] \"{} {} {}\" {} {} \"{}\" \"{}\" {:.3} route={} target={} id={}",
            f.method,
            escape_text(&self.path(&f.uri)),
            version(f.version),
            e.status,
            e.bytes_out,
            referer.as_deref().map_or("-".into(), escape_text),
            f.user_agent
                .as_ref()
                .map_or("-".into(), |v| escape_text(&lossy(v))),
            e.duration.as_secs_f64(),
            f.route.as_deref().unwrap_or("-"),
            f.target.as_deref().unwrap_or("-"),
            f.request_id
                .as_ref()
                .map_or("-".into(), |v| escape_text(&lossy(v))),
        );
        s.push('\n');
        s.into_bytes()
    }

    fn json(&self, f: &Facts, e: &Ended) -> Vec<u8> {
        let time = time::format_ms(f.time_ms);
        let path = self.path(&f.uri);
        let referer = f
            .referer
            .as_ref()
            .map(|r| redact_query(&lossy(r), &self.redact));
        let xff = f.forwarded_for.as_ref().map(lossy);
        let ua = f.user_agent.as_ref().map(lossy);
        let id = f.request_id.as_ref().map(lossy);
        let entry = JsonEntry {
            time: &time,
            client: f.client.map(|ip| ip.to_string()),
            forwarded_for: xff.as_deref(),
            method: f.method.as_str(),
            path: &path,
            version: version(f.version),
            status: e.status,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            time_to_head_seconds: e.head_time.map(|d| d.as_secs_f64()),
            duration_seconds: e.duration.as_secs_f64(),
            route: f.route.as_deref(),
            target: f.target.as_deref(),
            ended_early: e.ended_early,
            error: e.error.as_deref(),
            retries: e.retries,
            user_agent: ua.as_deref(),
            referer: referer.as_deref(),
            request_id: id.as_deref(),
            websocket: e.websocket.map(|t| JsonTunnel {
                duration_seconds: t.duration.as_secs_f64(),
                bytes_from_client: t.client_to_upstream,
                bytes_to_client: t.upstream_to_client,
            }),
        };
        let mut out = serde_json::to_vec(&entry).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

// === impl Facts ===

impl Facts {
    /// The facts of a request, from its head as the client sent it.
    pub(crate) fn of<B>(
        req: &http::Request<B>,
        client: Option<IpAddr>,
        request_id: Option<HeaderValue>,
    ) -> Self {
        let h: &HeaderMap = req.headers();
        Self {
            start: std::time::Instant::now(),
            time_ms: time::now_ms(),
            client,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            forwarded_for: h.get("x-forwarded-for").cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            referer: h.get(header::REFERER).cloned(),
            request_id,
            route: None,
            target: None,
        }
    }
}

// === impl Ended ===

impl Ended {
    /// From the engine's outcome.
    pub(crate) fn from_outcome(o: &switchyard::Outcome<'_>) -> Self {
        let client_gone = o.ended_early == Some(switchyard::ErrorSide::Downstream);
        Self {
            status: o
                .status
                .map_or(if client_gone { 499 } else { 502 }, |s| s.as_u16()),
            bytes_in: o.bytes_in,
            bytes_out: o.bytes_out,
            head_time: o.head_time,
            duration: o.duration,
            ended_early: o.ended_early.and_then(|side| match side {
                switchyard::ErrorSide::Downstream => Some("client"),
                switchyard::ErrorSide::Upstream => Some("upstream"),
                _ => None,
            }),
            error: o.error.map(|e| switchyard::error_chain(e)),
            retries: o.retries,
            websocket: o.tunnel,
        }
    }
}

/// The writer's destination, opened (again on `SIGUSR1`).
struct Output {
    destination: Destination,
    file: Option<File>,
}

impl Output {
    fn open(destination: Destination) -> io::Result<Self> {
        let file = match &destination {
            Destination::File(path) if !is_fifo(path) => Some(open_append(path)?),
            _ => None,
        };
        Ok(Self { destination, file })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match &self.destination {
            Destination::Off => Ok(()),
            Destination::Stdout => io::stdout().lock().write_all(buf),
            Destination::Stderr => io::stderr().lock().write_all(buf),
            Destination::File(path) => {
                if self.file.is_none() {
                    self.file = Some(open_append(path)?);
                }
                match &mut self.file {
                    Some(f) => f.write_all(buf),
                    None => Ok(()),
                }
            }
        }
    }

    fn reopen(&mut self) {
        if let Destination::File(path) = &self.destination {
            self.file = None;
            match open_append(path) {
                Ok(f) => {
                    self.file = Some(f);
                    tracing::info!("Access log reopened: {}", path.display());
                }
                Err(e) => tracing::error!("Access log {}: {e}", path.display()),
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

fn is_fifo(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// The writer thread: gathers what is waiting into one write, until every sender is gone.
fn write_loop(rx: &Receiver<Msg>, mut out: Output) {
    let mut buf = Vec::with_capacity(BATCH);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => buf.extend_from_slice(&line),
                Msg::Reopen => {
                    flush(&mut out, &mut buf, &mut failing);
                    out.reopen();
                }
            }
            if buf.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut out, &mut buf, &mut failing);
    }
}

fn flush(out: &mut Output, buf: &mut Vec<u8>, failing: &mut bool) {
    if buf.is_empty() {
        return;
    }
    match out.write(buf) {
        Ok(()) => *failing = false,
        Err(e) => {
            // Said once per run of failures, not per entry.
            if !*failing {
                tracing::error!("Access log: {e}");
            }
            *failing = true;
        }
    }
    buf.clear();
}

/// `path?query` with the values of the named parameters replaced by `REDACTED`.
fn redact_query(path_and_query: &str, names: &[String]) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        if names.iter().any(|n| n.eq_ignore_ascii_case(&decoded)) {
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else if value.is_empty() && !pair.contains('=') {
            out.push_str(name);
        } else {
            out.push_str(name);
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

fn lossy(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// A value inside the text format's quotes: `"` and `\` escaped, control bytes as `\xNN`
/// (as nginx does), so that a line cannot be split or forged.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters() {
        let f = StatusFilter::parse("5xx, 404,200-204").unwrap();
        assert!(f.allows(503) && f.allows(404) && f.allows(204));
        assert!(!f.allows(403) && !f.allows(205) && !f.allows(499));
        for bad in ["", "6xx", "x", "500-400", "99", "600"] {
            assert!(StatusFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_secrets_are_redacted() {
        let names: Vec<String> = DEFAULT_REDACT.split(',').map(str::to_owned).collect();
        assert_eq!(
            redact_query("/a?token=s3cret&x=1&_xsrf=abc&flag&API_KEY=k", &names),
            "/a?token=REDACTED&x=1&_xsrf=REDACTED&flag&API_KEY=REDACTED"
        );
        assert_eq!(redact_query("/a?%74oken=s", &names), "/a?%74oken=REDACTED");
        assert_eq!(redact_query("/plain", &names), "/plain");
    }

    #[test]
    fn text_values_cannot_break_a_line() {
        assert_eq!(escape_text("a\"b\\c\nd"), "a\\\"b\\\\c\\x0Ad");
    }
}
