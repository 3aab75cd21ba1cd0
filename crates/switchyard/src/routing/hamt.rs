//! A small persistent hash map (hash array mapped trie) from path segments to values.
//!
//! Every update returns a new map that shares all untouched nodes with the old one, so a
//! trie node with 100,000 children can gain a child in O(log32 n) time and memory instead
//! of copying a `HashMap` of 100,000 entries. Depth is bounded: 64-bit hashes consume 5
//! bits per level, and after [`MAX_LEVEL`] levels colliding keys share a linear bucket.

use std::sync::Arc;

/// Bits of the hash consumed per level.
const BITS: u32 = 5;
/// Levels before falling back to a linear collision bucket (12 × 5 = 60 bits).
const MAX_LEVEL: u32 = 12;

/// A persistent map keyed by `Arc<str>`; the caller supplies the 64-bit hash of each key.
#[derive(Debug)]
pub(crate) struct PersistentMap<T> {
    root: Option<Arc<HNode<T>>>,
    len: usize,
}

#[derive(Debug)]
enum HNode<T> {
    /// Bitmap-compressed branch: `slots[popcount(bitmap & (bit - 1))]`.
    Branch { bitmap: u32, slots: Vec<Slot<T>> },
    /// Keys whose hashes are equal in all the bits used so far.
    Bucket(Vec<(u64, Arc<str>, T)>),
}

#[derive(Debug)]
enum Slot<T> {
    Leaf(u64, Arc<str>, T),
    Node(Arc<HNode<T>>),
}

// === impl PersistentMap ===

impl<T> Clone for PersistentMap<T> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for PersistentMap<T> {
    fn default() -> Self {
        Self { root: None, len: 0 }
    }
}

impl<T: Clone> PersistentMap<T> {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn get(&self, hash: u64, key: &str) -> Option<&T> {
        let mut node = self.root.as_deref()?;
        let mut level = 0;
        loop {
            match node {
                HNode::Bucket(items) => {
                    return items
                        .iter()
                        .find(|(h, k, _)| *h == hash && &**k == key)
                        .map(|(_, _, v)| v);
                }
                HNode::Branch { bitmap, slots } => {
                    let bit = bit_for(hash, level);
                    if bitmap & bit == 0 {
                        return None;
                    }
                    match &slots[index(*bitmap, bit)] {
                        Slot::Leaf(h, k, v) => {
                            return (*h == hash && &**k == key).then_some(v);
                        }
                        Slot::Node(child) => {
                            node = child;
                            level += 1;
                        }
                    }
                }
            }
        }
    }

    /// Returns a new map with `key` set to `value`.
    pub(crate) fn insert(&self, hash: u64, key: Arc<str>, value: T) -> Self {
        let (root, added) = match self.root.as_deref() {
            None => (
                HNode::Branch {
                    bitmap: bit_for(hash, 0),
                    slots: vec![Slot::Leaf(hash, key, value)],
                },
                true,
            ),
            Some(node) => insert_node(node, 0, hash, key, value),
        };
        Self {
            root: Some(Arc::new(root)),
            len: self.len + usize::from(added),
        }
    }

    /// Returns a new map without `key`, or `None` when the key is absent.
    pub(crate) fn remove(&self, hash: u64, key: &str) -> Option<Self> {
        let node = self.root.as_deref()?;
        let new_root = remove_node(node, 0, hash, key)?;
        Some(Self {
            root: new_root.map(Arc::new),
            len: self.len - 1,
        })
    }

    /// Calls `f` for every value (in no particular order).
    pub(crate) fn for_each<'a>(&'a self, mut f: impl FnMut(&'a T)) {
        let Some(root) = self.root.as_deref() else {
            return;
        };
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            match node {
                HNode::Bucket(items) => items.iter().for_each(|(_, _, v)| f(v)),
                HNode::Branch { slots, .. } => {
                    for slot in slots {
                        match slot {
                            Slot::Leaf(_, _, v) => f(v),
                            Slot::Node(child) => stack.push(child),
                        }
                    }
                }
            }
        }
    }
}

fn bit_for(hash: u64, level: u32) -> u32 {
    1 << ((hash >> (level * BITS)) & 0x1f)
}

fn index(bitmap: u32, bit: u32) -> usize {
    (bitmap & (bit - 1)).count_ones() as usize
}

/// Returns the new node and whether a key was added (false: replaced).
fn insert_node<T: Clone>(
    node: &HNode<T>,
    level: u32,
    hash: u64,
    key: Arc<str>,
    value: T,
) -> (HNode<T>, bool) {
    match node {
        HNode::Bucket(items) => {
            let mut items = items.clone();
            if let Some(slot) = items.iter_mut().find(|(h, k, _)| *h == hash && *k == key) {
                slot.2 = value;
                (HNode::Bucket(items), false)
            } else {
                items.push((hash, key, value));
                (HNode::Bucket(items), true)
            }
        }
        HNode::Branch { bitmap, slots } => {
            let bit = bit_for(hash, level);
            let idx = index(*bitmap, bit);
            let mut slots = slots.clone();
            if bitmap & bit == 0 {
                slots.insert(idx, Slot::Leaf(hash, key, value));
                return (
                    HNode::Branch {
                        bitmap: bitmap | bit,
                        slots,
                    },
                    true,
                );
            }
            let added = match &slots[idx] {
                Slot::Leaf(h, k, _) if *h == hash && *k == key => {
                    slots[idx] = Slot::Leaf(hash, key, value);
                    false
                }
                Slot::Leaf(h, k, v) => {
                    let child =
                        two_leaves(level + 1, (*h, k.clone(), v.clone()), (hash, key, value));
                    slots[idx] = Slot::Node(Arc::new(child));
                    true
                }
                Slot::Node(child) => {
                    let (child, added) = insert_node(child, level + 1, hash, key, value);
                    slots[idx] = Slot::Node(Arc::new(child));
                    added
                }
            };
            (
                HNode::Branch {
                    bitmap: *bitmap,
                    slots,
                },
                added,
            )
        }
    }
}

fn two_leaves<T>(level: u32, a: (u64, Arc<str>, T), b: (u64, Arc<str>, T)) -> HNode<T> {
    if level >= MAX_LEVEL {
        return HNode::Bucket(vec![a, b]);
    }
    let (bit_a, bit_b) = (bit_for(a.0, level), bit_for(b.0, level));
    if bit_a == bit_b {
        let child = two_leaves(level + 1, a, b);
        return HNode::Branch {
            bitmap: bit_a,
            slots: vec![Slot::Node(Arc::new(child))],
        };
    }
    let (first, second) = if bit_a < bit_b { (a, b) } else { (b, a) };
    HNode::Branch {
        bitmap: bit_a | bit_b,
        slots: vec![
            Slot::Leaf(first.0, first.1, first.2),
            Slot::Leaf(second.0, second.1, second.2),
        ],
    }
}

/// `None`: key absent. `Some(None)`: the node became empty.
#[allow(clippy::option_option)]
fn remove_node<T: Clone>(
    node: &HNode<T>,
    level: u32,
    hash: u64,
    key: &str,
) -> Option<Option<HNode<T>>> {
    match node {
        HNode::Bucket(items) => {
            let pos = items
                .iter()
                .position(|(h, k, _)| *h == hash && &**k == key)?;
            let mut items = items.clone();
            items.remove(pos);
            Some((!items.is_empty()).then_some(HNode::Bucket(items)))
        }
        HNode::Branch { bitmap, slots } => {
            let bit = bit_for(hash, level);
            if bitmap & bit == 0 {
                return None;
            }
            let idx = index(*bitmap, bit);
            let replacement = match &slots[idx] {
                Slot::Leaf(h, k, _) => {
                    if *h != hash || &**k != key {
                        return None;
                    }
                    None
                }
                Slot::Node(child) => remove_node(child, level + 1, hash, key)?,
            };
            let mut slots = slots.clone();
            let mut bitmap = *bitmap;
            match replacement {
                Some(child) => slots[idx] = Slot::Node(Arc::new(child)),
                None => {
                    slots.remove(idx);
                    bitmap &= !bit;
                }
            }
            Some((!slots.is_empty()).then_some(HNode::Branch { bitmap, slots }))
        }
    }
}

impl<T: Clone> Clone for Slot<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Leaf(h, k, v) => Self::Leaf(*h, k.clone(), v.clone()),
            Self::Node(n) => Self::Node(n.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_with_colliding_hashes() {
        // Force full collisions (same hash) and partial ones (same low bits).
        let mut map = PersistentMap::default();
        for i in 0..200u64 {
            let hash = if i % 2 == 0 { 7 } else { i << 40 | 7 };
            map = map.insert(hash, Arc::from(format!("k{i}")), i);
        }
        assert_eq!(map.len(), 200);
        for i in 0..200u64 {
            let hash = if i % 2 == 0 { 7 } else { i << 40 | 7 };
            assert_eq!(map.get(hash, &format!("k{i}")), Some(&i));
        }
        let old = map.clone();
        for i in 0..200u64 {
            let hash = if i % 2 == 0 { 7 } else { i << 40 | 7 };
            map = map.remove(hash, &format!("k{i}")).unwrap();
            assert!(map.get(hash, &format!("k{i}")).is_none());
        }
        assert!(map.is_empty());
        assert!(map.remove(7, "k0").is_none());
        // the old version is untouched
        assert_eq!(old.len(), 200);
        let mut n = 0;
        old.for_each(|_| n += 1);
        assert_eq!(n, 200);
    }
}
