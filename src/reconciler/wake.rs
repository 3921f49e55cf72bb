//! What wakes the worker and what the next pass must look at.
//!
//! Postgres notifications name the peering that changed: those are looked at
//! alone. An NB change someone else made names the routers and port names it
//! touched (`nb_scope.rs`): the peerings of those are looked at. Anything the
//! worker cannot pin down (a change it cannot place, a cache resync, a lost
//! listener, the timer, a failed pass) asks for a full pass. The NB echo of the worker's own transactions wakes nobody:
//! rows a transaction touches are registered before it is sent, and their
//! updates are recognised when they come back (for a short while only, so a
//! write that changed nothing cannot hide a later foreign change for long).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

use super::nb_scope::Touched;
use super::pass::Scope;
use crate::ovsdb::RowChange;

/// How long a registered echo is still expected once its transaction's reply came (while the
/// transaction is on the wire it is expected however long NB takes: a pipelined transaction's
/// echo comes only after the ones ahead of it).
const ECHO_TTL: Duration = Duration::from_secs(2);

/// Shared between the worker and its listeners.
#[derive(Default)]
pub struct Wake {
    pending: Mutex<Pending>,
    notify: Notify,
}

#[derive(Default)]
struct Pending {
    full: bool,
    dirty: BTreeSet<String>,
    touched: Touched,
    /// Echoes expected per row: how many, and since when the last transaction expecting one
    /// has its reply (`None`: still on the wire, no expiry).
    echo: HashMap<Uuid, (u32, Option<Instant>)>,
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
        self.foreign_at(changes, Instant::now())
    }

    fn foreign_at(&self, changes: &[RowChange], now: Instant) -> HashSet<Uuid> {
        let mut p = self.lock();
        p.echo.retain(|_, (_, landed)| {
            landed.is_none_or(|at| now.saturating_duration_since(at) < ECHO_TTL)
        });
        let mut foreign = HashSet::new();
        for c in changes {
            match p.echo.get_mut(&c.uuid) {
                Some((n, _)) if *n > 1 => *n -= 1,
                Some(_) => {
                    p.echo.remove(&c.uuid);
                }
                None => {
                    foreign.insert(c.uuid);
                }
            }
        }
        foreign
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

    /// The rows a transaction about to be sent will change.
    pub fn expect_echo(&self, rows: &HashSet<Uuid>) {
        let mut p = self.lock();
        for u in rows {
            let e = p.echo.entry(*u).or_insert((0, None));
            e.0 += 1;
            e.1 = None;
        }
    }

    /// The transaction committed and its reply came: its echo came before it, so what is still
    /// expected (a write that changed nothing) is given up after [`ECHO_TTL`].
    pub fn echo_landed(&self, rows: &HashSet<Uuid>) {
        self.echo_landed_at(rows, Instant::now())
    }

    fn echo_landed_at(&self, rows: &HashSet<Uuid>, now: Instant) {
        let mut p = self.lock();
        for u in rows {
            if let Some((_, landed)) = p.echo.get_mut(u) {
                *landed = Some(now);
            }
        }
    }

    /// The transaction failed: no echo will come.
    pub fn forget_echo(&self, rows: &HashSet<Uuid>) {
        let mut p = self.lock();
        for u in rows {
            if let Some((n, _)) = p.echo.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    p.echo.remove(u);
                }
            }
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
        let w = Wake::new();
        w.take();
        let ours = Uuid::from_u128(1);
        w.expect_echo(&HashSet::from([ours]));
        assert!(w.foreign(&[change(ours)]).is_empty());
        // The echo was consumed: the same row changing again is someone else.
        assert_eq!(w.foreign(&[change(ours)]), HashSet::from([ours]));
        // A failed transaction's rows are forgotten.
        w.expect_echo(&HashSet::from([ours]));
        w.forget_echo(&HashSet::from([ours]));
        assert_eq!(w.foreign(&[change(ours)]), HashSet::from([ours]));
        assert_eq!(w.take(), None, "the caller wakes the worker, not foreign()");
    }

    #[test]
    fn an_echo_is_expected_while_its_transaction_is_on_the_wire_then_for_a_while() {
        let w = Wake::new();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let now = Instant::now();
        w.expect_echo(&HashSet::from([a, b]));
        // Behind other pipelined transactions: its echo comes late, still ours.
        let late = now + ECHO_TTL * 5;
        assert!(w.foreign_at(&[change(a)], late).is_empty());
        // Its reply came; b's write changed nothing (no echo): b is given up after the TTL.
        w.echo_landed_at(&HashSet::from([a, b]), late);
        assert!(w.foreign_at(&[], late + ECHO_TTL / 2).is_empty());
        assert!(w.lock().echo.contains_key(&b));
        assert_eq!(
            w.foreign_at(&[change(b)], late + ECHO_TTL * 2),
            HashSet::from([b])
        );
    }
}
