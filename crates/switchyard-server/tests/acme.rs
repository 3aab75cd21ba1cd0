//! Automatic HTTPS against Pebble, Let's Encrypt's ACME test server, through the real
//! binary: challenges really validated (Pebble's validation authority connects to the
//! proxy's ports; `pebble-challtestsrv` is its DNS server and answers 127.0.0.1 for every
//! name), TLS-ALPN-01 and HTTP-01 each alone, renewal of short-lived certificates, a
//! restart that serves the stored certificate, and several replicas on one `redis-server`;
//! ACME Renewal Information (RFC 9773), which Debian's Pebble 2.4.0 does not offer,
//! through a small HTTPS front that adds it to Pebble (see `ari_front`).
//!
//! The proxy starts first on port 0; Pebble's configuration is then written with the
//! proxy's ports as its validation ports. Pebble's own HTTPS certificate is made here
//! (rcgen), signed by a CA given to the proxy as `--acme-ca-file`.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

mod ari_front;
mod common;
mod redis_peers;

use std::io::BufRead as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ari_front::{AriFront, ari_identifier};
use common::{IO_TIMEOUT, Proxy, RefusingPort, port_in, request, temp_dir};
use rustls::pki_types::ServerName;

/// A generous bound for an order against Pebble on a loaded machine (it takes well under
/// a second when idle, plus the proxy's first retry if Pebble was not up yet).
const ORDER_WAIT: Duration = Duration::from_secs(60);

// ============================================================================================
// Pebble
// ============================================================================================

/// Pebble's files and address, chosen before the proxy starts (the proxy needs the
/// directory URL and the CA; Pebble needs the proxy's ports).
struct PebbleSetup {
    directory: String,
    listen: u16,
    ca_file: PathBuf,
    dir: PathBuf,
}

/// Pebble and its DNS server, killed on drop.
struct Pebble {
    pebble: Child,
    dns: Child,
    setup: PebbleSetup,
}

impl PebbleSetup {
    fn new() -> Self {
        // One directory per Pebble: the tests of this file run at once in one process.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = temp_dir(&format!("pebble-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let (ca_pem, cert_pem, key_pem) = pebble_https();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), key_pem).unwrap();
        let listen = candidate_port();
        Self {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            listen,
            ca_file,
            dir,
        }
    }

    /// The proxy's ACME flags for `domains` against this Pebble.
    fn flags(&self, domains: &[&str]) -> Vec<String> {
        let mut flags = vec![
            "--acme-directory".to_owned(),
            self.directory.clone(),
            "--acme-ca-file".to_owned(),
            self.ca_file.display().to_string(),
            "--acme-email".to_owned(),
            "admin@switchyard.test".to_owned(),
        ];
        for d in domains {
            flags.push("--acme-domain".to_owned());
            flags.push((*d).to_owned());
        }
        flags
    }

    /// Pebble validating on `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01), issuing
    /// certificates valid for `validity` seconds (Pebble's default: five years).
    fn start(self, http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dns_port = candidate_port();
        let mut dns = Command::new(tool("pebble-challtestsrv"))
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                // Port 0: the management API is not used.
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&mut dns, "Starting challenge servers");
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.listen),
                "managementListenAddress": "",
                "certificate": self.dir.join("cert.pem"),
                "privateKey": self.dir.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(seconds) = validity {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        std::fs::write(self.dir.join("pebble.json"), config.to_string()).unwrap();
        let mut pebble = Command::new(tool("pebble"))
            .arg("-config")
            .arg(self.dir.join("pebble.json"))
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            // Validation at once; no nonce rejected at random; every order validated anew.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&mut pebble, "ACME directory available at: ");
        Pebble {
            pebble,
            dns,
            setup: self,
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.setup.dir);
    }
}

/// A port for Pebble's ACME listener or its DNS server that was free a moment ago. Both
/// take their address from their configuration only, and neither reports the port the
/// system picks for port 0, so the proxy (which needs the directory URL) and Pebble
/// (which needs the DNS server's) cannot be given one otherwise. It is chosen below the
/// kernel's ephemeral range (32768 and up), so no `bind(127.0.0.1:0)` and no outgoing
/// connection takes it meanwhile, and each test process walks its own sequence (seeded
/// by its pid). A port taken anyway makes Pebble exit, and the test fails saying so.
fn candidate_port() -> u16 {
    const BASE: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(BASE + (seed + n) % SPAN).unwrap();
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if tcp && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {BASE}..{}", BASE + SPAN);
}

/// A tool the test cannot run without: its absence fails the test, with the reason.
fn tool(name: &str) -> &str {
    let found = Command::new("which")
        .arg(name)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is not installed (Debian package `pebble`): .ci/run installs it"
    );
    name
}

/// Waits (bounded) for a stdout line of `child` containing `needle`; the rest of its
/// output is drained in the background.
fn wait_for(child: &mut Child, needle: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no line {needle:?} ({e})"));
        if line.contains(needle) {
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return line;
        }
    }
}

/// A CA, and a certificate it signs for localhost/127.0.0.1 with its key (PEM).
fn pebble_https() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchyard test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

// ============================================================================================
// Clients
// ============================================================================================

/// The certificate chain a handshake with `port` for `name` gets, or the handshake error.
fn handshake(port: u16, name: &str) -> Result<Vec<Vec<u8>>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::AnyCert(provider)))
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(conn
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.to_vec())
        .collect())
}

/// The DNS names of a certificate and its issuer's common name.
fn names_and_issuer(der: &[u8]) -> (Vec<String>, String) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let names = cert
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    (names, cert.issuer().to_string())
}

fn metric(port: u16, name: &str) -> f64 {
    let body = request(port, "GET", "/metrics", &[], None).body;
    body.lines()
        .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits for a line containing `needle`, up to `limit` (longer than the helper's own
/// bound, for orders and renewals).
fn wait_long(p: &mut Proxy, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(i) = p.log.iter().position(|l| l.contains(needle)) {
            return p.log.remove(i);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match p.lines.recv_timeout(left) {
            Ok(line) => p.log.push(line),
            Err(e) => panic!("no line {needle:?} ({e}); log: {:#?}", p.log),
        }
    }
}

fn count(p: &Proxy, needle: &str) -> usize {
    p.log.iter().filter(|l| l.contains(needle)).count()
}

/// Starts the proxy with `args` and reads its redirect port when it has one.
fn proxy(args: &[String]) -> (Proxy, Option<u16>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proxy::start(&args);
    let redirect = args
        .contains(&"--redirect-port")
        .then(|| port_in(&p.wait_for_line("Added HTTP to HTTPS redirection from ")));
    (p, redirect)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

// ============================================================================================
// One replica
// ============================================================================================

/// TLS-ALPN-01 alone: while the ACME server is down the HTTPS port is up but fails
/// handshakes, the failures are counted and retried; once Pebble runs it validates
/// through the public port, and the certificate it issues for both names is served, with
/// its expiry in the metrics.
#[test]
fn tls_alpn_01_issues_and_serves_a_certificate() {
    let domains = ["www.switchyard.test", "hub.switchyard.test"];
    let setup = PebbleSetup::new();
    let mut args = setup.flags(&domains);
    args.extend(strings(&[
        "--metrics-port",
        "0",
        "--acme-challenge",
        "tls-alpn-01",
    ]));
    let (mut p, _) = proxy(&args);
    let metrics = p.metrics_port();
    let err = handshake(p.port, domains[0]).unwrap_err();
    assert!(err.contains("AccessDenied"), "{err}");
    wait_long(&mut p, "ACME: order for", ORDER_WAIT);
    assert!(metric(metrics, "switchyard_acme_failures_total") >= 1.0);
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited while the ACME server was down"
    );

    // Nothing listens on Pebble's HTTP-01 port: only TLS-ALPN-01 can succeed.
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, p.port, None);
    let started = Instant::now();
    let issued = wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    eprintln!("issued after {:?} ({issued})", started.elapsed());
    wait_long(&mut p, "ACME: serving the certificate", IO_TIMEOUT);
    let chain = handshake(p.port, domains[1]).unwrap();
    let (mut names, issuer) = names_and_issuer(&chain[0]);
    names.sort_unstable();
    assert_eq!(names, ["hub.switchyard.test", "www.switchyard.test"]);
    assert!(issuer.contains("Pebble"), "{issuer}");
    assert!(chain.len() >= 2, "the chain has the intermediate");
    assert_eq!(
        metric(metrics, "switchyard_acme_certificates_issued_total"),
        1.0
    );
    // Pebble's default lifetime is five years.
    let left = metric(
        metrics,
        "switchyard_tls_certificate_expiry_seconds{listener=\"public\"}",
    );
    assert!(left > 4.0 * 365.0 * 86_400.0, "{left}");
    // The HTTPS port proxies as before.
    assert_eq!(https_status(p.port, domains[0], "/_chp_healthz"), 200);
}

/// HTTP-01 alone, on `--redirect-port`, which still redirects everything else; a restart
/// with `--state-file` serves the stored certificate without ordering again.
#[test]
fn http_01_issues_and_a_restart_serves_the_stored_certificate() {
    let domain = "files.switchyard.test";
    let setup = PebbleSetup::new();
    let state = temp_dir("acme-http01-state").join("routes.json");
    let mut args = setup.flags(&[domain]);
    args.extend(strings(&[
        "--acme-challenge",
        "http-01",
        "--redirect-port",
        "0",
        "--metrics-port",
        "0",
        "--state-file",
    ]));
    args.push(state.display().to_string());
    let (mut p, redirect) = proxy(&args);
    let redirect = redirect.unwrap();
    // A closed port for TLS-ALPN-01: only HTTP-01 can succeed.
    let closed = RefusingPort::bind();
    let _pebble = setup.start(redirect, closed.port, None);
    let started = Instant::now();
    wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    eprintln!("issued after {:?}", started.elapsed());
    let first = handshake(p.port, domain).unwrap();
    assert_eq!(names_and_issuer(&first[0]).0, [domain]);
    let r = request(redirect, "GET", "/hub/", &[("Host", domain)], None);
    assert_eq!(r.status, 301);
    let r = request(
        redirect,
        "GET",
        "/.well-known/acme-challenge/unknown",
        &[("Host", domain)],
        None,
    );
    assert_eq!(r.status, 404);
    let mut p = stop(p);

    let (mut again, _) = proxy(&args);
    wait_long(&mut again, "ACME: serving the certificate", IO_TIMEOUT);
    assert_eq!(handshake(again.port, domain).unwrap(), first);
    let metrics = again.metrics_port();
    assert_eq!(metric(metrics, "switchyard_acme_orders_total"), 0.0);
    assert_eq!(count(&again, "ACME: ordering"), 0);
    let _ = p.child.wait();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

/// Pebble issues 20-second certificates: the proxy renews at half their lifetime
/// (`--acme-renew-at 50`) and serves the new one; open connections are not touched.
#[test]
fn short_lived_certificates_are_renewed() {
    let domain = "renew.switchyard.test";
    let setup = PebbleSetup::new();
    let mut args = setup.flags(&[domain]);
    args.extend(strings(&["--acme-renew-at", "50"]));
    let (mut p, _) = proxy(&args);
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, p.port, Some(20));
    wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    let first = handshake(p.port, domain).unwrap();
    let started = Instant::now();
    let renewed = wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    eprintln!(
        "renewed {:?} after the first ({renewed})",
        started.elapsed()
    );
    let second = handshake(p.port, domain).unwrap();
    assert_ne!(first[0], second[0], "the renewed certificate is served");
    assert_eq!(names_and_issuer(&second[0]).0, [domain]);
}

/// A status over HTTPS (any certificate accepted).
fn https_status(port: u16, name: &str, path: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

/// SIGTERM, and the process back for its exit.
fn stop(mut p: Proxy) -> Proxy {
    p.send_signal("TERM");
    assert!(p.wait_exit(IO_TIMEOUT).is_some(), "did not stop");
    p
}

// ============================================================================================
// Several replicas on one Redis
// ============================================================================================

/// Two replicas on one `redis-server`; Pebble validates through the first one's ports
/// only. Exactly one order is made; whichever replica makes it, the challenge reaches
/// the other through Redis, and both serve the certificate.
#[test]
fn two_replicas_make_one_order_and_both_serve_it() {
    let redis = redis_peers::Redis::start();
    let domain = "shared.switchyard.test";
    let setup = PebbleSetup::new();
    let mut args = setup.flags(&[domain]);
    args.extend(strings(&[
        "--storage-backend",
        &redis.url(),
        "--metrics-port",
        "0",
    ]));
    let (mut a, _) = proxy(&args);
    let (mut b, _) = proxy(&args);
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, a.port, None);
    let started = Instant::now();
    wait_long(&mut a, "ACME: serving the certificate", ORDER_WAIT);
    wait_long(&mut b, "ACME: serving the certificate", ORDER_WAIT);
    eprintln!("both serving after {:?}", started.elapsed());
    let served = handshake(a.port, domain).unwrap();
    assert_eq!(handshake(b.port, domain).unwrap(), served);
    let (ma, mb) = (a.metrics_port(), b.metrics_port());
    let issued = metric(ma, "switchyard_acme_certificates_issued_total")
        + metric(mb, "switchyard_acme_certificates_issued_total");
    assert_eq!(issued, 1.0);
    // Orders tried while Pebble was not up yet failed; of the others, exactly one was
    // made, and it succeeded.
    let sum = |name: &str| metric(ma, name) + metric(mb, name);
    assert_eq!(
        sum("switchyard_acme_orders_total") - sum("switchyard_acme_failures_total"),
        1.0
    );
}

/// The replica that holds the order lock is killed mid-order (its ACME server never
/// answers); the other one orders once the lock expires, and a third started afterwards
/// serves the stored certificate without ordering.
#[test]
fn the_other_replica_completes_when_the_ordering_one_dies() {
    let redis = redis_peers::Redis::start();
    let domain = "survivor.switchyard.test";
    // An "ACME server" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "https://127.0.0.1:{}/dir",
        silent.local_addr().unwrap().port()
    );
    let setup = PebbleSetup::new();
    let mut stuck_args = setup.flags(&[domain]);
    let at = stuck_args
        .iter()
        .position(|a| a == "--acme-directory")
        .unwrap();
    stuck_args[at + 1] = silent_url;
    stuck_args.extend(strings(&["--storage-backend", &redis.url()]));
    let (mut stuck, _) = proxy(&stuck_args);
    wait_long(&mut stuck, "ACME: ordering a certificate", ORDER_WAIT);

    let mut args = setup.flags(&[domain]);
    args.extend(strings(&["--storage-backend", &redis.url()]));
    let (mut other, _) = proxy(&args);
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, other.port, None);
    // While the stuck replica lives it keeps the lock.
    stuck.child.kill().unwrap();
    let started = Instant::now();
    wait_long(&mut other, "ACME: certificate issued", ORDER_WAIT);
    eprintln!(
        "the other replica issued {:?} after the kill",
        started.elapsed()
    );
    let served = handshake(other.port, domain).unwrap();

    let (mut third, _) = proxy(&args);
    wait_long(&mut third, "ACME: serving the certificate", IO_TIMEOUT);
    assert_eq!(handshake(third.port, domain).unwrap(), served);
    assert_eq!(count(&third, "ACME: ordering"), 0);
    drop(silent);
}

/// The challenge is answered by a replica that did not order: Pebble validates through
/// replica A only, and A cannot reach the ACME server (its directory URL is a closed
/// port), so the order is B's; A answers B's TLS-ALPN-01 challenge from Redis, then
/// serves the certificate B stored.
#[test]
fn a_replica_answers_the_challenge_of_another_one() {
    let redis = redis_peers::Redis::start();
    let domain = "relay.switchyard.test";
    let setup = PebbleSetup::new();
    let mut unreachable = setup.flags(&[domain]);
    let at = unreachable
        .iter()
        .position(|a| a == "--acme-directory")
        .unwrap();
    let refusing = RefusingPort::bind();
    unreachable[at + 1] = format!("https://127.0.0.1:{}/dir", refusing.port);
    unreachable.extend(strings(&[
        "--storage-backend",
        &redis.url(),
        "--metrics-port",
        "0",
    ]));
    let (mut a, _) = proxy(&unreachable);
    let mut args = setup.flags(&[domain]);
    args.extend(strings(&[
        "--storage-backend",
        &redis.url(),
        "--metrics-port",
        "0",
    ]));
    let (mut b, _) = proxy(&args);
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, a.port, None);
    wait_long(&mut b, "ACME: certificate issued", ORDER_WAIT);
    wait_long(&mut a, "ACME: serving the certificate", ORDER_WAIT);
    let served = handshake(b.port, domain).unwrap();
    assert_eq!(handshake(a.port, domain).unwrap(), served);
    let (ma, mb) = (a.metrics_port(), b.metrics_port());
    assert_eq!(metric(ma, "switchyard_acme_certificates_issued_total"), 0.0);
    assert_eq!(metric(mb, "switchyard_acme_certificates_issued_total"), 1.0);
}

/// A challenge that cannot validate (nothing answers on the port Pebble checks) fails
/// the order with Pebble's problem document in the log line, is counted, and is tried
/// again; nothing is served meanwhile, and the proxy keeps running.
#[test]
fn a_failed_validation_is_logged_with_the_problem_document() {
    let domain = "nowhere.switchyard.test";
    let setup = PebbleSetup::new();
    let mut args = setup.flags(&[domain]);
    args.extend(strings(&["--metrics-port", "0"]));
    let (mut p, _) = proxy(&args);
    let metrics = p.metrics_port();
    let (closed, also_closed) = (RefusingPort::bind(), RefusingPort::bind());
    let _pebble = setup.start(closed.port, also_closed.port, None);
    let line = wait_long(&mut p, "failed: waiting for validation: ", ORDER_WAIT);
    assert!(line.contains("urn:ietf:params:acme:error:"), "{line}");
    assert!(line.contains(domain), "{line}");
    assert!(line.contains("] error: "), "{line}");
    wait_long(&mut p, "ACME: next attempt in", IO_TIMEOUT);
    assert!(metric(metrics, "switchyard_acme_failures_total") >= 1.0);
    assert_eq!(
        metric(metrics, "switchyard_acme_certificates_issued_total"),
        0.0
    );
    assert!(handshake(p.port, domain).is_err());
    assert!(p.child.try_wait().unwrap().is_none());
}

// ============================================================================================
// ACME Renewal Information (RFC 9773) through a front
// ============================================================================================

/// The proxy for `domain`, its directory the front's; ARI asked again after 1 s at the
/// least, and renewal at 99% of the lifetime.
fn ari_proxy(setup: &PebbleSetup, front: &AriFront, domain: &str, extra: &[&str]) -> Proxy {
    let mut args = strings(&[
        "--ip",
        "127.0.0.1",
        "--port",
        "0",
        "--api-ip",
        "127.0.0.1",
        "--api-port",
        "0",
        "--acme-renew-at",
        "99",
    ]);
    args.extend(setup.flags(&[domain]));
    let at = args.iter().position(|a| a == "--acme-directory").unwrap();
    args[at + 1] = front.directory();
    args.extend(strings(extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = common::command(&args, Some(common::TOKEN));
    // The front's `Retry-After: 1` is taken as it is (the binary's floor is a minute).
    cmd.env("SWITCHYARD_ACME_ARI_MIN_RETRY", "1");
    Proxy::from_child(cmd.spawn().unwrap())
}

/// With ARI offered (through the front), the proxy asks for the served certificate's
/// window; while it is a month ahead nothing happens (a five-year certificate, renewed
/// at 99% of its lifetime otherwise); once the window has started, the proxy orders at
/// once, naming the certificate it replaces, serves the new one, and asks ARI about it.
#[test]
fn renewal_information_starts_a_renewal() {
    let domain = "ari.switchyard.test";
    let setup = PebbleSetup::new();
    let front = AriFront::start(&setup.dir, &setup.ca_file, setup.listen);
    let mut p = ari_proxy(&setup, &front, domain, &[]);
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, p.port, None);
    wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    let first = handshake(p.port, domain).unwrap();
    let first_id = ari_identifier(&first[0]);
    let window = wait_long(
        &mut p,
        &format!("ACME: renewal information for {first_id}: window"),
        IO_TIMEOUT,
    );
    assert!(front.queried().contains(&first_id), "{:?}", front.queried());
    assert!(front.replaces().is_empty());
    eprintln!("{window}");
    // The orders tried before Pebble was up are not the renewal's.
    p.log.clear();

    front.renew_now(&first_id);
    let started = Instant::now();
    let ordering = wait_long(&mut p, "ACME: ordering a certificate", IO_TIMEOUT);
    assert!(
        ordering.contains(&format!(
            "renewal information says so; replacing {first_id}"
        )),
        "{ordering}"
    );
    let renewed = wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    eprintln!(
        "renewed {:?} after the window started ({renewed})",
        started.elapsed()
    );
    assert_eq!(front.replaces(), std::slice::from_ref(&first_id));
    let second = handshake(p.port, domain).unwrap();
    let second_id = ari_identifier(&second[0]);
    assert_ne!(second_id, first_id, "a new serial is served");
    assert_eq!(names_and_issuer(&second[0]).0, [domain]);
    // The new certificate's window is a month ahead: no third order.
    wait_long(
        &mut p,
        &format!("ACME: renewal information for {second_id}: window"),
        IO_TIMEOUT,
    );
    assert_eq!(count(&p, "ACME: ordering"), 0, "{:#?}", p.log);
}

/// An ARI query that fails (the server's problem document) is logged as a warning and
/// leaves the `--acme-renew-at` point alone: no order, no failure counted, the
/// certificate still served, the proxy running.
#[test]
fn a_failed_renewal_information_query_is_not_a_failed_order() {
    let domain = "ari-down.switchyard.test";
    let setup = PebbleSetup::new();
    let front = AriFront::start(&setup.dir, &setup.ca_file, setup.listen);
    front.fail_queries();
    let mut p = ari_proxy(&setup, &front, domain, &["--metrics-port", "0"]);
    let metrics = p.metrics_port();
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, p.port, None);
    wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    let served = handshake(p.port, domain).unwrap();
    let id = ari_identifier(&served[0]);
    let failures = metric(metrics, "switchyard_acme_failures_total");
    let orders = metric(metrics, "switchyard_acme_orders_total");
    let line = wait_long(
        &mut p,
        &format!("ACME: renewal information for {id}: "),
        IO_TIMEOUT,
    );
    assert!(line.contains(" warn: "), "{line}");
    assert!(line.contains("serverInternal"), "{line}");
    assert!(
        line.contains("renewing at --acme-renew-at meanwhile"),
        "{line}"
    );
    assert_eq!(front.queried(), [id]);
    assert_eq!(metric(metrics, "switchyard_acme_failures_total"), failures);
    assert_eq!(metric(metrics, "switchyard_acme_orders_total"), orders);
    assert_eq!(handshake(p.port, domain).unwrap(), served);
    assert!(p.child.try_wait().unwrap().is_none());
}

/// A server that refuses the new order because of its `replaces` field (RFC 9773 §5
/// lets it, for a certificate already replaced) does not stop the renewal: the proxy
/// logs it and orders again without the field.
#[test]
fn a_refused_replaces_field_is_left_out() {
    let domain = "ari-refused.switchyard.test";
    let setup = PebbleSetup::new();
    let front = AriFront::start(&setup.dir, &setup.ca_file, setup.listen);
    front.refuse_replaces();
    let mut p = ari_proxy(&setup, &front, domain, &[]);
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, p.port, None);
    wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    let first = handshake(p.port, domain).unwrap();
    let first_id = ari_identifier(&first[0]);
    wait_long(
        &mut p,
        &format!("ACME: renewal information for {first_id}: window"),
        IO_TIMEOUT,
    );
    front.renew_now(&first_id);
    let line = wait_long(
        &mut p,
        &format!("ACME: new order replacing {first_id}: "),
        IO_TIMEOUT,
    );
    assert!(line.contains("alreadyReplaced"), "{line}");
    assert!(line.contains("ordering without it"), "{line}");
    wait_long(&mut p, "ACME: certificate issued", ORDER_WAIT);
    assert_eq!(front.refused(), 1);
    assert!(front.replaces().is_empty());
    let second = handshake(p.port, domain).unwrap();
    assert_ne!(
        ari_identifier(&second[0]),
        first_id,
        "a new serial is served"
    );
}

/// Two replicas on one `redis-server`, both told by ARI that the shared certificate's
/// window has started: one new order in all (the other replica finds the new
/// certificate under the lock), and both serve it.
#[test]
fn two_replicas_renew_once_on_renewal_information() {
    let redis = redis_peers::Redis::start();
    let domain = "ari-shared.switchyard.test";
    let setup = PebbleSetup::new();
    let front = AriFront::start(&setup.dir, &setup.ca_file, setup.listen);
    let extra = ["--storage-backend", &redis.url(), "--metrics-port", "0"];
    let mut a = ari_proxy(&setup, &front, domain, &extra);
    let mut b = ari_proxy(&setup, &front, domain, &extra);
    let closed = RefusingPort::bind();
    let _pebble = setup.start(closed.port, a.port, None);
    wait_long(&mut a, "ACME: serving the certificate", ORDER_WAIT);
    wait_long(&mut b, "ACME: serving the certificate", ORDER_WAIT);
    let first = handshake(a.port, domain).unwrap();
    assert_eq!(handshake(b.port, domain).unwrap(), first);
    let first_id = ari_identifier(&first[0]);
    for p in [&mut a, &mut b] {
        wait_long(
            p,
            &format!("ACME: renewal information for {first_id}: window"),
            IO_TIMEOUT,
        );
    }
    let (ma, mb) = (a.metrics_port(), b.metrics_port());
    let issued = |name: &str| metric(ma, name) + metric(mb, name);
    assert_eq!(issued("switchyard_acme_certificates_issued_total"), 1.0);
    // Only the lines that follow the window's start are looked at from here on.
    a.log.clear();
    b.log.clear();

    front.renew_now(&first_id);
    let started = Instant::now();
    // Whichever replica orders, both serve the new certificate and ask ARI about it.
    let mut second_ids = Vec::new();
    for p in [&mut a, &mut b] {
        let line = wait_long(p, "ACME: serving the certificate", ORDER_WAIT);
        eprintln!("{:?} after the window started: {line}", started.elapsed());
        let served = handshake(p.port, domain).unwrap();
        second_ids.push(ari_identifier(&served[0]));
    }
    assert_ne!(second_ids[0], first_id);
    assert_eq!(
        second_ids[0], second_ids[1],
        "both serve the same new certificate"
    );
    for p in [&mut a, &mut b] {
        wait_long(
            p,
            &format!("ACME: renewal information for {}: window", second_ids[0]),
            IO_TIMEOUT,
        );
    }
    assert_eq!(issued("switchyard_acme_certificates_issued_total"), 2.0);
    assert_eq!(front.replaces(), std::slice::from_ref(&first_id));
}
