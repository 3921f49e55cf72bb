//! Admission of PeeringService calls: how many may run at once and how long each may take.
//!
//! A call that finds `--max-in-flight` calls running is refused at once with
//! RESOURCE_EXHAUSTED (load shedding: under overload the excess costs a refusal, not a queue
//! that grows without bound and answers everyone late). The refusal happens in
//! [`AdmissionLayer`], a tower layer of the server, on the request's headers alone: a refused
//! call's message is never read, decoded or handed to a handler, so under overload memory
//! holds the admitted calls' messages only (and each connection's HTTP/2 window), and a
//! refusal costs little CPU. An admitted call carries its place to its handler in the
//! request's extensions; the one RPC span (`rpc_span.rs`) takes it there (or asks the gate
//! itself when no layer admitted the call).
//!
//! An admitted call runs until the client's deadline (`grpc-timeout`), capped by
//! `--rpc-timeout`, counted from its admission (reading its message included, so a client
//! trickling its message cannot keep a place); when it passes, the call's future is
//! dropped, so its work stops where it stands (an open Postgres transaction rolls back) and
//! the client gets DEADLINE_EXCEEDED. Health, reflection and WatchPeerings (long-lived, with
//! their own limit) are not limited: a probe must answer while the API sheds load.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic_types::StatusExt;
use tower::{Layer, Service};

use super::ApiError;

/// Default `--max-in-flight`: a few times the database pool (16 connections), enough to keep
/// it busy, few enough that an admitted call waits little for a connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default `--rpc-timeout`: the longest any call runs when its client sets no deadline.
pub const DEFAULT_RPC_TIMEOUT: &str = "30s";

/// HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; the
/// client queues more on its side). With the connection's flow-control window it bounds
/// what one connection can make the server hold; hyper's default, unbounded in tonic, is no
/// limit. Above `--watch-max-streams-per-caller`'s default, so watches never hit it first.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// HTTP/2 PING interval on an idle connection, and how long its answer may take: a peer that
/// vanished without closing (a crashed host, a cut network) is dropped with its streams.
pub const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(20));

/// Streams of one connection the server may reset on errors it detects (hyper's
/// `max_local_error_reset_streams`) before it closes the connection (GOAWAY
/// ENHANCE_YOUR_CALM): the guard against a peer forcing resets to queue without end
/// (RUSTSEC-2024-0003), which tonic turns off unless set. hyper's default, 1,024, counts over
/// the connection's whole life, not per second, and counts resets a well-behaved client
/// causes too: a stream the server has answered and forgotten (a shed call) whose message
/// data still arrives is reset again (tonic PR 2708, h2 issue 856). A long-lived client
/// refused often under overload would lose its connection, with its calls in flight. 65,536
/// keeps what a flood can queue per connection to a few MB, while an ordinary client's
/// late-data resets (a fraction of its refused calls) stay far below it.
pub const MAX_LOCAL_ERROR_RESETS: usize = 65_536;

/// The HTTP/2 settings of every listener of the server, the API's and the health-only one
/// (see [`MAX_STREAMS_PER_CONNECTION`], [`KEEPALIVE`], [`MAX_LOCAL_ERROR_RESETS`]).
pub fn http2_settings(server: tonic::transport::Server) -> tonic::transport::Server {
    server
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE.0))
        .http2_keepalive_timeout(Some(KEEPALIVE.1))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
}

/// The limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls running at once; more are refused.
    pub max_in_flight: usize,
    /// The longest a call may run.
    pub rpc_timeout: Duration,
}

/// Admits calls within [`Limits`]; shared by every call of one service.
#[derive(Debug, Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    limits: Limits,
    shed: Arc<ShedLog>,
}

/// How often, at most, shedding is logged: refusals are counted in a metric, and a line per
/// refusal would make logging the server's main work under overload.
const SHED_LOG_EVERY: Duration = Duration::from_secs(10);
/// Distinct RPCs and callers a shedding window counts by name; more go to `others` (the
/// counts' memory stays bounded whatever names clients send).
const SHED_NAMES_KEPT: usize = 32;
/// Callers the shedding warning names (the most refused); the rest are summed in `others`.
const SHED_CALLERS_NAMED: usize = 3;

/// Who a refused call was: its RPC (the method of the gRPC path) and its caller's identity
/// (`-` without a client certificate).
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The RPC, e.g. `CreatePeering`.
    pub rpc: &'a str,
    /// The caller's identity, as the audit event names it.
    pub caller: &'a str,
}

/// The shedding's log, which stands in for the audit events shed calls do not write: the
/// first refusal after a quiet spell opens a window, and [`SHED_LOG_EVERY`] later one warning
/// says how many calls were refused in it, per RPC and per caller.
#[derive(Debug)]
struct ShedLog {
    window: Mutex<Option<ShedWindow>>,
    /// `--max-in-flight`, for the warning.
    limit: usize,
}

/// A window still open when the server stops is logged then, not lost.
impl Drop for ShedLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The refusals of one window.
#[derive(Debug, Default)]
struct ShedWindow {
    refused: u64,
    by_rpc: Tally,
    by_caller: Tally,
}

/// Counts by name, at most [`SHED_NAMES_KEPT`] names; the rest in `others`.
#[derive(Debug, Default)]
struct Tally {
    counts: HashMap<String, u64>,
    others: u64,
}

impl Tally {
    fn add(&mut self, name: &str) {
        if let Some(n) = self.counts.get_mut(name) {
            *n += 1;
        } else if self.counts.len() < SHED_NAMES_KEPT {
            self.counts.insert(name.to_owned(), 1);
        } else {
            self.others += 1;
        }
    }

    /// `name=count` for the `named` most counted names (most first, then by name), then
    /// `others=count` for the rest when there are any.
    fn summary(&self, named: usize) -> String {
        let mut counts: Vec<(&str, u64)> =
            self.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let others = self.others + counts.iter().skip(named).map(|c| c.1).sum::<u64>();
        let mut parts: Vec<String> = counts
            .iter()
            .take(named)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if others > 0 {
            parts.push(format!("others={others}"));
        }
        parts.join(" ")
    }
}

impl ShedLog {
    /// Counts a refusal; true when it opens a window (its warning is then due in
    /// [`SHED_LOG_EVERY`], see [`ShedLog::flush`]).
    fn refused(&self, who: Who<'_>) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let opened = window.is_none();
        let w = window.get_or_insert_with(ShedWindow::default);
        w.refused += 1;
        w.by_rpc.add(who.rpc);
        w.by_caller.add(who.caller);
        opened
    }

    /// Ends the window: one warning with its counts (nothing when none is open).
    fn flush(&self) {
        let Some(w) = self.window.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        tracing::warn!(
            refused = w.refused,
            limit = self.limit,
            by_rpc = %w.by_rpc.summary(SHED_NAMES_KEPT),
            by_caller = %w.by_caller.summary(SHED_CALLERS_NAMED),
            "shedding load: calls refused with RESOURCE_EXHAUSTED in the last {}s \
             (--max-in-flight calls running)",
            SHED_LOG_EVERY.as_secs(),
        );
    }
}

/// An admitted call: holds its place until dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    /// When it was admitted.
    pub at: Instant,
    /// How long the call may run from `at`.
    pub budget: Duration,
}

impl Admitted {
    /// When the call's work stops.
    pub fn deadline(&self) -> Instant {
        self.at + self.budget
    }
}

impl Gate {
    /// A gate for `limits`.
    pub fn new(limits: Limits) -> Self {
        Gate {
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
            shed: Arc::new(ShedLog {
                window: Mutex::default(),
                limit: limits.max_in_flight,
            }),
        }
    }

    /// Admits a call with these request headers, or refuses it (RESOURCE_EXHAUSTED) when
    /// `max_in_flight` calls are running. Never waits.
    /// A refusal is counted for the shedding warning under `who`.
    pub fn admit(&self, headers: &http::HeaderMap, who: Who<'_>) -> Result<Admitted, ApiError> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.refuse(who);
            return Err(ApiError::Overloaded {
                limit: self.limits.max_in_flight,
            });
        };
        let client = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Ok(Admitted {
            _permit: permit,
            at: Instant::now(),
            budget: budget(client, self.limits.rpc_timeout),
        })
    }

    /// Counts a refusal: the metric, and the shedding window (whose warning a task writes at
    /// its end; at once outside a runtime).
    fn refuse(&self, who: Who<'_>) {
        metrics::counter!(crate::metrics::RPC_SHED_TOTAL).increment(1);
        if !self.shed.refused(who) {
            return;
        }
        let shed = self.shed.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                tokio::time::sleep(SHED_LOG_EVERY).await;
                shed.flush();
            })),
            Err(_) => shed.flush(),
        }
    }

    /// The tower layer that admits calls of the API with this gate before they are read.
    pub fn layer(&self) -> AdmissionLayer {
        AdmissionLayer {
            gate: self.clone(),
            refusals: refusals(super::rpc_span::outside_handler(ApiError::Overloaded {
                limit: self.limits.max_in_flight,
            })),
            next_refusal: Arc::default(),
        }
    }
}

/// How many retry hints refusals take turns with (see [`refusals`]).
const RETRY_HINTS: u32 = 11;

/// The answers a shed call gets, built once (under overload, refusing is the work the server
/// does most): `refusal` with its retry hint (RetryInfo, and `grpc-retry-pushback-ms`, which
/// grpc-go and grpc-java honour) spread over half to one and a half times its delay, so that
/// clients refused together do not all come back together.
fn refusals(refusal: tonic::Status) -> Arc<[http::HeaderMap]> {
    let details = refusal.get_error_details();
    let base = details.retry_info().and_then(|r| r.retry_delay);
    (0..RETRY_HINTS)
        .map(|i| {
            let Some(base) = base else {
                return refusal.clone().into_http::<()>().into_parts().0.headers;
            };
            let delay = base / 2 + base * i / (RETRY_HINTS - 1);
            let mut details = details.clone();
            details.set_retry_info(Some(delay));
            let status = tonic::Status::with_error_details_and_metadata(
                refusal.code(),
                refusal.message(),
                details,
                refusal.metadata().clone(),
            );
            let mut headers = status.into_http::<()>().into_parts().0.headers;
            let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            headers.insert("grpc-retry-pushback-ms", millis.into());
            headers
        })
        .collect()
}

/// The gRPC path prefix of the calls [`AdmissionLayer`] admits.
const LIMITED_SERVICE: &str = "/ovnpeerd.v1.PeeringService/";

/// Whether the call at this gRPC path goes through admission: PeeringService's unary calls.
/// WatchPeerings' streams are long-lived and have their own limit; health and reflection
/// are never limited.
pub fn is_limited(path: &str) -> bool {
    path.strip_prefix(LIMITED_SERVICE)
        .is_some_and(|method| method != "WatchPeerings")
}

/// An admitted call's place, in its request's extensions (which want `Clone`): the handler
/// takes it out; dropped with the request otherwise.
#[derive(Debug, Clone)]
pub struct Place(Arc<Mutex<Option<Admitted>>>);

impl Place {
    /// The admission, once.
    pub fn take(&self) -> Option<Admitted> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How long after an admitted call's deadline the layer ends it, when its handler has not:
/// the handler's own timer (same deadline) answers first, inside the call's RPC span.
const LAYER_GRACE: Duration = Duration::from_millis(5);

/// Tower layer admitting PeeringService calls on their headers (see the module doc).
#[derive(Clone)]
pub struct AdmissionLayer {
    gate: Gate,
    /// What shed calls are answered, in turn (see [`refusals`]).
    refusals: Arc<[http::HeaderMap]>,
    next_refusal: Arc<AtomicUsize>,
}

impl AdmissionLayer {
    /// The next refusal's response.
    fn refusal<RB: Default>(&self) -> http::Response<RB> {
        let turn = self.next_refusal.fetch_add(1, Ordering::Relaxed);
        let mut response = http::Response::new(RB::default());
        *response.headers_mut() = self.refusals[turn % self.refusals.len()].clone();
        response
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admitting<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Admitting {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AdmissionLayer`].
#[derive(Clone)]
pub struct Admitting<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S, B, RB> Service<http::Request<B>> for Admitting<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if is_limited(req.uri().path()) {
            let who = Who {
                rpc: req.uri().path().rsplit('/').next().unwrap_or_default(),
                caller: req
                    .extensions()
                    .get::<crate::auth::PeerInfo>()
                    .map_or("-", |p| p.caller.name()),
            };
            match self.layer.gate.admit(req.headers(), who) {
                Ok(admitted) => {
                    let (at, deadline) = (admitted.at, admitted.deadline() + LAYER_GRACE);
                    req.extensions_mut()
                        .insert(Place(Arc::new(Mutex::new(Some(admitted)))));
                    let call = self.inner.call(req);
                    // The deadline covers reading the message too: a client that sends its
                    // headers and then trickles (or never ends) its message gives its place
                    // back at the deadline, with the request.
                    return Box::pin(async move {
                        match tokio::time::timeout_at(deadline.into(), call).await {
                            Ok(response) => response,
                            Err(_) => Ok(super::rpc_span::outside_handler(
                                ApiError::DeadlineExceeded {
                                    after: at.elapsed(),
                                },
                            )
                            .into_http()),
                        }
                    });
                }
                // Answered here: the request's message is never read.
                Err(_) => return Box::pin(std::future::ready(Ok(self.layer.refusal()))),
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// How long a call may run: the client's deadline capped by the server's, a little early.
///
/// tonic cuts a call off at the client's `grpc-timeout` too, counting from slightly before
/// the handler starts, and says CANCELLED; ending first (by a tenth of the time, at most
/// 50 ms) makes the answer DEADLINE_EXCEEDED and gets it to the client within its deadline.
pub fn budget(client: Option<Duration>, server: Duration) -> Duration {
    let total = client.map_or(server, |c| c.min(server));
    total.saturating_sub((total / 10).min(Duration::from_millis(50)))
}

/// The `grpc-timeout` header: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`), as
/// gRPC over HTTP/2 defines it; `None` when it is not that.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::super::rpc_span::tests::Captured;
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789m", "10", "10s", "-1m", "1.5S", "１m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn budget_is_the_smaller_deadline_a_little_early() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(budget(None, s(30)), s(30) - ms(50));
        assert_eq!(budget(Some(s(60)), s(30)), s(30) - ms(50));
        assert_eq!(budget(Some(ms(200)), s(30)), ms(180));
        assert_eq!(budget(Some(Duration::ZERO), s(30)), Duration::ZERO);
    }

    #[test]
    fn calls_beyond_the_limit_are_refused_until_one_ends() {
        let gate = Gate::new(Limits {
            max_in_flight: 2,
            rpc_timeout: Duration::from_secs(1),
        });
        let none = http::HeaderMap::new();
        let a = gate.admit(&none, WHO).expect("first");
        let _b = gate.admit(&none, WHO).expect("second");
        assert!(matches!(
            gate.admit(&none, WHO),
            Err(ApiError::Overloaded { limit: 2 })
        ));
        drop(a);
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", "100m".parse().unwrap());
        let c = gate.admit(&headers, WHO).expect("a place freed");
        assert_eq!(c.budget, Duration::from_millis(90));
        assert_eq!(c.deadline(), c.at + Duration::from_millis(90));
    }

    #[tokio::test]
    async fn a_call_whose_message_never_ends_gives_its_place_back_at_its_deadline() {
        let gate = Gate::new(Limits {
            max_in_flight: 1,
            rpc_timeout: Duration::from_secs(30),
        });
        // A handler still reading a message that never ends.
        let mut service = gate
            .layer()
            .layer(tower::service_fn(|_req: http::Request<()>| {
                std::future::pending::<Result<http::Response<tonic::body::Body>, Infallible>>()
            }));
        let request = || {
            http::Request::builder()
                .uri("/ovnpeerd.v1.PeeringService/CreatePeering")
                .header("grpc-timeout", "30m")
                .body(())
                .unwrap()
        };
        let guard = Duration::from_secs(60);
        let response = tokio::time::timeout(guard, service.call(request()))
            .await
            .expect("the layer ends the call at its deadline")
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        // Its place is free again: the next call is admitted (and ended in turn), not shed.
        let response = tokio::time::timeout(guard, service.call(request()))
            .await
            .unwrap()
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }

    const WHO: Who<'static> = Who {
        rpc: "GetPeering",
        caller: "-",
    };

    /// The warnings `f` logs.
    fn warnings_of(f: impl FnOnce()) -> Vec<String> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_thousand_refusals_make_one_warning_with_counts_per_rpc_and_top_callers() {
        let log = ShedLog {
            window: Mutex::default(),
            limit: 64,
        };
        let mut opened = 0;
        let warnings = warnings_of(|| {
            for i in 0..1000 {
                let rpc = if i % 4 == 0 {
                    "CreatePeering"
                } else {
                    "GetPeering"
                };
                // 100 callers: a heavy one, two lighter ones and many with a call or two.
                let caller = match i % 10 {
                    0..=4 => "spiffe://t/heavy".to_owned(),
                    5 | 6 => "spiffe://t/b".to_owned(),
                    7 => "-".to_owned(),
                    _ => format!("spiffe://t/c{}", i % 97),
                };
                opened += usize::from(log.refused(Who {
                    rpc,
                    caller: &caller,
                }));
            }
            log.flush();
            // The window is over: nothing more to say.
            log.flush();
        });
        assert_eq!(opened, 1, "one window");
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let w = &warnings[0];
        for field in [
            "refused=1000",
            "limit=64",
            "by_rpc=GetPeering=750 CreatePeering=250",
            "by_caller=spiffe://t/heavy=500 spiffe://t/b=200 -=100 others=200",
        ] {
            assert!(w.contains(field), "{field} missing: {w}");
        }
        // A new window counts from zero.
        let warnings = warnings_of(|| {
            assert!(log.refused(WHO));
            log.flush();
        });
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(warnings[0].contains("refused=1 "), "{warnings:?}");
        assert!(warnings[0].contains("by_caller=-=1"), "{warnings:?}");
        // A window still open when the log goes (the server stops) is written then.
        let warnings = warnings_of(|| {
            log.refused(WHO);
            drop(log);
        });
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
    }

    #[test]
    fn refusals_spread_their_retry_hints_around_the_delay() {
        let layer = Gate::new(Limits {
            max_in_flight: 1,
            rpc_timeout: Duration::from_secs(1),
        })
        .layer();
        let mut delays = std::collections::BTreeSet::new();
        for _ in 0..RETRY_HINTS {
            let response = layer.refusal::<()>();
            let status = tonic::Status::from_header_map(response.headers()).unwrap();
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            let delay = status.get_error_details().retry_info().unwrap().retry_delay;
            let pushback = response.headers()["grpc-retry-pushback-ms"]
                .to_str()
                .unwrap();
            assert_eq!(pushback, delay.unwrap().as_millis().to_string());
            delays.insert(delay.unwrap());
        }
        let base = super::super::error::RETRY_DELAY;
        assert_eq!(delays.len(), RETRY_HINTS as usize);
        assert_eq!(delays.first(), Some(&(base / 2)));
        assert_eq!(delays.last(), Some(&(base * 3 / 2)));
    }

    #[test]
    fn only_the_unary_calls_of_the_api_are_limited() {
        for path in [
            "/ovnpeerd.v1.PeeringService/CreatePeering",
            "/ovnpeerd.v1.PeeringService/GetPeering",
            "/ovnpeerd.v1.PeeringService/ListRoutes",
        ] {
            assert!(is_limited(path), "{path}");
        }
        for path in [
            "/ovnpeerd.v1.PeeringService/WatchPeerings",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/ovnpeerd.v1.PeeringServiceX/GetPeering",
            "/",
        ] {
            assert!(!is_limited(path), "{path}");
        }
    }
}
