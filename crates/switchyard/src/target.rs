//! Upstream targets, parsed once and kept ready for the hot path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderValue;
use http::uri::{Authority, Scheme, Uri};

use crate::error::ConfigError;

/// The HTTP version the proxy speaks to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1 (the default), with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge (h2c) over plain TCP.
    Http2,
    /// Over TLS, whatever ALPN negotiates (`h2` preferred); over plain TCP, HTTP/1.1.
    Auto,
}

/// Where a request is sent: scheme, address, path prefix and query.
///
/// A target is parsed once (when configured or when a route is added) and is
/// cheap to clone. Accepted forms:
///
/// * `http://host:port/prefix?query`, `https://…` (`ws://` and `wss://` are
///   the same as `http://` and `https://`);
/// * `unix:/path/to.sock` — HTTP over a unix socket;
/// * `unix+http://%2Fpath%2Fto.sock/prefix` and CHP's `http+unix://…` — the
///   same, with a percent-encoded socket path as the host (`unix+https://`
///   and `https+unix://` for TLS over the socket).
///
/// User information (`user:pass@`) is refused: use the `auth` option, which
/// cannot leak into logs with the URL.
#[derive(Clone)]
pub struct Target {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    original: String,
    /// The pool key's scheme: `http`, `https`, `unix+http` or `unix+https`.
    scheme: Scheme,
    /// The pool key's authority (for unix sockets, the hex-encoded path).
    authority: Authority,
    tls: bool,
    /// The DNS name or IP (IPv6 without brackets) to connect to and verify.
    host: String,
    port: u16,
    unix: Option<PathBuf>,
    /// `Host` as sent with `change_origin`: host, plus port when not the default.
    host_header: HeaderValue,
    /// The target's path (`/` when none was given).
    path: String,
    /// The target's query, without `?`.
    query: Option<String>,
    protocol: Protocol,
}

/// Where a connection goes, decoded from a pool URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

const UNIX_HTTP: &str = "unix+http";
const UNIX_HTTPS: &str = "unix+https";

// === impl Target ===

impl Target {
    /// Parses a target URL.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Target`] when the text is not an absolute URL of a
    /// supported scheme, has user information, or has no host.
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        let err = |reason| ConfigError::Target {
            input: input.to_owned(),
            reason,
        };
        let input_trim = input.trim();
        if let Some(path) = input_trim.strip_prefix("unix:") {
            if path.starts_with("//") || !path.starts_with('/') {
                return Err(err("a unix target is unix:/absolute/path/to.sock"));
            }
            return Self::unix(input, PathBuf::from(path), false, "/", None);
        }
        let (scheme_str, rest) = input_trim
            .split_once("://")
            .ok_or_else(|| err("not an absolute URL (scheme://host)"))?;
        let (tls, unix) = match scheme_str.to_ascii_lowercase().as_str() {
            "http" | "ws" => (false, false),
            "https" | "wss" => (true, false),
            "unix+http" | "http+unix" => (false, true),
            "unix+https" | "https+unix" => (true, true),
            _ => {
                return Err(err(
                    "unsupported scheme (http, https, ws, wss, unix+http, http+unix)",
                ));
            }
        };
        let (authority, path, query) = split_rest(rest).map_err(err)?;
        if unix {
            let socket = socket_path(authority).map_err(err)?;
            return Self::unix(input, socket, tls, path, query);
        }
        Self::tcp(input, authority, tls, path, query)
    }

    /// A target reached over TCP: `authority` is `host[:port]`, checked here.
    fn tcp(
        input: &str,
        authority: &str,
        tls: bool,
        path: &str,
        query: Option<String>,
    ) -> Result<Self, ConfigError> {
        let err = |reason| ConfigError::Target {
            input: input.to_owned(),
            reason,
        };
        let auth = Authority::from_str(authority).map_err(|_| err("invalid host or port"))?;
        let default_port = if tls { 443 } else { 80 };
        let port_text = match authority.rsplit_once(':') {
            Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => Some(p),
            _ => None,
        };
        let port = match port_text {
            None => default_port,
            Some(p) => p.parse::<u16>().map_err(|_| err("invalid port"))?,
        };
        let host_raw = auth.host();
        if host_raw.is_empty() {
            return Err(err("no host"));
        }
        let host = host_raw
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let host_header = if port == default_port {
            host_raw.to_ascii_lowercase()
        } else {
            format!("{}:{port}", host_raw.to_ascii_lowercase())
        };
        let host_header = HeaderValue::from_str(&host_header).map_err(|_| err("invalid host"))?;
        let pool_authority = Authority::from_str(&format!("{host_raw}:{port}"))
            .map_err(|_| err("invalid host or port"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                original: input.to_owned(),
                scheme: if tls { Scheme::HTTPS } else { Scheme::HTTP },
                authority: pool_authority,
                tls,
                host,
                port,
                unix: None,
                host_header,
                path: path.to_owned(),
                query,
                protocol: Protocol::default(),
            }),
        })
    }

    fn unix(
        input: &str,
        socket: PathBuf,
        tls: bool,
        path: &str,
        query: Option<String>,
    ) -> Result<Self, ConfigError> {
        let err = |reason| ConfigError::Target {
            input: input.to_owned(),
            reason,
        };
        let hex = hex_encode(socket.as_os_str().as_encoded_bytes());
        let authority = Authority::from_str(&hex).map_err(|_| err("socket path too long"))?;
        let scheme = Scheme::from_str(if tls { UNIX_HTTPS } else { UNIX_HTTP })
            .map_err(|_| err("internal: scheme"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                original: input.to_owned(),
                scheme,
                authority,
                tls,
                host: "localhost".to_owned(),
                port: 0,
                unix: Some(socket),
                host_header: HeaderValue::from_static("localhost"),
                path: path.to_owned(),
                query,
                protocol: Protocol::default(),
            }),
        })
    }

    /// The same target, spoken to with another HTTP version.
    #[must_use]
    pub fn with_protocol(self, protocol: Protocol) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.protocol = protocol;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The text this target was parsed from.
    pub fn as_str(&self) -> &str {
        &self.inner.original
    }

    /// True for `https` and `wss` targets (TLS to the upstream).
    pub fn is_tls(&self) -> bool {
        self.inner.tls
    }

    /// The host to connect to (an IPv6 address without brackets), or
    /// `localhost` for a unix socket.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The TCP port (0 for a unix socket).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The unix socket path, if this target is one.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.inner.unix.as_deref()
    }

    /// The target's path prefix (`/` when none was given).
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// The target's query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.inner.query.as_deref()
    }

    /// The HTTP version used toward this target.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// The `Host` header value that names this target: the host, plus the
    /// port when it is not the scheme's default.
    pub fn host_header(&self) -> &HeaderValue {
        &self.inner.host_header
    }

    /// `host:port` for comparisons with a `Location` header's authority.
    pub(crate) fn authority_matches(&self, authority: &str) -> bool {
        if self.inner.unix.is_some() {
            return false;
        }
        let default_port = if self.inner.tls { 443 } else { 80 };
        let Ok(a) = Authority::from_str(authority) else {
            return false;
        };
        let host = a.host().trim_start_matches('[').trim_end_matches(']');
        let port = a.port_u16().unwrap_or(default_port);
        host.eq_ignore_ascii_case(&self.inner.host) && port == self.inner.port
    }

    /// Builds the absolute URI the upstream client is given (from a `String`,
    /// without copying it).
    pub(crate) fn uri_for<P>(&self, path_and_query: P) -> Result<Uri, http::Error>
    where
        P: TryInto<http::uri::PathAndQuery>,
        P::Error: Into<http::Error>,
    {
        Uri::builder()
            .scheme(self.inner.scheme.clone())
            .authority(self.inner.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.inner.original)
            .field("protocol", &self.inner.protocol)
            .finish()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.original)
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.inner.original == other.inner.original && self.inner.protocol == other.inner.protocol
    }
}

impl FromStr for Target {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Target {
    type Error = ConfigError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

// === impl Address ===

impl Address {
    /// Decodes the address a pool URI (built by [`Target::uri_for`]) points at.
    pub(crate) fn from_uri(uri: &Uri) -> Option<(Self, bool)> {
        let scheme = uri.scheme_str()?;
        let authority = uri.authority()?;
        match scheme {
            "http" | "https" => {
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let tls = scheme == "https";
                let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
                Some((Self::Tcp { host, port }, tls))
            }
            UNIX_HTTP | UNIX_HTTPS => {
                let bytes = hex_decode(authority.as_str())?;
                let path = PathBuf::from(String::from_utf8(bytes).ok()?);
                Some((Self::Unix(path), scheme == UNIX_HTTPS))
            }
            _ => None,
        }
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|pair| u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok())
        .collect()
}

/// The characters RFC 3986 allows in a path and query (plus `%` escapes),
/// which is what `http::uri::PathAndQuery` accepts.
/// Splits what follows `scheme://` into the authority, the path (`/` when
/// empty) and the query (none when empty), dropping any fragment.
fn split_rest(rest: &str) -> Result<(&str, &str, Option<String>), &'static str> {
    let (authority, path_query) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("user information in a target is not allowed; use the auth option");
    }
    if authority.is_empty() {
        return Err("no host");
    }
    let path_query = path_query.split('#').next().unwrap_or("");
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    if !is_valid_path_and_query(path) || !query.is_none_or(is_valid_path_and_query) {
        return Err("invalid characters in the path or query");
    }
    Ok((
        authority,
        path,
        query.filter(|q| !q.is_empty()).map(str::to_owned),
    ))
}

/// The socket path of a `unix+http://%2Fpath%2Fto.sock` target: percent-decoded,
/// UTF-8 and absolute.
fn socket_path(authority: &str) -> Result<PathBuf, &'static str> {
    if authority.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("invalid characters in the socket path (percent-encode them)");
    }
    let decoded = percent_encoding::percent_decode_str(authority)
        .decode_utf8()
        .map_err(|_| "the socket path is not UTF-8")?;
    if !decoded.starts_with('/') {
        return Err("the socket path must be absolute (percent-encode it: %2Fpath%2Fto.sock)");
    }
    Ok(PathBuf::from(decoded.as_ref()))
}

fn is_valid_path_and_query(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]|{}^`\"<>\\".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_with_prefix_and_query() {
        let t = Target::parse("http://Example.com:8080/base?t=1").unwrap();
        assert_eq!(t.host(), "Example.com");
        assert_eq!(t.port(), 8080);
        assert_eq!(t.path(), "/base");
        assert_eq!(t.query(), Some("t=1"));
        assert_eq!(t.host_header(), "example.com:8080");
        assert!(!t.is_tls());
    }

    #[test]
    fn default_ports_are_left_out_of_host() {
        assert_eq!(
            Target::parse("https://a.test").unwrap().host_header(),
            "a.test"
        );
        assert_eq!(
            Target::parse("http://a.test:80/").unwrap().host_header(),
            "a.test"
        );
        assert_eq!(
            Target::parse("https://a.test:80/").unwrap().host_header(),
            "a.test:80"
        );
        assert_eq!(Target::parse("wss://a.test").unwrap().port(), 443);
    }

    #[test]
    fn ipv6_hosts_keep_brackets_in_host_only() {
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(t.host(), "::1");
        assert_eq!(t.host_header(), "[::1]:9000");
        assert!(t.authority_matches("[::1]:9000"));
        assert!(!t.authority_matches("[::1]:9001"));
    }

    #[test]
    fn unix_forms_agree() {
        for s in [
            "unix:/tmp/a.sock",
            "unix+http://%2Ftmp%2Fa.sock",
            "http+unix://%2Ftmp%2Fa.sock/",
        ] {
            let t = Target::parse(s).unwrap();
            assert_eq!(t.unix_socket(), Some(Path::new("/tmp/a.sock")), "{s}");
            assert_eq!(t.host_header(), "localhost");
            let uri = t.uri_for("/x").unwrap();
            let (addr, tls) = Address::from_uri(&uri).unwrap();
            assert_eq!(addr, Address::Unix(PathBuf::from("/tmp/a.sock")));
            assert!(!tls);
        }
        let t = Target::parse("unix+http://%2Fs.sock/base?q=1").unwrap();
        assert_eq!((t.path(), t.query()), ("/base", Some("q=1")));
    }

    #[test]
    fn rejects_what_cannot_work() {
        for s in [
            "127.0.0.1:9000",
            "localhost:9000",
            "ftp://a",
            "http://",
            "http://user:pw@host/",
            "http://host:notaport/",
            "http://host:/",
            "unix:relative.sock",
            "unix+http://relative.sock",
            "unix+http://%2Ftmp%2Fa b.sock",
            "file:///etc/passwd",
            "",
        ] {
            assert!(Target::parse(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn tcp_uris_round_trip() {
        let t = Target::parse("https://[::1]:8443/p").unwrap();
        let uri = t.uri_for("/a?b").unwrap();
        let (addr, tls) = Address::from_uri(&uri).unwrap();
        assert_eq!(
            addr,
            Address::Tcp {
                host: "::1".into(),
                port: 8443
            }
        );
        assert!(tls);
    }
}
