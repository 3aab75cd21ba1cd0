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
//! * **Writes** (`POST`, `DELETE`) are one `MULTI … EXEC` (route key, activity field,
//!   `PUBLISH`), so a failure leaves nothing half-written and the API answers 503.
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
//! * **Redis going away** does not affect traffic: the table in memory stays as it was.
//!   Writes answer 503; the sync task reconnects with backoff and reloads the table. If
//!   Redis came back *empty* (no persistence configured), the replicas write their table
//!   back instead of emptying themselves ([`Inner::check_epoch`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use serde_json::{Map, Value};
use switchyard::routing::{MAX_KEY_SEGMENTS, RouteMatch, RouteTable, segments};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Route, RouteStore, StoreError, StoreFuture, Target};
use crate::time;

/// Longest wait for a write (MULTI/EXEC) before answering 503.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for merging activity into an API read; the local values are used after it.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// How often local activity is flushed to Redis.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Keys per `MGET`/`HMGET`/script call.
const BATCH: usize = 500;
/// Reconnect backoff bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the idle subscription is checked with a PING: a silently dead connection
/// (no FIN or RST, e.g. a vanished pod) is otherwise only noticed at the next write.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// Flushes activity: `KEYS[1]` the hash, `KEYS[1+i]` route key i; `ARGV` = path, ms pairs.
/// Newest wins; a route deleted meanwhile gets no field.
const FLUSH_SCRIPT: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  local key = KEYS[(i + 1) / 2 + 1]
  if redis.call('EXISTS', key) == 1 then
    local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') or 0
    local ms = tonumber(ARGV[i + 1])
    if ms and ms > cur then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
      n = n + 1
    end
  end
end
return n
";

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
    conn: ConnectionManager,
    client: redis::Client,
    /// Paths to re-read, from API writes on this replica (the sync task applies them in
    /// order with the pub/sub notifications).
    refresh: mpsc::UnboundedSender<String>,
    /// The generation of Redis data this replica last loaded (see [`Inner::check_epoch`]).
    epoch: std::sync::Mutex<Option<String>>,
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
        redis::Client::open(url)
            .map(drop)
            .map_err(|e| format!("invalid Redis URL {}: {e}", redact(url)))
    }

    /// The client for the URL, with the password from the environment if there is one.
    fn client(&self) -> Result<redis::Client, String> {
        use redis::IntoConnectionInfo;
        let shown = redact(&self.url);
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("invalid Redis URL {shown}: {e}"))?;
        let info = match &self.password {
            None => info,
            Some(_) if info.redis_settings().password().is_some() => {
                return Err(format!(
                    "the Redis URL {shown} has a password and {} is set too: give it once",
                    crate::cli::REDIS_PASSWORD_ENV
                ));
            }
            Some(password) => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
        };
        redis::Client::open(info).map_err(|e| format!("invalid Redis URL {shown}: {e}"))
    }
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
        let client = config.client()?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(MAX_BACKOFF);
        let conn = tokio::time::timeout(
            WRITE_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| format!("cannot connect to Redis at {shown}: timed out"))?
        .map_err(|e| format!("cannot connect to Redis at {shown}: {e}"))?;
        let (refresh, refresh_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            table: RouteTable::new(),
            names: Names::new(&config.prefix),
            conn,
            client,
            refresh,
            epoch: std::sync::Mutex::new(None),
        });
        let stream = inner
            .subscribe_and_reload()
            .await
            .map_err(|e| format!("cannot load routes from Redis at {shown}: {e}"))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(sync_task(
            inner.clone(),
            stream,
            refresh_rx,
            shutdown.clone(),
        ));
        tokio::spawn(flush_task(inner.clone(), shutdown.clone()));
        Ok(Self { inner, shutdown })
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
            let json = route.json();
            let names = &self.inner.names;
            let mut conn = self.inner.conn.clone();
            let mut write = redis::pipe();
            write
                .atomic()
                .set(names.route_key(key), json)
                .ignore()
                .hset(&names.activity, key, now)
                .ignore()
                .publish(&names.channel, key)
                .ignore();
            timed(WRITE_TIMEOUT, write.query_async::<()>(&mut conn)).await?;
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
            let mut conn = self.inner.conn.clone();
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
            let routes: Vec<Arc<Route>> = self
                .inner
                .table
                .snapshot()
                .entries()
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            let mut conn = self.inner.conn.clone();
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
            let names = &self.inner.names;
            let mut conn = self.inner.conn.clone();
            let mut write = redis::pipe();
            write
                .atomic()
                .del(names.route_key(key))
                .hdel(&names.activity, key)
                .ignore()
                .publish(&names.channel, key)
                .ignore();
            let (removed,) = timed(WRITE_TIMEOUT, write.query_async::<(i64,)>(&mut conn)).await?;
            self.inner.table.remove(key);
            let _ = self.inner.refresh.send(key.to_owned());
            Ok(removed > 0)
        })
    }

    fn update_last_activity<'a>(&'a self, key: &'a str, at_ms: i64) -> StoreFuture<'a, ()> {
        if let Some(route) = self.inner.table.get(key) {
            route.touch_at(at_ms);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn lookup(&self, path: &str) -> Option<RouteMatch<Route>> {
        self.inner.table.lookup(path)
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.shutdown.cancel();
            if let Err(e) = tokio::time::timeout(WRITE_TIMEOUT, self.inner.flush_activity()).await {
                tracing::warn!("last activity not flushed to Redis at shutdown: {e}");
            }
            Ok(())
        })
    }
}

// === impl Inner ===

impl Inner {
    /// Subscribes to the changes channel, then re-reads the whole table (in that order, so
    /// a change made during the read is also notified).
    async fn subscribe_and_reload(&self) -> Result<Subscription, String> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.names.channel).await?;
            let (sink, stream) = pubsub.split();
            Ok::<_, redis::RedisError>(Subscription { sink, stream })
        };
        let stream = tokio::time::timeout(WRITE_TIMEOUT, connect)
            .await
            .map_err(|_| "subscribing timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        self.check_epoch().await.map_err(|e| e.to_string())?;
        let count = self.reload().await?;
        tracing::info!("Loaded {count} routes from Redis");
        Ok(stream)
    }

    /// Detects a Redis that lost its data (restarted without persistence, flushed) and
    /// writes this replica's table back, so such a restart does not empty every replica.
    ///
    /// `switchyard:<prefix>epoch` is a hash `{id, parent}` created with the data. A replica
    /// that finds it missing although it had loaded an epoch restores its routes (`SET NX`,
    /// never overwriting a route written since) and creates a new epoch whose `parent` is
    /// the old one; a replica that then finds `parent` equal to its own epoch knows the
    /// restore is done and only reloads (so it cannot resurrect a route deleted since).
    async fn check_epoch(&self) -> redis::RedisResult<()> {
        let known = self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut conn = self.conn.clone();
        let (id, parent): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&self.names.epoch)
            .arg("id")
            .arg("parent")
            .query_async(&mut conn)
            .await?;
        let current = match (id, known) {
            (Some(id), Some(mine)) if id != mine && parent.as_deref() != Some(&mine) => {
                tracing::warn!("Redis holds routes of another generation; loading them");
                id
            }
            (Some(id), _) => id,
            (None, known) => {
                if known.is_some() {
                    let n = self.restore().await?;
                    tracing::warn!(
                        "Redis lost its routes (restarted without persistence or flushed); \
                         restored {n} routes from this replica"
                    );
                }
                let created: String = redis::Script::new(
                    "if redis.call('EXISTS', KEYS[1]) == 0 then \
                       redis.call('HSET', KEYS[1], 'id', ARGV[1], 'parent', ARGV[2]) end \
                     return redis.call('HGET', KEYS[1], 'id')",
                )
                .key(&self.names.epoch)
                .arg(new_epoch_id())
                .arg(known.unwrap_or_default())
                .invoke_async(&mut conn)
                .await?;
                created
            }
        };
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = Some(current);
        Ok(())
    }

    /// Writes every local route that Redis lacks (`SET NX`) and notifies the others.
    async fn restore(&self) -> redis::RedisResult<usize> {
        let entries = self.table.snapshot().entries();
        let mut conn = self.conn.clone();
        for chunk in entries.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (key, route) in chunk {
                let json = route.json();
                pipe.cmd("SET")
                    .arg(self.names.route_key(key))
                    .arg(json)
                    .arg("NX")
                    .ignore()
                    .cmd("HSETNX")
                    .arg(&self.names.activity)
                    .arg(&**key)
                    .arg(route.last_activity_ms())
                    .ignore()
                    .publish(&self.names.channel, &**key)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(entries.len())
    }

    /// Replaces the local table by Redis's, route by route (lookups never see a gap).
    async fn reload(&self) -> Result<usize, String> {
        let mut conn = self.conn.clone();
        let pattern = self.names.scan_pattern();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let paths: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&self.names.prefix).map(str::to_owned))
            .collect();
        let values = self.read(&paths).await.map_err(|e| e.to_string())?;
        let mut present = std::collections::HashSet::with_capacity(paths.len());
        for (path, value) in paths.iter().zip(values) {
            if value.is_some() {
                present.insert(path.as_str());
            }
            self.apply(path, value);
        }
        for (key, _) in self.table.snapshot().entries() {
            if !present.contains(&*key) {
                self.table.remove(&key);
            }
        }
        Ok(self.table.len())
    }

    /// Reads routes and their activity: `(json, activity_ms)` per path, `None` if absent.
    async fn read(
        &self,
        paths: &[String],
    ) -> redis::RedisResult<Vec<Option<(Vec<u8>, Option<i64>)>>> {
        let mut out = Vec::with_capacity(paths.len());
        let mut conn = self.conn.clone();
        for chunk in paths.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|p| self.names.route_key(p)).collect();
            let (values, activity): (Vec<Option<Vec<u8>>>, Vec<Option<i64>>) = redis::pipe()
                .cmd("MGET")
                .arg(&keys)
                .cmd("HMGET")
                .arg(&self.names.activity)
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
            out.extend(
                values
                    .into_iter()
                    .zip(activity)
                    .map(|(v, a)| v.map(|v| (v, a))),
            );
        }
        Ok(out)
    }

    /// Installs what Redis holds for `path` (or removes it), keeping local activity.
    fn apply(&self, path: &str, value: Option<(Vec<u8>, Option<i64>)>) {
        let Some((json, activity)) = value else {
            if self.table.remove(path).is_some() {
                tracing::debug!("Route {path} removed (from Redis)");
            }
            return;
        };
        let parsed = serde_json::from_slice::<Value>(&json)
            .map_err(|e| e.to_string())
            .and_then(|v| Route::from_json(path, v, time::now_ms()));
        let route = match parsed {
            Ok(route) => route,
            Err(e) => {
                tracing::warn!("Ignoring route {path} in Redis: {e}");
                return;
            }
        };
        if let Some(ms) = activity {
            merge_activity(&route, ms);
        }
        let stored = route.last_activity_ms();
        route.synced_ms.store(stored, Ordering::Relaxed);
        if let Some(existing) = self.table.get(path) {
            if existing.same_as(&route) {
                merge_activity(&existing, stored);
                return;
            }
            route.touch_at(existing.last_activity_ms());
        }
        match self.table.insert(path, route) {
            Ok(_) => tracing::debug!("Route {path} updated (from Redis)"),
            Err(e) => tracing::warn!("Ignoring route {path} in Redis: {e}"),
        }
    }

    /// Re-reads `paths` and applies them. An error means changes may have been missed.
    async fn refresh(&self, mut paths: Vec<String>) -> redis::RedisResult<()> {
        paths.sort_unstable();
        paths.dedup();
        let values = self.read(&paths).await?;
        for (path, value) in paths.iter().zip(values) {
            self.apply(path, value);
        }
        Ok(())
    }

    /// Sends every route's activity newer than what Redis has (one script call per batch).
    async fn flush_activity(&self) -> redis::RedisResult<usize> {
        let pending: Vec<(Arc<Route>, i64)> = self
            .table
            .snapshot()
            .entries()
            .into_iter()
            .filter_map(|(_, r)| {
                let at = r.last_activity_ms();
                (at > r.synced_ms.load(Ordering::Relaxed)).then_some((r, at))
            })
            .collect();
        let script = redis::Script::new(FLUSH_SCRIPT);
        let mut conn = self.conn.clone();
        for chunk in pending.chunks(BATCH) {
            let mut call = script.key(&self.names.activity);
            for (route, at) in chunk {
                call.key(self.names.route_key(route.key()))
                    .arg(&**route.key())
                    .arg(*at);
            }
            call.invoke_async::<i64>(&mut conn).await?;
            for (route, at) in chunk {
                route.synced_ms.fetch_max(*at, Ordering::Relaxed);
            }
        }
        Ok(pending.len())
    }
}

/// A practically unique id for a new data generation.
fn new_epoch_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// Newest wins; what came from Redis needs no flushing back.
fn merge_activity(route: &Route, ms: i64) {
    route.touch_at(ms);
    route.synced_ms.fetch_max(ms, Ordering::Relaxed);
}

async fn timed<T>(
    limit: Duration,
    op: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from Redis in {limit:?}"
        ))),
    }
}

/// The pub/sub connection: the stream of notifications and a handle to PING it.
struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Applies notifications and this replica's own writes in order; reconnects and reloads
/// whenever the subscription is lost or a re-read fails.
async fn sync_task(
    inner: Arc<Inner>,
    stream: Subscription,
    mut refresh_rx: mpsc::UnboundedReceiver<String>,
    shutdown: CancellationToken,
) {
    let mut stream = Some(stream);
    let mut backoff = MIN_BACKOFF;
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(sub) = stream.as_mut() else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            // Paths queued meanwhile are covered by the reload.
            while refresh_rx.try_recv().is_ok() {}
            match inner.subscribe_and_reload().await {
                Ok(s) => {
                    tracing::info!("Reconnected to Redis; routing table reloaded");
                    stream = Some(s);
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    tracing::debug!("Redis still unavailable: {e}");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let mut paths = Vec::new();
        tokio::select! {
            () = shutdown.cancelled() => return,
            msg = sub.stream.next() => match msg {
                Some(msg) => paths.push(payload(&msg)),
                None => {
                    lost(&mut stream, "pub/sub connection closed");
                    continue;
                }
            },
            Some(path) = refresh_rx.recv() => paths.push(path),
            _ = ping.tick() => {
                let alive = tokio::time::timeout(
                    WRITE_TIMEOUT,
                    sub.sink.ping::<redis::Value>(),
                )
                .await;
                if !matches!(alive, Ok(Ok(_))) {
                    lost(&mut stream, "no answer to PING");
                }
                continue;
            }
        }
        // Batch whatever else is already waiting.
        while paths.len() < BATCH {
            if let Ok(path) = refresh_rx.try_recv() {
                paths.push(path);
                continue;
            }
            match sub.stream.next().now_or_never() {
                Some(Some(msg)) => paths.push(payload(&msg)),
                Some(None) => {
                    lost(&mut stream, "pub/sub connection closed");
                    break;
                }
                None => break,
            }
        }
        if let Err(e) = inner.refresh(paths).await {
            lost(&mut stream, &e.to_string());
        }
    }
}

fn payload(msg: &redis::Msg) -> String {
    String::from_utf8_lossy(msg.get_payload_bytes()).into_owned()
}

fn lost(stream: &mut Option<Subscription>, why: &str) {
    if stream.take().is_some() {
        tracing::warn!(
            "Lost Redis ({why}); serving the last routing table and reconnecting in the background"
        );
    }
}

/// Flushes activity every [`FLUSH_INTERVAL`]; failures are retried on the next tick.
async fn flush_task(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match inner.flush_activity().await {
            Ok(n) if n > 0 => tracing::trace!("flushed activity of {n} routes to Redis"),
            Ok(_) => {}
            Err(e) => tracing::debug!("activity not flushed to Redis (retrying): {e}"),
        }
    }
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
