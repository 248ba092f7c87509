//! Admission: a submitted run is checked against its tenant (the module
//! exists, every grant is one the tenant may give) and the server's limits,
//! then queued. The API, cron schedules and workflow steps all admit runs
//! here, so a run is held to the same rules however it was started.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use caisson_host_api::{GrantKind, Grants};
use caisson_runtime::RunLimits;

use super::context::Services;
use crate::model::{RunSpec, SubmitRun};
use crate::store::{DbError, ModuleRecord};
use crate::telemetry;

/// The longest timeout a run may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The most retries a run may ask for.
const MAX_RETRIES: u32 = 100;
/// The largest input a run may carry (it is stored in the database).
const MAX_INPUT_BYTES: usize = 16 << 20;

/// Why a run was not admitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The submission breaks a rule the OpenAPI document states (a name's
    /// pattern, a number's range, a string's length): a 400.
    #[error("{0}")]
    Malformed(String),
    /// The submission is well-formed but cannot be admitted for a reason
    /// the document cannot state (an unknown module, a duration that does
    /// not parse, a limit over this server's): a 422.
    #[error("{0}")]
    Invalid(String),
    /// A grant the tenant may not give.
    #[error("{} `{label}` may not be granted by this tenant", kind_name(*.kind))]
    GrantDenied { kind: GrantKind, label: String },
    /// The store could not be read.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn kind_name(kind: GrantKind) -> &'static str {
    match kind {
        GrantKind::Objects => "object store",
        GrantKind::Sql => "SQL source",
    }
}

fn invalid(message: impl Into<String>) -> AdmissionError {
    AdmissionError::Invalid(message.into())
}

/// The modules (and the tenant's grants) a series of admissions read,
/// each (name, version, digest) once: a workflow step that fans out to a
/// thousand runs of one module reads it once, not a thousand times. Kept
/// for one series only (one tenant, one instant), so a module deleted or
/// a grant taken away is seen by the next.
#[derive(Default)]
pub struct Resolved {
    seen: Vec<(ModuleKey, Option<(ModuleRecord, Grants)>)>,
}

type ModuleKey = (String, Option<String>, Option<String>);

/// Checks `submit` for `tenant_id` and turns it into a run to insert.
pub async fn prepare(
    services: &Services,
    tenant_id: &str,
    submit: SubmitRun,
) -> Result<RunSpec, AdmissionError> {
    prepare_with(services, tenant_id, submit, &mut Resolved::default()).await
}

/// [`prepare`], reading the module through `resolved`: for admitting many
/// runs of one tenant at once.
pub async fn prepare_with(
    services: &Services,
    tenant_id: &str,
    submit: SubmitRun,
    resolved: &mut Resolved,
) -> Result<RunSpec, AdmissionError> {
    // The same rules as the schema of `SubmitRun`, checked first so that
    // a request the document refuses is a 400 whatever else is wrong.
    crate::model::check_name("module name", &submit.module)
        .map_err(|e| AdmissionError::Malformed(e.to_string()))?;
    if let Some(version) = &submit.version {
        crate::model::check_name("version", version)
            .map_err(|e| AdmissionError::Malformed(e.to_string()))?;
    }
    if submit.retries.max > MAX_RETRIES {
        return Err(AdmissionError::Malformed(format!(
            "`retries.max` may be at most {MAX_RETRIES}"
        )));
    }
    if let Some(key) = &submit.idempotency_key
        && (key.is_empty() || key.chars().count() > 256)
    {
        return Err(AdmissionError::Malformed(
            "`idempotency_key` must be 1 to 256 characters".into(),
        ));
    }
    if submit
        .memory
        .is_some_and(|m| m < (1 << 20) || m > i64::MAX as u64)
        || submit.fuel.is_some_and(|f| f > i64::MAX as u64)
    {
        return Err(AdmissionError::Malformed(
            "`memory` must be at least 1 MiB and `memory` and `fuel` at most 2^63-1".into(),
        ));
    }
    // The module and the tenant's grants in one read.
    let key: ModuleKey = (
        submit.module.clone(),
        submit.version.clone(),
        submit.digest.clone(),
    );
    let known = match resolved.seen.iter().find(|(k, _)| *k == key) {
        Some((_, known)) => known.clone(),
        None => {
            let read = services
                .db
                .resolve_module_and_grants(
                    tenant_id,
                    &submit.module,
                    submit.version.as_deref(),
                    submit.digest.as_deref(),
                )
                .await?;
            resolved.seen.push((key, read.clone()));
            read
        }
    };
    let (module, allowed) = known.ok_or_else(|| {
        let which = match (&submit.version, &submit.digest) {
            (Some(v), _) => format!(" version {v}"),
            (None, Some(d)) => format!(" with digest {d}"),
            (None, None) => String::new(),
        };
        invalid(format!("unknown module {}{which}", submit.module))
    })?;

    if let Some((kind, label)) = submit.grants.not_in(&allowed).first() {
        return Err(AdmissionError::GrantDenied {
            kind: *kind,
            label: label.to_string(),
        });
    }

    let input = match (submit.input, submit.input_base64) {
        (Some(_), Some(_)) => {
            return Err(invalid("give `input` or `input_base64`, not both"));
        }
        (Some(serde_json::Value::String(text)), None) => text.into_bytes(),
        (Some(value), None) => value.to_string().into_bytes(),
        (None, Some(b64)) => BASE64
            .decode(b64.as_bytes())
            .map_err(|e| invalid(format!("`input_base64` is not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    if input.len() > MAX_INPUT_BYTES {
        return Err(invalid(format!(
            "input of {} bytes is over the {MAX_INPUT_BYTES}-byte limit; put large inputs in an object store",
            input.len()
        )));
    }

    let config = &services.config;
    let defaults = config.runtime.limits;
    let timeout = match &submit.timeout {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| invalid(format!("bad `timeout` {text:?}: {e}")))?,
        None => defaults.timeout,
    };
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(invalid("`timeout` must be between 1ms and 24h"));
    }
    // The runtime checks the same when the run starts.
    let limits = RunLimits {
        timeout,
        memory: submit.memory.unwrap_or(defaults.memory),
        fuel: submit.fuel,
        ..defaults
    };
    limits
        .check(&config.runtime.engine)
        .map_err(|e| invalid(e.to_string()))?;
    let backoff = humantime::parse_duration(&submit.retries.backoff)
        .map_err(|e| invalid(format!("bad `retries.backoff`: {e}")))?;
    let (timeout_ms, memory_bytes, fuel) = RunSpec::limit_columns(&limits);

    Ok(RunSpec {
        tenant_id: tenant_id.to_string(),
        module_name: module.name,
        module_version: module.version,
        digest: module.digest,
        input,
        params: submit.params,
        grants: submit.grants,
        timeout_ms,
        memory_bytes,
        fuel,
        max_retries: submit.retries.max.into(),
        backoff_ms: backoff.as_millis() as i64,
        retry_timeouts: submit.retries.on_timeout,
        priority: submit.priority.into(),
        idempotency_key: submit.idempotency_key,
        not_before: crate::model::now_ms(),
        schedule_id: None,
        workflow_run_id: None,
        step_name: None,
        logical_date: None,
        trace_parent: None,
    })
}

/// Queues an admitted run and wakes the workers. Returns its id, and
/// whether it is new (an idempotency key may name an earlier run).
pub async fn enqueue(services: &Services, run: &mut RunSpec) -> Result<(String, bool), DbError> {
    let now = crate::model::now_ms();
    let mut queued = enqueue_all(services, std::slice::from_mut(run), now).await?;
    Ok(queued.remove(0))
}

/// Starts `run`'s trace: its `submit` span, whose context the run then
/// carries (`trace_parent`) when traces are on. A workflow step's run is
/// a child of its workflow's trace.
pub fn start_trace(run: &mut RunSpec) -> tracing::Span {
    let span = telemetry::submit_span(
        &run.tenant_id,
        &run.module_name,
        run.workflow_run_id.as_deref(),
    );
    run.trace_parent = telemetry::traceparent(&span);
    span
}

/// Queues admitted runs in one transaction, all or none, created at `now`,
/// and wakes the workers once. Returns each one's id and whether it is
/// new, in order. Each run gets its trace ([`start_trace`]) first.
pub async fn enqueue_all(
    services: &Services,
    runs: &mut [RunSpec],
    now: i64,
) -> Result<Vec<(String, bool)>, DbError> {
    let spans: Vec<tracing::Span> = runs.iter_mut().map(start_trace).collect();
    // One run, and a slot of this process's worker idle: handed to it,
    // claimed in the submit's commit (`Worker::dispatch`), which wakes it.
    let dispatched = match (&*runs, services.local_worker()) {
        ([run], Some(worker)) => worker.dispatch(run, now).await?.map(|one| vec![one]),
        _ => None,
    };
    let woken = dispatched.is_some();
    let queued = match dispatched {
        Some(queued) => queued,
        None => services.db.submit_runs(runs, now).await?,
    };
    for (span, (id, new)) in spans.iter().zip(&queued) {
        span.record("run_id", id.as_str());
        span.record("created", *new);
    }
    let mut created = 0;
    for (run, (_, new)) in runs.iter().zip(&queued) {
        if *new {
            created += 1;
            let tenant = services.metrics.tenant(&services.db, &run.tenant_id).await;
            services.metrics.submitted(&tenant, &run.module_name);
        }
    }
    // One run wakes one idle slot: waking them all sent every other slot
    // into a claim transaction that found nothing (three statements and
    // the writer's turn, for a run already taken). More runs wake all, and
    // the first to claim takes runs for the others (`Worker::claim`).
    match created {
        _ if woken => {} // `Worker::dispatch` woke what it had to
        0 => {}
        1 => services.work_available.notify_one(),
        _ => services.work_available.notify_waiters(),
    }
    Ok(queued)
}
