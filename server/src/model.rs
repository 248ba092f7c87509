//! The run model: what a run asks for ([`SubmitRun`]), what it is once
//! admitted ([`RunSpec`]), what it may reach (host-api's [`Grants`]) and
//! where it is in its life ([`RunState`]). Every other layer (the store,
//! the services, the API, the CLI) speaks these types; this module imports
//! none of them. [`columns`] says how its values are stored.

use std::collections::BTreeMap;
use std::time::Duration;

use caisson_host_api::Grants;
use caisson_host_api::log::{Level, LogRecord, Source};
use caisson_runtime::RunLimits;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod columns;

use columns::{Flag, JsonText};

/// A run's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            "timed_out" => RunState::TimedOut,
            _ => return None,
        })
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

/// A stored state that is not one of [`RunState`]'s names.
#[derive(Debug, thiserror::Error)]
#[error("unknown run state {0:?}")]
pub struct UnknownRunState(pub String);

/// The stored name, as a `state` column is read.
impl TryFrom<String> for RunState {
    type Error = UnknownRunState;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        RunState::parse(&name).ok_or(UnknownRunState(name))
    }
}

/// What a run is once admitted: whose it is, which module it runs with
/// what input, parameters and grants, its limits and retry policy, and
/// what started it. A run to insert is a `RunSpec`; a stored run embeds
/// one (`store::RunRecord`), read from the same columns.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunSpec {
    pub tenant_id: String,
    pub module_name: String,
    pub module_version: String,
    pub digest: String,
    /// Empty in a run read for a list, which leaves inputs out.
    #[sqlx(default)]
    pub input: Vec<u8>,
    #[sqlx(try_from = "JsonText<BTreeMap<String, String>>")]
    pub params: BTreeMap<String, String>,
    #[sqlx(try_from = "JsonText<Grants>")]
    pub grants: Grants,
    /// The run's part of its [`RunLimits`] (see [`RunSpec::limits`]).
    pub timeout_ms: i64,
    pub memory_bytes: i64,
    pub fuel: Option<i64>,
    pub max_retries: i64,
    pub backoff_ms: i64,
    #[sqlx(try_from = "Flag")]
    pub retry_timeouts: bool,
    pub priority: i64,
    pub idempotency_key: Option<String>,
    /// Earliest start: when it was submitted for an immediate run, later
    /// for a retry waiting out its backoff.
    pub not_before: i64,
    pub schedule_id: Option<String>,
    pub workflow_run_id: Option<String>,
    pub step_name: Option<String>,
    pub logical_date: Option<i64>,
    /// The W3C `traceparent` of the run's `submit` span, when traces are
    /// on (see `telemetry`): where its worker's spans join the trace.
    pub trace_parent: Option<String>,
}

impl RunSpec {
    /// The workflow run and step whose run this is, if it is a step's.
    pub fn workflow_step(&self) -> Option<(&String, &String)> {
        self.workflow_run_id.as_ref().zip(self.step_name.as_ref())
    }

    /// The run's limits: its own timeout, memory and fuel, and the rest
    /// (log, output, object and SQL caps) from `defaults`, the worker's.
    pub fn limits(&self, defaults: RunLimits) -> RunLimits {
        RunLimits {
            timeout: Duration::from_millis(self.timeout_ms.max(1) as u64),
            memory: self.memory_bytes.max(0) as u64,
            fuel: self.fuel.map(|f| f.max(0) as u64),
            ..defaults
        }
    }

    /// The run's part of `limits` as it is stored: `timeout_ms`,
    /// `memory_bytes` and `fuel`, which [`RunSpec::limits`] reads back.
    pub fn limit_columns(limits: &RunLimits) -> (i64, i64, Option<i64>) {
        let clamp = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        (
            clamp(limits.timeout.as_millis()),
            clamp(limits.memory.into()),
            limits.fuel.map(|f| clamp(f.into())),
        )
    }
}

/// How a failed run is retried.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 to 100).
    #[serde(default, deserialize_with = "whole::number")]
    #[schema(minimum = 0, maximum = 100)]
    pub max: u32,
    /// The first delay, doubled on each retry, with jitter: e.g. `1s`, `500ms`.
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// Retry timeouts too (by default only failures the task marks retryable).
    #[serde(default)]
    pub on_timeout: bool,
}

fn default_backoff() -> String {
    "1s".into()
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max: 0,
            backoff: default_backoff(),
            on_timeout: false,
        }
    }
}

/// A run to submit.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// The module's name.
    #[schema(pattern = "^[a-z0-9_-][a-z0-9._-]{0,63}$")]
    pub module: String,
    /// A version; the newest when neither this nor `digest` is given.
    #[schema(pattern = "^[a-z0-9_-][a-z0-9._-]{0,63}$")]
    pub version: Option<String>,
    /// A digest (SHA-256 hex), to pin exact bytes.
    pub digest: Option<String>,
    /// The input: a string is passed as its UTF-8 bytes, any other JSON
    /// value as its JSON text.
    pub input: Option<serde_json::Value>,
    /// Binary input, base64; instead of `input`.
    pub input_base64: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Labels the run may open. Each must be allowed for the tenant.
    #[serde(default)]
    pub grants: Grants,
    /// Wall-clock limit, e.g. `30s`, `5m`. Defaults to the server's.
    pub timeout: Option<String>,
    /// Memory limit in bytes, at least 1 MiB and at most the server's
    /// `engine.max_memory` (over that is a 422). Defaults to the server's.
    #[schema(minimum = 1048576, maximum = 9223372036854775807_i64)]
    #[serde(default, deserialize_with = "whole::optional")]
    pub memory: Option<u64>,
    /// Fuel budget.
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    #[serde(default, deserialize_with = "whole::optional")]
    pub fuel: Option<u64>,
    #[serde(default)]
    pub retries: RetryPolicy,
    /// Higher runs first, among this tenant's runs (it never puts a run
    /// ahead of another tenant's).
    #[serde(default, deserialize_with = "whole::number")]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub priority: i32,
    /// Submitting again with the same key returns the first run.
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
}

/// Integers as JSON Schema reads them: `3.0` is the integer 3 (the
/// document's `type: integer` allows it, and clients in languages without
/// a separate integer type send it), while `3.5` and values out of the
/// field's range are refused.
pub(crate) mod whole {
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    fn convert<T: TryFrom<i128>, E: Error>(n: serde_json::Number) -> Result<T, E> {
        let value: i128 = if let Some(i) = n.as_i64() {
            i.into()
        } else if let Some(u) = n.as_u64() {
            u.into()
        } else {
            // Beyond ±2^100 no integer field here can hold it anyway.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e30 => f as i128,
                _ => return Err(E::custom(format!("expected an integer, found {n}"))),
            }
        };
        T::try_from(value).map_err(|_| E::custom(format!("{n} is out of range")))
    }

    pub fn number<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
        convert(serde_json::Number::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(convert)
            .transpose()
    }
}

/// Milliseconds since the Unix epoch: the database's unit of time.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A database time (milliseconds since the Unix epoch) as a timestamp.
pub fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A name that [`check_name`] refused, with what it names.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} {name:?}: use 1 to 64 lowercase letters, digits, `-`, `_` or `.`")]
pub struct InvalidName {
    pub what: &'static str,
    pub name: String,
}

/// Names of modules, versions, schedules, workflows and tenants. The
/// OpenAPI document says the same as `^[a-z0-9_-][a-z0-9._-]{0,63}$`.
pub fn check_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// Where a stored log line came from: one of the task's channels, its
/// progress reports, or Caisson itself (a retry, a withheld grant, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    Task,
    Stdout,
    Stderr,
    Progress,
    Caisson,
}

impl LogSource {
    /// The stored (and shown) name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Task => "task",
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Progress => "progress",
            LogSource::Caisson => "caisson",
        }
    }
}

/// A stored source name that is none of [`LogSource`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown log source {0:?}")]
pub struct UnknownLogSource(pub String);

/// The stored name, as a `source` column is read.
impl TryFrom<String> for LogSource {
    type Error = UnknownLogSource;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Ok(match name.as_str() {
            "task" => LogSource::Task,
            "stdout" => LogSource::Stdout,
            "stderr" => LogSource::Stderr,
            "progress" => LogSource::Progress,
            "caisson" => LogSource::Caisson,
            _ => return Err(UnknownLogSource(name)),
        })
    }
}

impl From<Source> for LogSource {
    fn from(source: Source) -> Self {
        match source {
            Source::Task => LogSource::Task,
            Source::Stdout => LogSource::Stdout,
            Source::Stderr => LogSource::Stderr,
        }
    }
}

/// A log line on its way to the store; `store::LogLine` is one read back.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLogLine {
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    pub level: Level,
    pub source: LogSource,
    pub message: String,
}

impl NewLogLine {
    /// A line from Caisson itself, now.
    pub fn system(message: String) -> Self {
        NewLogLine {
            time: now_ms(),
            level: Level::Info,
            source: LogSource::Caisson,
            message,
        }
    }
}

impl From<LogRecord> for NewLogLine {
    fn from(record: LogRecord) -> Self {
        NewLogLine {
            time: record.time.timestamp_millis(),
            level: record.level,
            source: record.source.into(),
            message: record.message,
        }
    }
}
