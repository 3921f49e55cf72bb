//! The NB fence: a writer that lost the lock cannot land an NB transaction.
//!
//! Taking the writer lock bumps the deployment's writer epoch in Postgres (in
//! the lock session). The new holder then writes it into NB, in
//! `NB_Global.external_ids:"ovn-peerd:epoch:<deployment id>"`, and starts
//! every transaction it sends with a `wait` asserting that NB still holds
//! exactly that value ([`Fence::wait_op`]). Once another replica has taken
//! the lock and written its higher epoch, the old holder's transactions fail
//! on that first operation and commit nothing, however late they arrive.
//!
//! This module owns that one `NB_Global` key and nothing else of the row.
//! The key is per deployment, so deployments sharing one NB never fence each
//! other.

use uuid::Uuid;

use crate::ovsdb::{
    Client, Condition, Datum, Mutation, Operation, OperationResult, OvsdbErrorKind, Row,
    TransactError, WaitUntil,
};

use super::PassError;

/// The NB table that carries the fence.
const NB_GLOBAL: &str = "NB_Global";
/// The fence's key in `NB_Global.external_ids`, followed by the deployment id.
pub const EPOCH_KEY_PREFIX: &str = "ovn-peerd:epoch:";
/// Read-compare-write rounds before giving up when others keep changing
/// `NB_Global.external_ids` between our read and our write.
const INSTALL_ATTEMPTS: usize = 5;

/// One holder's fence: its deployment's key and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    key: String,
    epoch: i64,
}

impl Fence {
    /// The fence of `deployment_id` at `epoch`.
    pub fn new(deployment_id: Uuid, epoch: i64) -> Fence {
        Fence {
            key: epoch_key(deployment_id),
            epoch,
        }
    }

    /// The holder's epoch.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The first operation of every transaction the holder sends: exactly one
    /// `NB_Global` row holds our key at our epoch, checked now (`timeout` 0).
    /// It fails with "timed out" once a newer holder has written its epoch.
    pub fn wait_op(&self) -> Operation {
        Operation::Wait {
            table: NB_GLOBAL.into(),
            conditions: vec![Condition::has_external_id(
                &self.key,
                &self.epoch.to_string(),
            )],
            columns: vec![],
            until: WaitUntil::Equal,
            rows: vec![Row::new()],
            timeout_ms: Some(0),
        }
    }
}

/// `ovn-peerd:epoch:<deployment id>`.
pub fn epoch_key(deployment_id: Uuid) -> String {
    format!("{EPOCH_KEY_PREFIX}{deployment_id}")
}

/// Whether a transaction that began with [`Fence::wait_op`] failed on it.
pub fn failed_on_fence(e: &TransactError) -> bool {
    matches!(e, TransactError::Operation { index: 0, error } if error.kind == OvsdbErrorKind::TimedOut)
}

/// What writing our epoch into NB should do, given what NB holds.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// NB holds our epoch or a newer one. Even ours is not taken as done: it
    /// may be another holder's (a database restored from a backup hands out
    /// an epoch again), and two holders must never share one. After our own
    /// write with an unknown outcome, the caller simply takes a newer epoch.
    Superseded(i64),
    /// Write ours over what is there (absent, older, or not a number).
    Write,
}

/// Compares the epoch NB holds under our key (if any) with ours.
fn step(held: Option<&str>, ours: i64) -> Step {
    match held.and_then(|v| v.parse::<i64>().ok()) {
        Some(v) if v >= ours => Step::Superseded(v),
        _ => Step::Write,
    }
}

/// What [`install`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// NB now holds our epoch: transactions behind [`Fence::wait_op`] can land.
    Yes,
    /// NB holds `theirs`, newer than or equal to ours: left as it is.
    Superseded {
        /// The epoch NB holds.
        theirs: i64,
    },
}

/// Writes `fence`'s epoch into NB unless NB already holds it or a newer one.
///
/// OVSDB conditions cannot compare a map value as a number, so this is a
/// compare-and-swap: read `NB_Global.external_ids`, decide here, and write
/// with a `wait` asserting the whole map is still what was read. A change by
/// anyone in between (another holder, an operator's own keys) fails the
/// `wait`, and the round starts over from a fresh read. Without an
/// `NB_Global` row (an NB nobody has initialised yet: `ovn-northd` and
/// `ovn-nbctl` create it the same way) it inserts one, asserting the table
/// is still empty.
pub async fn install(nb: &Client, fence: &Fence) -> Result<Installed, PassError> {
    for _ in 0..INSTALL_ATTEMPTS {
        let current = read_external_ids(nb).await?;
        let ops = match &current {
            None => vec![
                Operation::Wait {
                    table: NB_GLOBAL.into(),
                    conditions: vec![],
                    columns: vec![],
                    until: WaitUntil::Equal,
                    rows: vec![],
                    timeout_ms: Some(0),
                },
                Operation::Insert {
                    table: NB_GLOBAL.into(),
                    row: Row::from([(
                        "external_ids".to_string(),
                        Datum::map([(fence.key.as_str(), fence.epoch.to_string().as_str())]),
                    )]),
                    uuid_name: None,
                    uuid: None,
                },
            ],
            Some(map) => {
                match step(map_value(map, &fence.key), fence.epoch) {
                    Step::Superseded(theirs) => return Ok(Installed::Superseded { theirs }),
                    Step::Write => {}
                }
                vec![
                    Operation::Wait {
                        table: NB_GLOBAL.into(),
                        conditions: vec![],
                        columns: vec!["external_ids".into()],
                        until: WaitUntil::Equal,
                        rows: vec![Row::from([("external_ids".to_string(), map.clone())])],
                        timeout_ms: Some(0),
                    },
                    Operation::Mutate {
                        table: NB_GLOBAL.into(),
                        conditions: vec![],
                        mutations: vec![
                            Mutation::delete("external_ids", Datum::set([fence.key.as_str()])),
                            Mutation::insert(
                                "external_ids",
                                Datum::map([(
                                    fence.key.as_str(),
                                    fence.epoch.to_string().as_str(),
                                )]),
                            ),
                        ],
                    },
                ]
            }
        };
        match nb.transact(ops).await {
            Ok(_) => return Ok(Installed::Yes),
            // Changed since we read it (or a row appeared): read again.
            Err(TransactError::Operation { index: 0, error })
                if error.kind == OvsdbErrorKind::TimedOut => {}
            Err(TransactError::Commit(error))
                if error.kind == OvsdbErrorKind::ConstraintViolation && current.is_none() => {}
            Err(e) => return Err(PassError::Nb(e)),
        }
    }
    Err(PassError::Nb(TransactError::Protocol(format!(
        "NB_Global.external_ids kept changing: {INSTALL_ATTEMPTS} attempts to write the fence"
    ))))
}

/// `NB_Global.external_ids` as NB holds it now; `None` when there is no row.
async fn read_external_ids(nb: &Client) -> Result<Option<Datum>, PassError> {
    let select = Operation::Select {
        table: NB_GLOBAL.into(),
        conditions: vec![],
        columns: Some(vec!["external_ids".into()]),
    };
    let result = nb.transact(vec![select]).await.map_err(PassError::Nb)?;
    let bad = |why: String| PassError::Nb(TransactError::Protocol(why));
    let Some(OperationResult::Rows(rows)) = result.into_iter().next() else {
        return Err(bad("select on NB_Global returned no rows member".into()));
    };
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let ids = row
        .get("external_ids")
        .ok_or_else(|| bad("NB_Global row without external_ids".into()))?;
    Datum::from_json(ids)
        .map(Some)
        .map_err(|e| bad(format!("NB_Global.external_ids: {e}")))
}

fn map_value<'a>(map: &'a Datum, key: &str) -> Option<&'a str> {
    match map {
        Datum::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.as_str()),
        Datum::Set(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wait_asserts_exactly_one_nb_global_row_holds_our_epoch() {
        let id = Uuid::parse_str("6f1c2a7e-0000-4000-8000-000000000001").unwrap();
        let op = Fence::new(id, 7).wait_op();
        assert_eq!(
            op.to_json(),
            json!({"op": "wait", "table": "NB_Global", "timeout": 0,
                "where": [["external_ids", "includes",
                    ["map", [["ovn-peerd:epoch:6f1c2a7e-0000-4000-8000-000000000001", "7"]]]]],
                "columns": [], "until": "==", "rows": [{}]})
        );
    }

    #[test]
    fn a_newer_epoch_in_nb_is_never_overwritten() {
        assert_eq!(step(None, 3), Step::Write);
        assert_eq!(step(Some("2"), 3), Step::Write);
        assert_eq!(step(Some("3"), 3), Step::Superseded(3), "never shared");
        assert_eq!(step(Some("4"), 3), Step::Superseded(4));
        assert_eq!(
            step(Some("10"), 9),
            Step::Superseded(10),
            "numeric, not text order"
        );
        assert_eq!(step(Some("garbage"), 3), Step::Write);
    }

    #[test]
    fn only_a_timed_out_first_op_is_the_fence() {
        let err = |index, e: &str| TransactError::Operation {
            index,
            error: crate::ovsdb::OvsdbError::from_json(&json!({"error": e})),
        };
        assert!(failed_on_fence(&err(0, "timed out")));
        assert!(!failed_on_fence(&err(1, "timed out")));
        assert!(!failed_on_fence(&err(0, "constraint violation")));
    }
}
