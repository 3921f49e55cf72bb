//! CreatePeering's group commit: the one home where creates meet Postgres.
//!
//! A create joins a queue. Whoever gets a turn (at most [`BATCHES_IN_FLIGHT`] batches run
//! at once) takes everything queued at that moment (at most [`MAX_BATCH`]) and runs it as
//! one transaction on a task of its own; the others wait for their answer or for the next
//! turn, when the queue has grown. So a
//! single client's create goes at once (no timer, no added wait), and under load one
//! transaction carries many creates: begin, the per-VPC locks of every VPC of the batch in
//! one fixed order, only tried (`store::create`): the creates of a VPC whose lock is held
//! elsewhere (another replica, UpdatePeering, AcceptPeering) leave the batch and go on in a
//! batch of their own that waits for the lock ([`alone`]), so they stall neither a turn nor
//! the others; one read of everything they are judged against (every
//! peering of their VPCs; at a hub, through the conflict probe, see [`FULL_READ_BELOW`]), the
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
use tracing::Instrument;

mod alone;

use super::authz::Admission;
use super::convert;
use super::create::ALLOCATION_ATTEMPTS;
use super::create_tx::{request_id_reused, same_request, Decided, Neighbours, Request};
use super::error::ApiError;
use super::PeeringApi;
use crate::adapters::NbCacheTopology;
use crate::ovsdb::CacheSnapshot;
use crate::ovsdb::NbCache;
use crate::peering::topology::{port_names, ConflictQuery};
use crate::peering::validate::ValidatedPeering;
use crate::peering::ConnectAddrs;
use crate::proto::v1::{CreatePeeringRequest, Peering};
use crate::store::{
    BatchInsert, BatchRead, CreateTx, NewPeering, PeeringRecord, RequestRecord, StoreError,
    UnreadableRow,
};

/// The most creates one transaction carries: bounds its locks, its read and its time.
pub const MAX_BATCH: usize = 128;

/// Batches in flight at once per replica. More than one: a batch's round trips to Postgres
/// overlap the next one's (creates of disjoint VPCs go on in parallel). A batch never waits
/// for a VPC lock (its creates on a VPC locked elsewhere run alone, outside the turns:
/// `create_batch/alone.rs`), so the turns cannot all be parked at locks. Not more than
/// two: each batch costs its five statements (and their round trips, and a commit) whatever
/// its size, and with 4 in flight a bulk at 32 clients ran batches of ~4 creates; with 2, ~7:
/// at N = 10,000, 15% less CPU in Postgres and 12% less in ovn-peerd for the same creates
/// (README, *ovn-peerd's own CPU per peering*).
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Batches of creates that left their batch for a VPC locked elsewhere (one per busy VPC,
/// waiting at that lock in Postgres: `create_batch/alone.rs`) running at once per replica;
/// each holds a pool connection while it waits, at most until a margin (at most
/// [`crate::store::LOCK_WAIT_MARGIN`]) before the latest deadline of its creates' callers.
/// Further ones wait for a place holding none (their VPCs stay held in the batcher, so
/// creates on them keep queueing, not trying).
/// A batch whose callers all cancel before their deadlines gives its place back at once,
/// but its connection stays at the lock in Postgres until that bound: for so long, more
/// connections than this may wait at locks.
pub const PARKED_BATCHES: usize = 4;

/// The hub bound: `store::hub` is its one home (the worker's narrow pass uses it too).
pub use crate::store::FULL_READ_BELOW;

/// The queue and the turns.
pub(super) struct Batcher {
    /// The queue, and the VPCs of the batches running (a count per VPC).
    queue: Mutex<(Vec<Job>, HashMap<String, usize>)>,
    turns: Arc<tokio::sync::Semaphore>,
    /// Places for the batches of creates that left theirs ([`PARKED_BATCHES`]).
    parked: Arc<tokio::sync::Semaphore>,
    /// Woken when a batch ends (its VPCs are free for the creates left waiting for them).
    ended: tokio::sync::Notify,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher {
            queue: Mutex::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT)),
            parked: Arc::new(tokio::sync::Semaphore::new(PARKED_BATCHES)),
            ended: tokio::sync::Notify::new(),
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
            .0
            .push(job);
    }

    /// The next batch, in arrival order: the queued creates none of whose VPCs a running
    /// batch holds (the others wait for it to end, so that unrelated creates do not queue
    /// behind a hub's locks), and the VPCs it holds from now on.
    fn take(&self) -> (Vec<Job>, Vec<String>) {
        let mut guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (queue, running) = &mut *guard;
        let (mut taken, mut left) = (Vec::new(), Vec::new());
        for job in queue.drain(..) {
            let v = &job.validated;
            let busy = [&v.local_vpc, &v.remote_vpc]
                .iter()
                .any(|vpc| running.contains_key(vpc.as_str()));
            if busy || taken.len() == MAX_BATCH {
                left.push(job);
            } else {
                taken.push(job);
            }
        }
        *queue = left;
        let vpcs = vpcs_of(&taken);
        for vpc in &vpcs {
            *running.entry(vpc.clone()).or_default() += 1;
        }
        (taken, vpcs)
    }

    /// `vpcs` are held from now on (by creates that left their batch for a busy lock), until
    /// [`Self::ended`] with them.
    fn hold(&self, vpcs: &[String]) {
        let mut guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for vpc in vpcs {
            *guard.1.entry(vpc.clone()).or_default() += 1;
        }
    }

    /// A batch holding `vpcs` ended.
    fn ended(&self, vpcs: &[String]) {
        let mut guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for vpc in vpcs {
            if let Some(n) = guard.1.get_mut(vpc) {
                *n -= 1;
                if *n == 0 {
                    guard.1.remove(vpc);
                }
            }
        }
        drop(guard);
        self.ended.notify_waiters();
    }
}

/// The VPCs a running batch holds on this replica: released when the batch ends, also when
/// its task panics or is dropped (else creates on those VPCs would wait for ever).
struct Holding {
    api: PeeringApi,
    vpcs: Vec<String>,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.api.inner.creates.ended(&self.vpcs);
    }
}

/// How a batch takes its VPC locks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Locks {
    /// Tries them; the creates of a VPC locked elsewhere leave the batch.
    Try,
    /// Waits for them (a batch of creates that left theirs).
    Wait,
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
    /// Every caller went away before the commit: nothing was stored.
    Deserted,
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken
            | StoreError::PairTaken
            | StoreError::RequestIdTaken
            | StoreError::PortTaken
            | StoreError::LinkOverlap { .. }
            // Lost to a concurrent transaction: one at a time, each create may go through.
            | StoreError::Conflict(_) => BatchError::Constraint(e),
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
            // Registered before the take: a batch that ends after it wakes us.
            let ended = batcher.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            tokio::select! {
                biased;
                r = &mut answer => return r.unwrap_or_else(|_| Err(lost())),
                turn = batcher.turns.clone().acquire_owned() => {
                    let Ok(turn) = turn else {
                        return Err(lost());
                    };
                    let (jobs, vpcs) = batcher.take();
                    if jobs.is_empty() {
                        // Ours went with a batch (its answer comes), or waits for a running
                        // batch of its VPCs to end.
                        drop(turn);
                        tokio::select! {
                            biased;
                            r = &mut answer => return r.unwrap_or_else(|_| Err(lost())),
                            () = ended => continue,
                        }
                    }
                    // Its own task: a caller that goes away (deadline, cancel) does not
                    // take the other callers' creates with it.
                    let api = self.clone();
                    let span = tracing::Span::current();
                    let holding = Holding {
                        api: self.clone(),
                        vpcs,
                    };
                    tokio::spawn(
                        async move {
                            api.run_batch(jobs).await;
                            drop(holding);
                            drop(turn);
                        }
                        .instrument(span),
                    );
                }
            }
        }
    }

    /// For tests: one create (by an admin) through the queue, as CreatePeering makes it.
    #[doc(hidden)]
    pub async fn create_through_the_queue_for_tests(
        &self,
        req: CreatePeeringRequest,
    ) -> Result<Peering, ApiError> {
        let (validated, request) = self.prepare(req, Admission::Direct, None)?;
        self.create_batched(validated, request).await
    }

    /// For tests: a VPC with `n` peerings or more counts as a hub ([`FULL_READ_BELOW`]); 0:
    /// every batch asks the conflict probe.
    #[doc(hidden)]
    pub fn set_full_read_below_for_tests(&self, n: usize) {
        self.inner.store.set_full_read_below(n);
    }

    /// For tests: how many creates wait in the queue for a batch.
    #[doc(hidden)]
    pub fn queued_creates_for_tests(&self) -> usize {
        let guard = self.inner.creates.queue.lock();
        guard.unwrap_or_else(|e| e.into_inner()).0.len()
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
        let reqs = reqs.into_iter().map(|(r, gone)| (r, gone, None)).collect();
        self.create_as_one_batch_until(reqs).await
    }

    /// [`Self::create_as_one_batch_with`], each create with its caller's deadline too (how
    /// long it may wait for a lock in Postgres; the test cancels the token when it passes).
    #[doc(hidden)]
    pub async fn create_as_one_batch_until(
        &self,
        reqs: Vec<(CreatePeeringRequest, CancellationToken, Option<Instant>)>,
    ) -> Vec<Result<Peering, ApiError>> {
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        for (req, gone, deadline) in reqs {
            let (reply, answer) = oneshot::channel();
            match self.prepare(req, Admission::Direct, deadline) {
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
    /// insert has nothing stored (the others are judged again without it, in the same
    /// transaction); one that goes away later may have its create stored, as with any call
    /// whose deadline passes (its outcome is unknown; a retry with its request_id gets the
    /// first answer). When every caller has gone, the transaction is dropped (rolled back)
    /// where it stands.
    async fn run_batch(&self, jobs: Vec<Job>) {
        self.run_batch_locking(jobs, Locks::Try).await
    }

    /// [`Self::run_batch`], its VPC locks taken as `locks` says: tried (the creates whose
    /// VPC is locked elsewhere leave it), or waited for (a batch of creates that left theirs:
    /// judged and stored together once the lock is free, as a batch that waited always was).
    pub(super) async fn run_batch_locking(&self, mut jobs: Vec<Job>, locks: Locks) {
        jobs.retain(|j| !is_gone(j));
        if jobs.is_empty() {
            return;
        }
        let started = Instant::now();
        let waited = jobs
            .iter()
            .map(|j| started - j.queued)
            .max()
            .unwrap_or_default();
        let mut steps = Steps::new(started);
        let locked = tokio::select! {
            r = self.lock_batch(&jobs, locks) => r,
            () = all_gone(&jobs) => Err(BatchError::Deserted),
        };
        steps.mark("begin_lock");
        let mut alone = 0;
        let result = match locked {
            Ok((tx, busy)) => {
                if !busy.is_empty() {
                    let (out, stay) = jobs.into_iter().partition(|j| touches(j, &busy));
                    jobs = stay;
                    alone = out.len();
                    self.run_alone(out, &busy);
                }
                if jobs.is_empty() {
                    Ok(Vec::new())
                } else {
                    tokio::select! {
                        r = self.commit_batch(tx, &jobs, &mut steps) => r,
                        () = all_gone(&jobs) => Err(BatchError::Deserted),
                    }
                }
            }
            Err(e) => Err(e),
        };
        tracing::debug!(
            creates = jobs.len(),
            alone,
            longest_wait_ms = waited.as_secs_f64() * 1e3,
            transaction_ms = started.elapsed().as_secs_f64() * 1e3,
            %steps,
            ok = result.is_ok(),
            "create batch"
        );
        match result {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(BatchError::Deserted) => {}
            Err(BatchError::Constraint(e)) => {
                metrics::counter!(
                    crate::metrics::CREATE_BATCH_FALLBACKS_TOTAL,
                    "reason" => fallback_reason(&e),
                )
                .increment(1);
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
                // The same code and reason for every caller, naming only its own VPCs; the
                // first keeps the cause.
                let mut jobs = jobs.into_iter();
                let first = jobs.next();
                for job in jobs {
                    let answer = e.for_another_caller().for_vpcs(&own_vpcs(&job));
                    let _ = job.reply.send(Err(answer));
                }
                if let Some(first) = first {
                    let answer = e.for_vpcs(&own_vpcs(&first));
                    let _ = first.reply.send(Err(answer));
                }
            }
        }
    }

    /// Begins the batch's transaction with the locks of its VPCs: with [`Locks::Try`] those
    /// that are free, and the VPCs whose lock is held elsewhere (their creates leave the
    /// batch: [`Self::run_alone`]); with [`Locks::Wait`] all of them, none busy, waiting
    /// until the latest deadline of its creates' callers ([`alone::latest`]): the others
    /// leave the batch as they go.
    async fn lock_batch(
        &self,
        jobs: &[Job],
        locks: Locks,
    ) -> Result<(CreateTx<'_>, Vec<String>), BatchError> {
        let owned = vpcs_of(jobs);
        let vpcs: Vec<&str> = owned.iter().map(String::as_str).collect();
        Ok(match locks {
            Locks::Try => self.inner.store.peering_create_try_begin(&vpcs).await?,
            Locks::Wait => (
                self.inner
                    .store
                    .peering_create_begin(
                        &vpcs,
                        alone::latest(jobs.iter().map(|j| j.request.deadline)),
                    )
                    .await?,
                Vec::new(),
            ),
        })
    }

    /// The batch's transaction, its locks taken ([`Self::lock_batch`]): one read, the
    /// judging in arrival order, one insert, commit. An answer per job, in order.
    async fn commit_batch(
        &self,
        mut tx: CreateTx<'_>,
        jobs: &[Job],
        steps: &mut Steps,
    ) -> Result<Vec<Result<Peering, ApiError>>, BatchError> {
        let mut vpcs: Vec<String> = Vec::new();
        let mut ids = Vec::new();
        for j in jobs {
            let v = &j.validated;
            vpcs.extend([v.local_vpc.clone(), v.remote_vpc.clone()]);
            ids.extend(j.request.id.clone());
        }
        vpcs.sort_unstable();
        vpcs.dedup();
        let (read, links, cache) = self.read_for_batch(&mut tx, jobs, &vpcs, &ids).await?;
        steps.mark("read");

        // Judged without the creates whose callers have gone; judged again (in memory, in
        // this transaction) as long as more go before the insert.
        let mut left_out: Vec<bool> = jobs.iter().map(is_gone).collect();
        let (judge, verdicts) = loop {
            let mut judge = Judging {
                cache: &cache,
                stored: &read.records,
                unreadable: &read.unreadable,
                links: &links,
                batch: Vec::new(),
                rows: Vec::new(),
                ids: HashMap::new(),
            };
            let mut verdicts = Vec::with_capacity(jobs.len());
            for (j, out) in jobs.iter().zip(&left_out) {
                verdicts.push(if *out {
                    Verdict::Answer(Box::new(Err(ApiError::Internal(anyhow::anyhow!(
                        "the caller went away before the create was stored"
                    )))))
                } else {
                    self.judge(&mut judge, &j.validated, &j.request)
                });
            }
            let now_gone: Vec<bool> = jobs.iter().map(is_gone).collect();
            if now_gone == left_out {
                break (judge, verdicts);
            }
            left_out = now_gone;
        };
        steps.mark("judge");
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
        steps.mark("insert");
        // Committed even when a caller went away during the insert: its outcome is unknown
        // to it, as with any call whose deadline passes; its request_id covers a retry.
        tx.commit().await?;
        steps.mark("commit");
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

    /// What the batch is judged against, read under its locks, and the NB snapshot to judge
    /// with (the NB of now: a router made just before the call is seen). Every peering of
    /// the batch's VPCs when none of them has [`crate::store::Store::full_read_below`]
    /// peerings or more (one statement, no NB question, their links with them); at a hub, only those that
    /// can take part in the rules for these creates ([`ConflictQuery`], asked of that same
    /// snapshot, so that what was probed is what is judged) and every link of the VPCs.
    async fn read_for_batch(
        &self,
        tx: &mut CreateTx<'_>,
        jobs: &[Job],
        vpcs: &[String],
        ids: &[String],
    ) -> Result<(BatchRead, Vec<(String, IpNet)>, CacheSnapshot), BatchError> {
        let names: Vec<String> = jobs.iter().map(|j| j.validated.name.clone()).collect();
        let ports: Vec<String> = jobs
            .iter()
            .flat_map(|j| port_names(&j.validated.local_vpc, &j.validated.remote_vpc))
            .collect();
        let below = self.inner.store.full_read_below();
        let full = tx.list_for_batch(vpcs, &names, &ports, ids, below).await?;
        let cache = self.nb_cache()?;
        if let Some(read) = full {
            // Their links came with them (`Neighbours::held_links`).
            return Ok((read, Vec::new(), cache));
        }
        let probe = self.conflict_query(&cache, jobs);
        let read = tx.list_for_batch_probe(&probe, ids).await?;
        let links = tx.links_in(vpcs).await?;
        Ok((read, links, cache))
    }

    /// What the store must read for the rules on `jobs` ([`ConflictQuery`]): their names,
    /// port names and pairs, and what NB says their networks (and, for a link to allocate,
    /// the link pools) overlap.
    fn conflict_query(&self, cache: &NbCache, jobs: &[Job]) -> ConflictQuery {
        let topo = NbCacheTopology(cache, self.inner.settings.instance.as_deref());
        let settings = &self.inner.settings;
        let pools = [settings.link_pool_v4.0, settings.link_pool_v6.0];
        let mut q = ConflictQuery::default();
        for j in jobs {
            let v = &j.validated;
            let spec = v
                .spec()
                .unwrap_or_else(|| v.with_link(ConnectAddrs::default(), ConnectAddrs::default()));
            q.add(&spec, &topo, &pools, &[]);
        }
        q
    }

    /// Judges one create against what Postgres holds and the batch's earlier creates, as
    /// the one-at-a-time path does (`create_tx.rs`), with the same rules.
    fn judge(&self, judging: &mut Judging<'_>, v: &ValidatedPeering, request: &Request) -> Verdict {
        if let Some(id) = &request.id {
            let found = judging
                .stored
                .iter()
                .find(|r| r.record.request_id.as_deref() == Some(id.as_str()));
            if let Some(found) = found {
                let first = same_request(Some(found.clone()), request).and_then(|p| {
                    p.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no first answer")))
                });
                return Verdict::Answer(Box::new(first));
            }
            if let Some((hash, n)) = judging.ids.get(id) {
                // A retry, inside the batch, of a create stored by it.
                return if *hash == request.hash {
                    Verdict::Row(*n)
                } else {
                    Verdict::Answer(Box::new(Err(request_id_reused())))
                };
            }
        }
        // A neighbour that does not decode fails this create only.
        let others = match judging.neighbours_of(v).and_then(Neighbours::new) {
            Ok(o) => o,
            Err(e) => return Verdict::Answer(Box::new(Err(e))),
        };
        // At a hub only the peerings that can conflict were read, so the VPCs' other links come
        // apart (below a hub they come with the peerings, read whole): the link allocated for
        // it must avoid them too.
        let mut excluded: Vec<IpNet> = judging.links_of(v);
        for _ in 0..ALLOCATION_ATTEMPTS {
            match self.decide(judging.cache, v, request, &others, &excluded) {
                Ok(Decided::Store { new, .. }) => {
                    let n = judging.add(*new, v, request);
                    return Verdict::Row(n);
                }
                Ok(Decided::LinkTaken(spec)) => excluded.extend(spec.local_connect.networks()),
                Err(e) => return Verdict::Answer(Box::new(Err(e))),
            }
        }
        Verdict::Answer(Box::new(Err(ApiError::contention("link allocation"))))
    }
}

fn answer_without_rows(v: Verdict) -> Result<Peering, ApiError> {
    match v {
        Verdict::Answer(a) => *a,
        Verdict::Row(_) => unreachable!("no rows were judged"),
    }
}

/// The `reason` label of a batch's fallback to one create at a time.
fn fallback_reason(e: &StoreError) -> &'static str {
    match e {
        StoreError::NameTaken => "name",
        StoreError::PairTaken => "pair",
        StoreError::RequestIdTaken => "request_id",
        StoreError::PortTaken => "port",
        StoreError::LinkOverlap { .. } => "link",
        _ => "conflict",
    }
}

/// Where a batch's time went, step by step (the debug log's "create batch" event, in ms):
/// what a lone create's latency is made of (README, "Where a lone create's time goes").
struct Steps {
    last: Instant,
    done: Vec<(&'static str, f64)>,
}

impl Steps {
    fn new(started: Instant) -> Steps {
        Steps {
            last: started,
            done: Vec::with_capacity(6),
        }
    }

    /// The step `name` ended now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done
            .push((name, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, ms)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={ms:.3}")?;
        }
        Ok(())
    }
}

/// Whether a create's caller went away (its deadline passed, it was cancelled).
fn is_gone(j: &Job) -> bool {
    j.gone.is_cancelled() || j.reply.is_closed()
}

/// Ends when every caller of `jobs` has gone.
async fn all_gone(jobs: &[Job]) {
    for j in jobs {
        j.gone.cancelled().await;
    }
}

/// The VPCs `jobs` create peerings of, sorted, each once.
fn vpcs_of(jobs: &[Job]) -> Vec<String> {
    let mut vpcs: Vec<String> = jobs
        .iter()
        .flat_map(|j| {
            [
                j.validated.local_vpc.clone(),
                j.validated.remote_vpc.clone(),
            ]
        })
        .collect();
    vpcs.sort_unstable();
    vpcs.dedup();
    vpcs
}

/// The two VPCs of a create.
fn own_vpcs(j: &Job) -> [&str; 2] {
    [&j.validated.local_vpc, &j.validated.remote_vpc]
}

/// Whether the create touches one of `vpcs`.
fn touches(j: &Job, vpcs: &[String]) -> bool {
    vpcs.iter()
        .any(|v| *v == j.validated.local_vpc || *v == j.validated.remote_vpc)
}

/// The state of one batch's judging.
struct Judging<'a> {
    /// The NB snapshot the batch is judged with (at a hub, its probe's too).
    cache: &'a NbCache,
    /// What Postgres holds (read under the locks).
    stored: &'a [RequestRecord],
    /// The rows Postgres holds that do not decode.
    unreadable: &'a [UnreadableRow],
    /// At a hub, every link held in the batch's VPCs: (VPC, link); below a hub, empty (the
    /// peerings read whole carry theirs).
    links: &'a [(String, IpNet)],
    /// The batch's creates judged so far and to be stored, as records.
    batch: Vec<PeeringRecord>,
    /// The rows to insert: the peering, its request's fingerprint, its port names.
    rows: Vec<(NewPeering, Vec<u8>, Vec<String>)>,
    /// request_id -> (fingerprint, row) of the batch's creates.
    ids: HashMap<String, (Vec<u8>, usize)>,
}

impl Judging<'_> {
    /// The links held in `v`'s VPCs by stored peerings.
    fn links_of(&self, v: &ValidatedPeering) -> Vec<IpNet> {
        self.links
            .iter()
            .filter(|(vpc, _)| *vpc == v.local_vpc || *vpc == v.remote_vpc)
            .map(|(_, link)| *link)
            .collect()
    }

    /// What the one-at-a-time read returns for `v`: the peerings touching either of its
    /// VPCs, the one of its name, and those holding one of its port names.
    /// INTERNAL when one of them does not decode.
    fn neighbours_of(&self, v: &ValidatedPeering) -> Result<Vec<PeeringRecord>, ApiError> {
        let vpcs = [v.local_vpc.as_str(), v.remote_vpc.as_str()];
        let ports = port_names(vpcs[0], vpcs[1]);
        let touches = |name: &str, local: &str, remote: &str| {
            vpcs.contains(&local) || vpcs.contains(&remote) || name == v.name
        };
        if let Some(bad) = self
            .unreadable
            .iter()
            .find(|u| touches(&u.name, &u.local_vpc, &u.remote_vpc))
        {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "stored peering {:?} does not decode: {}",
                bad.name,
                bad.error
            )));
        }
        let relevant = |r: &PeeringRecord| {
            touches(&r.name, &r.local_vpc, &r.remote_vpc)
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
        Ok(out)
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
