//! Keeping a replica's table in step with Redis: the subscription to the changes channel,
//! the re-reads it triggers, the whole-table reload at start and after a reconnect, and the
//! detection of a Redis that lost its data.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{BATCH, CONNECT_TIMEOUT, Inner, Route, merge_activity};
use crate::time;

/// Reconnect backoff bounds.
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the idle subscription is checked with a PING: a silently dead connection
/// (no FIN or RST, e.g. a vanished pod) is otherwise only noticed at the next write.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// The pub/sub connection: the stream of notifications and a handle to PING it.
pub(super) struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
}

// === impl Inner ===

impl Inner {
    /// a change made during the read is also notified).
    pub(super) async fn subscribe_and_reload(&self) -> Result<Subscription, String> {
        let connect = async {
            let mut pubsub = self.client().get_async_pubsub().await?;
            pubsub.subscribe(&self.names.channel).await?;
            let (sink, stream) = pubsub.split();
            Ok::<_, redis::RedisError>(Subscription { sink, stream })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
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
        let mut conn = self.conn();
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
}

/// A practically unique id for a new data generation.
fn new_epoch_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// Applies notifications and this replica's own writes in order; reconnects and reloads
/// whenever the subscription is lost or a re-read fails.
pub(super) async fn sync_task(
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
            // With Sentinel, the master may be another one now (a failover).
            if let Err(e) = inner.follow_master().await {
                tracing::debug!("Redis master not found: {e}");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            match inner.subscribe_and_reload().await {
                Ok(s) => {
                    inner.synced.store(true, Ordering::Relaxed);
                    inner.reconnects.fetch_add(1, Ordering::Relaxed);
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
                    lost(&inner, &mut stream, "pub/sub connection closed");
                    continue;
                }
            },
            Some(path) = refresh_rx.recv() => paths.push(path),
            _ = ping.tick() => {
                let alive = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    sub.sink.ping::<redis::Value>(),
                )
                .await;
                if !matches!(alive, Ok(Ok(_))) {
                    lost(&inner, &mut stream, "no answer to PING");
                } else if inner.master_moved().await {
                    // A switch-over: the old master is alive, but a replica now.
                    lost(&inner, &mut stream, "Sentinel names another master");
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
                    lost(&inner, &mut stream, "pub/sub connection closed");
                    break;
                }
                None => break,
            }
        }
        if let Err(e) = inner.refresh(paths).await {
            lost(&inner, &mut stream, &e.to_string());
        }
    }
}

fn payload(msg: &redis::Msg) -> String {
    String::from_utf8_lossy(msg.get_payload_bytes()).into_owned()
}

fn lost(inner: &Inner, stream: &mut Option<Subscription>, why: &str) {
    inner.synced.store(false, Ordering::Relaxed);
    if stream.take().is_some() {
        tracing::warn!(
            "Lost Redis ({why}); serving the last routing table and reconnecting in the background"
        );
    }
}
