//! ListRoutes: every static route of a VPC's router as NB holds it now, plus
//! the routes ovn-peerd wants there but has not installed yet.

use std::collections::BTreeSet;

use super::convert;
use super::error::ApiError;
use super::page_token;
use super::PeeringApi;
use crate::adapters::NbCacheTopology;
use crate::peering::desired::desired_rows;
use crate::peering::topology::resolve_router;
use crate::peering::{is_owned, PeeringSpec, PEERING_KEY};
use crate::proto::v1::RoutePolicy;
use crate::proto::v1::{ListRoutesRequest, ListRoutesResponse, Route};
use crate::store::PeeringState;

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
        let mut specs: Vec<(i64, PeeringSpec)> = Vec::new();
        for r in records.iter().filter(|r| r.state != PeeringState::Deleting) {
            specs.push((
                r.generation,
                r.spec().map_err(|e| ApiError::Internal(e.into()))?,
            ));
        }
        // Peers of our peers matter to the rules too: fetch them for the derivation.
        let neighbour_vpcs: BTreeSet<&str> = specs
            .iter()
            .flat_map(|(_, s)| [s.local_vpc.as_str(), s.remote_vpc.as_str()])
            .filter(|v| *v != req.vpc)
            .collect();
        let neighbour_vpcs: Vec<&str> = neighbour_vpcs.into_iter().collect();
        let neighbours = if neighbour_vpcs.is_empty() {
            Vec::new()
        } else {
            self.inner
                .store
                .peering_list_touching(&neighbour_vpcs)
                .await?
        };
        let others: Vec<PeeringSpec> = neighbours
            .iter()
            .filter(|r| r.state != PeeringState::Deleting)
            .filter_map(|r| r.spec().ok())
            .collect();

        let mut routes = {
            let cache = self.nb_cache()?;
            let topo = NbCacheTopology(&cache);
            let router = resolve_router(&topo, &req.vpc).map_err(|_| ApiError::NotFound {
                resource: "vpc",
                name: req.vpc.clone(),
            })?;
            let router_uuid = router.id.parse().unwrap_or_default();
            let installed: Vec<Route> = cache
                .router(router_uuid)
                .map(|r| r.static_routes.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|u| cache.static_route(*u))
                .map(|r| Route {
                    vpc: req.vpc.clone(),
                    cidr: r.ip_prefix.clone(),
                    nexthop: r.nexthop.clone(),
                    policy: convert::policy(r.policy.as_deref().unwrap_or("")) as i32,
                    route_table: r.route_table.clone(),
                    peering: if is_owned(&r.external_ids) {
                        r.external_ids.get(PEERING_KEY).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    },
                    installed: true,
                })
                .collect();
            let mut wanted: Vec<Route> = Vec::new();
            for (generation, spec) in &specs {
                let Ok(desired) = desired_rows(
                    spec,
                    *generation,
                    &topo,
                    &others,
                    &self.inner.settings.protected_vpcs,
                ) else {
                    continue; // a failed peering wants nothing it can name
                };
                for d in desired.routes.iter().filter(|d| d.router_id == router.id) {
                    let route = Route {
                        vpc: req.vpc.clone(),
                        cidr: d.ip_prefix.clone(),
                        nexthop: d.nexthop.clone(),
                        policy: convert::policy(d.policy.as_ovn_str()) as i32,
                        route_table: d.route_table.clone(),
                        peering: spec.name.clone(),
                        installed: false,
                    };
                    let present = installed.iter().any(|i| same_route(i, &route));
                    if !present {
                        wanted.push(route);
                    }
                }
            }
            let mut all = installed;
            all.extend(wanted);
            all
        };
        routes.sort_by_cached_key(sort_key);
        if let Some(after) = after {
            routes.retain(|r| sort_key(r) > after);
        }
        let more = routes.len() > limit;
        routes.truncate(limit);
        let next_page_token = match (more, routes.last()) {
            (true, Some(last)) => page_token::encode(&req.vpc, &sort_key(last)),
            _ => String::new(),
        };
        Ok(ListRoutesResponse {
            routes,
            next_page_token,
        })
    }
}

fn same_route(a: &Route, b: &Route) -> bool {
    a.cidr == b.cidr
        && a.nexthop == b.nexthop
        && a.policy == b.policy
        && a.route_table == b.route_table
        && a.peering == b.peering
}

/// A total order on routes, also the page cursor.
fn sort_key(r: &Route) -> String {
    let policy = if r.policy == RoutePolicy::SrcIp as i32 {
        "src-ip"
    } else {
        "dst-ip"
    };
    format!(
        "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
        r.route_table,
        r.cidr,
        policy,
        r.nexthop,
        r.peering,
        u8::from(!r.installed)
    )
}
