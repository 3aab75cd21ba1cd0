//! The request and response header passes: pure functions over heads.

use std::cell::RefCell;
use std::net::IpAddr;
use std::thread::LocalKey;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version, request};

use crate::options::{Options, XfwdMode};
use crate::target::{Protocol, Target};

/// RFC 9110 §7.6.1 connection-specific fields, plus the proxy credentials
/// (RFC 9110 §11.7: meant for this proxy, not the next hop). `upgrade` is
/// handled apart, since it survives on a WebSocket tunnel. The order is the
/// one `strip_hop_by_hop` numbers them in.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("http2-settings"),
];

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the request pass needs to know about the client's request beyond its
/// head: its connection, whether it is an upgrade, and its body's length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Downstream {
    pub(crate) remote_ip: Option<IpAddr>,
    pub(crate) tls: bool,
    pub(crate) upgrade: bool,
    /// The body's exact length, `Some(0)` for none; `None` when unknown.
    pub(crate) body_len: Option<u64>,
}

/// What one look at a head's names found, before anything is removed.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// Which of [`HOP_BY_HOP`] are present, in its order.
    hop: [bool; HOP_BY_HOP.len()],
    te: bool,
    upgrade: bool,
    host: bool,
    content_length: bool,
}

impl Seen {
    /// One pass over the names, no hashing: most heads carry none of these
    /// fields, or `Connection` alone, so only those present are looked up later.
    fn scan(headers: &HeaderMap) -> Self {
        let mut seen = Self::default();
        for name in headers.keys() {
            // A string match: a switch on the length, then one comparison.
            match name.as_str() {
                "connection" => seen.hop[0] = true,
                "keep-alive" => seen.hop[1] = true,
                "proxy-connection" => seen.hop[2] = true,
                "proxy-authenticate" => seen.hop[3] = true,
                "proxy-authorization" => seen.hop[4] = true,
                "transfer-encoding" => seen.hop[5] = true,
                "http2-settings" => seen.hop[6] = true,
                "te" => seen.te = true,
                "upgrade" => seen.upgrade = true,
                "host" => seen.host = true,
                "content-length" => seen.content_length = true,
                _ => {}
            }
        }
        seen
    }

    fn transfer_encoding(&self) -> bool {
        self.hop[5]
    }
}

/// Removes the hop-by-hop fields and every field the `Connection` header
/// names. `Host` is never removed, whatever `Connection` lists.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    strip_seen(headers, Seen::scan(headers), keep_upgrade);
}

fn strip_seen(headers: &mut HeaderMap, seen: Seen, keep_upgrade: bool) {
    if seen.hop[0] {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| n != header::HOST && !(keep_upgrade && n == header::UPGRADE))
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(seen.hop).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    // `TE: trailers` is how gRPC says it understands trailers; any other TE
    // value is for this hop only.
    if seen.te
        && let Some(v) = headers.get(header::TE)
        && !v.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if seen.upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// True when `Connection` lists `upgrade` and an `Upgrade` header is present.
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// True for a WebSocket handshake: GET, `Connection: upgrade`, `Upgrade: websocket`.
pub(crate) fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && wants_upgrade(headers)
        && headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The request pass: everything between the client's head and the head sent
/// upstream, in http-proxy-3's order (framing, X-Forwarded-*, Host, auth,
/// extra headers), with hop-by-hop fields stripped first. Only the head's
/// fields change: its method, version and URI (still the client's) are read.
pub(crate) fn request_headers(
    parts: &mut request::Parts,
    target: &Target,
    opts: &Options,
    down: Downstream,
) {
    let request::Parts {
        method,
        version,
        uri,
        headers,
        ..
    } = parts;
    let seen = Seen::scan(headers);
    strip_seen(headers, seen, down.upgrade);
    let mut has_host = seen.host;
    // HTTP/2 clients name the host in `:authority` (RFC 9113 §8.3.1); an
    // HTTP/1 upstream needs it as `Host`.
    if *version == Version::HTTP_2
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
        has_host = true;
    }
    let h2_upstream = target.protocol() == Protocol::Http2;
    frame_request(headers, method, down.body_len, seen, h2_upstream);
    if opts.xfwd {
        forwarded_headers(headers, down, opts.xfwd_mode);
    }
    if opts.change_origin || !has_host {
        headers.insert(header::HOST, target.host_header().clone());
    }
    if let Some(auth) = &opts.auth {
        headers.insert(header::AUTHORIZATION, auth.header().clone());
    }
    for (name, value) in &opts.headers {
        headers.insert(name, value.clone());
    }
}

/// Sets the body framing from what the body really is, never from what the
/// client claimed: a body of known length gets `Content-Length`, one of
/// unknown length is chunked by the client (we never write
/// `Content-Length: 0` on a streamed body: CVE-2026-29057).
fn frame_request(
    headers: &mut HeaderMap,
    method: &Method,
    body_len: Option<u64>,
    seen: Seen,
    h2_upstream: bool,
) {
    // `Transfer-Encoding` is gone already (hop-by-hop); `Content-Length` is
    // replaced or removed here.
    let clear_length = |headers: &mut HeaderMap| {
        if seen.content_length {
            headers.remove(header::CONTENT_LENGTH);
        }
    };
    match body_len {
        // http-proxy-3 sends `Content-Length: 0` on DELETE and OPTIONS
        // without a body, for servers that wait for one; only when the
        // client sent no framing at all: http-proxy-3 also sets it on a
        // chunked DELETE and so smuggles the body (CVE-2026-29057).
        Some(0)
            if seen.content_length
                || seen.transfer_encoding()
                || method == Method::DELETE
                || method == Method::OPTIONS =>
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        Some(0) => clear_length(headers),
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None if h2_upstream => clear_length(headers),
        None => {
            // Unknown length: HTTP/1 upstreams get chunked framing, set here
            // so that hyper does not assume "no body" for a GET.
            clear_length(headers);
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
}

/// `X-Forwarded-For`, `-Port`, `-Proto` and `-Host` (http-proxy-3's XHeaders
/// pass, with the port read correctly from an IPv6 `Host`).
fn forwarded_headers(headers: &mut HeaderMap, down: Downstream, mode: XfwdMode) {
    let host = headers.get(header::HOST).cloned();
    let port = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .and_then(host_port)
        .unwrap_or(if down.tls { 443 } else { 80 });
    let proto = match (down.upgrade, down.tls) {
        (false, false) => "http",
        (false, true) => "https",
        (true, false) => "ws",
        (true, true) => "wss",
    };
    if let Some(ip) = down.remote_ip {
        add_forwarded(headers, &X_FORWARDED_FOR, ip_value(ip), mode);
    }
    add_forwarded(headers, &X_FORWARDED_PORT, port_value(port), mode);
    add_forwarded(
        headers,
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(proto),
        mode,
    );
    // http-proxy-3 sets X-Forwarded-Host only on plain requests, only if absent.
    if !down.upgrade
        && let Some(host) = host
    {
        match headers.entry(&X_FORWARDED_HOST) {
            header::Entry::Vacant(vacant) => {
                vacant.insert(host);
            }
            header::Entry::Occupied(mut present) if mode == XfwdMode::Replace => {
                present.insert(host);
            }
            header::Entry::Occupied(_) => {}
        }
    }
}

type Last<K> = RefCell<Option<(K, HeaderValue)>>;

/// The value `make` gives for `key`, the last one made on this thread kept and
/// shared: a header value of our own costs an allocation, and consecutive
/// requests usually carry the same port and often come from the same address
/// (a load balancer, the Hub). A miss costs one comparison.
fn remembered<K: Copy + PartialEq>(
    last: &'static LocalKey<Last<K>>,
    key: K,
    make: impl FnOnce(K) -> HeaderValue,
) -> HeaderValue {
    last.with_borrow_mut(|last| match last {
        Some((k, value)) if *k == key => value.clone(),
        _ => {
            let value = make(key);
            *last = Some((key, value.clone()));
            value
        }
    })
}

/// A port as an `X-Forwarded-Port` value.
fn port_value(port: u16) -> HeaderValue {
    thread_local! {
        static LAST_PORT: Last<u16> = const { RefCell::new(None) };
    }
    match port {
        80 => HeaderValue::from_static("80"),
        443 => HeaderValue::from_static("443"),
        _ => remembered(&LAST_PORT, port, HeaderValue::from),
    }
}

fn add_forwarded(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue, mode: XfwdMode) {
    let mut entry = match headers.entry(name) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(value);
            return;
        }
        header::Entry::Occupied(entry) => entry,
    };
    let existing = entry
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let new = match mode {
        XfwdMode::Append if !existing.is_empty() => {
            let Ok(value) = value.to_str() else {
                return;
            };
            match HeaderValue::from_str(&format!("{existing},{value}")) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        XfwdMode::SetIfAbsent if !existing.is_empty() => return,
        _ => value,
    };
    entry.insert(new);
}

/// A client address as an `X-Forwarded-For` entry.
fn ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST_IP: Last<IpAddr> = const { RefCell::new(None) };
    }
    remembered(&LAST_IP, ip, write_ip)
}

/// IPv4 (and IPv4-mapped IPv6) written out digit by digit, as this runs on
/// every request whose address is not the previous one's.
fn write_ip(ip: IpAddr) -> HeaderValue {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[len] = b'0' + d;
                    len += 1;
                }
            }
            HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static(""))
        }
        v6 => {
            HeaderValue::from_str(&v6.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
        }
    }
}

/// The port of a `Host` value: `h:8080`, `[::1]:8080`; `None` when absent.
pub(crate) fn host_port(host: &str) -> Option<u16> {
    let port = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']')?.1.strip_prefix(':')?
    } else {
        // A byte search: `rsplit_once` on a `char` is a general (and slow) searcher.
        &host[host.bytes().rposition(|b| b == b':')? + 1..]
    };
    port.parse().ok()
}

/// A copy of a request head without its extensions, to send again.
pub(crate) fn clone_head(parts: &request::Parts) -> request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// The response pass for hop-by-hop fields. `Upgrade` survives on a 101.
pub(crate) fn response_headers(headers: &mut HeaderMap, switching: bool) {
    strip_hop_by_hop(headers, switching);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        raw: &[(&str, &str)],
        method: Method,
        body: Option<u64>,
        f: impl FnOnce(&mut Options),
        down: Downstream,
    ) -> HeaderMap {
        let mut req = Request::builder().method(method);
        for (k, v) in raw {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        let t = Target::parse("http://upstream.test:8080/").unwrap();
        let mut o = Options::default();
        f(&mut o);
        let down = Downstream {
            body_len: body,
            ..down
        };
        request_headers(&mut parts, &t, &o, down);
        parts.headers
    }

    #[test]
    fn each_hop_by_hop_field_is_stripped() {
        for name in HOP_BY_HOP.iter().chain([&header::TE, &header::UPGRADE]) {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h.len(), 1, "{name}");
            assert!(h.contains_key("x-keep"), "{name}");
        }
    }

    #[test]
    fn client_addresses_are_written_out() {
        for (ip, want) in [
            ("0.0.0.0", "0.0.0.0"),
            ("10.20.3.255", "10.20.3.255"),
            ("127.0.0.1", "127.0.0.1"),
            ("192.168.100.9", "192.168.100.9"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("::1", "::1"),
            ("2001:db8::7", "2001:db8::7"),
        ] {
            assert_eq!(ip_value(ip.parse().unwrap()), want, "{ip}");
        }
    }

    /// The values kept from one request to the next are the next one's only when
    /// its port and address are the same.
    #[test]
    fn remembered_values_follow_each_request() {
        for (host, ip, port) in [
            ("a.test:8080", "10.0.0.1", "8080"),
            ("a.test:8080", "10.0.0.1", "8080"),
            ("b.test:9090", "10.0.0.2", "9090"),
            ("c.test", "10.0.0.2", "80"),
            ("a.test:8080", "10.0.0.1", "8080"),
            ("[::1]:9090", "::1", "9090"),
        ] {
            let down = Downstream {
                remote_ip: Some(ip.parse().unwrap()),
                ..PLAIN
            };
            let h = run(
                &[("host", host)],
                Method::GET,
                Some(0),
                |o| o.xfwd = true,
                down,
            );
            assert_eq!(h["x-forwarded-for"], ip, "{host} from {ip}");
            assert_eq!(h["x-forwarded-port"], port, "{host} from {ip}");
            assert_eq!(h["x-forwarded-host"], host);
        }
    }

    const PLAIN: Downstream = Downstream {
        remote_ip: Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        tls: false,
        upgrade: false,
        body_len: None,
    };

    /// RFC 9110 §7.6.1: hop-by-hop fields and Connection-listed fields are
    /// stripped before anything else; `TE: trailers` stays.
    #[test]
    fn strips_hop_by_hop_and_listed_fields() {
        let h = run(
            &[
                ("host", "front"),
                ("connection", "keep-alive, X-Drop, host"),
                ("x-drop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic x"),
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("x-keep", "1"),
            ],
            Method::GET,
            Some(0),
            |_| (),
            PLAIN,
        );
        for gone in [
            "connection",
            "x-drop",
            "keep-alive",
            "proxy-authorization",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-keep"], "1");
        assert_eq!(h["host"], "front");
    }

    /// CVE-2026-29057: a chunked DELETE is forwarded chunked, never with CL 0.
    #[test]
    fn chunked_delete_stays_chunked() {
        let h = run(
            &[("transfer-encoding", "chunked")],
            Method::DELETE,
            None,
            |_| (),
            PLAIN,
        );
        assert!(!h.contains_key("content-length"));
        assert_eq!(h["transfer-encoding"], "chunked");
    }

    /// `Content-Length: 0` only without Content-Length and Transfer-Encoding.
    #[test]
    fn bodiless_delete_gets_content_length_zero() {
        let h = run(&[], Method::DELETE, Some(0), |_| (), PLAIN);
        assert_eq!(h["content-length"], "0");
        let h = run(&[], Method::GET, Some(0), |_| (), PLAIN);
        assert!(!h.contains_key("content-length"));
    }

    /// http-proxy-3's `X-Forwarded-*` (appended with `,`), with the port of
    /// an IPv6 `Host` parsed properly (http-proxy-3 reads `[::1]:8080` as 1).
    #[test]
    fn forwarded_headers_append_and_parse_ipv6_ports() {
        let h = run(
            &[("host", "[::1]:8080"), ("x-forwarded-for", "1.2.3.4")],
            Method::GET,
            Some(0),
            |o| o.xfwd = true,
            PLAIN,
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4,127.0.0.1");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "[::1]:8080");
    }

    #[test]
    fn forwarded_modes() {
        let raw = [("host", "a"), ("x-forwarded-for", "9.9.9.9")];
        let h = run(
            &raw,
            Method::GET,
            Some(0),
            |o| {
                o.xfwd = true;
                o.xfwd_mode = XfwdMode::SetIfAbsent;
            },
            PLAIN,
        );
        assert_eq!(h["x-forwarded-for"], "9.9.9.9");
        let h = run(
            &raw,
            Method::GET,
            Some(0),
            |o| {
                o.xfwd = true;
                o.xfwd_mode = XfwdMode::Replace;
            },
            PLAIN,
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }

    /// WebSocket upgrades get ws/wss and no X-Forwarded-Host.
    #[test]
    fn upgrade_forwarded_proto() {
        let h = run(
            &[
                ("host", "a"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ],
            Method::GET,
            Some(0),
            |o| o.xfwd = true,
            Downstream {
                tls: true,
                upgrade: true,
                ..PLAIN
            },
        );
        assert_eq!(h["x-forwarded-proto"], "wss");
        assert_eq!(h["x-forwarded-port"], "443");
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    /// change_origin, auth and extra headers, in http-proxy-3's order (a
    /// configured `Authorization` header wins over `auth`).
    #[test]
    fn host_auth_and_extra_headers() {
        let h = run(
            &[("host", "front"), ("authorization", "Bearer client")],
            Method::GET,
            Some(0),
            |o| {
                o.change_origin = true;
                o.auth = Some(crate::options::BasicAuth::parse("u:p").unwrap());
            },
            PLAIN,
        );
        assert_eq!(h["host"], "upstream.test:8080");
        assert_eq!(h["authorization"], "Basic dTpw");
        let h = run(
            &[],
            Method::GET,
            Some(0),
            |o| {
                o.auth = Some(crate::options::BasicAuth::parse("u:p").unwrap());
                o.headers
                    .insert("authorization", "Token mine".parse().unwrap());
            },
            PLAIN,
        );
        assert_eq!(h["authorization"], "Token mine");
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("a:8080"), Some(8080));
        assert_eq!(host_port("[::1]:8080"), Some(8080));
        assert_eq!(host_port("[::1]"), None);
        assert_eq!(host_port("a"), None);
        assert_eq!(host_port("a:x"), None);
    }
}
