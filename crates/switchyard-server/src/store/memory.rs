//! The default store: the engine's lock-free [`RouteTable`] is the whole store.

use std::sync::Arc;

use serde_json::{Map, Value};
use switchyard::routing::{RouteError, RouteMatch, RouteTable};

use super::{Route, RouteStore, StoreError, StoreFuture, Target};
use crate::time;

/// Routes in memory, lost on restart (the Hub re-adds them), as CHP's `MemoryStore`.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    table: RouteTable<Route>,
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl RouteStore for MemoryStore {
    fn add<'a>(
        &'a self,
        key: &'a str,
        target: Target,
        data: Map<String, Value>,
    ) -> StoreFuture<'a, ()> {
        let route = Route::new(key, target, data, time::now_ms());
        let result = self
            .table
            .insert(key, route)
            .map(drop)
            .map_err(|_: RouteError| StoreError::TooDeep);
        Box::pin(std::future::ready(result))
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<Route>>> {
        Box::pin(std::future::ready(Ok(self.table.get(key))))
    }

    fn get_all(&self) -> StoreFuture<'_, Vec<Arc<Route>>> {
        let all = self
            .table
            .snapshot()
            .entries()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        Box::pin(std::future::ready(Ok(all)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.table.remove(key).is_some())))
    }

    fn update_last_activity<'a>(&'a self, key: &'a str, at_ms: i64) -> StoreFuture<'a, ()> {
        if let Some(route) = self.table.get(key) {
            route.touch_at(at_ms);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn lookup(&self, path: &str) -> Option<RouteMatch<Route>> {
        self.table.lookup(path)
    }
}
