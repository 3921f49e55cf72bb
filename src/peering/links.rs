//! Interconnect link allocation: picking a free link network from a pool and the two port
//! addresses on it.
//!
//! Pure arithmetic over a snapshot of what is in use in the two VPCs (their subnets, the
//! links and routes of their other peerings). Links are unique per VPC (router), not across
//! the deployment: a link's addresses sit on the two peer ports of one peering and OVN
//! resolves them per router, so peerings that share no VPC may reuse a link, and a peering
//! gets the lowest link free for its pair. The API allocates under the per-VPC locks of both
//! VPCs; the database's per-(VPC, link) exclusion constraint (`peering_links`) is the final
//! arbiter.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::topology::Topology;
use super::validate::ValidatedPeering;
use super::{ConnectAddrs, Family};

/// Default IPv4 link pool (`--link-pool`).
pub const DEFAULT_V4_POOL: &str = "169.254.0.0/16";
/// Default IPv4 link prefix length: four addresses, ports on .1 and .2.
pub const DEFAULT_V4_LINK_PREFIX: u8 = 30;
/// Default IPv6 link pool, used only for peerings that need IPv6 (see
/// [`super::validate::ValidatedPeering::link_families`]).
pub const DEFAULT_V6_POOL: &str = "fd00:a9fe::/64";
/// Default IPv6 link prefix length.
pub const DEFAULT_V6_LINK_PREFIX: u8 = 126;

/// A pool links of one family are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkPool {
    /// The pool network.
    pub pool: IpNet,
    /// The prefix length of each link.
    pub link_prefix_len: u8,
}

impl LinkPool {
    /// The default pool of a family.
    pub fn default_for(family: Family) -> LinkPool {
        let (pool, len) = match family {
            Family::V4 => (DEFAULT_V4_POOL, DEFAULT_V4_LINK_PREFIX),
            Family::V6 => (DEFAULT_V6_POOL, DEFAULT_V6_LINK_PREFIX),
        };
        LinkPool {
            pool: pool.parse().expect("default pool parses"),
            link_prefix_len: len,
        }
    }
}

/// How many links of `link_prefix_len` fit in `pool`; 0 when the combination is unusable
/// (link larger than the pool, or too small for two ports).
pub fn link_count(pool: IpNet, link_prefix_len: u8) -> u128 {
    match geometry(pool, link_prefix_len) {
        Some(g) => g.count,
        None => 0,
    }
}

/// The `index`-th link network of the pool (0-based), if the pool has that many.
pub fn link_at(pool: IpNet, link_prefix_len: u8, index: u128) -> Option<IpNet> {
    let g = geometry(pool, link_prefix_len)?;
    if index >= g.count {
        return None;
    }
    let start = g.start + index * g.size;
    IpNet::new(from_u128(pool, start), link_prefix_len).ok()
}

/// The two port addresses (with the link's prefix length) on a link network: the first and
/// second usable addresses (.1 and .2), or both addresses of a point-to-point /31 or /127.
pub fn link_hosts(link: IpNet) -> Option<(IpNet, IpNet)> {
    let host_bits = link.max_prefix_len() - link.prefix_len();
    let base = to_u128(link.network());
    let (a, b) = match host_bits {
        0 => return None,
        1 => (base, base + 1),
        _ => (base + 1, base + 2),
    };
    let len = link.prefix_len();
    Some((
        IpNet::new(from_u128(link, a), len).ok()?,
        IpNet::new(from_u128(link, b), len).ok()?,
    ))
}

/// The first link of the pool that overlaps nothing in `used` (networks of any size and
/// family; other families are ignored), as `(local port address, remote port address)`.
/// `None` when the pool is exhausted or unusable. O(n log n) in `used`.
pub fn allocate_link(pool: IpNet, link_prefix_len: u8, used: &[IpNet]) -> Option<(IpNet, IpNet)> {
    allocate_link_from(pool, link_prefix_len, used, 0)
}

/// Like [`allocate_link`] but searches from the `start`-th link (taken modulo the number of
/// links) to the end of the pool, then wraps around to the beginning.
pub fn allocate_link_from(
    pool: IpNet,
    link_prefix_len: u8,
    used: &[IpNet],
    start: u128,
) -> Option<(IpNet, IpNet)> {
    let g = geometry(pool, link_prefix_len)?;
    let mut taken: Vec<(u128, u128)> = used
        .iter()
        .filter(|u| Family::of(u) == Family::of(&pool))
        .map(|u| (to_u128(u.network()), to_u128(u.broadcast())))
        .filter(|(lo, hi)| *hi >= g.start && *lo <= g.end)
        .collect();
    taken.sort_unstable();
    let first = g.start + (start % g.count) * g.size;
    let found = first_fit(&g, first, g.end, &taken)
        .or_else(|| (first > g.start).then(|| first_fit(&g, g.start, first - 1, &taken))?)?;
    link_hosts(IpNet::new(from_u128(pool, found), link_prefix_len).ok()?)
}

/// Allocates one link per requested family from that family's pool, as the two sides'
/// [`ConnectAddrs`]. `Err(family)` names the first family with no pool or no free link.
pub fn allocate_connect(
    pools: &[LinkPool],
    families: &[Family],
    used: &[IpNet],
    start: u128,
) -> Result<(ConnectAddrs, ConnectAddrs), Family> {
    let mut local = ConnectAddrs::default();
    let mut remote = ConnectAddrs::default();
    for &family in families {
        let pool = pools
            .iter()
            .find(|p| Family::of(&p.pool) == family)
            .ok_or(family)?;
        let (l, r) =
            allocate_link_from(pool.pool, pool.link_prefix_len, used, start).ok_or(family)?;
        local.set(l);
        remote.set(r);
    }
    Ok((local, remote))
}

/// The families an allocated link needs: those of the explicit routes and of either VPC's
/// subnets (automatic routes need a nexthop of their family); IPv4 when there is nothing to go
/// by.
pub fn link_families(v: &ValidatedPeering, topo: &(impl Topology + ?Sized)) -> Vec<Family> {
    let mut families: BTreeSet<Family> = v.link_families().into_iter().collect();
    families.remove(&Family::V4);
    let explicit = v.local_routes.iter().chain(&v.remote_routes);
    families.extend(explicit.map(|r| Family::of(&r.prefix)));
    for vpc in [&v.local_vpc, &v.remote_vpc] {
        // The subnets of its one router (none when it has not exactly one), read in place.
        if topo.router_count(vpc) == 1 {
            families.extend(topo.subnets_named(vpc).iter().map(Family::of));
        }
    }
    if families.is_empty() {
        families.insert(Family::V4);
    }
    families.into_iter().collect()
}

/// The pool of `family` among `pools`.
pub fn pool_for(pools: &[LinkPool], family: Family) -> Option<&LinkPool> {
    pools.iter().find(|p| Family::of(&p.pool) == family)
}

/// A pool cut into links, in integer address space.
struct Geometry {
    /// First address of the pool.
    start: u128,
    /// Last address of the pool.
    end: u128,
    /// Addresses per link (a power of two, at least 2).
    size: u128,
    /// Links in the pool.
    count: u128,
}

fn geometry(pool: IpNet, link_prefix_len: u8) -> Option<Geometry> {
    let max = pool.max_prefix_len();
    if link_prefix_len < pool.prefix_len().max(1) || link_prefix_len >= max {
        return None;
    }
    Some(Geometry {
        start: to_u128(pool.network()),
        end: to_u128(pool.broadcast()),
        size: 1u128 << (max - link_prefix_len),
        count: 1u128 << (link_prefix_len - pool.prefix_len()),
    })
}

/// The first link starting in `[lo, hi]` (`lo` link-aligned) that ends by `hi` and
/// touches no interval of `taken` (sorted by start).
fn first_fit(g: &Geometry, lo: u128, hi: u128, taken: &[(u128, u128)]) -> Option<u128> {
    let mut candidate = lo;
    for &(t_lo, t_hi) in taken {
        if t_hi < candidate {
            continue;
        }
        let candidate_end = candidate.checked_add(g.size - 1)?;
        if candidate_end > hi {
            return None;
        }
        if t_lo > candidate_end {
            return Some(candidate);
        }
        // Jump to the first aligned link after this interval.
        let past = t_hi.checked_add(1)?;
        let links = (past - g.start).div_ceil(g.size);
        candidate = g.start.checked_add(links.checked_mul(g.size)?)?;
    }
    let candidate_end = candidate.checked_add(g.size - 1)?;
    (candidate_end <= hi).then_some(candidate)
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `value` in the family of `like`.
fn from_u128(like: IpNet, value: u128) -> IpAddr {
    match like {
        // Values come from the pool's own range, so they fit in 32 bits.
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn pair(a: &str, b: &str) -> Option<(IpNet, IpNet)> {
        Some((n(a), n(b)))
    }

    #[test]
    fn first_free_link_in_empty_pool() {
        assert_eq!(
            allocate_link(n("169.254.0.0/16"), 30, &[]),
            pair("169.254.0.1/30", "169.254.0.2/30")
        );
    }

    #[test]
    fn skips_used_links_and_larger_networks() {
        let used = [
            n("169.254.0.0/30"),
            n("169.254.0.4/30"),
            n("169.254.0.16/28"),
        ];
        assert_eq!(
            allocate_link(n("169.254.0.0/16"), 30, &used),
            pair("169.254.0.9/30", "169.254.0.10/30")
        );
        // A used network covering the start of the pool, and one of another family.
        let used = [n("169.254.0.0/24"), n("fd00::/8"), n("10.0.0.0/8")];
        assert_eq!(
            allocate_link(n("169.254.0.0/16"), 30, &used),
            pair("169.254.1.1/30", "169.254.1.2/30")
        );
        // A used host route inside a link makes the whole link unusable.
        let used = [n("169.254.0.2/32")];
        assert_eq!(
            allocate_link(n("169.254.0.0/16"), 30, &used),
            pair("169.254.0.5/30", "169.254.0.6/30")
        );
    }

    #[test]
    fn exhaustion() {
        let pool = n("169.254.0.0/29");
        assert_eq!(
            allocate_link(pool, 30, &[n("169.254.0.0/30"), n("169.254.0.4/30")]),
            None
        );
        assert_eq!(allocate_link(pool, 30, &[n("169.254.0.0/16")]), None);
        assert_eq!(
            allocate_link(pool, 30, &[n("169.254.0.4/30")]),
            pair("169.254.0.1/30", "169.254.0.2/30")
        );
    }

    #[test]
    fn unusable_geometry() {
        assert_eq!(allocate_link(n("169.254.0.0/16"), 32, &[]), None);
        assert_eq!(allocate_link(n("169.254.0.0/16"), 8, &[]), None);
        assert_eq!(link_count(n("169.254.0.0/16"), 30), 16384);
        assert_eq!(link_count(n("169.254.0.0/16"), 15), 0);
    }

    #[test]
    fn point_to_point_links() {
        assert_eq!(
            allocate_link(n("169.254.0.0/16"), 31, &[]),
            pair("169.254.0.0/31", "169.254.0.1/31")
        );
        assert_eq!(
            allocate_link(n("fd00::/64"), 127, &[]),
            pair("fd00::/127", "fd00::1/127")
        );
    }

    #[test]
    fn ipv6_pool() {
        let pool = LinkPool::default_for(Family::V6);
        assert_eq!(
            allocate_link(pool.pool, pool.link_prefix_len, &[n("fd00:a9fe::/126")]),
            pair("fd00:a9fe::5/126", "fd00:a9fe::6/126")
        );
        // The whole IPv6 space as a pool does not overflow.
        assert_eq!(
            allocate_link(n("::/0"), 126, &[n("::/1")]),
            pair("8000::1/126", "8000::2/126")
        );
        assert_eq!(
            allocate_link(n("::/0"), 1, &[n("::/1"), n("8000::/1")]),
            None
        );
    }

    #[test]
    fn start_offset_and_wrap_around() {
        let pool = n("169.254.0.0/28"); // four /30 links
        assert_eq!(
            allocate_link_from(pool, 30, &[], 2),
            pair("169.254.0.9/30", "169.254.0.10/30")
        );
        // Offset taken modulo the link count.
        assert_eq!(
            allocate_link_from(pool, 30, &[], 6),
            pair("169.254.0.9/30", "169.254.0.10/30")
        );
        let used = [n("169.254.0.8/29")];
        assert_eq!(
            allocate_link_from(pool, 30, &used, 2),
            pair("169.254.0.1/30", "169.254.0.2/30")
        );
        let used = [n("169.254.0.0/29"), n("169.254.0.8/30")];
        assert_eq!(
            allocate_link_from(pool, 30, &used, 1),
            pair("169.254.0.13/30", "169.254.0.14/30")
        );
        assert_eq!(
            allocate_link_from(pool, 30, &[n("169.254.0.0/28")], 3),
            None
        );
    }

    #[test]
    fn ten_thousand_used_links_finds_the_first_free_one() {
        let pool = n("169.254.0.0/16");
        // Shuffled deterministically: a stride coprime with the count.
        let used: Vec<IpNet> = (0..10_000u128)
            .map(|i| link_at(pool, 30, (i * 7919) % 10_000).unwrap())
            .collect();
        // How fast is measured in benches/, not asserted here.
        assert_eq!(
            allocate_link(pool, 30, &used),
            link_hosts(link_at(pool, 30, 10_000).unwrap())
        );
    }

    #[test]
    fn link_helpers() {
        assert_eq!(
            link_at(n("169.254.0.0/16"), 30, 3),
            Some(n("169.254.0.12/30"))
        );
        assert_eq!(link_at(n("169.254.0.0/16"), 30, 16384), None);
        assert_eq!(
            link_hosts(n("10.0.0.0/24")),
            pair("10.0.0.1/24", "10.0.0.2/24")
        );
        assert_eq!(link_hosts(n("10.0.0.0/32")), None);
    }

    #[test]
    fn dual_stack_connect_allocation() {
        let pools = [
            LinkPool::default_for(Family::V4),
            LinkPool::default_for(Family::V6),
        ];
        let (l, r) = allocate_connect(&pools, &[Family::V4, Family::V6], &[], 0).unwrap();
        assert_eq!(l.to_string(), "169.254.0.1/30,fd00:a9fe::1/126");
        assert_eq!(r.to_string(), "169.254.0.2/30,fd00:a9fe::2/126");
        assert_eq!(
            allocate_connect(&pools[..1], &[Family::V6], &[], 0),
            Err(Family::V6)
        );
        assert_eq!(
            allocate_connect(&pools, &[Family::V4], &[n("169.254.0.0/16")], 0),
            Err(Family::V4)
        );
    }
}
