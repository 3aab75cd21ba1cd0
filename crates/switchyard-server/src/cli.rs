//! Command-line flags: exactly those of configurable-http-proxy 5.3.0, plus the limits
//! `--max-header-size`, `--max-headers`, `--max-uri-length`, `--body-idle-timeout` and
//! `--max-response-header-size` (against oversized heads and slow-loris bodies) and the
//! drain deadline `--shutdown-timeout` (CHP exits at once on SIGTERM) and the readiness
//! delay `--shutdown-delay`.
//!
//! Secrets (the API token, key passphrases) come from the environment only, as in CHP, and
//! never appear in `Debug` output or logs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::store::redis::PASSWORD_ENV as REDIS_PASSWORD_ENV;

/// Environment variable holding the REST API token.
pub(crate) const AUTH_TOKEN_ENV: &str = "CONFIGPROXY_AUTH_TOKEN";
/// Environment variable holding the passphrase of `--ssl-key`.
pub(crate) const SSL_KEY_PASSPHRASE_ENV: &str = "CONFIGPROXY_SSL_KEY_PASSPHRASE";
/// Environment variable holding the passphrase of `--api-ssl-key`.
pub(crate) const API_SSL_KEY_PASSPHRASE_ENV: &str = "CONFIGPROXY_API_SSL_KEY_PASSPHRASE";

const AFTER_HELP: &str = "\
Environment:
  CONFIGPROXY_AUTH_TOKEN              token for the REST API ('Authorization: token <t>');
                                      empty or unset: the API is not authenticated
  CONFIGPROXY_SSL_KEY_PASSPHRASE      passphrase of --ssl-key (encrypted keys are not supported:
                                      decrypt with 'openssl pkey -in k.pem -out plain.pem')
  CONFIGPROXY_API_SSL_KEY_PASSPHRASE  passphrase of --api-ssl-key (same)
  CONFIGPROXY_REDIS_PASSWORD          password for the Redis --storage-backend, instead of
                                      putting it in the URL (where ps shows it)
  RUST_LOG                            overrides --log-level with a tracing filter";

/// The command line: CHP's flags and their defaults, parsed by clap. Build one with
/// [`Parser::parse`] (the process's arguments) or [`Parser::try_parse_from`].
#[derive(Parser)]
#[allow(
    rustdoc::invalid_html_tags,
    reason = "the field comments are the --help text, where <code> and <s> are placeholders"
)]
#[command(
    name = "switchyard",
    version = concat!(env!("CARGO_PKG_VERSION"), " (configurable-http-proxy 5.3.0 compatible)"),
    about = "A configurable-http-proxy compatible reverse proxy",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Public-facing IP of the proxy ('' or '*' = all interfaces)
    #[arg(long, value_name = "ip-address", conflicts_with = "socket")]
    pub(crate) ip: Option<String>,
    /// Public-facing port of the proxy (0: a free port the system picks, logged in the
    /// 'Proxying' line)
    #[arg(
        long,
        value_name = "n",
        default_value_t = 8000,
        conflicts_with = "socket"
    )]
    pub(crate) port: u16,
    /// Path to a UNIX domain socket for the public-facing proxy (conflicts with --ip/--port)
    #[arg(long, value_name = "path")]
    pub(crate) socket: Option<PathBuf>,

    /// SSL key to use, if any
    #[arg(long, value_name = "keyfile")]
    pub(crate) ssl_key: Option<PathBuf>,
    /// SSL certificate to use, if any
    #[arg(long, value_name = "certfile")]
    pub(crate) ssl_cert: Option<PathBuf>,
    /// SSL CA bundle used to verify client certificates (with --ssl-request-cert)
    #[arg(long, value_name = "ca-file")]
    pub(crate) ssl_ca: Option<PathBuf>,
    /// Request SSL certs to authenticate clients
    #[arg(long)]
    pub(crate) ssl_request_cert: bool,
    /// Reject unauthorized SSL connections (only meaningful with --ssl-request-cert)
    #[arg(long)]
    pub(crate) ssl_reject_unauthorized: bool,
    /// TLS protocol: TLSv1_2 / TLSv1.2 or TLSv1_3 / TLSv1.3 (default: TLS 1.2 and 1.3)
    #[arg(long, value_name = "ssl-protocol")]
    pub(crate) ssl_protocol: Option<String>,
    /// OpenSSL cipher list (accepted; rustls uses its own modern suites and ignores it)
    #[arg(long, value_name = "ciphers")]
    pub(crate) ssl_ciphers: Option<String>,
    /// Allow RC4 ciphers (accepted; RC4 is never enabled)
    #[arg(long)]
    pub(crate) ssl_allow_rc4: bool,
    /// SSL Diffie-Hellman parameters file (accepted; rustls offers ECDHE only)
    #[arg(long, value_name = "dhparam-file")]
    pub(crate) ssl_dhparam: Option<PathBuf>,

    /// Inward-facing IP for API requests
    #[arg(
        long,
        value_name = "ip",
        default_value = "localhost",
        conflicts_with = "api_socket"
    )]
    pub(crate) api_ip: String,
    /// Inward-facing port for API requests (defaults to --port + 1; 0, or --port 0: a free
    /// port the system picks, logged in the 'Proxy API at' line)
    #[arg(long, value_name = "n", conflicts_with = "api_socket")]
    pub(crate) api_port: Option<u16>,
    /// Path to a UNIX domain socket for the API (conflicts with --api-ip/--api-port)
    #[arg(long, value_name = "path")]
    pub(crate) api_socket: Option<PathBuf>,
    /// SSL key to use, if any, for API requests
    #[arg(long, value_name = "keyfile")]
    pub(crate) api_ssl_key: Option<PathBuf>,
    /// SSL certificate to use, if any, for API requests
    #[arg(long, value_name = "certfile")]
    pub(crate) api_ssl_cert: Option<PathBuf>,
    /// SSL CA bundle used to verify API clients' certificates
    #[arg(long, value_name = "ca-file")]
    pub(crate) api_ssl_ca: Option<PathBuf>,
    /// Request SSL certs to authenticate API clients
    #[arg(long)]
    pub(crate) api_ssl_request_cert: bool,
    /// Reject unauthorized SSL connections to the API (only with --api-ssl-request-cert)
    #[arg(long)]
    pub(crate) api_ssl_reject_unauthorized: bool,

    /// SSL key to use, if any, for connections to https targets
    #[arg(long, value_name = "keyfile")]
    pub(crate) client_ssl_key: Option<PathBuf>,
    /// SSL certificate to use, if any, for connections to https targets
    #[arg(long, value_name = "certfile")]
    pub(crate) client_ssl_cert: Option<PathBuf>,
    /// SSL CA bundle trusted for https targets (default: the Mozilla roots)
    #[arg(long, value_name = "ca-file")]
    pub(crate) client_ssl_ca: Option<PathBuf>,
    /// Accepted for compatibility; no effect (as in CHP)
    #[arg(long)]
    pub(crate) client_ssl_request_cert: bool,
    /// Accepted for compatibility; no effect (as in CHP; targets are always verified
    /// unless --insecure)
    #[arg(long)]
    pub(crate) client_ssl_reject_unauthorized: bool,

    /// Default proxy target (proto://host[:port])
    #[arg(long, value_name = "host")]
    pub(crate) default_target: Option<String>,
    /// Alternate server for handling proxy errors (proto://host[:port])
    #[arg(long, value_name = "host", conflicts_with = "error_path")]
    pub(crate) error_target: Option<String>,
    /// Alternate directory for error pages (<code>.html, then error.html)
    #[arg(long, value_name = "path")]
    pub(crate) error_path: Option<PathBuf>,

    /// Redirect HTTP requests on this port to the server on HTTPS
    #[arg(long, value_name = "redirect-port")]
    pub(crate) redirect_port: Option<u16>,
    /// Redirect HTTP requests from --redirect-port to this port
    #[arg(long, value_name = "port")]
    pub(crate) redirect_to: Option<u16>,
    /// Write our PID to a file
    #[arg(long, value_name = "pid-file")]
    pub(crate) pid_file: Option<PathBuf>,

    /// Don't add 'X-forward-' headers to proxied requests
    #[arg(long = "no-x-forward", action = clap::ArgAction::SetFalse)]
    pub(crate) x_forward: bool,
    /// Avoid prepending target paths to proxied requests
    #[arg(long = "no-prepend-path", action = clap::ArgAction::SetFalse)]
    pub(crate) prepend_path: bool,
    /// Don't include the routing prefix in proxied requests
    #[arg(long = "no-include-prefix", action = clap::ArgAction::SetFalse)]
    pub(crate) include_prefix: bool,
    /// Rewrite the Location header host/port in redirect responses
    #[arg(long)]
    pub(crate) auto_rewrite: bool,
    /// With --auto-rewrite: a host (or host:port, as clients send it in Host) this proxy is
    /// reached as; repeatable. A redirect to the target then names the client's Host when it
    /// is one of these, and is made relative otherwise, so a forged Host never reaches a
    /// Location. (Not in CHP, which copied any Host in.)
    #[arg(long, value_name = "host[:port]", value_parser = parse_public_host)]
    pub(crate) public_host: Vec<String>,
    /// Changes the origin of the host header to the target URL
    #[arg(long)]
    pub(crate) change_origin: bool,
    /// Rewrite the Location header protocol in redirect responses to the specified protocol
    #[arg(long, value_name = "proto")]
    pub(crate) protocol_rewrite: Option<String>,
    /// Custom header to add to proxied requests ('key: value'; repeatable)
    #[arg(long, value_name = "header", value_parser = parse_custom_header)]
    pub(crate) custom_header: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Skip checking target certificates
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Use host routing (host as first level of path)
    #[arg(long)]
    pub(crate) host_routing: bool,

    /// IP for the metrics server ('' = all interfaces)
    #[arg(
        long,
        value_name = "ip",
        default_value = "",
        conflicts_with = "metrics_socket"
    )]
    pub(crate) metrics_ip: String,
    /// Port of the metrics server (no metrics server unless set; 0: a free port the system
    /// picks)
    #[arg(long, value_name = "n", conflicts_with = "metrics_socket")]
    pub(crate) metrics_port: Option<u16>,
    /// Path to a UNIX domain socket for the metrics server
    #[arg(long, value_name = "path")]
    pub(crate) metrics_socket: Option<PathBuf>,

    /// Log level (error, warn, info, http, verbose, debug, silly)
    #[arg(long, value_name = "loglevel", default_value = "info", value_parser = parse_log_level)]
    pub(crate) log_level: LogLevel,
    /// Log line format: `text` (CHP's: `<time> [ConfigProxy] <level>: <message>`) or
    /// `json` (one object per line: timestamp, level, message, and the event's fields,
    /// `request_id` among them). Not in CHP.
    #[arg(long, value_name = "format", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// Idle timeout, in milliseconds, of a client connection during a web request
    /// (0: none, as when absent)
    #[arg(long, value_name = "ms")]
    pub(crate) timeout: Option<u64>,
    /// Timeout, in milliseconds, waiting for the proxy target (then 503; 0: none, as when
    /// absent)
    #[arg(long, value_name = "ms")]
    pub(crate) proxy_timeout: Option<u64>,
    /// Storage backend for routes: 'memory' (default), or a Redis URL shared by several
    /// replicas: redis://[user:pass@]host:port/db, rediss://… (TLS), unix:///path.sock?db=N,
    /// or the master found through Redis Sentinel:
    /// redis+sentinel://[user:pass@]host1:26379,host2:26379/<master name>/db.
    /// Node modules cannot be loaded.
    #[arg(long, value_name = "storage-class", value_parser = parse_storage_backend)]
    pub(crate) storage_backend: Option<StorageBackend>,
    /// Prefix of the route keys in Redis (the Node redis backend's layout: <prefix><path>)
    #[arg(long, value_name = "prefix", default_value = "chp:")]
    pub(crate) redis_key_prefix: String,
    /// Memory store only: keep the routes in this file (written atomically on each change,
    /// loaded at start), so a restarted proxy serves them at once
    #[arg(long, value_name = "path")]
    pub(crate) state_file: Option<PathBuf>,
    /// Keep-alive timeout, in milliseconds, of the public server (0: the default, as in
    /// CHP): how long a connection may wait for the first byte of its next request. HTTP/1.1
    /// answers say it in a 'Keep-Alive: timeout=<s>' header
    #[arg(long, value_name = "ms", default_value_t = 5000)]
    pub(crate) keep_alive_timeout: u64,
    /// The whole request head (request line and header fields) must arrive within this
    /// many milliseconds of its first byte, else '408 Request Timeout' and the connection
    /// is closed (0: no limit). Node, under CHP, has the same 60 s 'headersTimeout'
    #[arg(long, value_name = "ms", default_value_t = 60_000)]
    pub(crate) request_head_timeout: u64,
    /// Largest accepted request head (request line + headers), in bytes; larger gets 431.
    /// (Not in CHP, where NODE_OPTIONS=--max-http-header-size was the workaround.)
    #[arg(long, value_name = "bytes", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(8192..=16_777_216))]
    pub(crate) max_header_size: u32,
    /// Threads that serve connections (not in CHP). Default: one per CPU this process may
    /// use (or TOKIO_WORKER_THREADS). With 1, asked for or by default, everything runs on a
    /// single thread, like one nginx worker.
    #[arg(long, value_name = "n", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) worker_threads: Option<u16>,
    /// Most header fields in a request; more gets 431 and the connection is closed.
    /// (Node, under CHP, dropped the fields past 2000 silently.)
    #[arg(long, value_name = "n", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) max_headers: u32,
    /// Longest request target (path and query as sent), in bytes; longer gets 414 and the
    /// connection is closed, before routing. A request line too long even for
    /// --max-header-size plus this gets 431.
    #[arg(long, value_name = "bytes", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub(crate) max_uri_length: u32,
    /// A request or response body that sends nothing for this many milliseconds is
    /// aborted: the target's request is cancelled, the client's connection closed; so is a
    /// connection whose client takes no byte of what is written to it for this long (a
    /// download or WebSocket messages it does not read). 0 turns the limit off. Idle
    /// WebSocket tunnels are not affected.
    #[arg(long, value_name = "ms", default_value_t = 300_000)]
    pub(crate) body_idle_timeout: u64,
    /// An idle connection to a target is closed after this many milliseconds in the
    /// pool; 0 keeps none (each request opens a connection). After a burst, the pool's
    /// connections and their buffers go this long after the last request.
    #[arg(long, value_name = "ms", default_value_t = 90_000)]
    pub(crate) pool_idle_timeout: u64,
    /// Largest response head (status line + headers) accepted from a target, in bytes;
    /// a larger one is answered 502 and logged.
    #[arg(long, value_name = "bytes", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(8192..=16_777_216))]
    pub(crate) max_response_header_size: u32,
    /// Most header fields in a response from a target; more is answered 502 and logged.
    /// (Node, under CHP, took up to 2000. Above 100 each response allocates a table of
    /// this many entries while its head is parsed.)
    #[arg(long, value_name = "n", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) max_response_headers: u32,
    /// On SIGTERM or SIGINT every listener closes at once and in-flight requests may
    /// finish for this many milliseconds (keep-alive connections are closed after their
    /// current response); connections still open then are closed and the process exits
    /// with status 0. 0 closes everything at once. (CHP exits at once, with status 2.)
    #[arg(long, value_name = "ms", default_value_t = 10_000)]
    pub(crate) shutdown_timeout: u64,
    /// On SIGTERM or SIGINT, first answer /_chp_readyz with 503 and go on serving as
    /// usual for this many milliseconds, so that a load balancer or Kubernetes takes this
    /// replica out of rotation before its listeners close; then stop as --shutdown-timeout
    /// says. A second SIGTERM or SIGINT, during the delay or the drain, exits at once.
    #[arg(long, value_name = "ms", default_value_t = 0)]
    pub(crate) shutdown_delay: u64,
    /// Access log: one entry per proxied request when its response ends, per WebSocket
    /// session when it closes, and per request answered by the proxy itself. `off` (the
    /// default), `-` (stdout), `stderr`, or a file (appended to, reopened on SIGUSR1).
    /// Not in CHP.
    #[arg(long, value_name = "target", default_value = "off", value_parser = crate::access_log::Destination::parse)]
    pub(crate) access_log: crate::access_log::Destination,
    /// Access log format: `text` (nginx's combined, then the duration, the route, the
    /// target and the request ID) or `json` (one object per line).
    #[arg(long, value_name = "format", value_enum, default_value = "text")]
    pub(crate) access_log_format: crate::access_log::Format,
    /// Write only the access log entries of these statuses: classes, codes and ranges,
    /// comma-separated (`5xx,4xx`, `500-599`, `404`). A client that left before an
    /// answer is 499.
    #[arg(long, value_name = "list", value_parser = crate::access_log::StatusFilter::parse)]
    pub(crate) access_log_status: Option<crate::access_log::StatusFilter>,
    /// Query parameters whose values the access log writes as `REDACTED`,
    /// comma-separated (case-insensitive).
    #[arg(long, value_name = "names", default_value = crate::access_log::DEFAULT_REDACT, value_delimiter = ',')]
    pub(crate) access_log_redact: Vec<String>,
    /// The header of request IDs: a client's is kept when it is a token of at most 128
    /// characters (letters, digits, `-`, `_`, `.` and the like), else replaced; a request
    /// without one gets one. The ID is sent to the target, returned to the client, and
    /// written in the access log and in error lines. Not in CHP.
    #[arg(long, value_name = "name", default_value = "x-request-id", value_parser = parse_header_name)]
    pub(crate) request_id_header: http::HeaderName,
    /// No request IDs: the header is passed through as sent, and none is made.
    #[arg(long)]
    pub(crate) no_request_id: bool,
    /// No dashboard: `/dashboard` and `/api/dashboard/*` on the API port answer 404, and
    /// requests are not timed for it. Not in CHP.
    #[arg(long, env = "SWITCHYARD_NO_DASHBOARD")]
    pub(crate) no_dashboard: bool,

    /// Automatic HTTPS (not in CHP): get and renew the public port's certificate from an
    /// ACME server (Let's Encrypt) for this name; repeat the flag for more names, all in
    /// one certificate. Replaces --ssl-key/--ssl-cert
    #[arg(
        long,
        value_name = "name",
        env = "SWITCHYARD_ACME_DOMAIN",
        value_delimiter = ','
    )]
    pub(crate) acme_domain: Vec<String>,
    /// Contact address given to the ACME server with the account (expiry notices)
    #[arg(long, value_name = "addr", env = "SWITCHYARD_ACME_EMAIL")]
    pub(crate) acme_email: Option<String>,
    /// The ACME server's directory URL. Let's Encrypt's staging server, for trials:
    /// <https://acme-staging-v02.api.letsencrypt.org/directory>
    #[arg(
        long,
        value_name = "url",
        env = "SWITCHYARD_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub(crate) acme_directory: String,
    /// A PEM file of the CA that signed the ACME server's own HTTPS certificate (a private
    /// ACME server); default: the system's trust store
    #[arg(long, value_name = "pem", env = "SWITCHYARD_ACME_CA_FILE")]
    pub(crate) acme_ca_file: Option<PathBuf>,
    /// The challenge answered: tls-alpn-01 on the public HTTPS port, or http-01 on
    /// --redirect-port (which must then be the port the ACME server reaches as port 80)
    #[arg(long, value_name = "type", env = "SWITCHYARD_ACME_CHALLENGE", default_value = "tls-alpn-01", value_parser = ["tls-alpn-01", "http-01"])]
    pub(crate) acme_challenge: String,
    /// Renew once this share of the certificate's lifetime has passed, in percent
    /// (67: a 90-day certificate is renewed 30 days before it expires)
    #[arg(long, value_name = "percent", env = "SWITCHYARD_ACME_RENEW_AT", default_value_t = 67, value_parser = clap::value_parser!(u8).range(1..=99))]
    pub(crate) acme_renew_at: u8,
    /// Most client connections open at once on each public listener (the public port, the
    /// HTTP redirect port); more wait in the system's accept queue until one ends. The API
    /// and metrics ports are not counted. Default: half of the open-files limit (raised to
    /// its hard limit at start) less a reserve of 100, since each client connection may
    /// hold one to its target
    #[arg(long, value_name = "n", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_connections: Option<u64>,
}

fn parse_header_name(s: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("{s:?} is not a header name"))
}

/// The shape of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// CHP's lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A winston log level, mapped onto tracing levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Where routes are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StorageBackend {
    Memory,
    /// A `redis://`, `rediss://` or `unix://` URL.
    Redis(String),
}

/// The environment variables read at start-up (the API token, key passphrases, the
/// Redis password): secrets never go on the command line. `Debug` never shows them.
#[derive(Default)]
pub struct Env {
    pub(crate) auth_token: Option<String>,
    pub(crate) ssl_key_passphrase: Option<String>,
    pub(crate) api_ssl_key_passphrase: Option<String>,
    pub(crate) redis_password: Option<String>,
}

// === impl Cli ===

impl Cli {
    /// Cross-flag checks that clap cannot express.
    ///
    /// # Errors
    ///
    /// The message to print, naming the flags.
    pub fn validate(&self) -> Result<(), String> {
        if !self.acme_domain.is_empty() {
            if self.ssl_key.is_some() || self.ssl_cert.is_some() {
                return Err(
                    "--acme-domain gets the public certificate itself: leave out --ssl-key and --ssl-cert"
                        .to_owned(),
                );
            }
            if let Some(bad) = self
                .acme_domain
                .iter()
                .find(|d| !crate::acme::valid_domain(d))
            {
                return Err(format!("--acme-domain {bad:?}: not a DNS name"));
            }
            if self.acme_challenge == "http-01" && self.redirect_port.is_none() {
                return Err(
                    "--acme-challenge http-01 is answered on --redirect-port: give it".to_owned(),
                );
            }
        }
        if self.redirect_port.is_some()
            && self.ssl_key.is_none()
            && self.ssl_cert.is_none()
            && self.acme_domain.is_empty()
        {
            return Err("HTTPS redirection specified but certificates not provided.".to_owned());
        }
        if let Some(StorageBackend::Redis(url)) = &self.storage_backend {
            crate::store::redis::RedisConfig::validate(url)
                .map_err(|e| format!("--storage-backend: {e}"))?;
            if self.state_file.is_some() {
                return Err(
                    "--state-file is for the memory store; Redis keeps the routes itself"
                        .to_owned(),
                );
            }
        }
        if self.redis_key_prefix.is_empty() {
            return Err("--redis-key-prefix must not be empty".to_owned());
        }
        if self.client_ssl_key.is_some() != self.client_ssl_cert.is_some() {
            return Err("--client-ssl-key and --client-ssl-cert must be given together".to_owned());
        }
        if self.api_port.is_none() && self.socket.is_none() && self.port == u16::MAX {
            return Err(
                "--port 65535 leaves no port for the API (--port + 1): give --api-port".to_owned(),
            );
        }
        Ok(())
    }

    /// How long a public connection may wait for a request head. CHP reads
    /// `--keep-alive-timeout` as `value || 5000`, so 0 is the default.
    pub(crate) fn keep_alive_timeout(&self) -> Duration {
        Duration::from_millis(if self.keep_alive_timeout == 0 {
            5000
        } else {
            self.keep_alive_timeout
        })
    }

    /// How long an idle target connection stays in the pool (zero: none is kept).
    pub(crate) fn pool_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_idle_timeout)
    }

    /// How long a body may be silent, or a client take no byte (`None`: no limit).
    pub(crate) fn body_idle_timeout(&self) -> Option<Duration> {
        (self.body_idle_timeout > 0).then(|| Duration::from_millis(self.body_idle_timeout))
    }

    /// How long a request head may take from its first byte (`None`: no limit).
    pub(crate) fn request_head_timeout(&self) -> Option<Duration> {
        (self.request_head_timeout > 0).then(|| Duration::from_millis(self.request_head_timeout))
    }

    /// The public port (0: the system picks one).
    pub(crate) fn public_port(&self) -> u16 {
        self.port
    }

    /// The public host to bind; '' and '*' mean all interfaces.
    pub(crate) fn public_ip(&self) -> Option<&str> {
        match self.ip.as_deref() {
            None | Some("" | "*") => None,
            Some(ip) => Some(ip),
        }
    }

    /// The API port: `--api-port`, else public port + 1 (8001 with --socket). With
    /// `--port 0` the system picks both: a port + 1 would be port 1.
    pub(crate) fn api_port(&self) -> u16 {
        match self.api_port {
            Some(p) => p,
            None if self.socket.is_some() => 8001,
            None if self.port == 0 => 0,
            // `validate` refuses port 65535 here.
            None => self.port.saturating_add(1),
        }
    }
}

impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cli")
            .field("ip", &self.ip)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("api_ip", &self.api_ip)
            .field("api_port", &self.api_port)
            .field("api_socket", &self.api_socket)
            .field("default_target", &self.default_target)
            .field("error_target", &self.error_target)
            .field("host_routing", &self.host_routing)
            .finish_non_exhaustive()
    }
}

// === impl LogLevel ===

impl LogLevel {
    pub(crate) fn as_filter(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

// === impl Env ===

impl Env {
    /// Reads the variables of this process (empty counts as unset).
    pub fn from_process() -> Self {
        let non_empty = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            auth_token: non_empty(AUTH_TOKEN_ENV),
            ssl_key_passphrase: non_empty(SSL_KEY_PASSPHRASE_ENV),
            api_ssl_key_passphrase: non_empty(API_SSL_KEY_PASSPHRASE_ENV),
            redis_password: non_empty(REDIS_PASSWORD_ENV),
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// `--public-host`: a host name or address with an optional port, as a `Host` header
/// carries it.
fn parse_public_host(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && http::uri::Authority::try_from(value).is_ok_and(|a| a.as_str() == value)
        && !value.contains('@');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a host or host:port"))
    }
}

fn parse_custom_header(value: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    match value.find(':') {
        Some(i) if i > 0 => {
            let name = http::HeaderName::from_bytes(value[..i].trim().as_bytes())
                .map_err(|_| format!("Invalid header name in custom header: {value}"))?;
            let val = http::HeaderValue::from_str(value[i + 1..].trim())
                .map_err(|_| format!("Invalid header value in custom header: {value}"))?;
            Ok((name, val))
        }
        _ => Err(format!("A colon was expected in custom header: {value}")),
    }
}

fn parse_log_level(value: &str) -> Result<LogLevel, String> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "error" => LogLevel::Error,
        "warn" | "warning" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "http" | "verbose" | "debug" => LogLevel::Debug,
        "silly" | "trace" => LogLevel::Trace,
        _ => {
            return Err(format!(
                "unknown log level '{value}' (expected error, warn, info, http, verbose, debug or silly)"
            ));
        }
    })
}

fn parse_storage_backend(value: &str) -> Result<StorageBackend, String> {
    let lower = value.to_ascii_lowercase();
    if lower.is_empty() || lower == "memory" || lower == "memorystore" {
        Ok(StorageBackend::Memory)
    } else if [
        "redis://",
        "rediss://",
        "unix://",
        "redis+unix://",
        "redis+sentinel://",
    ]
    .iter()
    .any(|s| lower.starts_with(s))
    {
        Ok(StorageBackend::Redis(value.to_owned()))
    } else {
        Err(format!(
            "'{value}' looks like a Node.js module; switchyard cannot load Node modules. \
             Supported: 'memory' (the default) and redis://, rediss://, unix://, \
             redis+sentinel:// URLs"
        ))
    }
}

#[cfg(test)]
mod tests;
