//! AcceptPeering and RejectPeering: the remote VPC's tenant (or an admin) answers a
//! cross-tenant request (STATE_PENDING_ACCEPTANCE).
//!
//! An accept judges the peering again, as a create would, inside the same VPC-locked
//! transaction (`create_tx.rs`): what changed since the request (another peering's routes or
//! link, a subnet added in NB, a port in the way) refuses it with FAILED_PRECONDITION and
//! leaves it as it was. A request past the acceptance TTL is expired first, whether or not the
//! sweep (`crate::acceptance`) has run, so a late answer is always refused.

use super::authz::Scope;
use super::convert;
use super::create_tx::Neighbours;
use super::error::ApiError;
use super::{input, PeeringApi};
use crate::peering::topology::port_names;
use crate::proto::v1::Peering;
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
    pub(super) async fn accept(&self, scope: Scope, name: String) -> Result<Peering, ApiError> {
        let record = self.open_request(&scope, &name, Answer::Accept).await?;
        let vpcs = [record.local_vpc.as_str(), record.remote_vpc.as_str()];
        let ports = port_names(vpcs[0], vpcs[1]).to_vec();
        let mut tx = self.inner.store.peering_create_begin(&vpcs).await?;
        let records = tx.list_for_create(&vpcs, &name, &ports).await?;
        // As it is now, under the VPCs' locks.
        let Some(current) = records.iter().find(|r| r.name == name) else {
            return Err(ApiError::peering_not_found(name));
        };
        if current.state != PeeringState::PendingAcceptance {
            return Err(not_open(current, Answer::Accept));
        }
        let spec = current.spec().map_err(|e| ApiError::Internal(e.into()))?;
        // The request itself is not among them (it is not in NB yet).
        let others = Neighbours::new(records)?;
        self.check(&spec, &others.specs)?;
        match tx.accept(&name, self.inner.settings.acceptance_ttl).await? {
            Some(accepted) => Ok(convert::peering(&accepted)),
            None => Err(self.why_not_open(&name, Answer::Accept).await),
        }
    }

    pub(super) async fn reject(&self, scope: Scope, name: String) -> Result<Peering, ApiError> {
        self.open_request(&scope, &name, Answer::Reject).await?;
        let message = format!("rejected by {}", scope.answerer());
        let ttl = self.inner.settings.acceptance_ttl;
        match self
            .inner
            .store
            .peering_reject(&name, ttl, &message)
            .await?
        {
            Some(rejected) => Ok(convert::peering(&rejected)),
            None => Err(self.why_not_open(&name, Answer::Reject).await),
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
    /// deleted, or past the TTL just now).
    async fn why_not_open(&self, name: &str, answer: Answer) -> ApiError {
        if let Err(e) = self.expire_overdue().await {
            return e;
        }
        match self.inner.store.peering_get(name).await {
            Ok(Some(r)) => not_open(&r, answer),
            Ok(None) => ApiError::peering_not_found(name),
            Err(e) => e.into(),
        }
    }
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
