//! The default store: the engine's lock-free [`RouteTable`] is the whole store.
//!
//! With `--state-file PATH` the table is also kept in a file, so one restarted replica
//! serves its routes at once (no window of 404s until the Hub re-adds them). The file is
//! the JSON of `GET /api/routes` (`{"<path>": {"target": …, "last_activity": …, …}}`). It
//! is rewritten after every change, before the API answers, as a temporary file in the
//! same directory, `fsync`ed, then renamed over the old one: a crash at any point leaves
//! either the old or the new file, never a torn one. Concurrent changes share one write
//! (each writer skips if a write that started after its change has finished). Activity is
//! written with the next change and at shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use switchyard::routing::{RouteError, RouteMatch, RouteTable};

use super::{Route, RouteStore, StoreError, StoreFuture, Target};
use crate::time;

/// Routes in memory, lost on restart (the Hub re-adds them), as CHP's `MemoryStore`;
/// or kept in a state file.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    table: RouteTable<Route>,
    state: Option<StateFile>,
}

#[derive(Debug)]
struct StateFile {
    path: PathBuf,
    /// Number of changes applied to the table.
    changes: AtomicU64,
    /// Number of changes included in the file on disk; the lock serialises writers.
    written: tokio::sync::Mutex<u64>,
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A store kept in `path`: loads it if it exists (a missing file is an empty table).
    pub(crate) fn with_state_file(path: PathBuf) -> Result<Self, String> {
        let table = RouteTable::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let shown = path.display();
                let Ok(Value::Object(routes)) = serde_json::from_slice::<Value>(&bytes) else {
                    return Err(format!(
                        "--state-file {shown}: not a JSON object of routes; move it away to start empty"
                    ));
                };
                let now = time::now_ms();
                for (key, value) in routes {
                    match Route::from_json(&key, value, now) {
                        Ok(route) => {
                            if table.insert(&key, route).is_err() {
                                tracing::warn!("--state-file {shown}: route {key} is too deep");
                            }
                        }
                        Err(e) => tracing::warn!("--state-file {shown}: skipping {key}: {e}"),
                    }
                }
                tracing::info!("Loaded {} routes from {shown}", table.len());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("--state-file {}: {e}", path.display())),
        }
        Ok(Self {
            table,
            state: Some(StateFile {
                path,
                changes: AtomicU64::new(0),
                written: tokio::sync::Mutex::new(0),
            }),
        })
    }

    /// Writes the table to the state file (if any) unless a newer write already has.
    async fn persist(&self) {
        let Some(state) = &self.state else { return };
        let wanted = state.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut written = state.written.lock().await;
        if *written >= wanted {
            return;
        }
        // Count first, then snapshot: the snapshot holds at least `covered` changes.
        let covered = state.changes.load(Ordering::SeqCst);
        let body = routes_json(&self.table);
        let path = state.path.clone();
        match tokio::task::spawn_blocking(move || write_atomically(&path, &body)).await {
            Ok(Ok(())) => *written = covered,
            Ok(Err(e)) => tracing::error!(
                "cannot write state file {}: {e} (routes stay in memory)",
                state.path.display()
            ),
            Err(e) => tracing::error!("state file writer failed: {e}"),
        }
    }
}

/// The table as `GET /api/routes` shows it.
fn routes_json(table: &RouteTable<Route>) -> Vec<u8> {
    let entries = table.snapshot().entries();
    let size = entries
        .iter()
        .map(|(_, r)| r.member_len() + 1)
        .sum::<usize>()
        + 2;
    let mut out = Vec::with_capacity(size);
    out.push(b'{');
    for (i, (_, route)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        route.write_member(&mut out);
    }
    out.push(b'}');
    out
}

/// Temporary file in the same directory, fsync, rename, fsync the directory.
fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl RouteStore for MemoryStore {
    fn add<'a>(
        &'a self,
        key: &'a str,
        target: Target,
        data: Map<String, Value>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let route = Route::new(key, target, data, time::now_ms());
            self.table
                .insert(key, route)
                .map_err(|_: RouteError| StoreError::TooDeep)?;
            self.persist().await;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<Route>>> {
        Box::pin(std::future::ready(Ok(self.table.get(key))))
    }

    fn get_all(&self) -> StoreFuture<'_, Vec<Arc<Route>>> {
        Box::pin(std::future::ready(Ok(self.snapshot())))
    }

    fn snapshot(&self) -> Vec<Arc<Route>> {
        self.table
            .snapshot()
            .entries()
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let removed = self.table.remove(key).is_some();
            if removed {
                self.persist().await;
            }
            Ok(removed)
        })
    }

    fn update_last_activity<'a>(&'a self, key: &'a str, at_ms: i64) -> StoreFuture<'a, ()> {
        if let Some(route) = self.table.get(key) {
            route.touch_at(at_ms);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn lookup(&self, path: &str) -> Option<RouteMatch<Route>> {
        self.table.lookup(path)
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Writes the latest activity too.
            self.persist().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("switchyard-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.json");
        let _ = std::fs::remove_file(&path);
        let store = MemoryStore::with_state_file(path.clone()).unwrap();
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"target":"http://127.0.0.1:9","user":"a"}"#).unwrap();
        store
            .add(
                "/user/a",
                Target::parse("http://127.0.0.1:9").unwrap(),
                data,
            )
            .await
            .unwrap();
        store
            .add(
                "/x",
                Target::parse("http://127.0.0.1:8").unwrap(),
                Map::new(),
            )
            .await
            .unwrap();
        assert!(store.delete("/x").await.unwrap());
        store
            .table
            .get("/user/a")
            .unwrap()
            .touch_at(4_000_000_000_000);
        store.close().await.unwrap();

        let again = MemoryStore::with_state_file(path.clone()).unwrap();
        let route = again.get("/user/a").await.unwrap().unwrap();
        assert_eq!(route.target().as_str(), "http://127.0.0.1:9");
        assert_eq!(route.last_activity_ms(), 4_000_000_000_000);
        assert!(again.get("/x").await.unwrap().is_none());
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");

        std::fs::write(&path, b"{not json").unwrap();
        assert!(MemoryStore::with_state_file(path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
