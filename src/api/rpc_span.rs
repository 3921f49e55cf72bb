//! One tracing span per RPC: `rpc{method, request_id, peering | vpc, code, duration_ms}`, and
//! one event when the call ends. Every handler of the service goes through [`RpcSpan::run`],
//! which is also where [`ApiError`] becomes `tonic::Status`, so the logs an error writes
//! (an internal error's whole chain) carry the RPC's fields while the client only sees the
//! generic message.
//!
//! Every call is admitted first (`admission.rs`): refused at once when too many run, and
//! stopped when its deadline passes. A call the server's admission layer sheds never gets
//! here (nor to a handler): its refusal is converted once, by [`outside_handler`], when the
//! layer is built, and is counted (`ovn_peerd_rpc_shed_total`, the RPC metrics by code), not
//! logged per call (under overload, a log line per refusal would be the server's main work).
//!
//! Mutating RPCs are also audited: one event with target `audit` per call that reaches its
//! handler's span, naming the caller's identity, the RPC, the peering and the outcome code,
//! whatever the outcome (refused by the rules or authorization, past its deadline, done). A
//! shed call (refused on its headers, its message and so its peering never read) writes no
//! audit event; it is summarised instead in the admission's shedding warning: one per
//! 10 s window of shedding, with the window's refusals counted per RPC and per caller
//! identity (the top few, then `others`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio_stream::Stream;

use tonic::{Code, Response, Status};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::admission::{Admitted, Gate, Place, Who};
use super::ApiError;
use crate::auth::Caller;

/// The span of one RPC, before it runs: its fields are collected first and the span is made
/// once, with all of them, when the call runs ([`RpcSpan::run`]). One span creation instead
/// of a creation and a `record` per field: each `record` is a subscriber dispatch that formats
/// the field again (README, *ovn-peerd's own CPU per peering*).
pub(super) struct RpcSpan {
    method: &'static str,
    /// The caller's identity as logged (`-` without one), when known.
    caller: Option<String>,
    request_id: Option<String>,
    peering: String,
    vpc: Option<String>,
    /// The caller's identity, when the call is audited.
    audit: Option<String>,
    /// The admission decision, when the call went through a gate.
    admission: Option<Result<Admitted, ApiError>>,
}

impl RpcSpan {
    /// A span for `method` (the proto's RPC name, e.g. `CreatePeering`).
    pub(super) fn new(method: &'static str) -> Self {
        RpcSpan {
            method,
            caller: None,
            request_id: None,
            peering: String::new(),
            vpc: None,
            audit: None,
            admission: None,
        }
    }

    /// The span itself: `rpc{method, caller, request_id, peering, vpc, code, duration_ms}`, the
    /// fields not given left empty (not logged); `code` and `duration_ms` are recorded at the end.
    fn span(&self) -> Span {
        tracing::info_span!(
            "rpc",
            method = self.method,
            caller = self.caller.as_deref(),
            request_id = self.request_id.as_deref(),
            peering = (!self.peering.is_empty()).then_some(self.peering.as_str()),
            vpc = self.vpc.as_deref(),
            code = Empty,
            duration_ms = Empty,
        )
    }

    /// The call's admission: the place the server's admission layer gave it, or else (no
    /// layer admitted it) `gate`'s answer on its headers (its `grpc-timeout`). A refused call
    /// runs no handler; an admitted one is stopped when its budget is spent.
    pub(super) fn admit<M>(mut self, gate: &Gate, req: &tonic::Request<M>) -> Self {
        let placed = req.extensions().get::<Place>().and_then(Place::take);
        self.admission = Some(placed.map_or_else(
            || {
                let caller = super::authz::caller_of(req);
                let who = Who {
                    rpc: self.method,
                    caller: caller.name(),
                };
                gate.admit(req.metadata().as_ref(), who)
            },
            Ok,
        ));
        self
    }

    /// When the admitted call's work stops (`None`: not admitted through a gate). Handlers
    /// that wait in Postgres pass it to the store, which ends such waits there (README,
    /// *Overload and deadlines*).
    pub(super) fn deadline(&self) -> Option<Instant> {
        match &self.admission {
            Some(Ok(admitted)) => Some(admitted.deadline()),
            _ => None,
        }
    }

    /// Records who calls (its certificate's identity, `-` without one).
    pub(super) fn caller(mut self, caller: &Caller) -> Self {
        self.caller = Some(caller.name().to_owned());
        self
    }

    /// Writes an `audit` event when the call ends (mutating RPCs).
    pub(super) fn audited(mut self, caller: &Caller) -> Self {
        self.audit = Some(caller.name().to_owned());
        self.caller(caller)
    }

    /// Records the request's `request_id`, unless empty. (A method per field: a misspelt
    /// field does not compile.)
    pub(super) fn request_id(mut self, value: &str) -> Self {
        self.request_id = (!value.is_empty()).then(|| value.to_owned());
        self
    }

    /// Records the peering the call is about, unless empty.
    pub(super) fn peering(mut self, value: &str) -> Self {
        value.clone_into(&mut self.peering);
        self
    }

    /// Records the VPC the call is about, unless empty.
    pub(super) fn vpc(mut self, value: &str) -> Self {
        self.vpc = (!value.is_empty()).then(|| value.to_owned());
        self
    }

    /// Runs the handler in the span, converts its error once, records the code and duration.
    pub(super) async fn run<T>(
        self,
        handler: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Response<T>, Status> {
        let span = self.span();
        let RpcSpan {
            method,
            peering,
            audit,
            admission,
            ..
        } = self;
        let started = Instant::now();
        let result = match admission {
            None => handler.instrument(span.clone()).await,
            Some(Err(refused)) => Err(refused),
            // The permit is held until the handler ends or is dropped.
            Some(Ok(admitted)) => {
                let deadline = tokio::time::Instant::from_std(admitted.deadline());
                match tokio::time::timeout_at(deadline, handler.instrument(span.clone())).await {
                    Ok(result) => result,
                    // Counted from admission, as the deadline is (reading the message included).
                    Err(_) => Err(ApiError::DeadlineExceeded {
                        after: admitted.at.elapsed(),
                    }),
                }
            }
        };
        span.in_scope(|| {
            let result = result.map(Response::new).map_err(Status::from);
            let code = match &result {
                Ok(_) => Code::Ok,
                Err(s) => s.code(),
            };
            record_end(&span, started, code);
            if let Some(identity) = audit {
                tracing::info!(target: "audit", identity, rpc = method, peering, ?code, "audit");
            }
            result
        })
    }

    /// [`RpcSpan::run`] for a server-streaming RPC: the handler returns the stream of
    /// messages, whose error (its last item) is converted here too; the code and duration are
    /// recorded when the stream ends (CANCELLED when the client goes away first).
    pub(super) async fn run_stream<T, S>(
        self,
        handler: impl Future<Output = Result<S, ApiError>>,
    ) -> Result<Response<SpannedStream<T>>, Status>
    where
        S: Stream<Item = Result<T, ApiError>> + Send + 'static,
    {
        let span = self.span();
        let started = Instant::now();
        match handler.instrument(span.clone()).await {
            Ok(inner) => Ok(Response::new(SpannedStream {
                inner: Box::pin(inner),
                span,
                started,
                ended: false,
            })),
            Err(e) => span.in_scope(|| {
                let status = Status::from(e);
                record_end(&span, started, status.code());
                Err(status)
            }),
        }
    }
}

/// The answer to a call that ends outside any handler: shed by the admission layer (see the
/// module doc), or past its deadline while its message was still being read.
pub(super) fn outside_handler(error: ApiError) -> Status {
    Status::from(error)
}

/// Records an RPC's code and duration in its span and logs its end.
fn record_end(span: &Span, started: Instant, code: Code) {
    let duration_ms = started.elapsed().as_secs_f64() * 1e3;
    span.record("code", tracing::field::debug(code));
    span.record("duration_ms", duration_ms);
    match code {
        Code::Ok => tracing::debug!(?code, duration_ms, "rpc done"),
        Code::Internal | Code::Unavailable | Code::Unknown => {
            tracing::warn!(?code, duration_ms, "rpc failed")
        }
        _ => tracing::info!(?code, duration_ms, "rpc refused"),
    }
}

/// A server stream in its RPC's span: errors become `Status` once, here.
pub struct SpannedStream<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, ApiError>> + Send>>,
    span: Span,
    started: Instant,
    ended: bool,
}

impl<T> Stream for SpannedStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = {
            let _entered = self.span.clone().entered();
            self.inner.as_mut().poll_next(cx)
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(end) => {
                self.ended = true;
                let span = self.span.clone();
                let _entered = span.enter();
                let (status, code) = match end {
                    Some(Err(e)) => {
                        let status = Status::from(e);
                        let code = status.code();
                        (Some(Err(status)), code)
                    }
                    _ => (None, Code::Ok),
                };
                record_end(&span, self.started, code);
                Poll::Ready(status)
            }
        }
    }
}

impl<T> Drop for SpannedStream<T> {
    fn drop(&mut self) {
        if !self.ended {
            let _entered = self.span.enter();
            record_end(&self.span, self.started, Code::Cancelled);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log writer into memory (the API's tests that read logs share it).
    #[derive(Clone, Default)]
    pub(in crate::api) struct Captured(pub(in crate::api) Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with a subscriber writing every level, without ANSI colours, into a string.
    async fn logs_of<F: Future>(f: impl FnOnce() -> F) -> (F::Output, String) {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let r = f().await;
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        (r, text)
    }

    #[tokio::test]
    async fn the_span_carries_method_request_id_code_and_duration() {
        let (r, logs) = logs_of(|| {
            RpcSpan::new("CreatePeering")
                .request_id("req-42")
                .peering("demo")
                .vpc("")
                .run(async {
                    tracing::info!("inside the handler");
                    Err::<(), _>(ApiError::peering_not_found("demo"))
                })
        })
        .await;
        assert_eq!(r.unwrap_err().code(), Code::NotFound);
        let inside = logs
            .lines()
            .find(|l| l.contains("inside the handler"))
            .unwrap();
        for field in [
            "method=\"CreatePeering\"",
            "request_id=\"req-42\"",
            "peering=\"demo\"",
        ] {
            assert!(inside.contains(field), "{field} missing: {logs}");
        }
        assert!(!inside.contains("vpc="), "{logs}");
        let done = logs.lines().find(|l| l.contains("rpc refused")).unwrap();
        assert!(done.contains("code=NotFound"), "{logs}");
        assert!(done.contains("duration_ms="), "{logs}");
        assert!(done.contains("method=\"CreatePeering\""), "{logs}");
    }

    #[tokio::test]
    async fn the_span_carries_the_caller_and_the_vpc() {
        let caller = Caller::Identity("spiffe://example.org/ns/a/sa/b".into());
        let (r, logs) = logs_of(|| {
            RpcSpan::new("ListPeerings")
                .caller(&caller)
                .vpc("vpc-7")
                .run(async {
                    tracing::info!("inside the handler");
                    Ok(())
                })
        })
        .await;
        assert!(r.is_ok());
        let inside = logs
            .lines()
            .find(|l| l.contains("inside the handler"))
            .unwrap();
        for field in ["caller=\"spiffe://example.org/ns/a/sa/b\"", "vpc=\"vpc-7\""] {
            assert!(inside.contains(field), "{field} missing: {logs}");
        }
    }

    /// The span is made once with the fields known before the call runs; only `code` and
    /// `duration_ms` are recorded into it afterwards (each `record` is a dispatch that formats
    /// again: they were five a create).
    #[tokio::test]
    async fn the_span_is_made_with_its_fields_and_only_the_end_is_recorded_later() {
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Records(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Records {
            fn on_record(
                &self,
                _: &tracing::span::Id,
                values: &tracing::span::Record<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                self.0.lock().unwrap().push(format!("{values:?}"));
            }
        }
        let records = Records::default();
        let subscriber = tracing_subscriber::registry().with(records.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let caller = Caller::Identity("spiffe://example.org/ns/a/sa/b".into());
        let r = RpcSpan::new("CreatePeering")
            .audited(&caller)
            .request_id("req-42")
            .peering("demo")
            .run(async { Ok(()) })
            .await;
        assert!(r.is_ok());
        let recorded = records.0.lock().unwrap().clone();
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        assert!(recorded[0].contains("code"), "{recorded:?}");
        assert!(recorded[1].contains("duration_ms"), "{recorded:?}");
    }

    #[tokio::test]
    async fn internal_errors_are_logged_in_the_span_and_generic_to_clients() {
        let (r, logs) = logs_of(|| {
            RpcSpan::new("GetPeering").run(async {
                Err::<(), _>(ApiError::Internal(anyhow::anyhow!(
                    "disk on fire at /var/x"
                )))
            })
        })
        .await;
        let status = r.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        let logged = logs.lines().find(|l| l.contains("disk on fire")).unwrap();
        assert!(logged.contains("method=\"GetPeering\""), "{logs}");
        assert!(logs.contains("code=Internal"), "{logs}");
    }

    #[tokio::test]
    async fn mutating_calls_are_audited_with_identity_rpc_peering_and_code() {
        let caller = Caller::Identity("spiffe://example.org/ns/a/sa/b".into());
        let (_, logs) = logs_of(|| {
            RpcSpan::new("DeletePeering")
                .audited(&caller)
                .peering("demo")
                .run(async { Err::<(), _>(ApiError::PermissionDenied("no".into())) })
        })
        .await;
        let audit = logs.lines().find(|l| l.contains(" audit: ")).expect(&logs);
        for field in [
            "identity=\"spiffe://example.org/ns/a/sa/b\"",
            "rpc=\"DeletePeering\"",
            "peering=\"demo\"",
            "code=PermissionDenied",
        ] {
            assert!(audit.contains(field), "{field} missing: {audit}");
        }
        let (_, logs) = logs_of(|| {
            RpcSpan::new("GetPeering")
                .caller(&caller)
                .run(async { Ok(()) })
        })
        .await;
        assert!(!logs.contains(" audit: "), "{logs}");
    }

    #[tokio::test]
    async fn success_is_code_ok() {
        let (r, logs) = logs_of(|| RpcSpan::new("ListRoutes").run(async { Ok(7) })).await;
        assert_eq!(r.unwrap().into_inner(), 7);
        assert!(
            logs.contains("rpc done") && logs.contains("code=Ok"),
            "{logs}"
        );
    }
}
