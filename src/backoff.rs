//! The one backoff every retry loop uses (NB reconnects, failed worker passes, the Postgres
//! listener, migrations at start, the writer lock): exponential from an initial delay, capped,
//! with jitter so that replicas retrying after one outage do not retry in step.
//!
//! Owns only the delays; each loop owns its own waiting (and its shutdown signal).

use std::time::Duration;

use rand::Rng;

/// Delays for one retry loop. [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// `initial` after the first failure, doubling up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt: [`ceiling`] of the failures so far (this one
    /// included), jittered down by up to half.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let c = ceiling(self.initial, self.max, self.failures);
        c.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Starts over from `initial` (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `initial · 2^(failures-1)`, capped at `max` (failures = 1, 2, ...).
pub fn ceiling(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(31));
    exp.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_then_caps() {
        let c = |n| ceiling(100 * MS, 8000 * MS, n);
        assert_eq!(
            [c(1), c(2), c(3), c(7), c(8), c(40)],
            [
                100 * MS,
                200 * MS,
                400 * MS,
                6400 * MS,
                8000 * MS,
                8000 * MS
            ]
        );
        assert_eq!(ceiling(Duration::MAX, 5 * MS, 3), 5 * MS);
    }

    #[test]
    fn delays_are_jittered_below_the_ceiling_and_reset_starts_over() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!((50 * MS..=100 * MS).contains(&delays[0]));
        assert!((100 * MS..=200 * MS).contains(&delays[1]));
        assert!(delays[10..]
            .iter()
            .all(|d| (500 * MS..=1000 * MS).contains(d)));
        // Jitter: not every capped delay is the same.
        assert!(delays[10..].iter().any(|d| *d != delays[10]));
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }
}
