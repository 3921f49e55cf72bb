//! The OVSDB replica of NB seen through the rules' [`Topology`] trait, for the API's
//! checks and the worker's derivations. Read-only: it borrows the cache and copies out
//! the few fields the rules look at.

use crate::ovsdb::model::LogicalRouterPort;
use crate::ovsdb::NbCache;
use crate::peering::topology::{PortView, RouterView, Topology};

/// A borrowed view of the NB cache, as the rules' [`Topology`].
pub struct NbCacheTopology<'a>(pub &'a NbCache);

impl Topology for NbCacheTopology<'_> {
    fn routers_named(&self, name: &str) -> Vec<RouterView> {
        let cache = self.0;
        cache
            .router_by_name(name)
            .into_iter()
            .map(|r| RouterView {
                id: r.uuid.to_string(),
                name: r.name.clone(),
                ports: r
                    .ports
                    .iter()
                    .filter_map(|u| cache.port(*u))
                    .map(port_view)
                    .collect(),
            })
            .collect()
    }
}

fn port_view(p: &LogicalRouterPort) -> PortView {
    PortView {
        name: p.name.clone(),
        networks: p.networks.clone(),
        peer: p.peer.clone(),
        is_gateway: !p.gateway_chassis.is_empty() || p.ha_chassis_group.is_some(),
    }
}
