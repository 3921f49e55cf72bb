//! Postgres for tests: [`TestDb`] (a fresh database per test) and [`PgCluster`] (a throwaway
//! cluster a test can kill and restart), from the `ovn-peerd-test-support` crate.

pub use ovn_peerd_test_support::pg::{PgCluster, TestDb};
pub use ovn_peerd_test_support::{free_port, wait_until};
