//! 10,000 rows in one transaction, and a monitor (initial dump) over 10,000 rows: the
//! functional checks only; how long they take is measured in `benches/`, never asserted.

use std::time::Instant;

use ovn_peerd::ovsdb::OperationResult;

use super::*;
use crate::support::nb::NbServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows() {
    const N: usize = 10_000;
    let srv = NbServer::start();
    let writer = connect(&srv.remote()).await;
    let ops: Vec<Operation> = (0..N)
        .map(|i| insert_router(&format!("r{i}"), None, Some(&format!("p{}", i % 100))))
        .collect();
    let t0 = Instant::now();
    let res = writer.transact(ops).await.unwrap();
    let write = t0.elapsed();
    assert_eq!(res.len(), N);
    assert!(res
        .iter()
        .all(|r| matches!(r, OperationResult::Inserted(_))));
    {
        let c = writer.cache();
        assert_eq!(c.routers().count(), N);
        assert_eq!(c.rows_with_external_id(OWNER, "p7").len(), N / 100);
        assert_eq!(c.router_by_name("r9999").len(), 1);
    }

    let t0 = Instant::now();
    let reader = connect(&srv.remote()).await;
    let dump = t0.elapsed();
    assert_eq!(reader.cache().routers().count(), N);
    eprintln!("10k-row transaction: {write:?}; connect + initial dump of 10k rows: {dump:?}");
}
