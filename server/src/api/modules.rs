//! `/v1/modules`: upload, list and delete task components.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use caisson_runtime::RuntimeError;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::state::{AppState, Caller};
use crate::model::check_name;
use crate::services::artifacts::module_key;
use crate::store::ModuleRecord;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UploadQuery {
    /// Module name: lowercase letters, digits, `-`, `_` and `.`, at most 64.
    #[param(pattern = "^[a-z0-9_-][a-z0-9._-]{0,63}$")]
    name: String,
    /// Version label; defaults to `sha-` and the first 12 digits of the digest.
    #[param(pattern = "^[a-z0-9_-][a-z0-9._-]{0,63}$")]
    version: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VersionQuery {
    /// Only this version; all versions when absent.
    version: Option<String>,
}

/// A component's raw bytes, as uploaded.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // only describes the body in the OpenAPI document
pub struct WasmBytes(Vec<u8>);

/// Upload a task component.
///
/// The body is the raw `.wasm` bytes (`Content-Type: application/wasm`).
/// It is validated as a component of the `caisson:task/task` world and
/// compiled before it is stored; uploading the same bytes again is a no-op.
#[utoipa::path(
    post,
    path = "/v1/modules",
    params(UploadQuery),
    request_body(content = WasmBytes, content_type = "application/wasm"),
    responses(
        (status = 201, description = "stored", body = ModuleRecord),
        (status = 200, description = "already stored, identical", body = ModuleRecord),
        (status = 400, description = "the name or version breaks its pattern", body = super::error::ErrorBody),
        (status = 422, description = "the bytes are not a task component", body = super::error::ErrorBody),
        (status = 409, description = "this version exists with other bytes", body = super::error::ErrorBody),
        (status = 413, description = "over the upload limit", body = super::error::ErrorBody),
        (status = 507, description = "the module store is full; nothing was stored", body = super::error::ErrorBody),
    ),
    tag = "modules"
)]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<ModuleRecord>)> {
    check_name("module name", &query.name)?;
    if let Some(version) = &query.version {
        check_name("version", version)?;
    }
    let limit = state.services.config.server.max_module_bytes as usize;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the component is over the {limit}-byte upload limit"),
        )
    };
    // A declared length over the limit is refused before reading a byte.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    // Reads at most `limit` bytes: a larger body is cut off, not buffered.
    // The body may be large, so `request_timeout` bounds each wait for the
    // next piece of it rather than the whole upload (see `guard`).
    let idle = state.services.config.server.request_timeout;
    let mut stream = body.into_data_stream();
    let mut buffer = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(super::guard::timed_out(idle)),
            Ok(None) => break,
            Ok(Some(Ok(chunk))) if buffer.len() + chunk.len() <= limit => {
                buffer.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => return Err(too_large()),
        }
    }
    let bytes = buffer.freeze();
    let task = state
        .services
        .runtime
        .load(&bytes)
        .await
        .map_err(|e| match e {
            RuntimeError::InvalidComponent(message) => {
                // Any bytes fit the document's binary body: whether they are
                // a component only the validator can say.
                ApiError::unprocessable(format!("not a valid task component: {message}"))
            }
            other => ApiError::internal("could not compile the component", other),
        })?;
    let digest = task.digest().to_string();
    let key = module_key(&digest);
    if state.services.modules.head(&key).await.is_err() {
        state
            .services
            .modules
            .put(&key, PutPayload::from(bytes.clone()))
            .await
            .map_err(|e| {
                if super::error::is_storage_full(&e) {
                    ApiError::storage_full("the module store", e)
                } else {
                    ApiError::internal("could not store the component", e)
                }
            })?;
    }
    let record = ModuleRecord {
        name: query.name.clone(),
        version: query
            .version
            .unwrap_or_else(|| format!("sha-{}", &digest[..12])),
        digest,
        size: bytes.len() as i64,
        created_at: crate::model::now_ms(),
    };
    match state
        .services
        .db
        .insert_module(&caller.tenant_id, &record)
        .await
    {
        Ok(true) => Ok((StatusCode::CREATED, Json(record))),
        Ok(false) => {
            let existing = state
                .services
                .db
                .resolve_module(&caller.tenant_id, &record.name, Some(&record.version), None)
                .await?
                .unwrap_or(record);
            Ok((StatusCode::OK, Json(existing)))
        }
        Err(crate::store::DbError::Conflict(_)) => Err(ApiError::conflict(format!(
            "version {} of module {} already exists with different bytes; upload under a new version",
            record.version, record.name
        ))),
        Err(e) => Err(e.into()),
    }
}

/// List every module version.
#[utoipa::path(get, path = "/v1/modules", responses((status = 200, body = Vec<ModuleRecord>)), tag = "modules")]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<ModuleRecord>>> {
    Ok(Json(
        state.services.db.list_modules(&caller.tenant_id).await?,
    ))
}

/// List the versions of one module, newest first.
#[utoipa::path(
    get,
    path = "/v1/modules/{name}",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<ModuleRecord>), (status = 404, body = super::error::ErrorBody)),
    tag = "modules"
)]
pub async fn versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<ModuleRecord>>> {
    let versions = state
        .services
        .db
        .module_versions(&caller.tenant_id, &name)
        .await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("module {name}")));
    }
    Ok(Json(versions))
}

/// Delete a module, or one version of it.
#[utoipa::path(
    delete,
    path = "/v1/modules/{name}",
    params(("name" = String, Path), VersionQuery),
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)),
    tag = "modules"
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<StatusCode> {
    let versions = state
        .services
        .db
        .module_versions(&caller.tenant_id, &name)
        .await?;
    let doomed: Vec<_> = versions
        .iter()
        .filter(|m| query.version.as_ref().is_none_or(|v| &m.version == v))
        .collect();
    if doomed.is_empty() {
        return Err(ApiError::not_found(format!("module {name}")));
    }
    if let Some(user) = state
        .services
        .db
        .module_user(&caller.tenant_id, &name)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "module {name} is used by {user}; remove that first"
        )));
    }
    state
        .services
        .db
        .delete_module(&caller.tenant_id, &name, query.version.as_deref())
        .await?;
    for module in doomed {
        if !state.services.db.digest_in_use(&module.digest).await? {
            // Runs already queued keep their digest; a worker that can no
            // longer fetch it fails the run with a clear error.
            if let Err(e) = state
                .services
                .modules
                .delete(&module_key(&module.digest))
                .await
            {
                tracing::warn!(digest = %module.digest, "could not delete module bytes: {e}");
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
