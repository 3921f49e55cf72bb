//! UpdatePeering (AIP-134): labels and routes changed in place.
//!
//! The request is checked on its own first (field texts, the update mask, labels, the etag's
//! form), then judged in the VPC-locked transaction of CreatePeering (`store::create`,
//! `store::update`): the peering is read `FOR UPDATE`, its etag compared with the one given,
//! the new route sets validated with the rules of CreatePeering (`validate_spec` on the
//! stored peering with the new routes) and, when they change, the topology rules judged
//! against NB and the VPCs' other peerings as a create is. The write checks the etag it read
//! in the `UPDATE` itself. A route change bumps `generation`; labels alone do not.
//!
//! A `request_id` is remembered with the request's fingerprint: a retry of a request that
//! was carried out gets the peering back (never ABORTED for the etag its first attempt made
//! stale); the same request_id with another request is refused.

use std::time::Instant;

use prost_types::FieldMask;

use super::authz::Scope;
use super::convert;
use super::create_tx::Neighbours;
use super::error::ApiError;
use super::input;
use super::PeeringApi;
use crate::peering::input::{update_fingerprint, UpdateRequest};
use crate::peering::topology::port_names;
use crate::peering::validate::{validate_spec, UncheckedPeering, UncheckedRoute};
use crate::peering::{Refusal, RefusalKind, Violation};
use crate::proto::v1::{Peering, UpdatePeeringRequest};
use crate::store::{Labels, PeeringEdit, PeeringRecord, PeeringState, StoreError, StoredRoute};

/// The fields an update mask selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Mask {
    pub labels: bool,
    pub local_routes: bool,
    pub remote_routes: bool,
}

/// The paths UpdatePeering can change.
pub(super) const UPDATABLE: [&str; 3] = ["labels", "local_routes", "remote_routes"];

/// The fields `mask` selects: an empty mask or `*` is every updatable field; any other path
/// is INVALID_ARGUMENT naming it (`update_mask.paths[i]`).
pub(super) fn parse_mask(mask: Option<&FieldMask>) -> Result<Mask, ApiError> {
    let all = Mask {
        labels: true,
        local_routes: true,
        remote_routes: true,
    };
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Ok(all);
    }
    let mut m = Mask::default();
    let mut v = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "*" => m = all,
            "labels" => m.labels = true,
            "local_routes" => m.local_routes = true,
            "remote_routes" => m.remote_routes = true,
            other => {
                let shown: String = other.escape_debug().take(100).collect();
                v.push(Violation::new(
                    format!("update_mask.paths[{i}]"),
                    format!(
                        "\"{shown}\" cannot be updated; updatable: {} (or \"*\" for all)",
                        UPDATABLE.join(", ")
                    ),
                ))
            }
        }
    }
    Refusal::check(RefusalKind::InvalidArgument, v, m).map_err(ApiError::Refused)
}

/// The routes to judge for one side: the request's when the mask selects it, else the
/// stored ones.
fn side_routes(
    selected: bool,
    asked: &[UncheckedRoute],
    stored: &[StoredRoute],
) -> Vec<UncheckedRoute> {
    if selected {
        asked.to_vec()
    } else {
        convert::stored_unchecked(stored)
    }
}

/// Route lists as the desired NB rows see them: order does not matter.
fn same_routes(a: &[StoredRoute], b: &[StoredRoute]) -> bool {
    let key = |rs: &[StoredRoute]| {
        let mut k: Vec<(String, String)> = rs
            .iter()
            .map(|r| (r.cidr.clone(), r.policy.clone()))
            .collect();
        k.sort();
        k
    };
    key(a) == key(b)
}

impl PeeringApi {
    pub(super) async fn update(
        &self,
        scope: Scope,
        req: UpdatePeeringRequest,
        deadline: Option<Instant>,
    ) -> Result<Peering, ApiError> {
        input::update(&req)?;
        let Some(p) = &req.peering else {
            return Err(ApiError::invalid("peering", "required"));
        };
        if p.name.is_empty() {
            return Err(ApiError::invalid("peering.name", "required"));
        }
        let mask = parse_mask(req.update_mask.as_ref())?;
        let labels: Option<Labels> = mask
            .labels
            .then(|| convert::labels_from_api(&p.labels))
            .transpose()?;
        let etag = convert::etag_from_api("peering.etag", &p.etag)?;
        let local_asked = convert::routes_unchecked(&p.local_routes);
        let remote_asked = convert::routes_unchecked(&p.remote_routes);
        let hash = update_fingerprint(&UpdateRequest {
            name: &p.name,
            labels: labels.as_ref(),
            local_routes: mask.local_routes.then_some(local_asked.as_slice()),
            remote_routes: mask.remote_routes.then_some(remote_asked.as_slice()),
        });
        let request_id = (!req.request_id.is_empty()).then_some(req.request_id.as_str());
        let Some(current) = self.inner.store.peering_get(&p.name).await? else {
            return Err(ApiError::peering_not_found(&p.name));
        };
        // The local side first; whether remote_routes change (which needs the remote VPC
        // too) is known once the new routes are judged, under the locks.
        scope.update(&current, false)?;
        // A retry of a request that was carried out gets the peering as it is now.
        if let Some(id) = request_id {
            let found = self.inner.store.peering_update_request_get(id).await?;
            if let Some(first) = self.same_update(found, &p.name, &hash).await? {
                return Ok(first);
            }
        }

        // A peering's VPCs never change: these are the locks of any later state of it.
        let store = &self.inner.store;
        let mut tx = store
            .peering_create_begin(&[&current.local_vpc, &current.remote_vpc], deadline)
            .await?;
        if let Some(id) = request_id {
            if let Some(found) = tx.update_request(id).await? {
                drop(tx);
                return self.first_update(found, &p.name, &hash).await;
            }
        }
        let Some(locked) = tx.peering_for_update(&p.name).await? else {
            return Err(ApiError::peering_not_found(&p.name));
        };
        // Deleted and made again under the name since it was authorized (perhaps with other
        // VPCs, whose locks this transaction does not hold): read it again.
        if locked.create_time != current.create_time
            || locked.local_vpc != current.local_vpc
            || locked.remote_vpc != current.remote_vpc
        {
            return Err(ApiError::EtagMismatch { name: locked.name });
        }
        if locked.state == PeeringState::Deleting {
            return Err(ApiError::PeeringDeleting { name: locked.name });
        }
        if etag.is_some_and(|e| e != locked.etag) {
            return Err(ApiError::EtagMismatch { name: locked.name });
        }

        let validated = validate_spec(&UncheckedPeering {
            name: locked.name.clone(),
            local_vpc: locked.local_vpc.clone(),
            remote_vpc: locked.remote_vpc.clone(),
            local_connect_ip: locked.local_connect(),
            remote_connect_ip: locked.remote_connect(),
            local_routes: side_routes(mask.local_routes, &local_asked, &locked.local_routes),
            remote_routes: side_routes(mask.remote_routes, &remote_asked, &locked.remote_routes),
        })
        .map_err(ApiError::Refused)?;
        let spec = validated.spec().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "stored peering {:?} has no link",
                locked.name
            ))
        })?;
        let stored = |rs: &[crate::peering::RouteSpec]| -> Vec<StoredRoute> {
            rs.iter().map(StoredRoute::from_spec).collect()
        };
        let local_routes = stored(&spec.local_routes);
        let remote_routes = stored(&spec.remote_routes);
        // An empty mask or `*` with the stored remote_routes does not change them.
        let remote_change = mask.remote_routes && remote_routes != locked.remote_routes;
        scope.update(&locked, remote_change)?;
        let bump_generation = !same_routes(&local_routes, &locked.local_routes)
            || !same_routes(&remote_routes, &locked.remote_routes);
        if bump_generation && !locked.state.in_northbound() {
            // A request is answered as it was made: accepting must not install other routes.
            return Err(ApiError::PeeringNotAccepted {
                name: locked.name.clone(),
                state: convert::state(locked.state).as_str_name(),
            });
        }
        if bump_generation {
            // The rules of a create, against the VPCs' other peerings (this one aside).
            let ports = port_names(&locked.local_vpc, &locked.remote_vpc).to_vec();
            let records = tx
                .list_for_create(&[&locked.local_vpc, &locked.remote_vpc], "", &ports)
                .await?;
            let others: Vec<PeeringRecord> = records
                .into_iter()
                .filter(|r| r.name != locked.name)
                .collect();
            let cache = self.nb_cache()?;
            self.check(&cache, &spec, &Neighbours::new(others)?.specs)?;
        }
        let change = PeeringEdit {
            labels: labels.filter(|l| *l != locked.labels),
            local_routes: (mask.local_routes && local_routes != locked.local_routes)
                .then_some(local_routes),
            remote_routes: remote_change.then_some(remote_routes),
            bump_generation,
        };
        let unchanged = change.labels.is_none()
            && change.local_routes.is_none()
            && change.remote_routes.is_none();
        if req.validate_only || unchanged {
            return Ok(preview(&locked, &change));
        }
        let request = request_id.map(|id| (id, hash.as_slice()));
        match tx.update(&locked.name, locked.etag, &change, request).await {
            Ok(record) => Ok(convert::peering(&record)),
            // The same request_id, on another peering (other locks), committed first.
            Err(StoreError::UpdateRequestIdTaken) => {
                let id = request_id.unwrap_or_default();
                let found = self.inner.store.peering_update_request_get(id).await?;
                match self.same_update(found, &locked.name, &hash).await? {
                    Some(first) => Ok(first),
                    None => Err(ApiError::contention("request_id")),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The peering a request_id was used for, when the request is the same; refused when not.
    async fn same_update(
        &self,
        found: Option<(String, Vec<u8>)>,
        name: &str,
        hash: &[u8],
    ) -> Result<Option<Peering>, ApiError> {
        match found {
            Some(found) => self.first_update(found, name, hash).await.map(Some),
            None => Ok(None),
        }
    }

    /// The peering of a request_id's first update, when this request (on peering `name`,
    /// which the caller was authorized for) is the same. Another peering's is never named:
    /// it may be another tenant's.
    async fn first_update(
        &self,
        (first_name, first_hash): (String, Vec<u8>),
        name: &str,
        hash: &[u8],
    ) -> Result<Peering, ApiError> {
        if first_name != name {
            return Err(ApiError::RequestIdReused(
                "was already used with another request (an update of another peering); \
                 a new request needs a new request_id"
                    .into(),
            ));
        }
        if first_hash != hash {
            return Err(ApiError::RequestIdReused(format!(
                "was already used with another request (an update of peering {name:?}); \
                 a new request needs a new request_id"
            )));
        }
        match self.inner.store.peering_get(name).await? {
            Some(record) => Ok(convert::peering(&record)),
            None => Err(ApiError::peering_not_found(name)),
        }
    }
}

/// The peering as `change` would leave it (validate_only, or nothing to change). The etag
/// stays: nothing was written.
fn preview(record: &PeeringRecord, change: &PeeringEdit) -> Peering {
    let mut r = record.clone();
    if let Some(l) = &change.labels {
        r.labels = l.clone();
    }
    if let Some(rs) = &change.local_routes {
        r.local_routes = rs.clone();
    }
    if let Some(rs) = &change.remote_routes {
        r.remote_routes = rs.clone();
    }
    if change.bump_generation {
        r.generation += 1;
        r.state = PeeringState::Pending;
        r.state_message.clear();
    }
    convert::peering(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(paths: &[&str]) -> Result<Mask, ApiError> {
        parse_mask(Some(&FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }))
    }

    #[test]
    fn empty_and_star_masks_are_every_updatable_field() {
        let all = Mask {
            labels: true,
            local_routes: true,
            remote_routes: true,
        };
        assert_eq!(parse_mask(None).unwrap(), all);
        assert_eq!(mask(&[]).unwrap(), all);
        assert_eq!(mask(&["*"]).unwrap(), all);
        assert_eq!(
            mask(&["labels"]).unwrap(),
            Mask {
                labels: true,
                ..Default::default()
            }
        );
        assert_eq!(
            mask(&["local_routes", "remote_routes"]).unwrap(),
            Mask {
                local_routes: true,
                remote_routes: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn other_paths_are_refused_by_name() {
        let Err(ApiError::Refused(r)) = mask(&["labels", "local_vpc", "state"]) else {
            panic!("accepted");
        };
        assert_eq!(r.kind, RefusalKind::InvalidArgument);
        let fields: Vec<&str> = r.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["update_mask.paths[1]", "update_mask.paths[2]"]);
        assert!(r.violations[0].description.contains("\"local_vpc\""), "{r}");
    }

    #[test]
    fn route_order_is_no_change() {
        let r = |c: &str| StoredRoute {
            cidr: c.into(),
            policy: "dst-ip".into(),
        };
        assert!(same_routes(
            &[r("10.0.0.0/17"), r("10.0.128.0/17")],
            &[r("10.0.128.0/17"), r("10.0.0.0/17")]
        ));
        assert!(!same_routes(
            &[r("10.0.0.0/16")],
            &[r("10.0.0.0/17"), r("10.0.128.0/17")]
        ));
    }
}
