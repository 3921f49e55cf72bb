//! Test fixtures: every process a test starts is stopped by it, by pid, even on failure, and
//! dies with the test binary. The process fixtures (Postgres, ovsdb-server, polling) are the
//! `ovn-peerd-test-support` crate in `tests/support/`, re-exported by `pg`, `nb` and `process`;
//! the modules here add what needs ovn-peerd's own types.

pub mod certs;
pub mod nb;
pub mod nbrows;
pub mod ovn;
pub mod park;
pub mod peerd;
pub mod peerd_process;
pub mod pg;
pub mod process;
pub mod vpc;
