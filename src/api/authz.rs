//! Authorization, in one place: every handler starts with [`PeeringApi::scope`], which turns
//! the connection's caller into what it may see and do under the policy (re-read when its
//! file changes), and asks the [`Scope`] before it reads or writes. The rules themselves are
//! the pure [`Policy`]; this file only maps them to requests and `PERMISSION_DENIED`.

use std::sync::Arc;

use tonic::Request;

use super::error::ApiError;
use super::PeeringApi;
use crate::auth::policy::glob_to_like;
use crate::auth::{Caller, CreateDecision, PeerInfo, Policy, Role, Watched};
use crate::store::PeeringRecord;

/// The caller of a request, as its connection established it (plaintext: unauthenticated).
pub(super) fn caller_of<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<PeerInfo>()
        .map_or(Caller::Unauthenticated, |p| p.caller.clone())
}

/// How a create the caller may make is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Admission {
    /// As asked: STATE_PENDING, on to NB.
    Direct,
    /// A cross-tenant request: STATE_PENDING_ACCEPTANCE until `remote_tenant` accepts it.
    Acceptance {
        /// The tenant of the remote VPC.
        remote_tenant: String,
    },
}

/// What a caller may reach.
pub(super) enum Scope {
    /// Everything: an admin, or any caller when no policy is set.
    All,
    /// The VPCs of one tenant of the policy.
    Tenant {
        policy: Arc<Policy>,
        /// Index of the tenant in `policy.tenants`.
        index: usize,
    },
}

impl PeeringApi {
    /// The scope of `caller` under the current policy; PERMISSION_DENIED when the policy does
    /// not know it.
    pub(super) fn scope(&self, caller: &Caller) -> Result<Scope, ApiError> {
        let Some(watched) = &self.inner.policy else {
            return Ok(Scope::All);
        };
        let policy = watched.current();
        let Caller::Identity(identity) = caller else {
            return Err(ApiError::PermissionDenied(
                "the caller has no identity (a client certificate with a URI SAN, DNS SAN or CN)"
                    .into(),
            ));
        };
        let index = match policy.role(identity) {
            Role::Admin => return Ok(Scope::All),
            Role::Tenant(t) => policy
                .tenants
                .iter()
                .position(|x| std::ptr::eq(x, t))
                .expect("the tenant is one of the policy's"),
            Role::Unknown => {
                return Err(ApiError::PermissionDenied(format!(
                    "identity {identity:?} is neither an admin nor an identity of any tenant in the authorization policy"
                )))
            }
        };
        Ok(Scope::Tenant { policy, index })
    }

    /// Sets the policy every RPC is authorized against.
    pub fn with_policy(self, policy: Option<Arc<Watched<Policy>>>) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            panic!("with_policy is called while building, before the API is shared")
        });
        inner.policy = policy;
        PeeringApi {
            inner: Arc::new(inner),
        }
    }
}

impl Scope {
    fn tenant(&self) -> Option<&crate::auth::policy::Tenant> {
        match self {
            Scope::All => None,
            Scope::Tenant { policy, index } => Some(&policy.tenants[*index]),
        }
    }

    /// Reading a peering: the tenant owns one of its VPCs.
    pub(super) fn read_peering(&self, r: &PeeringRecord) -> Result<(), ApiError> {
        match self.tenant() {
            Some(t) if !t.owns(&r.local_vpc) && !t.owns(&r.remote_vpc) => {
                Err(ApiError::PermissionDenied(format!(
                    "tenant {:?} may not see peering {:?}: neither its local_vpc {:?} nor its remote_vpc {:?} is one of the tenant's VPCs",
                    t.name, r.name, r.local_vpc, r.remote_vpc
                )))
            }
            _ => Ok(()),
        }
    }

    /// Reading a VPC's peerings or routes: the tenant owns it.
    pub(super) fn read_vpc(&self, vpc: &str) -> Result<(), ApiError> {
        match self.tenant() {
            Some(t) if !t.owns(vpc) => Err(ApiError::PermissionDenied(format!(
                "tenant {:?} may not read vpc {vpc:?}: it is not one of the tenant's VPCs",
                t.name
            ))),
            _ => Ok(()),
        }
    }

    /// The tenant's VPC patterns as `LIKE` patterns, to filter a listing; `None` for all.
    pub(super) fn like_patterns(&self) -> Option<Vec<String>> {
        self.tenant()
            .map(|t| t.vpcs.iter().map(|p| glob_to_like(p)).collect())
    }

    /// Creating a peering of `local` with `remote` (with explicit routes into `remote` when
    /// `remote_routes`): directly, or as a request the remote VPC's tenant must accept.
    pub(super) fn create(
        &self,
        local: &str,
        remote: &str,
        remote_routes: bool,
    ) -> Result<Admission, ApiError> {
        let Scope::Tenant { policy, index } = self else {
            return Ok(Admission::Direct);
        };
        let tenant = &policy.tenants[*index];
        match policy.create_decision(tenant, local, remote, remote_routes) {
            CreateDecision::SameTenant => Ok(Admission::Direct),
            // The remote tenant accepts the peering and the routes it installs in its VPC.
            CreateDecision::CrossTenant { remote_tenant, .. } => {
                Ok(Admission::Acceptance { remote_tenant })
            }
            CreateDecision::NotAllowed(missing) => Err(ApiError::PermissionDenied(format!(
                "tenant {:?} may not create this peering: {missing}",
                tenant.name
            ))),
        }
    }

    /// Updating a peering: as deleting it, and changing its `remote_routes` (routes
    /// installed in the remote VPC) needs the remote VPC too.
    pub(super) fn update(&self, r: &PeeringRecord, remote_routes: bool) -> Result<(), ApiError> {
        match self.tenant() {
            Some(t) if !t.owns(&r.local_vpc) => Err(ApiError::PermissionDenied(format!(
                "tenant {:?} may not update peering {:?}: its local_vpc {:?} is not one of the tenant's VPCs",
                t.name, r.name, r.local_vpc
            ))),
            Some(t) if remote_routes && !t.owns(&r.remote_vpc) => {
                Err(ApiError::PermissionDenied(format!(
                    "tenant {:?} may not change the remote_routes of peering {:?}: they are installed in remote_vpc {:?}, which is not one of the tenant's VPCs",
                    t.name, r.name, r.remote_vpc
                )))
            }
            _ => Ok(()),
        }
    }

    /// Accepting or rejecting (`verb`) a request: the tenant owns its remote VPC. The requester
    /// answers nothing: only the other side can.
    pub(super) fn answer(&self, r: &PeeringRecord, verb: &str) -> Result<(), ApiError> {
        self.read_peering(r)?;
        match self.tenant() {
            Some(t) if !t.owns(&r.remote_vpc) => Err(ApiError::PermissionDenied(format!(
                "tenant {:?} may not {verb} peering {:?}: its remote_vpc {:?} is not one of the \
                 tenant's VPCs (only the remote VPC's tenant or an admin answers a request; \
                 the requester cannot {verb} its own)",
                t.name, r.name, r.remote_vpc
            ))),
            _ => Ok(()),
        }
    }

    /// Who answered a request, for its `state_message`.
    pub(super) fn answerer(&self) -> String {
        match self.tenant() {
            Some(t) => format!("tenant {:?}", t.name),
            None => "an admin".into(),
        }
    }

    /// Deleting a peering: the tenant owns its local VPC.
    pub(super) fn delete(&self, r: &PeeringRecord) -> Result<(), ApiError> {
        match self.tenant() {
            Some(t) if !t.owns(&r.local_vpc) => Err(ApiError::PermissionDenied(format!(
                "tenant {:?} may not delete peering {:?}: its local_vpc {:?} is not one of the tenant's VPCs",
                t.name, r.name, r.local_vpc
            ))),
            _ => Ok(()),
        }
    }
}
