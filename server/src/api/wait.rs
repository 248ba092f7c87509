//! `?wait=`: a GET that answers once what it reads is final, so a client
//! waits for a run or a workflow run with one request instead of polling.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::{ApiError, ApiResult};
use crate::services::wake::armed;

/// The longest a GET holds its answer; a longer `wait` is cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How often a waiting GET reads again even if nothing in this process
/// said that a run ended: ends recorded by other processes (worker
/// processes on PostgreSQL, a lease expiring) are not announced here.
const RECHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct WaitQuery {
    /// Answer as soon as the state is final (or at once if it is), else
    /// after this long with the state as it is then: a number and `ms` or
    /// `s` (`250ms`, `30s`). Waits over 30 s are cut to 30 s. Without it,
    /// answer at once.
    #[param(pattern = "^[0-9]{1,9}(ms|s)$")]
    wait: Option<String>,
}

impl WaitQuery {
    /// How long to wait at most: a 400 for what the document's pattern
    /// refuses.
    pub fn limit(&self) -> ApiResult<Duration> {
        let Some(text) = &self.wait else {
            return Ok(Duration::ZERO);
        };
        let refused = || {
            ApiError::bad_request(format!(
                "`wait` {text:?} is not a number and `ms` or `s`, such as 30s"
            ))
        };
        let (digits, per) = if let Some(digits) = text.strip_suffix("ms") {
            (digits, Duration::from_millis(1))
        } else if let Some(digits) = text.strip_suffix('s') {
            (digits, Duration::from_secs(1))
        } else {
            return Err(refused());
        };
        if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refused());
        }
        let n: u32 = digits.parse().map_err(|_| refused())?;
        Ok(per.saturating_mul(n).min(MAX_WAIT))
    }
}

/// Reads with `read` until `is_final` says so or `limit` has passed, and
/// answers the last read. Woken by `ended` (`Services::ended` for a run,
/// `Services::workflow_ended` for a workflow run; armed before each read,
/// so an end between the read and the wait is not missed) and every
/// `RECHECK` besides.
pub async fn until_final<T, F, Fut>(
    ended: &Notify,
    limit: Duration,
    is_final: impl Fn(&T) -> bool,
    read: F,
) -> ApiResult<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let woken = armed(ended);
        let value = read().await?;
        let now = Instant::now();
        if is_final(&value) || now >= deadline {
            return Ok(value);
        }
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep_until(deadline.min(now + RECHECK)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> Result<Duration, String> {
        WaitQuery {
            wait: Some(text.into()),
        }
        .limit()
        .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn wait_reads_ms_and_s_and_is_capped() {
        assert_eq!(WaitQuery::default().limit().unwrap(), Duration::ZERO);
        assert_eq!(limit("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(limit("0s"), Ok(Duration::ZERO));
        assert_eq!(limit("7s"), Ok(Duration::from_secs(7)));
        assert_eq!(limit("999999999s"), Ok(MAX_WAIT));
        for bad in [
            "",
            "s",
            "ms",
            "30",
            "1m",
            "-1s",
            "1.5s",
            "1 s",
            "1234567890s",
        ] {
            assert!(limit(bad).is_err(), "{bad:?} was taken");
        }
    }
}
