//! CreatePeering's group commit: the one home where creates meet Postgres.
//!
//! A create joins a queue. Whoever gets a turn (at most [`BATCHES_IN_FLIGHT`] batches run
//! at once) takes everything queued at that moment (at most [`MAX_BATCH`]) and runs it as
//! one transaction on a task of its own; the others wait for their answer or for the next
//! turn, when the queue has grown. So a
//! single client's create goes at once (no timer, no added wait), and under load one
//! transaction carries many creates: begin, the per-VPC locks of every VPC of the batch in
//! one fixed order (`store::create`), one read of everything they are judged against, the
//! judging in arrival order with the pure rules (a later create sees the earlier ones of
//! the batch: their names, pairs, port names, links and routes), one insert of all of
//! them (`store::create_batch`), one commit. Each caller gets its own answer; a refusal of
//! one is that caller's alone.
//!
//! Postgres still has the last word across replicas and for what the VPC locks do not
//! cover (a name or a request_id used at once on other VPCs, a port name that two VPC
//! pairs spell alike): a constraint that fails the batch's insert sends each of its
//! creates through the one-at-a-time path of `create_tx.rs`, which tells them apart. Any
//! other database error fails the batch: each caller gets it (UNAVAILABLE when Postgres is
//! unreachable), and nothing of the batch is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::authz::Admission;
use super::convert;
use super::create::ALLOCATION_ATTEMPTS;
use super::create_tx::{request_id_reused, same_request, Decided, Neighbours, Request};
use super::error::{ApiError, Dependency};
use super::PeeringApi;
use crate::peering::topology::port_names;
use crate::peering::validate::ValidatedPeering;
use crate::proto::v1::{CreatePeeringRequest, Peering};
use crate::store::{BatchInsert, NewPeering, PeeringRecord, RequestRecord, StoreError};

/// The most creates one transaction carries: bounds its locks, its read and its time.
pub const MAX_BATCH: usize = 128;

/// Batches in flight at once per replica. More than one: a batch's round trips to Postgres
/// overlap the next one's (creates of disjoint VPCs go on in parallel, creates sharing a
/// VPC wait for its lock in Postgres, as across replicas).
pub const BATCHES_IN_FLIGHT: usize = 4;

/// The queue and the turns.
pub(super) struct Batcher {
    queue: Mutex<Vec<Job>>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher {
            queue: Mutex::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT)),
        }
    }
}

/// One create waiting for its batch.
pub(crate) struct Job {
    validated: ValidatedPeering,
    request: Request,
    reply: oneshot::Sender<Result<Peering, ApiError>>,
    /// When it joined the queue.
    queued: Instant,
    /// Cancelled when the caller goes away (its deadline passed, it was cancelled).
    gone: CancellationToken,
}

impl Batcher {
    fn push(&self, job: Job) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
    }

    fn take(&self) -> Vec<Job> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(MAX_BATCH);
        q.drain(..n).collect()
    }
}

/// What the judging said of one create of the batch.
enum Verdict {
    /// Answered without storing anything (a refusal, or a request_id's first answer).
    Answer(Box<Result<Peering, ApiError>>),
    /// Stored as the `n`th row of the insert (also: a retry, inside the batch, of the
    /// request that stored it).
    Row(usize),
}

/// Why a batch's transaction failed.
enum BatchError {
    /// A constraint the VPC locks do not cover: judge each create on its own.
    Constraint(StoreError),
    /// Anything else: every create of the batch fails with it.
    Failed(ApiError),
    /// A caller went away before the commit: nothing was stored; run again without it.
    Deserted,
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken
            | StoreError::PairTaken
            | StoreError::RequestIdTaken
            | StoreError::PortTaken
            | StoreError::LinkOverlap { .. } => BatchError::Constraint(e),
            e => BatchError::Failed(e.into()),
        }
    }
}

impl From<ApiError> for BatchError {
    fn from(e: ApiError) -> Self {
        BatchError::Failed(e)
    }
}

impl PeeringApi {
    /// Stores one checked create through the group commit and answers it.
    pub(super) async fn create_batched(
        &self,
        validated: ValidatedPeering,
        request: Request,
    ) -> Result<Peering, ApiError> {
        let (reply, mut answer) = oneshot::channel();
        let gone = CancellationToken::new();
        // Dropped with this call: its batch then stores nothing of it.
        let _gone_when_dropped = gone.clone().drop_guard();
        let batcher = &self.inner.creates;
        batcher.push(Job {
            validated,
            request,
            reply,
            queued: Instant::now(),
            gone,
        });
        let lost = || ApiError::Internal(anyhow::anyhow!("the create's batch ended unanswered"));
        loop {
            tokio::select! {
                biased;
                r = &mut answer => return r.unwrap_or_else(|_| Err(lost())),
                turn = batcher.turns.clone().acquire_owned() => {
                    let Ok(turn) = turn else {
                        return Err(lost());
                    };
                    let jobs = batcher.take();
                    if jobs.is_empty() {
                        // Ours went with the batch that just ended: its answer is there.
                        drop(turn);
                        return answer.await.unwrap_or_else(|_| Err(lost()));
                    }
                    // Its own task: a caller that goes away (deadline, cancel) does not
                    // take the other callers' creates with it.
                    let api = self.clone();
                    tokio::spawn(async move {
                        api.run_batch(jobs).await;
                        drop(turn);
                    });
                }
            }
        }
    }

    /// These creates as one batch, in this order, as if they had all arrived while another
    /// batch ran; each answered as CreatePeering answers it (by an admin). For tests: it
    /// makes a batch's make-up deterministic.
    #[doc(hidden)]
    pub async fn create_as_one_batch(
        &self,
        reqs: Vec<CreatePeeringRequest>,
    ) -> Vec<Result<Peering, ApiError>> {
        let reqs = reqs
            .into_iter()
            .map(|r| (r, CancellationToken::new()))
            .collect();
        self.create_as_one_batch_with(reqs).await
    }

    /// [`Self::create_as_one_batch`], each create with the token its caller cancels when it
    /// goes away (its deadline passed); a create whose caller went away gets no answer.
    #[doc(hidden)]
    pub async fn create_as_one_batch_with(
        &self,
        reqs: Vec<(CreatePeeringRequest, CancellationToken)>,
    ) -> Vec<Result<Peering, ApiError>> {
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        for (req, gone) in reqs {
            let (reply, answer) = oneshot::channel();
            match self.prepare(req, Admission::Direct) {
                Ok((validated, request)) => jobs.push(Job {
                    validated,
                    request,
                    reply,
                    queued: Instant::now(),
                    gone,
                }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
            answers.push(answer);
        }
        self.run_batch(jobs).await;
        let mut out = Vec::new();
        for a in answers {
            out.push(
                a.await
                    .unwrap_or_else(|_| Err(ApiError::Internal(anyhow::anyhow!("no answer")))),
            );
        }
        out
    }

    /// Runs one batch and answers each of its creates. A caller that goes away before the
    /// commit has nothing stored: when all of them have, the transaction is dropped (rolled
    /// back) where it stands; when some have, it is rolled back before its commit and run
    /// again without them.
    async fn run_batch(&self, mut jobs: Vec<Job>) {
        loop {
            jobs.retain(|j| !j.gone.is_cancelled() && !j.reply.is_closed());
            if jobs.is_empty() {
                return;
            }
            let started = Instant::now();
            let waited = jobs
                .iter()
                .map(|j| started - j.queued)
                .max()
                .unwrap_or_default();
            let all_gone = async {
                for j in &jobs {
                    j.gone.cancelled().await;
                }
            };
            let result = tokio::select! {
                r = self.commit_batch(&jobs) => r,
                () = all_gone => Err(BatchError::Deserted),
            };
            tracing::debug!(
                creates = jobs.len(),
                longest_wait_ms = waited.as_secs_f64() * 1e3,
                transaction_ms = started.elapsed().as_secs_f64() * 1e3,
                ok = result.is_ok(),
                "create batch"
            );
            match result {
                Ok(answers) => {
                    for (job, answer) in jobs.into_iter().zip(answers) {
                        let _ = job.reply.send(answer);
                    }
                }
                Err(BatchError::Deserted) => continue,
                Err(BatchError::Constraint(e)) => {
                    tracing::debug!(error = %e, "a create batch hit a constraint; judging each alone");
                    for job in jobs {
                        let answer = tokio::select! {
                            a = self.create_one(&job.validated, &job.request, false) => a,
                            () = job.gone.cancelled() => continue,
                        };
                        let _ = job.reply.send(answer);
                    }
                }
                Err(BatchError::Failed(e)) => {
                    let mut first = Some(e);
                    for job in jobs {
                        let e = first.take().unwrap_or_else(copy_of_failure);
                        let _ = job.reply.send(Err(e));
                    }
                }
            }
            return;
        }
    }

    /// The batch's transaction: locks, one read, the judging in arrival order, one insert,
    /// commit. An answer per job, in order.
    async fn commit_batch(
        &self,
        jobs: &[Job],
    ) -> Result<Vec<Result<Peering, ApiError>>, BatchError> {
        let mut vpcs: Vec<String> = Vec::new();
        let (mut names, mut ports, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for j in jobs {
            let v = &j.validated;
            vpcs.extend([v.local_vpc.clone(), v.remote_vpc.clone()]);
            names.push(v.name.clone());
            ports.extend(port_names(&v.local_vpc, &v.remote_vpc));
            ids.extend(j.request.id.clone());
        }
        vpcs.sort_unstable();
        vpcs.dedup();
        let store = &self.inner.store;
        let vpc_refs: Vec<&str> = vpcs.iter().map(String::as_str).collect();
        let mut tx = store.peering_create_begin(&vpc_refs).await?;
        let stored = tx.list_for_batch(&vpcs, &names, &ports, &ids).await?;

        let mut judge = Judging {
            stored: &stored,
            batch: Vec::new(),
            rows: Vec::new(),
            ids: HashMap::new(),
        };
        let mut verdicts = Vec::with_capacity(jobs.len());
        for j in jobs {
            verdicts.push(self.judge(&mut judge, &j.validated, &j.request)?);
        }
        if judge.rows.is_empty() {
            // Nothing to store: the transaction rolls back when dropped.
            return Ok(verdicts.into_iter().map(answer_without_rows).collect());
        }
        let inserts: Vec<BatchInsert<'_>> = judge
            .rows
            .iter()
            .map(|(new, hash, ports)| BatchInsert {
                new,
                request_hash: hash,
                ports,
            })
            .collect();
        let records = tx.insert_all(&inserts).await?;
        if jobs.iter().any(|j| j.gone.is_cancelled()) {
            return Err(BatchError::Deserted);
        }
        tx.commit().await?;
        let by_name: HashMap<&str, &PeeringRecord> =
            records.iter().map(|r| (r.name.as_str(), r)).collect();
        Ok(verdicts
            .into_iter()
            .map(|v| match v {
                Verdict::Answer(a) => *a,
                Verdict::Row(n) => match by_name.get(judge.rows[n].0.name.as_str()) {
                    Some(r) => Ok(convert::peering(r)),
                    None => Err(ApiError::Internal(anyhow::anyhow!(
                        "the batch insert did not return peering {:?}",
                        judge.rows[n].0.name
                    ))),
                },
            })
            .collect())
    }

    /// Judges one create against what Postgres holds and the batch's earlier creates, as
    /// the one-at-a-time path does (`create_tx.rs`), with the same rules.
    fn judge(
        &self,
        judging: &mut Judging<'_>,
        v: &ValidatedPeering,
        request: &Request,
    ) -> Result<Verdict, BatchError> {
        if let Some(id) = &request.id {
            let found = judging
                .stored
                .iter()
                .find(|r| r.record.request_id.as_deref() == Some(id.as_str()));
            if let Some(found) = found {
                let first = same_request(Some(found.clone()), request).and_then(|p| {
                    p.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no first answer")))
                });
                return Ok(Verdict::Answer(Box::new(first)));
            }
            if let Some((hash, n)) = judging.ids.get(id) {
                // A retry, inside the batch, of a create stored by it.
                return Ok(if *hash == request.hash {
                    Verdict::Row(*n)
                } else {
                    Verdict::Answer(Box::new(Err(request_id_reused())))
                });
            }
        }
        let others = match Neighbours::new(judging.neighbours_of(v)) {
            Ok(o) => o,
            Err(e) => return Err(BatchError::Failed(e)),
        };
        let mut excluded: Vec<IpNet> = Vec::new();
        for _ in 0..ALLOCATION_ATTEMPTS {
            match self.decide(v, request, &others, &excluded) {
                Ok(Decided::Store { new, .. }) => {
                    let n = judging.add(*new, v, request);
                    return Ok(Verdict::Row(n));
                }
                Ok(Decided::LinkTaken(spec)) => excluded.extend(spec.local_connect.networks()),
                Err(e) => return Ok(Verdict::Answer(Box::new(Err(e)))),
            }
        }
        Ok(Verdict::Answer(Box::new(Err(ApiError::contention(
            "link allocation",
        )))))
    }
}

fn answer_without_rows(v: Verdict) -> Result<Peering, ApiError> {
    match v {
        Verdict::Answer(a) => *a,
        Verdict::Row(_) => unreachable!("no rows were judged"),
    }
}

/// The batch's failure as each further caller gets it (the first gets the error itself).
fn copy_of_failure() -> ApiError {
    ApiError::Unavailable {
        what: Dependency::Database,
        source: None,
    }
}

/// The state of one batch's judging.
struct Judging<'a> {
    /// What Postgres holds (read under the locks).
    stored: &'a [RequestRecord],
    /// The batch's creates judged so far and to be stored, as records.
    batch: Vec<PeeringRecord>,
    /// The rows to insert: the peering, its request's fingerprint, its port names.
    rows: Vec<(NewPeering, Vec<u8>, Vec<String>)>,
    /// request_id -> (fingerprint, row) of the batch's creates.
    ids: HashMap<String, (Vec<u8>, usize)>,
}

impl Judging<'_> {
    /// What the one-at-a-time read returns for `v`: the peerings touching either of its
    /// VPCs, the one of its name, and those holding one of its port names.
    fn neighbours_of(&self, v: &ValidatedPeering) -> Vec<PeeringRecord> {
        let vpcs = [v.local_vpc.as_str(), v.remote_vpc.as_str()];
        let ports = port_names(vpcs[0], vpcs[1]);
        let relevant = |r: &PeeringRecord| {
            vpcs.contains(&r.local_vpc.as_str())
                || vpcs.contains(&r.remote_vpc.as_str())
                || r.name == v.name
                || (r.state.holds_pair()
                    && port_names(&r.local_vpc, &r.remote_vpc)
                        .iter()
                        .any(|p| ports.contains(p)))
        };
        let mut out: Vec<PeeringRecord> = self
            .stored
            .iter()
            .map(|s| &s.record)
            .chain(&self.batch)
            .filter(|r| relevant(r))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Adds a create to store; its row number.
    fn add(&mut self, new: NewPeering, v: &ValidatedPeering, request: &Request) -> usize {
        let n = self.rows.len();
        let now = chrono::Utc::now();
        self.batch.push(PeeringRecord {
            name: new.name.clone(),
            local_vpc: new.local_vpc.clone(),
            remote_vpc: new.remote_vpc.clone(),
            local_v4: new.local_v4,
            remote_v4: new.remote_v4,
            local_v6: new.local_v6,
            remote_v6: new.remote_v6,
            local_routes: new.local_routes.clone(),
            remote_routes: new.remote_routes.clone(),
            state: new.state,
            state_message: new.state_message.clone(),
            generation: 1,
            observed_generation: 0,
            request_id: new.request_id.clone(),
            create_time: now,
            update_time: now,
            generation_time: now,
            labels: new.labels.clone(),
            etag: uuid::Uuid::nil(),
        });
        if let Some(id) = &request.id {
            self.ids.insert(id.clone(), (request.hash.clone(), n));
        }
        let ports = port_names(&v.local_vpc, &v.remote_vpc).to_vec();
        self.rows.push((new, request.hash.clone(), ports));
        n
    }
}
