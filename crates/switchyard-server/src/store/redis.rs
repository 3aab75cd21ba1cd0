//! The Redis store: one routing table shared by several replicas
//! (`--storage-backend redis://…`).
//!
//! # Key layout
//!
//! With the default prefix `chp:` (`--redis-key-prefix`):
//!
//! | key / channel              | type    | content                                              |
//! |----------------------------|---------|------------------------------------------------------|
//! | `chp:<path>`               | string  | the route's JSON, as `GET /api/routes/<path>` shows it when it was added: the POSTed object (key order kept) with `target` and `last_activity` (ISO 8601) |
//! | `switchyard:chp:activity`  | hash    | `<path>` → newest `last_activity` seen by any replica, in ms since the epoch |
//! | `switchyard:chp:changes`   | pub/sub | `<path>` of every route written or deleted           |
//! | `switchyard:chp:epoch`     | hash    | `id`, `parent`: the generation of the data (detects a Redis that lost its data) |
//!
//! Route keys are exactly those of the Node `configurable-http-proxy-redis-backend`
//! (`chp:<path>` → JSON with an ISO `last_activity`), so its users can start switchyard on
//! their Redis and keep their routes (a JSON `last_activity` is used until a replica records
//! newer activity). The two other names are outside `chp:*` on purpose: that backend lists
//! routes with `KEYS chp:*` and would choke on a hash there. `last_activity` lives in its own
//! hash because it changes all the time: merging it into the JSON would need a
//! read-modify-write of every route every second, racing with API writes.
//!
//! # How replicas stay in step
//!
//! * **Lookups are local.** The public listener reads the engine's lock-free
//!   [`RouteTable`]; nothing on the request path talks to Redis.
//! * **Writes** (`POST`, `DELETE`) are one Lua script (route key, activity field,
//!   `PUBLISH`), so a failure leaves nothing half-written, and each carries a deadline so
//!   that an API 503 means what it says (see [`write`]).
//! * **Every replica subscribes** to the changes channel. A notification carries only the
//!   path; the replica re-reads that path (`MGET`/`HMGET`, batched with any other pending
//!   notifications) and applies what Redis holds *now*. Because every change is applied by
//!   reading the current value, and one task applies them in order, late or duplicate
//!   notifications can never install a stale route.
//! * **At start and after every reconnect** a replica subscribes first and then re-reads the
//!   whole table (`SCAN` + `MGET`), so a change made while it was away cannot be missed.
//!   Start-up waits for this load: every route is back before the public port is served.
//! * **`last_activity`** is recorded locally on each request (an atomic) and flushed once a
//!   second, in batches, by a Lua script that keeps the newest value and ignores deleted
//!   routes. `GET /api/routes` merges the hash in (best effort, bounded wait), so any
//!   replica shows activity seen by any of them, at most a second old.
//! * **With Sentinel** (`redis+sentinel://`, [`sentinel`]) the master's address is asked
//!   of the sentinels at start, at every reconnect and every few seconds; when it moves,
//!   the connections are replaced and the table re-read, as after any reconnect.
//! * **Redis going away** does not affect traffic: the table in memory stays as it was.
//!   Writes answer 503; the sync task reconnects with backoff and reloads the table. If
//!   Redis came back *empty* (no persistence configured), the replicas write their table
//!   back instead of emptying themselves ([`Inner::check_epoch`]).

mod sentinel;
mod sync;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Map, Value};
use switchyard::routing::{MAX_KEY_SEGMENTS, RouteMatch, RouteTable, segments};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::sentinel::SentinelUrl;
use super::{Route, RouteStore, StoreError, StoreFuture, Target};
use crate::time;

/// Environment variable holding the password of the Redis store, kept out of the URL
/// (and so out of the process's command line).
pub(crate) const PASSWORD_ENV: &str = "CONFIGPROXY_REDIS_PASSWORD";

/// Longest wait for a connection, a subscription or a PING.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one command's answer (the connection manager's response timeout): an
/// API write waits at most twice this (its clock read, then the write).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for merging activity into an API read; the local values are used after it.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Keys per `MGET`/`HMGET`/script call.
const BATCH: usize = 500;

/// Connection settings from the command line.
#[derive(Clone)]
pub(crate) struct RedisConfig {
    /// `redis://`, `rediss://` or `unix://` URL (may hold a password: never logged).
    pub(crate) url: String,
    /// Prefix of route keys (`chp:`).
    pub(crate) prefix: String,
    /// The password from `CONFIGPROXY_REDIS_PASSWORD`, for a URL without one.
    pub(crate) password: Option<String>,
}

/// Routes in Redis, cached in memory for lookups.
#[derive(Debug)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    table: RouteTable<Route>,
    names: Names,
    /// The connections to the master: replaced when Sentinel names another one.
    link: std::sync::RwLock<Link>,
    /// With `redis+sentinel://`: how to find the master again.
    sentinel: Option<SentinelUrl>,
    /// The password from the environment, for a master found through Sentinel.
    password: Option<String>,
    /// Paths to re-read, from API writes on this replica (the sync task applies them in
    /// order with the pub/sub notifications).
    refresh: mpsc::UnboundedSender<String>,
    /// The generation of Redis data this replica last loaded (see [`Inner::check_epoch`]).
    epoch: std::sync::Mutex<Option<String>>,
    /// Subscribed to the changes and the table reloaded since: the table is Redis's.
    /// Cleared when the subscription is lost, set again after the next reload.
    synced: AtomicBool,
    /// Times the table was reloaded after the connection was lost.
    reconnects: AtomicU64,
}

/// The master's address and the connections to it.
#[derive(Debug, Clone)]
struct Link {
    /// `host:port` as Sentinel named it (empty for a fixed URL).
    addr: String,
    conn: ConnectionManager,
    client: redis::Client,
}

#[derive(Debug, Clone)]
struct Names {
    prefix: String,
    activity: String,
    channel: String,
    epoch: String,
}

// === impl RedisConfig ===

impl RedisConfig {
    /// Checks the URL without connecting (start-up validation).
    pub(crate) fn validate(url: &str) -> Result<(), String> {
        if SentinelUrl::is_sentinel(url) {
            return SentinelUrl::parse(url)
                .map(drop)
                .map_err(|e| format!("invalid Redis URL {}: {e}", redact(url)));
        }
        redis::Client::open(url)
            .map(drop)
            .map_err(|e| format!("invalid Redis URL {}: {e}", redact(url)))
    }

    /// The client for the URL, with the password from the environment if there is one.
    pub(crate) fn client(&self) -> Result<redis::Client, String> {
        client_for(&self.url, self.password.as_deref())
    }
}

/// The client for `url`, with `password` (from the environment) if the URL has none.
fn client_for(url: &str, password: Option<&str>) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let shown = redact(url);
    let info = url
        .into_connection_info()
        .map_err(|e| format!("invalid Redis URL {shown}: {e}"))?;
    let info = match password {
        None => info,
        Some(_) if info.redis_settings().password().is_some() => {
            return Err(format!(
                "the Redis URL {shown} has a password and {PASSWORD_ENV} is set too: give it once"
            ));
        }
        Some(password) => {
            let settings = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(settings)
        }
    };
    redis::Client::open(info).map_err(|e| format!("invalid Redis URL {shown}: {e}"))
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

// === impl Link ===

impl Link {
    /// Connects the command connection (the pub/sub one is made by the sync task).
    async fn open(addr: String, client: redis::Client) -> Result<Self, String> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(sync::MIN_BACKOFF)
            .set_max_delay(sync::MAX_BACKOFF);
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        Ok(Self { addr, conn, client })
    }

    /// Asks the sentinels where the master is, and connects to it.
    async fn find(sentinel: &SentinelUrl, password: Option<&str>) -> Result<Self, String> {
        let addr = sentinel.master_addr().await?;
        let client = client_for(&sentinel.master_url(&addr), password)?;
        Self::open(addr, client).await
    }
}

// === impl Inner ===

impl Inner {
    /// The command connection to the master (a cheap clone).
    fn conn(&self) -> ConnectionManager {
        self.link
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .conn
            .clone()
    }

    /// The client of the master, for a new pub/sub connection.
    fn client(&self) -> redis::Client {
        self.link
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .client
            .clone()
    }

    /// With Sentinel: asks where the master is now and, if it moved, connects to the new
    /// one and uses it from now on. `Ok(true)` when it moved.
    async fn follow_master(&self) -> Result<bool, String> {
        let Some(sentinel) = &self.sentinel else {
            return Ok(false);
        };
        let addr = sentinel.master_addr().await?;
        if addr == self.link.read().unwrap_or_else(|e| e.into_inner()).addr {
            return Ok(false);
        }
        let client = client_for(&sentinel.master_url(&addr), self.password.as_deref())?;
        let link = Link::open(addr.clone(), client)
            .await
            .map_err(|e| format!("new master {addr}: {e}"))?;
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = link;
        tracing::warn!(
            "Redis master {:?} moved to {addr} (from Sentinel)",
            sentinel.master
        );
        Ok(true)
    }

    /// With Sentinel: whether the sentinels name a master other than the one in use.
    async fn master_moved(&self) -> bool {
        let Some(sentinel) = &self.sentinel else {
            return false;
        };
        match sentinel.master_addr().await {
            Ok(addr) => addr != self.link.read().unwrap_or_else(|e| e.into_inner()).addr,
            Err(_) => false,
        }
    }
}

// === impl Names ===

impl Names {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            activity: format!("switchyard:{prefix}activity"),
            channel: format!("switchyard:{prefix}changes"),
            epoch: format!("switchyard:{prefix}epoch"),
        }
    }

    fn route_key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// `SCAN MATCH` pattern for every route key (the prefix's glob characters escaped).
    fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("/*");
        pattern
    }
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects, subscribes, loads every route, and starts the sync and flush tasks.
    /// Fails when Redis cannot be reached: a replica that starts empty would serve 404s.
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Self, String> {
        let shown = redact(&config.url);
        let sentinel = if SentinelUrl::is_sentinel(&config.url) {
            Some(
                SentinelUrl::parse(&config.url)
                    .map_err(|e| format!("invalid Redis URL {shown}: {e}"))?,
            )
        } else {
            None
        };
        let link = match &sentinel {
            None => Link::open(String::new(), config.client()?).await,
            Some(s) => Link::find(s, config.password.as_deref()).await,
        }
        .map_err(|e| format!("cannot connect to Redis at {shown}: {e}"))?;
        if let Some(s) = &sentinel {
            tracing::info!(
                "Redis master {:?} is at {} (from Sentinel)",
                s.master,
                link.addr
            );
        }
        let (refresh, refresh_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            table: RouteTable::new(),
            names: Names::new(&config.prefix),
            link: std::sync::RwLock::new(link),
            sentinel,
            password: config.password.clone(),
            refresh,
            epoch: std::sync::Mutex::new(None),
            synced: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
        });
        let stream = inner
            .subscribe_and_reload()
            .await
            .map_err(|e| format!("cannot load routes from Redis at {shown}: {e}"))?;
        inner.synced.store(true, Ordering::Relaxed);
        let shutdown = CancellationToken::new();
        tokio::spawn(sync::sync_task(
            inner.clone(),
            stream,
            refresh_rx,
            shutdown.clone(),
        ));
        tokio::spawn(write::flush_task(inner.clone(), shutdown.clone()));
        Ok(Self { inner, shutdown })
    }
}

impl RedisStore {
    /// After a write whose outcome is unknown, re-reads `key` once Redis answers, so this
    /// replica's table follows whatever Redis holds (the others get the notification).
    fn follow_unconfirmed(&self, key: &str, e: &StoreError) {
        if matches!(e, StoreError::Unconfirmed(_)) {
            let _ = self.inner.refresh.send(key.to_owned());
        }
    }
}

impl RouteStore for RedisStore {
    fn add<'a>(
        &'a self,
        key: &'a str,
        target: Target,
        data: Map<String, Value>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if segments(key).count() > MAX_KEY_SEGMENTS {
                return Err(StoreError::TooDeep);
            }
            let now = time::now_ms();
            let route = Route::new(key, target, data, now);
            let written = self.inner.write_route(key, &route.json(), now).await;
            if let Err(e) = written {
                self.follow_unconfirmed(key, &e);
                return Err(e);
            }
            // Serve it here at once; the re-read queued behind corrects it if another
            // replica wrote the same path in between.
            self.inner
                .table
                .insert(key, route)
                .map_err(|_| StoreError::TooDeep)?;
            let _ = self.inner.refresh.send(key.to_owned());
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<Route>>> {
        Box::pin(async move {
            let Some(route) = self.inner.table.get(key) else {
                return Ok(None);
            };
            let mut conn = self.inner.conn();
            let mut cmd = redis::cmd("HGET");
            cmd.arg(&self.inner.names.activity).arg(&**route.key());
            let read = cmd.query_async::<Option<i64>>(&mut conn);
            if let Ok(Ok(Some(ms))) = tokio::time::timeout(READ_TIMEOUT, read).await {
                merge_activity(&route, ms);
            }
            Ok(Some(route))
        })
    }

    fn get_all(&self) -> StoreFuture<'_, Vec<Arc<Route>>> {
        Box::pin(async move {
            let routes = self.snapshot();
            let mut conn = self.inner.conn();
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(&self.inner.names.activity);
            let read = cmd.query_async::<std::collections::HashMap<String, i64>>(&mut conn);
            match tokio::time::timeout(READ_TIMEOUT, read).await {
                Ok(Ok(activity)) => {
                    for route in &routes {
                        if let Some(ms) = activity.get(&**route.key()) {
                            merge_activity(route, *ms);
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!("activity from Redis not merged: {e}"),
                Err(_) => tracing::debug!("activity from Redis not merged: timed out"),
            }
            Ok(routes)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let removed = match self.inner.delete_route(key).await {
                Ok(removed) => removed,
                Err(e) => {
                    self.follow_unconfirmed(key, &e);
                    return Err(e);
                }
            };
            self.inner.table.remove(key);
            let _ = self.inner.refresh.send(key.to_owned());
            Ok(removed)
        })
    }

    fn update_last_activity<'a>(&'a self, key: &'a str, at_ms: i64) -> StoreFuture<'a, ()> {
        if let Some(route) = self.inner.table.get(key) {
            route.touch_at(at_ms);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn snapshot(&self) -> Vec<Arc<Route>> {
        self.inner
            .table
            .snapshot()
            .entries()
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    fn len(&self) -> usize {
        self.inner.table.len()
    }

    fn reconnects(&self) -> Option<u64> {
        Some(self.inner.reconnects.load(Ordering::Relaxed))
    }

    /// Every replica subscribes to the changes channel: `PUBSUB NUMSUB` counts them (one
    /// command, answered from Redis's memory), each replica's subscription once.
    fn replicas(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<u64>> + Send + '_>> {
        Box::pin(async move {
            let mut conn = self.inner.conn();
            let mut cmd = redis::cmd("PUBSUB");
            cmd.arg("NUMSUB").arg(&self.inner.names.channel);
            let read = cmd.query_async::<(String, u64)>(&mut conn);
            match tokio::time::timeout(READ_TIMEOUT, read).await {
                Ok(Ok((_, n))) => Some(n),
                _ => None,
            }
        })
    }

    fn lookup(&self, path: &str) -> Option<RouteMatch<Route>> {
        self.inner.table.lookup(path)
    }

    fn ready(&self) -> Result<(), &'static str> {
        if self.inner.synced.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("Redis unavailable; routes may be stale")
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.shutdown.cancel();
            if let Err(e) = tokio::time::timeout(CONNECT_TIMEOUT, self.inner.flush_activity()).await
            {
                tracing::warn!("last activity not flushed to Redis at shutdown: {e}");
            }
            Ok(())
        })
    }
}

/// Newest wins; what came from Redis needs no flushing back.
fn merge_activity(route: &Route, ms: i64) {
    route.touch_at(ms);
    route.synced_ms.fetch_max(ms, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:pw@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:pw@h/1"), "redis://:***@h/1");
        assert_eq!(redact("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        assert_eq!(Names::new("chp:").scan_pattern(), "chp:/*");
        assert_eq!(Names::new("a*[b]:").scan_pattern(), r"a\*\[b\]:/*");
        assert_eq!(
            Names::new("chp:").activity,
            "switchyard:chp:activity".to_owned()
        );
    }
}
