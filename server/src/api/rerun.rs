//! `POST /v1/runs/{id}/rerun`: run a finished (or any) run again.
//!
//! The API never returns a run's input (it can be large), so a client
//! cannot resubmit a run faithfully; the server can. The new run gets the
//! same module bytes (by digest), input, params, grants, limits, retry
//! policy and priority, and goes through the same checks as a submission:
//! a module deleted since, or a grant the tenant may no longer give, is
//! refused as it would be for `POST /v1/runs`. It is a run of its own: not
//! part of the old run's schedule or workflow, and without its idempotency
//! key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::extract::{Json, Path};
use super::runs::RunView;
use super::{ApiError, ApiResult, AppState, Caller};
use crate::model::{RetryPolicy, SubmitRun};
use crate::services::admission;

/// Submit a new run with everything a run had: module bytes, input,
/// params, grants, limits, retries and priority.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/rerun",
    params(("id" = String, Path)),
    responses(
        (status = 201, description = "queued", body = RunView),
        (status = 422, description = "the module's bytes are gone, or a limit is no longer allowed", body = super::error::ErrorBody),
        (status = 403, description = "a grant the tenant may no longer give", body = super::error::ErrorBody),
        (status = 404, description = "no such run", body = super::error::ErrorBody),
        (status = 429, description = "the tenant is at its `max_queued_runs` quota", body = super::error::ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait before submitting again"))),
    ),
    tag = "runs"
)]
pub async fn rerun(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let old = state
        .services
        .db
        .get_run(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?
        .spec;
    // Stored values passed the same checks when the old run was submitted;
    // out-of-range ones (a database edited by hand) fail `prepare`'s.
    let number = |what: &str, value: i64| {
        u64::try_from(value).map_err(|_| ApiError::internal("a stored run's limit", what))
    };
    let submit = SubmitRun {
        module: old.module_name,
        version: None,
        digest: Some(old.digest),
        input: None,
        input_base64: (!old.input.is_empty()).then(|| BASE64.encode(&old.input)),
        params: old.params,
        grants: old.grants,
        timeout: Some(format!("{}ms", old.timeout_ms)),
        memory: Some(number("memory", old.memory_bytes)?),
        fuel: old.fuel.map(|f| number("fuel", f)).transpose()?,
        retries: RetryPolicy {
            max: u32::try_from(old.max_retries)
                .map_err(|_| ApiError::internal("a stored run's limit", "max_retries"))?,
            backoff: format!("{}ms", old.backoff_ms),
            on_timeout: old.retry_timeouts,
        },
        priority: i32::try_from(old.priority)
            .map_err(|_| ApiError::internal("a stored run's limit", "priority"))?,
        idempotency_key: None,
    };
    let mut run = admission::prepare(&state.services, &caller.tenant_id, submit).await?;
    let (new_id, _) = admission::enqueue(&state.services, &mut run).await?;
    let stored = state
        .services
        .db
        .get_run(&caller.tenant_id, &new_id)
        .await?
        .ok_or_else(|| ApiError::internal("a submitted run vanished", &new_id))?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}
