//! What a foreign NB change touches: the routers (VPC names) and port names whose peerings
//! must be judged again, so that a change made by someone else costs a narrow pass over
//! those peerings instead of a full pass over every one.
//!
//! A monitor update names rows by uuid and, for a row that went, carries nothing else; so
//! [`RouterMap`] remembers each router's name and which router holds each port and route,
//! learnt from every change (the worker's own echoes too). A change it cannot place (a port
//! of a router it never saw) asks for a full pass: the safe answer. A router renamed or
//! deleted touches its old name and its new one; a port's name (ours live in a namespace
//! shared by all routers) touches the peerings that hold that name, wherever the port is.

use std::collections::{BTreeSet, HashMap};

use compact_str::CompactString;
use uuid::Uuid;

use crate::ovsdb::{ChangeKind, NbCache, RowChange, Table};

/// What a batch of foreign changes touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Router names: the peerings of these VPCs are judged again.
    pub vpcs: BTreeSet<String>,
    /// Port names: the peerings holding these names are judged again.
    pub ports: BTreeSet<String>,
}

/// The part of the NB replica the map reads.
pub trait NbRows {
    /// A router's name and the rows it holds (ports and static routes).
    fn router(&self, uuid: Uuid) -> Option<(&str, Vec<Uuid>)>;
    /// A port's name.
    fn port_name(&self, uuid: Uuid) -> Option<&str>;
    /// Every router.
    fn router_uuids(&self) -> Vec<Uuid>;
}

impl NbRows for NbCache {
    fn router(&self, uuid: Uuid) -> Option<(&str, Vec<Uuid>)> {
        let r = NbCache::router(self, uuid)?;
        let held = r.ports.iter().chain(&r.static_routes).copied().collect();
        Some((r.name.as_str(), held))
    }
    fn port_name(&self, uuid: Uuid) -> Option<&str> {
        self.port(uuid).map(|p| p.name.as_str())
    }
    fn router_uuids(&self) -> Vec<Uuid> {
        self.routers().map(|r| r.uuid).collect()
    }
}

/// Router names and the router of each port and route, as last seen. Names inline (NB's, up to
/// 24 bytes, need no allocation: README, *Memory at 100,000 peerings*).
#[derive(Debug, Default)]
pub struct RouterMap {
    names: HashMap<Uuid, CompactString>,
    holder: HashMap<Uuid, Uuid>,
    port_names: HashMap<Uuid, CompactString>,
}

impl RouterMap {
    /// The map of everything in `nb` now (after a resync).
    pub fn rebuild(nb: &impl NbRows) -> Self {
        let mut map = RouterMap::default();
        for uuid in nb.router_uuids() {
            map.learn_router(nb, uuid);
        }
        map
    }

    fn learn_router(&mut self, nb: &impl NbRows, uuid: Uuid) -> Option<String> {
        let (name, held) = nb.router(uuid)?;
        for child in held {
            // Known already as held by this router: nothing to learn (a hub's router holds
            // 20,000 rows and changes with every spoke). Its name was learnt with it, or comes
            // with the port's own change (every row that appears is a change of its own).
            if self.holder.get(&child) == Some(&uuid) {
                continue;
            }
            self.holder.insert(child, uuid);
            // A known port keeps its last name until its own change is seen (a rename
            // touches the old name too).
            if let Some(port) = nb.port_name(child) {
                self.port_names.entry(child).or_insert_with(|| port.into());
            }
        }
        self.names.insert(uuid, name.into());
        Some(name.to_owned())
    }

    /// Learns from `changes` (every change of one update, ours included) as `nb` holds them
    /// now, and returns what those marked `foreign` touch; `None` when one of them cannot be
    /// placed (a full pass is then the answer).
    pub fn apply(
        &mut self,
        nb: &impl NbRows,
        changes: &[RowChange],
        foreign: impl Fn(&RowChange) -> bool,
    ) -> Option<Touched> {
        let mut touched = Touched::default();
        let mut placed = true;
        // Routers first: a port or route inserted with its router's mutation is then known.
        for c in changes.iter().filter(|c| c.table == Table::LogicalRouter) {
            let old = self.names.remove(&c.uuid).map(String::from);
            let new = self.learn_router(nb, c.uuid);
            if foreign(c) {
                touched.vpcs.extend(old.into_iter().chain(new));
            }
        }
        for c in changes.iter().filter(|c| c.table != Table::LogicalRouter) {
            let holder = self.holder.get(&c.uuid).copied();
            let old_port = self.port_names.get(&c.uuid).map(|n| n.to_string());
            let new_port = nb.port_name(c.uuid).map(str::to_owned);
            if foreign(c) {
                match holder {
                    // A router that went in this update was touched above by its name.
                    Some(router) => touched
                        .vpcs
                        .extend(self.names.get(&router).map(|n| n.to_string())),
                    None => placed = false,
                }
                touched
                    .ports
                    .extend(old_port.into_iter().chain(new_port.clone()));
            }
            if c.kind == ChangeKind::Delete {
                self.holder.remove(&c.uuid);
                self.port_names.remove(&c.uuid);
            } else if let Some(name) = new_port {
                self.port_names.insert(c.uuid, name.into());
            }
        }
        placed.then_some(touched)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Routers (name, held rows) and port names by uuid.
    #[derive(Default)]
    struct Fake {
        routers: BTreeMap<Uuid, (String, Vec<Uuid>)>,
        ports: BTreeMap<Uuid, String>,
    }

    impl NbRows for Fake {
        fn router(&self, uuid: Uuid) -> Option<(&str, Vec<Uuid>)> {
            self.routers
                .get(&uuid)
                .map(|(n, h)| (n.as_str(), h.clone()))
        }
        fn port_name(&self, uuid: Uuid) -> Option<&str> {
            self.ports.get(&uuid).map(String::as_str)
        }
        fn router_uuids(&self) -> Vec<Uuid> {
            self.routers.keys().copied().collect()
        }
    }

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn ch(table: Table, uuid: Uuid, kind: ChangeKind) -> RowChange {
        RowChange { table, uuid, kind }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Routers r1 (port 11 "r1-p", route 12) and r2 (port 21 "r2-p").
    fn nb() -> Fake {
        let mut nb = Fake::default();
        nb.routers.insert(u(1), ("r1".into(), vec![u(11), u(12)]));
        nb.routers.insert(u(2), ("r2".into(), vec![u(21)]));
        nb.ports.insert(u(11), "r1-p".into());
        nb.ports.insert(u(21), "r2-p".into());
        nb
    }

    #[test]
    fn a_change_of_a_port_route_or_router_touches_its_router_and_port_name() {
        let nb = nb();
        let mut map = RouterMap::rebuild(&nb);
        let all = |_: &RowChange| true;
        let port = [ch(Table::LogicalRouterPort, u(11), ChangeKind::Modify)];
        assert_eq!(
            map.apply(&nb, &port, all),
            Some(Touched {
                vpcs: set(&["r1"]),
                ports: set(&["r1-p"])
            })
        );
        let route = [ch(
            Table::LogicalRouterStaticRoute,
            u(12),
            ChangeKind::Modify,
        )];
        assert_eq!(map.apply(&nb, &route, all).unwrap().vpcs, set(&["r1"]));
        let router = [ch(Table::LogicalRouter, u(2), ChangeKind::Modify)];
        assert_eq!(map.apply(&nb, &router, all).unwrap().vpcs, set(&["r2"]));
        // Our own echo touches nothing, but is learnt from.
        assert_eq!(map.apply(&nb, &port, |_| false), Some(Touched::default()));
    }

    #[test]
    fn renames_inserts_and_deletes_touch_old_and_new_names() {
        let mut nb = nb();
        let mut map = RouterMap::rebuild(&nb);
        let all = |_: &RowChange| true;
        // A router renamed: both names.
        nb.routers.get_mut(&u(1)).unwrap().0 = "r1-new".into();
        let t = map.apply(
            &nb,
            &[ch(Table::LogicalRouter, u(1), ChangeKind::Modify)],
            all,
        );
        assert_eq!(t.unwrap().vpcs, set(&["r1", "r1-new"]));
        // A port added to r2 (with r2's mutation, one update): r2 and the port's name.
        nb.routers.get_mut(&u(2)).unwrap().1.push(u(22));
        nb.ports.insert(u(22), "vpc-a-vpc-b".into());
        let t = map.apply(
            &nb,
            &[
                ch(Table::LogicalRouterPort, u(22), ChangeKind::Insert),
                ch(Table::LogicalRouter, u(2), ChangeKind::Modify),
            ],
            all,
        );
        assert_eq!(
            t,
            Some(Touched {
                vpcs: set(&["r2"]),
                ports: set(&["vpc-a-vpc-b"])
            })
        );
        // A port renamed: both names.
        nb.ports.insert(u(22), "x".into());
        let t = map.apply(
            &nb,
            &[ch(Table::LogicalRouterPort, u(22), ChangeKind::Modify)],
            all,
        );
        assert_eq!(t.unwrap().ports, set(&["vpc-a-vpc-b", "x"]));
        // A router deleted with its port: its last name and the port's.
        nb.routers.remove(&u(2));
        nb.ports.remove(&u(21));
        let t = map.apply(
            &nb,
            &[
                ch(Table::LogicalRouter, u(2), ChangeKind::Delete),
                ch(Table::LogicalRouterPort, u(21), ChangeKind::Delete),
            ],
            all,
        );
        assert_eq!(
            t,
            Some(Touched {
                vpcs: set(&["r2"]),
                ports: set(&["r2-p"])
            })
        );
    }

    #[test]
    fn a_row_it_cannot_place_asks_for_a_full_pass() {
        let nb = nb();
        let mut map = RouterMap::default(); // never saw the routers
        let port = [ch(Table::LogicalRouterPort, u(11), ChangeKind::Modify)];
        assert_eq!(map.apply(&nb, &port, |_| true), None);
        // Not foreign: nothing to place.
        assert_eq!(map.apply(&nb, &port, |_| false), Some(Touched::default()));
    }
}
