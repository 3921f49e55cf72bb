//! The gRPC `PeeringService`: checks requests, records desired state in
//! Postgres and answers from it. It never writes OVN NB: the reconciler does.
//!
//! Errors are [`ApiError`] inside, converted to `tonic::Status` once, by `RpcSpan::run`
//! (`rpc_span.rs`), which every handler of the trait impl below goes through: it also puts
//! each call in a tracing span (method, request_id, code, duration).

mod convert;
mod create;
mod create_tx;
mod error;
mod input;
mod page_token;
mod routes;
mod rpc_span;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use rpc_span::RpcSpan;

use crate::ovsdb;
use crate::proto::v1::peering_service_server::PeeringService;
use crate::proto::v1::{
    CreatePeeringRequest, DeletePeeringRequest, GetPeeringRequest, ListPeeringsRequest,
    ListPeeringsResponse, ListRoutesRequest, ListRoutesResponse, Peering,
};
use crate::store::Store;

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
}

impl PeeringApi {
    /// A service over the store and the NB client's cache.
    pub fn new(store: Store, nb: ovsdb::Client, settings: ApiSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                nb,
                settings,
            }),
        }
    }

    /// The NB cache, refused while it is not in sync with a server. Keep the
    /// guard short-lived and never across an `.await`.
    fn nb_cache(&self) -> Result<ovsdb::CacheGuard<'_>, ApiError> {
        if !self.inner.nb.state().borrow().is_synced() {
            return Err(ApiError::nb_unavailable());
        }
        Ok(self.inner.nb.cache())
    }

    async fn get(&self, req: GetPeeringRequest) -> Result<Peering, ApiError> {
        input::get(&req)?;
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "required"));
        }
        match self.inner.store.peering_get(&req.name).await? {
            Some(record) => Ok(convert::peering(&record)),
            None => Err(ApiError::peering_not_found(req.name)),
        }
    }

    async fn list(&self, req: ListPeeringsRequest) -> Result<ListPeeringsResponse, ApiError> {
        input::list(&req)?;
        let limit = page_token::page_size(req.page_size)?;
        let after = page_token::decode(&req.page_token, &req.vpc)?;
        if let Some(key) = &after {
            input::list_cursor(key)?;
        }
        let vpc = (!req.vpc.is_empty()).then_some(req.vpc.as_str());
        // One extra row tells whether another page follows.
        let mut records = self
            .inner
            .store
            .peering_list(after.as_deref(), limit + 1, vpc)
            .await?;
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

    async fn delete(&self, req: DeletePeeringRequest) -> Result<Peering, ApiError> {
        input::delete(&req)?;
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "required"));
        }
        match self.inner.store.peering_mark_deleting(&req.name).await? {
            Some(record) => Ok(convert::peering(&record)),
            None if req.allow_missing => Ok(Peering {
                name: req.name,
                ..Default::default()
            }),
            None => Err(ApiError::peering_not_found(req.name)),
        }
    }
}

#[tonic::async_trait]
impl PeeringService for PeeringApi {
    async fn create_peering(
        &self,
        req: Request<CreatePeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let req = req.into_inner();
        let name = req.peering.as_ref().map(|p| p.name.as_str());
        RpcSpan::new("CreatePeering")
            .with("request_id", &req.request_id)
            .with("peering", name.unwrap_or_default())
            .run(self.create(req))
            .await
    }

    async fn get_peering(
        &self,
        req: Request<GetPeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let req = req.into_inner();
        RpcSpan::new("GetPeering")
            .with("peering", &req.name)
            .run(self.get(req))
            .await
    }

    async fn list_peerings(
        &self,
        req: Request<ListPeeringsRequest>,
    ) -> Result<Response<ListPeeringsResponse>, Status> {
        let req = req.into_inner();
        RpcSpan::new("ListPeerings")
            .with("vpc", &req.vpc)
            .run(self.list(req))
            .await
    }

    async fn delete_peering(
        &self,
        req: Request<DeletePeeringRequest>,
    ) -> Result<Response<Peering>, Status> {
        let req = req.into_inner();
        RpcSpan::new("DeletePeering")
            .with("peering", &req.name)
            .run(self.delete(req))
            .await
    }

    async fn list_routes(
        &self,
        req: Request<ListRoutesRequest>,
    ) -> Result<Response<ListRoutesResponse>, Status> {
        let req = req.into_inner();
        input::list_routes(&req)?;
        RpcSpan::new("ListRoutes")
            .with("vpc", &req.vpc)
            .run(self.routes(req))
            .await
    }
}
