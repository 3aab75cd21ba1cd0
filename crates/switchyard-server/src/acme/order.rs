//! One ACME order (RFC 8555 §7.4) with `instant-acme`: the account (from the store, or
//! created and stored), the challenges put where every replica answers them, validation,
//! finalization with a new key, the certificate chain.

use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use super::challenges::Challenge;
use super::store::StoredCert;
use super::{Acme, AcmeConfig};

/// How long the ACME server gets to validate the challenges, and then to issue.
const VALIDATION: Duration = Duration::from_secs(90);
/// How long a shared store's challenge takes to reach the other replicas (one pub/sub
/// message and a hash read) before the ACME server is told to validate.
const SPREAD: Duration = Duration::from_millis(300);

/// Orders a certificate for the configured domains, naming the certificate it `replaces`
/// (RFC 9773 §5) when given; the error says why, with the ACME server's problem document
/// when it sent one.
pub(super) async fn order(
    config: &AcmeConfig,
    acme: &Acme,
    account: &mut Option<Account>,
    replaces: Option<&CertificateIdentifier<'static>>,
) -> Result<StoredCert, String> {
    let Some(account) = self::account(config, acme, account, true).await? else {
        return Err("no ACME account".to_owned());
    };
    let identifiers: Vec<Identifier> = config
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let first = match replaces {
        Some(id) => account
            .new_order(&NewOrder::new(&identifiers).replaces(id.clone()))
            .await
            .map_err(|e| {
                // `replaces` is advice to the server (a certificate already replaced
                // is refused, for one): the renewal goes on without it.
                tracing::warn!("ACME: new order replacing {id}: {e}; ordering without it");
            })
            .ok(),
        None => None,
    };
    let mut order = match first {
        Some(order) => order,
        None => account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?,
    };
    let kind = if config.http01 {
        ChallengeType::Http01
    } else {
        ChallengeType::TlsAlpn01
    };
    let mut offered = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(format!(
                        "authorization for {} is {status:?}",
                        authz.identifier()
                    ));
                }
            }
            let domain = authz.identifier().to_string();
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                format!("the ACME server offers no {kind:?} challenge for {domain}")
            })?;
            let key_authorization = challenge.key_authorization();
            let shared = if config.http01 {
                Challenge::Http {
                    token: challenge.token.clone(),
                }
            } else {
                Challenge::TlsAlpn {
                    domain: domain.clone(),
                }
            };
            acme.challenges
                .insert(&shared, key_authorization.as_str())?;
            acme.store
                .set_challenge(&shared, key_authorization.as_str())
                .await?;
            offered.push(shared);
            if acme.store.shared() {
                tokio::time::sleep(SPREAD).await;
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge for {domain}: {e}"))?;
        }
        Ok::<(), String>(())
    }
    .await;
    let result = match result {
        Ok(()) => finish(&mut order, config).await,
        Err(e) => Err(e),
    };
    for challenge in &offered {
        acme.challenges.remove(challenge);
        if let Err(e) = acme.store.remove_challenge(challenge).await {
            tracing::debug!("ACME: removing a challenge: {e}");
        }
    }
    result
}

/// Waits for validation, finalizes with a new key and fetches the chain.
async fn finish(
    order: &mut instant_acme::Order,
    config: &AcmeConfig,
) -> Result<StoredCert, String> {
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(VALIDATION);
    let status = order
        .poll_ready(&retry)
        .await
        .map_err(|e| format!("waiting for validation: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!(
            "the order is {status:?}: {}",
            problems(order).await
        ));
    }
    let key = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&retry)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    Ok(StoredCert {
        domains: config.domains.clone(),
        chain,
        key,
    })
}

/// The problem documents of a failed order: the order's own and each challenge's.
async fn problems(order: &mut instant_acme::Order) -> String {
    let mut found = Vec::new();
    if let Some(p) = &order.state().error {
        found.push(p.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            for challenge in &state.challenges {
                if let Some(p) = &challenge.error {
                    found.push(format!("{}: {p}", state.identifier()));
                }
            }
        }
    }
    if found.is_empty() {
        "no problem document".to_owned()
    } else {
        found.join("; ")
    }
}

/// The account: `cached`, else the stored one for this directory, else (with `create`)
/// a new one, stored. Without `create`, `None` when none is stored.
pub(super) async fn account(
    config: &AcmeConfig,
    acme: &Acme,
    cached: &mut Option<Account>,
    create: bool,
) -> Result<Option<Account>, String> {
    if let Some(a) = cached {
        return Ok(Some(a.clone()));
    }
    let loaded = load_account(config, acme, create).await?;
    cached.clone_from(&loaded);
    Ok(loaded)
}

/// The stored account for this directory, or (with `create`) a new one, stored.
async fn load_account(
    config: &AcmeConfig,
    acme: &Acme,
    create: bool,
) -> Result<Option<Account>, String> {
    let builder = || match &config.ca_file {
        Some(ca) => Account::builder_with_root(ca)
            .map_err(|e| format!("--acme-ca-file {}: {e}", ca.display())),
        None => Account::builder().map_err(|e| format!("ACME client: {e}")),
    };
    if let Some(json) = acme.store.account().await? {
        let same_directory = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| {
                v.get("directory")
                    .and_then(|d| d.as_str())
                    .map(str::to_owned)
            })
            .is_some_and(|d| d == config.directory);
        if same_directory {
            let credentials: AccountCredentials =
                serde_json::from_str(&json).map_err(|e| format!("stored ACME account: {e}"))?;
            return builder()?
                .from_credentials(credentials)
                .await
                .map(Some)
                .map_err(|e| format!("ACME account: {e}"));
        }
    }
    if !create {
        return Ok(None);
    }
    let contact = config.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("new ACME account at {}: {e}", config.directory))?;
    let json = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
    acme.store.set_account(&json).await?;
    tracing::info!("ACME: account created at {}", config.directory);
    Ok(Some(account))
}
