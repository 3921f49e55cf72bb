//! Rows of the `peerings` table as Rust values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where the worker is with a peering (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeeringState {
    /// OVN NB does not yet hold exactly the current generation.
    Pending,
    /// OVN NB holds exactly the desired rows of `observed_generation`.
    Active,
    /// The worker cannot converge it; the message says why.
    Failed,
    /// Deletion requested; a tombstone until NB is clean.
    Deleting,
    /// A cross-tenant request waiting for the remote VPC's tenant. Never in NB.
    PendingAcceptance,
    /// A request the remote VPC's tenant rejected. Never in NB; holds only its name.
    Rejected,
    /// A request not accepted within the acceptance TTL. As [`PeeringState::Rejected`].
    Expired,
}

impl PeeringState {
    /// The column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            PeeringState::Pending => "pending",
            PeeringState::Active => "active",
            PeeringState::Failed => "failed",
            PeeringState::Deleting => "deleting",
            PeeringState::PendingAcceptance => "pending_acceptance",
            PeeringState::Rejected => "rejected",
            PeeringState::Expired => "expired",
        }
    }

    /// Every state, for gauges.
    pub const ALL: [PeeringState; 7] = [
        PeeringState::Pending,
        PeeringState::Active,
        PeeringState::Failed,
        PeeringState::Deleting,
        PeeringState::PendingAcceptance,
        PeeringState::Rejected,
        PeeringState::Expired,
    ];

    /// Whether the worker converges NB to this peering (its rows may be in NB). The worker's
    /// queries select exactly these states (`state IN ('pending', 'active', 'failed',
    /// 'deleting')`); requests, rejected and expired peerings are not its business.
    pub fn in_northbound(self) -> bool {
        matches!(
            self,
            PeeringState::Pending
                | PeeringState::Active
                | PeeringState::Failed
                | PeeringState::Deleting
        )
    }

    /// Whether the peering holds its VPC pair, port names and link (as the partial unique
    /// index and exclusion constraints of the `acceptance` migration say).
    pub fn holds_pair(self) -> bool {
        !matches!(self, PeeringState::Rejected | PeeringState::Expired)
    }

    /// Parses the column's text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => PeeringState::Pending,
            "active" => PeeringState::Active,
            "failed" => PeeringState::Failed,
            "deleting" => PeeringState::Deleting,
            "pending_acceptance" => PeeringState::PendingAcceptance,
            "rejected" => PeeringState::Rejected,
            "expired" => PeeringState::Expired,
            _ => return None,
        })
    }
}

/// An explicit route as stored (`local_routes`/`remote_routes` jsonb).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoute {
    /// Normalised prefix.
    pub cidr: String,
    /// `dst-ip` or `src-ip`.
    pub policy: String,
}

/// A peering's labels (AIP-128), as stored (`labels` jsonb) and in key order.
pub type Labels = BTreeMap<String, String>;

/// A peering to insert: checked input plus the addresses to use.
#[derive(Debug, Clone)]
pub struct NewPeering {
    /// Peering name.
    pub name: String,
    /// First VPC.
    pub local_vpc: String,
    /// Second VPC.
    pub remote_vpc: String,
    /// IPv4 connect address of the local side, with prefix length.
    pub local_v4: Option<IpNet>,
    /// IPv4 connect address of the remote side.
    pub remote_v4: Option<IpNet>,
    /// IPv6 connect address of the local side.
    pub local_v6: Option<IpNet>,
    /// IPv6 connect address of the remote side.
    pub remote_v6: Option<IpNet>,
    /// Explicit routes into local_vpc (empty = automatic).
    pub local_routes: Vec<StoredRoute>,
    /// Explicit routes into remote_vpc (empty = automatic).
    pub remote_routes: Vec<StoredRoute>,
    /// Idempotency key.
    pub request_id: Option<String>,
    /// Labels, checked.
    pub labels: Labels,
    /// [`PeeringState::Pending`], or [`PeeringState::PendingAcceptance`] for a cross-tenant
    /// request.
    pub state: PeeringState,
    /// Why it is in that state (for a request: whose acceptance it waits for).
    pub state_message: String,
}

/// A stored peering.
#[derive(Debug, Clone, PartialEq)]
pub struct PeeringRecord {
    /// Peering name.
    pub name: String,
    /// First VPC.
    pub local_vpc: String,
    /// Second VPC.
    pub remote_vpc: String,
    /// IPv4 connect address of the local side.
    pub local_v4: Option<IpNet>,
    /// IPv4 connect address of the remote side.
    pub remote_v4: Option<IpNet>,
    /// IPv6 connect address of the local side.
    pub local_v6: Option<IpNet>,
    /// IPv6 connect address of the remote side.
    pub remote_v6: Option<IpNet>,
    /// Explicit routes into local_vpc (empty = automatic).
    pub local_routes: Vec<StoredRoute>,
    /// Explicit routes into remote_vpc (empty = automatic).
    pub remote_routes: Vec<StoredRoute>,
    /// Worker state.
    pub state: PeeringState,
    /// Why, when there is a reason.
    pub state_message: String,
    /// Bumped by every desired-state change.
    pub generation: i64,
    /// Last generation the worker judged.
    pub observed_generation: i64,
    /// The request_id it was created with.
    pub request_id: Option<String>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last change of anything.
    pub update_time: DateTime<Utc>,
    /// When the current generation was committed.
    pub generation_time: DateTime<Utc>,
    /// Labels.
    pub labels: Labels,
    /// Replaced by a fresh value on every change of the row (a trigger): the etag.
    pub etag: uuid::Uuid,
}

impl PeeringRecord {
    /// Local connect address(es), Kube-OVN style: `v4/len,v6/len`.
    pub fn local_connect(&self) -> String {
        join_addrs(self.local_v4, self.local_v6)
    }

    /// Remote connect address(es), Kube-OVN style.
    pub fn remote_connect(&self) -> String {
        join_addrs(self.remote_v4, self.remote_v6)
    }
}

fn join_addrs(v4: Option<IpNet>, v6: Option<IpNet>) -> String {
    [v4, v6]
        .into_iter()
        .flatten()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The raw row, as `sqlx::query_as!` decodes it (fields named like the columns).
pub(super) struct PeeringRow {
    pub name: String,
    pub local_vpc: String,
    pub remote_vpc: String,
    pub local_v4: Option<IpNet>,
    pub remote_v4: Option<IpNet>,
    pub local_v6: Option<IpNet>,
    pub remote_v6: Option<IpNet>,
    pub local_routes: sqlx::types::Json<Vec<StoredRoute>>,
    pub remote_routes: sqlx::types::Json<Vec<StoredRoute>>,
    pub state: String,
    pub state_message: String,
    pub generation: i64,
    pub observed_generation: i64,
    pub request_id: Option<String>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub generation_time: DateTime<Utc>,
    pub labels: sqlx::types::Json<Labels>,
    pub etag: uuid::Uuid,
}

impl TryFrom<PeeringRow> for PeeringRecord {
    type Error = super::StoreError;

    fn try_from(r: PeeringRow) -> Result<Self, Self::Error> {
        let state = PeeringState::parse(&r.state).ok_or_else(|| super::StoreError::Corrupt {
            name: r.name.clone(),
            reason: format!("unknown state {:?}", r.state),
        })?;
        Ok(PeeringRecord {
            name: r.name,
            local_vpc: r.local_vpc,
            remote_vpc: r.remote_vpc,
            local_v4: r.local_v4,
            remote_v4: r.remote_v4,
            local_v6: r.local_v6,
            remote_v6: r.remote_v6,
            local_routes: r.local_routes.0,
            remote_routes: r.remote_routes.0,
            state,
            state_message: r.state_message,
            generation: r.generation,
            observed_generation: r.observed_generation,
            request_id: r.request_id,
            create_time: r.create_time,
            update_time: r.update_time,
            generation_time: r.generation_time,
            labels: r.labels.0,
            etag: r.etag,
        })
    }
}

impl PeeringRecord {
    /// The peering as the rules see it. Stored rows passed the same checks when
    /// written, so a failure here means a hand-edited or corrupt row.
    pub fn spec(&self) -> Result<crate::peering::PeeringSpec, super::StoreError> {
        use crate::peering::{ConnectAddrs, PeeringSpec, RoutePolicy, RouteSpec};
        let corrupt = |reason: String| super::StoreError::Corrupt {
            name: self.name.clone(),
            reason,
        };
        let connect = |v4: Option<IpNet>, v6: Option<IpNet>| {
            let mut c = ConnectAddrs::default();
            for a in [v4, v6].into_iter().flatten() {
                c.set(a);
            }
            c
        };
        let routes = |stored: &[StoredRoute]| -> Result<Vec<RouteSpec>, super::StoreError> {
            stored
                .iter()
                .map(|r| {
                    let prefix: IpNet = r
                        .cidr
                        .parse()
                        .map_err(|_| corrupt(format!("route {:?} is not a prefix", r.cidr)))?;
                    let policy = RoutePolicy::from_ovn(Some(&r.policy))
                        .ok_or_else(|| corrupt(format!("unknown route policy {:?}", r.policy)))?;
                    Ok(RouteSpec { prefix, policy })
                })
                .collect()
        };
        Ok(PeeringSpec {
            name: self.name.clone(),
            local_vpc: self.local_vpc.clone(),
            remote_vpc: self.remote_vpc.clone(),
            local_connect: connect(self.local_v4, self.local_v6),
            remote_connect: connect(self.remote_v4, self.remote_v6),
            local_routes: routes(&self.local_routes)?,
            remote_routes: routes(&self.remote_routes)?,
        })
    }
}

impl StoredRoute {
    /// The stored form of a route.
    pub fn from_spec(r: &crate::peering::RouteSpec) -> StoredRoute {
        StoredRoute {
            cidr: r.prefix.to_string(),
            policy: r.policy.as_ovn_str().to_string(),
        }
    }
}

impl NewPeering {
    /// The row for a checked spec.
    pub fn from_spec(
        spec: &crate::peering::PeeringSpec,
        request_id: Option<String>,
        labels: Labels,
    ) -> NewPeering {
        NewPeering {
            name: spec.name.clone(),
            local_vpc: spec.local_vpc.clone(),
            remote_vpc: spec.remote_vpc.clone(),
            local_v4: spec.local_connect.v4.map(IpNet::V4),
            remote_v4: spec.remote_connect.v4.map(IpNet::V4),
            local_v6: spec.local_connect.v6.map(IpNet::V6),
            remote_v6: spec.remote_connect.v6.map(IpNet::V6),
            local_routes: spec
                .local_routes
                .iter()
                .map(StoredRoute::from_spec)
                .collect(),
            remote_routes: spec
                .remote_routes
                .iter()
                .map(StoredRoute::from_spec)
                .collect(),
            request_id,
            labels,
            state: PeeringState::Pending,
            state_message: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PeeringState;

    #[test]
    fn every_state_round_trips_and_only_converged_ones_reach_nb() {
        for s in PeeringState::ALL {
            assert_eq!(PeeringState::parse(s.as_str()), Some(s));
        }
        let in_nb: Vec<&str> = PeeringState::ALL
            .iter()
            .filter(|s| s.in_northbound())
            .map(|s| s.as_str())
            .collect();
        // The worker's queries list exactly these (`src/store/peerings.rs`).
        assert_eq!(in_nb, ["pending", "active", "failed", "deleting"]);
        let free: Vec<&str> = PeeringState::ALL
            .iter()
            .filter(|s| !s.holds_pair())
            .map(|s| s.as_str())
            .collect();
        // The partial pair index and link exclusions leave out exactly these.
        assert_eq!(free, ["rejected", "expired"]);
    }
}
