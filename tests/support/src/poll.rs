//! The one polling helper: retry a condition until it holds or a deadline passes.
//!
//! A timeout is an `Err` ([`Timeout`]), never a silent `false`: `Result` is `#[must_use]`,
//! so a caller that ignores it fails `clippy -D warnings`, and one that wants a yes/no
//! (a ping that should *not* get through) says so with `.is_ok()`.

use std::fmt;
use std::future::Future;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// What a polled condition returns: `bool` (held or not) or `Option<T>` (a value once ready).
pub trait Ready {
    /// What [`wait_until`] returns once the condition holds.
    type Output;
    /// `Some` once the condition holds.
    fn ready(self) -> Option<Self::Output>;
}

impl Ready for bool {
    type Output = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Output = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// `what` did not happen within `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    /// What was waited for, as the caller named it.
    pub what: String,
    /// The deadline that passed.
    pub after: Duration,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.after, self.what
        )
    }
}

impl std::error::Error for Timeout {}

/// Calls `cond` until it is ready (`true` / `Some`) or `timeout` passes. The condition is
/// tried at least once, and once more at the deadline. Backs off from 5 ms to 100 ms between
/// tries, so a slow fixture does not burn the CPU other tests need.
pub fn wait_until<R: Ready>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> R,
) -> Result<R::Output, Timeout> {
    let mut schedule = Schedule::new(what, timeout);
    loop {
        if let Some(v) = cond().ready() {
            return Ok(v);
        }
        sleep(schedule.next_delay()?);
    }
}

/// [`wait_until`] for a condition that is itself async (a query, an RPC): same schedule,
/// same [`Timeout`]; the waits yield to the runtime instead of blocking its thread.
pub async fn wait_until_async<R: Ready, F: Future<Output = R>>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) -> Result<R::Output, Timeout> {
    let mut schedule = Schedule::new(what, timeout);
    loop {
        if let Some(v) = cond().await.ready() {
            return Ok(v);
        }
        tokio::time::sleep(schedule.next_delay()?).await;
    }
}

/// The one retry schedule: 5 ms doubling to 100 ms, one last try at the deadline.
struct Schedule<'a> {
    what: &'a str,
    timeout: Duration,
    deadline: Instant,
    delay: Duration,
}

impl<'a> Schedule<'a> {
    fn new(what: &'a str, timeout: Duration) -> Self {
        Schedule {
            what,
            timeout,
            deadline: Instant::now() + timeout,
            delay: Duration::from_millis(5),
        }
    }

    /// How long to wait before the next try, or the timeout once the deadline has passed.
    fn next_delay(&mut self) -> Result<Duration, Timeout> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Timeout {
                what: self.what.to_string(),
                after: self.timeout,
            });
        }
        let d = self.delay.min(left);
        self.delay = (self.delay * 2).min(Duration::from_millis(100));
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_never_holds_is_an_error() {
        let mut tries = 0;
        let r = wait_until("never", Duration::from_millis(30), || {
            tries += 1;
            false
        });
        assert_eq!(
            r,
            Err(Timeout {
                what: "never".into(),
                after: Duration::from_millis(30)
            })
        );
        assert!(tries >= 2, "tried again at the deadline ({tries} tries)");
        assert!(r.unwrap_err().to_string().contains("never"));
    }

    #[test]
    fn a_condition_that_holds_later_returns_its_value() {
        let mut n = 0;
        let v = wait_until("the third try", Duration::from_secs(10), || {
            n += 1;
            (n == 3).then_some(n * 10)
        });
        assert_eq!(v, Ok(30));
        assert_eq!(wait_until("now", Duration::ZERO, || true), Ok(()));
    }
}
