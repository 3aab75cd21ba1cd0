//! Every option of the engine, with http-proxy-3's names and defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method};

use crate::error::ConfigError;
use crate::target::Target;

/// Options that apply per request. The proxy holds one set as defaults;
/// [`Proxy::web_with`](crate::Proxy::web_with) takes another for one call,
/// as http-proxy-3's `proxy.web(req, res, {target})` does.
///
/// Options that shape connections (TLS, pooling, local address) are in
/// [`ClientOptions`] and fixed when the proxy is built.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Where requests go.
    pub target: Option<Target>,
    /// A second target that gets a copy of each request, fire-and-forget; its
    /// answer is discarded. With no `target`, the client gets an empty 200.
    pub forward: Option<Target>,
    /// `listen` only: proxy WebSocket upgrades (`web` always does).
    pub ws: bool,
    /// Add `X-Forwarded-For`, `-Port`, `-Proto` and `-Host`.
    pub xfwd: bool,
    /// How `X-Forwarded-*` values combine with ones the client sent.
    pub xfwd_mode: XfwdMode,
    /// Send the request's whole target (an absolute URL from a client that
    /// treats us as a forward proxy) as the path, after a `/`.
    pub to_proxy: bool,
    /// Prefix the outgoing path with the target's path and query (default true).
    pub prepend_path: bool,
    /// Drop the request's path and query; send only the target's.
    pub ignore_path: bool,
    /// Set `Host` to the target's host (and port when not the default).
    pub change_origin: bool,
    /// Basic authentication to send upstream; replaces the client's
    /// `Authorization` (a `headers` entry still wins).
    pub auth: Option<BasicAuth>,
    /// Headers set on every outgoing request, replacing the client's.
    pub headers: HeaderMap,
    /// Rewrite the host of same-target `Location` headers to this.
    pub host_rewrite: Option<String>,
    /// Rewrite the host of same-target `Location` headers to the client's
    /// `Host`, when that is one of `public_hosts`. Any other `Host` (the
    /// client chooses it) makes the `Location` relative instead: the client
    /// resolves it against the URL it used, so a forged `Host` is never
    /// echoed in a redirect and the target's address and port never leak
    /// (CHP's `--auto-rewrite` copies any `Host` in and keeps the target's
    /// port). A relative `Location` keeps the client's scheme, so
    /// `protocol_rewrite` only applies with a listed `Host`.
    pub auto_rewrite: bool,
    /// With `auto_rewrite`: the names (`host` or `host:port`, compared
    /// without regard to case, the port as written in `Host`) that clients
    /// use to reach this proxy. Empty by default: every rewritten
    /// `Location` is then relative.
    pub public_hosts: Vec<String>,
    /// Rewrite the scheme of same-target `Location` headers (`http` or `https`).
    pub protocol_rewrite: Option<String>,
    /// Rewrite `Domain=` of `Set-Cookie` headers.
    pub cookie_domain_rewrite: CookieRewrite,
    /// Rewrite `Path=` of `Set-Cookie` headers.
    pub cookie_path_rewrite: CookieRewrite,
    /// Upstream timeout: for the response head, and then for each wait for a
    /// frame of the response body (the time the client takes between frames
    /// does not count). Expiry before the head is a 504.
    pub proxy_timeout: Option<Duration>,
    /// Incoming timeout: how long the client may leave us waiting, for
    /// request body bytes or (while we wait for the upstream) at all. Expiry
    /// drops the client's connection without a response, as a socket
    /// timeout does in Node.
    pub timeout: Option<Duration>,
    /// How long to wait for the upstream's response head once the request
    /// is handed to the connection (a fixed limit, unlike `proxy_timeout`).
    /// Expiry is [`ProxyError::UpstreamTimeout`](crate::ProxyError), a 504.
    pub headers_timeout: Option<Duration>,
    /// The longest wait for the next frame of the response body, counted
    /// while the body is read (the time the client takes between frames does
    /// not count). Expiry fails the body with
    /// [`BodyIdleTimeout`](crate::BodyIdleTimeout).
    pub body_timeout: Option<Duration>,
    /// The longest wait for the next frame of the request body, counted while
    /// the body is read (a slow-body attack; the time the upstream connection
    /// takes between frames does not count). Expiry aborts the upstream request and is
    /// [`ProxyError::ClientTimeout`](crate::ProxyError): the client's
    /// connection is dropped. Unlike `timeout`, the wait for the upstream's
    /// answer does not count.
    pub request_body_timeout: Option<Duration>,
    /// A limit on the whole exchange, from the call to the end of the
    /// response body, retries and their delays included. Expiry before the
    /// response head is [`ProxyError::TotalTimeout`](crate::ProxyError), a
    /// 504; after it, the body fails with that error.
    pub total_timeout: Option<Duration>,
    /// Follow upstream redirects, at most this many hops.
    pub follow_redirects: Option<u32>,
    /// Skip the response rewriting passes and leave the response to the
    /// `on_proxy_response` hook (or the caller of `web`).
    pub self_handle_response: bool,
    /// Override the outgoing method.
    pub method: Option<Method>,
}

/// How `X-Forwarded-For`, `-Port` and `-Proto` combine with client values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XfwdMode {
    /// Append ours after the client's, comma-separated (http-proxy-3, CHP).
    #[default]
    Append,
    /// Keep the client's if present; set ours otherwise (httpxy).
    SetIfAbsent,
    /// Replace whatever the client sent (for an edge proxy that trusts no one).
    Replace,
}

/// Basic credentials for the upstream, encoded once.
#[derive(Clone)]
pub struct BasicAuth {
    header: HeaderValue,
}

/// A `Set-Cookie` attribute rewrite: a map from old values to new ones, with
/// `*` matching any value. An empty new value removes the attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookieRewrite {
    rules: Vec<(String, String)>,
}

/// Options for the upstream connections, fixed when the proxy is built.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Verify upstream TLS certificates and host names (default true).
    pub secure: bool,
    /// Extra trusted CA certificates (PEM), added to the built-in web roots.
    pub ca: Option<Pem>,
    /// A client certificate chain and its private key (PEM) for upstreams
    /// that ask for one. PKCS#12 is not supported.
    pub client_cert: Option<(Pem, Pem)>,
    /// Bind upstream TCP connections to this local address.
    pub local_address: Option<IpAddr>,
    /// Keep this many idle connections per upstream (default 1024). A cap
    /// below the number of concurrent clients makes the proxy close and
    /// reopen upstream connections under load (TIME_WAIT churn, twice the
    /// origin's CPU per request in the benchmark at 256 clients); idle ones
    /// still go after `pool_idle_timeout`.
    pub pool_max_idle_per_host: usize,
    /// Close idle pooled connections after this long (default 90 s).
    pub pool_idle_timeout: Option<Duration>,
    /// Give up connecting after this long (default 10 s). A timeout is a 504.
    pub connect_timeout: Option<Duration>,
    /// HTTP/2 keep-alive pings to upstreams, at this interval.
    pub http2_keep_alive_interval: Option<Duration>,
    /// Keep the upstream's response header-name case for HTTP/1 clients
    /// (the server serving the response must preserve case too; `listen` does).
    pub preserve_header_key_case: bool,
    /// The largest HTTP/1 response head accepted from an upstream, in bytes
    /// (hyper's read buffer, so at least 8 KiB). A larger head fails the
    /// request with [`ProxyError::UpstreamHeadTooLarge`](crate::ProxyError),
    /// a 502, and the connection is dropped. Default 64 KiB (hyper's own
    /// default is about 400 KiB).
    pub max_response_header_size: usize,
    /// The most header fields an HTTP/1 response head may have; more fails the
    /// request with [`ProxyError::UpstreamHeadTooLarge`](crate::ProxyError).
    /// Default 100, hyper's: its parser keeps up to 100 on the stack, and any
    /// other value makes it allocate a table of this size for every response.
    pub max_response_headers: usize,
}

/// PEM text: given inline or read from a file when the proxy is built.
#[derive(Debug, Clone)]
pub enum Pem {
    /// PEM bytes.
    Bytes(Vec<u8>),
    /// A file holding PEM.
    File(PathBuf),
}

// === impl Options ===

impl Default for Options {
    fn default() -> Self {
        Self {
            target: None,
            forward: None,
            ws: false,
            xfwd: false,
            xfwd_mode: XfwdMode::default(),
            to_proxy: false,
            prepend_path: true,
            ignore_path: false,
            change_origin: false,
            auth: None,
            headers: HeaderMap::new(),
            host_rewrite: None,
            auto_rewrite: false,
            public_hosts: Vec::new(),
            protocol_rewrite: None,
            cookie_domain_rewrite: CookieRewrite::default(),
            cookie_path_rewrite: CookieRewrite::default(),
            proxy_timeout: None,
            timeout: None,
            headers_timeout: None,
            body_timeout: None,
            request_body_timeout: None,
            total_timeout: None,
            follow_redirects: None,
            self_handle_response: false,
            method: None,
        }
    }
}

impl Options {
    /// Options with this target and every other option at its default.
    pub fn to(target: Target) -> Self {
        Self {
            target: Some(target),
            ..Self::default()
        }
    }

    /// Checks values that cannot work together.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Option`] naming the first offending option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.protocol_rewrite {
            let p = p.trim_end_matches(':');
            if !p.eq_ignore_ascii_case("http") && !p.eq_ignore_ascii_case("https") {
                return Err(ConfigError::Option {
                    name: "protocol_rewrite",
                    reason: format!("{p:?} is neither http nor https"),
                });
            }
        }
        if let Some(h) = &self.host_rewrite
            && (h.is_empty() || h.parse::<http::uri::Authority>().is_err())
        {
            return Err(ConfigError::Option {
                name: "host_rewrite",
                reason: format!("{h:?} is not a host[:port]"),
            });
        }
        for (name, d) in [
            ("proxy_timeout", self.proxy_timeout),
            ("timeout", self.timeout),
            ("headers_timeout", self.headers_timeout),
            ("body_timeout", self.body_timeout),
            ("request_body_timeout", self.request_body_timeout),
            ("total_timeout", self.total_timeout),
        ] {
            if d == Some(Duration::ZERO) {
                return Err(ConfigError::Option {
                    name,
                    reason: "zero; leave it unset for no timeout".into(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn rewrites_location(&self) -> bool {
        self.host_rewrite.is_some() || self.auto_rewrite || self.protocol_rewrite.is_some()
    }
}

// === impl BasicAuth ===

impl BasicAuth {
    /// Credentials from `user:password` (http-proxy-3's `auth` option).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Option`] when the text has no `:` or control characters.
    pub fn parse(user_colon_password: &str) -> Result<Self, ConfigError> {
        if !user_colon_password.contains(':') || user_colon_password.chars().any(char::is_control) {
            return Err(ConfigError::Option {
                name: "auth",
                reason: "expected user:password".into(),
            });
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_colon_password);
        let mut header = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
            ConfigError::Option {
                name: "auth",
                reason: "not encodable".into(),
            }
        })?;
        header.set_sensitive(true);
        Ok(Self { header })
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

// === impl CookieRewrite ===

impl CookieRewrite {
    /// No rewriting (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Every value becomes `value` (http-proxy-3's string form, `{"*": value}`).
    /// An empty `value` removes the attribute.
    pub fn all(value: impl Into<String>) -> Self {
        Self {
            rules: vec![("*".to_owned(), value.into())],
        }
    }

    /// A map of exact (case-sensitive) old values to new values, with `*`
    /// as the fallback.
    pub fn map<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            rules: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// True when nothing is rewritten.
    pub fn is_none(&self) -> bool {
        self.rules.is_empty()
    }

    /// The replacement for `old`: an exact match first, then `*`.
    pub(crate) fn lookup(&self, old: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|(k, _)| k == old)
            .or_else(|| self.rules.iter().find(|(k, _)| k == "*"))
            .map(|(_, v)| v.as_str())
    }
}

// === impl ClientOptions ===

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            secure: true,
            ca: None,
            client_cert: None,
            local_address: None,
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            connect_timeout: Some(Duration::from_secs(10)),
            http2_keep_alive_interval: None,
            preserve_header_key_case: false,
            max_response_header_size: 64 * 1024,
            max_response_headers: 100,
        }
    }
}

// === impl Pem ===

impl Pem {
    pub(crate) fn read(&self) -> Result<Vec<u8>, ConfigError> {
        match self {
            Self::Bytes(b) => Ok(b.clone()),
            Self::File(p) => std::fs::read(p)
                .map_err(|e| ConfigError::Tls(format!("cannot read {}: {e}", p.display()))),
        }
    }
}

impl From<PathBuf> for Pem {
    fn from(p: PathBuf) -> Self {
        Self::File(p)
    }
}

impl From<Vec<u8>> for Pem {
    fn from(b: Vec<u8>) -> Self {
        Self::Bytes(b)
    }
}

impl From<&str> for Pem {
    fn from(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_http_proxy_3s() {
        let o = Options::default();
        assert!(o.prepend_path && !o.ignore_path && !o.xfwd && !o.change_origin);
        assert!(o.proxy_timeout.is_none() && o.timeout.is_none());
        assert!(ClientOptions::default().secure);
    }

    #[test]
    fn basic_auth_is_encoded_once() {
        let a = BasicAuth::parse("user:pass").unwrap();
        assert_eq!(a.header(), "Basic dXNlcjpwYXNz");
        assert!(BasicAuth::parse("nocolon").is_err());
        assert_eq!(format!("{a:?}"), "BasicAuth(<redacted>)");
    }

    #[test]
    fn cookie_map_prefers_exact_then_star() {
        let r = CookieRewrite::map([("a.test", "b.test"), ("*", "")]);
        assert_eq!(r.lookup("a.test"), Some("b.test"));
        assert_eq!(r.lookup("A.test"), Some(""));
        assert_eq!(CookieRewrite::none().lookup("x"), None);
    }

    #[test]
    fn validate_rejects_bad_rewrites() {
        let o = Options {
            protocol_rewrite: Some("ftp".into()),
            ..Options::default()
        };
        assert!(o.validate().is_err());
        let o = Options {
            host_rewrite: Some("a b".into()),
            ..Options::default()
        };
        assert!(o.validate().is_err());
    }
}
