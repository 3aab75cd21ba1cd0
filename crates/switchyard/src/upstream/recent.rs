//! A small least-recently-used map: the per-target clients of targets that
//! may speak HTTP/2.

use std::collections::HashMap;

/// A bounded map from target URL to its client. When it is full, a new target
/// takes the place of the one used longest ago: that client's idle connections
/// close, requests in flight keep theirs. Finding the victim scans the map, which
/// happens only when a target not seen recently arrives at a full map.
pub(crate) struct Recent<V> {
    capacity: usize,
    /// Counts uses; each entry keeps the count of its last use.
    clock: u64,
    entries: HashMap<String, (V, u64)>,
}

impl<V: Clone> Recent<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
        }
    }

    pub(crate) fn get_or_insert(&mut self, key: &str, make: impl FnOnce() -> V) -> V {
        self.clock += 1;
        if let Some((value, used)) = self.entries.get_mut(key) {
            *used = self.clock;
            return value.clone();
        }
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let value = make();
        self.entries
            .insert(key.to_owned(), (value.clone(), self.clock));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn a_full_map_drops_the_client_used_longest_ago() {
        let mut made = Vec::new();
        let mut recent = Recent::new(2);
        let mut get = |recent: &mut Recent<String>, key: &str| {
            recent.get_or_insert(key, || {
                made.push(key.to_owned());
                format!("client of {key}")
            })
        };
        assert_eq!(get(&mut recent, "a"), "client of a");
        get(&mut recent, "b");
        // `a` is used again, so `b` is now the one used longest ago.
        assert_eq!(get(&mut recent, "a"), "client of a");
        get(&mut recent, "c");
        // `a` kept its client; `b` lost its own and gets a new one.
        get(&mut recent, "a");
        get(&mut recent, "b");
        assert_eq!(made, ["a", "b", "c", "b"]);
        assert_eq!(recent.entries.len(), 2);
        assert!(recent.entries.contains_key("a") && recent.entries.contains_key("b"));
    }
}
