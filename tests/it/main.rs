//! The one integration-test binary: real Postgres, real ovsdb-server.
//!
//! Postgres comes from the sandbox (`scripts/test` exports `OVN_PEERD_TEST_PG`);
//! each test gets a fresh database and, where needed, a fresh NB ovsdb-server.

mod api;
mod api_safety;
mod compose;
mod datapath;
mod e2e;
mod ovsdb;
mod server;
mod support;
mod walkthrough;
mod worker;
