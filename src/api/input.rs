//! The string fields of every request checked against [`crate::peering::input`]'s limits
//! before the request goes further: a NUL byte must be INVALID_ARGUMENT naming its field,
//! never a Postgres error.

use super::error::ApiError;
use crate::peering::input::{
    check_text, MAX_ADDRESS_LEN, MAX_NAME_LEN, MAX_PAGE_TOKEN_LEN, MAX_REQUEST_ID_LEN, MAX_VPC_LEN,
};
use crate::peering::{Refusal, RefusalKind, Violation};
use crate::proto::v1::{
    CreatePeeringRequest, DeletePeeringRequest, DiagnosePeeringRequest, GetPeeringRequest,
    ListPeeringsRequest, ListRoutesRequest, UpdatePeeringRequest, WatchPeeringsRequest,
};

/// Longest etag text (ours are 32 hex digits).
const MAX_ETAG_LEN: usize = 64;
/// Longest update_mask path.
const MAX_PATH_LEN: usize = 128;
/// Most update_mask paths.
const MAX_PATHS: usize = 16;

fn refuse(violations: Vec<Violation>) -> Result<(), ApiError> {
    Refusal::check(RefusalKind::InvalidArgument, violations, ()).map_err(ApiError::Refused)
}

/// The fields `validate_spec` does not already hold to a character set: the request_id and
/// the address texts (which would otherwise be echoed back in a refusal at any length).
pub fn create(req: &CreatePeeringRequest) -> Result<(), ApiError> {
    let mut v: Vec<Violation> = Vec::new();
    v.extend(check_text(
        "request_id",
        &req.request_id,
        MAX_REQUEST_ID_LEN,
    ));
    if let Some(p) = &req.peering {
        for (field, text) in [
            ("peering.local_connect_ip", &p.local_connect_ip),
            ("peering.remote_connect_ip", &p.remote_connect_ip),
        ] {
            v.extend(check_text(field, text, MAX_ADDRESS_LEN));
        }
        for (side, routes) in [("local", &p.local_routes), ("remote", &p.remote_routes)] {
            for (i, r) in routes.iter().enumerate() {
                let field = format!("peering.{side}_routes[{i}].cidr");
                v.extend(check_text(&field, &r.cidr, MAX_ADDRESS_LEN));
            }
        }
    }
    refuse(v)
}

/// UpdatePeering's texts: request_id, the peering's name and etag, route prefixes and the
/// update mask's paths (label keys and values have their own rules, `peering::labels`).
pub fn update(req: &UpdatePeeringRequest) -> Result<(), ApiError> {
    let mut v: Vec<Violation> = Vec::new();
    v.extend(check_text(
        "request_id",
        &req.request_id,
        MAX_REQUEST_ID_LEN,
    ));
    if let Some(p) = &req.peering {
        v.extend(check_text("peering.name", &p.name, MAX_NAME_LEN));
        v.extend(check_text("peering.etag", &p.etag, MAX_ETAG_LEN));
        for (side, routes) in [("local", &p.local_routes), ("remote", &p.remote_routes)] {
            for (i, r) in routes.iter().enumerate() {
                let field = format!("peering.{side}_routes[{i}].cidr");
                v.extend(check_text(&field, &r.cidr, MAX_ADDRESS_LEN));
            }
        }
    }
    if let Some(m) = &req.update_mask {
        if m.paths.len() > MAX_PATHS {
            v.push(Violation::new(
                "update_mask.paths",
                format!(
                    "has {} paths; at most {MAX_PATHS} are allowed",
                    m.paths.len()
                ),
            ));
        } else {
            for (i, p) in m.paths.iter().enumerate() {
                v.extend(check_text(
                    &format!("update_mask.paths[{i}]"),
                    p,
                    MAX_PATH_LEN,
                ));
            }
        }
    }
    refuse(v)
}

/// GetPeering's name.
pub fn get(req: &GetPeeringRequest) -> Result<(), ApiError> {
    refuse(
        check_text("name", &req.name, MAX_NAME_LEN)
            .into_iter()
            .collect(),
    )
}

/// DiagnosePeering's name.
pub fn diagnose(req: &DiagnosePeeringRequest) -> Result<(), ApiError> {
    refuse(
        check_text("name", &req.name, MAX_NAME_LEN)
            .into_iter()
            .collect(),
    )
}

/// DeletePeering's name and etag.
pub fn delete(req: &DeletePeeringRequest) -> Result<(), ApiError> {
    refuse(
        check_text("name", &req.name, MAX_NAME_LEN)
            .into_iter()
            .chain(check_text("etag", &req.etag, MAX_ETAG_LEN))
            .collect(),
    )
}

/// A peering's name, as AcceptPeering and RejectPeering take it.
pub fn name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid("name", "required"));
    }
    refuse(check_text("name", name, MAX_NAME_LEN).into_iter().collect())
}

/// ListPeerings' filter and page token.
pub fn list(req: &ListPeeringsRequest) -> Result<(), ApiError> {
    let v = check_text("vpc", &req.vpc, MAX_VPC_LEN)
        .into_iter()
        .chain(check_text(
            "page_token",
            &req.page_token,
            MAX_PAGE_TOKEN_LEN,
        ))
        .collect();
    refuse(v)
}

/// A decoded ListPeerings cursor (a peering name) before it is bound into SQL: a token is
/// only base64, anyone can forge one with a NUL inside.
pub fn list_cursor(key: &str) -> Result<(), ApiError> {
    match check_text("page_token", key, MAX_NAME_LEN) {
        Some(_) => Err(ApiError::invalid(
            "page_token",
            "not a page token from a previous response",
        )),
        None => Ok(()),
    }
}

/// ListRoutes' VPC and page token.
pub fn list_routes(req: &ListRoutesRequest) -> Result<(), ApiError> {
    let v = check_text("vpc", &req.vpc, MAX_VPC_LEN)
        .into_iter()
        .chain(check_text(
            "page_token",
            &req.page_token,
            MAX_PAGE_TOKEN_LEN,
        ))
        .collect();
    refuse(v)
}

/// WatchPeerings' VPC and resume token.
pub fn watch(req: &WatchPeeringsRequest) -> Result<(), ApiError> {
    let v = check_text("vpc", &req.vpc, MAX_VPC_LEN)
        .into_iter()
        .chain(check_text(
            "resume_token",
            &req.resume_token,
            MAX_PAGE_TOKEN_LEN,
        ))
        .collect();
    refuse(v)
}
