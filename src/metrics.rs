//! Every metric of ovn-peerd: its name, its HELP text, the exporter that serves
//! `/metrics`, and the per-RPC layer.
//!
//! Call sites record through the `metrics` facade with the name constants below, so a
//! name exists in one place and [`describe`] gives each one its HELP; the README's
//! metrics table lists the same set. Every name starts with `ovn_peerd_`, and every
//! label takes a bounded set of values (a gRPC path we do not serve is `unknown`).

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use prost::Message;
use tower::{Layer, Service};

/// RPCs handled, by `method` and `code`.
pub const GRPC_REQUESTS_TOTAL: &str = "ovn_peerd_grpc_requests_total";
/// RPC latency, by `method` and `code`.
pub const GRPC_REQUEST_DURATION_SECONDS: &str = "ovn_peerd_grpc_request_duration_seconds";
/// Postgres statement latency, by `operation` and `outcome`.
pub const DB_QUERY_DURATION_SECONDS: &str = "ovn_peerd_db_query_duration_seconds";
/// 1 while Postgres answers the health probe.
pub const POSTGRES_UP: &str = "ovn_peerd_postgres_up";
/// 1 while the NB connection is up and its cache in sync.
pub const NORTHBOUND_UP: &str = "ovn_peerd_northbound_up";
/// Calls refused at once because `--max-in-flight` calls were running (load shedding).
pub const RPC_SHED_TOTAL: &str = "ovn_peerd_rpc_shed_total";
/// CreatePeering batches whose insert failed and whose creates went one at a time, by
/// `reason` (`name`, `pair`, `request_id`, `port`, `link`, `conflict`).
pub const CREATE_BATCH_FALLBACKS_TOTAL: &str = "ovn_peerd_create_batch_fallbacks_total";
/// Worker passes, by `result` and `scope` (`full`, `narrow`).
pub const RECONCILER_PASSES_TOTAL: &str = "ovn_peerd_reconciler_passes_total";
/// Peerings a worker pass found exactly in NB (compared in place, nothing planned), by `scope`.
pub const RECONCILER_IN_SYNC_TOTAL: &str = "ovn_peerd_reconciler_in_sync_total";
/// Worker pass duration.
pub const RECONCILER_PASS_SECONDS: &str = "ovn_peerd_reconciler_pass_seconds";
/// NB rows the worker wrote, by `kind`.
pub const NB_ROWS_WRITTEN_TOTAL: &str = "ovn_peerd_nb_rows_written_total";
/// The worker's NB transactions, by `outcome` (pipelined: includes NB running the ones before).
pub const NB_TRANSACTION_SECONDS: &str = "ovn_peerd_nb_transaction_seconds";
/// NB writes refused for one peering, by `kind`.
pub const RECONCILER_ERRORS_TOTAL: &str = "ovn_peerd_reconciler_errors_total";
/// Stored peerings, by `state`.
pub const PEERINGS: &str = "ovn_peerd_peerings";
/// Desired change committed → NB confirmed.
pub const CONVERGENCE_DELAY_SECONDS: &str = "ovn_peerd_convergence_delay_seconds";
/// 1 on the replica holding the writer lock.
pub const WRITER_LOCK_HELD: &str = "ovn_peerd_writer_lock_held";
/// 1 while the mass-deletion brake holds a worker pass back.
pub const MASS_DELETION_BLOCKED: &str = "ovn_peerd_mass_deletion_blocked";
/// Every OVSDB transaction of the client, by `outcome`.
pub const OVSDB_TRANSACTION_SECONDS: &str = "ovn_peerd_ovsdb_transaction_seconds";
/// OVSDB sessions that ended and were retried, by `reason`.
pub const OVSDB_RECONNECTS_TOTAL: &str = "ovn_peerd_ovsdb_reconnects_total";
/// Full re-dumps forced because the replica could not be trusted, by `reason`
/// (`diverged`, `malformed`).
pub const OVSDB_RESYNCS_TOTAL: &str = "ovn_peerd_ovsdb_resyncs_total";
/// Rows in the NB replica.
pub const OVSDB_CACHE_ROWS: &str = "ovn_peerd_ovsdb_cache_rows";
/// The heap after the last trim or pass, by `state` (`in_use`; glibc: `free`, `mmapped`;
/// jemalloc: `resident`, `retained`).
pub const HEAP_BYTES: &str = "ovn_peerd_heap_bytes";
/// Heap trims (free memory handed back to the system), by `after` (`dump`, `update`, `pass`).
pub const HEAP_TRIMS_TOTAL: &str = "ovn_peerd_heap_trims_total";
/// How long a heap trim held the allocator (glibc `malloc_trim`, jemalloc purge).
pub const HEAP_TRIM_SECONDS: &str = "ovn_peerd_heap_trim_seconds";

/// Re-reads of a watched file (`file` = `tls` or `policy`), by `result` (`ok`, `error`).
pub const FILE_RELOADS_TOTAL: &str = "ovn_peerd_file_reloads_total";
/// 1 while a watched file (`file`) on disk is refused and the last good version serves.
pub const FILE_RELOAD_STALE: &str = "ovn_peerd_file_reload_stale";

/// WatchPeerings streams open on this replica.
pub const WATCH_STREAMS: &str = "ovn_peerd_watch_streams";
/// WatchPeerings streams ended, by `reason` (`client`, `fell_behind`, `max_age`, `out_of_range`,
/// `shutting_down`, `database`).
pub const WATCH_ENDED_TOTAL: &str = "ovn_peerd_watch_ended_total";
/// Change-log rows skipped because this version cannot decode them.
pub const WATCH_UNDECODABLE_CHANGES_TOTAL: &str = "ovn_peerd_watch_undecodable_changes_total";

/// Every metric name, for the test that checks each one is described.
pub const ALL: &[&str] = &[
    GRPC_REQUESTS_TOTAL,
    GRPC_REQUEST_DURATION_SECONDS,
    DB_QUERY_DURATION_SECONDS,
    POSTGRES_UP,
    NORTHBOUND_UP,
    RPC_SHED_TOTAL,
    CREATE_BATCH_FALLBACKS_TOTAL,
    RECONCILER_PASSES_TOTAL,
    RECONCILER_IN_SYNC_TOTAL,
    RECONCILER_PASS_SECONDS,
    NB_ROWS_WRITTEN_TOTAL,
    NB_TRANSACTION_SECONDS,
    RECONCILER_ERRORS_TOTAL,
    PEERINGS,
    CONVERGENCE_DELAY_SECONDS,
    WRITER_LOCK_HELD,
    MASS_DELETION_BLOCKED,
    OVSDB_TRANSACTION_SECONDS,
    OVSDB_RECONNECTS_TOTAL,
    OVSDB_RESYNCS_TOTAL,
    OVSDB_CACHE_ROWS,
    HEAP_BYTES,
    HEAP_TRIMS_TOTAL,
    HEAP_TRIM_SECONDS,
    FILE_RELOADS_TOTAL,
    FILE_RELOAD_STALE,
    WATCH_STREAMS,
    WATCH_ENDED_TOTAL,
    WATCH_UNDECODABLE_CHANGES_TOTAL,
];

/// The `method` label of a path that is not one of our RPCs.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Buckets for latencies, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the global recorder and serves `/metrics` on `addr`.
///
/// The recorder is process-wide: a second call (tests start several servers in
/// one process) is reported and otherwise ignored.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install()?;
    describe();
    Ok(())
}

/// HELP (and unit) of every metric in [`ALL`].
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        GRPC_REQUESTS_TOTAL,
        "gRPC requests handled, by method (unknown for a path we do not serve) and status code"
    );
    describe_histogram!(
        GRPC_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "gRPC request latency, by method and status code"
    );
    describe_histogram!(
        DB_QUERY_DURATION_SECONDS,
        Unit::Seconds,
        "Postgres statement latency, by store operation and outcome"
    );
    describe_gauge!(
        POSTGRES_UP,
        "1 while Postgres answers the health probe, else 0"
    );
    describe_gauge!(
        NORTHBOUND_UP,
        "1 while the OVN NB connection is up and its replica in sync, else 0"
    );
    describe_counter!(
        RPC_SHED_TOTAL,
        "PeeringService calls refused with RESOURCE_EXHAUSTED because --max-in-flight calls were running"
    );
    describe_counter!(
        CREATE_BATCH_FALLBACKS_TOTAL,
        "CreatePeering batches whose insert failed on a constraint or lost to a concurrent \
         transaction and whose creates then went one at a time, by reason"
    );
    describe_counter!(
        RECONCILER_PASSES_TOTAL,
        "Convergence worker passes, by result and scope (full: every peering; narrow: the \
         peerings of the VPCs a change touched)"
    );
    describe_counter!(
        RECONCILER_IN_SYNC_TOTAL,
        "Peerings a convergence worker pass found exactly in OVN NB (compared in place, not \
         copied or planned), by scope"
    );
    describe_histogram!(
        RECONCILER_PASS_SECONDS,
        Unit::Seconds,
        "Duration of one convergence worker pass"
    );
    describe_counter!(
        NB_ROWS_WRITTEN_TOTAL,
        "OVN NB rows the worker inserted, updated or deleted, by kind"
    );
    describe_histogram!(
        NB_TRANSACTION_SECONDS,
        Unit::Seconds,
        "Latency of the worker's OVN NB transactions, by outcome: from the send (waiting for a \
         usable connection included) to the reply being handled; with up to 4 transactions \
         pipelined, that includes NB running the ones sent before it"
    );
    describe_counter!(
        RECONCILER_ERRORS_TOTAL,
        "OVN NB writes refused for a peering, by kind"
    );
    describe_gauge!(
        PEERINGS,
        "Stored peerings by state, counted in Postgres after each worker pass"
    );
    describe_histogram!(
        CONVERGENCE_DELAY_SECONDS,
        Unit::Seconds,
        "Time from a desired change committed in Postgres to its rows confirmed in OVN NB"
    );
    describe_gauge!(
        WRITER_LOCK_HELD,
        "1 on the replica holding the writer lock (running the worker), else 0"
    );
    describe_gauge!(
        MASS_DELETION_BLOCKED,
        "1 while the worker holds back a pass that would delete more than half of this \
         deployment's NB rows (start with --allow-mass-deletion to let it), else 0"
    );
    describe_histogram!(
        OVSDB_TRANSACTION_SECONDS,
        Unit::Seconds,
        "Latency of every OVSDB transaction sent by the client, by outcome: from the request \
         written to the reply (transactions pipelined before it included); a transaction that \
         could not be sent counts its wait for a usable connection"
    );
    describe_counter!(
        OVSDB_RECONNECTS_TOTAL,
        "OVSDB sessions that ended and were retried, by reason"
    );
    describe_counter!(
        OVSDB_RESYNCS_TOTAL,
        "Full re-dumps of NB forced because the replica could not be trusted (an update that \
         diverged from it, was malformed or panicked its handler), by reason"
    );
    describe_gauge!(
        OVSDB_CACHE_ROWS,
        "Rows in the in-memory replica of OVN NB (routers, router ports, static routes)"
    );
    describe_counter!(
        FILE_RELOADS_TOTAL,
        "Re-reads of a changed watched file (tls: certificate, key, client CA; policy), by result"
    );
    describe_gauge!(
        FILE_RELOAD_STALE,
        "1 while a watched file (tls, policy) on disk is refused and its last good version is used"
    );
    describe_gauge!(
        HEAP_BYTES,
        Unit::Bytes,
        "The heap after its last trim or large pass, by state: in_use (held by the program); glibc: free (kept by the allocator, resident where not trimmed), mmapped (of in_use, blocks mapped on their own); jemalloc: resident (pages mapped and resident), retained (address space kept, not resident)"
    );
    describe_histogram!(
        HEAP_TRIM_SECONDS,
        Unit::Seconds,
        "How long each heap trim took; other threads' allocations wait on it (glibc malloc_trim holds each arena's lock)"
    );
    describe_counter!(
        HEAP_TRIMS_TOTAL,
        "Heap trims handing free memory back to the system, by what they follow (dump, update, pass)"
    );
    describe_gauge!(WATCH_STREAMS, "WatchPeerings streams open on this replica");
    describe_counter!(
        WATCH_ENDED_TOTAL,
        "WatchPeerings streams ended, by reason (client, fell_behind, max_age, out_of_range, shutting_down, database)"
    );
    describe_counter!(
        WATCH_UNDECODABLE_CHANGES_TOTAL,
        "Change-log rows WatchPeerings skipped because this version cannot decode them (logged as errors)"
    );
}

/// Paths (`/package.Service/Method`) of every RPC we serve: our API, health and
/// reflection, read from their descriptors so a new RPC is known without an edit here.
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .filter_map(|bytes| prost_types::FileDescriptorSet::decode(bytes).ok())
    .flat_map(|set| set.file)
    .flat_map(|file| {
        let package = file.package().to_owned();
        file.service.into_iter().flat_map(move |service| {
            let prefix = format!("/{package}.{}/", service.name());
            service
                .method
                .into_iter()
                .map(move |m| format!("{prefix}{}", m.name()))
        })
    })
    .collect()
});

/// The `method` label of a request path: the path of an RPC we serve, else
/// [`UNKNOWN_METHOD`], so that junk paths cannot grow the label set.
pub fn method_label(path: &str) -> &'static str {
    match KNOWN_METHODS.get(path) {
        Some(known) => known.as_str(),
        None => UNKNOWN_METHOD,
    }
}

/// The `code` label of a gRPC status code: its name as `Debug` spells it (`Ok`,
/// `InvalidArgument`), without formatting a string per call.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Tower layer recording request counts and latencies by method and gRPC code.
#[derive(Debug, Clone, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            // Errors come back trailers-only (grpc-status in the headers); a unary
            // success carries its status in the trailers, which is always OK here.
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("Ok", |c| code_label(tonic::Code::from_i32(c))),
                Err(_) => "TransportError",
            };
            // Static labels: no label string is formatted or copied per call (the metrics
            // macros still collect them into a small Vec<Label> per call for the lookup).
            let labels = [("method", method), ("code", code)];
            metrics::counter!(GRPC_REQUESTS_TOTAL, &labels).increment(1);
            metrics::histogram!(GRPC_REQUEST_DURATION_SECONDS, &labels)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_labels_are_the_codes_debug_names() {
        // The label values dashboards already query: what `format!("{code:?}")` gave.
        for i in 0..=17 {
            let code = tonic::Code::from_i32(i);
            assert_eq!(code_label(code), format!("{code:?}"), "code {i}");
        }
    }

    #[test]
    fn served_rpcs_keep_their_path_and_anything_else_is_unknown() {
        for served in [
            "/ovnpeerd.v1.PeeringService/CreatePeering",
            "/ovnpeerd.v1.PeeringService/ListRoutes",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(method_label(served), served);
        }
        for junk in [
            "/",
            "/ovnpeerd.v1.PeeringService/Nope",
            "/ovnpeerd.v1.PeeringService/CreatePeering/x",
            "/nope.Service/CreatePeering",
            "/x\u{1}y",
        ] {
            assert_eq!(method_label(junk), UNKNOWN_METHOD, "{junk:?}");
        }
    }

    #[test]
    fn the_readme_metrics_table_lists_exactly_these_names() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let section = readme
            .split("\n## Metrics\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Metrics section");
        let mut listed: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        listed.sort_unstable();
        let mut names = ALL.to_vec();
        names.sort_unstable();
        assert_eq!(listed, names);
    }

    #[test]
    fn every_name_has_the_one_prefix_and_appears_once() {
        let names: HashSet<&str> = ALL.iter().copied().collect();
        assert_eq!(names.len(), ALL.len(), "a name listed twice");
        for name in ALL {
            assert!(name.starts_with("ovn_peerd_"), "{name}");
        }
    }
}
