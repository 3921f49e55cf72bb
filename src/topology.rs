//! The NB cache seen through the rules' [`Topology`] trait, for the API's
//! checks and the worker's derivations. Read-only.

use crate::ovsdb::model::LogicalRouterPort;
use crate::ovsdb::NbCache;
use crate::peering::topology::{PortView, RouterView, Topology};

/// A borrowed view of the cache.
pub struct NbTopology<'a>(pub &'a NbCache);

impl Topology for NbTopology<'_> {
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
