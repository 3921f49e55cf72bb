//! Writes through the client read back with ovn-nbctl, and ovn-nbctl writes (incl. set and
//! map diffs) show up in the cache field by field.

use ovn_peerd::ovsdb::StrMap;

use ovn_peerd::ovsdb::{
    CacheEvent, Condition, Datum, LogicalRouterPort, LogicalRouterStaticRoute, Model, Mutation,
    Operation, OperationResult, Table,
};

use super::*;
use crate::support::nb::NbServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_writes_read_back_identically_with_nbctl() {
    let srv = NbServer::start();
    let client = connect(&srv.remote()).await;

    let res = client
        .transact(vec![insert_router("r1", None, Some("p1"))])
        .await
        .unwrap();
    let OperationResult::Inserted(r1) = res[0] else {
        panic!("{res:?}")
    };
    // transact() Ok => the cache already has the row.
    assert_eq!(client.cache().router(r1).unwrap().name, "r1");

    let port = LogicalRouterPort {
        name: "r1-r2".into(),
        mac: "0a:00:00:00:aa:01".into(),
        networks: ["169.254.0.1/30".into(), "fd00::1/126".into()].into(),
        peer: Some("r2-r1".into()),
        enabled: Some(true),
        options: StrMap::from([("k", "v")]),
        external_ids: StrMap::from([(OWNER, "p1")]),
        ..Default::default()
    };
    let res = client.transact(add_port(r1, &port)).await.unwrap();
    let OperationResult::Inserted(pu) = res[0] else {
        panic!("{res:?}")
    };
    assert_eq!(res[1], OperationResult::Count(1));
    let route = LogicalRouterStaticRoute {
        ip_prefix: "172.31.0.0/16".into(),
        nexthop: "169.254.0.2".into(),
        policy: Some("dst-ip".into()),
        output_port: Some("r1-r2".into()),
        external_ids: StrMap::from([(OWNER, "p1")]),
        ..Default::default()
    };
    let res = client
        .transact(vec![
            Operation::Insert {
                table: "Logical_Router_Static_Route".into(),
                row: route.to_row(),
                uuid_name: Some("rt".into()),
                uuid: None,
            },
            Operation::Mutate {
                table: "Logical_Router".into(),
                conditions: vec![Condition::uuid(r1)],
                mutations: vec![Mutation::insert("static_routes", Datum::named_uuid("rt"))],
            },
            Operation::Comment("peering p1".into()),
        ])
        .await
        .unwrap();
    let OperationResult::Inserted(ru) = res[0] else {
        panic!("{res:?}")
    };

    {
        let c = client.cache();
        let mut want = port.clone();
        want.uuid = pu;
        want.networks.sort();
        assert_eq!(c.port(pu), Some(&want));
        assert_eq!(c.port_by_name("r1-r2").map(|p| p.uuid), Some(pu));
        assert_eq!(*c.router(r1).unwrap().ports, [pu]);
        assert_eq!(*c.router(r1).unwrap().static_routes, [ru]);
        assert_eq!(c.static_route(ru).unwrap().nexthop, "169.254.0.2");
        let owned = c.rows_with_external_id(OWNER, "p1");
        assert_eq!(owned.len(), 3);
        assert!(owned.contains(&(Table::LogicalRouterStaticRoute, ru)));
    }
    // The server, read by ovn-nbctl, holds exactly what the cache holds.
    assert_eq!(
        srv.nbctl(&["get", "Logical_Router_Port", "r1-r2", "peer"])
            .trim(),
        "r2-r1"
    );
    assert_eq!(
        srv.nbctl(&["get", "Logical_Router_Port", "r1-r2", "networks"])
            .trim(),
        r#"["169.254.0.1/30", "fd00::1/126"]"#
    );
    assert!(srv
        .nbctl(&["lr-route-list", "r1"])
        .contains("172.31.0.0/16"));
    assert_cache_matches(&client, |a| srv.nbctl(a)).await;

    // Select and a failing wait decode as typed results/errors.
    let res = client
        .transact(vec![Operation::Select {
            table: "Logical_Router".into(),
            conditions: vec![Condition::eq("name", "r1")],
            columns: Some(vec!["name".into()]),
        }])
        .await
        .unwrap();
    assert!(matches!(&res[0], OperationResult::Rows(r) if r.len() == 1));
    let err = client
        .transact(vec![Operation::Wait {
            table: "Logical_Router".into(),
            conditions: vec![Condition::eq("name", "r1")],
            columns: vec!["name".into()],
            until: ovn_peerd::ovsdb::WaitUntil::Equal,
            rows: vec![],
            timeout_ms: Some(0),
        }])
        .await
        .unwrap_err();
    assert_eq!(
        err.ovsdb_error().unwrap().kind,
        ovn_peerd::ovsdb::OvsdbErrorKind::TimedOut
    );

    // Deleting a row still referenced fails at commit: the extra result element.
    let err = client
        .transact(vec![Operation::Delete {
            table: "Logical_Router_Port".into(),
            conditions: vec![Condition::uuid(pu)],
        }])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ovn_peerd::ovsdb::TransactError::Commit(e)
        if e.kind == ovn_peerd::ovsdb::OvsdbErrorKind::ReferentialIntegrityViolation),
        "{err:?}"
    );
    // A port without networks violates the schema's "at least one": constraint violation.
    let bad = LogicalRouterPort {
        name: "nonet".into(),
        mac: "0a:00:00:00:00:09".into(),
        ..Default::default()
    };
    let err = client.transact(add_port(r1, &bad)).await.unwrap_err();
    assert!(err.ovsdb_error().is_some(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbctl_writes_show_up_in_cache_with_set_and_map_diffs() {
    let srv = NbServer::start();
    let client = connect(&srv.tcp_remote()).await;
    let mut events = client.subscribe();
    let nb = |a: &[&str]| srv.nbctl(a);

    srv.nbctl(&["lr-add", "vpc-1"]);
    srv.nbctl(&[
        "lrp-add",
        "vpc-1",
        "vpc-1-vpc-2",
        "0a:00:00:00:aa:01",
        "169.254.0.1/30",
        "peer=vpc-2-vpc-1",
    ]);
    srv.nbctl(&["lr-route-add", "vpc-1", "172.31.0.0/16", "169.254.0.2"]);
    assert_cache_matches(&client, nb).await;
    assert!(matches!(
        events.recv().await.unwrap(),
        CacheEvent::Changed(_)
    ));

    let steps: &[&[&str]] = &[
        &[
            "add",
            "Logical_Router_Port",
            "vpc-1-vpc-2",
            "networks",
            "\"fd00::1/126\"",
        ],
        &[
            "remove",
            "Logical_Router_Port",
            "vpc-1-vpc-2",
            "networks",
            "\"169.254.0.1/30\"",
        ],
        &[
            "set",
            "Logical_Router_Port",
            "vpc-1-vpc-2",
            "external_ids:a=1",
            "external_ids:b=2",
            &format!("external_ids:\"{OWNER}\"=p9"),
        ],
        &[
            "set",
            "Logical_Router_Port",
            "vpc-1-vpc-2",
            "external_ids:a=3",
        ],
        &[
            "remove",
            "Logical_Router_Port",
            "vpc-1-vpc-2",
            "external_ids",
            "b",
        ],
        &[
            "set",
            "Logical_Router_Port",
            "vpc-1-vpc-2",
            "peer=other",
            "enabled=false",
            "mac=\"0a:00:00:00:aa:09\"",
        ],
        &["clear", "Logical_Router_Port", "vpc-1-vpc-2", "peer"],
        &["set", "Logical_Router_Port", "vpc-1-vpc-2", "name=renamed"],
        &[
            "set",
            "Logical_Router",
            "vpc-1",
            "options:always_learn_from_arp_request=true",
        ],
        &["lr-route-add", "vpc-1", "10.0.0.0/16", "169.254.0.9"],
        &["lr-route-del", "vpc-1", "172.31.0.0/16"],
        &["create", "Logical_Router", "name=vpc-1"],
    ];
    for step in steps {
        srv.nbctl(step);
        assert_cache_matches(&client, nb).await;
    }
    {
        let c = client.cache();
        assert_eq!(
            c.router_by_name("vpc-1").len(),
            2,
            "router names are not unique"
        );
        assert!(c.port_by_name("vpc-1-vpc-2").is_none());
        let p = c.port_by_name("renamed").unwrap();
        assert_eq!(*p.networks, ["fd00::1/126"]);
        assert_eq!(p.peer, None);
        assert_eq!(p.enabled, Some(false));
        assert_eq!(p.external_ids.get("a"), Some("3"));
        assert!(!p.external_ids.contains_key("b"));
        assert_eq!(c.rows_with_external_id(OWNER, "p9").len(), 1);
    }

    srv.nbctl(&["lrp-del", "renamed"]);
    assert_cache_matches(&client, nb).await;
    assert!(client.cache().rows_with_external_id(OWNER, "p9").is_empty());
}
