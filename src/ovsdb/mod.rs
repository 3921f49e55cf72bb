//! An async OVSDB client (RFC 7047 + Open vSwitch extensions) with an in-memory replica of
//! the NB tables ovn-peerd uses. Free of peering logic.
//!
//! - [`remote`]: `tcp:`/`unix:`/`ssl:` remotes and connecting.
//! - [`tls`]: `ssl:` remotes' certificate files, verification (chain to the CA, no host name,
//!   as OVS) and handshake errors.
//! - [`jsonrpc`]: framing of back-to-back JSON objects, message codec.
//! - `connection`: one JSON-RPC connection: reader/writer tasks, correlation, echo, inactivity
//!   probe.
//! - [`values`]: typed atoms, data and rows; their JSON encoding.
//! - [`ops`]: typed operations, conditions, mutations; decoding `transact` results.
//! - [`schema`]: the server's schema and checking it against our models.
//! - [`model`]: typed NB rows; [`strmap`]: their compact `{string: string}` map columns.
//! - `updates`: monitor updates parsed straight from the wire's text into row operations.
//! - [`cache`]: the replica, its indexes and update application; `row_index`: which router
//!   holds each port and route, every router's subnets, followed row change by row change.
//! - [`changes`]: an update's row changes as listeners receive them, with the router and port
//!   names each touched before and after it.
//! - `handshake`: on each new connection, schema check, leader check, monitor setup; then the
//!   update handler that feeds the cache.
//! - `state`: [`ClientConfig`], [`ConnectionState`], [`CacheEvent`] and the state shared by
//!   `client` and `handshake`.
//! - [`client`]: the public [`Client`]: reconnect loop, `transact`, cache access.
//! - [`error`]: one error enum per layer.

pub mod cache;
pub mod changes;
pub mod client;
mod connection;
pub mod error;
mod handshake;
pub mod jsonrpc;
mod members;
pub mod model;
pub mod ops;
pub mod remote;
mod row_index;
pub mod schema;
mod state;
pub mod strmap;
pub mod tls;
mod updates;
pub mod values;

pub use cache::{ChangeKind, NbCache, RowChange};
pub use changes::{Changes, RowNames};
pub use client::{CacheSnapshot, Client, Sent};
pub use error::{Error, OvsdbError, OvsdbErrorKind, TransactError};
pub use model::{LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute, Model, Table};
pub use ops::{Condition, Function, Mutation, Mutator, Operation, OperationResult, WaitUntil};
pub use remote::Remote;
pub use state::{CacheEvent, ClientConfig, ConnectionState};
pub use strmap::StrMap;
pub use tls::TlsFiles;
pub use values::{Atom, Datum, Row};
