//! Stored records to API messages.

use chrono::{DateTime, Utc};

use crate::proto::v1::{peering, Peering, PeeringRoute, RoutePolicy};
use crate::store::{PeeringRecord, PeeringState, StoredRoute};

/// A stored peering as the API shows it.
pub fn peering(r: &PeeringRecord) -> Peering {
    Peering {
        name: r.name.clone(),
        local_vpc: r.local_vpc.clone(),
        remote_vpc: r.remote_vpc.clone(),
        local_connect_ip: r.local_connect(),
        remote_connect_ip: r.remote_connect(),
        local_routes: r.local_routes.iter().map(route).collect(),
        remote_routes: r.remote_routes.iter().map(route).collect(),
        state: state(r.state) as i32,
        state_message: r.state_message.clone(),
        generation: r.generation,
        observed_generation: r.observed_generation,
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
    }
}

fn route(r: &StoredRoute) -> PeeringRoute {
    PeeringRoute {
        cidr: r.cidr.clone(),
        policy: policy(&r.policy) as i32,
    }
}

/// An OVN policy column value as the API enum (empty means dst-ip).
pub fn policy(ovn: &str) -> RoutePolicy {
    match ovn {
        "src-ip" => RoutePolicy::SrcIp,
        _ => RoutePolicy::DstIp,
    }
}

fn state(s: PeeringState) -> peering::State {
    match s {
        PeeringState::Pending => peering::State::Pending,
        PeeringState::Active => peering::State::Active,
        PeeringState::Failed => peering::State::Failed,
        PeeringState::Deleting => peering::State::Deleting,
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}
