//! The diff's row changes as OVSDB operations.
//!
//! New rows get explicit, deterministic uuids (derived from the row's identity
//! and its generation, see [`RowIds`]): a transaction retried after a lost
//! reply, or sent by a replica that has not yet seen another's commit, fails
//! with "duplicate uuid" instead of writing a row twice. Updates
//! carry an ownership condition, so a row that stopped being ours is never
//! changed (the update then matches no row: [`not_done`] tells the worker).
//! Rows leave NB by being removed from their router's `ports` /
//! `static_routes` (OVSDB garbage-collects unreferenced non-root rows), behind
//! a `wait` that the row's `external_ids` are still exactly what the plan saw
//! (our owner and instance marks): a row taken over or changed by hand in the
//! meantime makes the whole transaction fail instead of losing the row.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use uuid::Uuid;

use crate::ovsdb::{
    Atom, Condition, Datum, Mutation, NbCache, Operation, OperationResult, Row, WaitUntil,
};
use crate::peering::diff::Change;
use crate::peering::{OWNER_KEY, OWNER_VALUE};

const LR: &str = "Logical_Router";
const LRP: &str = "Logical_Router_Port";
const LRSR: &str = "Logical_Router_Static_Route";

/// Namespace of the uuids of rows ovn-peerd inserts.
const ROW_NAMESPACE: Uuid = Uuid::from_u128(0x6f76_6e70_6565_7264_0000_0000_0000_0001);

/// How many NB rows a change writes (for batch sizing).
pub fn rows_written(change: &Change) -> usize {
    // A deletion's guard writes nothing, so deletions count one.
    match change {
        Change::CreatePort { .. } | Change::CreateRoute { .. } => 2,
        _ => 1,
    }
}

/// Picks the uuids of inserted rows: the first candidate derived from the
/// row's identity that no row in NB holds and no earlier insert of the same
/// transaction took.
///
/// Skipping uuids NB holds matters when the row being replaced holds the
/// candidate: a route whose nexthop was edited by hand keeps the uuid we gave
/// it, and the server refuses an insert of a uuid still present or deleted in
/// the same transaction; a row someone stripped of our marker keeps it for
/// good. The choice depends only on the identity and the cache, so two writers
/// with the same view still pick the same uuid and cannot both insert.
pub struct RowIds<'a> {
    cache: &'a NbCache,
    claimed: HashSet<Uuid>,
}

impl<'a> RowIds<'a> {
    /// Uuids for inserts checked against `cache` (held for one transaction's ops).
    pub fn new(cache: &'a NbCache) -> Self {
        Self {
            cache,
            claimed: HashSet::new(),
        }
    }

    fn pick(&mut self, identity: &str) -> Uuid {
        (0u32..)
            .map(|attempt| match attempt {
                0 => row_uuid(identity),
                n => row_uuid(&format!("{identity}#{n}")),
            })
            .find(|u| {
                self.cache.port(*u).is_none()
                    && self.cache.static_route(*u).is_none()
                    && self.cache.router(*u).is_none()
                    && self.claimed.insert(*u)
            })
            .expect("an unused uuid exists")
    }
}

/// Appends the operations of `change` to `ops`.
pub fn append_ops(change: &Change, ops: &mut Vec<Operation>, ids: &mut RowIds<'_>) {
    let mut refs = RouterRefs::default();
    row_ops(change, ops, ids, &mut refs);
    refs.flush(ops);
}

/// Appends the operations of one peering's `changes` to `ops`: each change's row operations
/// in order, then one `mutate` per router the peering references, carrying all its
/// reference changes (a port and a route on one router: one mutate with two mutations,
/// as a hand-written transaction has it). Fewer operations for ovsdb-server to run and
/// for us to encode; a mutate still belongs to one peering only (see [`not_done`]).
pub fn append_peering(changes: &[&Change], ops: &mut Vec<Operation>, ids: &mut RowIds<'_>) {
    let mut refs = RouterRefs::default();
    for c in changes {
        row_ops(c, ops, ids, &mut refs);
    }
    refs.flush(ops);
}

/// Reference mutations per router, in the order routers were first named.
#[derive(Default)]
struct RouterRefs(Vec<(String, Vec<Mutation>)>);

impl RouterRefs {
    fn push(&mut self, router_id: &str, m: Mutation) {
        match self.0.iter_mut().find(|(r, _)| r == router_id) {
            Some((_, ms)) => ms.push(m),
            None => self.0.push((router_id.to_owned(), vec![m])),
        }
    }

    fn flush(self, ops: &mut Vec<Operation>) {
        ops.extend(
            self.0
                .into_iter()
                .map(|(router_id, mutations)| Operation::Mutate {
                    table: LR.into(),
                    conditions: vec![Condition::uuid(parse_uuid(&router_id))],
                    mutations,
                }),
        );
    }
}

fn row_ops(change: &Change, ops: &mut Vec<Operation>, ids: &mut RowIds<'_>, refs: &mut RouterRefs) {
    match change {
        Change::CreatePort { port, .. } => {
            let uuid = ids.pick(&format!(
                "port/{}/{}/{}",
                port.name,
                port.router_id,
                generation_of(&port.external_ids)
            ));
            let name = named(uuid);
            let mut row = Row::new();
            row.insert("name".into(), Datum::from(port.name.as_str()));
            row.insert("mac".into(), Datum::from(port.mac.as_str()));
            row.insert("networks".into(), Datum::set(port.networks.iter().cloned()));
            row.insert("peer".into(), Datum::set([port.peer.clone()]));
            row.insert("external_ids".into(), map(&port.external_ids));
            ops.push(Operation::Insert {
                table: LRP.into(),
                row,
                uuid_name: Some(name.clone()),
                uuid: Some(uuid),
            });
            refs.push(&port.router_id, add_reference("ports", &name));
        }
        Change::UpdatePort {
            id,
            mac,
            networks,
            peer,
            external_ids,
            reset,
            ..
        } => {
            let mut row = defaults(reset);
            if let Some(mac) = mac {
                row.insert("mac".into(), Datum::from(mac.as_str()));
            }
            if let Some(networks) = networks {
                row.insert("networks".into(), Datum::set(networks.iter().cloned()));
            }
            if let Some(peer) = peer {
                row.insert("peer".into(), Datum::set([peer.clone()]));
            }
            if let Some(ids) = external_ids {
                row.insert("external_ids".into(), map(ids));
            }
            ops.push(Operation::Update {
                table: LRP.into(),
                conditions: owned(id),
                row,
            });
        }
        Change::DeletePort {
            id,
            router_id,
            seen,
            ..
        } => {
            ops.push(unchanged_ids(LRP, id, seen));
            refs.push(router_id, remove_reference("ports", id));
        }
        Change::CreateRoute { route, .. } => {
            let uuid = ids.pick(&format!(
                "route/{}/{}/{}/{}/{}/{}",
                route.router_id,
                route.route_table,
                route.policy.as_ovn_str(),
                route.ip_prefix,
                route.nexthop,
                generation_of(&route.external_ids)
            ));
            let name = named(uuid);
            let mut row = Row::new();
            row.insert("ip_prefix".into(), Datum::from(route.ip_prefix.as_str()));
            row.insert("nexthop".into(), Datum::from(route.nexthop.as_str()));
            row.insert(
                "policy".into(),
                Datum::set([route.policy.as_ovn_str().to_string()]),
            );
            row.insert(
                "output_port".into(),
                Datum::set([route.output_port.clone()]),
            );
            row.insert(
                "route_table".into(),
                Datum::from(route.route_table.as_str()),
            );
            row.insert("external_ids".into(), map(&route.external_ids));
            ops.push(Operation::Insert {
                table: LRSR.into(),
                row,
                uuid_name: Some(name.clone()),
                uuid: Some(uuid),
            });
            refs.push(&route.router_id, add_reference("static_routes", &name));
        }
        Change::UpdateRoute {
            id,
            output_port,
            external_ids,
            reset,
            ..
        } => {
            let mut row = defaults(reset);
            if let Some(port) = output_port {
                row.insert("output_port".into(), Datum::set([port.clone()]));
            }
            if let Some(ids) = external_ids {
                row.insert("external_ids".into(), map(ids));
            }
            ops.push(Operation::Update {
                table: LRSR.into(),
                conditions: owned(id),
                row,
            });
        }
        Change::DeleteRoute {
            id,
            router_id,
            seen,
            ..
        } => {
            ops.push(unchanged_ids(LRSR, id, seen));
            refs.push(router_id, remove_reference("static_routes", id));
        }
    }
}

/// Every row a transaction of `ops` changes (inserted, updated, mutated, or
/// garbage-collected after a reference is removed): the NB updates it will
/// cause, so the worker can tell its own echo from someone else's change.
pub fn touched_rows(ops: &[Operation]) -> HashSet<Uuid> {
    let mut out = HashSet::new();
    let uuid_of = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.column == "_uuid")
            .and_then(|c| match &c.value {
                Datum::Set(atoms) => atoms.first().and_then(Atom::as_uuid),
                Datum::Map(_) => None,
            })
    };
    for op in ops {
        match op {
            Operation::Insert { uuid: Some(u), .. } => {
                out.insert(*u);
            }
            Operation::Update { conditions, .. } => out.extend(uuid_of(conditions)),
            Operation::Mutate {
                conditions,
                mutations,
                ..
            } => {
                out.extend(uuid_of(conditions));
                for m in mutations {
                    if let Datum::Set(atoms) = &m.value {
                        out.extend(atoms.iter().filter_map(Atom::as_uuid));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The peerings whose writes did not all happen although the transaction
/// committed: a guarded update or a router mutation that matched no row (the
/// row stopped being ours, the router is gone). `owners[i]` is the peering of
/// `ops[i]` (`None`: not a peering's, e.g. the fence).
pub fn not_done<'a>(
    owners: &[Option<&'a str>],
    ops: &[Operation],
    results: &[OperationResult],
) -> BTreeSet<&'a str> {
    ops.iter()
        .zip(results)
        .zip(owners)
        .filter(|((op, result), _)| {
            matches!(op, Operation::Update { .. } | Operation::Mutate { .. })
                && matches!(result, OperationResult::Count(0))
        })
        .filter_map(|(_, owner)| *owner)
        .collect()
}

/// A row with the columns in `reset` set to their defaults (`options`: empty
/// map; `enabled`, `gateway_chassis`, `ha_chassis_group`, `bfd`: empty set).
fn defaults(reset: &[&'static str]) -> Row {
    reset
        .iter()
        .map(|&c| {
            let empty = match c {
                "options" => Datum::empty_map(),
                _ => Datum::empty_set(),
            };
            (c.to_string(), empty)
        })
        .collect()
}

/// `wait` (now) until row `id` of `table` exists with exactly the `external_ids` the plan saw.
fn unchanged_ids(table: &str, id: &str, seen: &BTreeMap<String, String>) -> Operation {
    Operation::Wait {
        table: table.into(),
        conditions: vec![Condition::uuid(parse_uuid(id))],
        columns: vec!["external_ids".into()],
        until: WaitUntil::Equal,
        rows: vec![Row::from([("external_ids".to_string(), map(seen))])],
        timeout_ms: Some(0),
    }
}

fn row_uuid(identity: &str) -> Uuid {
    Uuid::new_v5(&ROW_NAMESPACE, identity.as_bytes())
}

fn named(uuid: Uuid) -> String {
    format!("row_{}", uuid.simple())
}

fn generation_of(ids: &BTreeMap<String, String>) -> &str {
    ids.get(crate::peering::GENERATION_KEY)
        .map(String::as_str)
        .unwrap_or("")
}

fn map(ids: &BTreeMap<String, String>) -> Datum {
    Datum::map(ids.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn parse_uuid(id: &str) -> Uuid {
    // Ids come from the cache's own uuids, so they always parse.
    id.parse().unwrap_or_default()
}

/// `_uuid == id` and still marked as ours.
fn owned(id: &str) -> Vec<Condition> {
    vec![
        Condition::uuid(parse_uuid(id)),
        Condition::has_external_id(OWNER_KEY, OWNER_VALUE),
    ]
}

fn add_reference(column: &str, uuid_name: &str) -> Mutation {
    Mutation::insert(column, Datum::named_uuid(uuid_name))
}

fn remove_reference(column: &str, id: &str) -> Mutation {
    Mutation::delete(column, Datum::set([parse_uuid(id)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::Mutator;
    use crate::peering::desired::{markers, DesiredPort, DesiredRoute};
    use crate::peering::{RoutePolicy, Side};

    fn route() -> DesiredRoute {
        DesiredRoute {
            router: "vpc-1".into(),
            router_id: Uuid::from_u128(7).to_string(),
            ip_prefix: "10.2.0.0/24".into(),
            nexthop: "169.254.0.2".into(),
            policy: RoutePolicy::DstIp,
            output_port: "vpc-1-vpc-2".into(),
            route_table: String::new(),
            external_ids: markers("p", 1, Side::Local),
        }
    }

    #[test]
    fn a_created_route_is_an_insert_with_a_stable_uuid_and_a_reference() {
        let change = Change::CreateRoute {
            peering: "p".into(),
            route: route(),
        };
        let cache = NbCache::new(None);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        append_ops(&change, &mut a, &mut RowIds::new(&cache));
        append_ops(&change, &mut b, &mut RowIds::new(&cache));
        assert_eq!(a, b, "the same change over the same NB gives the same uuid");
        assert_eq!(a.len(), 2);
        let Operation::Insert { uuid: Some(u), .. } = &a[0] else {
            panic!("insert first: {a:?}")
        };
        let json = a[1].to_json().to_string();
        assert!(
            json.contains("static_routes") && json.contains(&named(*u)),
            "{json}"
        );
    }

    #[test]
    fn updates_are_guarded_by_ownership() {
        let change = Change::UpdateRoute {
            peering: "p".into(),
            id: Uuid::from_u128(9).to_string(),
            output_port: Some("vpc-1-vpc-2".into()),
            external_ids: Some(markers("p", 2, Side::Local)),
            reset: vec![],
        };
        let mut ops = Vec::new();
        let cache = NbCache::new(None);
        append_ops(&change, &mut ops, &mut RowIds::new(&cache));
        let json = ops[0].to_json().to_string();
        assert!(
            json.contains("includes") && json.contains(OWNER_KEY),
            "{json}"
        );
        let Operation::Update { row, .. } = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(row["output_port"], Datum::set(["vpc-1-vpc-2".to_string()]));
        assert!(row.contains_key("external_ids"));
    }

    /// The mutations of each `mutate` in `ops`, as (router, column, mutator, named?) tuples.
    type RouterMutations = (Uuid, Vec<(String, Mutator, bool)>);

    fn mutates(ops: &[Operation]) -> Vec<RouterMutations> {
        ops.iter()
            .filter_map(|op| match op {
                Operation::Mutate {
                    conditions,
                    mutations,
                    ..
                } => Some((
                    match &conditions[0].value {
                        Datum::Set(a) => a[0].as_uuid().expect("addressed by uuid"),
                        Datum::Map(_) => panic!("addressed by uuid"),
                    },
                    mutations
                        .iter()
                        .map(|m| {
                            let named = matches!(&m.value, Datum::Set(a) if matches!(a[..], [Atom::NamedUuid(_)]));
                            (m.column.clone(), m.mutator, named)
                        })
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_peering_references_its_rows_with_one_mutate_per_router() {
        let (r1, r2) = (Uuid::from_u128(7), Uuid::from_u128(8));
        let port = |router: Uuid, name: &str| Change::CreatePort {
            peering: "p".into(),
            port: DesiredPort {
                router: name.into(),
                router_id: router.to_string(),
                name: format!("{name}-x"),
                mac: "0a:00:00:00:00:01".into(),
                networks: vec!["169.254.0.1/30".into()],
                peer: "x".into(),
                external_ids: markers("p", 1, Side::Local),
            },
        };
        let mut route2 = route();
        route2.router_id = r2.to_string();
        let old = Uuid::from_u128(9);
        let changes = [
            // Make-before-break on r1: the old route leaves in the mutate that adds the new.
            Change::DeleteRoute {
                peering: "p".into(),
                id: old.to_string(),
                router_id: r1.to_string(),
                slot: Default::default(),
                seen: markers("p", 1, Side::Local),
            },
            port(r1, "vpc-1"),
            Change::CreateRoute {
                peering: "p".into(),
                route: route(),
            },
            port(r2, "vpc-2"),
            Change::CreateRoute {
                peering: "p".into(),
                route: route2,
            },
        ];
        let cache = NbCache::new(None);
        let mut ops = Vec::new();
        append_peering(
            &changes.iter().collect::<Vec<_>>(),
            &mut ops,
            &mut RowIds::new(&cache),
        );
        let sr = "static_routes".to_string();
        let ports = "ports".to_string();
        assert_eq!(
            mutates(&ops),
            vec![
                (
                    r1,
                    vec![
                        (sr.clone(), Mutator::Delete, false),
                        (ports.clone(), Mutator::Insert, true),
                        (sr.clone(), Mutator::Insert, true),
                    ]
                ),
                (
                    r2,
                    vec![(ports, Mutator::Insert, true), (sr, Mutator::Insert, true)]
                ),
            ]
        );
        // The guard and the four inserts come before the mutates that name them.
        assert_eq!(ops.len(), 1 + 4 + 2, "{ops:?}");
        assert!(matches!(ops[0], Operation::Wait { .. }), "{ops:?}");
        assert!(ops[5..]
            .iter()
            .all(|o| matches!(o, Operation::Mutate { .. })));
        // Its echo is still told apart: both routers and the removed route are touched.
        let touched = touched_rows(&ops);
        assert!(touched.contains(&r1) && touched.contains(&r2) && touched.contains(&old));
    }

    #[test]
    fn a_created_route_names_its_output_port() {
        let change = Change::CreateRoute {
            peering: "p".into(),
            route: route(),
        };
        let mut ops = Vec::new();
        let cache = NbCache::new(None);
        append_ops(&change, &mut ops, &mut RowIds::new(&cache));
        let Operation::Insert { row, .. } = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(row["output_port"], Datum::set(["vpc-1-vpc-2".to_string()]));
    }

    #[test]
    fn a_new_generation_gets_a_new_uuid() {
        let mut r2 = route();
        r2.external_ids = markers("p", 2, Side::Local);
        let cache = NbCache::new(None);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        append_ops(
            &Change::CreateRoute {
                peering: "p".into(),
                route: route(),
            },
            &mut a,
            &mut RowIds::new(&cache),
        );
        append_ops(
            &Change::CreateRoute {
                peering: "p".into(),
                route: r2,
            },
            &mut b,
            &mut RowIds::new(&cache),
        );
        assert_ne!(a[0], b[0]);
    }

    #[test]
    fn a_uuid_is_never_used_twice_in_one_transaction() {
        let change = Change::CreateRoute {
            peering: "p".into(),
            route: route(),
        };
        let cache = NbCache::new(None);
        let mut ids = RowIds::new(&cache);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        append_ops(&change, &mut a, &mut ids);
        append_ops(&change, &mut b, &mut ids);
        let uuid = |ops: &[Operation]| match &ops[0] {
            Operation::Insert { uuid: Some(u), .. } => *u,
            other => panic!("{other:?}"),
        };
        assert_ne!(uuid(&a), uuid(&b));
    }

    #[test]
    fn a_deletion_waits_for_the_external_ids_it_saw() {
        let seen = markers("p", 1, Side::Local);
        let router = Uuid::from_u128(7);
        let row = Uuid::from_u128(9);
        for (change, table) in [
            (
                Change::DeletePort {
                    peering: "p".into(),
                    id: row.to_string(),
                    router_id: router.to_string(),
                    name: "vpc-1-vpc-2".into(),
                    networks: Vec::new(),
                    seen: seen.clone(),
                },
                LRP,
            ),
            (
                Change::DeleteRoute {
                    peering: "p".into(),
                    id: row.to_string(),
                    router_id: router.to_string(),
                    slot: Default::default(),
                    seen: seen.clone(),
                },
                LRSR,
            ),
        ] {
            let mut ops = Vec::new();
            let cache = NbCache::new(None);
            append_ops(&change, &mut ops, &mut RowIds::new(&cache));
            assert_eq!(ops.len(), 2, "{ops:?}");
            assert_eq!(
                ops[0],
                Operation::Wait {
                    table: table.into(),
                    conditions: vec![Condition::uuid(row)],
                    columns: vec!["external_ids".into()],
                    until: WaitUntil::Equal,
                    rows: vec![Row::from([("external_ids".to_string(), map(&seen))])],
                    timeout_ms: Some(0),
                },
                "the guard comes first"
            );
            assert!(matches!(&ops[1], Operation::Mutate { .. }), "{ops:?}");
        }
    }

    #[test]
    fn columns_set_by_hand_are_reset_to_their_defaults() {
        let change = Change::UpdatePort {
            peering: "p".into(),
            id: Uuid::from_u128(9).to_string(),
            name: "vpc-1-vpc-2".into(),
            router_id: Uuid::from_u128(1).to_string(),
            mac: None,
            networks: None,
            peer: None,
            external_ids: None,
            reset: vec!["enabled", "options", "gateway_chassis"],
        };
        let mut ops = Vec::new();
        let cache = NbCache::new(None);
        append_ops(&change, &mut ops, &mut RowIds::new(&cache));
        let Operation::Update { row, .. } = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(row["enabled"], Datum::empty_set());
        assert_eq!(row["options"], Datum::empty_map());
        assert_eq!(row["gateway_chassis"], Datum::empty_set());
        assert_eq!(row.len(), 3);
    }

    #[test]
    fn updates_or_mutations_that_matched_nothing_name_their_peering() {
        let update = Operation::Update {
            table: LRP.into(),
            conditions: vec![],
            row: Row::new(),
        };
        let mutate = Operation::Mutate {
            table: LR.into(),
            conditions: vec![Condition::uuid(Uuid::from_u128(7))],
            mutations: vec![remove_reference("ports", "x")],
        };
        let ops = vec![
            Operation::Comment("fence".into()),
            update.clone(),
            mutate.clone(),
            update,
            mutate,
        ];
        let owners = [None, Some("a"), Some("a"), Some("b"), Some("c")];
        let results = [
            OperationResult::Empty,
            OperationResult::Count(1),
            OperationResult::Count(1),
            OperationResult::Count(0),
            OperationResult::Count(0),
        ];
        assert_eq!(
            not_done(&owners, &ops, &results),
            BTreeSet::from(["b", "c"])
        );
    }
}
