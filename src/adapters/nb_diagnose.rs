//! DiagnosePeering's [`Snapshot`] built from the NB replica, the rows the replica does not
//! hold (router policies, `NB_Global`: read by the API with one-off `select`s) and the
//! peering's wanted rows from the worker's own derivation ([`Judge::wanted`]). Read-only.

use std::collections::HashMap;

use crate::diagnose::{
    NbCfg, PeeringFacts, PolicyRow, PortRow, RouteRow, RouterRow, SideSnapshot, Snapshot,
};
use crate::ovsdb::{LogicalRouterPort, NbCache, StrMap};
use crate::peering::{is_ours, port_name, Side, PEERING_KEY};
use crate::reconciler::derive::Judge;
use crate::store::{PeeringRecord, PeeringState};

/// What NB holds beyond the replica.
#[derive(Debug, Default)]
pub struct NbExtra {
    /// Policies by router UUID.
    pub policies: HashMap<String, Vec<PolicyRow>>,
    /// `NB_Global`, when there is a row.
    pub nb_global: Option<NbCfg>,
}

/// The snapshot of `record`; `context` holds every stored peering of its two VPCs (the other
/// peerings the rules consult, as the worker's pass reads them). `Err` when the stored record
/// cannot be read as a peering (a corrupt row).
pub fn snapshot(
    cache: &NbCache,
    record: &PeeringRecord,
    context: &[PeeringRecord],
    protected: &[String],
    instance: Option<&str>,
    mut extra: NbExtra,
) -> Result<Snapshot, String> {
    // A peering being deleted is judged as if it were live: what it wanted is what is left.
    let mut ctx: Vec<PeeringRecord> = context
        .iter()
        .filter(|p| p.name != record.name)
        .cloned()
        .collect();
    let mut me = record.clone();
    if me.state == PeeringState::Deleting {
        me.state = PeeringState::Pending;
    }
    ctx.push(me);
    let going = Judge::going(&ctx);
    let judge = Judge::new(&ctx, &going, cache, protected, instance);
    let (wanted, refusal) = match judge.wanted(&record.name) {
        Some(Ok(rows)) => (rows, None),
        Some(Err(u)) => (u.rows, Some(u.why)),
        None => return Err(format!("peering {:?} cannot be read", record.name)),
    };
    let vpcs = [record.local_vpc.as_str(), record.remote_vpc.as_str()];
    let sides = Side::BOTH.map(|side| {
        let (vpc, other) = match side {
            Side::Local => (vpcs[0], vpcs[1]),
            Side::Remote => (vpcs[1], vpcs[0]),
        };
        SideSnapshot {
            vpc: vpc.to_string(),
            router: router(cache, vpc, instance, &mut extra.policies),
            port: cache
                .port_by_name(&port_name(vpc, other))
                .map(|p| port(cache, instance, p)),
        }
    });
    Ok(Snapshot {
        peering: facts(record),
        wanted,
        refusal,
        sides,
        nb_global: extra.nb_global,
    })
}

/// The stored peering as the checks see it.
pub fn facts(record: &PeeringRecord) -> PeeringFacts {
    PeeringFacts {
        name: record.name.clone(),
        state: record.state,
        state_message: record.state_message.clone(),
        generation: record.generation,
        observed_generation: record.observed_generation,
    }
}

fn router(
    cache: &NbCache,
    vpc: &str,
    instance: Option<&str>,
    policies: &mut HashMap<String, Vec<PolicyRow>>,
) -> Result<RouterRow, String> {
    let routers = cache.router_by_name(vpc);
    let r = match routers.as_slice() {
        [r] => *r,
        [] => return Err(format!("no OVN logical router is named {vpc:?}")),
        many => {
            return Err(format!(
                "{} OVN logical routers are named {vpc:?}; a VPC must be exactly one",
                many.len()
            ))
        }
    };
    let uuid = r.uuid.to_string();
    Ok(RouterRow {
        name: r.name.to_string(),
        options: r.options.to_map(),
        routes: r
            .static_routes
            .iter()
            .filter_map(|u| cache.static_route(*u))
            .map(|s| RouteRow {
                uuid: s.uuid.to_string(),
                ip_prefix: s.ip_prefix.to_string(),
                nexthop: s.nexthop.to_string(),
                policy: s.policy.as_deref().map(str::to_owned),
                output_port: s.output_port.as_deref().map(str::to_owned),
                route_table: s.route_table.to_string(),
                peering: owner(&s.external_ids, instance),
            })
            .collect(),
        policies: policies.remove(&uuid).unwrap_or_default(),
        uuid,
    })
}

fn port(cache: &NbCache, instance: Option<&str>, p: &LogicalRouterPort) -> PortRow {
    // Which router holds it: a scan, once per side per call.
    let holder = cache.routers().find(|r| r.ports.contains(&p.uuid));
    PortRow {
        uuid: p.uuid.to_string(),
        name: p.name.to_string(),
        networks: p.networks.to_vec(),
        peer: p.peer.as_deref().map(str::to_owned),
        enabled: p.enabled,
        router_uuid: holder.map(|r| r.uuid.to_string()),
        router_name: holder.map(|r| r.name.to_string()),
        peering: owner(&p.external_ids, instance),
    }
}

/// The peering a row of this deployment (`instance`) belongs to; `None` for a row it does
/// not own (not ovn-peerd's, or another deployment's under whatever peering name).
fn owner(external_ids: &StrMap, instance: Option<&str>) -> Option<String> {
    is_ours(external_ids, instance).then(|| {
        external_ids
            .get(PEERING_KEY)
            .map(str::to_owned)
            .unwrap_or_default()
    })
}
