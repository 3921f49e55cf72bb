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
    let t = Instant::now();
    let copy = cache.clone();
    report("snapshot clone", t);
    drop(copy);
    drop(cache);
    report("cache dropped", Instant::now());
}
