//! ListRoutes: every static route of a VPC's router as NB holds it now, plus
//! the routes ovn-peerd wants there but has not installed yet, derived by the
//! worker's own derivation ([`crate::reconciler::derive`]) so the two never
//! disagree. A route the worker will repair in place (say its `output_port` was
//! cleared) shows twice: as installed, and as wanted with the port it will get.

use std::collections::BTreeSet;

use super::convert;
use super::error::ApiError;
use super::page_token;
use super::PeeringApi;
use crate::adapters::NbCacheTopology;
use crate::peering::topology::resolve_router;
use crate::peering::{is_owned, PEERING_KEY};
use crate::proto::v1::{ListRoutesRequest, ListRoutesResponse, Route};
use crate::reconciler::derive::derive;

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
            // The worker's own derivation: a failed peering wants nothing it can name.
            let derivation = derive(
                &records,
                &context,
                &cache,
                &self.inner.settings.protected_vpcs,
            );
            let wanted: Vec<Route> = derivation
                .desired
                .iter()
                .flat_map(|d| d.routes.iter().map(move |r| (d, r)))
                .filter(|(_, r)| r.router_id == router.id)
                .map(|(d, r)| Route {
                    vpc: req.vpc.clone(),
                    cidr: r.ip_prefix.clone(),
                    nexthop: r.nexthop.clone(),
                    policy: convert::policy(r.policy),
                    route_table: r.route_table.clone(),
                    peering: d.name.clone(),
                    installed: false,
                    output_port: r.output_port.clone(),
                })
                .filter(|w| !installed.iter().any(|i| same_route(i, w)))
                .collect();
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
        && a.output_port == b.output_port
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
