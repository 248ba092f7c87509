//! Health, readiness and metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;

use super::error::ApiResult;
use super::state::AppState;
use crate::metrics::{OPENMETRICS, PROMETHEUS_TEXT, wants_openmetrics};
use crate::services::Services;

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

/// Prometheus metrics: OpenMetrics when the `Accept` header asks for it
/// (Prometheus does), else the Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")), tag = "ops")]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    exposition(&state.services, &headers).await
}

/// `/metrics` of a process that serves no API (see [`super::metrics_router`]).
pub async fn worker_metrics(
    State(services): State<Services>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    exposition(&services, &headers).await
}

async fn exposition(services: &Services, headers: &HeaderMap) -> ApiResult<Response> {
    let metrics = &services.metrics;
    metrics
        .observe_store(&services.db, crate::model::now_ms())
        .await?;
    let openmetrics = wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        PROMETHEUS_TEXT
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        metrics.render(openmetrics),
    )
        .into_response())
}

/// Middleware: counts every request by method, route and status. The
/// route is the matched path template (`/v1/runs/{id}`), never the raw
/// path, which a client could make unique per request.
pub async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.services.metrics.http_request(
        method.as_str(),
        route.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
