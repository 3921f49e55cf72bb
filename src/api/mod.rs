//! The gRPC `PeeringService`: checks requests, records desired state in
//! Postgres and answers from it. It never writes OVN NB: the reconciler does.
//!
//! Errors are [`ApiError`] inside, converted to `tonic::Status` once, by `RpcSpan::run`
//! (`rpc_span.rs`), which every handler of the trait impl below goes through: it also puts
//! each call in a tracing span (method, caller, request_id, code, duration) and audits the
//! mutating ones. Every handler starts by asking `authz.rs` for the caller's scope.

mod accept;
mod admission;
mod authz;
mod convert;
mod create;
mod create_batch;
mod create_tx;
mod diagnose;
mod error;
mod input;
mod page_token;
mod routes;
mod rpc_span;
mod update;
mod watch;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use authz::{caller_of, Scope};
use rpc_span::RpcSpan;

use crate::ovsdb;
use crate::proto::v1::peering_service_server::PeeringService;
use crate::proto::v1::{
    peering, AcceptPeeringRequest, CreatePeeringRequest, DeletePeeringRequest,
    DiagnosePeeringRequest, DiagnosePeeringResponse, GetPeeringRequest, ListPeeringsRequest,
    ListPeeringsResponse, ListRoutesRequest, ListRoutesResponse, Peering, RejectPeeringRequest,
    UpdatePeeringRequest, WatchPeeringsRequest, WatchPeeringsResponse,
};
use crate::store::Store;

pub use admission::{
    http2_settings, AdmissionLayer, Limits, DEFAULT_MAX_IN_FLIGHT, DEFAULT_RPC_TIMEOUT,
    MAX_STREAMS_PER_CONNECTION,
};
pub use create_batch::{BATCHES_IN_FLIGHT, FULL_READ_BELOW, MAX_BATCH, PARKED_BATCHES};
pub use error::ApiError;

/// The rules' settings the API applies.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// VPCs that can never be peered.
    pub protected_vpcs: Vec<String>,
    /// IPv4 link pool and link prefix length.
    pub link_pool_v4: (ipnet::IpNet, u8),
    /// IPv6 link pool and link prefix length.
    pub link_pool_v6: (ipnet::IpNet, u8),
    /// Calls at once and the longest call.
    pub limits: Limits,
    /// How long a cross-tenant request waits for acceptance before it expires.
    pub acceptance_ttl: std::time::Duration,
    /// This deployment's id (`ovn-peerd:instance`): CreatePeering's checks take another
    /// deployment's rows for foreign whatever their peering name. `None`: rows are told by
    /// their peering name alone.
    pub instance: Option<String>,
}

/// The service implementation.
#[derive(Clone)]
pub struct PeeringApi {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    nb: ovsdb::Client,
    settings: ApiSettings,
    /// Admits calls within `settings.limits`.
    gate: admission::Gate,
    /// The authorization policy; `None`: every caller is an admin.
    policy: Option<Arc<crate::auth::Watched<crate::auth::Policy>>>,
    /// WatchPeerings' change reader; `None`: WatchPeerings is UNAVAILABLE.
    watch: Option<Arc<crate::watch::Hub>>,
    /// CreatePeering's group commit.
    creates: create_batch::Batcher,
}

impl PeeringApi {
    /// A service over the store and the NB client's cache.
    pub fn new(store: Store, nb: ovsdb::Client, settings: ApiSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                nb,
                gate: admission::Gate::new(settings.limits),
                settings,
                policy: None,
                watch: None,
                creates: Default::default(),
            }),
        }
    }

    /// The server's layer that admits this service's calls before they are read (the same
    /// limits as the service's own gate, which it shares).
    pub fn admission_layer(&self) -> AdmissionLayer {
        self.inner.gate.layer()
    }

    /// A snapshot of the NB cache, refused while it is not in sync with a server. Holding it
    /// blocks nobody; take a fresh one per request.
    fn nb_cache(&self) -> Result<ovsdb::CacheSnapshot, ApiError> {
        if !self.inner.nb.state().borrow().is_synced() {
            return Err(ApiError::nb_unavailable());
        }
        Ok(self.inner.nb.cache())
    }

    async fn get(&self, scope: Scope, req: GetPeeringRequest) -> Result<Peering, ApiError> {
        input::get(&req)?;
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "required"));
        }
        match self.inner.store.peering_get(&req.name).await? {
            Some(record) => {
                scope.read_peering(&record)?;
                Ok(convert::peering(&record))
            }
            None => Err(ApiError::peering_not_found(req.name)),
        }
    }

    async fn list(
        &self,
        scope: Scope,
        req: ListPeeringsRequest,
    ) -> Result<ListPeeringsResponse, ApiError> {
        input::list(&req)?;
        if !req.vpc.is_empty() {
            scope.read_vpc(&req.vpc)?;
        }
        let limit = page_token::page_size(req.page_size)?;
        let after = page_token::decode(&req.page_token, &req.vpc)?;
        if let Some(key) = &after {
            input::list_cursor(key)?;
        }
        let vpc = (!req.vpc.is_empty()).then_some(req.vpc.as_str());
        // One extra row tells whether another page follows.
        let mut records = match (vpc, scope.like_patterns()) {
            // A tenant's listing without a VPC: those touching its VPCs, filtered in Postgres.
            (None, Some(patterns)) => {
                self.inner
                    .store
                    .peering_list_like(after.as_deref(), limit + 1, &patterns)
                    .await?
            }
            _ => {
                self.inner
                    .store
                    .peering_list(after.as_deref(), limit + 1, vpc)
                    .await?
            }
        };
        let more = records.len() as i64 > limit;
        records.truncate(limit as usize);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => page_token::encode(&req.vpc, &last.name),
            _ => String::new(),
        };
        Ok(ListPeeringsResponse {
            peerings: records.iter().map(convert::peering).collect(),
            next_page_token,
        })
    }

    async fn delete(&self, scope: Scope, req: DeletePeeringRequest) -> Result<Peering, ApiError> {
        input::delete(&req)?;
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "required"));
        }
        let etag = convert::etag_from_api("etag", &req.etag)?;
        // The writes below are bound to the peering authorized here (its create_time): one
        // deleted and made again under the name in between is not deleted by this call, and
        // a name unknown now deletes nothing made later.
        let Some(authorized) = self.inner.store.peering_get(&req.name).await? else {
            return missing(req);
        };
        scope.delete(&authorized)?;
        let created = authorized.create_time;
        // Never in NB (a request, rejected or expired): gone at once, as the worker would
        // leave it.
        if let Some(record) = self
            .inner
            .store
            .peering_delete_unconverged(&req.name, etag, created)
            .await?
        {
            return Ok(Peering {
                state: peering::State::Deleting as i32,
                ..convert::peering(&record)
            });
        }
        match self
            .inner
            .store
            .peering_mark_deleting(&req.name, etag, created)
            .await?
        {
            Some(record) => Ok(convert::peering(&record)),
            None => missing(req),
        }
    }
}

/// DeletePeering of a peering that is not there: NOT_FOUND, or nothing with `allow_missing`.
fn missing(req: DeletePeeringRequest) -> Result<Peering, ApiError> {
    if req.allow_missing {
        return Ok(Peering {
            name: req.name,
            ..Default::default()
        });
    }
    Err(ApiError::peering_not_found(req.name))
}

impl PeeringApi {
    /// Serves WatchPeerings from this process's change reader.
    pub fn with_watch(self, hub: Arc<crate::watch::Hub>) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            panic!("with_watch is called while building, before the API is shared")
        });
        inner.watch = Some(hub);
        PeeringApi {
            inner: Arc::new(inner),
        }
    }
}

#[tonic::async_trait]
impl PeeringService for PeeringApi {
    type WatchPeeringsStream = rpc_span::SpannedStream<WatchPeeringsResponse>;

    async fn watch_peerings(
        &self,
        req: Request<WatchPeeringsRequest>,
    ) -> Result<Response<Self::WatchPeeringsStream>, Status> {
        let caller = caller_of(&req);
        // The per-caller stream cap's key: the identity, or the address of a caller without one.
        let key = match &caller {
            crate::auth::Caller::Identity(id) => format!("identity {id}"),
            crate::auth::Caller::Unauthenticated => match req.remote_addr() {
                Some(addr) => format!("address {}", addr.ip()),
                None => "unauthenticated".to_owned(),
            },
        };
        let req = req.into_inner();
        RpcSpan::new("WatchPeerings")
            .caller(&caller)
            .vpc(&req.vpc)
            .run_stream(async { self.watch(self.scope(&caller)?, &key, req).await })
            .await
    }

    async fn create_peering(
        &self,
        req: Request<CreatePeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("CreatePeering").admit(&self.inner.gate, &req);
        let deadline = span.deadline();
        let req = req.into_inner();
        let name = req.peering.as_ref().map(|p| p.name.as_str());
        span.audited(&caller)
            .request_id(&req.request_id)
            .peering(name.unwrap_or_default())
            .run(async {
                let scope = self.scope(&caller)?;
                let admission = match &req.peering {
                    Some(p) => {
                        scope.create(&p.local_vpc, &p.remote_vpc, !p.remote_routes.is_empty())?
                    }
                    None => authz::Admission::Direct,
                };
                self.create(req, admission, deadline).await
            })
            .await
    }

    async fn get_peering(
        &self,
        req: Request<GetPeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("GetPeering").admit(&self.inner.gate, &req);
        let req = req.into_inner();
        span.caller(&caller)
            .peering(&req.name)
            .run(async { self.get(self.scope(&caller)?, req).await })
            .await
    }

    async fn list_peerings(
        &self,
        req: Request<ListPeeringsRequest>,
    ) -> Result<Response<ListPeeringsResponse>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("ListPeerings").admit(&self.inner.gate, &req);
        let req = req.into_inner();
        span.caller(&caller)
            .vpc(&req.vpc)
            .run(async { self.list(self.scope(&caller)?, req).await })
            .await
    }

    async fn update_peering(
        &self,
        req: Request<UpdatePeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("UpdatePeering").admit(&self.inner.gate, &req);
        let deadline = span.deadline();
        let req = req.into_inner();
        let name = req.peering.as_ref().map(|p| p.name.as_str());
        span.audited(&caller)
            .request_id(&req.request_id)
            .peering(name.unwrap_or_default())
            .run(async { self.update(self.scope(&caller)?, req, deadline).await })
            .await
    }

    async fn delete_peering(
        &self,
        req: Request<DeletePeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("DeletePeering").admit(&self.inner.gate, &req);
        let req = req.into_inner();
        span.audited(&caller)
            .peering(&req.name)
            .run(async { self.delete(self.scope(&caller)?, req).await })
            .await
    }

    async fn accept_peering(
        &self,
        req: Request<AcceptPeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("AcceptPeering").admit(&self.inner.gate, &req);
        let deadline = span.deadline();
        let req = req.into_inner();
        span.audited(&caller)
            .peering(&req.name)
            .run(async { self.accept(self.scope(&caller)?, req, deadline).await })
            .await
    }

    async fn reject_peering(
        &self,
        req: Request<RejectPeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("RejectPeering").admit(&self.inner.gate, &req);
        let req = req.into_inner();
        span.audited(&caller)
            .peering(&req.name)
            .run(async { self.reject(self.scope(&caller)?, req).await })
            .await
    }

    async fn list_routes(
        &self,
        req: Request<ListRoutesRequest>,
    ) -> Result<Response<ListRoutesResponse>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("ListRoutes").admit(&self.inner.gate, &req);
        let req = req.into_inner();
        input::list_routes(&req)?;
        span.caller(&caller)
            .vpc(&req.vpc)
            .run(async {
                let scope = self.scope(&caller)?;
                if !req.vpc.is_empty() {
                    scope.read_vpc(&req.vpc)?;
                }
                self.routes(req).await
            })
            .await
    }

    async fn diagnose_peering(
        &self,
        req: Request<DiagnosePeeringRequest>,
    ) -> Result<Response<DiagnosePeeringResponse>, Status> {
        let caller = caller_of(&req);
        let span = RpcSpan::new("DiagnosePeering").admit(&self.inner.gate, &req);
        let req = req.into_inner();
        span.caller(&caller)
            .peering(&req.name)
            .run(async { self.diagnose(self.scope(&caller)?, req).await })
            .await
    }
}
