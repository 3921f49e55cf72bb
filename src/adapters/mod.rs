//! Adapters from the I/O layers to the pure rules' traits, so that `peering` never
//! depends on `ovsdb` (or the other way round).
//!
//! - [`nb_cache_topology`]: the NB replica ([`crate::ovsdb::NbCache`]) as a
//!   [`crate::peering::topology::Topology`].
//! - [`nb_diagnose`]: the replica (and the few rows read beside it) as DiagnosePeering's
//!   [`crate::diagnose::Snapshot`].
//! - The replica's compact `external_ids` ([`crate::ovsdb::StrMap`]) as the ownership rules'
//!   [`crate::peering::ExternalIds`] (below).

pub mod nb_cache_topology;
pub mod nb_diagnose;

pub use nb_cache_topology::NbCacheTopology;

impl crate::peering::ExternalIds for crate::ovsdb::StrMap {
    fn id(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
    fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        crate::ovsdb::StrMap::to_map(self)
    }
}
