//! ovn-peerd: VPC peering as a gRPC API for OVN-based clouds.
//!
//! Layout, by what each module owns:
//! - [`api`]: the gRPC `PeeringService` (request checks, a span per RPC, error mapping to
//!   `tonic::Status`).
//! - [`auth`]: TLS, caller identities, the authorization policy, files re-read on change.
//! - [`peering`]: pure rules: validation, link allocation, topology checks, desired NB rows,
//!   diffs. No I/O.
//! - [`adapters`]: the NB replica seen through the rules' `Topology` trait.
//! - [`store`]: every SQL statement (Postgres holds the desired state).
//! - [`ovsdb`]: an async OVSDB client with an in-memory replica of the NB tables we use.
//! - [`reconciler`]: the background worker converging OVN NB to Postgres.
//! - [`acceptance`]: the acceptance TTL of cross-tenant requests (the expiry sweep).
//! - [`backoff`]: the one retry backoff (exponential, capped, jittered).
//! - [`config`]: flags and environment; [`telemetry`]: log set-up; [`metrics`]: Prometheus;
//!   [`health`]: the gRPC health service; [`proto`]: the generated API code; [`heap`]: the
//!   allocator's settings and trims.
//! - [`watch`]: WatchPeerings' engine: the change log read once per process, fanned out.
//! - [`startup`]: wiring and graceful shutdown.

pub mod acceptance;
pub mod adapters;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod diagnose;
pub mod health;
pub mod heap;
pub mod metrics;
pub mod ovsdb;
pub mod peering;
pub mod proto;
pub mod reconciler;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod watch;
