//! The acceptance TTL (`--acceptance-ttl`): a cross-tenant request not accepted in time
//! becomes STATE_EXPIRED. A small task on every replica ([`expire_requests`]) moves requests
//! there when their time is up; AcceptPeering and RejectPeering also expire an overdue request
//! before they look at it (`api/accept.rs`), so a late answer is refused even when no sweep
//! has run. Every comparison uses Postgres' clock (`create_time` is Postgres' `now()`), so
//! replicas with skewed clocks agree. The statements are idempotent: several replicas sweeping
//! at once do no harm.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::store::Store;

/// The `state_message` of an expired request.
pub fn expired_message(ttl: Duration) -> String {
    format!(
        "not accepted within the acceptance TTL ({})",
        humantime::format_duration(ttl)
    )
}

/// How long the sweep sleeps: until the oldest open request's deadline (`next`, seconds from
/// now as Postgres computed it), and never longer than `ttl`, so that a request made while it
/// sleeps (due no earlier than `ttl` from now) is not missed. Pure, for the unit test.
pub fn sweep_delay(next: Option<f64>, ttl: Duration) -> Duration {
    match next {
        Some(secs) if secs <= 0.0 => Duration::ZERO,
        // A few milliseconds late rather than early: an early wake finds nothing to expire.
        Some(secs) => Duration::from_secs_f64(secs).min(ttl) + Duration::from_millis(5),
        None => ttl,
    }
}

/// Expires requests as their TTL runs out, until `stop`.
pub async fn expire_requests(store: Store, ttl: Duration, stop: CancellationToken) {
    let message = expired_message(ttl);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        let delay = match sweep(&store, ttl, &message).await {
            Ok(next) => {
                backoff.reset();
                sweep_delay(next, ttl)
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "cannot expire cross-tenant requests");
                d
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One sweep; returns the next deadline (seconds from now), if any request is open.
async fn sweep(
    store: &Store,
    ttl: Duration,
    message: &str,
) -> Result<Option<f64>, crate::store::StoreError> {
    let expired = store.peering_expire_overdue(ttl, message).await?;
    if !expired.is_empty() {
        tracing::info!(peerings = ?expired, ttl = %humantime::format_duration(ttl), "requests expired");
    }
    store.peering_next_expiry(ttl).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_sleeps_until_the_next_deadline_and_never_past_the_ttl() {
        let ttl = Duration::from_secs(60);
        assert_eq!(sweep_delay(None, ttl), ttl);
        assert_eq!(sweep_delay(Some(-3.0), ttl), Duration::ZERO);
        assert_eq!(
            sweep_delay(Some(2.0), ttl),
            Duration::from_millis(2005),
            "just after the deadline"
        );
        assert_eq!(
            sweep_delay(Some(3600.0), ttl),
            ttl + Duration::from_millis(5)
        );
        assert_eq!(
            expired_message(Duration::from_secs(7 * 86400)),
            "not accepted within the acceptance TTL (7days)"
        );
    }
}
