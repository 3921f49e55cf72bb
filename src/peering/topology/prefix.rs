//! "Every entry overlapping this prefix" without a scan: entries sorted by prefix (host bits
//! cleared) in one vector, and the set of prefix lengths present. The entries inside a query
//! are one range of the sorted vector; the entries containing it are one binary search per
//! shorter length present. Built once, read many times: the rules' index holds all VPCs'
//! entries in one vector ([`Grouped`]), so indexing a peering allocates nothing per VPC.

use ipnet::IpNet;

use crate::peering::overlaps;

/// Prefix lengths present, per family (bit `len` set): IPv4 0..=32, IPv6 0..=128.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lens {
    v4: u64,
    v6: [u64; 3],
}

impl Lens {
    pub(crate) fn insert(&mut self, net: &IpNet) {
        let len = usize::from(net.prefix_len());
        match net {
            IpNet::V4(_) => self.v4 |= 1 << len,
            IpNet::V6(_) => self.v6[len / 64] |= 1 << (len % 64),
        }
    }

    fn contains(&self, v6: bool, len: u8) -> bool {
        let len = usize::from(len);
        if v6 {
            self.v6[len / 64] & (1 << (len % 64)) != 0
        } else {
            self.v4 & (1 << len) != 0
        }
    }

    /// The lengths present in `q`'s family shorter than `q`'s, shortest first.
    fn shorter_than(self, q: &IpNet) -> impl Iterator<Item = u8> {
        let v6 = matches!(q, IpNet::V6(_));
        (0..q.prefix_len()).filter(move |&len| self.contains(v6, len))
    }
}

/// Entries sorted by prefix: a borrowed view answering overlap queries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefixes<'a, T> {
    /// Sorted by the prefix (host bits cleared).
    entries: &'a [(IpNet, T)],
    lens: Lens,
}

impl<'a, T> Prefixes<'a, T> {
    pub(crate) fn empty() -> Self {
        Prefixes {
            entries: &[],
            lens: Lens::default(),
        }
    }

    /// Every value whose prefix overlaps `q` (one contains the other): those containing `q`
    /// (shortest first), then those inside it (in prefix order).
    pub(crate) fn overlapping(&self, q: &IpNet) -> impl Iterator<Item = &'a T> + 'a {
        self.overlapping_entries(q).map(|(_, v)| v)
    }

    /// As [`Self::overlapping`], with each value's prefix.
    pub(crate) fn overlapping_entries(
        &self,
        q: &IpNet,
    ) -> impl Iterator<Item = &'a (IpNet, T)> + 'a {
        let q = q.trunc();
        let entries = self.entries;
        let containing = self.lens.shorter_than(&q).flat_map(move |len| {
            let key = IpNet::new(q.addr(), len).map(|k| k.trunc()).ok();
            let range = key.map_or(0..0, |k| equal_range(entries, &k));
            entries[range].iter()
        });
        let last = IpNet::new(q.broadcast(), q.max_prefix_len()).expect("host prefix");
        let from = entries.partition_point(|(k, _)| *k < q);
        let to = entries.partition_point(|(k, _)| *k <= last);
        let inside = entries[from..to.max(from)]
            .iter()
            .filter(move |(k, _)| overlaps(k, &q));
        containing.chain(inside)
    }
}

fn equal_range<T>(entries: &[(IpNet, T)], key: &IpNet) -> std::ops::Range<usize> {
    let from = entries.partition_point(|(k, _)| k < key);
    let to = entries.partition_point(|(k, _)| k <= key);
    from..to
}

/// Networks keyed by prefix, built once: [`Prefixes`] over an owned vector.
#[derive(Debug, Clone)]
pub struct PrefixMap<T> {
    entries: Vec<(IpNet, T)>,
    lens: Lens,
}

impl<T> PrefixMap<T> {
    /// Indexes `entries` (host bits of their prefixes are ignored).
    pub fn new(entries: impl IntoIterator<Item = (IpNet, T)>) -> Self {
        let mut lens = Lens::default();
        let mut entries: Vec<(IpNet, T)> = entries
            .into_iter()
            .map(|(n, v)| {
                let n = n.trunc();
                lens.insert(&n);
                (n, v)
            })
            .collect();
        entries.sort_by_key(|e| e.0);
        PrefixMap { entries, lens }
    }

    /// Every value whose network overlaps `q` (one contains the other), in no particular order.
    pub fn overlapping(&self, q: &IpNet) -> impl Iterator<Item = &T> + '_ {
        self.view().overlapping(q)
    }

    pub(crate) fn view(&self) -> Prefixes<'_, T> {
        Prefixes {
            entries: &self.entries,
            lens: self.lens,
        }
    }
}

/// Entries of many groups (VPCs, numbered 0..n) in one sorted vector: group `g`'s entries are
/// one range of it, with their own prefix lengths.
#[derive(Debug, Clone)]
pub(crate) struct Grouped<T> {
    entries: Vec<(IpNet, T)>,
    /// Group g's entries are `entries[starts[g]..starts[g + 1]]`.
    starts: Vec<usize>,
    lens: Vec<Lens>,
}

impl<T> Default for Grouped<T> {
    fn default() -> Self {
        Grouped {
            entries: Vec::new(),
            starts: Vec::new(),
            lens: Vec::new(),
        }
    }
}

impl<T> Grouped<T> {
    /// `entries` as (group, prefix, value), groups below `groups`.
    pub(crate) fn new(mut entries: Vec<(u32, IpNet, T)>, groups: usize) -> Self {
        let mut lens = vec![Lens::default(); groups];
        for (g, n, _) in &mut entries {
            *n = n.trunc();
            lens[*g as usize].insert(n);
        }
        entries.sort_by_key(|e| (e.0, e.1));
        let mut starts = Vec::with_capacity(groups + 1);
        let mut at = 0;
        for g in 0..groups as u32 {
            starts.push(at);
            while at < entries.len() && entries[at].0 == g {
                at += 1;
            }
        }
        starts.push(at);
        let entries = entries.into_iter().map(|(_, n, v)| (n, v)).collect();
        Grouped {
            entries,
            starts,
            lens,
        }
    }

    /// The entries of group `g` (none for a group out of range).
    pub(crate) fn group(&self, g: u32) -> Prefixes<'_, T> {
        let g = g as usize;
        if g + 1 < self.starts.len() {
            Prefixes {
                entries: &self.entries[self.starts[g]..self.starts[g + 1]],
                lens: self.lens[g],
            }
        } else {
            Prefixes::empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spread of prefixes nesting in each other at many lengths, both families.
    pub(crate) fn nets() -> Vec<IpNet> {
        let mut v = Vec::new();
        for len in [0u8, 8, 16, 20, 23, 24, 25, 30, 32] {
            for a in [
                "10.0.0.0",
                "10.0.1.7",
                "10.1.0.0",
                "192.168.3.4",
                "10.0.0.255",
            ] {
                v.push(IpNet::new(a.parse().unwrap(), len).unwrap());
            }
        }
        for len in [0u8, 10, 48, 63, 64, 65, 126, 127, 128] {
            for a in ["fd00::", "fd00::1:0", "fe80::5"] {
                v.push(IpNet::new(a.parse().unwrap(), len).unwrap());
            }
        }
        v
    }

    #[test]
    fn prefix_map_finds_exactly_the_overlapping_entries() {
        let all = nets();
        let m = PrefixMap::new(all.iter().enumerate().map(|(i, n)| (*n, i)));
        for q in &all {
            let mut found: Vec<usize> = m.overlapping(q).copied().collect();
            found.sort_unstable();
            let want: Vec<usize> = (0..all.len()).filter(|&i| overlaps(&all[i], q)).collect();
            assert_eq!(found, want, "query {q}");
        }
        // Only the /0 entries of the family cover an unrelated prefix.
        let q: IpNet = "172.16.0.0/12".parse().unwrap();
        assert_eq!(m.overlapping(&q).count(), 5);
    }

    /// Each group answers for its own entries only, as a map of that group alone would.
    #[test]
    fn grouped_answers_per_group_as_a_scan_does() {
        let all = nets();
        let groups = 4u32;
        let entries: Vec<(u32, IpNet, usize)> = all
            .iter()
            .enumerate()
            .map(|(i, n)| ((i as u32 * 7) % groups, *n, i))
            .collect();
        let g = Grouped::new(entries.clone(), groups as usize + 1);
        for q in &all {
            for grp in 0..=groups + 1 {
                let mut found: Vec<usize> = g.group(grp).overlapping(q).copied().collect();
                found.sort_unstable();
                let want: Vec<usize> = entries
                    .iter()
                    .filter(|(e, n, _)| *e == grp && overlaps(n, q))
                    .map(|(_, _, i)| *i)
                    .collect();
                assert_eq!(found, want, "group {grp} query {q}");
            }
        }
    }
}
