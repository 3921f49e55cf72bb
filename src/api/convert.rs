//! Stored records to API messages.

use chrono::{DateTime, Utc};

use crate::peering::RoutePolicy;
use crate::proto::v1::{self as pb, peering, Peering, PeeringRoute};
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
        policy: policy_of_ovn(Some(&r.policy)),
    }
}

/// The domain policy as the API enum (prost's `i32`).
pub fn policy(p: RoutePolicy) -> i32 {
    match p {
        RoutePolicy::DstIp => pb::RoutePolicy::DstIp as i32,
        RoutePolicy::SrcIp => pb::RoutePolicy::SrcIp as i32,
    }
}

/// An NB `policy` column value as the API enum; a value ovn-peerd does not know (some other
/// tool's row) is shown as unspecified.
pub fn policy_of_ovn(ovn: Option<&str>) -> i32 {
    RoutePolicy::from_ovn(ovn).map_or(pb::RoutePolicy::Unspecified as i32, policy)
}

/// The API enum as the domain policy (unspecified = dst-ip); `Err` keeps an unknown value
/// for the refusal message.
pub fn policy_from_api(value: i32) -> Result<RoutePolicy, i32> {
    match pb::RoutePolicy::try_from(value) {
        Ok(pb::RoutePolicy::Unspecified | pb::RoutePolicy::DstIp) => Ok(RoutePolicy::DstIp),
        Ok(pb::RoutePolicy::SrcIp) => Ok(RoutePolicy::SrcIp),
        Err(_) => Err(value),
    }
}

/// A stored state as the API enum.
pub fn state(s: PeeringState) -> peering::State {
    match s {
        PeeringState::Pending => peering::State::Pending,
        PeeringState::Active => peering::State::Active,
        PeeringState::Failed => peering::State::Failed,
        PeeringState::Deleting => peering::State::Deleting,
        PeeringState::PendingAcceptance => peering::State::PendingAcceptance,
        PeeringState::Rejected => peering::State::Rejected,
        PeeringState::Expired => peering::State::Expired,
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}
