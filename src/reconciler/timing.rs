//! Every interval, timeout and backoff delay of the worker and its writer lock, in
//! one place, with the budget they add up to.
//!
//! A partitioned lock holder must stop writing, and Postgres must free its
//! lock, within [`LOSS_BOUND`] (~15 s):
//! - client side, the holder checks its lock session every
//!   [`HEARTBEAT_INTERVAL`] and gives the lock up when a check fails or takes
//!   longer than [`HEARTBEAT_TIMEOUT`]: it stops writing within 2 + 3 = 5 s;
//! - server side, the lock session's TCP keepalives (idle 5 s, then 3 probes
//!   2 s apart) and `tcp_user_timeout` (10 s) end the backend, and so free the
//!   advisory lock, within ~11 s of the last packet from the holder.
//!
//! The holder stops well before another replica can take over; the NB fence
//! covers whatever is still in flight.

use std::time::Duration;

/// What the numbers below must stay under.
pub const LOSS_BOUND: Duration = Duration::from_secs(15);

/// How often a replica without the lock tries to take it.
pub const ACQUIRE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest delay between lock attempts while Postgres cannot be reached (the first is
/// [`ACQUIRE_INTERVAL`]).
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a replica that just lost the lock waits before trying again, so a
/// standby (whose Postgres session is likely healthier) takes over first.
pub const AFTER_LOSS_DELAY: Duration = Duration::from_secs(3);
/// Connecting the lock session.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the holder checks its lock session.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long one check may take before the holder gives the lock up.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// Releasing the lock on shutdown (the session may be the broken thing).
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a graceful shutdown waits for the last pass's statuses to land in Postgres
/// (`report.rs`), before the lock is released.
pub const REPORT_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// Server-side keepalives of the lock session, in seconds (Postgres GUCs).
pub const KEEPALIVES_IDLE_SECS: u64 = 5;
pub const KEEPALIVES_INTERVAL_SECS: u64 = 2;
pub const KEEPALIVES_COUNT: u64 = 3;
/// Server-side `tcp_user_timeout` of the lock session, in milliseconds.
pub const TCP_USER_TIMEOUT_MS: u64 = 10_000;

/// How long the worker's first pass waits for the Postgres listener to be up (so that the
/// listener's start folds into that pass instead of asking for another).
pub const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// The peerings-by-state gauges are counted at most this often (a `GROUP BY` over every
/// peering: ~2 ms at 10,000, Postgres's busiest statement after the creates' in a bulk when
/// counted after every pass); passes that end meanwhile fold into the next count, so the
/// gauges are true within this long of the last pass.
pub const STATE_GAUGES_EVERY: Duration = Duration::from_secs(1);

/// Retries after a failed pass, a lost listener or a failed fence write (delays for
/// [`crate::backoff::Backoff`], the one backoff).
pub const RETRY_MIN: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_lost_within_the_bound_on_both_sides() {
        let client = HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT;
        let keepalive =
            Duration::from_secs(KEEPALIVES_IDLE_SECS + KEEPALIVES_INTERVAL_SECS * KEEPALIVES_COUNT);
        let server = keepalive.min(Duration::from_millis(TCP_USER_TIMEOUT_MS) + HEARTBEAT_INTERVAL);
        assert!(
            client < server,
            "the holder stops before the server frees the lock"
        );
        assert!(server <= LOSS_BOUND);
    }
}
