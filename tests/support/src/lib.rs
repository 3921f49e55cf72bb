//! Fixtures shared by ovn-peerd's integration tests (`tests/it/`) and benches (`benches/`):
//! the real processes they run against and the few helpers every fixture needs.
//!
//! | module | owns |
//! |---|---|
//! | [`process`] | child processes that die with the test binary ([`process::Owned`], [`process::DieWithParent`]), `free_port`, `is_root` |
//! | [`poll`] | the one polling helper, [`wait_until`]: a deadline, and a timeout is an `Err` |
//! | [`pg`] | a throwaway Postgres cluster ([`pg::PgCluster`]) and a fresh database per test ([`pg::TestDb`]) |
//! | [`ovsdb`] | the one `ovsdb-server` starter, the schema paths, a standalone NB ([`ovsdb::NbServer`]) and an NB Raft cluster ([`ovsdb::NbCluster`]) |
//! | [`pki`] | throwaway CAs and certificates made by `ovs-pki`, once per test binary, for `pssl:` servers |
//! | [`log`] | tracing output in tests only when `TEST_LOG` is set |
//! | [`skip`] | root-only tests that say, where CI shows it, that they were skipped |
//!
//! Why a workspace member crate rather than a feature-gated module of `ovn-peerd`: these
//! fixtures are test code (tempdirs, `initdb`, killing processes) that must never be compiled
//! into the service, and a feature flag on the main crate would be one more way to build it
//! wrong; a crate is also the only thing both the `it` test binary and the bench binaries can
//! share without `#[path]` tricks. It deliberately does **not** depend on `ovn-peerd`: a
//! dev-dependency that depends back on the crate under test would link a second copy of it,
//! whose types do not match the test's. Fixtures that need ovn-peerd's own types (the
//! in-process service, an OVSDB client monitor) stay with their users in `tests/it/support/`
//! and `benches/support/`.

pub mod log;
pub mod ovsdb;
pub mod pg;
pub mod pki;
pub mod poll;
pub mod process;
pub mod skip;

pub use poll::{wait_until, wait_until_async, Timeout};
pub use process::{free_port, is_root};
