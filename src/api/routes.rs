//! ListRoutes: every static route of a VPC's router as NB holds it now, plus
//! the routes ovn-peerd wants there but has not installed yet, derived by the
//! worker's own derivation ([`crate::reconciler::derive`]) so the two never
//! disagree. A route the worker will repair in place (say its `output_port` was
//! cleared) shows twice: as installed, and as wanted with the port it will get.
//!
//! A hub with thousands of peerings: only the peerings whose wanted routes reach the page are
//! judged (against one index of the other peerings, [`crate::reconciler::derive::Judge`]),
//! and that CPU work runs on a blocking thread, not on the async workers.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::convert;
use super::error::ApiError;
use super::page_token;
use super::PeeringApi;
use crate::ovsdb::NbCache;
use crate::peering::desired::DesiredRoute;
use crate::peering::topology::{effective_routes, resolve_router};
use crate::peering::{is_owned, port_name, Family, PeeringSpec, PEERING_KEY};
use crate::proto::v1::{ListRoutesRequest, ListRoutesResponse, Route};
use crate::reconciler::derive::Judge;
use crate::store::PeeringRecord;

use crate::peering::MAX_VPC_LEN;

impl PeeringApi {
    pub(super) async fn routes(
        &self,
        req: ListRoutesRequest,
    ) -> Result<ListRoutesResponse, ApiError> {
        if req.vpc.is_empty() {
            return Err(ApiError::invalid("vpc", "required"));
        }
        if req.vpc.len() > MAX_VPC_LEN {
            return Err(ApiError::invalid(
                "vpc",
                format!("longer than {MAX_VPC_LEN} bytes"),
            ));
        }
        let limit = page_token::page_size(req.page_size)? as usize;
        let after = page_token::decode(&req.page_token, &req.vpc)?;
        let records = self.inner.store.peering_list_touching(&[&req.vpc]).await?;
        // Their VPCs' other peerings take part in the rules: the same context the worker's
        // pass reads for these peerings.
        let vpcs: BTreeSet<&str> = records
            .iter()
            .flat_map(|r| [r.local_vpc.as_str(), r.remote_vpc.as_str()])
            .chain([req.vpc.as_str()])
            .collect();
        let vpcs: Vec<&str> = vpcs.into_iter().collect();
        let context = self.inner.store.peering_list_touching(&vpcs).await?;

        let protected = self.inner.settings.protected_vpcs.clone();
        if !self.inner.nb.state().borrow().is_synced() {
            return Err(ApiError::nb_unavailable());
        }
        let nb = self.inner.nb.clone();
        let vpc = req.vpc.clone();
        // Reading NB and judging peerings is CPU work growing with the hub's peerings: off
        // the async workers.
        let (routes, next_page_token) = tokio::task::spawn_blocking(move || {
            let cache = nb.cache();
            page(&cache, &vpc, &records, &context, &protected, after, limit)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(ListRoutesResponse {
            routes,
            next_page_token,
        })
    }
}

/// One page of `vpc`'s routes after the cursor `after`: every installed route, and the
/// routes its peerings (`records`) want there but NB lacks. The wanted ones are listed in
/// order from what each peering would install if it passes the rules (read without judging
/// it); only the peerings whose routes reach the page are judged, against the index of
/// `context` (the same rules and other peerings as the worker's pass).
fn page(
    cache: &NbCache,
    vpc: &str,
    records: &[PeeringRecord],
    context: &[PeeringRecord],
    protected: &[String],
    after: Option<String>,
    limit: usize,
) -> Result<(Vec<Route>, String), ApiError> {
    let going = Judge::going(context);
    let judge = Judge::new(context, &going, cache, protected);
    let router = resolve_router(judge.topo(), vpc).map_err(|_| ApiError::NotFound {
        resource: "vpc",
        name: vpc.to_string(),
    })?;
    let router_uuid = router.id.parse().unwrap_or_default();
    let installed: Vec<Route> = cache
        .router(router_uuid)
        .map(|r| r.static_routes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|u| cache.static_route(*u))
        .map(|r| Route {
            vpc: vpc.to_string(),
            cidr: r.ip_prefix.clone(),
            nexthop: r.nexthop.clone(),
            policy: convert::policy_of_ovn(r.policy.as_deref()),
            route_table: r.route_table.clone(),
            peering: if is_owned(&r.external_ids) {
                r.external_ids.get(PEERING_KEY).cloned().unwrap_or_default()
            } else {
                String::new()
            },
            installed: true,
            output_port: r.output_port.clone().unwrap_or_default(),
        })
        .collect();
    let names: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
    let mut candidates: Vec<Route> = judge
        .specs()
        .filter(|s| names.contains(s.name.as_str()))
        .flat_map(|s| wanted_unjudged(&judge, s, vpc))
        .collect();
    // A wanted route NB already holds (on any page) is listed once, as installed.
    let installed_keys: HashSet<RouteKey> = installed.iter().map(route_key).collect();
    candidates.extend(installed);
    let mut keyed: Vec<(String, Route)> = candidates
        .into_iter()
        .map(|r| (sort_key(&r), r))
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Judged peerings: the routes they want here, or none when they fail the rules.
    let mut judged: HashMap<String, HashSet<RouteKey>> = HashMap::new();
    let mut routes = Vec::with_capacity(limit + 1);
    let mut last_key = String::new();
    for (k, r) in keyed {
        if !r.installed {
            if installed_keys.contains(&route_key(&r)) {
                continue;
            }
            let wants = judged.entry(r.peering.clone()).or_insert_with(|| {
                judge
                    .rows(&r.peering)
                    .map(|d| {
                        d.routes
                            .iter()
                            .filter(|w| w.router_id == router.id)
                            .map(|w| derived_key(&d.name, w))
                            .collect()
                    })
                    .unwrap_or_default()
            });
            if !wants.contains(&route_key(&r)) {
                continue;
            }
        }
        if routes.len() == limit {
            // One more exists: this page ends at the last one listed.
            return Ok((routes, page_token::encode(vpc, &last_key)));
        }
        last_key = k;
        routes.push(r);
    }
    Ok((routes, String::new()))
}

/// The routes peering `spec` would install in `vpc` if it passes the rules, as
/// [`crate::peering::desired::desired_from_facts`] writes them (the other VPC's subnets as the
/// rules read them), before judging it.
fn wanted_unjudged(judge: &Judge<'_>, spec: &PeeringSpec, vpc: &str) -> Vec<Route> {
    let Some(side) = spec.side_of(vpc) else {
        return Vec::new();
    };
    let other = spec.vpc(side.other());
    let other_subnets = judge.index().subnets(judge.topo(), other);
    let via = spec.connect(side.other());
    effective_routes(spec.routes(side), &other_subnets, via)
        .into_iter()
        .filter_map(|r| {
            let nexthop = via.host(Family::of(&r.prefix))?;
            Some(Route {
                vpc: vpc.to_string(),
                cidr: r.prefix.trunc().to_string(),
                nexthop: nexthop.to_string(),
                policy: convert::policy(r.policy),
                route_table: String::new(),
                peering: spec.name.clone(),
                installed: false,
                output_port: port_name(vpc, other),
            })
        })
        .collect()
}

/// What makes two listed routes the same row: (cidr, nexthop, policy, table, peering, port).
type RouteKey = (String, String, i32, String, String, String);

fn route_key(r: &Route) -> RouteKey {
    (
        r.cidr.clone(),
        r.nexthop.clone(),
        r.policy,
        r.route_table.clone(),
        r.peering.clone(),
        r.output_port.clone(),
    )
}

fn derived_key(peering: &str, r: &DesiredRoute) -> RouteKey {
    (
        r.ip_prefix.clone(),
        r.nexthop.clone(),
        convert::policy(r.policy),
        r.route_table.clone(),
        peering.to_string(),
        r.output_port.clone(),
    )
}

/// A total order on routes, also the page cursor.
fn sort_key(r: &Route) -> String {
    let policy = convert::policy_from_api(r.policy)
        .unwrap_or_default()
        .as_ovn_str();
    format!(
        "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
        r.route_table,
        r.cidr,
        policy,
        r.nexthop,
        r.peering,
        u8::from(!r.installed),
        r.output_port
    )
}
