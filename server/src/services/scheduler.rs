//! The scheduler: background duties that no single request owns.
//!
//! - re-queue runs whose worker died (their lease expired);
//! - fire cron schedules, catching up after downtime as each one says;
//! - move workflow runs along: start steps whose dependencies are done,
//!   skip steps that can no longer run, finish the workflow run.
//!   Workflows move on events ([`step_ended`], called by the worker whose
//!   run ended a step); the periodic pass ([`advance_workflow`] over every
//!   open run) recovers what a process that died left half done.
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
use serde::Deserialize;
use tokio::sync::watch;

use super::admission::{self, AdmissionError};
use super::context::Services;
use super::wake::armed;
use super::workflow_defs::WorkflowDefs;
use crate::cron::{CatchUp, CronSchedule, due_fires, render_template};
use crate::dag::{self, StepState, WorkflowDef};
use crate::model::{RunState, SubmitRun, time};
use crate::store::{Db, DbError, OpenWorkflowRun, ScheduleRecord, Settled};

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
/// [`crate::store::Db::finish_attempt_step`] found it: the event-driven
/// advance, one step's worth of work instead of a pass over the workflow.
///
/// A successor made ready by a succeeded step it alone waited for starts
/// here, its input being `output` (the step's output, already in hand).
/// Anything else (a failure, which may skip steps downstream; a successor
/// waiting for several steps, whose input joins their outputs; the last
/// step ending the run) takes one [`advance_workflow`] pass, which decides
/// it from the stored states. Every move is compare-and-set and every run
/// has an idempotency key, so racing the periodic pass is harmless; if
/// this process dies first, that pass (recovery) finds the ready steps.
pub async fn step_ended(
    state: &Services,
    settled: &Settled,
    output: &[u8],
) -> Result<(), SchedulerError> {
    let run = OpenWorkflowRun {
        id: settled.workflow_run_id.clone(),
        tenant_id: settled.tenant_id.clone(),
    };
    if !settled.succeeded || settled.all_ended {
        return advance_workflow(state, &run).await;
    }
    if settled.ready.is_empty() {
        return Ok(());
    }
    let def = definition(&state.workflow_defs, &state.db, &run).await?;
    let mut pass = false;
    for step in &settled.ready {
        let alone = def
            .steps
            .iter()
            .find(|s| s.name == *step)
            .is_some_and(|s| s.depends_on == [settled.step.as_str()]);
        if !alone {
            pass = true;
            continue;
        }
        let outputs = BTreeMap::from([(settled.step.clone(), output.to_vec())]);
        // A full queue leaves the step pending for the periodic pass; a
        // step that cannot start fails, and the pass skips what follows.
        if start_step(state, &run, &def, step, outputs).await? == Some(StepState::Failed) {
            pass = true;
        }
    }
    if pass {
        advance_workflow(state, &run).await?;
    }
    Ok(())
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
                state.ended.notify_waiters();
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
            let outputs = dependency_outputs(state, def, &step, &run_ids).await?;
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
    def: &WorkflowDef,
    step: &str,
    run_ids: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Vec<u8>>, SchedulerError> {
    let mut outputs = BTreeMap::new();
    let Some(step_def) = def.steps.iter().find(|s| s.name == step) else {
        return Ok(outputs);
    };
    for dep in &step_def.depends_on {
        if let Some(run_id) = run_ids.get(dep)
            && let Some(dep_run) = state.db.get_run_any(run_id).await?
        {
            outputs.insert(dep.clone(), dep_run.output.unwrap_or_default());
        }
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
    let step_def = def
        .steps
        .iter()
        .find(|s| s.name == step)
        // `dag::advance` names only steps of `def`; should that ever break,
        // the workflow waits with an error rather than the scheduler dying.
        .ok_or_else(|| corrupt("a workflow step is not in its definition", step))?;
    let mut submit: SubmitRun = serde_json::from_value(step_def.run.clone())
        .map_err(|e| corrupt("a stored step template no longer parses", e))?;
    if let Some(input) = dag::step_input(def, step, &outputs) {
        submit.input = None;
        submit.input_base64 = Some(base64::engine::general_purpose::STANDARD.encode(input));
    }
    submit.idempotency_key = Some(format!("workflow:{}:{step}", run.id));
    let prepared = admission::prepare(state, &run.tenant_id, submit).await;
    let mut new_run = match prepared {
        Ok(new_run) => new_run,
        Err(e) => {
            // The module or a grant went away since the workflow was
            // defined: this step fails, and the DAG decides the rest.
            tracing::warn!(workflow_run = %run.id, step, "cannot start step: {e}");
            state
                .db
                .move_step(&run.id, step, "pending", "failed", None)
                .await?;
            return Ok(Some(StepState::Failed));
        }
    };
    new_run.workflow_run_id = Some(run.id.clone());
    new_run.step_name = Some(step.to_string());
    let submit_span = admission::start_trace(&mut new_run);
    let (run_id, created) = match state.db.submit_run(&new_run, crate::model::now_ms()).await {
        Ok(submitted) => submitted,
        Err(e @ DbError::QuotaExceeded { .. }) => {
            tracing::debug!(workflow_run = %run.id, step, "step waits: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    submit_span.record("run_id", run_id.as_str());
    submit_span.record("created", created);
    if created {
        // `submit_run` recorded the step as running in its transaction.
        let tenant = state.metrics.tenant(&state.db, &new_run.tenant_id).await;
        state.metrics.submitted(&tenant, &new_run.module_name);
        state.work_available.notify_waiters();
    } else {
        // The run was queued before (a racing scheduler, or a process
        // that died): make sure the step says so.
        state
            .db
            .move_step(&run.id, step, "pending", "running", Some(&run_id))
            .await?;
    }
    Ok(Some(StepState::Running))
}
