//! Where the ACME account, the certificate and the challenges in progress live, so that
//! every replica serves one certificate and answers every challenge.
//!
//! * **Memory store**: in this process; with `--state-file <path>`, the account and the
//!   certificate are also written to `<path>.acme` (mode 0600, replaced atomically), so a
//!   restart serves the stored certificate without a new order.
//! * **Redis** (`--storage-backend redis://…`), with the route keys' prefix (`chp:`):
//!
//! | key / channel                        | type    | content                                  |
//! |--------------------------------------|---------|------------------------------------------|
//! | `switchyard:chp:acme:account`        | string  | the ACME account's credentials (JSON, with its private key) |
//! | `switchyard:chp:acme:certificate`    | string  | `{"domains", "chain", "key"}`: the certificate chain and its private key, PEM |
//! | `switchyard:chp:acme:challenges`     | hash    | `tls-alpn:<domain>` / `http:<token>` → key authorization, while an order runs |
//! | `switchyard:chp:acme:lock`           | string  | the ordering replica's random token, with an expiry (`SET NX PX`) |
//! | `switchyard:chp:acme:changes`        | pub/sub | `certificate` or `challenges` when either changes |
//!
//! Exactly one replica orders at a time: it holds the lock, extends it while the order
//! runs, and stores the certificate with a script that checks it still holds the lock
//! (a replica that stalled past the lock's expiry cannot overwrite a newer certificate);
//! releasing it is a check-and-delete too. A replica that dies mid-order leaves the lock
//! to expire, and another one orders.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::challenges::Challenge;

/// How long the ordering replica's lock lives unless extended.
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(10);

/// The certificate as stored: the names it covers, the chain and its key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCert {
    pub(crate) domains: Vec<String>,
    pub(crate) chain: String,
    pub(crate) key: String,
}

/// What changed in a shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Certificate,
    Challenges,
}

/// The ordering replica's hold on the lock.
#[derive(Debug)]
pub(crate) struct Lock {
    token: String,
}

/// The store of the ACME state.
#[derive(Debug)]
pub(crate) enum AcmeStore {
    Memory(MemoryAcme),
    Redis(Box<RedisAcme>),
}

#[derive(Debug)]
pub(crate) struct MemoryAcme {
    file: Option<PathBuf>,
    saved: Mutex<Saved>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    account: Option<String>,
    certificate: Option<StoredCert>,
}

#[derive(Debug)]
pub(crate) struct RedisAcme {
    conn: ConnectionManager,
    client: redis::Client,
    account: String,
    certificate: String,
    challenges: String,
    lock: String,
    channel: String,
}

// === impl AcmeStore ===

impl AcmeStore {
    /// The memory store, with the file beside `--state-file` if there is one.
    pub(crate) fn memory(state_file: Option<&Path>) -> Result<Self, String> {
        let file = state_file.map(|p| {
            let mut name = p.file_name().unwrap_or_default().to_owned();
            name.push(".acme");
            p.with_file_name(name)
        });
        let saved = match &file {
            Some(f) => match std::fs::read(f) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| format!("ACME state {}: {e}", f.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
                Err(e) => return Err(format!("ACME state {}: {e}", f.display())),
            },
            None => Saved::default(),
        };
        Ok(Self::Memory(MemoryAcme {
            file,
            saved: Mutex::new(saved),
        }))
    }

    /// The Redis store, on its own connection, with the route keys' prefix.
    pub(crate) async fn redis(client: redis::Client, prefix: &str) -> Result<Self, String> {
        // A Redis that stops answering fails a command after a bound, as the route
        // store's connection does, instead of holding the renewal task.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            Duration::from_secs(3),
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| "ACME store: connecting to Redis timed out".to_owned())?
        .map_err(|e| format!("ACME store: {e}"))?;
        let base = format!("switchyard:{prefix}acme:");
        Ok(Self::Redis(Box::new(RedisAcme {
            conn,
            client,
            account: format!("{base}account"),
            certificate: format!("{base}certificate"),
            challenges: format!("{base}challenges"),
            lock: format!("{base}lock"),
            channel: format!("{base}changes"),
        })))
    }

    /// Whether other replicas may share it.
    pub(crate) fn shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    pub(crate) async fn account(&self) -> Result<Option<String>, String> {
        match self {
            Self::Memory(m) => Ok(m.get().account),
            Self::Redis(r) => r.conn.clone().get(&r.account).await.map_err(redis_error),
        }
    }

    pub(crate) async fn set_account(&self, credentials: &str) -> Result<(), String> {
        match self {
            Self::Memory(m) => m.update(|s| s.account = Some(credentials.to_owned())),
            Self::Redis(r) => r
                .conn
                .clone()
                .set(&r.account, credentials)
                .await
                .map_err(redis_error),
        }
    }

    pub(crate) async fn certificate(&self) -> Result<Option<StoredCert>, String> {
        match self {
            Self::Memory(m) => Ok(m.get().certificate),
            Self::Redis(r) => {
                let text: Option<String> = r
                    .conn
                    .clone()
                    .get(&r.certificate)
                    .await
                    .map_err(redis_error)?;
                text.map(|t| {
                    serde_json::from_str(&t).map_err(|e| format!("stored certificate: {e}"))
                })
                .transpose()
            }
        }
    }

    /// Stores the certificate if `lock` is still held; `false` if it was lost.
    pub(crate) async fn set_certificate(
        &self,
        cert: &StoredCert,
        lock: &Lock,
    ) -> Result<bool, String> {
        match self {
            Self::Memory(m) => m
                .update(|s| s.certificate = Some(cert.clone()))
                .map(|()| true),
            Self::Redis(r) => {
                let json = serde_json::to_string(cert).map_err(|e| e.to_string())?;
                let stored: i64 = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       redis.call('SET', KEYS[2], ARGV[2]) \
                       redis.call('PUBLISH', KEYS[3], 'certificate') \
                       return 1 \
                     end \
                     return 0",
                )
                .key(&r.lock)
                .key(&r.certificate)
                .key(&r.channel)
                .arg(&lock.token)
                .arg(json)
                .invoke_async(&mut r.conn.clone())
                .await
                .map_err(redis_error)?;
                Ok(stored == 1)
            }
        }
    }

    /// Shares a challenge with the other replicas (nothing to do in memory).
    pub(crate) async fn set_challenge(
        &self,
        challenge: &Challenge,
        key_authorization: &str,
    ) -> Result<(), String> {
        let Self::Redis(r) = self else { return Ok(()) };
        redis::pipe()
            .hset(&r.challenges, challenge.name(), key_authorization)
            .ignore()
            .publish(&r.channel, "challenges")
            .ignore()
            .query_async::<()>(&mut r.conn.clone())
            .await
            .map_err(redis_error)
    }

    pub(crate) async fn remove_challenge(&self, challenge: &Challenge) -> Result<(), String> {
        let Self::Redis(r) = self else { return Ok(()) };
        redis::pipe()
            .hdel(&r.challenges, challenge.name())
            .ignore()
            .publish(&r.channel, "challenges")
            .ignore()
            .query_async::<()>(&mut r.conn.clone())
            .await
            .map_err(redis_error)
    }

    /// Every challenge in progress (empty in memory: this replica has them all).
    pub(crate) async fn challenges(&self) -> Result<Vec<(Challenge, String)>, String> {
        let Self::Redis(r) = self else {
            return Ok(Vec::new());
        };
        let all: Vec<(String, String)> = r
            .conn
            .clone()
            .hgetall(&r.challenges)
            .await
            .map_err(redis_error)?;
        Ok(all
            .into_iter()
            .filter_map(|(name, key)| Challenge::from_name(&name).map(|c| (c, key)))
            .collect())
    }

    /// One HTTP-01 key authorization, read from the store.
    pub(crate) async fn http_challenge(&self, token: &str) -> Result<Option<String>, String> {
        let Self::Redis(r) = self else {
            return Ok(None);
        };
        let name = Challenge::Http {
            token: token.to_owned(),
        }
        .name();
        r.conn
            .clone()
            .hget(&r.challenges, name)
            .await
            .map_err(redis_error)
    }

    /// Takes the ordering lock if no replica holds it.
    pub(crate) async fn lock(&self) -> Result<Option<Lock>, String> {
        let token = random_token()?;
        match self {
            Self::Memory(_) => Ok(Some(Lock { token })),
            Self::Redis(r) => {
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&r.lock)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(LOCK_TTL))
                    .query_async(&mut r.conn.clone())
                    .await
                    .map_err(redis_error)?;
                Ok(taken.map(|_| Lock { token }))
            }
        }
    }

    /// Extends the lock while this replica holds it; `false` if it was lost.
    pub(crate) async fn extend(&self, lock: &Lock) -> Result<bool, String> {
        let Self::Redis(r) = self else {
            return Ok(true);
        };
        let extended: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
             end \
             return 0",
        )
        .key(&r.lock)
        .arg(&lock.token)
        .arg(millis(LOCK_TTL))
        .invoke_async(&mut r.conn.clone())
        .await
        .map_err(redis_error)?;
        Ok(extended == 1)
    }

    /// Releases the lock if this replica still holds it.
    pub(crate) async fn unlock(&self, lock: Lock) {
        let Self::Redis(r) = self else { return };
        let released: redis::RedisResult<i64> = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('DEL', KEYS[1]) \
             end \
             return 0",
        )
        .key(&r.lock)
        .arg(&lock.token)
        .invoke_async(&mut r.conn.clone())
        .await;
        if let Err(e) = released {
            tracing::warn!("ACME: releasing the order lock: {e}; it expires by itself");
        }
    }

    /// The changes other replicas make, for a shared store: a task that subscribes (and
    /// resubscribes after a loss, then reports both kinds of change so that nothing
    /// missed meanwhile stays unseen).
    pub(crate) fn changes(&self) -> Option<mpsc::Receiver<Change>> {
        let Self::Redis(r) = self else { return None };
        let (tx, rx) = mpsc::channel(16);
        let (client, channel) = (r.client.clone(), r.channel.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                }
                .await;
                match subscribed {
                    Ok(mut pubsub) => {
                        backoff = Duration::from_millis(100);
                        for change in [Change::Certificate, Change::Challenges] {
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                        let mut stream = pubsub.on_message();
                        loop {
                            // The renewal task gone (the server stopped): so is this one,
                            // and its connection.
                            let msg = tokio::select! {
                                () = tx.closed() => return,
                                msg = stream.next() => msg,
                            };
                            let Some(msg) = msg else { break };
                            let change = match msg.get_payload_bytes() {
                                b"certificate" => Change::Certificate,
                                _ => Change::Challenges,
                            };
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                        tracing::warn!("ACME: lost the Redis subscription; resubscribing");
                    }
                    Err(e) => tracing::debug!("ACME: subscribing to Redis: {e}"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Some(rx)
    }
}

// === impl MemoryAcme ===

impl MemoryAcme {
    fn get(&self) -> Saved {
        self.saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut Saved)) -> Result<(), String> {
        let saved = {
            let mut saved = self
                .saved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            change(&mut saved);
            saved.clone()
        };
        let Some(file) = &self.file else {
            return Ok(());
        };
        let body = serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())?;
        write_private(file, &body).map_err(|e| format!("ACME state {}: {e}", file.display()))
    }
}

/// Writes `body` to a temporary file readable by its owner only and renames it over
/// `path`: it holds private keys, and a crash leaves the old file or the new one.
fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no randomness for the lock token".to_owned())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "the shape `map_err` takes: `.map_err(redis_error)`"
)]
fn redis_error(e: redis::RedisError) -> String {
    format!("Redis: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_state_beside_the_state_file_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("switchyard-acme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let routes = dir.join("routes.json");
        let store = AcmeStore::memory(Some(&routes)).unwrap();
        let cert = StoredCert {
            domains: vec!["a.example".to_owned()],
            chain: "chain".to_owned(),
            key: "key".to_owned(),
        };
        let lock = store.lock().await.unwrap().unwrap();
        assert!(store.set_certificate(&cert, &lock).await.unwrap());
        store.set_account("{}").await.unwrap();
        let file = dir.join("routes.json.acme");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AcmeStore::memory(Some(&routes)).unwrap();
        assert_eq!(again.certificate().await.unwrap(), Some(cert));
        assert_eq!(again.account().await.unwrap().as_deref(), Some("{}"));
        std::fs::write(&file, "not json").unwrap();
        assert!(AcmeStore::memory(Some(&routes)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
