//! What wakes the worker and what the next pass must look at.
//!
//! Postgres notifications name the peering that changed: those are looked at
//! alone. An NB change someone else made names the routers and port names it
//! touched (`nb_scope.rs`): the peerings of those are looked at. Anything the
//! worker cannot pin down (a change it cannot place, a cache resync, a lost
//! listener, the timer, a failed pass) asks for a full pass. The NB echo of the worker's own
//! transactions wakes nobody: rows a transaction touches are registered before it is sent
//! ([`Wake::expect_echo`]), and their updates are recognised when they come back. The one
//! window for that: an echo is expected for as long as its transaction is unanswered (however
//! long NB takes to run it, and the ones pipelined before it), then for [`ECHO_GRACE`] after
//! its reply, so a write that changed nothing cannot hide a later foreign change for long.
//! A transaction that fails, or whose reply is never awaited, expects no echo.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

use super::nb_scope::Touched;
use super::pass::Scope;
use crate::ovsdb::RowChange;

/// How long the echo of a transaction is still expected once its reply has arrived. The
/// replica applies a transaction's update before its reply completes, so by then the echo is
/// only the listener's queue away; what is left of this window is for a loaded machine.
const ECHO_GRACE: Duration = Duration::from_secs(2);

/// Shared between the worker and its listeners.
#[derive(Default)]
pub struct Wake {
    pending: Mutex<Pending>,
    notify: Notify,
}

#[derive(Default, Clone)]
struct Pending {
    full: bool,
    dirty: BTreeSet<String>,
    touched: Touched,
    echo: HashMap<Uuid, Expected>,
}

/// The echoes expected of one row.
#[derive(Debug, Clone, Copy)]
struct Expected {
    /// Updates of the row still to be recognised as ours.
    echoes: u32,
    /// Transactions touching the row whose reply has not arrived yet: while there is one,
    /// the expectation does not expire.
    unreplied: u32,
    /// When the expectation expires once every reply has arrived.
    until: Instant,
}

impl Pending {
    fn expect(&mut self, rows: &HashSet<Uuid>, now: Instant) {
        for u in rows {
            let e = self.echo.entry(*u).or_insert(Expected {
                echoes: 0,
                unreplied: 0,
                until: now,
            });
            e.echoes += 1;
            e.unreplied += 1;
        }
    }

    /// The transaction's reply arrived: `committed`, its echo is due within [`ECHO_GRACE`];
    /// otherwise none will come.
    fn replied(&mut self, rows: &HashSet<Uuid>, committed: bool, now: Instant) {
        for u in rows {
            let Some(e) = self.echo.get_mut(u) else {
                continue;
            };
            e.unreplied = e.unreplied.saturating_sub(1);
            if committed {
                e.until = e.until.max(now + ECHO_GRACE);
            } else {
                e.echoes = e.echoes.saturating_sub(1);
            }
            if e.echoes == 0 && e.unreplied == 0 {
                self.echo.remove(u);
            }
        }
    }

    /// Which of `changes` someone else made; consumes the echoes recognised.
    fn foreign(&mut self, changes: &[RowChange], now: Instant) -> HashSet<Uuid> {
        self.echo.retain(|_, e| e.unreplied > 0 || now < e.until);
        let mut foreign = HashSet::new();
        for c in changes {
            match self.echo.get_mut(&c.uuid) {
                Some(e) if e.echoes > 0 => {
                    e.echoes -= 1;
                    if e.echoes == 0 && e.unreplied == 0 {
                        self.echo.remove(&c.uuid);
                    }
                }
                _ => {
                    foreign.insert(c.uuid);
                }
            }
        }
        foreign
    }
}

/// The echo a transaction on the wire is expected to cause ([`Wake::expect_echo`]). Say
/// [`EchoWatch::committed`] when its reply says it committed; dropped otherwise (it failed,
/// its outcome is unknown, or its pass stopped without awaiting it), no echo is expected.
#[must_use = "dropping it forgets the echo at once"]
pub struct EchoWatch {
    wake: Arc<Wake>,
    rows: HashSet<Uuid>,
}

impl EchoWatch {
    /// The reply says it committed: its echo is recognised for [`ECHO_GRACE`] more.
    pub fn committed(mut self) {
        let rows = std::mem::take(&mut self.rows);
        self.wake.lock().replied(&rows, true, Instant::now());
    }
}

impl Drop for EchoWatch {
    fn drop(&mut self) {
        if !self.rows.is_empty() {
            self.wake.lock().replied(&self.rows, false, Instant::now());
        }
    }
}

impl Wake {
    /// A new state that asks for a full pass first.
    pub fn new() -> Self {
        let wake = Wake::default();
        wake.lock().full = true;
        wake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything must be looked at.
    pub fn full(&self) {
        self.lock().full = true;
        self.notify.notify_one();
    }

    /// One peering changed in Postgres.
    pub fn peering(&self, name: &str) {
        self.lock().dirty.insert(name.to_owned());
        self.notify.notify_one();
    }

    /// NB changed: which of `changes` someone else made (the others are our own echo,
    /// consumed here). Wakes nobody: the caller says what they touched.
    pub fn foreign(&self, changes: &[RowChange]) -> HashSet<Uuid> {
        self.lock().foreign(changes, Instant::now())
    }

    /// Foreign NB changes touched these routers and port names: their peerings must be
    /// judged again (nothing to do when empty).
    pub fn touched(&self, t: Touched) {
        if t.vpcs.is_empty() && t.ports.is_empty() {
            return;
        }
        let mut p = self.lock();
        p.touched.vpcs.extend(t.vpcs);
        p.touched.ports.extend(t.ports);
        drop(p);
        self.notify.notify_one();
    }

    /// The rows a transaction about to be sent will change: their updates are ours until the
    /// returned watch says how the transaction ended.
    pub fn expect_echo(self: &Arc<Self>, rows: HashSet<Uuid>) -> EchoWatch {
        self.lock().expect(&rows, Instant::now());
        EchoWatch {
            wake: self.clone(),
            rows,
        }
    }

    /// What the next pass must look at, if anything.
    pub fn take(&self) -> Option<Scope> {
        let mut p = self.lock();
        if p.full {
            p.full = false;
            p.dirty.clear();
            p.touched = Touched::default();
            Some(Scope::All)
        } else if !p.dirty.is_empty() || p.touched != Touched::default() {
            let touched = std::mem::take(&mut p.touched);
            Some(Scope::Narrow {
                peerings: std::mem::take(&mut p.dirty),
                vpcs: touched.vpcs,
                ports: touched.ports,
            })
        } else {
            None
        }
    }

    /// Resolves at the next wake-up (immediately if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::{ChangeKind, Table};

    fn change(u: Uuid) -> RowChange {
        RowChange {
            table: Table::LogicalRouterPort,
            uuid: u,
            kind: ChangeKind::Modify,
        }
    }

    #[test]
    fn starts_with_a_full_pass_then_names_peerings() {
        let w = Wake::new();
        assert_eq!(w.take(), Some(Scope::All));
        assert_eq!(w.take(), None);
        w.peering("a");
        w.peering("b");
        assert_eq!(
            w.take(),
            Some(Scope::Narrow {
                peerings: ["a".to_string(), "b".to_string()].into(),
                vpcs: BTreeSet::new(),
                ports: BTreeSet::new(),
            })
        );
        w.touched(Touched {
            vpcs: ["r".to_string()].into(),
            ports: BTreeSet::new(),
        });
        w.peering("c");
        assert_eq!(
            w.take(),
            Some(Scope::Narrow {
                peerings: ["c".to_string()].into(),
                vpcs: ["r".to_string()].into(),
                ports: BTreeSet::new(),
            })
        );
        w.touched(Touched::default());
        assert_eq!(w.take(), None, "nothing touched wakes nothing");
        w.peering("a");
        w.full();
        assert_eq!(w.take(), Some(Scope::All), "full wins over names");
    }

    #[test]
    fn our_echo_is_not_foreign_but_the_next_change_of_the_row_is() {
        let w = Arc::new(Wake::new());
        w.take();
        let ours = Uuid::from_u128(1);
        let watch = w.expect_echo(HashSet::from([ours]));
        assert!(w.foreign(&[change(ours)]).is_empty());
        watch.committed();
        // The echo was consumed: the same row changing again is someone else.
        assert_eq!(w.foreign(&[change(ours)]), HashSet::from([ours]));
        // A failed transaction's rows are forgotten.
        drop(w.expect_echo(HashSet::from([ours])));
        assert_eq!(w.foreign(&[change(ours)]), HashSet::from([ours]));
        assert_eq!(w.take(), None, "the caller wakes the worker, not foreign()");
    }

    /// The fourth of four pipelined transactions of 2,000 rows is answered seconds after it
    /// was sent: its echo is still ours, however late; after its reply, only for the grace.
    #[test]
    fn an_echo_is_expected_while_its_transaction_is_unanswered_then_for_the_grace() {
        let mut p = Pending::default();
        let (row, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let sent = Instant::now();
        p.expect(&HashSet::from([row, other]), sent);
        let late = sent + 5 * ECHO_GRACE;
        assert!(p.foreign(&[change(row)], late).is_empty(), "unanswered");
        p.replied(&HashSet::from([row, other]), true, late);
        // `other`'s write changed nothing (no echo): it hides the row's next change only
        // within the grace that follows the reply.
        let within = late + ECHO_GRACE / 2;
        let mut q = p.clone();
        assert!(
            q.foreign(&[change(other)], within).is_empty(),
            "within the grace"
        );
        let after = late + ECHO_GRACE;
        assert_eq!(p.foreign(&[change(other)], after), HashSet::from([other]));
        assert!(p.echo.is_empty(), "{:?}", p.echo);
    }

    #[test]
    fn a_transaction_that_failed_or_was_never_awaited_expects_no_echo() {
        let mut p = Pending::default();
        let row = Uuid::from_u128(1);
        let now = Instant::now();
        p.expect(&HashSet::from([row]), now);
        p.replied(&HashSet::from([row]), false, now);
        assert!(p.echo.is_empty(), "{:?}", p.echo);
        assert_eq!(p.foreign(&[change(row)], now), HashSet::from([row]));
    }
}
