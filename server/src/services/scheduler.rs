//! The scheduler: background duties that no single request owns.
//!
//! - re-queue runs whose worker died (their lease expired);
//! - fire cron schedules, catching up after downtime as each one says;
//! - move workflow runs along: start steps whose dependencies are done,
//!   skip steps that can no longer run, finish the workflow run.
//!   Workflows move on events ([`step_ended`], called by the worker whose
//!   run ended a step); the periodic pass ([`advance_workflow`] over every
//!   open run) recovers what a process that died left half done. A map
//!   step lists its prefix once when it starts, stores its splits
//!   ([`crate::map::plan`]) and queues them `parallelism` at a time, each
//!   split's end queueing the next.
//!
//! Every duty is safe to run in several processes at once: schedules
//! advance by compare-and-set, workflow steps move by compare-and-set, and
//! every run started here carries an idempotency key, so a race starts
//! nothing twice. [`tick`] takes "now" as an argument so tests drive time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use serde::Deserialize;
use tokio::sync::watch;

use super::admission::{self, AdmissionError};
use super::context::Services;
use super::wake::armed;
use super::workflow_defs::WorkflowDefs;
use crate::cron::{CatchUp, CronSchedule, due_fires, render_template};
use crate::dag::{self, SplitOutput, StepDef, StepState, WorkflowDef};
use crate::map::{self, Listed, MapSpec};
use crate::model::{RunSpec, RunState, SubmitRun, time};
use crate::store::{Claim, Db, DbError, NewSplit, OpenWorkflowRun, ScheduleRecord, Settled};

/// Why a schedule could not fire or a workflow could not move on. The
/// scheduler logs it and tries again on the next tick.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A run the schedule or workflow starts was not admitted.
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// What the store holds no longer reads: a template, a cron expression
    /// or a workflow written by another version, or a row gone missing.
    #[error("{what}: {message}")]
    Corrupt { what: &'static str, message: String },
    /// The artifact store refused a map step's outputs, which its
    /// dependant gets by key once they are too large to pass inline.
    #[error("could not store a split's output in the artifact store: {0}")]
    Artifacts(#[from] object_store::Error),
}

fn corrupt(what: &'static str, message: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Corrupt {
        what,
        message: message.to_string(),
    }
}

/// The most missed fire times one schedule starts per tick; the rest
/// follow on the next ticks, so a long outage drains in batches.
const CATCH_UP_BATCH: usize = 100;

/// Runs [`tick`] every `server.tick`, or sooner when woken, until `shutdown`.
pub async fn run(services: Services, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(services.config.server.tick);
    let mut woken = armed(&services.scheduler_wake);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = &mut woken => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Armed before the pass, so a wake-up sent while it runs starts
        // the next pass at once instead of waiting for the timer.
        woken = armed(&services.scheduler_wake);
        tick(&services, Utc::now()).await;
    }
}

/// One pass of every duty, as of `now`. Failures are logged and retried
/// on the next tick.
pub async fn tick(state: &Services, now: DateTime<Utc>) {
    match state.db.requeue_expired(now.timestamp_millis()).await {
        Ok(0) => {}
        Ok(n) => {
            state.metrics.leases_expired(n);
            tracing::warn!(
                runs = n,
                "re-queued runs whose worker stopped renewing its lease"
            );
            state.work_available.notify_waiters();
        }
        Err(e) => tracing::warn!("could not check for expired leases: {e}"),
    }
    // Bounds how long a stored queue count that drifted up refuses a
    // tenant's runs: the insert trusts it (migration 0018).
    if let Err(e) = state.db.recount_queued().await {
        tracing::warn!("could not count the full queues again: {e}");
    }
    match state.db.due_schedules(now.timestamp_millis()).await {
        Ok(due) => {
            for (tenant_id, schedule) in due {
                if let Err(e) = fire(state, &tenant_id, &schedule, now).await {
                    tracing::warn!(schedule = %schedule.name, "could not fire: {e}");
                }
            }
        }
        Err(e) => tracing::warn!("could not read due schedules: {e}"),
    }
    match state.db.open_workflow_runs().await {
        Ok(runs) => {
            state.workflow_defs.keep_only(&runs);
            for run in runs {
                if let Err(e) = advance_workflow(state, &run).await {
                    tracing::warn!(workflow_run = %run.id, "could not advance: {e}");
                }
            }
        }
        Err(e) => tracing::warn!("could not read workflow runs: {e}"),
    }
    state.metrics.scheduler_pass(Utc::now().timestamp_millis());
}

/// The definition `run` started with, from `defs` or else the store.
async fn definition(
    defs: &WorkflowDefs,
    db: &Db,
    run: &OpenWorkflowRun,
) -> Result<Arc<WorkflowDef>, SchedulerError> {
    if let Some(def) = defs.get(&run.id) {
        return Ok(def);
    }
    defs.loaded();
    let value = db
        .workflow_run_definition(&run.id)
        .await?
        .ok_or_else(|| corrupt("a workflow run vanished", &run.id))?;
    let def = Arc::new(
        WorkflowDef::deserialize(&value)
            .map_err(|e| corrupt("a stored workflow no longer parses", e))?,
    );
    defs.insert(&run.id, def.clone());
    Ok(def)
}

/// Moves a workflow on from a step that just ended, as
/// [`crate::store::Db::finish_and_claim`] found it: the event-driven
/// advance, one step's worth of work instead of a pass over the workflow.
///
/// Successors made ready by a succeeded step they alone waited for start
/// here, their input being `output` (the step's output, already in hand).
/// Anything else (a failure, which may skip steps downstream; a successor
/// waiting for several steps, whose input joins their outputs; the last
/// step ending the run) takes one [`advance_workflow`] pass, which decides
/// it from the stored states. Every move is compare-and-set and every run
/// has an idempotency key, so racing the periodic pass is harmless; if
/// this process dies first, that pass (recovery) finds the ready steps.
///
/// With `defer`, a lone successor (a chain's next step) and nothing else
/// to do: its run is admitted but not queued, and returned for the caller
/// to queue with [`queue_deferred`] (a worker, which can start it itself).
pub async fn step_ended(
    state: &Services,
    settled: &Settled,
    output: &[u8],
    defer: bool,
) -> Result<Option<Deferred>, SchedulerError> {
    let run = OpenWorkflowRun {
        id: settled.workflow_run_id.clone(),
        tenant_id: settled.tenant_id.clone(),
    };
    if settled.split.is_some() {
        // A map step's split: while its siblings are open, the next
        // pending split takes its place; the last one ends the step, whose
        // dependants' input joins every split's output, which a pass reads.
        if settled.step_ended {
            advance_workflow(state, &run).await?;
            return Ok(None);
        }
        let def = definition(&state.workflow_defs, &state.db, &run).await?;
        if let Some(step) = def.steps.iter().find(|s| s.name == settled.step)
            && launch_splits(state, &run, step).await?.is_some()
        {
            advance_workflow(state, &run).await?;
        }
        return Ok(None);
    }
    if !settled.succeeded || settled.all_ended {
        advance_workflow(state, &run).await?;
        return Ok(None);
    }
    if settled.ready.is_empty() {
        return Ok(None);
    }
    let def = definition(&state.workflow_defs, &state.db, &run).await?;
    let mut pass = false;
    let mut alone = Vec::with_capacity(settled.ready.len());
    for step in &settled.ready {
        let waits_for_this_only = def
            .steps
            .iter()
            .find(|s| s.name == *step)
            .is_some_and(|s| s.depends_on == [settled.step.as_str()]);
        if waits_for_this_only {
            alone.push(step.as_str());
        } else {
            pass = true;
        }
    }
    let mut deferred = None;
    // A cancelled workflow run starts nothing more: as the step's commit
    // saw it (a cancel since then ends the run in its insert's commit).
    if !alone.is_empty() && settled.workflow_running {
        let ready = start_ready(state, &run, &def, &alone, &settled.step, output).await?;
        pass |= ready.pass;
        let mut runs = ready.runs;
        if defer && !pass && runs.len() == 1 {
            deferred = runs.pop().map(|spec| Deferred {
                run: run.clone(),
                spec,
            });
        } else if !runs.is_empty() {
            submit_steps(state, &run, runs).await?;
        }
    }
    if pass {
        advance_workflow(state, &run).await?;
    }
    Ok(deferred)
}

/// A workflow step's run, admitted by [`step_ended`] and not yet queued.
#[derive(Debug)]
pub struct Deferred {
    run: OpenWorkflowRun,
    spec: RunSpec,
}

/// Queues a [`Deferred`] step's run, and in the same transaction claims it
/// for `worker_id` if a claim would take it now
/// ([`crate::store::Db::submit_claimed`]): the claim then returned is the
/// caller's to run, with no other slot woken. Otherwise the run waits in
/// the queue like any other (a full queue: the step stays pending for the
/// periodic pass).
pub async fn queue_deferred(
    state: &Services,
    deferred: Deferred,
    worker_id: &str,
    lease: Duration,
    max_memory: i64,
) -> Result<Option<Claim>, SchedulerError> {
    let Deferred { run, mut spec } = deferred;
    let span = admission::start_trace(&mut spec);
    let submitted = state
        .db
        .submit_claimed(&spec, worker_id, lease, crate::model::now_ms(), max_memory)
        .await;
    let (run_id, created, claim) = match submitted {
        Ok(submitted) => submitted,
        Err(e @ DbError::QuotaExceeded { .. }) => {
            tracing::debug!(workflow_run = %run.id, "step waits: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    after_queued(state, &run, &spec, &span, &run_id, created).await?;
    if created {
        let tenant = state.metrics.tenant(&state.db, &spec.tenant_id).await;
        state.metrics.submitted(&tenant, &spec.module_name);
        if claim.is_none() {
            state.work_available.notify_waiters();
        }
    }
    Ok(claim)
}

/// What follows a step's run going into the queue as `run_id` (`new` if
/// this queued it): its trace span names the run, and a run queued before
/// (a racing scheduler, or a process that died) has its step marked
/// running, as a new run's commit did.
async fn after_queued(
    state: &Services,
    run: &OpenWorkflowRun,
    spec: &RunSpec,
    span: &tracing::Span,
    run_id: &str,
    new: bool,
) -> Result<(), SchedulerError> {
    span.record("run_id", run_id);
    span.record("created", new);
    if !new && let Some(step) = &spec.step_name {
        state
            .db
            .move_step(&run.id, step, "pending", "running", Some(run_id))
            .await?;
    }
    Ok(())
}

/// `steps`, each made ready by the end of `ended` alone, whose `output`
/// is their input, admitted together (each module read once) for
/// [`submit_steps`] to queue a batch to a commit: a step fanning out to a
/// thousand successors costs a few transactions, not a thousand.
/// `pass` says a pass must follow: a step that could not start failed
/// (the pass skips what follows), or a map step over an empty prefix
/// succeeded at once (the pass starts what follows).
async fn start_ready(
    state: &Services,
    run: &OpenWorkflowRun,
    def: &WorkflowDef,
    steps: &[&str],
    ended: &str,
    output: &[u8],
) -> Result<Ready, SchedulerError> {
    let mut ready = Ready {
        runs: Vec::with_capacity(steps.len()),
        pass: false,
    };
    let outputs = BTreeMap::from([(ended.to_string(), output.to_vec())]);
    let mut resolved = admission::Resolved::default();
    for step in steps {
        match prepare_step(state, run, def, step, &outputs, &mut resolved).await? {
            Prepared::Run(new_run) => ready.runs.push(*new_run),
            Prepared::Ended(StepState::Failed | StepState::Succeeded) => ready.pass = true,
            Prepared::Ended(_) => {}
        }
    }
    Ok(ready)
}

/// What [`start_ready`] admitted.
struct Ready {
    /// The runs to queue.
    runs: Vec<RunSpec>,
    /// Whether a pass must follow.
    pass: bool,
}

async fn fire(
    state: &Services,
    tenant_id: &str,
    schedule: &ScheduleRecord,
    now: DateTime<Utc>,
) -> Result<(), SchedulerError> {
    let Some(expected) = schedule.next_fire_at else {
        return Ok(());
    };
    let cron = CronSchedule::parse(&schedule.cron, &schedule.timezone)
        .map_err(|e| corrupt("a stored cron expression no longer parses", e))?;
    let catch_up = if schedule.catch_up == "all" {
        CatchUp::All
    } else {
        CatchUp::Skip
    };
    // Fire times in [expected, now]: `due_fires` takes a half-open (last, now].
    let fires = due_fires(&cron, time(expected - 1), now, catch_up, CATCH_UP_BATCH);
    let next = match fires.last() {
        Some(last) if fires.len() == CATCH_UP_BATCH => cron.next_after(*last),
        _ => cron.next_after(now),
    };
    if !state
        .db
        .advance_schedule(
            &schedule.id,
            expected,
            next.map(|t| t.timestamp_millis()),
            now.timestamp_millis(),
        )
        .await?
    {
        return Ok(()); // another scheduler fired it
    }
    state.metrics.schedule_fired(Duration::from_millis(
        (now.timestamp_millis() - expected).max(0) as u64,
    ));
    for fire in fires {
        start_scheduled(state, tenant_id, schedule, &cron, fire).await?;
    }
    Ok(())
}

/// Starts the run of `schedule` for the logical date `fire`.
pub async fn start_scheduled(
    state: &Services,
    tenant_id: &str,
    schedule: &ScheduleRecord,
    cron: &CronSchedule,
    fire: DateTime<Utc>,
) -> Result<String, SchedulerError> {
    let mut submit: SubmitRun = serde_json::from_value(schedule.template.clone())
        .map_err(|e| corrupt("a stored run template no longer parses", e))?;
    let zone = cron.time_zone();
    for value in submit.params.values_mut() {
        *value = render_template(value, fire, zone);
    }
    if let Some(serde_json::Value::String(input)) = &mut submit.input {
        *input = render_template(input, fire, zone);
    }
    submit
        .params
        .insert("logical_date".into(), fire.to_rfc3339());
    // One run per schedule and logical date, whoever starts it: a regular
    // firing and a backfill of the same time, or two schedulers.
    submit.idempotency_key = Some(format!(
        "schedule:{}:{}",
        schedule.id,
        fire.timestamp_millis()
    ));
    let mut run = admission::prepare(state, tenant_id, submit).await?;
    run.schedule_id = Some(schedule.id.clone());
    run.logical_date = Some(fire.timestamp_millis());
    let (id, _) = admission::enqueue(state, &mut run).await?;
    Ok(id)
}

fn step_state(state: &str) -> StepState {
    match state {
        "running" => StepState::Running,
        "succeeded" => StepState::Succeeded,
        "failed" => StepState::Failed,
        "skipped" => StepState::Skipped,
        _ => StepState::Pending,
    }
}

/// Moves one workflow run as far as it can go now.
pub async fn advance_workflow(
    state: &Services,
    run: &OpenWorkflowRun,
) -> Result<(), SchedulerError> {
    let def = definition(&state.workflow_defs, &state.db, run).await?;
    let def = def.as_ref();
    // One read settles the steps whose runs finished; the passes below
    // then work on the states in memory. Every move is compare-and-set, so
    // a scheduler racing this one cannot make a step move twice; at worst
    // this pass stops early and the next tick carries on.
    let mut states = BTreeMap::new();
    let mut run_ids = BTreeMap::new();
    for (step, run_state) in state.db.workflow_steps_with_runs(&run.id).await? {
        let mut current = step_state(&step.state);
        if let (StepState::Running, Some(run_state)) = (current, run_state)
            && run_state.is_final()
        {
            let to = if run_state == RunState::Succeeded {
                "succeeded"
            } else {
                "failed"
            };
            state
                .db
                .move_step(&run.id, &step.name, "running", to, None)
                .await?;
            current = step_state(to);
        }
        if current == StepState::Running
            && step.run_id.is_none()
            && let Some(step_def) = def
                .steps
                .iter()
                .find(|s| s.name == step.name && s.map.is_some())
        {
            // A map step: settle splits whose runs ended unseen, and start
            // pending ones a lost event left waiting.
            let ended = match state.db.settle_ended_splits(&run.id, &step.name).await? {
                Some(settled) => Some(settled),
                None => launch_splits(state, run, step_def).await?,
            };
            match ended {
                Some(settled) if settled.succeeded => current = StepState::Succeeded,
                Some(_) => current = StepState::Failed,
                None => {}
            }
        }
        if let Some(run_id) = step.run_id {
            run_ids.insert(step.name.clone(), run_id);
        }
        states.insert(step.name, current);
    }
    // Each pass skips or starts one level; skips can cascade, so a
    // workflow can need one pass per level, bounded by its size.
    for _ in 0..=def.steps.len() + 1 {
        let advance = dag::advance(def, &states);
        if let Some(outcome) = advance.finished {
            let outcome = match outcome {
                dag::WorkflowOutcome::Succeeded => "succeeded",
                dag::WorkflowOutcome::Failed => "failed",
            };
            if state
                .db
                .finish_workflow_run(&run.id, outcome, crate::model::now_ms())
                .await?
            {
                state.workflow_ended.notify_waiters();
            }
            return Ok(());
        }
        if advance.start.is_empty() && advance.skip.is_empty() {
            return Ok(());
        }
        for step in advance.skip {
            if !state
                .db
                .move_step(&run.id, &step, "pending", "skipped", None)
                .await?
            {
                return Ok(());
            }
            states.insert(step, StepState::Skipped);
        }
        for step in advance.start {
            let outputs = dependency_outputs(state, run, def, &step, &run_ids).await?;
            let Some(started) = start_step(state, run, def, &step, outputs).await? else {
                // The tenant's queue is full: the step stays pending, and
                // a later tick starts it once runs have drained.
                return Ok(());
            };
            states.insert(step, started);
        }
    }
    Ok(())
}

/// The outputs of `step`'s dependencies, read from their runs.
async fn dependency_outputs(
    state: &Services,
    run: &OpenWorkflowRun,
    def: &WorkflowDef,
    step: &str,
    run_ids: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Vec<u8>>, SchedulerError> {
    let mut outputs = BTreeMap::new();
    let Some(step_def) = def.steps.iter().find(|s| s.name == step) else {
        return Ok(outputs);
    };
    let mut with_runs = Vec::with_capacity(step_def.depends_on.len());
    for dep in &step_def.depends_on {
        if def.steps.iter().any(|s| s.name == *dep && s.map.is_some()) {
            outputs.insert(dep.clone(), map_step_output(state, &run.id, dep).await?);
        } else if run_ids.contains_key(dep) {
            with_runs.push(dep.as_str());
        }
    }
    // One read for all of them (a fan-in joins a thousand).
    if !with_runs.is_empty() {
        outputs.extend(state.db.step_outputs(&run.id, &with_runs).await?);
    }
    Ok(outputs)
}

/// Queues `step`'s run, with `outputs` (its dependencies') making its
/// input. `None` if the tenant's queue is full and the step waits.
async fn start_step(
    state: &Services,
    run: &OpenWorkflowRun,
    def: &WorkflowDef,
    step: &str,
    outputs: BTreeMap<String, Vec<u8>>,
) -> Result<Option<StepState>, SchedulerError> {
    // A cancelled workflow run starts nothing more (its pending steps are
    // skipped, but a pass that read them before may still be going).
    if state.db.workflow_run_state(&run.id).await?.as_deref() != Some("running") {
        return Ok(Some(StepState::Skipped));
    }
    let mut resolved = admission::Resolved::default();
    match prepare_step(state, run, def, step, &outputs, &mut resolved).await? {
        Prepared::Ended(step_state) => Ok(Some(step_state)),
        Prepared::Run(new_run) => Ok(submit_steps(state, run, vec![*new_run])
            .await?
            .then_some(StepState::Running)),
    }
}

/// A step about to start, once admitted.
enum Prepared {
    /// Its run, to queue ([`submit_steps`]).
    Run(Box<RunSpec>),
    /// It needs no run queued here: a map step (started), or a step whose
    /// run cannot be admitted (failed).
    Ended(StepState),
}

/// Admits `step`'s run, with `outputs` (its dependencies') making its
/// input, reading modules through `resolved`. The caller has checked that
/// the workflow run is still running.
async fn prepare_step(
    state: &Services,
    run: &OpenWorkflowRun,
    def: &WorkflowDef,
    step: &str,
    outputs: &BTreeMap<String, Vec<u8>>,
    resolved: &mut admission::Resolved,
) -> Result<Prepared, SchedulerError> {
    let step_def = def
        .steps
        .iter()
        .find(|s| s.name == step)
        // `dag::advance` names only steps of `def`; should that ever break,
        // the workflow waits with an error rather than the scheduler dying.
        .ok_or_else(|| corrupt("a workflow step is not in its definition", step))?;
    if let Some(spec) = &step_def.map {
        return start_map(state, run, step_def, spec)
            .await
            .map(Prepared::Ended);
    }
    let mut submit: SubmitRun = serde_json::from_value(step_def.run.clone())
        .map_err(|e| corrupt("a stored step template no longer parses", e))?;
    if let Some(input) = dag::step_input(def, step, outputs) {
        submit.input = None;
        submit.input_base64 = Some(base64::engine::general_purpose::STANDARD.encode(input));
    }
    submit.idempotency_key = Some(format!("workflow:{}:{step}", run.id));
    let mut new_run = match admission::prepare_with(state, &run.tenant_id, submit, resolved).await {
        Ok(new_run) => new_run,
        Err(e) => {
            // The module or a grant went away since the workflow was
            // defined: this step fails, and the DAG decides the rest.
            tracing::warn!(workflow_run = %run.id, step, "cannot start step: {e}");
            state
                .db
                .move_step(&run.id, step, "pending", "failed", None)
                .await?;
            return Ok(Prepared::Ended(StepState::Failed));
        }
    };
    new_run.workflow_run_id = Some(run.id.clone());
    new_run.step_name = Some(step.to_string());
    Ok(Prepared::Run(Box::new(new_run)))
}

/// Steps' runs queued in one commit, the most a fan-out puts in one: its
/// other runs wait for the next, while the worker's slots (which the
/// commit's turn on the SQLite writer holds back) start the first ones.
const STEP_SUBMIT_BATCH: usize = 100;

/// Queues the admitted runs of steps of `run`, [`STEP_SUBMIT_BATCH`] to a
/// transaction, each step marked running in its run's commit, and wakes
/// the workers after each. Returns whether all were queued: when the tenant's
/// queue fills, the steps left over stay pending for the periodic pass.
async fn submit_steps(
    state: &Services,
    run: &OpenWorkflowRun,
    mut runs: Vec<RunSpec>,
) -> Result<bool, SchedulerError> {
    let spans: Vec<tracing::Span> = runs.iter_mut().map(admission::start_trace).collect();
    let mut queued = Vec::with_capacity(runs.len());
    let mut all = true;
    for chunk in runs.chunks(STEP_SUBMIT_BATCH) {
        match state.db.submit_runs(chunk, crate::model::now_ms()).await {
            Ok(done) => {
                // The slots start on this batch while the next is queued.
                if done.iter().any(|(_, new)| *new) {
                    state.work_available.notify_waiters();
                }
                queued.extend(done);
            }
            // All or nothing per commit: one at a time then, as many as
            // the queue takes.
            Err(DbError::QuotaExceeded { .. }) => {
                for one in chunk {
                    match state.db.submit_run(one, crate::model::now_ms()).await {
                        Ok(done) => {
                            if done.1 {
                                state.work_available.notify_waiters();
                            }
                            queued.push(done);
                        }
                        Err(e @ DbError::QuotaExceeded { .. }) => {
                            tracing::debug!(workflow_run = %run.id, "steps wait: {e}");
                            all = false;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if !all {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    for ((new_run, span), (run_id, new)) in runs.iter().zip(&spans).zip(&queued) {
        after_queued(state, run, new_run, span, run_id, *new).await?;
    }
    if queued.iter().any(|(_, new)| *new) {
        let tenant = state.metrics.tenant(&state.db, &run.tenant_id).await;
        for (new_run, (_, new)) in runs.iter().zip(&queued) {
            if *new {
                state.metrics.submitted(&tenant, &new_run.module_name);
            }
        }
    }
    Ok(all)
}

/// Starts a map step: lists its prefix once, plans and stores its splits,
/// and queues the first `parallelism` of them. A listing that fails or
/// gives too many splits fails the step, with the reason on the step.
async fn start_map(
    state: &Services,
    run: &OpenWorkflowRun,
    step: &StepDef,
    spec: &MapSpec,
) -> Result<StepState, SchedulerError> {
    // Admitted first, as any step's run is: a tenant that may no longer
    // grant the store (or run the module) gets nothing listed.
    let submit: SubmitRun = serde_json::from_value(step.run.clone())
        .map_err(|e| corrupt("a stored step template no longer parses", e))?;
    if let Err(e) = admission::prepare(state, &run.tenant_id, submit).await {
        let error = format!("cannot start the step's runs: {e}");
        tracing::warn!(workflow_run = %run.id, step = %step.name, "{error}");
        state.db.fail_step(&run.id, &step.name, &error).await?;
        return Ok(StepState::Failed);
    }
    let max_splits = state.config.server.max_map_splits as u64;
    let planned = match list_prefix(state, spec).await {
        Ok(listed) => map::plan(listed, spec, max_splits).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let splits = match planned {
        Ok(splits) => splits,
        Err(error) => {
            tracing::warn!(workflow_run = %run.id, step = %step.name, "map step fails: {error}");
            state.db.fail_step(&run.id, &step.name, &error).await?;
            return Ok(StepState::Failed);
        }
    };
    let new: Vec<NewSplit> = splits
        .iter()
        .enumerate()
        .map(|(i, split)| NewSplit {
            input: split.input(&spec.store, i),
            objects: split.pieces.len() as i64,
            bytes: i64::try_from(split.bytes).unwrap_or(i64::MAX),
        })
        .collect();
    match state.db.start_map_step(&run.id, &step.name, &new).await? {
        // Another scheduler started it first.
        None => Ok(StepState::Running),
        // An empty prefix: done, and its dependants get `[]`.
        Some(Some(_)) => Ok(StepState::Succeeded),
        Some(None) => match launch_splits(state, run, step).await? {
            Some(_) => Ok(StepState::Failed),
            None => Ok(StepState::Running),
        },
    }
}

/// Every object under the map's prefix, listed once. object_store lists
/// in pages (S3: 1,000 keys a request; HDFS: the NameNode's listing
/// batches), so a large prefix never comes in one answer; the keys and
/// sizes are kept for planning, up to [`map::MAX_LISTED_OBJECTS`].
async fn list_prefix(state: &Services, spec: &MapSpec) -> Result<Vec<Listed>, String> {
    let prefix = spec.prefix_path();
    let mut listing = state
        .runtime
        .object_stores()
        .list_finished(&spec.store, prefix.as_ref())
        .ok_or_else(|| {
            format!(
                "map.store: no object store is labelled {:?} here",
                spec.store
            )
        })?;
    let mut listed = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| {
            format!(
                "could not list {:?} in object store {:?}: {e}",
                spec.prefix, spec.store
            )
        })?;
        if listed.len() >= map::MAX_LISTED_OBJECTS {
            return Err(format!(
                "{:?} holds more than {} objects; map over narrower prefixes",
                spec.prefix,
                map::MAX_LISTED_OBJECTS
            ));
        }
        listed.push(Listed {
            key: meta.location.to_string(),
            size: meta.size,
        });
    }
    Ok(listed)
}

/// Queues as many pending splits of a running map step as its
/// `parallelism` leaves room for, each as a run of the step's template
/// with the split as its input. A full tenant queue leaves the rest for
/// the next split's end or the periodic pass. Returns the step's end when
/// its runs can no longer be admitted (its module or a grant went away):
/// its pending splits fail, and it ends once the running ones have.
async fn launch_splits(
    state: &Services,
    run: &OpenWorkflowRun,
    step: &StepDef,
) -> Result<Option<Settled>, SchedulerError> {
    let Some(spec) = &step.map else {
        return Ok(None);
    };
    if state.db.workflow_run_state(&run.id).await?.as_deref() != Some("running") {
        return Ok(None);
    }
    let parallelism = i64::try_from(spec.parallelism).unwrap_or(i64::MAX);
    let pending = state
        .db
        .launchable_splits(&run.id, &step.name, parallelism)
        .await?;
    if pending.is_empty() {
        return Ok(None);
    }
    let submit: SubmitRun = serde_json::from_value(step.run.clone())
        .map_err(|e| corrupt("a stored step template no longer parses", e))?;
    let mut template = match admission::prepare(state, &run.tenant_id, submit).await {
        Ok(template) => template,
        Err(e) => {
            let error = format!("cannot start the step's runs: {e}");
            tracing::warn!(workflow_run = %run.id, step = %step.name, "{error}");
            return Ok(state
                .db
                .fail_pending_splits(&run.id, &step.name, &error)
                .await?);
        }
    };
    template.workflow_run_id = Some(run.id.clone());
    template.step_name = Some(step.name.clone());
    let mut queued = 0;
    for split in pending {
        let mut split_run = template.clone();
        split_run.input = split.input.into_bytes();
        split_run.idempotency_key =
            Some(format!("workflow:{}:{}:{}", run.id, step.name, split.index));
        match state
            .db
            .submit_split(&split_run, split.index, parallelism, crate::model::now_ms())
            .await
        {
            Ok(Some(_)) => queued += 1,
            Ok(None) => {}
            Err(e @ DbError::QuotaExceeded { .. }) => {
                tracing::debug!(workflow_run = %run.id, step = %step.name, "splits wait: {e}");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if queued > 0 {
        let tenant = state.metrics.tenant(&state.db, &run.tenant_id).await;
        for _ in 0..queued {
            state.metrics.submitted(&tenant, &template.module_name);
        }
        state.work_available.notify_waiters();
    }
    Ok(None)
}

/// A map step's output as its dependants get it ([`dag::map_output`]):
/// its splits' outputs in split order, inline while they fit in
/// `[server] inline_output_bytes` together, else their keys in the
/// artifact store (where the small ones are written first, under the same
/// `outputs/<run id>` key a large output has).
async fn map_step_output(
    state: &Services,
    workflow_run_id: &str,
    step: &str,
) -> Result<Vec<u8>, SchedulerError> {
    let rows = state.db.split_outputs(workflow_run_id, step).await?;
    let inline: u64 = rows
        .iter()
        .filter(|r| r.succeeded)
        .map(|r| r.output.as_ref().map_or(0, |o| o.len() as u64))
        .sum();
    let stored = rows.iter().any(|r| r.succeeded && r.output_key.is_some());
    let mut outputs = Vec::with_capacity(rows.len());
    if !stored && inline <= state.config.server.inline_output_bytes {
        for row in rows {
            outputs.push(SplitOutput::Inline(
                row.succeeded.then(|| row.output.unwrap_or_default()),
            ));
        }
        return Ok(dag::map_output(&outputs));
    }
    for row in rows {
        match (row.succeeded, row.output_key, row.run_id) {
            (true, Some(key), _) => outputs.push(SplitOutput::Stored(key)),
            (true, None, Some(run_id)) => {
                let key = super::artifacts::output_key(&run_id);
                let bytes = row.output.unwrap_or_default();
                state.modules.put(&key, bytes.into()).await?;
                outputs.push(SplitOutput::Stored(key.to_string()));
            }
            _ => outputs.push(SplitOutput::Inline(None)),
        }
    }
    Ok(dag::map_output(&outputs))
}
