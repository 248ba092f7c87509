//! The REST API (axum), under `/v1`, plus `/healthz`, `/readyz`,
//! `/metrics` and `/openapi.json`.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use http::security_headers;

pub mod error;
mod extract;
pub mod flows;
pub mod guard;
pub mod http;
mod modules;
mod ops;
mod rerun;
pub mod runs;
mod schedule_times;
mod state;
mod streams;
mod tenants;
mod wait;

pub use error::{ApiError, ApiResult};
pub use state::{AppState, Caller, hash_token};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Caisson",
        description = "Run WebAssembly task components: modules, runs, logs."
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
struct ApiDoc;

/// Adds to every operation what each handler's annotation leaves out
/// because every handler shares it: the bearer token (and its 401), the
/// 503 while the database is down, and the 400/413/415 the extractors in
/// [`extract`] answer for a path, query or body that does not parse.
fn document_common_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityScheme;
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement};
    use utoipa::openapi::{Content, Ref, RefOr, Response};

    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    let error = |description: &str| {
        let mut response = Response::new(description);
        response.content.insert(
            "application/json".into(),
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        );
        RefOr::T(response)
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let v1 = path.starts_with("/v1/");
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description));
            };
            if !v1 {
                continue;
            }
            add("401", "no valid bearer token");
            add(
                "408",
                "the request took longer than the server's `request_timeout`",
            );
            add(
                "503",
                "the database is unavailable; retry after `Retry-After` seconds",
            );
            let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let body = operation.request_body.as_ref();
            if has_params || body.is_some() {
                add("400", "a path, query or body that does not parse");
            }
            if body.is_some_and(|b| b.content.contains_key("application/json")) {
                add("413", "the request body is too large");
                add("415", "the body is not `application/json`");
            }
            operation.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
        }
    }
}

/// The largest JSON request body: room for a run's largest inline input
/// (16 MiB, base64-encoded in JSON when it is not UTF-8) and its other
/// fields. Bigger inputs belong in an object store.
pub const MAX_JSON_BODY: usize = 24 << 20;

/// `/metrics` alone, for a process that serves no API (`caisson worker`
/// with `[server] metrics_listen`), so its workers' counters reach
/// Prometheus too.
pub fn metrics_router(services: crate::services::Services) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(ops::worker_metrics))
        .with_state(services)
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(modules::upload, modules::list))
        .routes(routes!(modules::versions, modules::delete))
        .routes(routes!(runs::submit, runs::list))
        .routes(routes!(runs::submit_batch))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(rerun::rerun))
        .routes(routes!(runs::logs))
        .routes(routes!(runs::output))
        .routes(routes!(flows::create_schedule, flows::list_schedules))
        .routes(routes!(flows::get_schedule, flows::delete_schedule))
        .routes(routes!(flows::pause_schedule))
        .routes(routes!(flows::resume_schedule))
        .routes(routes!(flows::backfill))
        .routes(routes!(schedule_times::next_fire_times))
        .routes(routes!(flows::create_workflow, flows::list_workflows))
        .routes(routes!(flows::get_workflow, flows::delete_workflow))
        .routes(routes!(flows::start_workflow))
        .routes(routes!(flows::get_workflow_run))
        .routes(routes!(flows::cancel_workflow_run))
        .routes(routes!(tenants::create, tenants::list))
        .routes(routes!(tenants::create_token, tenants::list_tokens))
        .routes(routes!(tenants::revoke_token))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    let mut api = api;
    document_common_responses(&mut api);
    let api = Arc::new(api);
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let api = api.clone();
                async move { axum::Json(api.as_ref().clone()) }
            }),
        )
        .merge(crate::ui::router())
        // Every JSON body is small; a module upload reads its raw body
        // itself, up to `max_module_bytes`, so this cap does not apply to it.
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::open_mode,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // Outermost, so that it counts the answers of the layers above
        // (a 408 from the request timeout, a 503 from the database guard).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::count_requests,
        ));
    security_headers(router).with_state(state)
}
