//! Throwaway NB `ovsdb-server`s: one standalone server per test ([`NbServer`]) or a Raft
//! cluster ([`NbCluster`]), from the `ovn-peerd-test-support` crate.

pub use ovn_peerd_test_support::ovsdb::{NbCluster, NbServer, NB_SCHEMA};
