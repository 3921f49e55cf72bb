//! [`Members`]: the values of the replica's name and owner indexes (`cache`).

use std::collections::BTreeSet;
use std::sync::Arc;

/// Members in the small form at most; past this, a B-tree.
pub(super) const FEW_MEMBERS: usize = 8;

/// An index's members, in order. Nearly always a name's one router or a peering's few rows:
/// one member inline, or up to [`FEW_MEMBERS`] in an exact sorted slice that an edit rebuilds
/// (O(1): copying an index path costs a reference count each, not a set's 192-byte node). Past
/// that (N routers all named "", a writer putting one owner value on N foreign rows) a shared
/// `BTreeSet` edited in place (`make_mut`: a copy only while a snapshot shares it), so N inserts
/// under one key cost O(N log N), not O(N²).
#[derive(Debug, Clone)]
pub(super) enum Members<T> {
    One(T),
    Few(Arc<[T]>),
    Many(Arc<BTreeSet<T>>),
}

impl<T: Ord + Copy> Members<T> {
    fn as_slice(&self) -> Option<&[T]> {
        match self {
            Members::One(x) => Some(std::slice::from_ref(x)),
            Members::Few(v) => Some(v),
            Members::Many(_) => None,
        }
    }

    pub(super) fn iter(&self) -> MembersIter<'_, T> {
        match self {
            Members::Many(s) => MembersIter::Set(s.iter()),
            _ => MembersIter::Slice(self.as_slice().unwrap_or_default().iter()),
        }
    }

    pub(super) fn insert(&mut self, x: T) {
        match self {
            Members::Many(s) => {
                Arc::make_mut(s).insert(x);
            }
            _ => {
                let v = self.as_slice().unwrap_or_default();
                let Err(i) = v.binary_search(&x) else { return };
                *self = if v.len() < FEW_MEMBERS {
                    let mut n = Vec::with_capacity(v.len() + 1);
                    n.extend_from_slice(&v[..i]);
                    n.push(x);
                    n.extend_from_slice(&v[i..]);
                    Members::Few(n.into())
                } else {
                    Members::Many(Arc::new(v.iter().copied().chain([x]).collect()))
                };
            }
        }
    }

    /// Removes `x`; `false` when no member is left (the caller removes the key).
    #[must_use]
    pub(super) fn remove(&mut self, x: &T) -> bool {
        match self {
            Members::Many(s) => {
                if s.contains(x) {
                    Arc::make_mut(s).remove(x);
                }
                !s.is_empty()
            }
            _ => {
                let v = self.as_slice().unwrap_or_default();
                let Ok(i) = v.binary_search(x) else {
                    return true;
                };
                let mut rest = v[..i].iter().chain(&v[i + 1..]).copied();
                *self = match v.len() {
                    1 => return false,
                    2 => Members::One(rest.next().expect("one left")),
                    _ => Members::Few(rest.collect()),
                };
                true
            }
        }
    }
}

/// [`Members::iter`].
pub(super) enum MembersIter<'a, T> {
    Slice(std::slice::Iter<'a, T>),
    Set(std::collections::btree_set::Iter<'a, T>),
}

impl<'a, T> Iterator for MembersIter<'a, T> {
    type Item = &'a T;
    fn next(&mut self) -> Option<&'a T> {
        match self {
            MembersIter::Slice(i) => i.next(),
            MembersIter::Set(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One member inline, a few in a slice, a B-tree past [`FEW_MEMBERS`]; and back as they go.
    #[test]
    fn the_forms_one_member_at_a_time() {
        let mut m = Members::One(0u32);
        for x in 1..=FEW_MEMBERS as u32 {
            assert!(matches!(m, Members::One(_) | Members::Few(_)));
            m.insert(x);
        }
        assert!(matches!(m, Members::Many(_)));
        assert!(m.iter().copied().eq(0..=FEW_MEMBERS as u32));
        let mut m = Members::Few(Arc::new([3u32, 5, 7]));
        assert!(m.remove(&5) && matches!(m, Members::Few(_)));
        assert!(m.remove(&9) && m.remove(&3) && matches!(m, Members::One(7)));
        assert!(!m.remove(&7));
    }
}
