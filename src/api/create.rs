//! CreatePeering: validate, check against NB and the other peerings, allocate
//! a link when none is given, store (the cross-peering rules judged again in
//! the locked transaction of `create_tx.rs`). The database has the last word on
//! names, VPC pairs, port names and link overlaps (several replicas).

use std::time::Instant;

use ipnet::IpNet;

use super::authz::Admission;
use super::convert;
use super::create_tx::{Inserted, Neighbours, Request};
use super::error::ApiError;
use super::input;
use super::PeeringApi;
use crate::adapters::NbCacheTopology;
use crate::ovsdb::NbCache;
use crate::peering::input::request_fingerprint;
use crate::peering::labels::check_labels;
use crate::peering::links::{allocate_connect, link_families, pool_for, LinkPool};
use crate::peering::topology::{allocation_exclusions, check_topology, port_names};
use crate::peering::validate::{validate_spec, UncheckedPeering, ValidatedPeering};
use crate::peering::{PeeringSpec, Refusal, RefusalKind, Violation};
use crate::proto::v1::{CreatePeeringRequest, Peering, PeeringRoute};
use crate::store::{PeeringState, StoreError};

/// Attempts at allocating a link when concurrent creates take the candidates.
pub(super) const ALLOCATION_ATTEMPTS: usize = 16;

impl PeeringApi {
    pub(super) async fn create(
        &self,
        req: CreatePeeringRequest,
        admission: Admission,
        deadline: Option<Instant>,
    ) -> Result<Peering, ApiError> {
        let validate_only = req.validate_only;
        let (validated, request) = self.prepare(req, admission, deadline)?;
        if validate_only {
            return self.create_one(&validated, &request, true).await;
        }
        self.create_batched(validated, request).await
    }

    /// Everything about a create that needs nothing stored: input limits, validation, labels,
    /// the request's fingerprint; the caller's `deadline` goes with it.
    pub(super) fn prepare(
        &self,
        req: CreatePeeringRequest,
        admission: Admission,
        deadline: Option<Instant>,
    ) -> Result<(ValidatedPeering, Request), ApiError> {
        input::create(&req)?;
        let Some(input) = req.peering else {
            return Err(ApiError::invalid("peering", "required"));
        };
        let label_violations = check_labels("peering.labels", &input.labels);
        let validated = match validate_spec(&unchecked(&input)) {
            Ok(v) => v,
            Err(mut r) if r.kind == RefusalKind::InvalidArgument => {
                r.violations.extend(label_violations);
                return Err(ApiError::Refused(r));
            }
            Err(r) => return Err(ApiError::Refused(r)),
        };
        let labels = convert::labels_from_api(&input.labels)?;
        let request = Request {
            id: (!req.request_id.is_empty()).then_some(req.request_id),
            hash: request_fingerprint(&validated, &labels),
            labels,
            admission,
            deadline,
        };
        Ok((validated, request))
    }

    /// One create on its own, in a transaction of its own (or judged only, with
    /// `validate_only`): what a batch falls back to when a constraint the VPC locks do not
    /// cover fails its insert (`create_batch.rs`).
    pub(super) async fn create_one(
        &self,
        validated: &ValidatedPeering,
        request: &Request,
        validate_only: bool,
    ) -> Result<Peering, ApiError> {
        // A retry of a request that was carried out gets the first answer.
        if let Some(first) = self.first_result(request).await? {
            return Ok(first);
        }
        match self.create_new(validated, request, validate_only).await {
            // A concurrent retry stored the peering after our first look.
            Err(e @ ApiError::AlreadyExists { .. }) => match self.first_result(request).await? {
                Some(first) => Ok(first),
                None => Err(e),
            },
            other => other,
        }
    }

    /// Checks, allocates a link when none is given and stores, judging the
    /// cross-peering rules under the VPCs' locks ([`Self::insert_locked`]); with
    /// `validate_only`, judges without locks and stores nothing.
    async fn create_new(
        &self,
        validated: &ValidatedPeering,
        request: &Request,
        validate_only: bool,
    ) -> Result<Peering, ApiError> {
        if validate_only {
            let neighbours = self.neighbours(validated).await?;
            self.check_unique(validated, &neighbours)?;
            let cache = self.nb_cache()?;
            let spec = match validated.spec() {
                Some(spec) => spec,
                None => self.allocate(&cache, validated, &neighbours, &[])?,
            };
            self.check(&cache, &spec, &neighbours.specs)?;
            return Ok(preview(&spec, &request.labels));
        }
        // Everything is judged (and a link allocated) under the VPCs' locks, once: a
        // look before taking them would cost a round trip and decide nothing.
        let mut excluded_links: Vec<IpNet> = Vec::new();
        for attempt in 0..ALLOCATION_ATTEMPTS {
            match self
                .insert_locked(validated, request, &excluded_links)
                .await?
            {
                Inserted::Done(peering) => return Ok(*peering),
                Inserted::LinkTaken(taken) => {
                    tracing::debug!(attempt, "allocated link taken; trying another");
                    excluded_links.extend(taken.local_connect.networks());
                }
                Inserted::Again => tracing::debug!(attempt, "lost a race; judging again"),
            }
        }
        Err(ApiError::contention("link allocation"))
    }

    /// The other peerings of either VPC, plus any peering already named like
    /// this one or holding one of its port names (one query serves the topology
    /// rules, the name check and the port-name check).
    async fn neighbours(&self, v: &ValidatedPeering) -> Result<Neighbours, ApiError> {
        let ports = port_names(&v.local_vpc, &v.remote_vpc);
        let records = self
            .inner
            .store
            .peering_list_for_create(&[&v.local_vpc, &v.remote_vpc], &v.name, &ports)
            .await?;
        Neighbours::new(records)
    }

    /// ALREADY_EXISTS comes before the topology rules: an existing peering of
    /// the same pair would otherwise be reported as an overlap. Names are
    /// unique over every peering; the pair and the port names only over those
    /// that hold them (not rejected or expired ones).
    pub(super) fn check_unique(
        &self,
        v: &ValidatedPeering,
        neighbours: &Neighbours,
    ) -> Result<(), ApiError> {
        if neighbours.records.iter().any(|o| o.name == v.name) {
            return Err(StoreError::NameTaken.into());
        }
        let holders = || neighbours.records.iter().filter(|o| o.state.holds_pair());
        let pair = |a: &str, b: &str| {
            if a < b {
                (a.to_owned(), b.to_owned())
            } else {
                (b.to_owned(), a.to_owned())
            }
        };
        let wanted = pair(&v.local_vpc, &v.remote_vpc);
        if holders().any(|o| pair(&o.local_vpc, &o.remote_vpc) == wanted) {
            return Err(StoreError::PairTaken.into());
        }
        // Requests reserve their port names, but the topology rules (which name the holder
        // of a live peering's ports) do not see them.
        let mine = port_names(&v.local_vpc, &v.remote_vpc);
        let mut violations = Vec::new();
        for o in holders().filter(|o| o.state == PeeringState::PendingAcceptance) {
            let theirs = port_names(&o.local_vpc, &o.remote_vpc);
            for (port, field) in mine.iter().zip(["peering.local_vpc", "peering.remote_vpc"]) {
                if theirs.contains(port) {
                    violations.push(Violation::new(
                        field,
                        format!(
                            "port name {port:?} is already used by peering {:?} (awaiting acceptance)",
                            o.name
                        ),
                    ));
                }
            }
        }
        Refusal::check(RefusalKind::FailedPrecondition, violations, ()).map_err(ApiError::Refused)
    }

    /// Topology rules against `cache`, a snapshot of the NB cache in sync ([`Self::nb_cache`]):
    /// one snapshot per decision, so that what was probed, allocated and checked is one NB.
    pub(super) fn check(
        &self,
        cache: &NbCache,
        spec: &PeeringSpec,
        others: &[PeeringSpec],
    ) -> Result<(), ApiError> {
        check_topology(
            spec,
            &NbCacheTopology(cache, self.inner.settings.instance.as_deref()),
            others,
            &self.inner.settings.protected_vpcs,
        )
        .map(|_| ())
        .map_err(ApiError::Refused)
    }

    /// The peering with the lowest link of each needed family that is free for its two VPCs
    /// ([`crate::peering::links`] decides): links are unique per VPC, so its `neighbours`
    /// (every peering of either VPC; requests awaiting acceptance hold their links too) and
    /// the two routers' networks are all it must avoid. Called under the VPCs' locks, where
    /// no concurrent create of either VPC can take it.
    pub(super) fn allocate(
        &self,
        cache: &NbCache,
        v: &ValidatedPeering,
        neighbours: &Neighbours,
        excluded: &[IpNet],
    ) -> Result<PeeringSpec, ApiError> {
        let settings = &self.inner.settings;
        let pools = [
            LinkPool {
                pool: settings.link_pool_v4.0,
                link_prefix_len: settings.link_pool_v4.1,
            },
            LinkPool {
                pool: settings.link_pool_v6.0,
                link_prefix_len: settings.link_pool_v6.1,
            },
        ];
        let mut used: Vec<IpNet> = excluded.to_vec();
        let topo = NbCacheTopology(cache, self.inner.settings.instance.as_deref());
        used.extend(allocation_exclusions(v, &topo, &neighbours.specs));
        used.extend(neighbours.held_links(v));
        let families = link_families(v, &topo);
        let (local, remote) = allocate_connect(&pools, &families, &used, 0).map_err(|family| {
            ApiError::PoolExhausted {
                pool: pool_for(&pools, family)
                    .map_or_else(|| family.name().to_string(), |p| p.pool.to_string()),
            }
        })?;
        Ok(v.with_link(local, remote))
    }
}

fn unchecked(p: &Peering) -> UncheckedPeering {
    let routes = |rs: &[PeeringRoute]| convert::routes_unchecked(rs);
    UncheckedPeering {
        name: p.name.clone(),
        local_vpc: p.local_vpc.clone(),
        remote_vpc: p.remote_vpc.clone(),
        local_connect_ip: p.local_connect_ip.clone(),
        remote_connect_ip: p.remote_connect_ip.clone(),
        local_routes: routes(&p.local_routes),
        remote_routes: routes(&p.remote_routes),
    }
}

/// What a `validate_only` request would create.
fn preview(spec: &PeeringSpec, labels: &crate::store::Labels) -> Peering {
    let routes = |rs: &[crate::peering::RouteSpec]| {
        rs.iter()
            .map(|r| PeeringRoute {
                cidr: r.prefix.to_string(),
                policy: convert::policy(r.policy),
            })
            .collect()
    };
    Peering {
        name: spec.name.clone(),
        local_vpc: spec.local_vpc.clone(),
        remote_vpc: spec.remote_vpc.clone(),
        local_connect_ip: spec.local_connect.to_string(),
        remote_connect_ip: spec.remote_connect.to_string(),
        local_routes: routes(&spec.local_routes),
        remote_routes: routes(&spec.remote_routes),
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ..Default::default()
    }
}
