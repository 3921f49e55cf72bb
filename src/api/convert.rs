//! Stored records to API messages.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::error::ApiError;
use crate::peering::labels::check_labels;
use crate::peering::validate::UncheckedRoute;
use crate::peering::{Refusal, RefusalKind, RoutePolicy};
use crate::proto::v1::{self as pb, peering, Peering, PeeringRoute};
use crate::store::{Labels, PeeringRecord, PeeringState, StoredRoute};

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
        labels: r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        etag: etag(r.etag),
    }
}

/// A stored etag as the API shows it (opaque to clients).
pub fn etag(e: uuid::Uuid) -> String {
    e.simple().to_string()
}

/// An etag a client gave back: `None` when empty (no check); INVALID_ARGUMENT on `field`
/// when it is not one this service hands out.
pub fn etag_from_api(field: &str, text: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    match uuid::Uuid::try_parse(text) {
        Ok(e) if text.len() == 32 => Ok(Some(e)),
        _ => Err(ApiError::invalid(
            field,
            "is not an etag of this service: give back a Peering's `etag` as it was read",
        )),
    }
}

fn route_unchecked(r: &PeeringRoute) -> UncheckedRoute {
    UncheckedRoute {
        cidr: r.cidr.clone(),
        policy: policy_from_api(r.policy),
    }
}

/// The API's routes as the rules take them.
pub fn routes_unchecked(rs: &[PeeringRoute]) -> Vec<UncheckedRoute> {
    rs.iter().map(route_unchecked).collect()
}

/// Stored routes as the rules take them (to judge a stored peering again).
pub fn stored_unchecked(rs: &[StoredRoute]) -> Vec<UncheckedRoute> {
    rs.iter().map(|r| route_unchecked(&route(r))).collect()
}

/// Labels as stored, checked ([`crate::peering::labels`]): INVALID_ARGUMENT naming
/// `peering.labels[<key>]` otherwise.
pub fn labels_from_api(labels: &HashMap<String, String>) -> Result<Labels, ApiError> {
    let violations = check_labels("peering.labels", labels);
    Refusal::check(RefusalKind::InvalidArgument, violations, ()).map_err(ApiError::Refused)?;
    Ok(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
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
