//! Adapters from the I/O layers to the pure rules' traits, so that `peering` never
//! depends on `ovsdb` (or the other way round).
//!
//! - [`nb_cache_topology`]: the NB replica ([`crate::ovsdb::NbCache`]) as a
//!   [`crate::peering::topology::Topology`].

pub mod nb_cache_topology;

pub use nb_cache_topology::NbCacheTopology;
