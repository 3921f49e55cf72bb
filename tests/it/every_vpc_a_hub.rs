//! The rule suites again with every VPC a hub (bound 0, `support::peerd::full_read_below`),
//! so that CreatePeering and the worker's narrow pass take the conflict probe's path (the one
//! a production hub takes) where the same tests at the top level take the full read. The
//! files are the same; only the bound differs (read from the test's name, this module's).

// On purpose: each file is compiled a second time, here.
#![allow(clippy::duplicate_mod)]

#[path = "acceptance.rs"]
mod acceptance;
#[path = "api_safety.rs"]
mod api_safety;
#[path = "create_batch.rs"]
mod create_batch;

/// The suites above do run with every VPC a hub here (and with the served bound at the top
/// level, unless `OVN_PEERD_TEST_FULL_READ_BELOW` says otherwise).
#[tokio::test]
async fn these_suites_run_with_every_vpc_a_hub() {
    let t = crate::support::peerd::TestPeerd::start().await;
    assert_eq!(t.config.full_read_below, 0);
    assert_eq!(t.store().full_read_below(), 0);
}
