//! Prometheus exposition and the gRPC request metrics layer.
//!
//! Metric names (all prefixed `ovn_peerd_`) are documented in the README.
//! Other modules record through the `metrics` facade; this module only owns the
//! exporter and the per-RPC layer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::{Layer, Service};

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

fn describe() {
    metrics::describe_counter!(
        "ovn_peerd_grpc_requests_total",
        "gRPC requests handled, by method and status code"
    );
    metrics::describe_histogram!(
        "ovn_peerd_grpc_request_duration_seconds",
        metrics::Unit::Seconds,
        "gRPC request latency, by method and status code"
    );
    metrics::describe_gauge!(
        "ovn_peerd_mass_deletion_blocked",
        "1 while the worker holds back a pass that would delete more than half of this \
         deployment's NB rows (start with --allow-mass-deletion to let it)"
    );
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
        let method = req.uri().path().to_owned();
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
                    .map(|c| format!("{:?}", tonic::Code::from_i32(c)))
                    .unwrap_or_else(|| "Ok".to_string()),
                Err(_) => "TransportError".to_string(),
            };
            let labels = [("method", method), ("code", code)];
            metrics::counter!("ovn_peerd_grpc_requests_total", &labels).increment(1);
            metrics::histogram!("ovn_peerd_grpc_request_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}
