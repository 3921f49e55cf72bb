//! The one integration-test binary: real Postgres, real ovsdb-server.
//!
//! Postgres comes from the sandbox (`scripts/test` exports `OVN_PEERD_TEST_PG`);
//! each test gets a fresh database and, where needed, a fresh NB ovsdb-server.

mod api;
mod compose;
mod datapath;
mod e2e;
mod metrics;
mod ovsdb;
mod server;
mod shutdown;
mod store_rules;
mod support;
mod walkthrough;
mod watchdog;
mod worker;
