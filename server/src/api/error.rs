//! Typed JSON errors: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Client mistakes are 4xx with a message that says what to fix. A request
//! the OpenAPI document refuses (a missing field, a name outside its
//! pattern, a number out of range) is a 400; a well-formed request whose
//! meaning the document cannot judge (a cron expression that does not parse,
//! an unknown module or time zone, a workflow with a cycle) is a 422. Server-side
//! failures never echo internals (database errors can name hosts and roles):
//! they are logged, and the client gets a generic message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::InvalidName;
use crate::services::admission::AdmissionError;
use crate::services::scheduler::SchedulerError;
use crate::store::DbError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for the `Retry-After` header, where waiting is what to do.
    pub retry_after: Option<u32>,
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `not_found`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the client to wait `seconds` before trying
    /// again (`Retry-After`).
    pub fn retry_after(self, seconds: u32) -> Self {
        ApiError {
            retry_after: Some(seconds),
            ..self
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: the request is well-formed (the OpenAPI document allows it) but
    /// says something the server cannot do, for a reason the document
    /// cannot express.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    /// 507: the store behind `what` has no space left. Logged; the client
    /// learns only that, and that it may try again later.
    pub fn storage_full(what: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!("{what} is full: {error}");
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            format!("{what} is full; nothing was stored: retry once space is freed"),
        )
    }

    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error: {context}"),
        )
    }
}

/// Whether `error`, or anything in its chain of sources, is a full disk or
/// an exhausted quota: the operator's problem to fix, not a server bug.
pub(crate) fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(e) => {
                tracing::warn!("database unavailable: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; retry shortly",
                )
                .retry_after(2)
            }
            DbError::Conflict(e) => ApiError::conflict(e),
            DbError::QuotaExceeded { quota, limit } => {
                // A full queue drains as runs start, so waiting helps;
                // schedules stay until one is deleted, so it does not.
                let (what, retry_after) = match quota {
                    "max_queued_runs" => (
                        "runs waiting to start: submit more once some have started",
                        Some(1),
                    ),
                    "max_schedules" => ("schedules: delete one first", None),
                    _ => ("", None),
                };
                let refused = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    format!(
                        "this tenant is at its `{quota}` quota of {limit} {what} \
                         (the operator sets it in `[tenants.NAME]`)"
                    ),
                );
                match retry_after {
                    Some(seconds) => refused.retry_after(seconds),
                    None => refused,
                }
            }
            other => ApiError::internal("database error", other),
        }
    }
}

impl From<AdmissionError> for ApiError {
    fn from(error: AdmissionError) -> Self {
        match error {
            // What the schema can say about a submission (a name's pattern,
            // `retries.max`, the length of `idempotency_key`) is refused
            // with a 400 before admission; what is left here needs the
            // store or the server's limits to judge.
            AdmissionError::Malformed(message) => ApiError::bad_request(message),
            AdmissionError::Invalid(message) => ApiError::unprocessable(message),
            denied @ AdmissionError::GrantDenied { .. } => ApiError::forbidden(denied.to_string()),
            AdmissionError::Db(e) => e.into(),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(error: SchedulerError) -> Self {
        match error {
            SchedulerError::Admission(e) => e.into(),
            SchedulerError::Db(e) => e.into(),
            other => ApiError::internal("could not start the run", other),
        }
    }
}

impl From<InvalidName> for ApiError {
    fn from(error: InvalidName) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
