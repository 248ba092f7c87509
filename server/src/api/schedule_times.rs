//! `GET /v1/schedules/{name}/next`: when a schedule fires next, so that a
//! person (the dashboard) can check a cron expression and its time zone
//! against what they meant.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Json, Path, Query};
use super::{ApiError, ApiResult, AppState, Caller};
use crate::cron::CronSchedule;

/// The most fire times one request may ask for.
const MAX_COUNT: usize = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct NextQuery {
    /// How many fire times (default 5); values outside 1 to 100 are taken
    /// as the nearest of the two. Any `u64` parses, so the document says
    /// exactly that range.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    count: Option<u64>,
}

/// A schedule's next fire times.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NextFireTimes {
    pub paused: bool,
    /// The next fire times after now, earliest first, in UTC; empty while
    /// the schedule is paused, since it will not fire then.
    pub times: Vec<DateTime<Utc>>,
}

/// The next fire times of a schedule (none while it is paused).
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}/next",
    params(("name" = String, Path), NextQuery),
    responses((status = 200, body = NextFireTimes), (status = 404, body = super::error::ErrorBody)),
    tag = "schedules"
)]
pub async fn next_fire_times(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<NextQuery>,
) -> ApiResult<Json<NextFireTimes>> {
    let record = state
        .services
        .db
        .get_schedule(&caller.tenant_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("schedule {name}")))?;
    let count = query.count.unwrap_or(5).clamp(1, MAX_COUNT as u64) as usize;
    let mut times = Vec::with_capacity(count);
    if !record.paused {
        let cron = CronSchedule::parse(&record.cron, &record.timezone)
            .map_err(|e| ApiError::internal("stored cron", e))?;
        let mut after = Utc::now();
        while times.len() < count {
            match cron.next_after(after) {
                Some(next) => {
                    times.push(next);
                    after = next;
                }
                // No more fire times before the cron library's year limit.
                None => break,
            }
        }
    }
    Ok(Json(NextFireTimes {
        paused: record.paused,
        times,
    }))
}
