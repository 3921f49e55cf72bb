//! The one integration-test binary: real Postgres, real ovsdb-server.
//!
//! Postgres comes from the sandbox (`scripts/test` exports `OVN_PEERD_TEST_PG`);
//! each test gets a fresh database and, where needed, a fresh NB ovsdb-server. The process
//! fixtures are the `ovn-peerd-test-support` crate (`tests/support/`, shared with the
//! benches); `support/` here re-exports them and adds what needs ovn-peerd's own types.
//!
//! Logs: tests print no tracing output unless `TEST_LOG` is set, e.g.
//! `TEST_LOG=1 RUST_LOG=ovn_peerd=debug cargo test --test it -- FILTER --nocapture`.
//! Root-only tests (datapath, e2e) print `SKIPPED <test>: ...` and a summary line on stderr
//! when not run as root, where cargo shows them even for passing tests.

mod acceptance;
mod api;
mod api_safety;
mod authz;
mod compose;
mod create_batch;
mod create_probe;
mod datapath;
mod diagnose;
mod e2e;
mod every_vpc_a_hub;
mod list_routes;
mod lock_deadline;
mod make_before_break;
mod metrics;
mod nb_tls;
mod overload;
mod ovsdb;
mod server;
mod shutdown;
mod store_plans;
mod store_rules;
mod support;
mod tls;
mod update;
mod walkthrough;
mod watch;
mod watch_limits;
mod watchdog;
mod worker;
