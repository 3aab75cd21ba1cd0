//! The route table against a naive model: any sequence of inserts, removes
//! and lookups gives the same answers as a linear longest-segment-prefix
//! search over a map.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::routing::{RouteTable, normalize_key, segments as split};

#[derive(Arbitrary, Debug)]
enum Op {
    Insert(String, u8),
    Remove(String),
    Lookup(String),
}

/// The table's segment rule (outer slashes ignored, inner empty segments
/// kept); the model is a linear search over those segments.
fn segments(p: &str) -> Vec<&str> {
    split(p).collect()
}

fuzz_target!(|ops: Vec<Op>| {
    let table = RouteTable::new();
    let mut model: BTreeMap<String, u8> = BTreeMap::new();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Insert(k, v) => {
                if table.insert(&k, v).is_ok() {
                    // Keys are compared on their segments (`//a/` and `/a` are one route).
                    let norm = normalize_key(&k).into_owned();
                    model.retain(|m, _| segments(m) != segments(&norm));
                    model.insert(norm, v);
                }
            }
            Op::Remove(k) => {
                let norm = normalize_key(&k).into_owned();
                let removed = table.remove(&k).is_some();
                let before = model.len();
                model.retain(|m, _| segments(m) != segments(&norm));
                assert_eq!(removed, model.len() < before, "remove {k:?}");
            }
            Op::Lookup(p) => {
                let want = model
                    .iter()
                    .filter(|(k, _)| {
                        let ks = segments(k);
                        let ps = segments(&p);
                        ks.len() <= ps.len() && ks[..] == ps[..ks.len()]
                    })
                    .max_by_key(|(k, _)| segments(k).len())
                    .map(|(_, v)| *v);
                let got = table.lookup(&p).map(|m| *m.value);
                assert_eq!(got, want, "lookup {p:?} in {model:?}");
            }
        }
    }
});
