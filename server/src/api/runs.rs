//! `/v1/runs`: submit, inspect, list, cancel, and read or follow logs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use caisson_host_api::Grants;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::state::{AppState, Caller};
use super::streams::StreamSlot;
use super::wait::WaitQuery;
use crate::model::{RunState, SubmitRun, time};
use crate::services::admission;
use crate::services::artifacts::output_key;
use crate::store::{AttemptRecord, LogLine, RunFilter, RunRecord};
use crate::telemetry;
use object_store::ObjectStoreExt;

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: String,
    pub module: String,
    pub version: String,
    pub digest: String,
    pub state: RunState,
    pub attempts: i64,
    pub max_retries: i64,
    pub priority: i64,
    pub params: BTreeMap<String, String>,
    pub grants: Grants,
    pub timeout_ms: i64,
    pub memory: i64,
    pub fuel: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The output, when it is UTF-8.
    pub output: Option<String>,
    /// The output, base64, when it is not UTF-8.
    pub output_base64: Option<String>,
    /// Where to fetch the output (`/v1/runs/{id}/output`) when it is not
    /// inline here: too large to inline, or in a list of runs, which
    /// never carries outputs.
    pub output_url: Option<String>,
    pub error: Option<String>,
    pub retryable: Option<bool>,
    pub idempotency_key: Option<String>,
    pub schedule_id: Option<String>,
    pub workflow_run_id: Option<String>,
    pub step_name: Option<String>,
    pub logical_date: Option<DateTime<Utc>>,
    /// The run's OpenTelemetry trace id (32 hex digits), when traces are
    /// on (`[telemetry]`) and its trace was sampled: look it up in the
    /// tracing backend the server exports to.
    pub trace_id: Option<String>,
    /// Every attempt with its error (only on `GET /v1/runs/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_history: Option<Vec<AttemptRecord>>,
}

impl From<RunRecord> for RunView {
    fn from(run: RunRecord) -> Self {
        let inline = if run.output_key.is_some() {
            None
        } else {
            run.output
        };
        let (output, output_base64) = match inline {
            Some(bytes) => match String::from_utf8(bytes) {
                Ok(text) => (Some(text), None),
                Err(e) => (None, Some(BASE64.encode(e.into_bytes()))),
            },
            None => (None, None),
        };
        // An output kept in the artifact store, or one this record was
        // read without (a list), is fetched from its own URL.
        let shown = output.is_some() || output_base64.is_some();
        let output_url = (run.output_key.is_some() || (run.has_output && !shown))
            .then(|| format!("/v1/runs/{}/output", run.id));
        let spec = run.spec;
        RunView {
            output_url,
            id: run.id,
            module: spec.module_name,
            version: spec.module_version,
            digest: spec.digest,
            state: run.state,
            attempts: run.attempts,
            max_retries: spec.max_retries,
            priority: spec.priority,
            params: spec.params,
            grants: spec.grants,
            timeout_ms: spec.timeout_ms,
            memory: spec.memory_bytes,
            fuel: spec.fuel,
            created_at: time(run.created_at),
            started_at: run.started_at.map(time),
            finished_at: run.finished_at.map(time),
            output,
            output_base64,
            error: run.error,
            retryable: run.retryable,
            idempotency_key: spec.idempotency_key,
            schedule_id: spec.schedule_id,
            workflow_run_id: spec.workflow_run_id,
            step_name: spec.step_name,
            logical_date: spec.logical_date.map(time),
            trace_id: telemetry::sampled_trace_id(spec.trace_parent.as_deref()),
            attempt_history: None,
        }
    }
}

/// The caller's run `id`, or a 404.
async fn caller_run(state: &AppState, caller: &Caller, id: &str) -> ApiResult<RunRecord> {
    state
        .services
        .db
        .get_run(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))
}

/// Download a run's output, however large, as raw bytes.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/output",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "the output", content_type = "application/octet-stream"),
        (status = 404, description = "no such run", body = super::error::ErrorBody),
        (status = 409, description = "the run has no output: it has not finished, or it did not succeed", body = super::error::ErrorBody)
    ),
    tag = "runs"
)]
pub async fn output(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let run = caller_run(&state, &caller, &id).await?;
    let headers = [(axum::http::header::CONTENT_TYPE, "application/octet-stream")];
    if run.output_key.is_some() {
        // Streamed from the store: a large output is never held whole here.
        let stored = state
            .services
            .modules
            .get(&output_key(&run.id))
            .await
            .map_err(|e| ApiError::internal("could not read the stored output", e))?;
        let body = axum::body::Body::from_stream(stored.into_stream());
        return Ok((headers, body).into_response());
    }
    match run.output {
        Some(bytes) => Ok((headers, bytes).into_response()),
        // The run exists: a 404 here would say it does not.
        None if run.state.is_final() => Err(ApiError::conflict(format!(
            "run {id} ended {} without an output",
            run.state.as_str()
        ))),
        None => Err(ApiError::conflict(format!(
            "run {id} has not finished; its output is not there yet"
        ))),
    }
}

/// Submit a run.
#[utoipa::path(
    post,
    path = "/v1/runs",
    request_body = SubmitRun,
    responses(
        (status = 201, description = "queued", body = RunView),
        (status = 200, description = "an earlier run with the same idempotency key", body = RunView),
        (status = 400, description = "the request breaks the schema", body = super::error::ErrorBody),
        (status = 403, description = "a grant the tenant may not give", body = super::error::ErrorBody),
        (status = 422, description = "well-formed, but not admitted: an unknown module, a duration that does not parse, a limit over this server's", body = super::error::ErrorBody),
        (status = 429, description = "the tenant is at its `max_queued_runs` quota", body = super::error::ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait before submitting again"))),
    ),
    tag = "runs"
)]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(submit): Json<SubmitRun>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let mut run = admission::prepare(&state.services, &caller.tenant_id, submit).await?;
    let now = crate::model::now_ms();
    let mut queued =
        admission::enqueue_all(&state.services, std::slice::from_mut(&mut run), now).await?;
    let (id, created) = queued.remove(0);
    if created {
        // What was just written, answered without reading it back.
        let record = RunRecord::queued(id, run, now);
        return Ok((StatusCode::CREATED, Json(record.into())));
    }
    // An idempotency key named an earlier run, which may have moved on.
    let stored = state
        .services
        .db
        .get_run(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("a submitted run vanished", &id))?;
    Ok((StatusCode::OK, Json(stored.into())))
}

/// The most runs one `POST /v1/runs/batch` may submit.
pub const MAX_BATCH_RUNS: usize = 1000;

/// Runs to submit together.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    /// 1 to 1,000 runs, each as `POST /v1/runs` takes it.
    #[schema(min_items = 1, max_items = 1000)]
    pub runs: Vec<SubmitRun>,
}

/// What a batch submission queued.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchSubmitted {
    /// One entry per submitted run, in the request's order.
    pub runs: Vec<SubmittedRun>,
}

/// One run of a batch.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmittedRun {
    pub id: String,
    /// `false` when an idempotency key named an earlier run (or an earlier
    /// entry of the same batch): that run's id is given, nothing new is
    /// queued for it.
    pub created: bool,
}

/// Submit up to 1,000 runs in one request and one transaction: every run
/// is admitted and queued, or none is. A refused run is named by its place
/// in `runs` (`runs[7]: ...`).
#[utoipa::path(
    post,
    path = "/v1/runs/batch",
    request_body = SubmitBatch,
    responses(
        (status = 201, description = "queued (at least one run is new)", body = BatchSubmitted),
        (status = 200, description = "every run named an earlier one by its idempotency key", body = BatchSubmitted),
        (status = 400, description = "the request breaks the schema", body = super::error::ErrorBody),
        (status = 403, description = "a grant the tenant may not give", body = super::error::ErrorBody),
        (status = 422, description = "well-formed, but a run is not admitted", body = super::error::ErrorBody),
        (status = 429, description = "the batch would take the tenant past its `max_queued_runs` quota; nothing was queued", body = super::error::ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait before submitting again"))),
    ),
    tag = "runs"
)]
pub async fn submit_batch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(batch): Json<SubmitBatch>,
) -> ApiResult<(StatusCode, Json<BatchSubmitted>)> {
    if batch.runs.is_empty() || batch.runs.len() > MAX_BATCH_RUNS {
        return Err(ApiError::bad_request(format!(
            "`runs` must hold 1 to {MAX_BATCH_RUNS} runs, not {}",
            batch.runs.len()
        )));
    }
    let mut specs = Vec::with_capacity(batch.runs.len());
    // Each module the batch names read once, with the tenant's grants.
    let mut resolved = admission::Resolved::default();
    for (i, submit) in batch.runs.into_iter().enumerate() {
        let spec =
            admission::prepare_with(&state.services, &caller.tenant_id, submit, &mut resolved)
                .await
                .map_err(|e| {
                    let mut error = ApiError::from(e);
                    error.message = format!("runs[{i}]: {}", error.message);
                    error
                })?;
        specs.push(spec);
    }
    let queued =
        admission::enqueue_all(&state.services, &mut specs, crate::model::now_ms()).await?;
    let status = if queued.iter().any(|(_, created)| *created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let runs = queued
        .into_iter()
        .map(|(id, created)| SubmittedRun { id, created })
        .collect();
    Ok((status, Json(BatchSubmitted { runs })))
}

/// Get a run, with every attempt. With `wait`, once it is final (or the
/// wait is over): a client waits for a run with one request.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    params(("id" = String, Path), WaitQuery),
    responses(
        (status = 200, body = RunView),
        (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)
    ),
    tag = "runs"
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(wait): Query<WaitQuery>,
) -> ApiResult<Json<RunView>> {
    let limit = wait.limit()?;
    // The run and its attempts in one read, each time it is read.
    let watch = state.services.run_ends.watch(&id);
    let (run, attempts) = super::wait::until_final(
        watch.notify(),
        limit,
        |(run, _): &(RunRecord, Vec<AttemptRecord>)| run.state.is_final(),
        || async {
            (state.services.db)
                .get_run_and_attempts(&caller.tenant_id, &id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("run {id}")))
        },
    )
    .await?;
    let mut view = RunView::from(run);
    view.attempt_history = Some(attempts);
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only runs in this state.
    state: Option<RunState>,
    /// Only runs of this module.
    module: Option<String>,
    /// Only runs created at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Page size (default 50); values outside 1 to 500 are taken as the
    /// nearest of the two.
    #[param(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    limit: Option<i64>,
    /// The `next` value of the previous page: milliseconds, `.`, a run id.
    #[param(pattern = "^[+-]?[0-9]{1,18}\\.")]
    cursor: Option<String>,
}

/// A cursor's time and run id: what the document's pattern for it,
/// `^[+-]?[0-9]{1,18}\.`, accepts (18 digits always fit an `i64`).
fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (ms, id) = cursor.split_once('.')?;
    let digits = ms.strip_prefix(['+', '-']).unwrap_or(ms);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ms.parse().ok()?, id.to_string()))
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// List runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/runs",
    params(ListQuery),
    responses((status = 200, body = RunPage), (status = 400, body = super::error::ErrorBody)),
    tag = "runs"
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<RunPage>> {
    let run_state = query.state;
    let before = match &query.cursor {
        Some(cursor) => Some(
            parse_cursor(cursor)
                .ok_or_else(|| ApiError::bad_request(format!("bad `cursor` {cursor:?}")))?,
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let filter = RunFilter {
        state: run_state,
        module: query.module.clone(),
        since: query.since.map(|t| t.timestamp_millis()),
        workflow_run_id: None,
        before,
        limit: limit + 1,
    };
    let mut runs = state
        .services
        .db
        .list_runs(&caller.tenant_id, &filter)
        .await?;
    let next = if runs.len() as i64 > limit {
        runs.truncate(limit as usize);
        runs.last().map(|r| format!("{}.{}", r.created_at, r.id))
    } else {
        None
    };
    Ok(Json(RunPage {
        runs: runs.into_iter().map(RunView::from).collect(),
        next,
    }))
}

/// Cancel a run. A queued run is cancelled at once; a running one is
/// stopped by its worker within milliseconds (at the latest, at its next
/// heartbeat).
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    params(("id" = String, Path)),
    responses((status = 202, body = RunView), (status = 404, body = super::error::ErrorBody)),
    tag = "runs"
)]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let after = state
        .services
        .db
        .request_cancel(&caller.tenant_id, &id, crate::model::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    if after == RunState::Running {
        // A worker in this process stops it now; one elsewhere is told by
        // the database (PostgreSQL's NOTIFY), or at its next heartbeat.
        state.services.cancels.cancel(&id);
    }
    let run = caller_run(&state, &caller, &id).await?;
    if run.state.is_final() {
        // A queued run cancelled here ends here: answer whoever waits.
        state.services.run_ends.ended(&id);
    }
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogQuery {
    /// Only lines after this sequence number.
    after: Option<i64>,
    /// Stream as Server-Sent Events until the run ends.
    #[serde(default)]
    follow: bool,
}

/// A page of a run's log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The last sequence number returned (pass as `after`).
    pub last: i64,
    pub state: RunState,
}

/// One Server-Sent Event of a followed log (`?follow=true`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEvent {
    /// `log`, whose data is a [`LogLine`]; or the final `end`, whose data
    /// is `{"state": ...}`; or the final `error`, whose data is an error
    /// body (`{"error": {"code", "message"}}`), sent when the token that
    /// opened the stream was revoked or the database became unavailable.
    pub event: String,
    /// The event's JSON text.
    pub data: String,
}

/// The final `error` event of a followed log: an error body, as every
/// other error response has.
fn error_event(code: &str, message: &str) -> Event {
    Event::default()
        .event("error")
        .json_data(super::error::ErrorBody {
            error: super::error::ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        })
        .unwrap_or_else(|_| Event::default().event("error"))
}

/// How often a followed log polls for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const LOG_PAGE: i64 = 1000;

/// Read a run's log, or follow it live (`?follow=true`, Server-Sent Events:
/// `log` events carry a line as JSON, a final `end` event the run's state).
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/logs",
    params(("id" = String, Path), LogQuery),
    responses(
        (status = 200, description = "the log; with follow=true, an event stream of `log` and `end` events",
            content((LogPage = "application/json"), (LogEvent = "text/event-stream"))),
        (status = 404, body = super::error::ErrorBody),
        (status = 429, description = "the tenant already follows `max_log_streams` logs", body = super::error::ErrorBody)
    ),
    tag = "runs"
)]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    // Only the state: the run's input and output can be large.
    let run_state = state
        .services
        .db
        .run_state(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    let after = query.after.unwrap_or(0);
    if !query.follow {
        let lines = state
            .services
            .db
            .logs(&caller.tenant_id, &id, after, LOG_PAGE)
            .await?;
        let last = lines.last().map_or(after, |l| l.seq);
        return Ok(Json(LogPage {
            lines,
            last,
            state: run_state,
        })
        .into_response());
    }
    let max = state.services.config.server.max_log_streams;
    let slot = state
        .log_streams
        .open(&caller.tenant_id, max)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "this tenant already follows {max} logs, its limit (`[server] max_log_streams`): \
                     close one, or read the log without `follow`"
                ),
            )
        })?;
    struct Follow {
        state: Arc<AppState>,
        tenant: String,
        token_hash: Option<String>,
        id: String,
        after: i64,
        done: bool,
        _slot: StreamSlot,
    }
    let follow = Follow {
        state,
        tenant: caller.tenant_id,
        token_hash: caller.token_hash,
        id,
        after,
        done: false,
        _slot: slot,
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            // The token is checked again before every batch (and every
            // poll), so revoking it ends a stream it opened. A database
            // error is not a revocation: the next poll checks again.
            if let Some(hash) = &f.token_hash
                && let Ok(None) = f.state.services.db.token(hash).await
            {
                f.done = true;
                let error = error_event(
                    "unauthorized",
                    "the token that opened this stream was revoked",
                );
                return Some((futures::stream::iter(vec![Ok(error)]), f));
            }
            // Read the state before the lines: a run that ended before this
            // read has all its lines stored by now. Only the state: the
            // run's input and output can be large.
            let read = async {
                let run_state = f.state.services.db.run_state(&f.tenant, &f.id).await?;
                let lines = (f.state.services.db)
                    .logs(&f.tenant, &f.id, f.after, LOG_PAGE)
                    .await?;
                Ok::<_, crate::store::DbError>((run_state, lines))
            };
            let (run_state, lines) = match read.await {
                // A run is never deleted while its log is followed; if one
                // were, its log is over.
                Ok((run_state, lines)) => (run_state.unwrap_or(RunState::Failed), lines),
                // An outage is not the run's end: say so, and end the stream
                // (the client may follow again from `after`).
                Err(e) => {
                    f.done = true;
                    // Logged and made safe to show by the API's own conversion.
                    let e = ApiError::from(e);
                    let error = error_event(e.code, &e.message);
                    return Some((futures::stream::iter(vec![Ok(error)]), f));
                }
            };
            if !lines.is_empty() {
                f.after = lines.last().map_or(f.after, |l| l.seq);
                let events: Vec<Result<Event, Infallible>> = lines
                    .iter()
                    .map(|line| {
                        Ok(Event::default()
                            .event("log")
                            .json_data(line)
                            .expect("a log line serializes"))
                    })
                    .collect();
                return Some((futures::stream::iter(events), f));
            }
            if run_state.is_final() {
                f.done = true;
                let end = Event::default()
                    .event("end")
                    .json_data(serde_json::json!({ "state": run_state }))
                    .expect("serializes");
                return Some((futures::stream::iter(vec![Ok(end)]), f));
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    use futures::StreamExt;
    Ok(Sse::new(stream.flatten())
        .keep_alive(KeepAlive::default())
        .into_response())
}
