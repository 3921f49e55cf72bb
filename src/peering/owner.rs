//! Whose Northbound rows are whose, and how many of its own rows one pass may delete.
//!
//! Several ovn-peerd deployments (one Postgres database each: prod beside staging, blue/green,
//! a replica started with the wrong `DATABASE_URL`) may share one NB. Every row a deployment
//! writes carries the owner mark ([`OWNER_KEY`]) and its deployment id ([`INSTANCE_KEY`]).
//! [`Ownership::classify`] decides, from a row's `external_ids` alone, what this deployment may
//! do with it:
//!
//! - **ours**: owner mark and our instance id: changed and deleted as the plan says;
//! - **adoptable**: owner mark but no instance id (written by a version before deployment ids)
//!   *and* this deployment holds a peering of the row's name: ours, and the plan's first update
//!   adds our instance id in place (same row: traffic never stops);
//! - **foreign**: anything else (no owner mark, another instance id, or an old row of a
//!   peering this deployment does not hold): never changed or deleted; a peering that needs
//!   its name (ports) is FAILED with [`RowOwner::Foreign`]'s description.
//!
//! The mass-deletion brake ([`mass_deletion`]) stops a pass that would delete more than half of
//! this deployment's rows (and more than [`MASS_DELETION_MIN`]): the signature of a worker
//! pointed at the wrong or an empty database, not of an operator deleting peerings one by one.
//! Rows of peerings deleted through the API (tombstones) are not counted: that deletion was
//! asked for, however many rows it takes.
//!
//! Pure functions over plain data: no I/O.

use std::collections::BTreeSet;

use super::{ExternalIds, OWNER_KEY, OWNER_VALUE, PEERING_KEY};

/// `external_ids` key holding the id of the deployment that wrote the row.
pub const INSTANCE_KEY: &str = "ovn-peerd:instance";

/// Deletions a pass may always make, whatever share of our rows they are.
pub const MASS_DELETION_MIN: usize = 10;

/// Who this deployment is, for [`Ownership::classify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// This deployment's id (the value of [`INSTANCE_KEY`] on its rows).
    pub instance: String,
    /// Names of every peering this deployment holds, tombstones included.
    pub held: BTreeSet<String>,
}

/// What this deployment may do with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOwner {
    /// Ours: owner mark and our instance id.
    Ours,
    /// Written by a version without instance ids, for a peering we hold: ours to adopt.
    Adoptable,
    /// Not ours to change or delete; who holds it, for a FAILED message.
    Foreign(String),
}

impl RowOwner {
    /// Whether the plan may change or delete the row.
    pub fn is_ours(&self) -> bool {
        matches!(self, RowOwner::Ours | RowOwner::Adoptable)
    }
}

impl Ownership {
    /// This deployment, holding the peerings `held`.
    pub fn new(instance: impl Into<String>, held: impl IntoIterator<Item = String>) -> Self {
        Ownership {
            instance: instance.into(),
            held: held.into_iter().collect(),
        }
    }

    /// What this deployment may do with a row carrying `ids`.
    pub fn classify(&self, ids: &(impl ExternalIds + ?Sized)) -> RowOwner {
        if ids.id(OWNER_KEY) != Some(OWNER_VALUE) {
            return RowOwner::Foreign("is not owned by ovn-peerd".into());
        }
        match ids.id(INSTANCE_KEY) {
            Some(i) if i == self.instance => RowOwner::Ours,
            Some(other) => RowOwner::Foreign(format!(
                "belongs to another ovn-peerd deployment ({INSTANCE_KEY}={other})"
            )),
            None => {
                let peering = ids.id(PEERING_KEY).unwrap_or("");
                if self.held.contains(peering) {
                    RowOwner::Adoptable
                } else {
                    RowOwner::Foreign(format!(
                        "was written by an earlier ovn-peerd for peering {peering:?}, \
                         which this deployment does not hold"
                    ))
                }
            }
        }
    }

    /// Whether the plan may change or delete a row carrying `ids`: [`Ownership::classify`]'s
    /// answer without writing a foreign row's description (a full pass asks it of every row).
    pub fn is_ours(&self, ids: &(impl ExternalIds + ?Sized)) -> bool {
        if ids.id(OWNER_KEY) != Some(OWNER_VALUE) {
            return false;
        }
        match ids.id(INSTANCE_KEY) {
            Some(i) => i == self.instance,
            None => self.held.contains(ids.id(PEERING_KEY).unwrap_or("")),
        }
    }
}

/// Why a pass deleting `deletions` of this deployment's `ours` NB rows must not, if it must
/// not: more than half of them, and more than [`MASS_DELETION_MIN`].
pub fn mass_deletion(deletions: usize, ours: usize) -> Option<String> {
    (deletions > MASS_DELETION_MIN && deletions * 2 > ours).then(|| {
        format!(
            "the pass would delete {deletions} of this deployment's {ours} OVN NB rows \
             (more than half): is the database the right one? Start ovn-peerd with \
             --allow-mass-deletion to let it"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::desired::markers;
    use crate::peering::Side;
    use std::collections::BTreeMap;

    fn me() -> Ownership {
        Ownership::new("dep-a", ["p".to_string()])
    }

    fn ids(peering: &str, instance: Option<&str>) -> BTreeMap<String, String> {
        let mut ids = markers(peering, 1, Side::Local);
        if let Some(i) = instance {
            ids.insert(INSTANCE_KEY.into(), i.into());
        }
        ids
    }

    #[test]
    fn our_instance_is_ours_another_is_foreign_and_named() {
        assert_eq!(me().classify(&ids("p", Some("dep-a"))), RowOwner::Ours);
        // Ours even for a peering we no longer hold: an orphan to delete.
        assert_eq!(me().classify(&ids("gone", Some("dep-a"))), RowOwner::Ours);
        match me().classify(&ids("p", Some("dep-b"))) {
            RowOwner::Foreign(why) => assert!(why.contains("dep-b"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rows_without_instance_are_adopted_only_for_held_peerings() {
        assert_eq!(me().classify(&ids("p", None)), RowOwner::Adoptable);
        match me().classify(&ids("q", None)) {
            RowOwner::Foreign(why) => assert!(why.contains("\"q\""), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn is_ours_says_what_classify_says() {
        let mut disowned = ids("p", Some("dep-a"));
        disowned.remove(OWNER_KEY);
        for row in [
            ids("p", Some("dep-a")),
            ids("gone", Some("dep-a")),
            ids("p", Some("dep-b")),
            ids("p", None),
            ids("q", None),
            disowned,
            BTreeMap::new(),
        ] {
            assert_eq!(me().is_ours(&row), me().classify(&row).is_ours(), "{row:?}");
        }
    }

    #[test]
    fn rows_without_the_owner_mark_are_foreign() {
        let mut disowned = ids("p", Some("dep-a"));
        disowned.remove(OWNER_KEY);
        assert!(!me().is_ours(&disowned));
        assert!(!me().is_ours(&BTreeMap::new()));
    }

    #[test]
    fn the_brake_needs_more_than_half_and_more_than_a_handful() {
        assert_eq!(mass_deletion(10, 10), None, "a handful is always fine");
        assert!(mass_deletion(11, 20).is_some());
        assert_eq!(mass_deletion(11, 22), None, "exactly half is fine");
        assert!(mass_deletion(12, 22).is_some());
        assert_eq!(mass_deletion(0, 0), None);
    }
}
