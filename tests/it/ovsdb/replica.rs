//! Replica correctness against real `ovsdb-server`s: rows written by other clients (which
//! may omit columns the server then fills with schema defaults) end up in the cache exactly as
//! the server holds them.

use ovn_peerd_test_support::ovsdb::run;

use super::*;
use crate::support::nb::NbServer;

/// `networks` is `min: 1`: a port inserted without it holds `[""]` on the server, and setting
/// it later arrives as a *diff* against that `[""]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_diff_on_a_schema_default_column_matches_the_server() {
    let srv = NbServer::start();
    let client = connect(&srv.remote()).await;
    let txn = json!([DB,
        {"op": "insert", "table": "Logical_Router_Port", "uuid-name": "p",
         "row": {"name": "lp", "mac": "0a:00:00:00:00:01"}},
        {"op": "insert", "table": "Logical_Router",
         "row": {"name": "r", "ports": ["named-uuid", "p"]}}]);
    run(
        "ovsdb-client",
        &["transact", &srv.remote(), &txn.to_string()],
    );
    client
        .wait_for(T, |c| c.port_by_name("lp").is_some())
        .await
        .unwrap();
    assert_eq!(
        client.cache().port_by_name("lp").unwrap().networks,
        vec![""]
    );
    srv.nbctl(&[
        "set",
        "Logical_Router_Port",
        "lp",
        "networks=\"10.0.0.1/24\"",
    ]);
    client
        .wait_for(T, |c| c.port_by_name("lp").unwrap().networks != vec![""])
        .await
        .unwrap();
    assert_cache_matches(&client, |a| srv.nbctl(a)).await;
    assert_eq!(
        client.cache().port_by_name("lp").unwrap().networks,
        vec!["10.0.0.1/24"]
    );
}
