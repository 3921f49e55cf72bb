//! What the NB replica holds per row (issue 14, target 4): builds an [`NbCache`] from a
//! synthetic monitor dump shaped like the peering bench's `--large` phase (N disjoint peerings
//! on 2N routers, each router with its subnet port, ovn-peerd's peer port and route) and reads
//! jemalloc's per-thread counters (usable bytes: size classes included) around each table's
//! update, then around a snapshot's copy-on-write modify of every peer port.
//!
//! `cargo run --release --example replica_bytes [-- N]` (N peerings, default 20,000; a debug
//! build counts the same bytes). Unlike `replica_footprint` (requested bytes of a saved dump, a
//! counting allocator), this needs no dump and counts what jemalloc hands out: size classes
//! included, per kind of row.

fn main() {
    #[cfg(feature = "jemalloc")]
    measure::run();
    #[cfg(not(feature = "jemalloc"))]
    {
        eprintln!("replica_bytes reads jemalloc's counters: build it with the feature `jemalloc`");
        std::process::exit(2);
    }
}

/// Everything reads jemalloc's counters: built with the feature `jemalloc` (the default) only.
#[cfg(feature = "jemalloc")]
mod measure {
    use std::collections::HashMap;
    use std::ffi::CStr;

    use ovn_peerd::ovsdb::cache::{Types, UpdateFormat};
    use ovn_peerd::ovsdb::schema::DatabaseSchema;
    use ovn_peerd::ovsdb::{Changes, Model, NbCache, RowNames, Table};
    use ovn_peerd::peering::{
        GENERATION_KEY, INSTANCE_KEY, OWNER_KEY, OWNER_VALUE, PEERING_KEY, SIDE_KEY,
    };
    use serde_json::{json, Value};
    use uuid::Uuid;

    #[global_allocator]
    static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    pub fn run() {
        let n: usize = std::env::args()
            .skip(1)
            .find_map(|a| a.parse().ok())
            .unwrap_or(20_000);
        let types = types();
        let mut cache = NbCache::new(Some(PEERING_KEY.to_owned()));
        let instance = Uuid::from_u128(0x1234_5678).to_string();
        println!("replica of {n} disjoint peerings ({} routers)", 2 * n);
        println!(
            "{:<34} {:>9} {:>12} {:>10}",
            "rows", "count", "bytes", "bytes/row"
        );
        let kinds: [(&str, Table, RowFn); 4] = [
            (
                "Logical_Router (+ name index)",
                Table::LogicalRouter,
                router,
            ),
            (
                "subnet port (+ name index)",
                Table::LogicalRouterPort,
                lan_port,
            ),
            (
                "peer port (+ name, owner index)",
                Table::LogicalRouterPort,
                peer_port,
            ),
            (
                "static route (+ owner index)",
                Table::LogicalRouterStaticRoute,
                route,
            ),
        ];
        let mut total = 0;
        for (what, table, row) in kinds {
            let text = update(
                table,
                "initial",
                (0..n).flat_map(|k| [0, 1].map(|side| row(k, side, &instance))),
            );
            let before = net_allocated();
            cache
                .apply(&types, UpdateFormat::V2, &text)
                .expect("synthetic dump applies");
            let bytes = net_allocated() - before;
            total += bytes;
            print_row(what, 2 * n, bytes);
        }
        print_row("the replica", cache.len(), total);

        // A snapshot keeps the old rows: a modify of every peer port (a new generation) in the
        // live copy costs the new rows and the copied paths.
        let snapshot = cache.clone();
        let modify = json!({"external_ids": ["map", [[GENERATION_KEY, "2"]]]});
        let text = update(
            Table::LogicalRouterPort,
            "modify",
            (0..n).flat_map(|k| [0, 1].map(|side| (peer_port_uuid(k, side), modify.clone()))),
        );
        let before = net_allocated();
        let t = std::time::Instant::now();
        let changes = cache
            .apply(&types, UpdateFormat::V2, &text)
            .expect("modify");
        let applied = t.elapsed();
        print_row(
            "modify of every peer port, snapshot",
            2 * n,
            net_allocated() - before,
        );
        // What the client adds for its listeners: what each changed row was before (its bytes
        // held while the listeners hold the event), and what naming each change as it is now
        // too would add (the reader did that for every change before the listener read it
        // for the foreign ones only).
        let before = net_allocated();
        let t = std::time::Instant::now();
        let named = Changes::read(&snapshot, changes);
        let read = t.elapsed();
        print_row(
            "its changes, named as they were",
            named.len(),
            net_allocated() - before,
        );
        let t = std::time::Instant::now();
        let now: Vec<RowNames> = named
            .iter()
            .map(|(c, _)| RowNames::read(&cache, c))
            .collect();
        let both = t.elapsed();
        println!(
            "that update applied in {:.0} ms; its {} changes named as they were in {:.0} ms, \
             as they are too in {:.0} ms more",
            applied.as_secs_f64() * 1e3,
            named.len(),
            read.as_secs_f64() * 1e3,
            both.as_secs_f64() * 1e3
        );
        std::hint::black_box((&named, &now));
        drop(snapshot);
        std::hint::black_box(&cache);
    }

    /// Row `side` of peering `k`, given the deployment's id: its uuid and its columns.
    type RowFn = fn(usize, usize, &str) -> (Uuid, Value);

    fn print_row(what: &str, count: usize, bytes: i64) {
        println!(
            "{what:<34} {count:>9} {:>9.1} MB {:>10.0}",
            bytes as f64 / 1e6,
            bytes as f64 / count.max(1) as f64
        );
    }

    /// A `table-updates` text of `op` (`initial`, `modify`) rows in the order given: by peering, so the rows arrive
    /// in no order of their (hashed) uuids, as in `ovsdb-server`'s dumps (a sorted insert would
    /// leave the replica's B-tree nodes half full).
    fn update(table: Table, op: &str, rows: impl Iterator<Item = (Uuid, Value)>) -> String {
        let rows: Vec<String> = rows
            .map(|(uuid, r)| format!("\"{uuid}\":{{\"{op}\":{r}}}"))
            .collect();
        format!("{{\"{}\":{{{}}}}}", table.name(), rows.join(","))
    }

    fn vpc(k: usize, side: usize) -> usize {
        2 * k + 1 + side
    }

    fn row_uuid(kind: &str, k: usize, side: usize) -> Uuid {
        Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{kind}-{}", vpc(k, side)).as_bytes(),
        )
    }
    fn router_uuid(k: usize, side: usize) -> Uuid {
        row_uuid("router", k, side)
    }
    fn lan_uuid(k: usize, side: usize) -> Uuid {
        row_uuid("lan", k, side)
    }
    fn peer_port_uuid(k: usize, side: usize) -> Uuid {
        row_uuid("peer", k, side)
    }
    fn route_uuid(k: usize, side: usize) -> Uuid {
        row_uuid("route", k, side)
    }

    fn net24(i: usize) -> String {
        format!("{}.{}.{}", 10 + (i >> 16), (i >> 8) & 0xff, i & 0xff)
    }

    fn mac(first: u8, i: usize) -> String {
        format!(
            "{first:02x}:00:00:{:02x}:{:02x}:{:02x}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        )
    }

    fn uuid_set(uuids: &[Uuid]) -> Value {
        json!([
            "set",
            uuids
                .iter()
                .map(|u| json!(["uuid", u.to_string()]))
                .collect::<Vec<_>>()
        ])
    }

    fn router(k: usize, side: usize, _: &str) -> (Uuid, Value) {
        let r = json!({"name": format!("vpc-{}", vpc(k, side)),
        "ports": uuid_set(&[lan_uuid(k, side), peer_port_uuid(k, side)]),
        "static_routes": uuid_set(&[route_uuid(k, side)])});
        (router_uuid(k, side), r)
    }

    fn lan_port(k: usize, side: usize, _: &str) -> (Uuid, Value) {
        let i = vpc(k, side);
        let r = json!({"name": format!("vpc-{i}-lan"), "mac": mac(0x0e, i),
        "networks": format!("{}.1/24", net24(i))});
        (lan_uuid(k, side), r)
    }

    /// ovn-peerd's markers, as it writes them.
    fn markers(k: usize, side: usize, instance: &str) -> Value {
        json!([
            "map",
            [
                [OWNER_KEY, OWNER_VALUE],
                [PEERING_KEY, format!("p-{k}")],
                [GENERATION_KEY, "1"],
                [SIDE_KEY, if side == 0 { "local" } else { "remote" }],
                [INSTANCE_KEY, instance],
            ]
        ])
    }

    fn port_name(k: usize, side: usize) -> String {
        format!("vpc-{}-vpc-{}", vpc(k, side), vpc(k, 1 - side))
    }

    fn peer_port(k: usize, side: usize, instance: &str) -> (Uuid, Value) {
        let r = json!({"name": port_name(k, side), "mac": mac(0x0a, 2 * k + 1 + side),
        "networks": format!("169.254.0.{}/30", 1 + side), "peer": port_name(k, 1 - side),
        "external_ids": markers(k, side, instance)});
        (peer_port_uuid(k, side), r)
    }

    fn route(k: usize, side: usize, instance: &str) -> (Uuid, Value) {
        let r = json!({"ip_prefix": format!("{}.0/24", net24(vpc(k, 1 - side))),
        "nexthop": format!("169.254.0.{}", 2 - side), "policy": "dst-ip",
        "output_port": port_name(k, side), "external_ids": markers(k, side, instance)});
        (route_uuid(k, side), r)
    }

    fn types() -> Types {
        let text = std::fs::read_to_string(ovn_peerd_test_support::ovsdb::NB_SCHEMA)
            .expect("the NB schema (OVN installed)");
        let schema = DatabaseSchema::parse(&serde_json::from_str(&text).expect("schema JSON"))
            .expect("NB schema");
        let columns: HashMap<Table, &[_]> = [
            (
                Table::LogicalRouter,
                ovn_peerd::ovsdb::LogicalRouter::COLUMNS,
            ),
            (
                Table::LogicalRouterPort,
                ovn_peerd::ovsdb::LogicalRouterPort::COLUMNS,
            ),
            (
                Table::LogicalRouterStaticRoute,
                ovn_peerd::ovsdb::LogicalRouterStaticRoute::COLUMNS,
            ),
        ]
        .into();
        columns
            .into_iter()
            .map(|(t, c)| (t, schema.check(t.name(), c).expect("modelled columns")))
            .collect()
    }

    /// Bytes this thread allocated and has not freed (jemalloc's usable sizes).
    fn net_allocated() -> i64 {
        read(c"thread.allocated") as i64 - read(c"thread.deallocated") as i64
    }

    fn read(name: &CStr) -> u64 {
        let mut v: u64 = 0;
        let mut len = std::mem::size_of::<u64>();
        // SAFETY: `name` is a NUL-terminated jemalloc statistic of type u64; `v` and `len` are
        // valid for writes of that size; nothing is written into jemalloc.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&raw mut v).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        v
    }
}
