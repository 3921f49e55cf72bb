//! [`StrMap`]: the replica's compact form of a `{string: string}` map column (`external_ids`,
//! `options`).
//!
//! A `BTreeMap<String, String>` of five entries costs ≈ 880 heap bytes (a 544-byte node and ten
//! strings); the same map here is one boxed slice of (interned key, value) pairs sorted by key,
//! ≈ 380 bytes, and nothing at all when empty. Keys repeat across every row (`ovn-peerd:owner`,
//! `neutron:...`): each distinct key is stored once, shared by all rows, in a pool of at most
//! [`MAX_INTERNED_KEYS`] (when full it drops its less shared half: an unbounded set of keys
//! must not grow the interner for ever, and the keys every row holds must stay shared). A
//! value of up to 24 bytes (a peering's name, a generation, a side, an address) is stored
//! inline, no allocation; a longer one (a deployment's uuid, on every row it wrote) is shared
//! through a pool of its own, bounded the same way (so that one-off foreign values never take
//! the keys' places). A pair is 40 bytes, so ovn-peerd's five markers cost one 224-byte block
//! instead of six allocations (README, *Memory at 100,000 peerings*). Immutable once built: a
//! change builds a new map (the replica's rows are
//! copied on write anyway).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use compact_str::CompactString;

/// Distinct keys shared between rows, at most (and as many values, in a pool of their own).
pub const MAX_INTERNED_KEYS: usize = 4096;
/// Longer keys and values are not interned (any NB writer chooses them: the interner keeps what
/// it holds until a prune, so it holds only short ones).
pub const MAX_INTERNED_KEY_LEN: usize = 64;
/// Maps of at most this many keys are scanned by [`StrMap::get`], not searched.
const SCAN_MAX: usize = 8;
/// Values up to this long are stored inline ([`CompactString`]'s capacity).
pub const MAX_INLINE_VALUE_LEN: usize = std::mem::size_of::<CompactString>();

/// A bounded pool of shared strings. Keys and values have one each, so that a shared NB's
/// one-off values (neutron's per-row uuids) never take the keys' places. When the pool is full
/// it first drops its less shared half (the entries held by no map, or by fewest): a value
/// ovn-peerd writes on every row of a deployment is held by thousands of maps and stays, a
/// foreign row's uuid goes. A dropped entry stays valid in the maps that hold it (they keep
/// their `Arc`); only later maps get a fresh copy. Each prune frees at least half the pool, so
/// its cost is O(1) a string on average.
#[derive(Debug)]
struct Pool {
    set: HashSet<Arc<str>>,
    cap: usize,
}

impl Pool {
    fn new(cap: usize) -> Self {
        Pool {
            set: HashSet::new(),
            cap,
        }
    }

    /// The shared copy of `s` (its own copy when `s` is too long to be interned).
    fn intern(&mut self, s: &str) -> Arc<str> {
        if s.len() > MAX_INTERNED_KEY_LEN {
            return Arc::from(s);
        }
        if let Some(k) = self.set.get(s) {
            return k.clone();
        }
        if self.set.len() >= self.cap {
            self.prune();
        }
        let k: Arc<str> = Arc::from(s);
        self.set.insert(k.clone());
        k
    }

    /// Drops the less shared half: every entry held by no more maps than the median one.
    fn prune(&mut self) {
        let mut counts: Vec<usize> = self.set.iter().map(Arc::strong_count).collect();
        let mid = counts.len() / 2;
        let median = *counts.select_nth_unstable(mid).1;
        self.set.retain(|a| Arc::strong_count(a) > median);
    }
}

static KEYS: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(Pool::new(MAX_INTERNED_KEYS)));
static VALUES: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(Pool::new(MAX_INTERNED_KEYS)));

fn locked(pool: &'static LazyLock<Mutex<Pool>>, s: &str) -> Arc<str> {
    if s.len() > MAX_INTERNED_KEY_LEN {
        return Arc::from(s);
    }
    pool.lock().unwrap_or_else(|e| e.into_inner()).intern(s)
}

/// The shared copy of a key.
fn intern(key: &str) -> Arc<str> {
    locked(&KEYS, key)
}

/// The shared copy of a value too long to be inline.
fn intern_value(value: &str) -> Arc<str> {
    locked(&VALUES, value)
}

/// A map's value: inline when it fits, else shared (the choice is the length's alone, so equal
/// values are always the same variant and the derived equality holds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Value {
    Inline(CompactString),
    Shared(Arc<str>),
}

impl Value {
    fn new(v: &str) -> Self {
        if v.len() <= MAX_INLINE_VALUE_LEN {
            Value::Inline(CompactString::from(v))
        } else {
            Value::Shared(intern_value(v))
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Value::Inline(s) => s,
            Value::Shared(s) => s,
        }
    }
}

/// A `{string: string}` map, sorted by key, keys interned (see the module doc).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StrMap(Box<[(Arc<str>, Value)]>);

impl StrMap {
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.0[i].1.as_str())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Where `key` is. A small map (ours: five marks of distinct lengths) is scanned,
    /// lengths compared first: cheaper than a binary search's ordered compares of keys that
    /// share their first ten bytes (`ovn-peerd:`); a full pass asks it of every row.
    fn position(&self, key: &str) -> Option<usize> {
        if self.0.len() <= SCAN_MAX {
            return self.0.iter().position(|(k, _)| **k == *key);
        }
        self.find(key).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In key order.
    pub fn iter(&self) -> Iter<'_> {
        self.into_iter()
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
                Ok(i) if v[i].1.as_str() == val => {
                    v.remove(i);
                }
                Ok(i) => v[i].1 = Value::new(&val),
                Err(i) => v.insert(i, (intern(&k), Value::new(&val))),
            }
        }
        self.0 = v.into_boxed_slice();
    }

    /// A plain map (for code that builds or edits one, e.g. a desired row).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// From pairs in any order; a repeated key keeps its last value (as `BTreeMap` does).
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for StrMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: Vec<(Arc<str>, Value)> = iter
            .into_iter()
            .map(|(k, v)| (intern(k.as_ref()), Value::new(v.as_ref())))
            .collect();
        // Stable: equal keys keep their order, then the last one wins.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Arc<str>, Value)> = Vec::with_capacity(pairs.len());
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

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for StrMap {
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
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1.as_str())
    }
}

impl fmt::Debug for StrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a StrMap {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        Iter(self.0.iter())
    }
}

/// A [`StrMap`]'s pairs in key order.
pub struct Iter<'a>(std::slice::Iter<'a, (Arc<str>, Value)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (&**k, v.as_str()))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_map_with_shared_keys() {
        let m = StrMap::from([("b", "2"), ("a", "1"), ("c", "3"), ("a", "9")]);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("a"), Some("9"));
        assert_eq!(m.get("b"), Some("2"));
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
        assert_eq!(x.get(&long), Some("1"));
        assert_ne!(m, StrMap::from([("a", "9"), ("b", "2")]));
    }

    /// Small maps are scanned, bigger ones searched: both find what a `BTreeMap` finds,
    /// keys of equal length and shared prefixes included.
    #[test]
    fn lookups_agree_with_a_btreemap_scanned_or_searched() {
        for n in [0, 1, 5, SCAN_MAX, SCAN_MAX + 1, 40] {
            let plain: BTreeMap<String, String> = (0..n)
                .map(|i| (format!("ovn-peerd:k{}", i * 7 % 11), format!("v{i}")))
                .collect();
            let m = StrMap::from(plain.clone());
            for i in 0..14 {
                for key in [
                    format!("ovn-peerd:k{i}"),
                    format!("ovn-peerd:x{i}"),
                    String::new(),
                ] {
                    assert_eq!(
                        m.get(&key),
                        plain.get(&key).map(String::as_str),
                        "{n} {key}"
                    );
                    assert_eq!(m.contains_key(&key), plain.contains_key(&key));
                }
            }
        }
    }

    /// A short value is inline (no allocation of its own); a long one is one shared copy for
    /// every map holding it (a deployment's id on each of its rows), up to the interner's bound
    /// on length; a pair stays 40 bytes.
    #[test]
    fn values_are_inline_when_short_and_shared_when_long() {
        fn shared(v: &Value) -> &Arc<str> {
            match v {
                Value::Shared(s) => s,
                Value::Inline(s) => panic!("{s:?} is inline"),
            }
        }
        assert_eq!(std::mem::size_of::<(Arc<str>, Value)>(), 40);
        let short = "x".repeat(MAX_INLINE_VALUE_LEN);
        let long = "y".repeat(MAX_INLINE_VALUE_LEN + 1);
        let a = StrMap::from([("k", &*short), ("l", &*long)]);
        let b = StrMap::from([("k", &*short), ("m", &*long)]);
        assert!(matches!(a.0[0].1, Value::Inline(_)));
        assert!(Arc::ptr_eq(shared(&a.0[1].1), shared(&b.0[1].1)));
        assert_eq!((a.get("k"), a.get("l")), (Some(&*short), Some(&*long)));
        assert_eq!(a, StrMap::from([("l", &*long), ("k", &*short)]));
        // A diff's new value takes the same forms.
        let mut c = StrMap::from([("k", "v")]);
        c.apply_diff([
            ("k".to_owned(), long.clone()),
            ("s".to_owned(), short.clone()),
        ]);
        assert!(Arc::ptr_eq(shared(&a.0[1].1), shared(&c.0[0].1)));
        assert!(matches!(c.0[1].1, Value::Inline(_)));
        // Past the interner's bound on length: a copy of its own, equal all the same.
        let huge = "z".repeat(MAX_INTERNED_KEY_LEN + 1);
        let (d, e) = (StrMap::from([("k", &*huge)]), StrMap::from([("k", &*huge)]));
        assert!(!Arc::ptr_eq(shared(&d.0[0].1), shared(&e.0[0].1)));
        assert_eq!(d, e);
    }

    /// A full pool makes room: the values of dropped maps, then foreign values held by one map
    /// each, go, and a new value is shared again; a value many maps hold survives the prune.
    #[test]
    fn a_full_pool_keeps_sharing_what_is_shared() {
        let mut pool = Pool::new(8);
        let foreign = |i: usize| format!("neutron-{i:036}");
        // Values of maps since dropped.
        for i in 0..8 {
            drop(pool.intern(&foreign(i)));
        }
        let id = "11111111-2222-3333-4444-555555555555";
        let a = pool.intern(id);
        assert!(Arc::ptr_eq(&a, &pool.intern(id)));
        // Our id on many rows; then more foreign values than the pool holds, each on one row.
        let ours: Vec<Arc<str>> = (0..100).map(|_| pool.intern(id)).collect();
        let held: Vec<Arc<str>> = (8..40).map(|i| pool.intern(&foreign(i))).collect();
        assert!(pool.set.len() <= 8);
        assert!(
            Arc::ptr_eq(&ours[0], &pool.intern(id)),
            "a shared value was dropped"
        );
        // A new value is shared although every foreign value is still held.
        let new = "99999999-2222-3333-4444-555555555555";
        assert!(Arc::ptr_eq(&pool.intern(new), &pool.intern(new)));
        assert_eq!(&*held[31], foreign(39));
    }

    /// Keys and values have pools of their own: values never take the keys' places.
    #[test]
    fn keys_and_values_have_pools_of_their_own() {
        let long = "v".repeat(MAX_INLINE_VALUE_LEN + 3);
        let m = StrMap::from([(&*long, &*long)]);
        let Value::Shared(v) = &m.0[0].1 else {
            panic!("a long value is shared")
        };
        assert!(!Arc::ptr_eq(&m.0[0].0, v));
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
