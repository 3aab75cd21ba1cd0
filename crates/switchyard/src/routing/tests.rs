//! Unit tests and a model-based property test of the route table (CHP `trie_spec.js` rules).

use std::collections::BTreeMap;
use std::time::Instant;

use proptest::prelude::*;

use super::*;

fn table(keys: &[&str]) -> RouteTable<String> {
    let t = RouteTable::new();
    for k in keys {
        t.insert(k, (*k).to_owned()).unwrap();
    }
    t
}

fn hit(t: &RouteTable<String>, path: &str) -> Option<String> {
    t.lookup(path).map(|m| m.prefix.to_string())
}

#[test]
fn normalize_key_is_chp_trim_prefix() {
    assert_eq!(normalize_key(""), "/");
    assert_eq!(normalize_key("/"), "/");
    assert_eq!(normalize_key("a"), "/a");
    assert_eq!(normalize_key("a/"), "/a");
    assert_eq!(normalize_key("/a/"), "/a");
    assert_eq!(normalize_key("/a//"), "/a/");
    assert_eq!(normalize_key("//"), "/");
}

#[test]
fn segments_ignore_outer_slashes_keep_inner_empties() {
    let s = |p| segments(p).collect::<Vec<_>>();
    assert!(s("/").is_empty());
    assert!(s("").is_empty());
    assert!(s("///").is_empty());
    assert_eq!(s("/a/b/"), ["a", "b"]);
    assert_eq!(s("/a//b"), ["a", "", "b"]);
    assert_eq!(s("//double"), ["double"]);
}

#[test]
fn longest_segment_prefix_wins() {
    let t = table(&["/", "/user", "/user/foo", "/user/foo/bar/baz"]);
    assert_eq!(hit(&t, "/user/foo").as_deref(), Some("/user/foo"));
    assert_eq!(hit(&t, "/user/foo/").as_deref(), Some("/user/foo"));
    assert_eq!(hit(&t, "/user/foo/x").as_deref(), Some("/user/foo"));
    assert_eq!(hit(&t, "/user/foo/bar").as_deref(), Some("/user/foo"));
    assert_eq!(
        hit(&t, "/user/foo/bar/baz/q").as_deref(),
        Some("/user/foo/bar/baz")
    );
    assert_eq!(hit(&t, "/user/foobar").as_deref(), Some("/user"));
    assert_eq!(hit(&t, "/users").as_deref(), Some("/"));
    assert_eq!(hit(&t, "").as_deref(), Some("/"));
}

#[test]
fn no_catch_all_means_no_match() {
    let t = table(&["/a"]);
    assert_eq!(hit(&t, "/ab"), None);
    assert_eq!(hit(&t, "/"), None);
    assert_eq!(hit(&t, "/a").as_deref(), Some("/a"));
}

#[test]
fn depth_counts_key_segments() {
    let t = table(&["/", "/h.io/a"]);
    assert_eq!(t.lookup("/x").unwrap().depth, 0);
    assert_eq!(t.lookup("/h.io/a/b").unwrap().depth, 2);
}

#[test]
fn js_object_names_are_plain_segments() {
    let t = table(&["/"]);
    for p in [
        "/__proto__",
        "/constructor/x",
        "/toString",
        "/hasOwnProperty",
    ] {
        assert_eq!(hit(&t, p).as_deref(), Some("/"), "{p}");
    }
    t.insert("/__proto__", "p".to_owned()).unwrap();
    assert_eq!(hit(&t, "/__proto__/x").as_deref(), Some("/__proto__"));
}

#[test]
fn odd_inputs_never_panic() {
    let t = table(&["/", "/%", "/é/ü"]);
    let huge = "/a".repeat(100_000);
    for p in [
        "",
        "%",
        "/%",
        "/%ZZ",
        "\u{0}",
        "/\u{fffd}",
        "/é/ü/x",
        "////",
        &huge,
    ] {
        let _ = t.lookup(p);
        let _ = t.get(p);
    }
    assert_eq!(hit(&t, "/é/ü/x").as_deref(), Some("/é/ü"));
    assert_eq!(t.insert(&huge, String::new()), Err(RouteError::TooDeep));
    assert!(t.remove(&huge).is_none());
    assert!(
        t.insert(&"/a".repeat(MAX_KEY_SEGMENTS), String::new())
            .is_ok()
    );
}

#[test]
fn replace_keeps_order_remove_prunes() {
    let t = table(&["/b", "/a", "/c/d"]);
    t.insert("/b/", "B".to_owned()).unwrap();
    let keys: Vec<_> = t.snapshot().entries().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys.iter().map(|k| &**k).collect::<Vec<_>>(),
        ["/b", "/a", "/c/d"]
    );
    assert_eq!(t.get("/b").as_deref().map(String::as_str), Some("B"));
    assert_eq!(
        t.remove("/c/d").as_deref().map(String::as_str),
        Some("/c/d")
    );
    assert!(t.remove("/c/d").is_none());
    assert!(t.remove("/c").is_none());
    assert_eq!(t.len(), 2);
    // a removed then re-added key goes to the end
    t.remove("/b");
    t.insert("/b", "b".to_owned()).unwrap();
    let keys: Vec<_> = t.snapshot().entries().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.iter().map(|k| &**k).collect::<Vec<_>>(), ["/a", "/b"]);
}

#[test]
fn intermediate_nodes_survive_removal_of_leaves() {
    let t = table(&["/a", "/a/b/c"]);
    t.remove("/a/b/c");
    assert_eq!(hit(&t, "/a/b/c").as_deref(), Some("/a"));
    t.insert("/a/b/c", String::new()).unwrap();
    t.remove("/a");
    assert_eq!(hit(&t, "/a/b"), None);
    assert_eq!(hit(&t, "/a/b/c/d").as_deref(), Some("/a/b/c"));
}

/// A node's children move from a vector to a map past `FEW` and back well below it; every
/// route stays reachable, in insertion order, and an old snapshot keeps its own view.
#[test]
fn wide_nodes_switch_representation_both_ways() {
    let n = super::FEW * 3;
    let t = table(&["/"]);
    for i in 0..n {
        t.insert(&format!("/user/u{i}"), format!("u{i}")).unwrap();
    }
    let wide = t.snapshot();
    for i in 0..n {
        assert_eq!(
            *t.lookup(&format!("/user/u{i}/x")).unwrap().value,
            format!("u{i}")
        );
    }
    for i in (1..n).rev() {
        assert!(t.remove(&format!("/user/u{i}")).is_some(), "u{i}");
        assert!(t.lookup(&format!("/user/u{i}")).unwrap().prefix.as_ref() == "/");
        assert_eq!(*t.lookup("/user/u0").unwrap().value, "u0");
    }
    let keys: Vec<String> = wide.entries().iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys.len(), n + 1);
    assert_eq!(keys[1], "/user/u0");
    assert_eq!(keys[n], format!("/user/u{}", n - 1));
    assert_eq!(t.len(), 2);
}

#[test]
fn snapshots_are_isolated_from_later_writes() {
    let t = table(&["/x"]);
    let before = t.snapshot();
    t.insert("/y", String::new()).unwrap();
    t.remove("/x");
    assert_eq!(before.len(), 1);
    assert!(before.lookup("/x/1").is_some());
    assert!(before.lookup("/y").is_none());
    assert!(t.lookup("/x").is_none());
}

#[test]
fn ten_thousand_routes_are_fast_to_add_and_list() {
    // Not a timing assertion (those belong in benches): a smoke check that adding is not
    // quadratic; the durations are printed for the record.
    let t = RouteTable::new();
    let start = Instant::now();
    for i in 0..10_000 {
        t.insert(&format!("/user/u{i}"), i).unwrap();
    }
    let added = start.elapsed();
    let start = Instant::now();
    let all = t.snapshot().entries();
    let listed = start.elapsed();
    assert_eq!(all.len(), 10_000);
    assert_eq!(*all[9_999].1, 9_999);
    assert_eq!(*t.lookup("/user/u4242/lab").unwrap().value, 4242);
    println!("10k inserts: {added:?}, list: {listed:?}");
}

/// Naive model: a list of keys; lookup scans for the longest segment prefix.
fn model_lookup(model: &BTreeMap<Vec<String>, (String, u32)>, path: &str) -> Option<(String, u32)> {
    let segs: Vec<String> = segments(path).map(str::to_owned).collect();
    model
        .iter()
        .filter(|(k, _)| k.len() <= segs.len() && segs[..k.len()] == k[..])
        .max_by_key(|(k, _)| k.len())
        .map(|(_, v)| v.clone())
}

fn path_strategy() -> impl Strategy<Value = String> {
    // More than `FEW` names, so that nodes also switch between a vector and a map.
    let seg = prop::sample::select(vec![
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
        "g",
        "h",
        "i",
        "",
        "__proto__",
        "é",
        "%",
        "a b",
    ]);
    (
        prop::collection::vec(seg, 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segs, lead, trail)| {
            let mut p = segs.join("/");
            if lead {
                p.insert(0, '/');
            }
            if trail {
                p.push('/');
            }
            p
        })
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, u32),
    Remove(String),
    Lookup(String),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path_strategy(), any::<u32>()).prop_map(|(p, v)| Op::Insert(p, v)),
        path_strategy().prop_map(Op::Remove),
        path_strategy().prop_map(Op::Lookup),
    ]
}

proptest! {
    #[test]
    fn behaves_like_the_naive_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let t = RouteTable::new();
        let mut model: BTreeMap<Vec<String>, (String, u32)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(p, v) => {
                    let key = normalize_key(&p).into_owned();
                    let segs = segments(&key).map(str::to_owned).collect();
                    let old = t.insert(&p, v).unwrap().map(|v| *v);
                    let model_old = model.insert(segs, (key, v)).map(|(_, v)| v);
                    prop_assert_eq!(old, model_old);
                }
                Op::Remove(p) => {
                    let key = normalize_key(&p).into_owned();
                    let segs: Vec<String> = segments(&key).map(str::to_owned).collect();
                    prop_assert_eq!(t.remove(&p).map(|v| *v), model.remove(&segs).map(|(_, v)| v));
                }
                Op::Lookup(p) => {
                    let got = t.lookup(&p).map(|m| (m.prefix.to_string(), *m.value));
                    prop_assert_eq!(got, model_lookup(&model, &p));
                }
            }
            prop_assert_eq!(t.len(), model.len());
        }
        let mut listed: Vec<u32> = t.snapshot().entries().into_iter().map(|(_, v)| *v).collect();
        let mut expected: Vec<u32> = model.values().map(|(_, v)| *v).collect();
        listed.sort_unstable();
        expected.sort_unstable();
        prop_assert_eq!(listed, expected);
    }
}
