//! Integration tests of `ovn_peerd::ovsdb` against real `ovsdb-server`s (and fake ones for
//! malformed input). No sleeps-and-hope: every wait polls state or cache with a deadline.

mod basic;
mod busy;
mod cluster;
mod differential;
mod diverge;
mod leader;
mod malformed;
mod reconnect;
mod replica;
mod scale;
mod schema;
mod shutdown;
mod tls;

use std::time::Duration;

use ovn_peerd::ovsdb::cache::{Types, UpdateFormat};
use ovn_peerd::ovsdb::schema::DatabaseSchema;
use ovn_peerd::ovsdb::{
    Client, ClientConfig, Datum, LogicalRouter, LogicalRouterPort, LogicalRouterStaticRoute, Model,
    Mutation, NbCache, Operation, Row, Table,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::nb::NB_SCHEMA;

pub const T: Duration = Duration::from_secs(20);
/// How long writes may take to resume after a cluster's leader is killed, counted from the
/// moment a new leader reports itself: on a loaded machine (the whole suite on 2 cores) the
/// new leader can lose its term again, and every round of the remotes that fails meanwhile
/// doubles the client's pause, up to `backoff_max` (8 s, as ovsdb-cs): two failed rounds
/// and a TLS handshake under load passed `T` once in a CI run (alone the test takes 2 s).
pub const FAILOVER: Duration = Duration::from_secs(60);
pub const OWNER: &str = "ovn-peerd:peering";
pub const DB: &str = "OVN_Northbound";

pub fn config(remotes: &str) -> ClientConfig {
    let mut c = ClientConfig::new(remotes, DB)
        .unwrap()
        .with_owner_key(OWNER);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(500);
    c.probe_interval = Some(Duration::from_secs(2));
    c.wait_connected = Duration::from_secs(15);
    c
}

pub async fn connect(remotes: &str) -> Client {
    let c = Client::start(config(remotes)).unwrap();
    c.wait_synced(T).await.unwrap();
    c
}

pub fn row(cols: &[(&str, Datum)]) -> Row {
    cols.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn insert_router(name: &str, uuid: Option<Uuid>, owner: Option<&str>) -> Operation {
    let ids = match owner {
        Some(o) => Datum::map([(OWNER, o)]),
        None => Datum::empty_map(),
    };
    Operation::Insert {
        table: "Logical_Router".into(),
        row: row(&[("name", name.into()), ("external_ids", ids)]),
        uuid_name: None,
        uuid,
    }
}

/// Inserts a port and references it from the router in one transaction.
pub fn add_port(router: Uuid, port: &LogicalRouterPort) -> Vec<Operation> {
    vec![
        Operation::Insert {
            table: "Logical_Router_Port".into(),
            row: port.to_row(),
            uuid_name: Some("newport".into()),
            uuid: None,
        },
        Operation::Mutate {
            table: "Logical_Router".into(),
            conditions: vec![ovn_peerd::ovsdb::Condition::uuid(router)],
            mutations: vec![Mutation::insert("ports", Datum::named_uuid("newport"))],
        },
    ]
}

pub fn types() -> Types {
    let text = std::fs::read_to_string(NB_SCHEMA).unwrap();
    let s = DatabaseSchema::parse(&serde_json::from_str(&text).unwrap()).unwrap();
    Table::ALL
        .iter()
        .map(|t| (*t, s.check(t.name(), t.columns()).unwrap()))
        .collect()
}

/// What the server holds, read with `ovn-nbctl` and decoded like an initial monitor dump.
pub fn server_cache(nbctl: impl Fn(&[&str]) -> String) -> NbCache {
    let mut updates = serde_json::Map::new();
    for t in Table::ALL {
        let cols: Vec<&str> = t.columns().iter().map(|c| c.name).collect();
        let arg = format!("--columns=_uuid,{}", cols.join(","));
        let out = nbctl(&["--format=json", "--data=json", &arg, "list", t.name()]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut rows = serde_json::Map::new();
        for r in v["data"].as_array().unwrap() {
            let r = r.as_array().unwrap();
            let uuid = r[0][1].as_str().unwrap().to_owned();
            let obj: serde_json::Map<String, Value> = cols
                .iter()
                .zip(&r[1..])
                .map(|(c, v)| (c.to_string(), v.clone()))
                .collect();
            rows.insert(uuid, json!({ "initial": obj }));
        }
        updates.insert(t.name().to_owned(), Value::Object(rows));
    }
    let mut c = NbCache::new(Some(OWNER.into()));
    c.apply(
        &types(),
        UpdateFormat::V2,
        &Value::Object(updates).to_string(),
    )
    .unwrap();
    c
}

fn sorted<M: Model>(it: impl Iterator<Item = M>) -> Vec<M> {
    let mut v: Vec<M> = it.collect();
    v.sort_by_key(|r| r.uuid());
    v
}

/// Field-by-field equality of two caches (all three tables).
pub fn same(a: &NbCache, b: &NbCache) -> bool {
    sorted::<LogicalRouter>(a.routers().cloned()) == sorted(b.routers().cloned())
        && sorted::<LogicalRouterPort>(a.ports().cloned()) == sorted(b.ports().cloned())
        && sorted::<LogicalRouterStaticRoute>(a.static_routes().cloned())
            == sorted(b.static_routes().cloned())
}

/// Waits until the client's cache equals what `nbctl` reads from the server.
pub async fn assert_cache_matches(client: &Client, nbctl: impl Fn(&[&str]) -> String) {
    let server = server_cache(nbctl);
    let r = client.wait_for(T, |c| same(c, &server)).await;
    if r.is_err() {
        let c = client.cache();
        panic!(
            "cache differs from server\ncache routers: {:?}\nserver routers: {:?}\ncache ports: {:?}\nserver ports: {:?}",
            sorted::<LogicalRouter>(c.routers().cloned()),
            sorted::<LogicalRouter>(server.routers().cloned()),
            sorted::<LogicalRouterPort>(c.ports().cloned()),
            sorted::<LogicalRouterPort>(server.ports().cloned()),
        );
    }
}
