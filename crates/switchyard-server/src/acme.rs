//! Automatic HTTPS (ACME, RFC 8555) for the public port, with `instant-acme` as the
//! client: the account and the certificate live in the store (see [`store`]), so every
//! replica serves one certificate, and a restart serves the stored one without ordering.
//!
//! One task per replica ([`Manager::run`]):
//!
//! 1. installs the stored certificate if it covers the `--acme-domain` names and is newer
//!    than the one served;
//! 2. sleeps until the renewal time, a change from another replica, or a periodic re-read
//!    of the store. The renewal time is `--acme-renew-at` percent of the lifetime, or
//!    earlier when the ACME server offers renewal information (ARI, RFC 9773) and its
//!    suggested window says so (see [`renewal`]); a server without ARI, or a query that
//!    fails, leaves the `--acme-renew-at` point alone;
//! 3. when a certificate is due, takes the store's lock (one replica orders at a time),
//!    reads the store again (another replica may have just renewed), and orders:
//!    the challenges are put in the store before the ACME server is told to validate
//!    them, so whichever replica it reaches answers; the new certificate is stored under
//!    the lock and swapped in through the public listener's [`TlsConfig`] handle. When
//!    the server answers ARI queries, the new order names the certificate it `replaces`.
//!
//! Failures are logged with the ACME server's problem document, counted
//! (`switchyard_acme_failures_total`), and retried with exponential backoff; the proxy
//! keeps serving whatever it has.
//!
//! Until the first certificate exists the public port serves TLS with no certificate:
//! a handshake fails with an `access_denied` alert, except a TLS-ALPN-01 validation.

mod challenges;
mod order;
mod renewal;
pub(crate) mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use rustls::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use switchyard::{Body, TlsConfig};
use tokio::time::Instant;

pub(crate) use challenges::Challenges;
use challenges::{ACME_TLS_ALPN, Resolver};
use renewal::{Fetched, Renewal};
use store::{AcmeStore, Change, StoredCert};

use crate::cli::Cli;
use crate::metrics::{CertListener, Metrics};
use crate::tls::Leaf;

/// The challenge path of HTTP-01 (RFC 8555 §8.3).
const HTTP_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// First and longest wait after a failed order.
const MIN_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often the store is read again when nothing else wakes the task (a change missed
/// while a shared store's subscription was down; another replica's order finishing).
const RECHECK: Duration = Duration::from_secs(30);
/// The longest an order may take, all steps included: an ACME server that stops
/// answering mid-order must not hold the lock (and this replica) for ever.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest an ARI query may take (the account's directory included).
const ARI_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a replica that waits for another one's order looks at the store.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(2);

/// What `--acme-*` asks for.
#[derive(Debug, Clone)]
pub(crate) struct AcmeConfig {
    pub(crate) domains: Vec<String>,
    pub(crate) email: Option<String>,
    pub(crate) directory: String,
    pub(crate) ca_file: Option<std::path::PathBuf>,
    pub(crate) http01: bool,
    pub(crate) renew_at_percent: u8,
    /// The lower bound of the wait between ARI queries (see [`renewal`]).
    pub(crate) ari_min_refetch: Duration,
}

/// What the ACME side counts, for metrics.
#[derive(Debug, Default)]
pub(crate) struct AcmeCounters {
    pub(crate) orders: AtomicU64,
    pub(crate) issued: AtomicU64,
    pub(crate) failures: AtomicU64,
}

/// The pieces the listeners share with the manager.
#[derive(Debug, Clone)]
pub(crate) struct Acme {
    pub(crate) challenges: Arc<Challenges>,
    pub(crate) store: Arc<AcmeStore>,
}

/// The renewal task's state.
struct Manager {
    config: AcmeConfig,
    acme: Acme,
    tls: TlsConfig,
    metrics: Arc<Metrics>,
    /// The certificate served now, as stored, and its `notBefore`/`notAfter`.
    current: Option<(StoredCert, Validity)>,
    account: Option<instant_acme::Account>,
    /// What ARI says about the served certificate (reset when it changes); `None` without
    /// a certificate, or when its identifier cannot be made.
    renewal: Option<Renewal>,
    /// False once the ACME server's directory turned out to have no `renewalInfo`.
    ari_offered: bool,
}

#[derive(Debug, Clone, Copy)]
struct Validity {
    not_before: i64,
    not_after: i64,
}

/// Whether `name` can be an `--acme-domain`: a DNS name of letters, digits, hyphens and
/// dots (an IDN in its `xn--` form), no wildcard (TLS-ALPN-01 and HTTP-01 cannot
/// validate one).
pub(crate) fn valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

// === impl AcmeConfig ===

impl AcmeConfig {
    /// `None` without `--acme-domain`.
    pub(crate) fn from_cli(cli: &Cli) -> Option<Self> {
        if cli.acme_domain.is_empty() {
            return None;
        }
        let mut domains: Vec<String> = cli
            .acme_domain
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        domains.sort();
        domains.dedup();
        Some(Self {
            domains,
            email: cli.acme_email.clone(),
            directory: cli.acme_directory.clone(),
            ca_file: cli.acme_ca_file.clone(),
            http01: cli.acme_challenge == "http-01",
            renew_at_percent: cli.acme_renew_at,
            ari_min_refetch: renewal::min_refetch(
                std::env::var(renewal::MIN_REFETCH_ENV).ok().as_deref(),
            ),
        })
    }
}

// === impl Acme ===

impl Acme {
    /// The public listener's TLS handle, serving the stored certificate if there is one,
    /// and the renewal task.
    pub(crate) async fn start(
        config: AcmeConfig,
        store: AcmeStore,
        protocol: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, TlsConfig, tokio::task::JoinHandle<()>), String> {
        let acme = Self {
            challenges: Arc::new(Challenges::default()),
            store: Arc::new(store),
        };
        let versions = crate::tls::protocol_versions(protocol).map_err(|e| e.to_string())?;
        let tls = TlsConfig::new(acme.server_config(None, versions)?);
        let mut manager = Manager {
            config,
            acme: acme.clone(),
            tls: tls.clone(),
            metrics,
            current: None,
            account: None,
            renewal: None,
            ari_offered: true,
        };
        // A stored certificate is served from the first handshake on.
        match acme.store.certificate().await {
            Ok(Some(stored)) => manager.install(stored, versions),
            Ok(None) => tracing::info!(
                "ACME: no certificate stored yet; the HTTPS port fails handshakes until one is issued"
            ),
            Err(e) => tracing::warn!("ACME: cannot read the stored certificate: {e}"),
        }
        let task = tokio::spawn(async move { manager.run(versions).await });
        Ok((acme, tls, task))
    }

    /// The public port's configuration: `current` (or none yet) and the TLS-ALPN-01
    /// challenges, offering `h2`, `http/1.1` and `acme-tls/1`.
    fn server_config(
        &self,
        current: Option<Arc<CertifiedKey>>,
        versions: &'static [&'static rustls::SupportedProtocolVersion],
    ) -> Result<Arc<ServerConfig>, String> {
        let mut config = ServerConfig::builder_with_provider(switchyard::crypto::provider())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS protocol versions: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver {
                current,
                challenges: self.challenges.clone(),
            }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        config.ticketer =
            switchyard::crypto::ticketer().map_err(|e| format!("TLS session tickets: {e}"))?;
        Ok(Arc::new(config))
    }

    /// The HTTP-01 answer for `req`, if it asks for a challenge this replica (or, with a
    /// shared store, any replica) has.
    pub(crate) async fn http01(
        &self,
        req: &Request<hyper::body::Incoming>,
    ) -> Option<Response<Body>> {
        let token = req.uri().path().strip_prefix(HTTP_CHALLENGE_PREFIX)?;
        let key = match self.challenges.http(token) {
            Some(key) => Some(key),
            None => self.store.http_challenge(token).await.unwrap_or_else(|e| {
                tracing::warn!("ACME: reading an HTTP-01 challenge: {e}");
                None
            }),
        };
        let mut response = match key {
            Some(key) => {
                let mut r = Response::new(Body::from(key));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            None => Response::new(Body::empty()),
        };
        if response.headers().is_empty() {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        Some(response)
    }
}

// === impl Manager ===

impl Manager {
    async fn run(&mut self, versions: &'static [&'static rustls::SupportedProtocolVersion]) {
        let mut changes = self.acme.store.changes();
        let mut backoff = MIN_BACKOFF;
        // The ARI query in flight: it runs beside the waits below, so a slow ACME server
        // does not hold up the challenges and certificates other replicas announce.
        let mut query: Option<Pin<Box<dyn Future<Output = AriAnswer> + Send>>> = None;
        loop {
            if query.is_none() {
                query = self.ari_query().map(|q| Box::pin(q) as _);
            }
            let wake = match self.due() {
                Some(at) if at > Instant::now() => {
                    let at = at.min(Instant::now() + RECHECK);
                    match (&self.renewal, self.ari_offered) {
                        (Some(r), true) => at.min(r.next_fetch),
                        _ => at,
                    }
                }
                _ => match self.attempt(versions).await {
                    Attempt::Done => {
                        backoff = MIN_BACKOFF;
                        continue;
                    }
                    Attempt::OtherReplica => Instant::now() + WAIT_FOR_OTHER,
                    Attempt::Failed => {
                        let at = Instant::now() + backoff;
                        tracing::info!("ACME: next attempt in {}s", backoff.as_secs());
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        at
                    }
                },
            };
            let answered = async {
                match query.as_mut() {
                    Some(q) => q.await,
                    None => std::future::pending().await,
                }
            };
            let change = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let woken = tokio::select! {
                () = tokio::time::sleep_until(wake) => Woken::Timer,
                change = change => Woken::Change(change),
                answer = answered => Woken::Ari(answer),
            };
            let changed = match woken {
                Woken::Timer => None,
                Woken::Change(change) => change,
                Woken::Ari(answer) => {
                    query = None;
                    self.ari_answer(answer);
                    continue;
                }
            };
            if changed == Some(Change::Challenges) {
                match self.acme.store.challenges().await {
                    Ok(all) => self.acme.challenges.replace_all(&all),
                    Err(e) => tracing::warn!("ACME: reading the challenges: {e}"),
                }
                continue;
            }
            match self.acme.store.certificate().await {
                Ok(Some(stored)) => self.install(stored, versions),
                Ok(None) => {}
                Err(e) => tracing::warn!("ACME: reading the stored certificate: {e}"),
            }
        }
    }

    /// When the served certificate is due for renewal (`None` when there is none: due
    /// now): the `--acme-renew-at` point, or ARI's when that is earlier.
    fn due(&self) -> Option<Instant> {
        let renew = self.renew_at_point()?;
        let renew = match self.ari_due() {
            Some(at) => renew.min(at),
            None => renew,
        };
        let now = jiff::Timestamp::now().as_second();
        let wait = u64::try_from(renew - now).unwrap_or(0);
        Some(Instant::now() + Duration::from_secs(wait))
    }

    /// The `--acme-renew-at` point of the served certificate (Unix seconds).
    fn renew_at_point(&self) -> Option<i64> {
        let (_, v) = self.current.as_ref()?;
        let lifetime = v.not_after - v.not_before;
        Some(v.not_before + lifetime * i64::from(self.config.renew_at_percent) / 100)
    }

    /// The point ARI chose for the served certificate, if the server offers ARI.
    fn ari_due(&self) -> Option<i64> {
        self.renewal.as_ref().filter(|_| self.ari_offered)?.at()
    }

    /// The query of the served certificate's renewal window, when it is time to ask (see
    /// [`renewal`]). It needs the stored account: no account is made for it.
    fn ari_query(&mut self) -> Option<impl Future<Output = AriAnswer> + Send + 'static> {
        if !self.ari_offered {
            return None;
        }
        let renewal = self.renewal.as_mut()?;
        if renewal.next_fetch > Instant::now() {
            return None;
        }
        // Not asked again before this answer is in.
        renewal.next_fetch = Instant::now() + renewal::MAX_REFETCH;
        let (config, acme) = (self.config.clone(), self.acme.clone());
        let (mut account, id) = (self.account.clone(), renewal.id.clone());
        Some(async move {
            let query = async {
                match order::account(&config, &acme, &mut account, false).await {
                    Ok(Some(a)) => a.renewal_info(&id).await.map_err(AriError::Acme),
                    Ok(None) => Err(AriError::NoAccount),
                    Err(e) => Err(AriError::Account(e)),
                }
            };
            let result = tokio::time::timeout(ARI_TIMEOUT, query)
                .await
                .unwrap_or(Err(AriError::Timeout));
            AriAnswer {
                id,
                account,
                result,
            }
        })
    }

    /// Takes the ACME server's renewal window (or the query's failure) for the served
    /// certificate; an answer about one no longer served is dropped.
    fn ari_answer(&mut self, answer: AriAnswer) {
        if self.account.is_none() {
            self.account = answer.account;
        }
        let renew_at = self.renew_at_point();
        let min = self.config.ari_min_refetch;
        let Some(renewal) = self.renewal.as_mut().filter(|r| r.id == answer.id) else {
            return;
        };
        match answer.result {
            Ok((info, retry_after)) => {
                let now = jiff::Timestamp::now().as_second();
                match renewal.update(&info, retry_after, min, now) {
                    Fetched::NewWindow { start, end, at } => tracing::info!(
                        "ACME: renewal information for {}: window {} to {}, renewing at {}{}",
                        renewal.id,
                        when(start),
                        when(end),
                        when(renew_at.map_or(at, |r| r.min(at)).max(now)),
                        info.explanation_url
                            .as_deref()
                            .map(|u| format!(" (explanation: {u})"))
                            .unwrap_or_default()
                    ),
                    Fetched::Unchanged => tracing::debug!(
                        "ACME: renewal information for {}: window unchanged",
                        renewal.id
                    ),
                    Fetched::Invalid => tracing::warn!(
                        "ACME: renewal information for {}: the window ends before it starts; {}",
                        renewal.id,
                        meanwhile(renewal)
                    ),
                }
            }
            Err(AriError::Acme(instant_acme::Error::Unsupported(_))) => {
                tracing::debug!(
                    "ACME: the ACME server offers no renewal information (ARI); renewing at --acme-renew-at"
                );
                self.ari_offered = false;
            }
            Err(AriError::NoAccount) => {
                tracing::debug!("ACME: no account stored yet; renewal information later");
                renewal.failed(min);
            }
            Err(e) => {
                tracing::warn!(
                    "ACME: renewal information for {}: {e}; {}",
                    renewal.id,
                    meanwhile(renewal)
                );
                renewal.failed(min);
            }
        }
    }

    /// Serves `stored` if it covers the domains and is newer than the one served.
    fn install(
        &mut self,
        stored: StoredCert,
        versions: &'static [&'static rustls::SupportedProtocolVersion],
    ) {
        if self.current.as_ref().is_some_and(|(c, _)| *c == stored) {
            return;
        }
        if stored.domains != self.config.domains {
            tracing::info!(
                "ACME: the stored certificate is for {:?}, not {:?}: ordering a new one",
                stored.domains,
                self.config.domains
            );
            return;
        }
        let (key, validity, leaf) = match certified_key(&stored) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("ACME: the stored certificate does not load: {e}");
                return;
            }
        };
        if let Some((_, v)) = &self.current
            && v.not_after >= validity.not_after
        {
            return;
        }
        match self.acme.server_config(Some(Arc::new(key)), versions) {
            Ok(config) => self.tls.replace(config),
            Err(e) => {
                tracing::warn!("ACME: {e}");
                return;
            }
        }
        self.metrics
            .set_certificate(CertListener::Public, Some(leaf));
        self.renewal = match Renewal::new(&stored) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!("ACME: no renewal information for this certificate: {e}");
                None
            }
        };
        tracing::info!(
            "ACME: serving the certificate for {} (expires {})",
            stored.domains.join(", "),
            leaf.not_after_text()
        );
        self.current = Some((stored, validity));
    }

    /// Orders a certificate under the store's lock.
    async fn attempt(
        &mut self,
        versions: &'static [&'static rustls::SupportedProtocolVersion],
    ) -> Attempt {
        let store = self.acme.store.clone();
        let lock = match store.lock().await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::debug!("ACME: another replica is ordering");
                return Attempt::OtherReplica;
            }
            Err(e) => {
                tracing::warn!("ACME: cannot take the order lock: {e}");
                self.acme_failed();
                return Attempt::Failed;
            }
        };
        // Another replica may have stored a fresh certificate just before.
        if let Ok(Some(stored)) = store.certificate().await {
            self.install(stored, versions);
            if self.due().is_some_and(|at| at > Instant::now()) {
                store.unlock(lock).await;
                return Attempt::Done;
            }
        }
        self.metrics.acme.orders.fetch_add(1, Ordering::Relaxed);
        // The certificate being replaced, named when the server answers ARI for it.
        let replaces = self
            .renewal
            .as_ref()
            .filter(|r| self.ari_offered && r.answered())
            .map(|r| r.id.clone());
        let why = match (&replaces, self.ari_due()) {
            (Some(id), Some(at)) if at <= jiff::Timestamp::now().as_second() => {
                format!(" (renewal information says so; replacing {id})")
            }
            (Some(id), _) => format!(" (replacing {id})"),
            (None, _) => String::new(),
        };
        tracing::info!(
            "ACME: ordering a certificate for {} from {}{why}",
            self.config.domains.join(", "),
            self.config.directory
        );
        let started = std::time::Instant::now();
        let result = {
            let order = tokio::time::timeout(
                ORDER_TIMEOUT,
                order::order(
                    &self.config,
                    &self.acme,
                    &mut self.account,
                    replaces.as_ref(),
                ),
            );
            tokio::pin!(order);
            // Keep the lock while the order runs; stop if it is lost.
            let mut extend = tokio::time::interval(store::LOCK_TTL / 3);
            extend.tick().await;
            loop {
                tokio::select! {
                    result = &mut order => break result.unwrap_or_else(|_| {
                        Err(format!("no answer from the ACME server in {}s", ORDER_TIMEOUT.as_secs()))
                    }),
                    _ = extend.tick() => match store.extend(&lock).await {
                        Ok(true) => {}
                        Ok(false) => break Err("the order lock expired; another replica may order".to_owned()),
                        Err(e) => tracing::warn!("ACME: extending the order lock: {e}"),
                    },
                }
            }
        };
        let outcome = match result {
            Ok(stored) => match store.set_certificate(&stored, &lock).await {
                Ok(true) => {
                    self.metrics.acme.issued.fetch_add(1, Ordering::Relaxed);
                    let domains = stored.domains.join(", ");
                    // Served before it is announced.
                    self.install(stored, versions);
                    tracing::info!(
                        "ACME: certificate issued for {domains} in {} ms",
                        started.elapsed().as_millis()
                    );
                    Attempt::Done
                }
                Ok(false) => {
                    tracing::warn!(
                        "ACME: lost the order lock before storing the certificate; not stored"
                    );
                    self.acme_failed();
                    Attempt::Failed
                }
                Err(e) => {
                    tracing::error!("ACME: storing the certificate: {e}");
                    // Serve it all the same; the next renewal stores one.
                    self.install(stored, versions);
                    self.acme_failed();
                    Attempt::Failed
                }
            },
            Err(e) => {
                self.acme_failed();
                tracing::error!(
                    "ACME: order for {} failed: {e}",
                    self.config.domains.join(", ")
                );
                Attempt::Failed
            }
        };
        store.unlock(lock).await;
        outcome
    }

    fn acme_failed(&self) {
        self.metrics.acme.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// What woke the renewal task.
enum Woken {
    Timer,
    /// A change announced by the store (`None`: its announcements stopped).
    Change(Option<Change>),
    Ari(AriAnswer),
}

/// An ARI query's outcome, for the certificate `id`; `account` is the one it loaded.
struct AriAnswer {
    id: instant_acme::CertificateIdentifier<'static>,
    account: Option<instant_acme::Account>,
    result: Result<(instant_acme::RenewalInfo, Duration), AriError>,
}

/// Why an ARI query has no answer.
#[derive(Debug, thiserror::Error)]
enum AriError {
    #[error("no account stored yet")]
    NoAccount,
    #[error("{0}")]
    Account(String),
    #[error("{0}")]
    Acme(instant_acme::Error),
    #[error("no answer in {}s", ARI_TIMEOUT.as_secs())]
    Timeout,
}

/// What the renewal time is while ARI has no (valid) answer: the window obtained before
/// is the server's last word; without one, `--acme-renew-at`.
fn meanwhile(renewal: &Renewal) -> &'static str {
    if renewal.at().is_some() {
        "keeping the last window"
    } else {
        "renewing at --acme-renew-at meanwhile"
    }
}

/// A Unix time for a log line.
fn when(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

/// How an attempt to order ended.
enum Attempt {
    Done,
    OtherReplica,
    Failed,
}

/// The stored chain and key as rustls serves them, with the leaf's validity.
fn certified_key(stored: &StoredCert) -> Result<(CertifiedKey, Validity, Leaf), String> {
    let chain = CertificateDer::pem_slice_iter(stored.chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let first = chain.first().ok_or("no certificate in the chain")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(first).map_err(|e| format!("certificate: {e}"))?;
    let validity = Validity {
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    };
    let leaf = Leaf::of(first)?;
    let key = PrivateKeyDer::from_pem_slice(stored.key.as_bytes())
        .map_err(|e| format!("key PEM: {e}"))?;
    let key = CertifiedKey::from_der(chain, key, &switchyard::crypto::provider())
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok((key, validity, leaf))
}

#[cfg(test)]
mod tests;
