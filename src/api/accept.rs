//! AcceptPeering and RejectPeering: the remote VPC's tenant (or an admin) answers a
//! cross-tenant request (STATE_PENDING_ACCEPTANCE).
//!
//! An accept judges the peering again, as a create would, inside the same VPC-locked
//! transaction (`create_tx.rs`): what changed since the request (another peering's routes or
//! link, a subnet added in NB, a port in the way) refuses it with FAILED_PRECONDITION and
//! leaves it as it was. A request past the acceptance TTL is expired first, whether or not the
//! sweep (`crate::acceptance`) has run, so a late answer is always refused.

use std::time::Instant;

use super::authz::Scope;
use super::convert;
use super::create_tx::Neighbours;
use super::error::ApiError;
use super::{input, PeeringApi};
use crate::peering::topology::port_names;
use crate::proto::v1::{AcceptPeeringRequest, Peering, RejectPeeringRequest};
use crate::store::{PeeringRecord, PeeringState};

/// The two answers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answer {
    Accept,
    Reject,
}

impl Answer {
    fn verb(self) -> &'static str {
        match self {
            Answer::Accept => "accept",
            Answer::Reject => "reject",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Answer::Accept => "accepted",
            Answer::Reject => "rejected",
        }
    }
}

impl PeeringApi {
    pub(super) async fn accept(
        &self,
        scope: Scope,
        req: AcceptPeeringRequest,
        deadline: Option<Instant>,
    ) -> Result<Peering, ApiError> {
        let (name, answer) = (req.name, Answer::Accept);
        let record = self.open_request(&scope, &name, answer).await?;
        let etag = convert::etag_from_api("etag", &req.etag)?;
        let vpcs = [record.local_vpc.as_str(), record.remote_vpc.as_str()];
        let ports = port_names(vpcs[0], vpcs[1]).to_vec();
        let mut tx = self
            .inner
            .store
            .peering_create_begin(&vpcs, deadline)
            .await?;
        let records = tx.list_for_create(&vpcs, &name, &ports).await?;
        // As it is now, under the VPCs' locks.
        let Some(current) = records.iter().find(|r| r.name == name) else {
            return Err(ApiError::peering_not_found(name));
        };
        still_authorized(&scope, &record, current, etag, answer)?;
        if current.state != PeeringState::PendingAcceptance {
            return Err(not_open(current, answer));
        }
        let spec = current.spec().map_err(|e| ApiError::Internal(e.into()))?;
        let locked_etag = current.etag;
        // The request itself is not among them (it is not in NB yet).
        let others = Neighbours::new(records)?;
        let cache = self.nb_cache()?;
        self.check(&cache, &spec, &others.specs)?;
        let ttl = self.inner.settings.acceptance_ttl;
        match tx.accept(&name, ttl, locked_etag).await? {
            Some(accepted) => Ok(convert::peering(&accepted)),
            None => Err(self.why_not_open(&record, answer).await),
        }
    }

    pub(super) async fn reject(
        &self,
        scope: Scope,
        req: RejectPeeringRequest,
    ) -> Result<Peering, ApiError> {
        let (name, answer) = (req.name, Answer::Reject);
        let record = self.open_request(&scope, &name, answer).await?;
        let etag = convert::etag_from_api("etag", &req.etag)?;
        if etag.is_some_and(|e| e != record.etag) {
            return Err(ApiError::EtagMismatch { name });
        }
        let message = format!("rejected by {}", scope.answerer());
        let ttl = self.inner.settings.acceptance_ttl;
        // Guarded on the etag of the row authorized above: a request deleted and made again
        // under the same name in between is not rejected by this call.
        match self
            .inner
            .store
            .peering_reject(&name, ttl, &message, record.etag)
            .await?
        {
            Some(rejected) => Ok(convert::peering(&rejected)),
            None => Err(self.why_not_open(&record, answer).await),
        }
    }

    /// The request `name` if the caller may answer it and it is open (expiring it first
    /// when it is past the TTL).
    async fn open_request(
        &self,
        scope: &Scope,
        name: &str,
        answer: Answer,
    ) -> Result<PeeringRecord, ApiError> {
        input::name(name)?;
        let store = &self.inner.store;
        let Some(mut record) = store.peering_get(name).await? else {
            return Err(ApiError::peering_not_found(name));
        };
        scope.answer(&record, answer.verb())?;
        if record.state == PeeringState::PendingAcceptance {
            self.expire_overdue().await?;
            record = store
                .peering_get(name)
                .await?
                .ok_or_else(|| ApiError::peering_not_found(name))?;
        }
        if record.state != PeeringState::PendingAcceptance {
            return Err(not_open(&record, answer));
        }
        Ok(record)
    }

    /// Expires every request past the TTL now.
    async fn expire_overdue(&self) -> Result<(), ApiError> {
        let ttl = self.inner.settings.acceptance_ttl;
        let expired = self
            .inner
            .store
            .peering_expire_overdue(ttl, &crate::acceptance::expired_message(ttl))
            .await?;
        if !expired.is_empty() {
            tracing::info!(peerings = ?expired, "requests expired");
        }
        Ok(())
    }

    /// Why a guarded answer matched nothing: the request changed meanwhile (answered,
    /// deleted, past the TTL just now, or made again under its name).
    async fn why_not_open(&self, authorized: &PeeringRecord, answer: Answer) -> ApiError {
        if let Err(e) = self.expire_overdue().await {
            return e;
        }
        match self.inner.store.peering_get(&authorized.name).await {
            Ok(Some(r))
                if !same_request(authorized, &r) || r.state == PeeringState::PendingAcceptance =>
            {
                ApiError::EtagMismatch { name: r.name }
            }
            Ok(Some(r)) => not_open(&r, answer),
            Ok(None) => ApiError::peering_not_found(&authorized.name),
            Err(e) => e.into(),
        }
    }
}

/// Whether `now` is the request `authorized` (not one deleted and made again under its
/// name since): the same VPCs and the same creation.
fn same_request(authorized: &PeeringRecord, now: &PeeringRecord) -> bool {
    now.create_time == authorized.create_time
        && now.local_vpc == authorized.local_vpc
        && now.remote_vpc == authorized.remote_vpc
}

/// The row read under the VPCs' locks must be the request the caller was authorized for
/// (and, with `etag`, the version it reviewed): else ABORTED, and nothing changes. The
/// rule is asked again on it too, so an answer never reaches a request the caller may not
/// answer.
fn still_authorized(
    scope: &Scope,
    authorized: &PeeringRecord,
    locked: &PeeringRecord,
    etag: Option<uuid::Uuid>,
    answer: Answer,
) -> Result<(), ApiError> {
    if !same_request(authorized, locked) || etag.is_some_and(|e| e != locked.etag) {
        return Err(ApiError::EtagMismatch {
            name: locked.name.clone(),
        });
    }
    scope.answer(locked, answer.verb())
}

/// FAILED_PRECONDITION on `state`: only an open request can be answered.
fn not_open(r: &PeeringRecord, answer: Answer) -> ApiError {
    let state = convert::state(r.state).as_str_name();
    let why = match r.state {
        PeeringState::Rejected | PeeringState::Expired if !r.state_message.is_empty() => {
            format!(" ({})", r.state_message)
        }
        _ => String::new(),
    };
    ApiError::NotAwaitingAcceptance(format!(
        "peering {:?} is {state}{why}; only a peering in STATE_PENDING_ACCEPTANCE can be {}",
        r.name,
        answer.done()
    ))
}
