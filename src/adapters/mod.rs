//! Adapters from the I/O layers to the pure rules' traits, so that `peering` never
//! depends on `ovsdb` (or the other way round).
//!
//! - [`nb_cache_topology`]: the NB replica ([`crate::ovsdb::NbCache`]) as a
//!   [`crate::peering::topology::Topology`].
//! - [`nb_diagnose`]: the replica (and the few rows read beside it) as DiagnosePeering's
//!   [`crate::diagnose::Snapshot`].

pub mod nb_cache_topology;
pub mod nb_diagnose;

pub use nb_cache_topology::NbCacheTopology;
