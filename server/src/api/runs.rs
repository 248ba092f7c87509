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
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Json, Path, Query};
use super::{ApiError, ApiResult, AppState, Caller};
use crate::db::{AttemptRecord, GrantSet, LogLine, NewRun, RunFilter, RunRecord, RunState};
use object_store::ObjectStoreExt;

/// The longest timeout a run may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The most retries a run may ask for.
const MAX_RETRIES: u32 = 100;
/// The largest input a run may carry (it is stored in the database).
const MAX_INPUT_BYTES: usize = 16 << 20;

/// How a failed run is retried.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 to 100).
    #[serde(default)]
    pub max: u32,
    /// The first delay, doubled on each retry, with jitter: e.g. `1s`, `500ms`.
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// Retry timeouts too (by default only failures the task marks retryable).
    #[serde(default)]
    pub on_timeout: bool,
}

fn default_backoff() -> String {
    "1s".into()
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max: 0,
            backoff: default_backoff(),
            on_timeout: false,
        }
    }
}

/// A run to submit.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// The module's name.
    pub module: String,
    /// A version; the newest when neither this nor `digest` is given.
    pub version: Option<String>,
    /// A digest (SHA-256 hex), to pin exact bytes.
    pub digest: Option<String>,
    /// The input: a string is passed as its UTF-8 bytes, any other JSON
    /// value as its JSON text.
    pub input: Option<serde_json::Value>,
    /// Binary input, base64; instead of `input`.
    pub input_base64: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Labels the run may open. Each must be allowed for the tenant.
    #[serde(default)]
    pub grants: GrantSet,
    /// Wall-clock limit, e.g. `30s`, `5m`. Defaults to the server's.
    pub timeout: Option<String>,
    /// Memory limit in bytes. Defaults to the server's.
    pub memory: Option<u64>,
    /// Fuel budget.
    pub fuel: Option<u64>,
    #[serde(default)]
    pub retries: RetryPolicy,
    /// Higher runs first, among this tenant's runs (it never puts a run
    /// ahead of another tenant's).
    #[serde(default)]
    pub priority: i32,
    /// Submitting again with the same key returns the first run.
    pub idempotency_key: Option<String>,
}

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
    pub grants: GrantSet,
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
    /// Every attempt with its error (only on `GET /v1/runs/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_history: Option<Vec<AttemptRecord>>,
}

pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
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
        RunView {
            output_url,
            id: run.id,
            module: run.module_name,
            version: run.module_version,
            digest: run.digest,
            state: run.state,
            attempts: run.attempts,
            max_retries: run.max_retries,
            priority: run.priority,
            params: run.params,
            grants: run.grants,
            timeout_ms: run.timeout_ms,
            memory: run.memory_bytes,
            fuel: run.fuel,
            created_at: time(run.created_at),
            started_at: run.started_at.map(time),
            finished_at: run.finished_at.map(time),
            output,
            output_base64,
            error: run.error,
            retryable: run.retryable,
            idempotency_key: run.idempotency_key,
            schedule_id: run.schedule_id,
            workflow_run_id: run.workflow_run_id,
            step_name: run.step_name,
            logical_date: run.logical_date.map(time),
            attempt_history: None,
        }
    }
}

/// The caller's run `id`, or a 404.
async fn caller_run(state: &AppState, caller: &Caller, id: &str) -> ApiResult<RunRecord> {
    state
        .db
        .get_run(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))
}

/// The artifact store key of a run's large output.
pub(crate) fn output_key(run_id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("outputs/{run_id}"))
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

/// Checks a submission against the tenant and the server's limits and
/// turns it into a row to insert. Shared with schedules and workflows.
pub(crate) async fn prepare(
    state: &AppState,
    tenant_id: &str,
    submit: SubmitRun,
) -> ApiResult<NewRun> {
    let module = state
        .db
        .resolve_module(
            tenant_id,
            &submit.module,
            submit.version.as_deref(),
            submit.digest.as_deref(),
        )
        .await?
        .ok_or_else(|| {
            let which = match (&submit.version, &submit.digest) {
                (Some(v), _) => format!(" version {v}"),
                (None, Some(d)) => format!(" with digest {d}"),
                (None, None) => String::new(),
            };
            ApiError::bad_request(format!("unknown module {}{which}", submit.module))
        })?;

    let allowed = state.allowed_grants(tenant_id).await?;
    for label in &submit.grants.objects {
        if !allowed.objects.contains(label) {
            return Err(ApiError::forbidden(format!(
                "object store `{label}` may not be granted by this tenant"
            )));
        }
    }
    for label in &submit.grants.sql {
        if !allowed.sql.contains(label) {
            return Err(ApiError::forbidden(format!(
                "SQL source `{label}` may not be granted by this tenant"
            )));
        }
    }

    let input = match (submit.input, submit.input_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give `input` or `input_base64`, not both",
            ));
        }
        (Some(serde_json::Value::String(text)), None) => text.into_bytes(),
        (Some(value), None) => value.to_string().into_bytes(),
        (None, Some(b64)) => BASE64
            .decode(b64.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("`input_base64` is not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    if input.len() > MAX_INPUT_BYTES {
        return Err(ApiError::bad_request(format!(
            "input of {} bytes is over the {MAX_INPUT_BYTES}-byte limit; put large inputs in an object store",
            input.len()
        )));
    }

    let defaults = state.config.runtime.limits;
    let timeout = match &submit.timeout {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ApiError::bad_request(format!("bad `timeout` {text:?}: {e}")))?,
        None => defaults.timeout,
    };
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(ApiError::bad_request(
            "`timeout` must be between 1ms and 24h",
        ));
    }
    let memory = submit.memory.unwrap_or(defaults.memory);
    let max_memory = state.config.runtime.engine.max_memory;
    if memory < (1 << 20) || memory > max_memory {
        return Err(ApiError::bad_request(format!(
            "`memory` must be between 1 MiB and this server's maximum of {max_memory} bytes"
        )));
    }
    if submit.fuel.is_some() && !state.config.runtime.engine.fuel {
        return Err(ApiError::bad_request(
            "this server does not meter fuel; omit `fuel`",
        ));
    }
    if submit.retries.max > MAX_RETRIES {
        return Err(ApiError::bad_request(format!(
            "`retries.max` may be at most {MAX_RETRIES}"
        )));
    }
    let backoff = humantime::parse_duration(&submit.retries.backoff)
        .map_err(|e| ApiError::bad_request(format!("bad `retries.backoff`: {e}")))?;
    if let Some(key) = &submit.idempotency_key
        && (key.is_empty() || key.len() > 256)
    {
        return Err(ApiError::bad_request(
            "`idempotency_key` must be 1 to 256 characters",
        ));
    }
    let fuel = match submit.fuel {
        Some(fuel) => {
            Some(i64::try_from(fuel).map_err(|_| ApiError::bad_request("`fuel` is too large"))?)
        }
        None => None,
    };

    Ok(NewRun {
        tenant_id: tenant_id.to_string(),
        module_name: module.name,
        module_version: module.version,
        digest: module.digest,
        input,
        params: submit.params,
        grants: submit.grants,
        timeout_ms: timeout.as_millis() as i64,
        memory_bytes: memory as i64,
        fuel,
        max_retries: submit.retries.max.into(),
        backoff_ms: backoff.as_millis() as i64,
        retry_timeouts: submit.retries.on_timeout,
        priority: submit.priority.into(),
        idempotency_key: submit.idempotency_key,
        not_before: crate::now_ms(),
        schedule_id: None,
        workflow_run_id: None,
        step_name: None,
        logical_date: None,
    })
}

/// Submit a run.
#[utoipa::path(
    post,
    path = "/v1/runs",
    request_body = SubmitRun,
    responses(
        (status = 201, description = "queued", body = RunView),
        (status = 200, description = "an earlier run with the same idempotency key", body = RunView),
        (status = 400, body = super::error::ErrorBody),
        (status = 403, description = "a grant the tenant may not give", body = super::error::ErrorBody),
        (status = 429, description = "the tenant is at its `max_queued_runs` quota", body = super::error::ErrorBody),
    ),
    tag = "runs"
)]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(submit): Json<SubmitRun>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let run = prepare(&state, &caller.tenant_id, submit).await?;
    let (id, created) = state.db.submit_run(&run, crate::now_ms()).await?;
    if created {
        state.metrics.submitted();
        state.work_available.notify_waiters();
    }
    let stored = state
        .db
        .get_run(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("a submitted run vanished", &id))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored.into())))
}

/// Get a run, with every attempt.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = RunView), (status = 404, body = super::error::ErrorBody)),
    tag = "runs"
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let run = caller_run(&state, &caller, &id).await?;
    let attempts = state.db.attempts(&run.id).await?;
    let mut view = RunView::from(run);
    view.attempt_history = Some(attempts);
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only runs in this state.
    state: Option<String>,
    /// Only runs of this module.
    module: Option<String>,
    /// Only runs created at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// The `next` value of the previous page.
    cursor: Option<String>,
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
    let run_state = match &query.state {
        Some(s) => Some(
            RunState::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown state {s:?}")))?,
        ),
        None => None,
    };
    let before = match &query.cursor {
        Some(cursor) => {
            let (ms, id) = cursor
                .split_once('.')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| ApiError::bad_request("bad `cursor`"))?;
            Some((ms, id))
        }
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
    let mut runs = state.db.list_runs(&caller.tenant_id, &filter).await?;
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
/// interrupted by its worker within a heartbeat.
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
    state
        .db
        .request_cancel(&caller.tenant_id, &id, crate::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    let run = caller_run(&state, &caller, &id).await?;
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
    /// opened the stream was revoked.
    pub event: String,
    /// The event's JSON text.
    pub data: String,
}

/// How often a followed log polls for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const LOG_PAGE: i64 = 1000;

/// Live log streams per tenant id.
#[derive(Default)]
pub(crate) struct StreamCounts(Arc<std::sync::Mutex<BTreeMap<String, usize>>>);

/// One live log stream, counted against its tenant until dropped (when
/// the stream ends or the client goes away).
struct StreamSlot {
    counts: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    tenant: String,
}

impl StreamCounts {
    /// A slot for one more of `tenant`'s streams, unless it holds `max`.
    fn open(&self, tenant: &str, max: usize) -> Option<StreamSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(tenant.to_string()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            counts: self.0.clone(),
            tenant: tenant.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

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
        .db
        .run_state(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    let after = query.after.unwrap_or(0);
    if !query.follow {
        let lines = state
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
    let max = state.config.server.max_log_streams;
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
                && let Ok(None) = f.state.db.token(hash).await
            {
                f.done = true;
                let error = Event::default()
                    .event("error")
                    .json_data(super::error::ErrorBody {
                        error: super::error::ErrorDetail {
                            code: "unauthorized".into(),
                            message: "the token that opened this stream was revoked".into(),
                        },
                    })
                    .expect("serializes");
                return Some((futures::stream::iter(vec![Ok(error)]), f));
            }
            // Read the state before the lines: a run that ended before this
            // read has all its lines stored by now. Only the state: the
            // run's input and output can be large.
            let run_state = match f.state.db.run_state(&f.tenant, &f.id).await {
                Ok(Some(state)) => state,
                _ => RunState::Failed,
            };
            let lines = f
                .state
                .db
                .logs(&f.tenant, &f.id, f.after, LOG_PAGE)
                .await
                .unwrap_or_default();
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
