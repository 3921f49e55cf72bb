//! Where the NB replica's memory goes: loads a saved initial dump (the raw `monitor_cond`
//! reply, as `ovsdb-server` sent it) into an [`NbCache`] and prints the heap bytes live after
//! each step, counted by a global allocator wrapper (exact, no sampling). The reply is parsed
//! as the client does: the envelope only, then the rows straight from the bytes into the
//! replica (no JSON tree):
//!
//! ```sh
//! cargo run --release --example replica_footprint -- /usr/share/ovn/ovn-nb.ovsschema dump.json
//! ```
//! The bench's restart phase saves such a dump with `--keep` (`scale/raw-dump.json`).
//!
//! Then the echo of one peering's transaction (a port and a route inserted, their router's
//! `ports` and `static_routes` modified), applied 2,000 times as the client applies an update:
//! a copy of the snapshot, the update applied to it, the copy published and the replaced
//! snapshot dropped. Prints the mean time and allocations per echo; then the same for echoes
//! that each add one port to a hub router already holding 10,000.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Instant;

use ovn_peerd::ovsdb::cache::{Types, UpdateFormat};
use ovn_peerd::ovsdb::jsonrpc::{decode_incoming, Incoming};
use ovn_peerd::ovsdb::schema::DatabaseSchema;
use ovn_peerd::ovsdb::{NbCache, Table};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn report(step: &str, t: Instant) {
    println!(
        "{step:<44} live {:>8.1} MB  peak {:>8.1} MB  allocations {:>10}  {:>6.3} s",
        LIVE.load(Ordering::Relaxed) as f64 / 1e6,
        PEAK.load(Ordering::Relaxed) as f64 / 1e6,
        CALLS.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    );
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    CALLS.store(0, Ordering::Relaxed);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, schema, dump] = args.as_slice() else {
        eprintln!("usage: replica_footprint SCHEMA.ovsschema DUMP.json");
        std::process::exit(2);
    };
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(schema).expect("schema")).expect("schema JSON");
    let schema = DatabaseSchema::parse(&schema).expect("schema");
    let types: Types = Table::ALL
        .iter()
        .map(|t| (*t, schema.check(t.name(), t.columns()).expect("columns")))
        .collect();
    report("schema", Instant::now());

    let t = Instant::now();
    let bytes = std::fs::read(dump).expect("dump");
    report(&format!("dump read ({} bytes)", bytes.len()), t);
    let t = Instant::now();
    let Ok(Incoming::Response {
        result: Ok(result), ..
    }) = decode_incoming(&bytes)
    else {
        panic!("not a reply")
    };
    report("envelope decoded (payload left raw)", t);
    let t = Instant::now();
    let mut cache = NbCache::new(Some("ovn-peerd:peering".into()));
    let changes = cache
        .apply(&types, UpdateFormat::V2, result.get())
        .expect("apply");
    report(
        &format!("parsed straight into the replica ({} rows)", cache.len()),
        t,
    );
    drop(changes);
    drop(bytes);
    report("raw bytes and change list dropped", Instant::now());
    echoes(&types, &mut cache);
    let t = Instant::now();
    let copy = cache.clone();
    report("snapshot clone", t);
    drop(copy);
    drop(cache);
    report("cache dropped", Instant::now());
}

/// One peering's echo, applied as `state::Shared::update_replica` does, [`ECHOES`] times.
fn echoes(types: &Types, cache: &mut NbCache) {
    const ECHOES: u128 = 2000;
    // A different router and peering each time, as 2,000 peerings created one after another.
    let routers: Vec<uuid::Uuid> = cache.routers().map(|r| r.uuid).collect();
    if routers.is_empty() {
        println!("no router: no echo measured");
        return;
    }
    let texts: Vec<String> = (0..ECHOES)
        .map(|i| {
            let router = routers[(i as usize * 7919) % routers.len()];
            let ids = format!(
                r#"["map", [["ovn-peerd:owner", "ovn-peerd"], ["ovn-peerd:peering", "echo-{i}"],
                ["ovn-peerd:generation", "1"], ["ovn-peerd:side", "local"],
                ["ovn-peerd:instance", "00000000-0000-0000-0000-000000000001"]]]"#
            );
            let (p, r) = (
                uuid::Uuid::from_u128(0xe0 << 64 | i),
                uuid::Uuid::from_u128(0xe1 << 64 | i),
            );
            format!(
                r#"{{"Logical_Router_Port": {{"{p}": {{"insert": {{"name": "echo-{i}",
                    "mac": "0a:00:00:00:00:01", "networks": "169.254.255.1/30",
                    "peer": "echo-{i}-peer", "external_ids": {ids}}}}}}},
                "Logical_Router_Static_Route": {{"{r}": {{"insert": {{
                    "ip_prefix": "10.200.0.0/16", "nexthop": "169.254.255.2",
                    "output_port": "echo-{i}", "external_ids": {ids}}}}}}},
                "Logical_Router": {{"{router}": {{"modify": {{"ports": ["uuid", "{p}"],
                    "static_routes": ["uuid", "{r}"]}}}}}}}}"#
            )
        })
        .collect();
    report("echo texts built", Instant::now());
    let mut current = std::sync::Arc::new(cache.clone());
    let t = Instant::now();
    for text in &texts {
        let mut next = NbCache::clone(&current);
        next.apply(types, UpdateFormat::V2, text).expect("echo");
        current = std::sync::Arc::new(next);
    }
    let took = t.elapsed();
    let calls = CALLS.load(Ordering::Relaxed);
    report(&format!("{ECHOES} echoes applied"), t);
    println!(
        "per echo: {:.1} us, {:.0} allocations",
        took.as_secs_f64() * 1e6 / ECHOES as f64,
        calls as f64 / ECHOES as f64
    );
    // The same on one hub router holding 10,000 ports: each echo's diff on its `ports`.
    let hub = routers[0];
    let many: Vec<String> = (0..10_000u128)
        .map(|i| format!(r#"["uuid", "{}"]"#, uuid::Uuid::from_u128(0xab << 64 | i)))
        .collect();
    let grow = format!(
        r#"{{"Logical_Router": {{"{hub}": {{"modify": {{"ports": ["set", [{}]]}}}}}}}}"#,
        many.join(",")
    );
    let mut next = NbCache::clone(&current);
    next.apply(types, UpdateFormat::V2, &grow).expect("hub");
    current = std::sync::Arc::new(next);
    let texts: Vec<String> = (0..ECHOES)
        .map(|i| {
            let p = uuid::Uuid::from_u128(0xe2 << 64 | i);
            format!(
                r#"{{"Logical_Router": {{"{hub}": {{"modify": {{"ports": ["uuid", "{p}"]}}}}}}}}"#
            )
        })
        .collect();
    CALLS.store(0, Ordering::Relaxed);
    let t = Instant::now();
    for text in &texts {
        let mut next = NbCache::clone(&current);
        next.apply(types, UpdateFormat::V2, text).expect("hub echo");
        current = std::sync::Arc::new(next);
    }
    let took = t.elapsed();
    println!(
        "per echo on a hub router of 10,000 ports: {:.1} us, {:.0} allocations",
        took.as_secs_f64() * 1e6 / ECHOES as f64,
        CALLS.load(Ordering::Relaxed) as f64 / ECHOES as f64
    );
    drop(current);
}
