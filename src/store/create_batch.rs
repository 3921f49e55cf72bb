//! The statements of a group commit of creates (`api::create_batch`): one read of
//! everything the batch's creates are judged against, and one insert of all the peerings
//! the batch stores, with their port names, followed by the commit. Both run inside a
//! [`CreateTx`] holding the per-VPC locks of every VPC of the batch.

use sqlx::types::Json;

use super::conflicts::ProbeArgs;
use super::create::{CreateTx, HashedRow};
use super::hub::{reaches, FULL_READ_ROWS};
use super::model::{Labels, NewPeering, PeeringRow, StoredRoute};
use super::{PeeringRecord, RequestRecord, StoreError};
use crate::peering::topology::ConflictQuery;

/// One peering of a batch insert: the peering, its request fingerprint, its port names.
pub struct BatchInsert<'a> {
    /// The peering.
    pub new: &'a NewPeering,
    /// `request_fingerprint` of its request.
    pub request_hash: &'a [u8],
    /// Its two peer-port names.
    pub ports: &'a [String],
}

/// What a batch's creates are judged against: the rows read, and those that do not decode
/// (kept apart, so that only the creates they touch fail).
pub struct BatchRead {
    /// The rows that decode.
    pub records: Vec<RequestRecord>,
    /// The rows that do not.
    pub unreadable: Vec<UnreadableRow>,
}

/// A stored row that does not decode (a bug or a hand-edited row): which one, and why.
pub struct UnreadableRow {
    /// The peering.
    pub name: String,
    /// Its local VPC.
    pub local_vpc: String,
    /// Its remote VPC.
    pub remote_vpc: String,
    /// Why it does not decode.
    pub error: StoreError,
}

impl CreateTx<'_> {
    /// What every create of a batch is judged against when none of its VPCs is a hub, with
    /// request fingerprints, in one round trip and one snapshot (taken after the locks): every
    /// peering of the batch's VPCs (so their links too: nothing else to read), the peerings
    /// named like one of `names` or holding one of `ports`, and those created with any of
    /// `request_ids`. `None` when a VPC has `per_vpc` peerings or more on either side (a hub):
    /// at most `per_vpc` of them are read per VPC and side, and the caller asks the probe
    /// ([`Self::list_for_batch_probe`]) instead; `None` too when the read would pass
    /// [`FULL_READ_ROWS`] rows (many small VPCs together: at most that many plus one are
    /// read). No NB is needed to ask this.
    pub async fn list_for_batch(
        &mut self,
        vpcs: &[String],
        names: &[String],
        ports: &[String],
        request_ids: &[String],
        per_vpc: usize,
    ) -> Result<Option<BatchRead>, StoreError> {
        let limit = i64::try_from(per_vpc).unwrap_or(i64::MAX);
        let budget = i64::try_from(FULL_READ_ROWS + 1).unwrap_or(i64::MAX);
        // The per-VPC arms are bounded scans of peerings_{local,remote}_vpc_name_c.
        let rows = self
            .store
            .timed(
                "peering_list_for_batch",
                sqlx::query_as!(
                    HashedRow,
                    r#"WITH q AS (
                         SELECT name FROM peerings WHERE name = ANY($1)
                         UNION SELECT peering_name FROM peering_ports WHERE port_name = ANY($2)
                         UNION SELECT name FROM peerings WHERE request_id = ANY($3)
                         UNION SELECT t.name FROM unnest($4::text[]) AS v(vpc),
                               LATERAL (SELECT name FROM peerings
                                        WHERE local_vpc = v.vpc LIMIT $5) AS t
                         UNION SELECT t.name FROM unnest($4::text[]) AS v(vpc),
                               LATERAL (SELECT name FROM peerings
                                        WHERE remote_vpc = v.vpc LIMIT $5) AS t)
                       SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag, request_hash
                       FROM peerings WHERE name = ANY(ARRAY(SELECT name FROM q LIMIT $6))
                       ORDER BY name"#,
                    names,
                    ports,
                    request_ids,
                    vpcs,
                    limit,
                    budget,
                )
                .fetch_all(&mut *self.tx),
            )
            .await?;
        let sides = rows
            .iter()
            .map(|r| (r.local_vpc.as_str(), r.remote_vpc.as_str()));
        if rows.len() > FULL_READ_ROWS || reaches(sides, vpcs, per_vpc) {
            return Ok(None);
        }
        Ok(Some(split_unreadable(rows)))
    }

    /// What every create of a batch is judged against at a hub, with request fingerprints, in
    /// one round trip and one snapshot (taken after the locks): of the peerings of the batch's
    /// VPCs only those that can take part in the rules for its creates ([`ConflictQuery`],
    /// merged over them; the SQL function `peerings_conflicting` of migration
    /// `20261127010000`), found through indexes (a new spoke of a hub reads its few
    /// neighbours, not the hub's N); the peerings named like one of them or holding one of
    /// their port names; and those created with any of `request_ids`.
    pub async fn list_for_batch_probe(
        &mut self,
        q: &ConflictQuery,
        request_ids: &[String],
    ) -> Result<BatchRead, StoreError> {
        let ProbeArgs {
            names,
            ports,
            lo,
            hi,
            nets,
            vpcs,
        } = ProbeArgs::of(q);
        let rows = self
            .store
            .timed(
                "peering_list_for_batch_probe",
                sqlx::query_as!(
                    HashedRow,
                    r#"SELECT name, local_vpc, remote_vpc, local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes: Json<Vec<StoredRoute>>",
                         state, state_message, generation, observed_generation, request_id,
                         create_time, update_time, generation_time,
                         labels AS "labels: Json<Labels>", etag, request_hash
                       FROM peerings
                       WHERE name = ANY(ARRAY(
                         SELECT c.name FROM peerings_conflicting($1, $2, $3, $4, $5::cidr[], $6) AS c
                         UNION SELECT r.name FROM peerings r WHERE r.request_id = ANY($7)))
                       ORDER BY name"#,
                    &names as &[&str],
                    &ports as &[&str],
                    &lo as &[&str],
                    &hi as &[&str],
                    &nets,
                    &vpcs as &[&str],
                    request_ids
                )
                .fetch_all(&mut *self.tx),
            )
            .await?;
        Ok(split_unreadable(rows))
    }

    /// Every link held in any of `vpcs` (by peerings in any state but rejected or expired,
    /// requests awaiting acceptance included): (VPC, link). What a link allocated for a create
    /// of the batch must avoid, read apart from the peerings ([`Self::list_for_batch_probe`]
    /// reads only those whose links overlap something).
    pub async fn links_in(
        &mut self,
        vpcs: &[String],
    ) -> Result<Vec<(String, ipnet::IpNet)>, StoreError> {
        let rows = self
            .store
            .timed(
                "peering_links_in",
                sqlx::query!(
                    // By the GiST of each family, searched by the VPC's hash as it leads
                    // (migration 20261127100000): one index scan per VPC and family.
                    r#"SELECT l.vpc AS "vpc!", l.link AS "link!: ipnet::IpNet"
                       FROM unnest($1::text[]) AS v(vpc),
                       LATERAL (SELECT vpc, link FROM peering_links
                                WHERE family(link) = 4 AND vpc = v.vpc
                                  AND hashtextextended(vpc, 0) = hashtextextended(v.vpc, 0)
                                UNION ALL
                                SELECT vpc, link FROM peering_links
                                WHERE family(link) = 6 AND vpc = v.vpc
                                  AND hashtextextended(vpc, 0) = hashtextextended(v.vpc, 0)) AS l"#,
                    vpcs
                )
                .fetch_all(&mut *self.tx),
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.vpc, r.link)).collect())
    }

    /// Inserts every peering of `batch` (generation 1, each in its `new.state`) with its
    /// port names and request fingerprint in one statement; [`Self::commit`] commits. The constraints
    /// still have the last word: a violation fails the whole statement (nothing of the
    /// batch is stored), and says which constraint, not which peering.
    pub async fn insert_all(
        &mut self,
        batch: &[BatchInsert<'_>],
    ) -> Result<Vec<PeeringRecord>, StoreError> {
        // Rows in name order, port names in their order: two batches inserting the same
        // unique keys take them in one order and cannot deadlock on them.
        let mut sorted: Vec<&BatchInsert<'_>> = batch.iter().collect();
        sorted.sort_by(|a, b| a.new.name.cmp(&b.new.name));
        let batch = sorted;
        let col = |f: &dyn Fn(&NewPeering) -> String| -> Vec<String> {
            batch.iter().map(|b| f(b.new)).collect()
        };
        let names = col(&|n| n.name.clone());
        let local_vpcs = col(&|n| n.local_vpc.clone());
        let remote_vpcs = col(&|n| n.remote_vpc.clone());
        let states = col(&|n| n.state.as_str().to_string());
        let messages = col(&|n| n.state_message.clone());
        let addr = |f: &dyn Fn(&NewPeering) -> Option<ipnet::IpNet>| -> Vec<Option<ipnet::IpNet>> {
            batch.iter().map(|b| f(b.new)).collect()
        };
        let local_v4 = addr(&|n| n.local_v4);
        let remote_v4 = addr(&|n| n.remote_v4);
        let local_v6 = addr(&|n| n.local_v6);
        let remote_v6 = addr(&|n| n.remote_v6);
        let local_routes: Vec<Json<&Vec<StoredRoute>>> =
            batch.iter().map(|b| Json(&b.new.local_routes)).collect();
        let remote_routes: Vec<Json<&Vec<StoredRoute>>> =
            batch.iter().map(|b| Json(&b.new.remote_routes)).collect();
        let labels: Vec<Json<&Labels>> = batch.iter().map(|b| Json(&b.new.labels)).collect();
        let request_ids: Vec<Option<String>> =
            batch.iter().map(|b| b.new.request_id.clone()).collect();
        let hashes: Vec<Vec<u8>> = batch.iter().map(|b| b.request_hash.to_vec()).collect();
        // Duplicates kept: two rows holding one port name fail on its key, as they must.
        let mut ports: Vec<(String, String)> = batch
            .iter()
            .flat_map(|b| b.ports.iter().map(|p| (p.clone(), b.new.name.clone())))
            .collect();
        ports.sort();
        let (port_names, port_peerings): (Vec<String>, Vec<String>) = ports.into_iter().unzip();
        let rows = self
            .store
            .timed(
                "peering_insert_all",
                sqlx::query_as!(
                    PeeringRow,
                    r#"WITH p AS (
                         INSERT INTO peerings (name, local_vpc, remote_vpc, local_v4, remote_v4,
                           local_v6, remote_v6, local_routes, remote_routes, request_id,
                           request_hash, state, state_message, labels)
                         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::inet[],
                           $5::inet[], $6::inet[], $7::inet[], $8::jsonb[], $9::jsonb[],
                           $10::text[], $11::bytea[], $12::text[], $13::text[], $14::jsonb[])
                         RETURNING *),
                       ports AS (
                         INSERT INTO peering_ports (port_name, peering_name)
                         SELECT * FROM UNNEST($15::text[], $16::text[]))
                       SELECT name AS "name!", local_vpc AS "local_vpc!",
                         remote_vpc AS "remote_vpc!", local_v4, remote_v4, local_v6, remote_v6,
                         local_routes AS "local_routes!: Json<Vec<StoredRoute>>",
                         remote_routes AS "remote_routes!: Json<Vec<StoredRoute>>",
                         state AS "state!", state_message AS "state_message!",
                         generation AS "generation!",
                         observed_generation AS "observed_generation!", request_id,
                         create_time AS "create_time!", update_time AS "update_time!",
                         generation_time AS "generation_time!",
                         labels AS "labels!: Json<Labels>", etag AS "etag!"
                       FROM p"#,
                    &names,
                    &local_vpcs,
                    &remote_vpcs,
                    &local_v4 as _,
                    &remote_v4 as _,
                    &local_v6 as _,
                    &remote_v6 as _,
                    // jsonb parameters: the macro cannot check a serde type, so `as _`.
                    &local_routes as _,
                    &remote_routes as _,
                    &request_ids as _,
                    &hashes,
                    &states,
                    &messages,
                    &labels as _,
                    &port_names,
                    &port_peerings,
                )
                .fetch_all(&mut *self.tx),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Commits (and releases the locks).
    pub async fn commit(self) -> Result<(), StoreError> {
        self.store
            .timed("peering_create_commit", self.tx.commit())
            .await
    }
}

/// The rows read, those that do not decode kept apart.
fn split_unreadable(rows: Vec<HashedRow>) -> BatchRead {
    let mut read = BatchRead {
        records: Vec::with_capacity(rows.len()),
        unreadable: Vec::new(),
    };
    for row in rows {
        let (name, local_vpc, remote_vpc) = (
            row.name.clone(),
            row.local_vpc.clone(),
            row.remote_vpc.clone(),
        );
        match RequestRecord::try_from(row) {
            Ok(r) => read.records.push(r),
            Err(error) => read.unreadable.push(UnreadableRow {
                name,
                local_vpc,
                remote_vpc,
                error,
            }),
        }
    }
    read
}
