//! `/v1/tenants` and `/v1/tokens`: the admin token manages tenants and
//! their tokens. Tokens are random, shown once, and stored as SHA-256.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use caisson_host_api::Grants;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path};
use super::state::{AppState, Caller, hash_token};
use crate::store::{TokenRecord, TokenSource};

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs the admin token"))
    }
}

/// A tenant and what its runs may be granted.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    #[schema(pattern = "^[a-z0-9_-][a-z0-9._-]{0,63}$")]
    pub name: String,
    #[serde(default)]
    pub objects: Vec<String>,
    #[serde(default)]
    pub sql: Vec<String>,
}

/// Create a tenant, or set what an existing one may grant. Admin only.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    request_body = Tenant,
    responses((status = 201, body = Tenant), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 422, description = "a label names no configured object store or SQL source", body = super::error::ErrorBody)),
    tag = "tenants"
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(tenant): Json<Tenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    require_admin(&caller)?;
    crate::model::check_name("tenant name", &tenant.name)?;
    for label in &tenant.objects {
        if !state.services.config.runtime.objects.contains_key(label) {
            return Err(ApiError::unprocessable(format!(
                "no object store `{label}` is configured"
            )));
        }
    }
    for label in &tenant.sql {
        if !state.services.config.runtime.sql.contains_key(label) {
            return Err(ApiError::unprocessable(format!(
                "no SQL source `{label}` is configured"
            )));
        }
    }
    let id = state.services.db.ensure_tenant(&tenant.name).await?;
    let grants = Grants {
        objects: tenant.objects.iter().cloned().collect(),
        sql: tenant.sql.iter().cloned().collect(),
    };
    state.services.db.set_tenant_grants(&id, &grants).await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

/// List tenants. Admin only.
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = Vec<Tenant>), (status = 403, body = super::error::ErrorBody)), tag = "tenants")]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Tenant>>> {
    require_admin(&caller)?;
    let mut out = Vec::new();
    for (id, name) in state.services.db.list_tenants().await? {
        let grants = state.services.db.tenant_grants(&id).await?;
        out.push(Tenant {
            name,
            objects: grants.objects.into_iter().collect(),
            sql: grants.sql.into_iter().collect(),
        });
    }
    Ok(Json(out))
}

/// A new token. The token itself is shown only here.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    pub id: String,
    pub token: String,
}

/// Mint a token for a tenant. Admin only.
#[utoipa::path(
    post,
    path = "/v1/tenants/{name}/tokens",
    params(("name" = String, Path)),
    responses((status = 201, body = NewToken), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    tag = "tenants"
)]
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    require_admin(&caller)?;
    let tenant_id = tenant_id(&state, &name).await?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("cs_{}", hex::encode(secret));
    let id = state
        .services
        .db
        .add_token(&tenant_id, &hash_token(&token), false)
        .await?;
    Ok((StatusCode::CREATED, Json(NewToken { id, token })))
}

/// One of a tenant's tokens: its id and history, never the token itself
/// (nor its hash).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    /// What `DELETE /v1/tokens/{id}` takes.
    pub id: String,
    /// `config` (listed in `caisson.toml`) or `api` (minted here).
    pub source: TokenSource,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was revoked; null while it is live.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<TokenRecord> for TokenView {
    fn from(token: TokenRecord) -> Self {
        TokenView {
            id: token.id,
            source: token.source,
            created_at: crate::model::time(token.created_at),
            revoked_at: token.revoked_at.map(crate::model::time),
        }
    }
}

/// List a tenant's tokens, live and revoked: ids, never secrets. Admin only.
#[utoipa::path(
    get,
    path = "/v1/tenants/{name}/tokens",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<TokenView>), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    tag = "tenants"
)]
pub async fn list_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<TokenView>>> {
    require_admin(&caller)?;
    let tenant_id = tenant_id(&state, &name).await?;
    let tokens = state.services.db.list_tokens(&tenant_id).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// The id of tenant `name`, or a 404.
async fn tenant_id(state: &AppState, name: &str) -> ApiResult<String> {
    state
        .services
        .db
        .tenant_id(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {name}")))
}

/// Revoke a token. It stops working at once. Admin only.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    tag = "tenants"
)]
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    if state.services.db.revoke_token(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("token {id}")))
    }
}
