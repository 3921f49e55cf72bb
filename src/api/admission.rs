//! Admission of PeeringService calls: how many may run at once and how long each may take.
//!
//! A call that finds `--max-in-flight` calls running is refused at once with
//! RESOURCE_EXHAUSTED (load shedding: under overload the excess costs a refusal, not a queue
//! that grows without bound and answers everyone late). An admitted call runs until the
//! client's deadline (`grpc-timeout`), capped by `--rpc-timeout`; when it passes, the call's
//! future is dropped, so its work stops where it stands (an open Postgres transaction rolls
//! back) and the client gets DEADLINE_EXCEEDED. Applied by the one RPC span (`rpc_span.rs`);
//! health and reflection are not limited (a probe must answer while the API sheds load).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::metadata::MetadataMap;

use super::ApiError;

/// Default `--max-in-flight`: a few times the database pool (16 connections), enough to keep
/// it busy, few enough that an admitted call waits little for a connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default `--rpc-timeout`: the longest any call runs when its client sets no deadline.
pub const DEFAULT_RPC_TIMEOUT: &str = "30s";

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
}

/// An admitted call: holds its place until dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    /// How long the call may run from now.
    pub budget: Duration,
}

impl Gate {
    /// A gate for `limits`.
    pub fn new(limits: Limits) -> Self {
        Gate {
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
        }
    }

    /// Admits a call with these request headers, or refuses it (RESOURCE_EXHAUSTED) when
    /// `max_in_flight` calls are running. Never waits.
    pub fn admit(&self, metadata: &MetadataMap) -> Result<Admitted, ApiError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(crate::metrics::RPC_SHED_TOTAL).increment(1);
            ApiError::Overloaded {
                limit: self.limits.max_in_flight,
            }
        })?;
        let client = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Ok(Admitted {
            _permit: permit,
            budget: budget(client, self.limits.rpc_timeout),
        })
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
        let none = MetadataMap::new();
        let a = gate.admit(&none).expect("first");
        let _b = gate.admit(&none).expect("second");
        assert!(matches!(
            gate.admit(&none),
            Err(ApiError::Overloaded { limit: 2 })
        ));
        drop(a);
        let mut headers = MetadataMap::new();
        headers.insert("grpc-timeout", "100m".parse().unwrap());
        let c = gate.admit(&headers).expect("a place freed");
        assert_eq!(c.budget, Duration::from_millis(90));
    }
}
