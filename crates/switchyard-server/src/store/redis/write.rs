//! What a replica writes to Redis: the API's route writes, each with a deadline, and the
//! periodic flush of `last_activity`.
//!
//! # Why a route write carries a deadline
//!
//! A write that timed out on our side may still be queued on the connection, or inside a
//! Redis that hangs (a stopped process, a long command): it would be applied once Redis
//! resumes, after the API told its client otherwise. No answer can be certain in every case
//! (Redis may stop after making a change and before saying so), so a write is made in two
//! steps, and the API's 503 says which one failed:
//!
//! 1. Redis's clock is read (`TIME`). When Redis does not answer, the write is never sent:
//!    the 503 says nothing was changed, and that is true.
//! 2. The write is one Lua script that first reads Redis's clock again and does nothing
//!    when more than [`APPLY_WITHIN`] has passed since step 1 (one clock, Redis's, so no
//!    skew between hosts matters). When its answer does not come back in time, the 503
//!    says the change may or may not have been made and that repeating the request is
//!    safe: POST and DELETE are idempotent here (a repeated DELETE answers 404 when the
//!    first one was made). Because of the deadline, a write held up for longer than
//!    [`APPLY_WITHIN`] is not made at all, so "may have been made" is the rare case of a
//!    Redis that ran the script and then stopped before answering.
//!
//! JupyterHub retries a 5xx for 30 s and takes a DELETE's 404 as done, so either answer
//! leads it to the right table; a client that gives up after a 503 is told the truth in
//! the common case, and a change queued for minutes behind a hung Redis never lands long
//! after its client moved on. Replicas converge either way: a change that is made notifies
//! every replica, and after an unconfirmed write this replica re-reads the path itself.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Script, ScriptInvocation};
use tokio_util::sync::CancellationToken;

use super::{BATCH, Inner, RESPONSE_TIMEOUT, Route, StoreError};

/// How long after answering `TIME` Redis may still make a route write; after that the
/// script does nothing. Below [`RESPONSE_TIMEOUT`], so a write Redis makes in time is
/// normally confirmed before we stop waiting.
const APPLY_WITHIN: Duration = Duration::from_secs(1);
/// How often local activity is flushed to Redis.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The start of every route write: `ARGV[1]` is the deadline in microseconds of Redis's
/// clock; past it the script returns -1 and changes nothing.
macro_rules! deadline_check {
    () => {
        "if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(ARGV[1]) then return -1 end
"
    };
}

/// Adds or replaces a route: `KEYS` route key, activity hash; `ARGV` deadline, JSON, path,
/// activity ms, channel.
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        deadline_check!(),
        "redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[3])
return 1
"
    ))
});

/// Deletes a route: `KEYS` route key, activity hash; `ARGV` deadline, path, channel.
/// Returns how many route keys it removed.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        deadline_check!(),
        "local n = redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return n
"
    ))
});

/// Flushes activity: `KEYS[1]` the hash, `KEYS[1+i]` route key i; `ARGV` = path, ms pairs.
/// Newest wins; a route deleted meanwhile gets no field.
static FLUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local n = 0
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
",
    )
});

// === impl Inner ===

impl Inner {
    /// Writes `path` → `json` with its activity and notifies the replicas.
    pub(super) async fn write_route(
        &self,
        path: &str,
        json: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let names = &self.names;
        self.before_deadline(|deadline| {
            let mut call = ADD.key(names.route_key(path));
            call.key(&names.activity)
                .arg(deadline)
                .arg(json)
                .arg(path)
                .arg(now_ms)
                .arg(&names.channel);
            call
        })
        .await
        .map(drop)
    }

    /// Deletes `path` and notifies the replicas; `true` when the route existed.
    pub(super) async fn delete_route(&self, path: &str) -> Result<bool, StoreError> {
        let names = &self.names;
        self.before_deadline(|deadline| {
            let mut call = DELETE.key(names.route_key(path));
            call.key(&names.activity)
                .arg(deadline)
                .arg(path)
                .arg(&names.channel);
            call
        })
        .await
        .map(|removed| removed > 0)
    }

    /// Reads Redis's clock, then runs the script `build` makes for the deadline
    /// [`APPLY_WITHIN`] later (see the module docs for what each failure means).
    async fn before_deadline(
        &self,
        build: impl FnOnce(i64) -> ScriptInvocation<'static>,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let time = redis::cmd("TIME");
        let clock = time.query_async::<(i64, i64)>(&mut conn);
        let (secs, micros) = match tokio::time::timeout(RESPONSE_TIMEOUT, clock).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(StoreError::Unavailable(e.to_string())),
            Err(_) => return Err(StoreError::Unavailable(no_answer())),
        };
        let within = i64::try_from(APPLY_WITHIN.as_micros()).unwrap_or(i64::MAX);
        let deadline = secs
            .saturating_mul(1_000_000)
            .saturating_add(micros)
            .saturating_add(within);
        let write = build(deadline);
        match tokio::time::timeout(RESPONSE_TIMEOUT, write.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(-1)) => Err(StoreError::Unavailable(format!(
                "Redis ran the write more than {APPLY_WITHIN:?} after reading its clock"
            ))),
            Ok(Ok(n)) => Ok(n),
            // Redis answered with an error: the script did not run.
            Ok(Err(e)) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                Err(StoreError::Unavailable(e.to_string()))
            }
            Ok(Err(e)) => Err(StoreError::Unconfirmed(e.to_string())),
            Err(_) => Err(StoreError::Unconfirmed(no_answer())),
        }
    }

    /// Sends every route's activity newer than what Redis has (one script call per batch).
    pub(super) async fn flush_activity(&self) -> redis::RedisResult<usize> {
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
        let mut conn = self.conn();
        for chunk in pending.chunks(BATCH) {
            let mut call = FLUSH.key(&self.names.activity);
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

fn no_answer() -> String {
    format!("no answer from Redis in {RESPONSE_TIMEOUT:?}")
}

/// Flushes activity every [`FLUSH_INTERVAL`]; failures are retried on the next tick.
pub(super) async fn flush_task(inner: Arc<Inner>, shutdown: CancellationToken) {
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
