//! Who may call and what they may do: TLS serving and certificate rotation (`tls.rs`), the
//! caller's identity from its client certificate (`identity.rs`), the authorization policy
//! and its rules (`policy.rs`, pure), and the re-reading of changed files (`reload.rs`).
//!
//! The API applies the policy in one place (`src/api/authz.rs`); nothing here touches
//! Postgres or NB.

pub mod identity;
pub mod policy;
pub mod reload;
pub mod tls;

pub use identity::{Caller, PeerInfo};
pub use policy::{CreateDecision, Policy, Role};
pub use reload::Watched;
