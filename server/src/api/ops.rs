//! Health, readiness and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::error::ApiResult;
use super::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = String)), tag = "ops")]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: its database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, body = String), (status = 503, body = super::error::ErrorBody)),
    tag = "ops"
)]
pub async fn readyz(State(state): State<Arc<AppState>>) -> ApiResult<&'static str> {
    state.services.db.ping().await?;
    Ok("ready")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")), tag = "ops")]
pub async fn metrics(State(state): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    let by_state = state.services.db.count_by_state().await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.services.metrics.render(&by_state),
    ))
}
