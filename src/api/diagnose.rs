//! DiagnosePeering: gathers a [`crate::diagnose::Snapshot`] and runs the pure checks on it.
//!
//! Read-only. Most of it comes from the NB replica; the rows the replica does not hold (the
//! two routers' `policies` and their `Logical_Router_Policy` rows, `NB_Global`'s `nb_cfg`,
//! `sb_cfg`, `hv_cfg`) are read with `select`s, at most two transactions per call, and the
//! checks judge them together with the replica as it is a moment later (a change landing in
//! between shows in the next call). Deriving the wanted rows and checking is CPU work over
//! the replica: it runs on a blocking thread.

use serde_json::{Map, Value};
use tracing::warn;
use uuid::Uuid;

use super::error::ApiError;
use super::input;
use super::PeeringApi;
use crate::adapters::nb_diagnose::{snapshot, NbExtra};
use crate::diagnose::{self, NbCfg, PolicyRow, Severity};
use crate::ovsdb::{Atom, Condition, Datum, Operation, OperationResult, TransactError};
use crate::proto::v1::{self as pb, DiagnosePeeringRequest, DiagnosePeeringResponse};

impl PeeringApi {
    pub(super) async fn diagnose(
        &self,
        scope: super::authz::Scope,
        req: DiagnosePeeringRequest,
    ) -> Result<DiagnosePeeringResponse, ApiError> {
        input::diagnose(&req)?;
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "required"));
        }
        let Some(record) = self.inner.store.peering_get(&req.name).await? else {
            return Err(ApiError::peering_not_found(req.name));
        };
        scope.read_peering(&record)?;
        let both_sides =
            scope.read_vpc(&record.local_vpc).is_ok() && scope.read_vpc(&record.remote_vpc).is_ok();
        if !record.state.in_northbound() {
            let facts = crate::adapters::nb_diagnose::facts(&record);
            return Ok(DiagnosePeeringResponse {
                findings: diagnose::diagnose_outside_nb(&facts)
                    .into_iter()
                    .map(finding)
                    .collect(),
            });
        }
        let context = self
            .inner
            .store
            .peering_list_touching(&[&record.local_vpc, &record.remote_vpc])
            .await?;
        let routers: Vec<Uuid> = {
            let cache = self.nb_cache()?;
            [&record.local_vpc, &record.remote_vpc]
                .iter()
                .flat_map(|vpc| cache.router_by_name(vpc))
                .map(|r| r.uuid)
                .collect()
        };
        let extra = self.nb_extra(&routers).await?;
        let nb = self.inner.nb.clone();
        let protected = self.inner.settings.protected_vpcs.clone();
        let instance = self.inner.settings.instance.clone();
        let findings = tokio::task::spawn_blocking(move || {
            let snap = {
                let cache = nb.cache();
                snapshot(
                    &cache,
                    &record,
                    &context,
                    &protected,
                    instance.as_deref(),
                    extra,
                )
            };
            snap.map(|s| diagnose::diagnose(&s))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        .map_err(|why| ApiError::Internal(anyhow::anyhow!(why)))?;
        // A tenant may see the peering (one of its VPCs) but not the other VPC's router.
        let findings = findings.into_iter().map(|f| match &f.vpc {
            Some(vpc) if scope.read_vpc(vpc).is_err() => f.withheld(),
            None if f.check == "desired_rows" && !both_sides => f.withheld_verdict(),
            _ => f,
        });
        Ok(DiagnosePeeringResponse {
            findings: findings.map(finding).collect(),
        })
    }

    /// The routers' policies and `NB_Global`, read now.
    async fn nb_extra(&self, routers: &[Uuid]) -> Result<NbExtra, ApiError> {
        let select =
            |table: &str, conditions: Vec<Condition>, columns: &[&str]| Operation::Select {
                table: table.into(),
                conditions,
                columns: Some(columns.iter().map(|c| c.to_string()).collect()),
            };
        let mut ops: Vec<Operation> = routers
            .iter()
            .map(|u| {
                select(
                    "Logical_Router",
                    vec![Condition::uuid(*u)],
                    &["_uuid", "policies"],
                )
            })
            .collect();
        ops.push(select(
            "NB_Global",
            Vec::new(),
            &["_uuid", "nb_cfg", "sb_cfg", "hv_cfg"],
        ));
        let results = self.read(ops).await?;
        let mut extra = NbExtra::default();
        let mut wanted: Vec<(String, Uuid)> = Vec::new();
        for row in results.iter().take(routers.len()).flat_map(rows) {
            let router = uuid_of(row)?.to_string();
            for p in uuids(row.get("policies"))? {
                wanted.push((router.clone(), p));
            }
        }
        extra.nb_global = match results.last().map(rows).unwrap_or_default().first() {
            Some(g) => Some(NbCfg {
                uuid: uuid_of(g)?.to_string(),
                nb_cfg: int(g, "nb_cfg"),
                sb_cfg: int(g, "sb_cfg"),
                hv_cfg: int(g, "hv_cfg"),
            }),
            None => None,
        };
        if wanted.is_empty() {
            return Ok(extra);
        }
        let ops = wanted
            .iter()
            .map(|(_, u)| {
                select(
                    "Logical_Router_Policy",
                    vec![Condition::uuid(*u)],
                    &["_uuid", "priority", "match", "action"],
                )
            })
            .collect();
        let results = self.read(ops).await?;
        for ((router, _), result) in wanted.iter().zip(&results) {
            for row in rows(result) {
                let text = |c: &str| row.get(c).and_then(Value::as_str).unwrap_or("").to_string();
                extra
                    .policies
                    .entry(router.clone())
                    .or_default()
                    .push(PolicyRow {
                        uuid: uuid_of(row)?.to_string(),
                        priority: int(row, "priority"),
                        r#match: text("match"),
                        action: text("action"),
                    });
            }
        }
        Ok(extra)
    }

    /// One read-only transaction.
    async fn read(&self, ops: Vec<Operation>) -> Result<Vec<OperationResult>, ApiError> {
        self.inner.nb.transact(ops).await.map_err(|e| match e {
            TransactError::NotConnected
            | TransactError::OutcomeUnknown(_)
            | TransactError::Shutdown => {
                warn!(error = %e, "DiagnosePeering: NB read failed");
                ApiError::nb_unavailable()
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("reading NB")),
        })
    }
}

fn rows(r: &OperationResult) -> &[Map<String, Value>] {
    match r {
        OperationResult::Rows(rows) => rows,
        _ => &[],
    }
}

fn bad(what: String) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("unexpected NB select result: {what}"))
}

fn uuid_of(row: &Map<String, Value>) -> Result<Uuid, ApiError> {
    row.get("_uuid")
        .and_then(|v| Atom::from_json(v).ok())
        .and_then(|a| a.as_uuid())
        .ok_or_else(|| bad(format!("row without _uuid: {row:?}")))
}

fn uuids(v: Option<&Value>) -> Result<Vec<Uuid>, ApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    match Datum::from_json(v).map_err(bad)? {
        Datum::Set(atoms) => atoms
            .iter()
            .map(|a| a.as_uuid().ok_or_else(|| bad(format!("not a uuid: {a:?}"))))
            .collect(),
        Datum::Map(_) => Err(bad(format!("a map where uuids were expected: {v}"))),
    }
}

fn int(row: &Map<String, Value>, column: &str) -> i64 {
    row.get(column).and_then(Value::as_i64).unwrap_or(0)
}

fn finding(f: diagnose::Finding) -> pb::Finding {
    let severity = match f.severity {
        Severity::Ok => pb::Severity::Ok,
        Severity::Warning => pb::Severity::Warning,
        Severity::Error => pb::Severity::Error,
    };
    pb::Finding {
        check: f.check.to_string(),
        severity: severity as i32,
        message: f.message,
        nb_rows: f.nb_rows,
    }
}
