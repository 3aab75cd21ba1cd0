//! Where routes live: the [`RouteStore`] interface and the route record.
//!
//! A route is a target, the arbitrary JSON object the client POSTed (kept verbatim and in
//! order), and `last_activity`, an atomic millisecond timestamp the public listener bumps
//! without a lock. The public listener never awaits the store: it looks up routes in a
//! [`switchyard::routing`] snapshot that every store keeps in memory (the memory store *is*
//! that snapshot; the Redis store keeps it as a cache synchronised by pub/sub, see
//! [`redis`] for its key layout).

pub(crate) mod memory;
pub(crate) mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Map, Value};
use switchyard::routing::RouteMatch;

use crate::route_stats::RouteStats;
use crate::time;

/// The key under which `last_activity` appears in a route's JSON.
pub(crate) const LAST_ACTIVITY: &str = "last_activity";

/// A boxed future, so the trait stays object-safe (`Arc<dyn RouteStore>`).
pub(crate) type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The route store interface (CHP's `BaseStore`: get, getAll, add, update, remove).
pub(crate) trait RouteStore: Send + Sync + fmt::Debug {
    /// Adds or replaces the route at `key` (already normalised); sets `last_activity` to now.
    fn add<'a>(
        &'a self,
        key: &'a str,
        target: Target,
        data: Map<String, Value>,
    ) -> StoreFuture<'a, ()>;
    /// The route stored at exactly `key`.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<Route>>>;
    /// All routes in insertion order.
    fn get_all(&self) -> StoreFuture<'_, Vec<Arc<Route>>>;
    /// Removes the route at `key`; false when there was none.
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;
    /// Sets `last_activity` of the route at `key` (if any) to `at_ms`, never moving it back.
    #[allow(
        dead_code,
        reason = "for shared stores' batched flush; the memory store's routes are updated in place"
    )]
    fn update_last_activity<'a>(&'a self, key: &'a str, at_ms: i64) -> StoreFuture<'a, ()>;
    /// The hot path: longest-prefix lookup in the in-memory snapshot. Never blocks.
    fn lookup(&self, path: &str) -> Option<RouteMatch<Route>>;
    /// Every route of the in-memory table, in insertion order, as this replica has them
    /// (`last_activity` seen here). Never blocks.
    fn snapshot(&self) -> Vec<Arc<Route>>;
    /// How many routes the in-memory table holds. Never blocks.
    fn len(&self) -> usize;
    /// How many times a shared store got its connection back after losing it; `None`
    /// for a store without one.
    fn reconnects(&self) -> Option<u64> {
        None
    }
    /// How many replicas share the store now, this one included; `None` for a store of
    /// this process alone, or when the shared store does not answer in time.
    fn replicas(&self) -> Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>> {
        Box::pin(std::future::ready(None))
    }
    /// Whether the table is what the store holds, so this replica may take traffic: `Err`
    /// with a short reason when not (a shared store that is disconnected or reloading).
    fn ready(&self) -> Result<(), &'static str> {
        Ok(())
    }
    /// Called once at shutdown: write out what is still pending (activity, state file).
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A store failure (only shared stores can fail; the memory store never does).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("route path is too deep")]
    TooDeep,
    /// The shared store cannot be reached, or refused the change; nothing was changed.
    #[error("route store unavailable: {0}")]
    Unavailable(String),
    /// The change was sent but not confirmed in time: it may or may not have been made.
    #[error("route store did not confirm the change: {0}")]
    Unconfirmed(String),
}

/// A validated route target, parsed once for the engine when the route is added.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    raw: String,
    engine: switchyard::Target,
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Target {}

/// Why a target was refused: the server's own rules first, then the engine's parser,
/// whose reason is given as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("target must be an absolute URL with scheme http, https, http+unix or unix+http")]
    Scheme,
    #[error("target must not contain credentials (user:password@)")]
    UserInfo,
    #[error("target must not contain a fragment (#)")]
    Fragment,
    #[error("{0}")]
    Invalid(&'static str),
}

/// One route: key, target, client data, last activity.
pub(crate) struct Route {
    key: Arc<str>,
    target: Target,
    /// The POSTed object (with `target`, and `host` in host-routing mode) as JSON, in CHP's
    /// key order, split where the value of `last_activity` goes: serialised once, so that
    /// listing 10,000 routes copies bytes instead of re-escaping every string.
    json_head: Box<[u8]>,
    json_tail: Box<[u8]>,
    /// The key as a JSON string.
    key_json: Box<[u8]>,
    last_activity_ms: AtomicI64,
    /// The newest `last_activity` known to be in the shared store (Redis); activity above
    /// it is flushed in the next batch. Unused by the memory store.
    synced_ms: AtomicI64,
    /// Its recent requests, for the dashboard.
    stats: RouteStats,
}

// === impl Target ===

impl Target {
    /// Parses a route target with the engine's parser, under the rules of CHP's routes:
    /// one of its four schemes, no credentials (every `GET /api/routes` would show them),
    /// no fragment (never sent). CHP stores any string and fails on every request to it
    /// (`""`, `file:`, `gopher:`).
    pub(crate) fn parse(raw: &str) -> Result<Self, TargetError> {
        let (scheme, rest) = raw.split_once("://").ok_or(TargetError::Scheme)?;
        if !["http", "https", "http+unix", "unix+http"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            return Err(TargetError::Scheme);
        }
        if rest.contains('#') {
            return Err(TargetError::Fragment);
        }
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if authority.contains('@') {
            return Err(TargetError::UserInfo);
        }
        let engine = switchyard::Target::parse(raw).map_err(|e| match e {
            switchyard::ConfigError::Target { reason, .. } => TargetError::Invalid(reason),
            _ => TargetError::Invalid("not a valid target"),
        })?;
        Ok(Self {
            raw: raw.to_owned(),
            engine,
        })
    }

    /// The engine's view of the target (parsed once).
    pub(crate) fn engine(&self) -> &switchyard::Target {
        &self.engine
    }

    /// The target exactly as configured.
    pub(crate) fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

// === impl Route ===

impl Route {
    /// A new route whose `last_activity` is `now_ms`.
    pub(crate) fn new(
        key: &str,
        target: Target,
        mut data: Map<String, Value>,
        now_ms: i64,
    ) -> Self {
        // Keep a POSTed last_activity's position (JS assignment keeps key order), else append.
        data.insert(LAST_ACTIVITY.to_owned(), Value::Null);
        let (json_head, json_tail) = split_json(&data);
        Self {
            key: Arc::from(key),
            target,
            json_head,
            json_tail,
            key_json: json_string(key),
            last_activity_ms: AtomicI64::new(now_ms),
            synced_ms: AtomicI64::new(now_ms),
            stats: RouteStats::default(),
        }
    }

    /// A route read back from stored JSON (a state file, or a Redis value): the object must
    /// have a valid string `target`; its `last_activity` (ISO 8601) is used when present,
    /// else `fallback_ms`.
    pub(crate) fn from_json(key: &str, value: Value, fallback_ms: i64) -> Result<Self, String> {
        let Value::Object(data) = value else {
            return Err("not a JSON object".to_owned());
        };
        let Some(Value::String(raw)) = data.get("target") else {
            return Err("no 'target' string".to_owned());
        };
        let target = Target::parse(raw).map_err(|e| format!("target {raw:?}: {e}"))?;
        let at_ms = match data.get(LAST_ACTIVITY) {
            Some(Value::String(s)) => time::parse_date_ms(s).unwrap_or(fallback_ms),
            _ => fallback_ms,
        };
        Ok(Self::new(key, target, data, at_ms))
    }

    /// Same target and same client data (`last_activity` aside)?
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.key == other.key
            && self.target == other.target
            && self.json_head == other.json_head
            && self.json_tail == other.json_tail
    }

    pub(crate) fn key(&self) -> &Arc<str> {
        &self.key
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// Its recent requests (see [`RouteStats`]).
    pub(crate) fn stats(&self) -> &RouteStats {
        &self.stats
    }

    pub(crate) fn last_activity_ms(&self) -> i64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    /// Records activity at `at_ms`; lock-free, never moves the timestamp back.
    pub(crate) fn touch_at(&self, at_ms: i64) {
        self.last_activity_ms.fetch_max(at_ms, Ordering::Relaxed);
    }

    /// Records activity now.
    pub(crate) fn touch(&self) {
        self.touch_at(time::now_ms());
    }

    /// Appends the route's JSON object as CHP returns it (data + `last_activity`).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.json_head);
        out.push(b'"');
        time::write_ms(out, self.last_activity_ms());
        out.push(b'"');
        out.extend_from_slice(&self.json_tail);
    }

    /// The route's JSON object as CHP returns it.
    pub(crate) fn json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_head.len() + self.json_tail.len() + 26);
        self.write_json(&mut out);
        out
    }

    /// Appends `"<key>":{…}`, one member of the `GET /api/routes` object.
    pub(crate) fn write_member(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key_json);
        out.push(b':');
        self.write_json(out);
    }

    /// Roughly how many bytes [`Route::write_member`] appends.
    pub(crate) fn member_len(&self) -> usize {
        self.key_json.len() + self.json_head.len() + self.json_tail.len() + 27
    }
}

/// `{ …, "last_activity":` and the rest of the object after its value. `data` holds the
/// `last_activity` key (see [`Route::new`]).
fn split_json(data: &Map<String, Value>) -> (Box<[u8]>, Box<[u8]>) {
    let (mut head, mut tail) = (vec![b'{'], Vec::new());
    let mut seen = false;
    for (i, (k, v)) in data.iter().enumerate() {
        let out = if seen { &mut tail } else { &mut head };
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&json_string(k));
        out.push(b':');
        if k == LAST_ACTIVITY {
            seen = true;
        } else {
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
    tail.push(b'}');
    (head.into_boxed_slice(), tail.into_boxed_slice())
}

fn json_string(s: &str) -> Box<[u8]> {
    // Serialising a `str` into a Vec cannot fail.
    serde_json::to_vec(s).unwrap_or_default().into_boxed_slice()
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("key", &self.key)
            .field("target", &self.target)
            .field("last_activity_ms", &self.last_activity_ms())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_validated() {
        for ok in [
            "http://127.0.0.1:8888",
            "https://hub.example/base?x=1",
            "http+unix://%2Ftmp%2Fsock",
            "unix+http://%2Ftmp%2Fsock/path",
            "HTTP://UPPER",
        ] {
            assert!(Target::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Target::parse(""), Err(TargetError::Scheme));
        assert_eq!(
            Target::parse("file:///etc/passwd"),
            Err(TargetError::Scheme)
        );
        assert_eq!(
            Target::parse("gopher://127.0.0.1:6379/_INFO"),
            Err(TargetError::Scheme)
        );
        assert_eq!(Target::parse("127.0.0.1:80"), Err(TargetError::Scheme));
        assert_eq!(Target::parse("http://u:p@host"), Err(TargetError::UserInfo));
        assert_eq!(Target::parse("ws://h"), Err(TargetError::Scheme));
        assert_eq!(Target::parse("http://h/#frag"), Err(TargetError::Fragment));
        // The engine's reasons, as it gives them.
        assert_eq!(
            Target::parse("http:///x"),
            Err(TargetError::Invalid("no host"))
        );
        assert_eq!(
            Target::parse("http+unix://"),
            Err(TargetError::Invalid("no host"))
        );
        assert_eq!(
            Target::parse("http://h:99999"),
            Err(TargetError::Invalid("invalid port"))
        );
        for bad in ["http://h/a b", "http+unix://%2Ftmp%2Fa b", "http://h/\x01"] {
            let err = Target::parse(bad).unwrap_err();
            assert!(matches!(err, TargetError::Invalid(_)), "{bad}: {err:?}");
        }
    }

    /// Keys and values that need escaping survive the pre-serialised form, and a route
    /// with no data of its own still lists `last_activity`.
    #[test]
    fn json_escapes_and_compares() {
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"q\"uote":"a\\b\n","ünï":"秀樹","last_activity":null}"#)
                .unwrap();
        let route = Route::new("/user/秀\"", Target::parse("http://a").unwrap(), data, 0);
        let json: Value = serde_json::from_slice(&route.json()).unwrap();
        assert_eq!(json["q\"uote"], "a\\b\n");
        assert_eq!(json["ünï"], "秀樹");
        assert_eq!(json["last_activity"], "1970-01-01T00:00:00.000Z");
        let mut member = b"{".to_vec();
        route.write_member(&mut member);
        member.push(b'}');
        let listed: Value = serde_json::from_slice(&member).unwrap();
        assert_eq!(listed["/user/秀\""], json);

        let bare = Route::new("/b", Target::parse("http://a").unwrap(), Map::new(), 5);
        assert_eq!(
            bare.json(),
            br#"{"last_activity":"1970-01-01T00:00:00.005Z"}"#
        );

        let same = Route::new("/b", Target::parse("http://a").unwrap(), Map::new(), 9);
        assert!(bare.same_as(&same), "last_activity aside, the same route");
        let mut other = Map::new();
        other.insert("user".to_owned(), Value::from("x"));
        let different = Route::new("/b", Target::parse("http://a").unwrap(), other, 5);
        assert!(!bare.same_as(&different));
    }

    #[test]
    fn json_keeps_key_order_and_fills_last_activity() {
        let data: Map<String, Value> = serde_json::from_str(
            r#"{"z":1,"last_activity":"old","target":"http://a","a":{"n":[1]}}"#,
        )
        .unwrap();
        let route = Route::new("/x", Target::parse("http://a").unwrap(), data, 0);
        route.touch_at(1_000);
        route.touch_at(500);
        let json = String::from_utf8(route.json()).unwrap();
        assert_eq!(
            json,
            r#"{"z":1,"last_activity":"1970-01-01T00:00:01.000Z","target":"http://a","a":{"n":[1]}}"#
        );
    }
}
