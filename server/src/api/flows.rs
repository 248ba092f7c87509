//! `/v1/schedules` (cron) and `/v1/workflows` (DAGs of runs).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::state::{AppState, Caller};
use super::wait::WaitQuery;
use crate::cron::{CatchUp, CronSchedule};
use crate::dag::{self, WorkflowDef};
use crate::model::{SubmitRun, check_name};
use crate::services::{admission, scheduler};
use crate::store::{
    NewStep, OpenWorkflowRun, ScheduleRecord, SplitRecord, StepRecord, WorkflowRecord,
    WorkflowRunRecord,
};

/// A schedule to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Lowercase letters, digits, `-`, `_` and `.`, at most 64.
    #[schema(pattern = "^[a-z0-9_-][a-z0-9._-]{0,63}$")]
    pub name: String,
    /// Five fields (`0 2 * * *`), six with seconds, or `@daily` and friends.
    /// One that does not parse is a 422.
    #[schema(min_length = 1)]
    pub cron: String,
    /// IANA time zone the expression is read in; default `UTC`. An unknown
    /// zone is a 422.
    #[serde(default = "utc")]
    #[schema(min_length = 1)]
    pub timezone: String,
    /// After downtime: `skip` runs only the latest missed time, `all` every one.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The run to start each time. `{{logical_date}}` and `{{ds}}` in its
    /// params are replaced, and a `logical_date` param is added.
    pub run: SubmitRun,
    #[serde(default)]
    pub paused: bool,
}

fn utc() -> String {
    "UTC".into()
}

/// A backfill request: every fire time in `(from, to]` gets a run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Runs a backfill started.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillResult {
    pub runs: Vec<String>,
}

/// The most runs one backfill may start.
const MAX_BACKFILL: usize = 1000;

/// Checks that every module, grant and limit in a template is acceptable
/// for the tenant now, so mistakes are a 400 at creation and not a failed
/// firing at 2 a.m.
async fn check_template(state: &AppState, tenant_id: &str, template: &SubmitRun) -> ApiResult<()> {
    admission::prepare(&state.services, tenant_id, template.clone())
        .await
        .map(drop)
        .map_err(ApiError::from)
}

/// Create a cron schedule.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    request_body = CreateSchedule,
    responses((status = 201, body = ScheduleRecord), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody), (status = 422, description = "well-formed, but not something this server can do: a cron expression that does not parse, an unknown time zone or module", body = super::error::ErrorBody), (status = 403, description = "a grant the tenant may not give", body = super::error::ErrorBody), (status = 429, description = "the tenant is at its `max_schedules` quota", body = super::error::ErrorBody)),
    tag = "schedules"
)]
pub async fn create_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateSchedule>,
) -> ApiResult<(StatusCode, Json<ScheduleRecord>)> {
    check_name("schedule name", &body.name)?;
    if body.cron.is_empty() || body.timezone.is_empty() {
        return Err(ApiError::bad_request(
            "`cron` and `timezone` must not be empty",
        ));
    }
    // Well-formed but meaningless (no JSON Schema can parse cron or list
    // every zone this build of chrono-tz knows): a 422.
    let cron = CronSchedule::parse(&body.cron, &body.timezone)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    check_template(&state, &caller.tenant_id, &body.run).await?;
    let now = crate::model::now_ms();
    let next = if body.paused {
        None
    } else {
        cron.next_after(crate::model::time(now))
            .map(|t| t.timestamp_millis())
    };
    let record = ScheduleRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: body.name,
        cron: body.cron,
        timezone: body.timezone,
        template: serde_json::to_value(&body.run).map_err(|e| ApiError::internal("template", e))?,
        catch_up: match body.catch_up {
            CatchUp::Skip => "skip".into(),
            CatchUp::All => "all".into(),
        },
        paused: body.paused,
        next_fire_at: next,
        last_fired_at: None,
        created_at: now,
    };
    match state
        .services
        .db
        .insert_schedule(&caller.tenant_id, &record)
        .await
    {
        Ok(()) => Ok((StatusCode::CREATED, Json(record))),
        Err(crate::store::DbError::Conflict(_)) => Err(ApiError::conflict(format!(
            "schedule {} exists",
            record.name
        ))),
        Err(e) => Err(e.into()),
    }
}

/// List schedules.
#[utoipa::path(get, path = "/v1/schedules", responses((status = 200, body = Vec<ScheduleRecord>)), tag = "schedules")]
pub async fn list_schedules(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<ScheduleRecord>>> {
    Ok(Json(
        state.services.db.list_schedules(&caller.tenant_id).await?,
    ))
}

async fn schedule(state: &AppState, tenant_id: &str, name: &str) -> ApiResult<ScheduleRecord> {
    state
        .services
        .db
        .get_schedule(tenant_id, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("schedule {name}")))
}

/// Get a schedule.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    params(("name" = String, Path)),
    responses((status = 200, body = ScheduleRecord), (status = 404, body = super::error::ErrorBody)),
    tag = "schedules"
)]
pub async fn get_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleRecord>> {
    Ok(Json(schedule(&state, &caller.tenant_id, &name).await?))
}

/// Delete a schedule. Runs it already started are kept.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)),
    tag = "schedules"
)]
pub async fn delete_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if state
        .services
        .db
        .delete_schedule(&caller.tenant_id, &name)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("schedule {name}")))
    }
}

/// Pause a schedule: it fires no more until resumed.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    params(("name" = String, Path)),
    responses((status = 200, body = ScheduleRecord), (status = 404, body = super::error::ErrorBody)),
    tag = "schedules"
)]
pub async fn pause_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleRecord>> {
    schedule(&state, &caller.tenant_id, &name).await?;
    state
        .services
        .db
        .set_schedule_paused(&caller.tenant_id, &name, true, None)
        .await?;
    Ok(Json(schedule(&state, &caller.tenant_id, &name).await?))
}

/// Resume a schedule. Times missed while paused are not caught up.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    params(("name" = String, Path)),
    responses((status = 200, body = ScheduleRecord), (status = 404, body = super::error::ErrorBody)),
    tag = "schedules"
)]
pub async fn resume_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleRecord>> {
    let record = schedule(&state, &caller.tenant_id, &name).await?;
    let cron = CronSchedule::parse(&record.cron, &record.timezone)
        .map_err(|e| ApiError::internal("stored cron", e))?;
    let next = cron.next_after(Utc::now()).map(|t| t.timestamp_millis());
    state
        .services
        .db
        .set_schedule_paused(&caller.tenant_id, &name, false, next)
        .await?;
    Ok(Json(schedule(&state, &caller.tenant_id, &name).await?))
}

/// Start a run for every fire time in `(from, to]`, each with its
/// `logical_date`. Fire times that already have a run are not repeated.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/backfill",
    params(("name" = String, Path)),
    request_body = Backfill,
    responses((status = 201, body = BackfillResult), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 422, description = "`to` is not after `from`, the range holds over 1000 fire times, or the template is no longer admitted", body = super::error::ErrorBody), (status = 403, description = "a grant the tenant may not give", body = super::error::ErrorBody), (status = 429, description = "the tenant is at its `max_queued_runs` quota; the runs started before it stay", body = super::error::ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait before submitting again")))),
    tag = "schedules"
)]
pub async fn backfill(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<Backfill>,
) -> ApiResult<(StatusCode, Json<BackfillResult>)> {
    let record = schedule(&state, &caller.tenant_id, &name).await?;
    if body.to <= body.from {
        return Err(ApiError::unprocessable("`to` must be after `from`"));
    }
    let cron = CronSchedule::parse(&record.cron, &record.timezone)
        .map_err(|e| ApiError::internal("stored cron", e))?;
    let fires = cron.fires_between(body.from, body.to, MAX_BACKFILL + 1);
    if fires.len() > MAX_BACKFILL {
        return Err(ApiError::unprocessable(format!(
            "the range holds more than {MAX_BACKFILL} fire times; backfill in smaller ranges"
        )));
    }
    let mut runs = Vec::with_capacity(fires.len());
    for fire in fires {
        runs.push(
            scheduler::start_scheduled(&state.services, &caller.tenant_id, &record, &cron, fire)
                .await?,
        );
    }
    Ok((StatusCode::CREATED, Json(BackfillResult { runs })))
}

/// A workflow to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Lowercase letters, digits, `-`, `_` and `.`, at most 64.
    #[schema(pattern = "^[a-z0-9_-][a-z0-9._-]{0,63}$")]
    pub name: String,
    /// Steps, each `{name, depends_on, allow_failure, run}` where `run` is
    /// a run submission. A step with one dependency gets that step's
    /// output as its input; with several, a JSON object of their outputs.
    ///
    /// Spelled out rather than a flattened [`WorkflowDef`]: serde ignores
    /// `deny_unknown_fields` through `flatten`, and the document could not
    /// then say `additionalProperties: false`.
    #[schema(min_items = 1, max_items = 10000)]
    pub steps: Vec<dag::StepDef>,
}

/// Create a workflow. Cycles, unknown or repeated steps and unknown modules
/// are 422. A step with `map` runs once per split of the objects under a
/// prefix; a bad `map` value is a 400 naming the field
/// (`steps[0].map.parallelism`), a store that is not configured or not in
/// the step's grants a 422.
#[utoipa::path(
    post,
    path = "/v1/workflows",
    request_body = CreateWorkflow,
    responses((status = 201, body = WorkflowRecord), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody), (status = 422, description = "well-formed, but a step is repeated, depends on an unknown step or on itself, the steps form a cycle, a run template is not admitted, or a map step's store is not configured or not granted to its run", body = super::error::ErrorBody), (status = 403, description = "a grant the tenant may not give", body = super::error::ErrorBody)),
    tag = "workflows"
)]
pub async fn create_workflow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateWorkflow>,
) -> ApiResult<(StatusCode, Json<WorkflowRecord>)> {
    check_name("workflow name", &body.name)?;
    let definition = WorkflowDef { steps: body.steps };
    dag::validate(&definition).map_err(|e| {
        if e.is_malformed() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::unprocessable(e.to_string())
        }
    })?;
    for (i, step) in definition.steps.iter().enumerate() {
        if let Some(map) = &step.map {
            map.validate(&format!("steps[{i}].map"))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    for (i, step) in definition.steps.iter().enumerate() {
        let template: SubmitRun = serde_json::from_value(step.run.clone()).map_err(|e| {
            ApiError::bad_request(format!("step {}: bad run template: {e}", step.name))
        })?;
        if let Some(map) = &step.map {
            // The splits' runs read their objects through the label, so it
            // must be granted to them (and the tenant may grant it: below).
            if !template.grants.objects.contains(&map.store) {
                return Err(ApiError::unprocessable(format!(
                    "steps[{i}].map.store: {:?} must also be in steps[{i}].run.grants.objects",
                    map.store
                )));
            }
            if state
                .services
                .runtime
                .object_stores()
                .get(&map.store)
                .is_none()
            {
                return Err(ApiError::unprocessable(format!(
                    "steps[{i}].map.store: no object store is labelled {:?} on this server",
                    map.store
                )));
            }
        }
        check_template(&state, &caller.tenant_id, &template)
            .await
            // Keep the status: a grant the tenant may not give is a 403
            // here as it is for a run or a schedule.
            .map_err(|e| ApiError {
                message: format!("step {}: {}", step.name, e.message),
                ..e
            })?;
    }
    let definition =
        serde_json::to_value(&definition).map_err(|e| ApiError::internal("definition", e))?;
    let now = crate::model::now_ms();
    match state
        .services
        .db
        .insert_workflow(&caller.tenant_id, &body.name, &definition, now)
        .await
    {
        Ok(()) => Ok((
            StatusCode::CREATED,
            Json(WorkflowRecord {
                name: body.name,
                definition,
                created_at: now,
            }),
        )),
        Err(crate::store::DbError::Conflict(_)) => {
            Err(ApiError::conflict(format!("workflow {} exists", body.name)))
        }
        Err(e) => Err(e.into()),
    }
}

/// List workflows.
#[utoipa::path(get, path = "/v1/workflows", responses((status = 200, body = Vec<WorkflowRecord>)), tag = "workflows")]
pub async fn list_workflows(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<WorkflowRecord>>> {
    Ok(Json(
        state.services.db.list_workflows(&caller.tenant_id).await?,
    ))
}

/// A workflow with its recent runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkflowView {
    #[serde(flatten)]
    pub workflow: WorkflowRecord,
    pub runs: Vec<WorkflowRunRecord>,
}

/// Get a workflow and its recent runs.
#[utoipa::path(
    get,
    path = "/v1/workflows/{name}",
    params(("name" = String, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = super::error::ErrorBody)),
    tag = "workflows"
)]
pub async fn get_workflow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<WorkflowView>> {
    let workflow = state
        .services
        .db
        .get_workflow(&caller.tenant_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow {name}")))?;
    let runs = state
        .services
        .db
        .list_workflow_runs(&caller.tenant_id, &name)
        .await?;
    Ok(Json(WorkflowView { workflow, runs }))
}

/// Delete a workflow. Runs of it in progress go on.
#[utoipa::path(
    delete,
    path = "/v1/workflows/{name}",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)),
    tag = "workflows"
)]
pub async fn delete_workflow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if state
        .services
        .db
        .delete_workflow(&caller.tenant_id, &name)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("workflow {name}")))
    }
}

/// A workflow run with the state of each step.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowRunView {
    pub id: String,
    pub workflow: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepView>,
    /// The workflow run's OpenTelemetry trace id, whose children are its
    /// steps' runs: when this server exports traces and the trace was
    /// sampled.
    pub trace_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    pub name: String,
    pub state: String,
    pub run_id: Option<String>,
    /// Why the step failed when no run of its own says so (a map step
    /// whose listing failed or gave too many splits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A map step's splits, in split order, once it has listed its prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<SplitView>>,
}

/// One split of a map step.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SplitView {
    pub index: i64,
    /// pending | running | succeeded | failed | cancelled
    pub state: String,
    pub run_id: Option<String>,
    /// Objects (or byte ranges) in the split.
    pub objects: i64,
    pub bytes: i64,
}

impl From<SplitRecord> for SplitView {
    fn from(split: SplitRecord) -> Self {
        SplitView {
            index: split.index,
            state: split.state,
            run_id: split.run_id,
            objects: split.objects,
            bytes: split.bytes,
        }
    }
}

impl From<StepRecord> for StepView {
    fn from(step: StepRecord) -> Self {
        StepView {
            name: step.name,
            state: step.state,
            run_id: step.run_id,
            error: step.error,
            splits: step.splits.map(|_| Vec::new()),
        }
    }
}

async fn workflow_run_view(state: &AppState, run: WorkflowRunRecord) -> ApiResult<WorkflowRunView> {
    let steps = state.services.db.workflow_steps(&run.id).await?;
    let mut steps: Vec<StepView> = steps.into_iter().map(StepView::from).collect();
    if steps.iter().any(|s| s.splits.is_some()) {
        for split in state.services.db.workflow_splits(&run.id).await? {
            if let Some(step) = steps.iter_mut().find(|s| s.name == split.step_name)
                && let Some(splits) = &mut step.splits
            {
                splits.push(split.into());
            }
        }
    }
    Ok(WorkflowRunView {
        trace_id: crate::telemetry::workflow_trace_id(&run.id),
        id: run.id,
        workflow: run.workflow,
        state: run.state,
        created_at: crate::model::time(run.created_at),
        finished_at: run.finished_at.map(crate::model::time),
        steps,
    })
}

/// Cancel a workflow run: no step or split starts any more, its queued
/// runs (a map step's pending and queued splits among them) are cancelled
/// at once and its running ones stopped as `POST /v1/runs/{id}/cancel`
/// stops a run. Pending steps show as skipped. A run already over is
/// answered as it is.
#[utoipa::path(
    post,
    path = "/v1/workflow-runs/{id}/cancel",
    params(("id" = String, Path)),
    responses((status = 202, body = WorkflowRunView), (status = 404, body = super::error::ErrorBody)),
    tag = "workflows"
)]
pub async fn cancel_workflow_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<WorkflowRunView>)> {
    let db = &state.services.db;
    let cancelled = db
        .cancel_workflow_run(&caller.tenant_id, &id, crate::model::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow run {id}")))?;
    for run_id in &cancelled.running {
        let after = db
            .request_cancel(&caller.tenant_id, run_id, crate::model::now_ms())
            .await?;
        if after == Some(crate::model::RunState::Running) {
            state.services.cancels.cancel(run_id);
        }
    }
    state.services.run_ends.some_ended();
    state.services.workflow_ended.notify_waiters();
    let run = db
        .get_workflow_run(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow run {id}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(workflow_run_view(&state, run).await?),
    ))
}

/// Start a run of a workflow.
#[utoipa::path(
    post,
    path = "/v1/workflows/{name}/runs",
    params(("name" = String, Path)),
    responses((status = 201, body = WorkflowRunView), (status = 404, body = super::error::ErrorBody)),
    tag = "workflows"
)]
pub async fn start_workflow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<WorkflowRunView>)> {
    let workflow = state
        .services
        .db
        .get_workflow(&caller.tenant_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow {name}")))?;
    let def: WorkflowDef = serde_json::from_value(workflow.definition.clone())
        .map_err(|e| ApiError::internal("stored workflow", e))?;
    let steps = dag::step_counts(&def)
        .into_iter()
        .map(|(name, waiting, successors)| NewStep {
            name,
            waiting,
            successors,
        })
        .collect::<Vec<_>>();
    let id = state
        .services
        .db
        .create_workflow_run(
            &caller.tenant_id,
            &name,
            &workflow.definition,
            &steps,
            crate::model::now_ms(),
        )
        .await?;
    // The trace's root, before any step's run joins it.
    crate::telemetry::workflow_started(&id, &caller.tenant_id, &name);
    // Start the first steps now rather than at the next tick.
    let open = OpenWorkflowRun {
        id: id.clone(),
        tenant_id: caller.tenant_id.clone(),
    };
    scheduler::advance_workflow(&state.services, &open).await?;
    let run = state
        .services
        .db
        .get_workflow_run(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("a workflow run vanished", &id))?;
    Ok((
        StatusCode::CREATED,
        Json(workflow_run_view(&state, run).await?),
    ))
}

/// Get a workflow run and its steps. With `wait`, once it has ended (or
/// the wait is over): a client waits for a workflow with one request.
#[utoipa::path(
    get,
    path = "/v1/workflow-runs/{id}",
    params(("id" = String, Path), WaitQuery),
    responses(
        (status = 200, body = WorkflowRunView),
        (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)
    ),
    tag = "workflows"
)]
pub async fn get_workflow_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(wait): Query<WaitQuery>,
) -> ApiResult<Json<WorkflowRunView>> {
    let limit = wait.limit()?;
    let not_found = || ApiError::not_found(format!("workflow run {id}"));
    // Waiting reads only the run's state (each step's end wakes it); the
    // row with its definition, and its steps, once, for the answer.
    if !limit.is_zero() {
        super::wait::until_final(
            &state.services.workflow_ended,
            limit,
            |run_state: &String| run_state != "running",
            || async {
                state
                    .services
                    .db
                    .workflow_run_state_of(&caller.tenant_id, &id)
                    .await?
                    .ok_or_else(not_found)
            },
        )
        .await?;
    }
    let run = state
        .services
        .db
        .get_workflow_run(&caller.tenant_id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(workflow_run_view(&state, run).await?))
}
