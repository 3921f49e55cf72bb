//! [`StrMap`]: the replica's compact form of a `{string: string}` map column (`external_ids`,
//! `options`).
//!
//! A `BTreeMap<String, String>` of five entries costs ≈ 880 heap bytes (a 544-byte node and ten
//! strings); the same map here is one boxed slice of (interned key, value) pairs sorted by key,
//! ≈ 380 bytes, and nothing at all when empty. Keys repeat across every row (`ovn-peerd:owner`,
//! `neutron:...`): each distinct key is stored once, shared by all rows, up to
//! [`MAX_INTERNED_KEYS`] (past that a key gets its own copy: an unbounded set of keys must not
//! grow the interner for ever). Values keep their `String` so lookups read like a `BTreeMap`'s
//! (`get(k).cloned()`, `.map(String::as_str)`). Immutable once built: a change builds a new map
//! (the replica's rows are copied on write anyway).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

/// Distinct keys shared between rows, at most.
pub const MAX_INTERNED_KEYS: usize = 4096;
/// Longer keys are not interned (any NB writer chooses keys: the interner keeps what it holds
/// for the life of the process, so it holds only short, repeated ones).
pub const MAX_INTERNED_KEY_LEN: usize = 64;

static KEYS: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(Mutex::default);

/// The shared copy of `key`.
fn intern(key: &str) -> Arc<str> {
    if key.len() > MAX_INTERNED_KEY_LEN {
        return Arc::from(key);
    }
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = keys.get(key) {
        return k.clone();
    }
    let k: Arc<str> = Arc::from(key);
    if keys.len() < MAX_INTERNED_KEYS {
        keys.insert(k.clone());
    }
    k
}

/// A `{string: string}` map, sorted by key, keys interned (see the module doc).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StrMap(Box<[(Arc<str>, String)]>);

impl StrMap {
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &String)> + '_ {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// Applies an `update2` map diff: a pair equal to one held removes it, another value for
    /// a held key replaces it, a new key is added.
    pub fn apply_diff(&mut self, diff: impl IntoIterator<Item = (String, String)>) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        for (k, val) in diff {
            match v.binary_search_by(|(x, _)| (**x).cmp(k.as_str())) {
                Ok(i) if v[i].1 == val => {
                    v.remove(i);
                }
                Ok(i) => v[i].1 = val,
                Err(i) => v.insert(i, (intern(&k), val)),
            }
        }
        self.0 = v.into_boxed_slice();
    }

    /// A plain map (for code that builds or edits one, e.g. a desired row).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }
}

/// From pairs in any order; a repeated key keeps its last value (as `BTreeMap` does).
impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for StrMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: Vec<(Arc<str>, String)> = iter
            .into_iter()
            .map(|(k, v)| (intern(k.as_ref()), v.into()))
            .collect();
        // Stable: equal keys keep their order, then the last one wins.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Arc<str>, String)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        StrMap(out.into_boxed_slice())
    }
}

impl From<BTreeMap<String, String>> for StrMap {
    fn from(m: BTreeMap<String, String>) -> Self {
        m.into_iter().collect()
    }
}

impl<K: AsRef<str>, V: Into<String>, const N: usize> From<[(K, V); N]> for StrMap {
    fn from(a: [(K, V); N]) -> Self {
        a.into_iter().collect()
    }
}

impl From<&StrMap> for BTreeMap<String, String> {
    fn from(m: &StrMap) -> Self {
        m.to_map()
    }
}

impl PartialEq<BTreeMap<String, String>> for StrMap {
    fn eq(&self, other: &BTreeMap<String, String>) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
    }
}

impl fmt::Debug for StrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a StrMap {
    type Item = (&'a str, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, String)>,
        fn(&'a (Arc<str>, String)) -> (&'a str, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (&**k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_map_with_shared_keys() {
        let m = StrMap::from([("b", "2"), ("a", "1"), ("c", "3"), ("a", "9")]);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("a").map(String::as_str), Some("9"));
        assert_eq!(m.get("b").cloned(), Some("2".to_owned()));
        assert!(m.get("z").is_none() && !m.contains_key("z") && m.contains_key("c"));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        let plain = m.to_map();
        assert_eq!(m, plain);
        assert_eq!(StrMap::from(plain.clone()), m);
        assert_eq!(format!("{m:?}"), format!("{plain:?}"));
        // One copy of a key for every map holding it.
        let n = StrMap::from([("b", "other")]);
        assert!(Arc::ptr_eq(&m.0[1].0, &n.0[0].0));
        assert!(StrMap::new().is_empty());
        // A long key is its own copy: the interner keeps only short ones.
        let long = "k".repeat(MAX_INTERNED_KEY_LEN + 1);
        let (x, y) = (StrMap::from([(&*long, "1")]), StrMap::from([(&*long, "2")]));
        assert!(!Arc::ptr_eq(&x.0[0].0, &y.0[0].0));
        assert_eq!(x.get(&long).map(String::as_str), Some("1"));
        assert_ne!(m, StrMap::from([("a", "9"), ("b", "2")]));
    }

    #[test]
    fn a_diff_removes_replaces_and_adds() {
        let mut m = StrMap::from([("k1", "v1"), ("k2", "v2"), ("k3", "v3")]);
        let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        m.apply_diff([s("k1", "v1"), s("k2", "new"), s("k4", "v4")]);
        assert_eq!(m, StrMap::from([("k2", "new"), ("k3", "v3"), ("k4", "v4")]));
        m.apply_diff([s("k2", "new"), s("k3", "v3"), s("k4", "v4")]);
        assert!(m.is_empty());
    }
}
