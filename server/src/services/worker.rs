//! Workers: claim runs from the database, run them in the sandbox, report.
//!
//! A claim is a lease (`server.lease`) that the worker renews every
//! `server.heartbeat` while the run executes. A worker that dies stops
//! renewing; the scheduler re-queues the run when the lease expires, and
//! the dead worker's late report, if it ever comes, is refused by the
//! database (`finish_attempt` checks the lease holder). So a run completes
//! at most once, and at least once as long as some worker lives.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use caisson_host_api::Grants;
use caisson_host_api::log::{LogRecord, LogSink};
use caisson_runtime::{LoadedTask, RunError, RunRequest, Runtime};
use futures::FutureExt;
use object_store::{ObjectStore, ObjectStoreExt};
use rand::Rng;
use tokio::sync::{Mutex, Notify, watch};
use tracing::Instrument;

use super::artifacts::{module_key, output_key};
use super::cancel::{CANCEL_CHANNEL, Cancels};
use super::context::{Dispatched, LocalWorker, Services};
use super::scheduler;
use super::supervise::{RESTART_DELAY, supervise};
use super::wake::armed;
use crate::config::ServerConfig;
use crate::metrics::{LoadSource, Metrics, Requeue};
use crate::model::{LogSource, NewLogLine, RunSpec, RunState};
use crate::store::{AttemptOutcome, Claim, ClaimAsk, Db, DbError, DbKind, Finished, RunRecord};
use crate::telemetry;

/// The longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often buffered log lines are written to the database.
const LOG_FLUSH: Duration = Duration::from_millis(200);
const LOG_BATCH: usize = 500;
/// Runs that end within this claim ahead on PostgreSQL
/// ([`Worker::claim_ahead`]): a run claimed ahead then waits at most
/// about this long for a slot, less than an idle worker's poll (200 ms by
/// default) would have kept it waiting.
const CLAIM_AHEAD_RUNS_UNDER: Duration = Duration::from_millis(100);
/// What a run handed back at shutdown says in its log.
const HANDED_BACK: &str = "worker shutting down: run handed back to the queue";

/// Wakes idle slots when PostgreSQL announces new runs (migrations 0003 and 0017), so
/// a worker on another machine than the API starts a run in milliseconds
/// rather than at its next poll, and stops a run the API was asked to
/// cancel ([`CANCEL_CHANNEL`]) rather than at its next heartbeat. Best
/// effort: while the listener is down, the poll still finds every run and
/// the heartbeat every cancel.
async fn listen_for_runs(
    database: String,
    work_available: Arc<Notify>,
    cancels: Arc<Cancels>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            e = relay_notifications(&database, &work_available, &cancels) => {
                tracing::debug!("run notifications unavailable, polling meanwhile: {e}");
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Relays notifications until the connection fails, and returns why.
async fn relay_notifications(
    database: &str,
    work_available: &Notify,
    cancels: &Cancels,
) -> sqlx::Error {
    let mut listener = match sqlx::postgres::PgListener::connect(database).await {
        Ok(listener) => listener,
        Err(e) => return e,
    };
    if let Err(e) = listener.listen_all(["caisson_runs", CANCEL_CHANNEL]).await {
        return e;
    }
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) if notification.channel() == CANCEL_CHANNEL => {
                // Most runs are not this worker's: those are no-ops.
                cancels.cancel(notification.payload());
            }
            Ok(Some(_)) => work_available.notify_waiters(),
            // The connection dropped; notifications sent meanwhile are lost,
            // which the poll and the heartbeat make up for.
            Ok(None) => continue,
            Err(e) => return e,
        }
    }
}

/// What a worker process shares between its slots.
pub struct Worker {
    id: String,
    db: Db,
    runtime: Arc<Runtime>,
    modules: Arc<dyn ObjectStore>,
    config: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
    work_available: Arc<Notify>,
    scheduler_wake: Arc<Notify>,
    /// Memory not yet promised to running runs, in bytes. Claims only take
    /// runs whose memory limit fits, so a worker never admits more than it
    /// can hold.
    free_memory: Mutex<u64>,
    /// Runs claimed for other slots with the claim of the slot that looked
    /// (one transaction for all the free slots), each with the memory it
    /// reserved; idle slots take them from here. Leased like any claim.
    claimed: std::sync::Mutex<VecDeque<(Claim, u64)>>,
    /// Wakes idle slots when `claimed` was filled.
    claimed_ready: Notify,
    /// The worker's slots, and how many hold a run: a claim takes one run
    /// for every slot that holds none and has none waiting in `claimed`.
    slots: AtomicUsize,
    slots_running: AtomicUsize,
    /// The last claim found fewer runs than it asked for: the queue is
    /// (nearly) empty, so the next asks for one. A batch that finds
    /// nothing past its first run costs that run an empty claim statement
    /// before its commit, which a run submitted to an idle worker (a
    /// trigger, a workflow hop) should not wait for.
    queue_drained: AtomicBool,
    /// Whether its slots take runs: from `run` until shutdown begins.
    /// [`Worker::dispatch`] hands none to a worker that is stopping.
    accepting: AtomicBool,
    /// For moving a workflow on when one of its steps' runs ends.
    services: Services,
}

impl LocalWorker for Worker {
    fn dispatch<'a>(&'a self, run: &'a RunSpec, now: i64) -> Dispatched<'a> {
        Box::pin(Worker::dispatch(self, run, now))
    }
}

impl Worker {
    /// A worker over `services`' database, runtime and module store.
    pub fn new(services: &Services) -> Arc<Self> {
        let all = services.clone();
        let Services {
            db,
            modules,
            runtime,
            config,
            metrics,
            work_available,
            scheduler_wake,
            workflow_defs: _,
            run_ends: _,
            workflow_ended: _,
            cancels: _,
            local_worker: _,
        } = services.clone();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let id = format!(
            "{}-{}-{}",
            host.trim(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let free_memory = Mutex::new(config.server.worker_memory);
        Arc::new(Worker {
            id,
            db,
            runtime,
            modules,
            config,
            metrics,
            work_available,
            scheduler_wake,
            free_memory,
            claimed: std::sync::Mutex::new(VecDeque::new()),
            claimed_ready: Notify::new(),
            slots: AtomicUsize::new(0),
            slots_running: AtomicUsize::new(0),
            queue_drained: AtomicBool::new(true),
            accepting: AtomicBool::new(false),
            services: all,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `slots` claim loops until `shutdown` turns true; then finishes
    /// running runs for up to `server.shutdown_grace` and hands back the rest.
    pub async fn run(self: Arc<Self>, slots: usize, shutdown: watch::Receiver<bool>) {
        tracing::info!(worker = %self.id, slots, "worker started");
        self.metrics.worker_slots(&self.id, slots);
        self.slots.store(slots, Ordering::Relaxed);
        self.db.finishing_slots(slots);
        self.accepting.store(true, Ordering::Relaxed);
        let local: Weak<Worker> = Arc::downgrade(&self);
        *(self.services.local_worker.write()).unwrap_or_else(|e| e.into_inner()) =
            Some(local as Weak<dyn LocalWorker>);
        let listener = (self.db.kind() == DbKind::Postgres).then(|| {
            tokio::spawn(listen_for_runs(
                self.config.server.database.clone(),
                self.work_available.clone(),
                self.services.cancels.clone(),
                shutdown.clone(),
            ))
        });
        let (hand_back_tx, hand_back) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for slot in 0..slots {
            let worker = self.clone();
            let shutdown = shutdown.clone();
            let hand_back = hand_back.clone();
            // A slot that panics is restarted; the memory it had reserved
            // for its run stays reserved (the run itself is re-queued when
            // its lease expires), so the worker errs towards admitting less.
            tasks.spawn(async move {
                let metrics = worker.metrics.clone();
                supervise("worker", &metrics, shutdown.clone(), RESTART_DELAY, || {
                    (worker
                        .clone()
                        .slot(slot, shutdown.clone(), hand_back.clone()))
                    .map(Ok::<(), Infallible>)
                })
                .await
            });
        }
        let mut shutdown_seen = shutdown.clone();
        let _ = shutdown_seen.wait_for(|s| *s).await;
        self.accepting.store(false, Ordering::Relaxed);
        let grace = self.config.server.shutdown_grace;
        tracing::info!(worker = %self.id, ?grace, "stopping: no new claims; finishing running runs");
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(worker = %self.id, "grace period over: handing back unfinished runs");
            let _ = hand_back_tx.send(true);
            while tasks.join_next().await.is_some() {}
        }
        // Runs claimed for slots that stopped before taking them: back to
        // the queue, uncounted, as a handed-back run goes.
        // They say so in their log, as a run stopped mid-way does.
        let left: Vec<(Claim, u64)> = self.take_claimed(usize::MAX);
        for (claim, _) in left {
            let lines = [NewLogLine::system(HANDED_BACK.into())];
            self.hand_back(&claim.run.id, claim.attempt, &lines).await;
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }

    async fn slot(
        self: Arc<Self>,
        slot: usize,
        shutdown: watch::Receiver<bool>,
        hand_back: watch::Receiver<bool>,
    ) {
        let poll = self.config.server.poll;
        loop {
            let stopping = *shutdown.borrow();
            if stopping {
                break;
            }
            // Armed before the claim looks, so a run queued (or claimed for
            // this slot by another) while it looks wakes this slot instead
            // of waiting for the poll.
            let woken = armed(&self.work_available);
            let handed = armed(&self.claimed_ready);
            let claim_started = SystemTime::now();
            match self.claim().await {
                Ok(Some((claim, mut reserved))) => {
                    drop(woken);
                    drop(handed);
                    let busy = self.metrics.slot_busy(&self.id);
                    self.execute(claim, &mut reserved, claim_started, hand_back.clone())
                        .await;
                    drop(busy);
                    // Released already if the finish claimed the next run.
                    if reserved > 0 {
                        *self.free_memory.lock().await += reserved;
                    }
                    self.slots_running.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(None) => {
                    let mut shutdown = shutdown.clone();
                    tokio::select! {
                        () = woken => {}
                        () = handed => {}
                        () = tokio::time::sleep(poll) => {}
                        _ = shutdown.wait_for(|s| *s) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, slot, "could not claim: {e}");
                    tokio::time::sleep(poll.max(Duration::from_millis(500))).await;
                }
            }
        }
    }

    /// A run for the calling slot: one claimed for it already, or else
    /// claimed now together with one for every other slot without a run,
    /// in one transaction, the others handed to those slots from memory.
    /// A slot that gets a run counts as running until it hands it in.
    async fn claim(&self) -> Result<Option<(Claim, u64)>, DbError> {
        // Holding the lock across the claim keeps two slots from both
        // admitting against the same free memory, and a slot from claiming
        // while another's batch waits for it: woken together while runs
        // wait, the first claims for all, the others take.
        let mut free = self.free_memory.lock().await;
        if let Some(ready) = self.take_claimed(1).pop() {
            self.slots_running.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(ready));
        }
        let wanted = if self.queue_drained.load(Ordering::Relaxed) {
            1
        } else {
            self.slots
                .load(Ordering::Relaxed)
                .saturating_sub(self.slots_running.load(Ordering::Relaxed))
                .max(1)
        };
        let claims = self
            .db
            .claim_runs(
                &self.id,
                self.config.server.lease,
                crate::model::now_ms(),
                *free as i64,
                wanted,
            )
            .await?;
        self.queue_drained
            .store(claims.len() < wanted, Ordering::Relaxed);
        // The claim kept their memory within `free` together.
        let mut claims = claims.into_iter().map(|claim| reserve(&mut free, claim));
        let mine = claims.next();
        if mine.is_some() {
            self.slots_running.fetch_add(1, Ordering::Relaxed);
        }
        let others: VecDeque<(Claim, u64)> = claims.collect();
        if !others.is_empty() {
            self.claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(others);
            self.claimed_ready.notify_waiters();
        }
        Ok(mine)
    }

    /// Queues a workflow's next step, whose run this worker claims in the
    /// same commit when a claim would take it now (nothing else waits, it
    /// fits the free memory): then it goes to `claimed`, unannounced, for
    /// the slot finishing this step to take when it looks next, which is
    /// at once. A chain's hop is then one commit for the submit and claim,
    /// where it was two, with no other slot woken to race for the run and
    /// the loser's empty claim. Holding `free_memory` across it, as a
    /// claim does, keeps a concurrent claim from promising the same memory.
    async fn start_here(&self, next: scheduler::Deferred) -> Result<(), scheduler::SchedulerError> {
        let mut free = self.free_memory.lock().await;
        let claim = scheduler::queue_deferred(
            &self.services,
            next,
            &self.id,
            self.config.server.lease,
            *free as i64,
        )
        .await?;
        if let Some(claim) = claim {
            let reserved = reserve(&mut free, claim);
            self.claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(reserved);
        }
        Ok(())
    }

    /// Queues `run`, admitted in this process at `now` (a trigger), and
    /// when a claim would take it now ([`Db::submit_claimed`]) claims it
    /// in the same commit for one of this worker's idle slots, which takes
    /// it from memory: the run starts without a claim transaction of its
    /// own, one commit where it took two. `None` when no slot is idle, a
    /// slot is claiming (it holds the memory lock), or the worker is
    /// stopping: the caller queues it as usual. A run
    /// queued but not claimed here wakes one slot, as a submission does.
    pub async fn dispatch(
        &self,
        run: &RunSpec,
        now: i64,
    ) -> Result<Option<(String, bool)>, DbError> {
        if !self.accepting.load(Ordering::Relaxed) || !self.has_idle_slot() {
            return Ok(None);
        }
        // Not waited for: the lock is held across a claim's or another
        // dispatch's transaction, so a submission that waited for it
        // would queue behind them, one at a time, where queuing the run
        // for the slots to claim takes only the writers' turn. Contended
        // means a slot is busy looking anyway.
        let Ok(mut free) = self.free_memory.try_lock() else {
            return Ok(None);
        };
        // Again under the lock claims take: one may have filled the slot.
        if !self.has_idle_slot() {
            return Ok(None);
        }
        let (id, created, claim) = self
            .db
            .submit_claimed(run, &self.id, self.config.server.lease, now, *free as i64)
            .await?;
        match claim {
            Some(claim) => {
                let reserved = reserve(&mut free, claim);
                drop(free);
                self.claimed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(reserved);
                self.claimed_ready.notify_one();
            }
            None if created => self.work_available.notify_one(),
            None => {}
        }
        Ok(Some((id, created)))
    }

    /// Whether a slot holds no run and has none waiting for it.
    fn has_idle_slot(&self) -> bool {
        self.slots.load(Ordering::Relaxed)
            > self.slots_running.load(Ordering::Relaxed) + self.claimed_len()
    }

    /// How many runs waiting in `claimed`.
    fn claimed_len(&self) -> usize {
        self.claimed.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many runs a slot that finished a run after `elapsed` claims,
    /// while runs wait: its next, and on PostgreSQL, when runs are short,
    /// one for each of the worker's slots, the rest waiting in `claimed`
    /// for the slots as they finish. A claim statement's fixed cost is
    /// most of a one-run claim's there (BENCHMARKS.md), and a batch pays
    /// it once. Short runs only: a run claimed ahead waits, leased, for
    /// about one run's length, which another worker could have spent on
    /// it. SQLite's claim is a statement in this process's writer, which
    /// costs microseconds: no run waits for it.
    fn claim_ahead(&self, elapsed: Duration) -> usize {
        if self.db.kind() == DbKind::Postgres && elapsed <= CLAIM_AHEAD_RUNS_UNDER {
            self.slots.load(Ordering::Relaxed).max(1)
        } else {
            1
        }
    }

    /// Hands a run this worker holds back to the queue at shutdown,
    /// uncounted, with `lines` (which say why) in the same commit.
    async fn hand_back(&self, run_id: &str, attempt: i64, lines: &[NewLogLine]) {
        match self.db.release_run(run_id, &self.id, attempt, lines).await {
            Ok(true) => {
                self.metrics.requeued(Requeue::HandedBack);
                tracing::info!(run = %run_id, "handed back");
            }
            Ok(false) => tracing::warn!(run = %run_id, "could not hand back: the lease was lost"),
            Err(e) => {
                tracing::warn!(run = %run_id, "could not hand back ({e}); the lease will expire")
            }
        }
    }

    /// Up to `n` of the runs claimed for idle slots, oldest first.
    fn take_claimed(&self, n: usize) -> Vec<(Claim, u64)> {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(claimed.len());
        claimed.drain(..n).collect()
    }

    async fn load(&self, digest: &str) -> Result<(Arc<LoadedTask>, LoadSource), (String, bool)> {
        if let Some(task) = self.runtime.loaded(digest) {
            return Ok((task, LoadSource::Memory));
        }
        let source = if self.runtime.is_compiled(digest) {
            LoadSource::Disk
        } else {
            LoadSource::Compiled
        };
        let key = module_key(digest);
        let bytes = match self.modules.get(&key).await {
            Ok(result) => result
                .bytes()
                .await
                .map_err(|e| (format!("could not fetch the module: {e}"), true))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err((
                    format!("module {digest} is no longer in the module store"),
                    false,
                ));
            }
            Err(e) => return Err((format!("could not fetch the module: {e}"), true)),
        };
        let task = self
            .runtime
            .load(&bytes)
            .await
            .map_err(|e| (format!("could not load the module: {e}"), false))?;
        if task.digest() != digest {
            return Err((
                format!("the module store returned other bytes for {digest}"),
                false,
            ));
        }
        Ok((task, source))
    }

    /// Runs one claimed attempt to its end and records the outcome.
    /// `reserved` is the memory the claim reserved for it; the finish
    /// releases it, and zeroes it, if it claims the next run.
    async fn execute(
        &self,
        claim: Claim,
        reserved: &mut u64,
        claim_started: SystemTime,
        hand_back: watch::Receiver<bool>,
    ) {
        let run = &claim.run;
        // Every log line of the attempt carries the run, its tenant and
        // its trace; with traces on, the span joins the run's trace.
        let span = tracing::info_span!(
            "run",
            run_id = %run.id,
            attempt = claim.attempt,
            module = %run.spec.module_name,
            tenant = %run.spec.tenant_id,
            trace_id = tracing::field::Empty,
        );
        let trace_parent = run.spec.trace_parent.as_deref();
        if let Some(trace_id) = telemetry::continue_trace(&span, trace_parent) {
            span.record("trace_id", trace_id.as_str());
            telemetry::queued_and_claimed(
                trace_parent,
                &run.id,
                &self.id,
                run.spec.not_before.max(run.created_at),
                claim_started,
            );
        }
        self.execute_in_span(claim, reserved, hand_back)
            .instrument(span)
            .await
    }

    async fn execute_in_span(
        &self,
        claim: Claim,
        reserved: &mut u64,
        mut hand_back: watch::Receiver<bool>,
    ) {
        let Claim { run, attempt } = claim;
        let spec = &run.spec;
        let started = Instant::now();
        let tenant = self.metrics.tenant(&self.db, &spec.tenant_id).await;
        self.metrics.started(
            &tenant,
            &spec.module_name,
            Duration::from_millis((crate::model::now_ms() - spec.not_before).max(0) as u64),
        );

        // Registered from the start, so that a cancel during the module's
        // load is not lost: the run then stops as soon as it starts.
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let _registered = self.services.cancels.register(&run.id, cancel_tx.clone());

        let logs = LogShipper::start(self.db.clone(), run.id.clone(), attempt);
        // The trace a person can look up, as the run's view shows it.
        let traced = telemetry::sampled_trace_id(spec.trace_parent.as_deref())
            .map(|t| format!("; trace {t}"))
            .unwrap_or_default();
        logs.system(format!(
            "attempt {attempt} of {} on worker {}{traced}",
            spec.max_retries + 1,
            self.id
        ));

        let load_started = Instant::now();
        let loading = tracing::info_span!("load", source = tracing::field::Empty);
        let task = match self.load(&spec.digest).instrument(loading.clone()).await {
            Ok((task, source)) => {
                loading.record("source", source.as_str());
                self.metrics.loaded(source, load_started.elapsed());
                task
            }
            Err((message, retryable)) => {
                logs.system(message.clone());
                let lines = logs.finish().await;
                let outcome = self.decide(&run, attempt, RunState::Failed, message, retryable);
                self.finish(&run, attempt, outcome, lines, started.elapsed(), reserved)
                    .instrument(tracing::info_span!("finish"))
                    .await;
                return;
            }
        };

        let lost = Arc::new(AtomicBool::new(false));
        let beating = heartbeat(
            self.db.clone(),
            run.id.clone(),
            self.id.clone(),
            self.config.server.heartbeat,
            self.config.server.lease,
            cancel_tx.clone(),
            lost.clone(),
        );

        // Grants were checked when the run was admitted; check them again
        // now, against what the tenant may grant today: a label an admin
        // took away while the run waited is withheld (the task then gets
        // `access-denied`). If the database cannot say, withhold all. A
        // run granted nothing has nothing to withhold: no read.
        let asks_nothing = spec.grants.objects.is_empty() && spec.grants.sql.is_empty();
        let allowed = if asks_nothing {
            Grants::default()
        } else {
            match self.db.tenant_grants(&spec.tenant_id).await {
                Ok(allowed) => allowed,
                Err(e) => {
                    tracing::warn!("could not read the tenant's grants: {e}");
                    Grants::default()
                }
            }
        };
        let withheld: Vec<&str> = (spec.grants.not_in(&allowed).into_iter())
            .map(|(_, label)| label)
            .collect();
        if !withheld.is_empty() {
            logs.system(format!(
                "grants withheld, no longer allowed for this tenant: {}",
                withheld.join(", ")
            ));
        }

        let mut request = RunRequest::new(spec.input.clone(), Arc::new(logs.sink()));
        request.params = spec.params.clone();
        request.grants = spec.grants.within(&allowed);
        request.limits = Some(spec.limits(self.config.runtime.limits));
        request.cancel = Some(cancel_rx);

        let mut handed_back = false;
        let result = {
            let running = beside(self.runtime.run(&task, request), beating);
            tokio::pin!(running);
            let hand_back = async move {
                // Drop the watch guard here: it must not live across awaits.
                let _ = hand_back.wait_for(|h| *h).await;
            };
            tokio::select! {
                result = &mut running => result,
                () = hand_back => {
                    handed_back = true;
                    let _ = cancel_tx.send(true);
                    running.await
                }
            }
        };

        if handed_back {
            logs.system(HANDED_BACK.into());
            let lines = logs.finish().await;
            self.hand_back(&run.id, attempt, &lines).await;
            return;
        }
        if lost.load(Ordering::Relaxed) {
            logs.system("this worker lost the run's lease; another worker runs it".into());
            logs.close().await;
            tracing::warn!("lease lost; not reporting");
            self.metrics.lease_lost(&self.id);
            return;
        }

        let outcome = match result {
            Ok(output) if output.len() as u64 > self.config.server.inline_output_bytes => {
                // Large outputs go to the artifact store, not the database row.
                let key = output_key(&run.id);
                let size = output.len();
                match self.modules.put(&key, output.into()).await {
                    Ok(_) => {
                        logs.system(format!("output of {size} bytes stored as {key}"));
                        AttemptOutcome::Succeeded {
                            output: Vec::new(),
                            output_key: Some(key.to_string()),
                        }
                    }
                    Err(e) => {
                        let message = format!("could not store the output of {size} bytes: {e}");
                        logs.system(message.clone());
                        self.decide(&run, attempt, RunState::Failed, message, true)
                    }
                }
            }
            Ok(output) => AttemptOutcome::Succeeded {
                output,
                output_key: None,
            },
            Err(error) => {
                logs.system(format!("attempt {attempt} failed: {error}"));
                let state = match error {
                    RunError::Timeout(_) => RunState::TimedOut,
                    RunError::Cancelled => RunState::Cancelled,
                    _ => RunState::Failed,
                };
                let retryable = match error {
                    RunError::Timeout(_) => spec.retry_timeouts,
                    RunError::Cancelled => false,
                    ref e => e.retryable(),
                };
                self.decide(&run, attempt, state, error.to_string(), retryable)
            }
        };
        let lines = logs.finish().await;
        self.finish(&run, attempt, outcome, lines, started.elapsed(), reserved)
            .instrument(tracing::info_span!("finish"))
            .await;
    }

    /// An attempt's last log lines whose outcome was not stored: on their
    /// own, as the shipper stores the lines before them.
    async fn store_logs_apart(&self, run_id: &str, attempt: i64, lines: &[NewLogLine]) {
        if let Err(e) = self.db.append_logs(run_id, attempt, lines).await {
            tracing::warn!(run = %run_id, "could not store {} log lines: {e}", lines.len());
        }
    }

    /// Retry, or finish with `state`.
    fn decide(
        &self,
        run: &RunRecord,
        attempt: i64,
        state: RunState,
        error: String,
        retryable: bool,
    ) -> AttemptOutcome {
        let spec = &run.spec;
        if retryable && attempt <= spec.max_retries {
            let delay = backoff(
                Duration::from_millis(spec.backoff_ms.max(0) as u64),
                attempt,
            );
            AttemptOutcome::Retry {
                error,
                not_before: crate::model::now_ms() + delay.as_millis() as i64,
                timed_out: state == RunState::TimedOut,
            }
        } else {
            AttemptOutcome::Finished {
                state,
                error,
                retryable,
            }
        }
    }

    /// Records the outcome. While runs wait (the last claim found all it
    /// asked for), the slot's next run is claimed in the same commit
    /// ([`Db::finish_and_claim`]), with the memory this run reserved
    /// (`reserved`, then zeroed) released under the lock claims take.
    async fn finish(
        &self,
        run: &RunRecord,
        attempt: i64,
        outcome: AttemptOutcome,
        lines: Vec<NewLogLine>,
        elapsed: Duration,
        reserved: &mut u64,
    ) {
        let state = match &outcome {
            AttemptOutcome::Succeeded { .. } => RunState::Succeeded,
            AttemptOutcome::Finished { state, .. } => *state,
            AttemptOutcome::Retry { .. } => RunState::Queued,
        };
        // The database may be briefly unreachable (a restart): keep the
        // outcome and retry for as long as the lease would have lasted.
        let deadline = Instant::now() + self.config.server.lease;
        // A run already claimed ahead is this slot's next; no claim then.
        let claiming = self.accepting.load(Ordering::Relaxed)
            && !self.queue_drained.load(Ordering::Relaxed)
            && self.claimed_len() == 0;
        let free = if claiming {
            let free = self.free_memory.lock().await;
            // The claim that held the lock may have claimed ahead for
            // this slot: it then takes that run and claims nothing.
            (self.claimed_len() == 0).then_some(free)
        } else {
            None
        };
        let max_runs = self.claim_ahead(elapsed);
        let finished = loop {
            let next = free.as_deref().map(|free| ClaimAsk {
                worker_id: &self.id,
                lease: self.config.server.lease,
                max_memory: (*free + *reserved) as i64,
                max_runs,
            });
            match self
                .db
                .finish_and_claim(
                    &run.id,
                    &self.id,
                    attempt,
                    &outcome,
                    &lines,
                    crate::model::now_ms(),
                    run.spec.workflow_step().is_none(),
                    next,
                )
                .await
            {
                Ok(Some(finished)) => break finished,
                Ok(None) => {
                    tracing::warn!("the run was no longer ours when it finished; outcome dropped");
                    self.store_logs_apart(&run.id, attempt, &lines).await;
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!("could not record the outcome ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(
                        "could not record the outcome: {e}; the run will be retried when its lease expires"
                    );
                    self.store_logs_apart(&run.id, attempt, &lines).await;
                    return;
                }
            }
        };
        let Finished { settled, claims } = finished;
        if let Some(mut free) = free {
            *free += std::mem::take(reserved);
            // Drained only if it looked and found nothing: a step that
            // made another ready did not look.
            if let Some(claims) = &claims {
                self.queue_drained
                    .store(claims.is_empty(), Ordering::Relaxed);
            }
            let claims: Vec<(Claim, u64)> = (claims.into_iter().flatten())
                .map(|claim| reserve(&mut free, claim))
                .collect();
            drop(free);
            // The first for this slot, which takes it as it looks next, at
            // once; any claimed ahead for whichever slot looks first.
            let ahead = claims.len() > 1;
            self.claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(claims);
            if ahead {
                self.claimed_ready.notify_waiters();
            }
        }
        let tenant = self.metrics.tenant(&self.db, &run.spec.tenant_id).await;
        self.metrics
            .finished(&tenant, &run.spec.module_name, state, elapsed);
        if state == RunState::Queued {
            self.work_available.notify_waiters();
        } else {
            self.services.run_ends.ended(&run.id);
        }
        if let Some(settled) = settled {
            // The workflow moves on here, from this step, rather than in a
            // scheduler pass over all of it; should that fail, the pass
            // (woken now, and periodic anyway) recovers.
            let output: &[u8] = match &outcome {
                AttemptOutcome::Succeeded { output, .. } => output.as_slice(),
                _ => &[],
            };
            let next = match scheduler::step_ended(&self.services, &settled, output, true).await {
                Ok(Some(next)) => self.start_here(next).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = next {
                tracing::warn!(workflow_run = %settled.workflow_run_id, "could not move the workflow on: {e}");
                self.scheduler_wake.notify_waiters();
            }
        }
        tracing::info!(state = state.as_str(), ?elapsed, "attempt finished");
    }
}

/// A claimed run with the memory it takes out of `free` (the worker's
/// `free_memory`, locked), which it gives back when it ends.
fn reserve(free: &mut u64, claim: Claim) -> (Claim, u64) {
    let reserved = claim.run.spec.memory_bytes.max(0) as u64;
    *free = free.saturating_sub(reserved);
    (claim, reserved)
}

/// `base * 2^(attempt-1)`, capped, times a random factor in [0.5, 1.5) so
/// that runs failing together do not retry in lockstep.
pub fn backoff(base: Duration, attempt: i64) -> Duration {
    let exp = (attempt - 1).clamp(0, 30) as u32;
    let delay = base.saturating_mul(1u32 << exp.min(20)).min(MAX_BACKOFF);
    delay.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Runs `work` with `beside` polled alongside in the same task until
/// `work` ends: a run's heartbeat, which a task of its own cost a spawn, a
/// wake-up and an abort per run. The guest yields to the executor at
/// every epoch tick, so the heartbeat's timer is served while it runs.
async fn beside<T>(work: impl Future<Output = T>, beside: impl Future<Output = ()>) -> T {
    tokio::pin!(work);
    tokio::pin!(beside);
    let mut beating = true;
    loop {
        tokio::select! {
            out = &mut work => return out,
            () = &mut beside, if beating => beating = false,
        }
    }
}

async fn heartbeat(
    db: Db,
    run_id: String,
    worker_id: String,
    every: Duration,
    lease: Duration,
    cancel: watch::Sender<bool>,
    lost: Arc<AtomicBool>,
) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        interval.tick().await;
        let until = crate::model::now_ms() + lease.as_millis() as i64;
        match db.heartbeat(&run_id, &worker_id, until).await {
            Ok(Some(false)) => {}
            Ok(Some(true)) => {
                tracing::info!(run = %run_id, "cancel requested");
                let _ = cancel.send(true);
            }
            Ok(None) => {
                lost.store(true, Ordering::Relaxed);
                let _ = cancel.send(true);
                return;
            }
            // Keep running through a database blip; if it lasts past the
            // lease, the run is re-queued elsewhere and our report refused.
            Err(e) => tracing::warn!(run = %run_id, "heartbeat failed: {e}"),
        }
    }
}

/// Buffers a run's log and writes it to the database in batches, so a
/// chatty task costs a few inserts a second rather than one per line. The
/// lines wait in memory, not in a channel to the writing task: a run
/// shorter than [`LOG_FLUSH`] (most) never wakes that task, and its lines
/// go with its outcome's commit.
struct LogShipper {
    buffer: Arc<LogBuffer>,
    /// Writes what the buffer holds every [`LOG_FLUSH`], or once it holds
    /// [`LOG_BATCH`] lines.
    flusher: tokio::task::JoinHandle<()>,
    db: Db,
    run_id: String,
    attempt: i64,
}

#[derive(Default)]
struct LogBuffer {
    lines: std::sync::Mutex<Vec<NewLogLine>>,
    /// Held while lines taken from `lines` are being written, so that the
    /// lines a finished run takes come after every line written before.
    writing: Mutex<()>,
    full: Notify,
}

impl LogBuffer {
    fn push(&self, line: NewLogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.push(line);
        if lines.len() >= LOG_BATCH {
            self.full.notify_one();
        }
    }

    fn take(&self) -> Vec<NewLogLine> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl LogShipper {
    fn start(db: Db, run_id: String, attempt: i64) -> Self {
        let buffer = Arc::new(LogBuffer::default());
        let flusher = tokio::spawn({
            let (buffer, db, run_id) = (buffer.clone(), db.clone(), run_id.clone());
            async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(LOG_FLUSH) => {}
                        () = buffer.full.notified() => {}
                    }
                    let _writing = buffer.writing.lock().await;
                    let batch = buffer.take();
                    if batch.is_empty() {
                        continue;
                    }
                    if let Err(e) = db.append_logs(&run_id, attempt, &batch).await {
                        tracing::warn!(run = %run_id, "could not store {} log lines: {e}", batch.len());
                    }
                }
            }
        });
        LogShipper {
            buffer,
            flusher,
            db,
            run_id,
            attempt,
        }
    }

    fn sink(&self) -> ShipperSink {
        ShipperSink {
            buffer: self.buffer.clone(),
        }
    }

    /// A line from Caisson itself, not the task.
    fn system(&self, message: String) {
        self.buffer.push(NewLogLine::system(message));
    }

    /// Stops, and returns the lines not stored yet, for the caller to
    /// store with the attempt's outcome.
    async fn finish(self) -> Vec<NewLogLine> {
        // Once a write under way is done; the flusher is then between
        // writes, and stopping it loses nothing.
        let _writing = self.buffer.writing.lock().await;
        self.flusher.abort();
        self.buffer.take()
    }

    /// Stores everything and stops.
    async fn close(self) {
        let (db, run_id, attempt) = (self.db.clone(), self.run_id.clone(), self.attempt);
        let lines = self.finish().await;
        if let Err(e) = db.append_logs(&run_id, attempt, &lines).await {
            tracing::warn!(run = %run_id, "could not store {} log lines: {e}", lines.len());
        }
    }
}

/// A shipper dropped without `finish` or `close` (its slot panicked)
/// stops its flusher, which would otherwise wake every [`LOG_FLUSH`]
/// forever: nothing else ends its loop.
impl Drop for LogShipper {
    fn drop(&mut self) {
        self.flusher.abort();
    }
}

struct ShipperSink {
    buffer: Arc<LogBuffer>,
}

impl LogSink for ShipperSink {
    fn record(&self, record: LogRecord) {
        // The runtime caps the bytes a run may log, which bounds the buffer.
        self.buffer.push(record.into());
    }

    fn progress(&self, done: u64, total: u64) {
        let message = if total > 0 {
            format!("progress {done}/{total}")
        } else {
            format!("progress {done}")
        };
        self.buffer.push(NewLogLine {
            source: LogSource::Progress,
            ..NewLogLine::system(message)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(1);
        for _ in 0..100 {
            let first = backoff(base, 1);
            assert!(
                first >= Duration::from_millis(500) && first < Duration::from_millis(1500),
                "{first:?}"
            );
            let third = backoff(base, 3);
            assert!(
                third >= Duration::from_secs(2) && third < Duration::from_secs(6),
                "{third:?}"
            );
            assert!(backoff(base, 60) < MAX_BACKOFF.mul_f64(1.5));
        }
    }
}
