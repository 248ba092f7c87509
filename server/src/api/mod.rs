//! The REST API (axum), under `/v1`, plus `/healthz`, `/readyz`,
//! `/metrics` and `/openapi.json`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::HeaderValue;
use axum::http::header::{self, AUTHORIZATION};
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::DEFAULT_TENANT;
use crate::model::GrantSet;
use crate::services::Services;

pub mod error;
mod extract;
pub mod flows;
pub mod guard;
pub mod http;
mod modules;
mod ops;
pub mod runs;
mod tenants;

pub use error::{ApiError, ApiResult};

/// What every handler shares: the services, and what only the API keeps.
pub struct AppState {
    pub services: Services,
    /// The tenant id that owns everything in open (token-less) mode.
    pub default_tenant: String,
    /// Live log streams per tenant id, capped at `[server] max_log_streams`.
    pub(crate) log_streams: runs::StreamCounts,
    /// The ids of the tokens the configuration lists.
    config_tokens: BTreeSet<String>,
}

/// The caller, as its bearer token says.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    pub admin: bool,
    /// The SHA-256 of a stored token, which can be revoked while a
    /// long-lived response (a followed log) is still being sent. `None` in
    /// open mode and for the configured admin token.
    pub token_hash: Option<String>,
}

/// SHA-256 hex of a token: how tokens are stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time that depends only on their lengths.
/// Callers compare SHA-256 digests, whose length is fixed, so the time
/// says nothing about the presented token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if state.services.config.open_access() {
            return Ok(Caller {
                tenant_id: state.default_tenant.clone(),
                admin: true,
                token_hash: None,
            });
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let hash = hash_token(token);
        if let Some(admin) = &state.services.config.server.admin_token
            && constant_time_eq(hash.as_bytes(), hash_token(admin).as_bytes())
        {
            return Ok(Caller {
                tenant_id: state.default_tenant.clone(),
                admin: true,
                token_hash: None,
            });
        }
        match state.services.db.token(&hash).await? {
            Some((tenant_id, admin)) => Ok(Caller {
                tenant_id,
                admin,
                token_hash: Some(hash),
            }),
            None => Err(ApiError::unauthorized()),
        }
    }
}

impl AppState {
    /// Sets up tenants and tokens from the configuration: the API owns
    /// them, so only a process that serves it does this.
    pub async fn new(services: Services) -> Result<Self, crate::store::DbError> {
        let db = &services.db;
        let config = &services.config;
        let default_tenant = db.ensure_tenant(DEFAULT_TENANT).await?;
        // In open mode the one tenant may use every configured label.
        if config.open_access() {
            let everything = GrantSet {
                objects: config.runtime.objects.keys().cloned().collect(),
                sql: config.runtime.sql.keys().cloned().collect(),
            };
            db.set_tenant_grants(&default_tenant, &everything).await?;
        }
        // The configuration is the source of truth for the tenants it
        // names; tenants made through the admin API keep what was set there.
        let mut config_tokens = BTreeSet::new();
        // The default tenant always exists, so its quotas are always the
        // configuration's: `[tenants.default]`'s, or the defaults.
        let default_quotas = config
            .tenants
            .get(DEFAULT_TENANT)
            .map(|t| t.quotas())
            .unwrap_or_default();
        db.set_tenant_quotas(&default_tenant, &default_quotas)
            .await?;
        for (name, tenant) in &config.tenants {
            let id = db.ensure_tenant(name).await?;
            for token in &tenant.tokens {
                config_tokens.insert(db.add_config_token(&id, &hash_token(token)).await?);
            }
            // In open mode the default tenant keeps every label: a
            // `[tenants.default]` table there sets its quotas only.
            if !(config.open_access() && name == DEFAULT_TENANT) {
                db.set_tenant_grants(&id, &tenant.allowed()).await?;
            }
            db.set_tenant_quotas(&id, &tenant.quotas()).await?;
        }
        Ok(AppState {
            services,
            default_tenant,
            log_streams: Default::default(),
            config_tokens,
        })
    }

    /// Revokes the tokens a configuration file once listed and this one
    /// does not, so that deleting a token from the file and restarting
    /// revokes it. `serve()` calls this for a process that serves the API
    /// with tokens configured: never for a worker or an open-mode server,
    /// which may run with no file at all against a shared database.
    pub async fn revoke_unlisted_config_tokens(&self) -> Result<u64, crate::store::DbError> {
        let revoked = self
            .services
            .db
            .revoke_config_tokens_except(&self.config_tokens)
            .await?;
        if revoked > 0 {
            tracing::info!("revoked {revoked} token(s) no longer listed in the configuration");
        }
        Ok(revoked)
    }

    /// The labels `tenant_id`'s runs may be granted.
    pub async fn allowed_grants(&self, tenant_id: &str) -> Result<GrantSet, crate::store::DbError> {
        self.services.db.tenant_grants(tenant_id).await
    }
}

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

/// The whole API.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(modules::upload, modules::list))
        .routes(routes!(modules::versions, modules::delete))
        .routes(routes!(runs::submit, runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::logs))
        .routes(routes!(runs::output))
        .routes(routes!(flows::create_schedule, flows::list_schedules))
        .routes(routes!(flows::get_schedule, flows::delete_schedule))
        .routes(routes!(flows::pause_schedule))
        .routes(routes!(flows::resume_schedule))
        .routes(routes!(flows::backfill))
        .routes(routes!(flows::create_workflow, flows::list_workflows))
        .routes(routes!(flows::get_workflow, flows::delete_workflow))
        .routes(routes!(flows::start_workflow))
        .routes(routes!(flows::get_workflow_run))
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
        .layer(tower_http::trace::TraceLayer::new_for_http());
    security_headers(router).with_state(state)
}

/// Adds the headers every response carries, outermost so that errors and
/// refusals have them too: no content sniffing of a task's log or output,
/// and no copy of a response (a minted token above all) in any cache.
pub fn security_headers<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest_in_constant_time() {
        let admin = hash_token("admin-token");
        assert!(constant_time_eq(
            hash_token("admin-token").as_bytes(),
            admin.as_bytes()
        ));
        for wrong in ["admin-toke", "admin-tokenx", "Admin-token", ""] {
            assert!(!constant_time_eq(
                hash_token(wrong).as_bytes(),
                admin.as_bytes()
            ));
        }
        assert!(!constant_time_eq(b"short", admin.as_bytes()));
        // Stored form: 64 hex digits, never the token.
        assert_eq!(admin.len(), 64);
        assert!(!admin.contains("admin"));
    }
}
