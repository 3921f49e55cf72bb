//! CreatePeering's locked transaction and its idempotency.
//!
//! The cross-peering rules (one VPC's other peerings: overlapping subnets,
//! ambiguous routes, links) are judged, and a link allocated, inside the
//! transaction that inserts, under the per-VPC locks of both VPCs (see `store::create`): two
//! creates on one hub are judged one after the other, on any replica, and the
//! second sees the first. A `request_id` is answered with the peering it first
//! created when the request is the same (by fingerprint), and refused when not.

use std::time::Instant;

use ipnet::IpNet;

use super::authz::Admission;
use super::convert;
use super::error::ApiError;
use super::PeeringApi;
use crate::ovsdb::NbCache;
use crate::peering::topology::port_names;
use crate::peering::validate::ValidatedPeering;
use crate::peering::{PeeringSpec, Refusal, RefusalKind};
use crate::proto::v1::Peering;
use crate::store::{NewPeering, PeeringRecord, PeeringState, RequestRecord, StoreError};

/// A CreatePeering request as idempotency sees it.
pub(super) struct Request {
    /// The request_id, when given.
    pub id: Option<String>,
    /// `request_fingerprint` of the validated request.
    pub hash: Vec<u8>,
    /// The labels to store, checked.
    pub labels: crate::store::Labels,
    /// Stored as a peering or as a cross-tenant request.
    pub admission: Admission,
    /// When the caller's deadline passes: its transaction's lock waits end by then in
    /// Postgres (`Store::peering_create_begin`; `None`: no bound but the server's).
    pub deadline: Option<Instant>,
}

/// What one locked attempt at inserting came to.
pub(super) enum Inserted {
    /// Stored now, or by the first call with this request_id.
    Done(Box<Peering>),
    /// The allocated link (of this spec) is in the way after all: allocate another.
    LinkTaken(Box<PeeringSpec>),
    /// A concurrent create took a port name between our check and our insert:
    /// judge again (the holder is visible now).
    Again,
}

/// The stored peerings a create (or an accept) is judged against.
pub(super) struct Neighbours {
    /// Every one read: names are unique over all of them.
    pub records: Vec<PeeringRecord>,
    /// Those whose rows are or may be in NB, as specs: what the topology rules see.
    /// Requests are judged when they are made and again when accepted, never
    /// against each other, so that a request cannot stand in the way of the
    /// remote tenant's own peerings.
    pub specs: Vec<PeeringSpec>,
}

impl Neighbours {
    pub(super) fn new(records: Vec<PeeringRecord>) -> Result<Neighbours, ApiError> {
        let specs = records
            .iter()
            .filter(|r| r.state.in_northbound())
            .map(|r| r.spec().map_err(|e| ApiError::Internal(e.into())))
            .collect::<Result<_, _>>()?;
        Ok(Neighbours { records, specs })
    }

    /// The links held by the neighbours that share a VPC with `v` (requests awaiting
    /// acceptance included, rejected and expired ones not): links are unique per VPC.
    pub(super) fn held_links<'a>(
        &'a self,
        v: &'a ValidatedPeering,
    ) -> impl Iterator<Item = IpNet> + 'a {
        let vpcs = [v.local_vpc.as_str(), v.remote_vpc.as_str()];
        self.records
            .iter()
            .filter(move |r| {
                r.state.holds_pair()
                    && r.name != v.name
                    && (vpcs.contains(&r.local_vpc.as_str())
                        || vpcs.contains(&r.remote_vpc.as_str()))
            })
            .flat_map(|r| r.spec().ok())
            .flat_map(|s| s.local_connect.networks())
    }
}

impl PeeringApi {
    /// The first answer to this request's request_id, if one was stored; INVALID_ARGUMENT
    /// when that request_id was used for another request.
    pub(super) async fn first_result(
        &self,
        request: &Request,
    ) -> Result<Option<Peering>, ApiError> {
        let Some(id) = &request.id else {
            return Ok(None);
        };
        let found = self
            .inner
            .store
            .peering_get_by_request_id_hashed(id)
            .await?;
        same_request(found, request)
    }

    /// Judges the peering with its VPCs locked and inserts it with its port names. Without
    /// explicit addresses its link is allocated under the locks: the lowest one free for the
    /// pair (avoiding `excluded` too), which no concurrent create of either VPC can take
    /// before the commit.
    pub(super) async fn insert_locked(
        &self,
        validated: &ValidatedPeering,
        request: &Request,
        excluded: &[IpNet],
    ) -> Result<Inserted, ApiError> {
        let store = &self.inner.store;
        let mut tx = store
            .peering_create_begin(
                &[&validated.local_vpc, &validated.remote_vpc],
                request.deadline,
            )
            .await?;
        if let Some(id) = &request.id {
            if let Some(first) = same_request(tx.by_request_id(id).await?, request)? {
                return Ok(Inserted::Done(Box::new(first)));
            }
        }
        let vpcs = [validated.local_vpc.as_str(), validated.remote_vpc.as_str()];
        let ports = port_names(vpcs[0], vpcs[1]).to_vec();
        let records = tx.list_for_create(&vpcs, &validated.name, &ports).await?;
        let others = Neighbours::new(records)?;
        let cache = self.nb_cache()?;
        let (new, spec, allocated) =
            match self.decide(&cache, validated, request, &others, excluded)? {
                Decided::Store {
                    new,
                    spec,
                    allocated,
                } => (new, spec, allocated),
                Decided::LinkTaken(spec) => return Ok(Inserted::LinkTaken(spec)),
            };
        match tx.insert(&new, Some(&request.hash), &ports).await {
            Ok(record) => Ok(Inserted::Done(Box::new(convert::peering(&record)))),
            Err(StoreError::LinkOverlap { .. }) if allocated => Ok(Inserted::LinkTaken(spec)),
            Err(StoreError::LinkOverlap { family }) => Err(link_overlap(family)),
            Err(StoreError::PortTaken) => Ok(Inserted::Again),
            // The same request_id on another VPC pair (other locks) committed first.
            Err(StoreError::RequestIdTaken) => match self.first_result(request).await? {
                Some(first) => Ok(Inserted::Done(Box::new(first))),
                None => Err(ApiError::Unavailable {
                    what: super::error::Dependency::Database,
                    source: None,
                }),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The cross-peering judgement of one create against `others` (read under the VPCs'
    /// locks), pure but for the NB cache: ALREADY_EXISTS and the port names of requests,
    /// then a link allocated when none is given (avoiding `excluded` too), then the topology
    /// rules. What to store, or that only the allocated link is in the way.
    pub(super) fn decide(
        &self,
        cache: &NbCache,
        validated: &ValidatedPeering,
        request: &Request,
        others: &Neighbours,
        excluded: &[IpNet],
    ) -> Result<Decided, ApiError> {
        self.check_unique(validated, others)?;
        let (spec, allocated) = match validated.spec() {
            Some(spec) => (spec, false),
            None => (self.allocate(cache, validated, others, excluded)?, true),
        };
        match self.check(cache, &spec, &others.specs) {
            Ok(()) => {}
            // Only the allocated link is in the way (a concurrent create's link or routes).
            Err(ApiError::Refused(r))
                if allocated
                    && r.violations
                        .iter()
                        .all(|v| v.field.ends_with("_connect_ip")) =>
            {
                return Ok(Decided::LinkTaken(Box::new(spec)))
            }
            Err(e) => return Err(e),
        }
        // A given link that overlaps one held by a request awaiting acceptance (which the
        // topology rules do not see): refused here as the links' constraint would refuse it.
        if !allocated {
            let held: Vec<IpNet> = others.held_links(validated).collect();
            let overlap = spec.local_connect.networks().into_iter().find(|a| {
                held.iter()
                    .any(|h| a.contains(&h.network()) || h.contains(&a.network()))
            });
            if let Some(a) = overlap {
                return Err(link_overlap(if a.addr().is_ipv4() { 4 } else { 6 }));
            }
        }
        let mut new = NewPeering::from_spec(&spec, request.id.clone(), request.labels.clone());
        if let Admission::Acceptance { remote_tenant } = &request.admission {
            new.state = PeeringState::PendingAcceptance;
            new.state_message = format!(
                "awaiting acceptance by tenant {remote_tenant:?}, the owner of remote_vpc {:?}",
                spec.remote_vpc
            );
        }
        Ok(Decided::Store {
            new: Box::new(new),
            spec: Box::new(spec),
            allocated,
        })
    }
}

/// What [`PeeringApi::decide`] came to.
pub(super) enum Decided {
    /// Store this (its link allocated here when `allocated`).
    Store {
        new: Box<NewPeering>,
        spec: Box<PeeringSpec>,
        allocated: bool,
    },
    /// The allocated link (of this spec) is in the way: allocate another.
    LinkTaken(Box<PeeringSpec>),
}

/// A given link that overlaps the link of another peering of its VPCs (`family`: 4 or 6).
pub(super) fn link_overlap(family: u8) -> ApiError {
    ApiError::Refused(Refusal::single(
        RefusalKind::FailedPrecondition,
        "peering.local_connect_ip",
        format!("the IPv{family} link overlaps the link of another peering of its VPCs"),
    ))
}

/// The stored answer when it was created by the same request; refused when by another.
pub(super) fn same_request(
    found: Option<RequestRecord>,
    request: &Request,
) -> Result<Option<Peering>, ApiError> {
    let Some(found) = found else {
        return Ok(None);
    };
    // Peerings stored before fingerprints were kept: taken as the same request.
    let same = found
        .request_hash
        .as_deref()
        .is_none_or(|h| h == request.hash.as_slice());
    if same {
        return Ok(Some(convert::peering(&found.record)));
    }
    Err(request_id_reused())
}

/// A request_id used before by another request. The peering it made is not named: it may
/// be another tenant's.
pub(super) fn request_id_reused() -> ApiError {
    ApiError::RequestIdReused(
        "was already used with another request (it created another peering, or this one \
         with other fields); a new request needs a new request_id"
            .into(),
    )
}
