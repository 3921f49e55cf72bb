//! An async OVSDB client (RFC 7047 + Open vSwitch extensions) with an in-memory replica of
//! the NB tables ovn-peerd uses. Free of peering logic.
//!
//! - [`remote`]: `tcp:`/`unix:`/`ssl:` remotes and connecting.
//! - [`jsonrpc`]: framing of back-to-back JSON objects, message codec.
//! - `connection`: one session: reader/writer tasks, correlation, echo, inactivity probe.
//! - [`ops`]: typed operations, conditions, values; decoding `transact` results.
//! - [`schema`]: the server's schema and checking it against our models.
//! - [`model`]: typed NB rows.
//! - [`cache`]: the replica, its indexes and update application.
//! - `session`: per-server handshake, leader check, monitor setup, update handler.
//! - [`client`]: the public [`Client`]: reconnect loop, state, events, `transact`.
//! - [`error`]: one error enum per layer.

pub mod cache;
pub mod client;
mod connection;
pub mod error;
pub mod jsonrpc;
pub mod model;
pub mod ops;
pub mod remote;
pub mod schema;
mod session;

pub use cache::{ChangeKind, NbCache, RowChange};
pub use client::{CacheEvent, CacheGuard, Client, ClientConfig, ConnectionState};
pub use error::{Error, OvsdbError, OvsdbErrorKind, TransactError};
pub use model::{LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute, Model, Table};
pub use ops::{
    Atom, Condition, Datum, Function, Mutation, Mutator, Operation, OperationResult, Row, WaitUntil,
};
pub use remote::Remote;
