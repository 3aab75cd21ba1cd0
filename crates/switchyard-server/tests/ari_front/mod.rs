//! An HTTPS front that adds ACME Renewal Information (RFC 9773) to a Pebble without it
//! (Debian's 2.4.0), for the ACME tests: Pebble does everything else, unchanged.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support code"
)]

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

/// What the ARI front says and has seen.
#[derive(Default)]
struct FrontState {
    /// The certificate identifier whose window has started ("renew now").
    renew_now: Option<String>,
    /// The identifiers asked for, in order.
    queried: Vec<String>,
    /// The `replaces` fields of the new orders.
    replaces: Vec<String>,
    /// Answer every query with a problem document (503).
    failing: bool,
    /// Refuse a new order with `replaces` (409 `alreadyReplaced`), counting them.
    refuse_replaces: bool,
    refused: usize,
}

/// An HTTPS front for a Pebble without ARI (Debian's 2.4.0): it forwards every request to
/// Pebble unchanged (the `Host` header too, so Pebble's URLs name the front), except
/// that it adds `renewalInfo` to the directory, answers `GET /renewal-info/<id>` itself
/// (a window a month ahead, or one that has started for the identifier told to renew
/// now; `Retry-After: 1`), and reflects a new order's `replaces` field in Pebble's answer,
/// as RFC 9773 §5 asks of the server.
pub struct AriFront {
    port: u16,
    state: Arc<std::sync::Mutex<FrontState>>,
    _runtime: tokio::runtime::Runtime,
}

impl AriFront {
    /// A front for the Pebble on `pebble_port`, with Pebble's own certificate and key
    /// (`cert.pem` and `key.pem` in `dir`; the proxy trusts them through
    /// `--acme-ca-file`), reaching Pebble with `ca_file` as its trust.
    pub fn start(dir: &Path, ca_file: &Path, pebble_port: u16) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let chain = CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(ca_file).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(std::sync::Mutex::new(FrontState::default()));
        let front = Front {
            port,
            pebble: pebble_port,
            client: tokio_rustls::TlsConnector::from(Arc::new(client)),
            state: state.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, front) = (acceptor.clone(), front.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let front = front.clone();
                        async move { Ok::<_, std::convert::Infallible>(front.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            state,
            _runtime: runtime,
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    pub fn refuse_replaces(&self) {
        self.state.lock().unwrap().refuse_replaces = true;
    }

    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    pub fn fail_queries(&self) {
        self.state.lock().unwrap().failing = true;
    }

    pub fn renew_now(&self, id: &str) {
        self.state.lock().unwrap().renew_now = Some(id.to_owned());
    }

    pub fn queried(&self) -> Vec<String> {
        self.state.lock().unwrap().queried.clone()
    }

    pub fn replaces(&self) -> Vec<String> {
        self.state.lock().unwrap().replaces.clone()
    }
}

/// The front's request handler.
#[derive(Clone)]
struct Front {
    port: u16,
    pebble: u16,
    client: tokio_rustls::TlsConnector,
    state: Arc<std::sync::Mutex<FrontState>>,
}

type FrontResponse = http::Response<http_body_util::Full<bytes::Bytes>>;

impl Front {
    async fn answer(&self, req: http::Request<hyper::body::Incoming>) -> FrontResponse {
        use http_body_util::BodyExt as _;
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        if let Some(id) = parts.uri.path().strip_prefix("/renewal-info/") {
            return self.renewal_info(id);
        }
        let replaces = (parts.method == http::Method::POST)
            .then(|| jws_payload(&body))
            .flatten()
            .and_then(|p| {
                p.get("replaces")
                    .and_then(|r| r.as_str())
                    .map(str::to_owned)
            });
        if replaces.is_some() {
            let mut state = self.state.lock().unwrap();
            if state.refuse_replaces {
                state.refused += 1;
                let problem = serde_json::json!({
                    "type": "urn:ietf:params:acme:error:alreadyReplaced",
                    "detail": "the ARI front refuses `replaces`",
                    "status": 409,
                });
                return http::Response::builder()
                    .status(http::StatusCode::CONFLICT)
                    .header(http::header::CONTENT_TYPE, "application/problem+json")
                    .body(http_body_util::Full::new(problem.to_string().into()))
                    .unwrap();
            }
        }
        let is_directory = parts.method == http::Method::GET && parts.uri.path() == "/dir";
        let (mut head, mut answer) = self.forward(parts, body).await;
        // Pebble not up yet (502), or a problem document: passed on as it is.
        if is_directory
            && head.status == http::StatusCode::OK
            && let Ok(mut dir) = serde_json::from_slice::<serde_json::Value>(&answer)
        {
            dir["renewalInfo"] = format!("https://127.0.0.1:{}/renewal-info", self.port).into();
            answer = dir.to_string().into();
        }
        if let Some(id) = replaces
            && head.status == http::StatusCode::CREATED
            && let Ok(mut order) = serde_json::from_slice::<serde_json::Value>(&answer)
        {
            order["replaces"] = id.clone().into();
            answer = order.to_string().into();
            self.state.lock().unwrap().replaces.push(id);
        }
        head.headers.remove(http::header::CONTENT_LENGTH);
        head.headers.remove(http::header::TRANSFER_ENCODING);
        http::Response::from_parts(head, http_body_util::Full::new(answer))
    }

    fn renewal_info(&self, id: &str) -> FrontResponse {
        let now = jiff::Timestamp::now();
        let hours = |h: i64| jiff::SignedDuration::from_hours(h);
        let mut state = self.state.lock().unwrap();
        state.queried.push(id.to_owned());
        if state.failing {
            let problem = serde_json::json!({
                "type": "urn:ietf:params:acme:error:serverInternal",
                "detail": "the ARI front is told to fail",
            });
            return http::Response::builder()
                .status(http::StatusCode::SERVICE_UNAVAILABLE)
                .header(http::header::CONTENT_TYPE, "application/problem+json")
                .header(http::header::RETRY_AFTER, "1")
                .body(http_body_util::Full::new(problem.to_string().into()))
                .unwrap();
        }
        let (start, end) = if state.renew_now.as_deref() == Some(id) {
            (now - hours(1), now + hours(1))
        } else {
            (now + hours(30 * 24), now + hours(31 * 24))
        };
        let body = serde_json::json!({
            "suggestedWindow": { "start": start.to_string(), "end": end.to_string() },
        });
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::RETRY_AFTER, "1")
            .body(http_body_util::Full::new(body.to_string().into()))
            .unwrap()
    }

    /// Pebble's answer to the request, as it came; 502 when Pebble is not up.
    async fn forward(
        &self,
        parts: http::request::Parts,
        body: bytes::Bytes,
    ) -> (http::response::Parts, bytes::Bytes) {
        use http_body_util::BodyExt as _;
        let unavailable = || {
            let r = http::Response::builder()
                .status(http::StatusCode::BAD_GATEWAY)
                .body(())
                .unwrap();
            (r.into_parts().0, bytes::Bytes::new())
        };
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.pebble)).await else {
            return unavailable();
        };
        let name = ServerName::try_from("localhost").unwrap();
        let Ok(tls) = self.client.connect(name, tcp).await else {
            return unavailable();
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::from_parts(parts, http_body_util::Full::new(body));
        *req.uri_mut() = req
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .parse()
            .unwrap();
        let (head, body) = sender.send_request(req).await.unwrap().into_parts();
        (head, body.collect().await.unwrap().to_bytes())
    }
}

/// The payload of a JWS-signed ACME request (RFC 8555 §6.2), unverified.
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.get("payload")?.as_str()?)
        .ok()?;
    serde_json::from_slice(&payload).ok()
}

/// A certificate's ARI identifier (RFC 9773 §4.1): the base64url of its authority key
/// identifier and of its DER serial number, joined by a dot.
pub fn ari_identifier(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    format!(
        "{}.{}",
        b64.encode(aki),
        b64.encode(cert.tbs_certificate.raw_serial())
    )
}
