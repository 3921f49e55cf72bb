//! The API layer's error and its one conversion into `tonic::Status`.
//!
//! Clients see a clear reason: every status carries `google.rpc.ErrorInfo` (domain
//! [`ERROR_DOMAIN`], a stable `reason` of the proto's `ErrorReason`, see
//! [`ApiError::reason`]); UNAVAILABLE carries `google.rpc.RetryInfo` too; refusals
//! carry `google.rpc.BadRequest` or `google.rpc.PreconditionFailure` details naming
//! the field. Internal errors are logged with their whole chain and shown to clients
//! as a generic message.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use crate::peering::{Refusal, RefusalKind, Violation};
use crate::proto::v1::ErrorReason;
use crate::store::StoreError;

/// `google.rpc.ErrorInfo.domain` of every error of this service.
pub const ERROR_DOMAIN: &str = "ovnpeerd";

/// How long an UNAVAILABLE client should wait before retrying (`google.rpc.RetryInfo`).
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What an UNAVAILABLE error waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Postgres.
    Database,
    /// The OVN Northbound connection (or its cache, not in sync).
    Northbound,
    /// Concurrent requests racing for one resource (named).
    Contention(&'static str),
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dependency::Database => f.write_str("the database"),
            Dependency::Northbound => f.write_str("the OVN Northbound database"),
            Dependency::Contention(what) => write!(f, "{what} (too many concurrent requests)"),
        }
    }
}

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
        /// What is unavailable.
        what: Dependency,
        /// The cause, for logs (at debug).
        #[source]
        source: Option<StoreError>,
    },
    /// The link pool has no free link (RESOURCE_EXHAUSTED).
    #[error("no free interconnect link left in {pool}")]
    PoolExhausted {
        /// The pool.
        pool: String,
    },
    /// A request_id used before with another request (INVALID_ARGUMENT on `request_id`).
    #[error("request_id {0}")]
    RequestIdReused(String),
    /// The etag given is not the peering's current one (ABORTED); nothing changed.
    #[error("peering {name:?} changed since it was read (etag mismatch)")]
    EtagMismatch {
        /// The peering.
        name: String,
    },
    /// The peering is being deleted and cannot change (FAILED_PRECONDITION).
    #[error("peering {name:?} is being deleted")]
    PeeringDeleting {
        /// The peering.
        name: String,
    },
    /// AcceptPeering or RejectPeering of a peering that is not an open cross-tenant request
    /// (FAILED_PRECONDITION on `state`); the description names the state it is in.
    #[error("state: {0}")]
    NotAwaitingAcceptance(String),
    /// A route change of a cross-tenant request that is not accepted (FAILED_PRECONDITION).
    #[error("peering {name:?} is {state}: a request's routes cannot change")]
    PeeringNotAccepted {
        /// The peering.
        name: String,
        /// Its state, as the API names it.
        state: &'static str,
    },
    /// A resume position the change log no longer (or never) held (OUT_OF_RANGE).
    #[error("{0}")]
    ResumeTokenExpired(String),
    /// A stream ended because its client fell behind (ABORTED); the message says how to resume.
    #[error("{0}")]
    WatchFellBehind(String),
    /// A stream reached its maximum age (ABORTED); the message says how to resume.
    #[error("{0}")]
    WatchExpired(String),
    /// Too many WatchPeerings streams are open (RESOURCE_EXHAUSTED); the message says which limit.
    #[error("{0}")]
    TooManyWatches(String),
    /// The server is stopping (UNAVAILABLE); the message says how to go on elsewhere.
    #[error("{0}")]
    ShuttingDown(String),
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
    /// The deadline came while the call waited for VPC locks held elsewhere (another call or
    /// replica): Postgres ended the wait a margin before it (`store::LOCK_WAIT_MARGIN`, or a
    /// quarter of the call's budget if shorter), so that this
    /// answer, naming the VPCs, comes before the handler's timer's (DEADLINE_EXCEEDED, as
    /// the deadline itself); nothing changed.
    #[error("{}", lock_busy_message(vpcs))]
    LockBusy {
        /// The VPCs whose locks the call waited for (the caller's own: [`Self::for_vpcs`]).
        vpcs: Vec<String>,
        /// The cause, for logs.
        #[source]
        source: Option<StoreError>,
    },
    /// A bug or an unexpected database answer (INTERNAL).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The same error (same code, same reason) for another caller of a call that failed
    /// for several at once (a create batch): the cause, kept for logs by the original, is
    /// carried here as text.
    pub(crate) fn for_another_caller(&self) -> ApiError {
        use ApiError as E;
        match self {
            E::Refused(r) => E::Refused(r.clone()),
            E::AlreadyExists { field, message } => E::AlreadyExists {
                field,
                message: message.clone(),
            },
            E::NotFound { resource, name } => E::NotFound {
                resource,
                name: name.clone(),
            },
            E::PermissionDenied(m) => E::PermissionDenied(m.clone()),
            E::Unavailable { what, .. } => E::Unavailable {
                what: *what,
                source: None,
            },
            E::PoolExhausted { pool } => E::PoolExhausted { pool: pool.clone() },
            E::RequestIdReused(m) => E::RequestIdReused(m.clone()),
            E::EtagMismatch { name } => E::EtagMismatch { name: name.clone() },
            E::PeeringDeleting { name } => E::PeeringDeleting { name: name.clone() },
            E::NotAwaitingAcceptance(m) => E::NotAwaitingAcceptance(m.clone()),
            E::PeeringNotAccepted { name, state } => E::PeeringNotAccepted {
                name: name.clone(),
                state,
            },
            E::ResumeTokenExpired(m) => E::ResumeTokenExpired(m.clone()),
            E::WatchFellBehind(m) => E::WatchFellBehind(m.clone()),
            E::WatchExpired(m) => E::WatchExpired(m.clone()),
            E::TooManyWatches(m) => E::TooManyWatches(m.clone()),
            E::ShuttingDown(m) => E::ShuttingDown(m.clone()),
            E::Overloaded { limit } => E::Overloaded { limit: *limit },
            E::DeadlineExceeded { after } => E::DeadlineExceeded { after: *after },
            E::LockBusy { vpcs, .. } => E::LockBusy {
                vpcs: vpcs.clone(),
                source: None,
            },
            E::Internal(e) => E::Internal(anyhow::anyhow!("{e:#}")),
        }
    }

    /// This error as told to the caller of a create of `vpcs` in a batch that failed with
    /// it: [`Self::LockBusy`] names only those of its VPCs (not another caller's, maybe
    /// another tenant's); any other error is as it is.
    pub fn for_vpcs(self, vpcs: &[&str]) -> Self {
        match self {
            ApiError::LockBusy { vpcs: all, source } => ApiError::LockBusy {
                vpcs: all
                    .into_iter()
                    .filter(|v| vpcs.contains(&v.as_str()))
                    .collect(),
                source,
            },
            other => other,
        }
    }

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
            what: Dependency::Northbound,
            source: None,
        }
    }

    /// UNAVAILABLE because concurrent requests keep taking `what` first.
    pub fn contention(what: &'static str) -> Self {
        ApiError::Unavailable {
            what: Dependency::Contention(what),
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
                what: Dependency::Database,
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
            StoreError::EtagMismatch { name } => ApiError::EtagMismatch { name },
            StoreError::LockBusy { ref vpcs, .. } => ApiError::LockBusy {
                vpcs: vpcs.clone(),
                source: Some(e),
            },
            StoreError::Conflict(_) | StoreError::LockTimeout(_) => ApiError::Unavailable {
                what: Dependency::Contention("the database's locks"),
                source: Some(e),
            },
            other => ApiError::Internal(other.into()),
        }
    }
}

impl ApiError {
    /// The stable `google.rpc.ErrorInfo.reason` of this error.
    pub fn reason(&self) -> ErrorReason {
        match self {
            ApiError::Refused(r) => match r.kind {
                RefusalKind::InvalidArgument => ErrorReason::FieldInvalid,
                RefusalKind::FailedPrecondition => ErrorReason::TopologyConflict,
            },
            ApiError::AlreadyExists { field, .. } if *field == "peering.name" => {
                ErrorReason::PeeringAlreadyExists
            }
            ApiError::AlreadyExists { .. } => ErrorReason::VpcsAlreadyPeered,
            ApiError::NotFound { resource, .. } if *resource == "vpc" => ErrorReason::VpcNotFound,
            ApiError::NotFound { .. } => ErrorReason::PeeringNotFound,
            ApiError::PermissionDenied(_) => ErrorReason::PermissionDenied,
            ApiError::Unavailable { what, .. } => match what {
                Dependency::Database => ErrorReason::DatabaseUnavailable,
                Dependency::Northbound => ErrorReason::NorthboundUnavailable,
                Dependency::Contention(_) => ErrorReason::Contention,
            },
            ApiError::PoolExhausted { .. } => ErrorReason::LinkPoolExhausted,
            ApiError::RequestIdReused(_) => ErrorReason::RequestIdReused,
            ApiError::EtagMismatch { .. } => ErrorReason::EtagMismatch,
            ApiError::PeeringDeleting { .. } => ErrorReason::PeeringDeleting,
            ApiError::NotAwaitingAcceptance(_) => ErrorReason::NotAwaitingAcceptance,
            ApiError::PeeringNotAccepted { .. } => ErrorReason::PeeringNotAccepted,
            ApiError::ResumeTokenExpired(_) => ErrorReason::ResumeTokenExpired,
            ApiError::WatchFellBehind(_) => ErrorReason::WatchFellBehind,
            ApiError::WatchExpired(_) => ErrorReason::WatchExpired,
            ApiError::TooManyWatches(_) => ErrorReason::TooManyWatches,
            ApiError::ShuttingDown(_) => ErrorReason::ShuttingDown,
            ApiError::Overloaded { .. } => ErrorReason::Overloaded,
            ApiError::DeadlineExceeded { .. } | ApiError::LockBusy { .. } => {
                ErrorReason::DeadlineExceeded
            }
            ApiError::Internal(_) => ErrorReason::Internal,
        }
    }
}

/// The reason as `ErrorInfo` carries it: the enum value's name without its prefix.
pub fn reason_text(reason: ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let reason = reason_text(e.reason());
        let mut metadata: HashMap<String, String> = HashMap::new();
        let (code, message, mut details) = match e {
            ApiError::Refused(refusal) => {
                if let Some(v) = refusal.violations.first() {
                    metadata.insert("field".into(), v.field.clone());
                }
                refusal_status(refusal)
            }
            ApiError::AlreadyExists { field, message } => {
                metadata.insert("field".into(), field.into());
                (
                    Code::AlreadyExists,
                    format!("{field}: {message}"),
                    ErrorDetails::with_bad_request(vec![FieldViolation::new(field, message)]),
                )
            }
            ApiError::NotFound { resource, name } => {
                let resource_type = match resource {
                    "vpc" => "ovn.Logical_Router",
                    _ => "ovnpeerd.v1.Peering",
                };
                metadata.insert("resource".into(), resource.into());
                metadata.insert("name".into(), name.clone());
                let message = format!("{resource} {name:?} not found");
                (
                    Code::NotFound,
                    message,
                    ErrorDetails::with_resource_info(resource_type, name, "", "not found"),
                )
            }
            ApiError::PermissionDenied(message) => {
                (Code::PermissionDenied, message, ErrorDetails::new())
            }
            ApiError::Unavailable { what, source } => {
                tracing::warn!(error = ?source, "{what} unavailable");
                (
                    Code::Unavailable,
                    format!("{what} is unavailable, retry later"),
                    ErrorDetails::with_retry_info(Some(RETRY_DELAY)),
                )
            }
            ApiError::PoolExhausted { pool } => (
                Code::ResourceExhausted,
                format!(
                    "no free interconnect link left in {pool}; name the connect addresses explicitly"
                ),
                ErrorDetails::new(),
            ),
            ApiError::RequestIdReused(description) => {
                metadata.insert("field".into(), "request_id".into());
                (
                    Code::InvalidArgument,
                    format!("request_id: {description}"),
                    ErrorDetails::with_bad_request(vec![FieldViolation::new(
                        "request_id",
                        description,
                    )]),
                )
            }
            ApiError::EtagMismatch { name } => {
                let message = format!(
                    "peering {name:?} changed since it was read (etag mismatch); \
                     read it again and retry with its current etag"
                );
                metadata.insert("name".into(), name);
                (Code::Aborted, message, ErrorDetails::new())
            }
            ApiError::PeeringDeleting { name } => {
                let message = format!("peering {name:?} is being deleted and cannot change");
                (
                    Code::FailedPrecondition,
                    message.clone(),
                    ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                        "STATE", name, message,
                    )]),
                )
            }
            ApiError::NotAwaitingAcceptance(description) => {
                metadata.insert("field".into(), "state".into());
                (
                    Code::FailedPrecondition,
                    format!("state: {description}"),
                    ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                        "STATE",
                        "state",
                        description,
                    )]),
                )
            }
            ApiError::PeeringNotAccepted { name, state } => {
                let message = format!(
                    "peering {name:?} is {state}: the routes of a cross-tenant request change \
                     only once it is accepted (the remote tenant answers the request as made); \
                     delete it and request again"
                );
                metadata.insert("name".into(), name);
                (
                    Code::FailedPrecondition,
                    message.clone(),
                    ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                        "STATE", "state", message,
                    )]),
                )
            }
            ApiError::ResumeTokenExpired(message) => {
                metadata.insert("field".into(), "resume_token".into());
                (Code::OutOfRange, message, ErrorDetails::new())
            }
            ApiError::WatchFellBehind(message) => (Code::Aborted, message, ErrorDetails::new()),
            ApiError::WatchExpired(message) => (Code::Aborted, message, ErrorDetails::new()),
            ApiError::TooManyWatches(message) => {
                (Code::ResourceExhausted, message, ErrorDetails::new())
            }
            ApiError::ShuttingDown(message) => (
                Code::Unavailable,
                message,
                ErrorDetails::with_retry_info(Some(RETRY_DELAY)),
            ),
            e @ ApiError::Overloaded { .. } => (
                Code::ResourceExhausted,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(RETRY_DELAY)),
            ),
            e @ ApiError::DeadlineExceeded { .. } => {
                (Code::DeadlineExceeded, e.to_string(), ErrorDetails::new())
            }
            ApiError::LockBusy { vpcs, source } => {
                // The rpc span logs the outcome (DEADLINE_EXCEEDED, at info, as the handler's
                // timer's); Postgres's own error only at debug (one per call in a lock storm).
                tracing::debug!(error = ?source, "lock wait ended at the deadline");
                let message = lock_busy_message(&vpcs);
                if !vpcs.is_empty() {
                    metadata.insert("vpc".into(), vpcs.join(","));
                }
                (Code::DeadlineExceeded, message, ErrorDetails::new())
            }
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (Code::Internal, "internal error".into(), ErrorDetails::new())
            }
        };
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

/// [`ApiError::LockBusy`]'s message: which VPC's lock the call waited for until its deadline.
fn lock_busy_message(vpcs: &[String]) -> String {
    let what = match vpcs {
        [] => "a lock".to_owned(),
        [vpc] => format!("the lock of VPC {vpc:?}"),
        _ => {
            let names: Vec<String> = vpcs.iter().map(|v| format!("{v:?}")).collect();
            format!("the locks of VPCs {}", names.join(", "))
        }
    };
    format!(
        "the deadline passed while waiting for {what}, held by another call or replica; \
         nothing was changed"
    )
}

fn refusal_status(refusal: Refusal) -> (Code, String, ErrorDetails) {
    let message = refusal.to_string();
    match refusal.kind {
        RefusalKind::InvalidArgument => {
            let violations: Vec<FieldViolation> = refusal
                .violations
                .iter()
                .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect();
            (
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
            (
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure(violations),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<ApiError> {
        vec![
            ApiError::invalid("peering.name", "required"),
            ApiError::Refused(Refusal::single(
                RefusalKind::FailedPrecondition,
                "peering.local_routes[0]",
                "would form an ECMP group",
            )),
            StoreError::NameTaken.into(),
            StoreError::PairTaken.into(),
            ApiError::peering_not_found("p"),
            ApiError::NotFound {
                resource: "vpc",
                name: "r".into(),
            },
            ApiError::PermissionDenied("no".into()),
            ApiError::Unavailable {
                what: Dependency::Database,
                source: None,
            },
            ApiError::nb_unavailable(),
            ApiError::contention("link allocation"),
            ApiError::PoolExhausted {
                pool: "169.254.0.0/16".into(),
            },
            ApiError::RequestIdReused("was used".into()),
            ApiError::EtagMismatch { name: "p".into() },
            ApiError::PeeringDeleting { name: "p".into() },
            ApiError::NotAwaitingAcceptance("peering \"p\" is STATE_ACTIVE".into()),
            ApiError::PeeringNotAccepted {
                name: "p".into(),
                state: "STATE_PENDING_ACCEPTANCE",
            },
            ApiError::ResumeTokenExpired("re-watch without a token".into()),
            ApiError::WatchFellBehind("resume".into()),
            ApiError::WatchExpired("resume".into()),
            ApiError::TooManyWatches("1000".into()),
            ApiError::ShuttingDown("elsewhere".into()),
            ApiError::Overloaded { limit: 64 },
            ApiError::DeadlineExceeded {
                after: std::time::Duration::from_millis(90),
            },
            ApiError::LockBusy {
                vpcs: vec!["vpc-1".into()],
                source: None,
            },
            ApiError::Internal(anyhow::anyhow!("x")),
        ]
    }

    #[test]
    fn a_lock_wait_ended_by_the_deadline_is_deadline_exceeded_naming_the_vpc() {
        let e: ApiError = StoreError::LockBusy {
            vpcs: vec!["vpc-1".into(), "vpc-2".into()],
            source: sqlx::Error::Protocol("canceling statement due to lock timeout".into()),
        }
        .into();
        // Postgres's error goes to the logs.
        let chain = format!("{:?}", std::error::Error::source(&e));
        assert!(chain.contains("lock timeout"), "{chain}");
        let status = Status::from(e);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(
            status.message().contains(r#"VPCs "vpc-1", "vpc-2""#),
            "{}",
            status.message()
        );
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "DEADLINE_EXCEEDED");
        assert_eq!(info.metadata["vpc"], "vpc-1,vpc-2");
    }

    #[test]
    fn a_failed_batch_tells_each_caller_only_its_own_vpcs_of_a_busy_lock() {
        let e = ApiError::LockBusy {
            vpcs: vec!["hub".into(), "tenant-a".into(), "tenant-b".into()],
            source: None,
        };
        match e.for_another_caller().for_vpcs(&["tenant-a", "hub"]) {
            ApiError::LockBusy { vpcs, .. } => assert_eq!(vpcs, ["hub", "tenant-a"]),
            other => panic!("{other:?}"),
        }
        let other = ApiError::Overloaded { limit: 1 }.for_vpcs(&["hub"]);
        assert!(matches!(other, ApiError::Overloaded { limit: 1 }));
    }

    #[test]
    fn a_lock_timeout_that_is_not_the_deadline_is_contention() {
        let e: ApiError = StoreError::LockTimeout(sqlx::Error::Protocol("x".into())).into();
        assert_eq!(Status::from(e).code(), Code::Unavailable);
    }

    #[test]
    fn every_error_carries_error_info_with_a_distinct_listed_reason() {
        let mut seen = std::collections::BTreeSet::new();
        for e in one_of_each() {
            let reason = e.reason();
            let status = Status::from(e);
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo");
            assert_eq!(info.domain, ERROR_DOMAIN);
            assert_ne!(reason, ErrorReason::Unspecified);
            assert_eq!(info.reason, reason_text(reason));
            assert!(
                info.reason
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_'),
                "{}",
                info.reason
            );
            seen.insert(info.reason.clone());
        }
        // Every reason of the proto but UNSPECIFIED is sent by some error.
        let listed = (1..).map_while(|i| ErrorReason::try_from(i).ok()).count();
        assert_eq!(seen.len(), listed, "{seen:?}");
    }

    #[test]
    fn unavailable_and_overloaded_and_only_they_carry_retry_info() {
        for e in one_of_each() {
            let overloaded = matches!(e, ApiError::Overloaded { .. });
            let status = Status::from(e);
            let retry = status.get_error_details().retry_info().cloned();
            if status.code() == Code::Unavailable || overloaded {
                assert_eq!(retry.unwrap().retry_delay, Some(RETRY_DELAY));
            } else {
                assert!(retry.is_none(), "{status:?}");
            }
        }
    }

    #[test]
    fn refusal_details_stay_beside_error_info() {
        let status = Status::from(ApiError::invalid("peering.labels[Bad]", "not a key"));
        let details = status.get_error_details();
        let br = details.bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "peering.labels[Bad]");
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "FIELD_INVALID");
        assert_eq!(info.metadata["field"], "peering.labels[Bad]");
        let status = Status::from(ApiError::EtagMismatch { name: "p".into() });
        assert_eq!(status.code(), Code::Aborted);
    }
}
