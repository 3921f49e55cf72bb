//! Every subnet in NB, sorted so that "which subnets overlap this network" is a few binary
//! searches instead of a walk over every subnet (CreatePeering's probe asks it on every create).

use std::collections::BTreeSet;

use ipnet::IpNet;
use uuid::Uuid;

use crate::peering::overlaps;

/// Subnets with the router holding each, sorted by (family, first address).
#[derive(Debug, Default)]
pub struct SubnetIndex {
    by_start: Vec<(IpNet, Uuid)>,
    /// The prefix lengths present, per family (`true`: IPv6); after [`SubnetIndex::changed`]
    /// possibly a few more (a length no subnet has costs a binary search, nothing else).
    lens: BTreeSet<(bool, u8)>,
}

/// The index's order: (family, first address), prefix length, router.
fn key(e: &(IpNet, Uuid)) -> ((bool, u128), u8, Uuid) {
    (start(&e.0), e.0.prefix_len(), e.1)
}

/// (family, first address) and (family, last address) of `n`, comparable across families.
fn start(n: &IpNet) -> (bool, u128) {
    match n {
        IpNet::V4(a) => (false, u32::from(a.network()) as u128),
        IpNet::V6(a) => (true, u128::from(a.network())),
    }
}

fn end(n: &IpNet) -> (bool, u128) {
    match n {
        IpNet::V4(a) => (false, u32::from(a.broadcast()) as u128),
        IpNet::V6(a) => (true, u128::from(a.broadcast())),
    }
}

impl SubnetIndex {
    pub fn new(mut subnets: Vec<(IpNet, Uuid)>) -> Self {
        subnets.sort_unstable_by_key(key);
        let lens = subnets
            .iter()
            .map(|(n, _)| (start(n).0, n.prefix_len()))
            .collect();
        SubnetIndex {
            by_start: subnets,
            lens,
        }
    }

    /// This index without the entries of the routers `dropped` says, with `added`: one merge
    /// of what is kept (in order already) with the few added, no sort of the whole.
    pub fn changed(&self, dropped: impl Fn(&Uuid) -> bool, mut added: Vec<(IpNet, Uuid)>) -> Self {
        added.sort_unstable_by_key(key);
        let mut lens = self.lens.clone();
        lens.extend(added.iter().map(|(n, _)| (start(n).0, n.prefix_len())));
        let mut by_start = Vec::with_capacity(self.by_start.len() + added.len());
        let mut added = added.into_iter().peekable();
        for e in self.by_start.iter().filter(|(_, r)| !dropped(r)) {
            while let Some(a) = added.next_if(|a| key(a) < key(e)) {
                by_start.push(a);
            }
            by_start.push(*e);
        }
        by_start.extend(added);
        SubnetIndex { by_start, lens }
    }

    /// Every (subnet, router), in the index's order.
    pub fn entries(&self) -> &[(IpNet, Uuid)] {
        &self.by_start
    }

    /// The routers holding a subnet that overlaps `n`: those starting inside `n`, and those
    /// starting before it, which overlap it only by containing it (prefixes nest), so are
    /// `n` cut to one of the shorter lengths present.
    pub fn routers_overlapping(&self, n: &IpNet, out: &mut BTreeSet<Uuid>) {
        let (lo, hi) = (start(n), end(n));
        let from = self.by_start.partition_point(|(s, _)| start(s) < lo);
        let to = self.by_start.partition_point(|(s, _)| start(s) <= hi);
        out.extend(
            self.by_start[from..to]
                .iter()
                .filter(|(s, _)| overlaps(s, n))
                .map(|(_, r)| *r),
        );
        let family = lo.0;
        for &(_, len) in self.lens.range((family, 0)..(family, n.prefix_len())) {
            let Ok(wider) = IpNet::new(n.addr(), len).map(|w| w.trunc()) else {
                continue;
            };
            let key = start(&wider);
            let from = self.by_start.partition_point(|(s, _)| start(s) < key);
            out.extend(
                self.by_start[from..]
                    .iter()
                    .take_while(|(s, _)| start(s) == key)
                    .filter(|(s, _)| s.prefix_len() == len)
                    .map(|(_, r)| *r),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the walk over every subnet, on a dense space where every kind of overlap
    /// happens (equal, containing, contained, disjoint, both families).
    #[test]
    fn finds_exactly_what_the_walk_finds() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        // A network in 10.0.0.0/18 or fd00::/106 with a prefix length from `lens`.
        let mut net = |v6: bool, lens: std::ops::Range<u32>| -> IpNet {
            let (a, b, len) = (
                next() % 64,
                next() % 256,
                lens.start + next() % lens.len() as u32,
            );
            let text = match v6 {
                false => format!("10.0.{a}.{b}/{len}"),
                true => format!("fd00::{a:x}:0/{len}"),
            };
            text.parse::<IpNet>().unwrap().trunc()
        };
        let mut subnets = Vec::new();
        for i in 0..400u128 {
            subnets.push((net(false, 20..33), Uuid::from_u128(i)));
            if i % 4 == 0 {
                subnets.push((net(true, 100..129), Uuid::from_u128(1000 + i)));
            }
        }
        let index = SubnetIndex::new(subnets.clone());
        for _ in 0..500 {
            let (q, q6) = (net(false, 16..33), net(true, 96..129));
            for q in [q, q6] {
                let mut got = BTreeSet::new();
                index.routers_overlapping(&q, &mut got);
                let want: BTreeSet<Uuid> = subnets
                    .iter()
                    .filter(|(s, _)| overlaps(s, &q))
                    .map(|(_, r)| *r)
                    .collect();
                assert_eq!(got, want, "{q}");
            }
        }
    }

    /// An index changed by routers dropped and entries added holds what an index made from
    /// scratch of the same entries holds, in the same order, and answers the same.
    #[test]
    fn a_changed_index_is_the_index_of_its_entries() {
        let net = |i: u32, len: u8| -> IpNet {
            IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), len)
                .unwrap()
                .trunc()
        };
        let all: Vec<(IpNet, Uuid)> = (0..200u32)
            .map(|i| {
                (
                    net(i * 7 % 256, 16 + (i % 3) as u8 * 4),
                    Uuid::from_u128(u128::from(i % 50)),
                )
            })
            .collect();
        let index = SubnetIndex::new(all.clone());
        let dropped = |r: &Uuid| r.as_u128() % 7 == 3;
        let added: Vec<(IpNet, Uuid)> = (0..20u32)
            .map(|i| {
                (
                    net(i * 13 % 256, 20 + (i % 2) as u8 * 8),
                    Uuid::from_u128(u128::from(i % 9) + 3),
                )
            })
            .collect();
        let changed = index.changed(dropped, added.clone());
        let mut kept: Vec<(IpNet, Uuid)> = all.into_iter().filter(|(_, r)| !dropped(r)).collect();
        kept.extend(added);
        let fresh = SubnetIndex::new(kept);
        assert_eq!(changed.entries(), fresh.entries());
        for i in 0..256u32 {
            for len in [8, 16, 22, 24, 28, 30] {
                let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
                changed.routers_overlapping(&net(i, len), &mut a);
                fresh.routers_overlapping(&net(i, len), &mut b);
                assert_eq!(a, b);
            }
        }
    }
}
