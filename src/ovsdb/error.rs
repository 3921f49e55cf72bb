//! Error types of the OVSDB client, one enum per layer.
//!
//! - [`Error`]: configuration, connection and schema problems (what `Client::start`,
//!   `wait_synced` and the connection task report).
//! - [`TransactError`]: what a caller of `Client::transact` sees. A transaction whose reply was
//!   lost is [`TransactError::OutcomeUnknown`], never a failure.
//! - [`OvsdbError`]: an error object sent by the server (`{"error": .., "details": ..}`).

use std::fmt;

/// Errors of the connection layer: remotes, framing, schema, leadership.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid remote {remote:?}: {reason}")]
    InvalidRemote { remote: String, reason: String },
    /// An `ssl:` remote without the key, certificate and CA certificate files.
    #[error("remote {0} uses ssl: but no private key, certificate and CA certificate were given")]
    TlsNotConfigured(String),
    /// The TLS files cannot be read or do not make a usable configuration.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The handshake failed (the remote is logged beside it); `hint` says what most likely
    /// went wrong. The cause is part of the message (not a `#[source]`) because it is the one
    /// thing an operator needs to read.
    #[error("TLS handshake failed: {cause}: {hint}")]
    TlsHandshake {
        hint: &'static str,
        cause: std::io::Error,
    },
    #[error("no remotes configured")]
    NoRemotes,
    #[error("i/o error talking to the server")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("server replied with an error to {method}")]
    Rpc {
        method: String,
        #[source]
        error: OvsdbError,
    },
    #[error("schema of table {table} lacks column {column}")]
    MissingColumn { table: String, column: String },
    #[error("schema lacks table {0}")]
    MissingTable(String),
    #[error("column {table}.{column} has an unexpected type: {reason}")]
    ColumnType {
        table: String,
        column: String,
        reason: String,
    },
    /// The replica cannot apply an update (malformed, or diverged from the server): the
    /// connection ends and the next one starts from a full dump.
    #[error("cannot apply a monitor update: {0}")]
    Update(super::cache::UpdateError),
    #[error("server is not usable: {0}")]
    NotUsable(String),
    #[error("connection closed: {0}")]
    ConnectionClosed(String),
    /// Handling a message panicked midway: the replica may hold what the server meant to
    /// change, so the next session starts from a full dump.
    #[error("message handler panicked: {0}")]
    HandlerPanicked(String),
    #[error("inactivity probe: no reply from the server within {0:?}")]
    ProbeTimeout(std::time::Duration),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("the client was shut down")]
    Shutdown,
}

/// An error object from the server, with its kind decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsdbError {
    pub kind: OvsdbErrorKind,
    /// The server's `error` string, verbatim.
    pub error: String,
    pub details: Option<String>,
    /// The `syntax` member, when present.
    pub syntax: Option<String>,
}

/// The error strings RFC 7047 and Open vSwitch define, plus `Other` for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OvsdbErrorKind {
    ConstraintViolation,
    ReferentialIntegrityViolation,
    DuplicateUuid,
    TimedOut,
    NotOwner,
    NotSupported,
    ResourcesExhausted,
    IoError,
    Aborted,
    UnknownDatabase,
    UnknownMethod,
    SyntaxError,
    NotLeader,
    /// The server answered a pending request with "canceled" instead of running it to its
    /// end: the database was converted or removed under it (`ovsdb/trigger.c`, e.g. during
    /// an OVN upgrade). Transient, as ovsdb-idl's TRY_AGAIN: re-read and send again.
    Canceled,
    Other,
}

impl OvsdbErrorKind {
    pub fn from_error_string(s: &str) -> Self {
        match s {
            "constraint violation" => Self::ConstraintViolation,
            "referential integrity violation" => Self::ReferentialIntegrityViolation,
            "duplicate uuid" => Self::DuplicateUuid,
            "timed out" => Self::TimedOut,
            "not owner" => Self::NotOwner,
            "not supported" => Self::NotSupported,
            "resources exhausted" => Self::ResourcesExhausted,
            "I/O error" => Self::IoError,
            "aborted" => Self::Aborted,
            "unknown database" => Self::UnknownDatabase,
            "unknown method" => Self::UnknownMethod,
            "syntax error" | "unknown column" | "unknown table" | "unknown operator" => {
                Self::SyntaxError
            }
            "not leader" => Self::NotLeader,
            "canceled" => Self::Canceled,
            _ => Self::Other,
        }
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::ConstraintViolation => "constraint_violation",
            Self::ReferentialIntegrityViolation => "referential_integrity_violation",
            Self::DuplicateUuid => "duplicate_uuid",
            Self::TimedOut => "timed_out",
            Self::NotOwner => "not_owner",
            Self::NotSupported => "not_supported",
            Self::ResourcesExhausted => "resources_exhausted",
            Self::IoError => "io_error",
            Self::Aborted => "aborted",
            Self::UnknownDatabase => "unknown_database",
            Self::UnknownMethod => "unknown_method",
            Self::SyntaxError => "syntax_error",
            Self::NotLeader => "not_leader",
            Self::Canceled => "canceled",
            Self::Other => "other",
        }
    }
}

impl OvsdbError {
    /// Decodes an error object; anything that is not one becomes `Other` with the JSON text.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        match text("error") {
            Some(error) => OvsdbError {
                kind: OvsdbErrorKind::from_error_string(&error),
                error,
                details: text("details"),
                syntax: text("syntax"),
            },
            None => OvsdbError {
                kind: match v.as_str() {
                    Some(s) => OvsdbErrorKind::from_error_string(s),
                    None => OvsdbErrorKind::Other,
                },
                error: v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string()),
                details: None,
                syntax: None,
            },
        }
    }
}

impl fmt::Display for OvsdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        if let Some(d) = &self.details {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for OvsdbError {}

/// What `Client::transact` returns on failure.
#[derive(Debug, thiserror::Error)]
pub enum TransactError {
    /// Not connected (or not synced) within the configured wait; nothing was sent.
    #[error("not connected to a usable server")]
    NotConnected,
    /// The request was sent but no reply arrived (connection lost, or timed out): it may or may
    /// not have committed. Re-read before retrying; prefer idempotent writes (explicit uuids).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Operation `index` failed; nothing was committed.
    #[error("operation {index} failed")]
    Operation {
        index: usize,
        #[source]
        error: OvsdbError,
    },
    /// All operations succeeded but the commit failed (the extra result element).
    #[error("commit failed")]
    Commit(#[source] OvsdbError),
    /// The server rejected the whole request (e.g. unknown database, syntax).
    #[error("request rejected")]
    Rejected(#[source] OvsdbError),
    /// The reply could not be decoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the client was shut down")]
    Shutdown,
}

impl TransactError {
    /// The server error behind this failure, if the server sent one.
    pub fn ovsdb_error(&self) -> Option<&OvsdbError> {
        match self {
            Self::Operation { error, .. } | Self::Commit(error) | Self::Rejected(error) => {
                Some(error)
            }
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::OutcomeUnknown(_) => "outcome_unknown",
            Self::Operation { error, .. } | Self::Commit(error) | Self::Rejected(error) => {
                error.kind.label()
            }
            Self::Protocol(_) => "protocol",
            Self::Shutdown => "shutdown",
        }
    }
}
