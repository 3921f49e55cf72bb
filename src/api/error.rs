//! The API layer's error and its one conversion into `tonic::Status`.
//!
//! Clients see a clear reason and, for refusals, `google.rpc.BadRequest` or
//! `google.rpc.PreconditionFailure` details naming the field. Internal errors
//! are logged with their whole chain and shown to clients as a generic message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use crate::peering::{Refusal, RefusalKind, Violation};
use crate::store::StoreError;

/// Why a request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request breaks a rule (INVALID_ARGUMENT or FAILED_PRECONDITION).
    #[error("{0}")]
    Refused(Refusal),
    /// The resource exists (ALREADY_EXISTS), naming the field at fault.
    #[error("{message}")]
    AlreadyExists {
        /// The field at fault.
        field: &'static str,
        /// What exists.
        message: String,
    },
    /// No such peering or VPC (NOT_FOUND).
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// "peering" or "vpc".
        resource: &'static str,
        /// What was asked for.
        name: String,
    },
    /// The caller may not do this (PERMISSION_DENIED); the message names what is missing.
    #[error("{0}")]
    PermissionDenied(String),
    /// A dependency is unreachable (UNAVAILABLE): clients retry.
    #[error("{what} is unavailable, retry later")]
    Unavailable {
        /// "the database" or "the OVN Northbound database".
        what: &'static str,
        /// The cause, for logs.
        #[source]
        source: Option<StoreError>,
    },
    /// The link pool has no free link (RESOURCE_EXHAUSTED).
    #[error("no free interconnect link left in {pool}")]
    PoolExhausted {
        /// The pool.
        pool: String,
    },
    /// `limit` calls are running: this one is refused at once (RESOURCE_EXHAUSTED).
    #[error("the server is busy ({limit} calls in flight); retry later")]
    Overloaded {
        /// `--max-in-flight`.
        limit: usize,
    },
    /// The call's deadline passed and its work was stopped (DEADLINE_EXCEEDED).
    #[error("the deadline passed after {after:?}; the call's work was stopped")]
    DeadlineExceeded {
        /// How long the call ran.
        after: std::time::Duration,
    },
    /// A bug or an unexpected database answer (INTERNAL).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// NOT_FOUND for a peering.
    pub fn peering_not_found(name: impl Into<String>) -> Self {
        ApiError::NotFound {
            resource: "peering",
            name: name.into(),
        }
    }

    /// UNAVAILABLE because the NB cache is not in sync.
    pub fn nb_unavailable() -> Self {
        ApiError::Unavailable {
            what: "the OVN Northbound database",
            source: None,
        }
    }

    /// An INVALID_ARGUMENT for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::Refused(Refusal {
            kind: RefusalKind::InvalidArgument,
            violations: vec![Violation::new(field, description)],
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable {
                what: "the database",
                source: Some(e),
            },
            StoreError::NameTaken => ApiError::AlreadyExists {
                field: "peering.name",
                message: "a peering with this name already exists".into(),
            },
            StoreError::PairTaken => ApiError::AlreadyExists {
                field: "peering.remote_vpc",
                message: "these two VPCs are already peered".into(),
            },
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Refused(refusal) => refusal_status(refusal),
            ApiError::AlreadyExists { field, message } => Status::with_error_details(
                Code::AlreadyExists,
                format!("{field}: {message}"),
                ErrorDetails::with_bad_request(vec![FieldViolation::new(field, message.clone())]),
            ),
            ApiError::NotFound { resource, name } => {
                let resource_type = match resource {
                    "vpc" => "ovn.Logical_Router",
                    _ => "ovnpeerd.v1.Peering",
                };
                Status::with_error_details(
                    Code::NotFound,
                    format!("{resource} {name:?} not found"),
                    ErrorDetails::with_resource_info(resource_type, name, "", "not found"),
                )
            }
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::Unavailable { what, source } => {
                tracing::warn!(error = ?source, "{what} unavailable");
                Status::unavailable(format!("{what} is unavailable, retry later"))
            }
            ApiError::PoolExhausted { pool } => Status::resource_exhausted(format!(
                "no free interconnect link left in {pool}; name the connect addresses explicitly"
            )),
            e @ ApiError::Overloaded { .. } => Status::resource_exhausted(e.to_string()),
            e @ ApiError::DeadlineExceeded { .. } => Status::deadline_exceeded(e.to_string()),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn refusal_status(refusal: Refusal) -> Status {
    let message = refusal.to_string();
    match refusal.kind {
        RefusalKind::InvalidArgument => {
            let violations: Vec<FieldViolation> = refusal
                .violations
                .iter()
                .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect();
            Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            )
        }
        RefusalKind::FailedPrecondition => {
            let violations: Vec<PreconditionViolation> = refusal
                .violations
                .iter()
                .map(|v| {
                    PreconditionViolation::new("TOPOLOGY", v.field.clone(), v.description.clone())
                })
                .collect();
            Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure(violations),
            )
        }
    }
}
