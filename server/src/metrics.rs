//! `/metrics`: this process's metrics through the Prometheus project's
//! `prometheus-client`, served as OpenMetrics to a scraper that asks for it
//! (Prometheus does) and as the Prometheus text format otherwise.
//!
//! Every label takes a bounded set of values, so a tenant that uploads ten
//! thousand modules cannot make Prometheus hold ten thousand series:
//!
//! - `tenant`: a tenant's name; past `[server] metrics_tenants` names, `other`.
//! - `module`: a module's name; past `[server] metrics_modules` (tenant,
//!   module) pairs, `other` (see [`LabelCap`]).
//! - `state`: a [`RunState`], or `retry` for an attempt that will be retried.
//! - `worker`: this process's worker id (one value per process).
//! - `route`: the route's path template (`/v1/runs/{id}`), never the raw
//!   path; `unmatched` for requests no route took.
//! - `interface`, `function`, `error`: a host call's WIT interface,
//!   function and error case (`ok` on success), all fixed by the WIT.
//! - `store`, `source`: an object store or SQL source label, which only
//!   the operator's configuration names (a label a task asked for without
//!   its grant is never one); `statement`: a statement's first keyword from
//!   a fixed list (`caisson_host_api::observe::statement_kind`).
//!
//! No label carries a secret: tokens, passwords and URLs never become
//! label values (the secrets test in `tests/all/security.rs` reads the
//! exposition).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use caisson_host_api::observe::{HostCall, HostCallSink};

use crate::model::RunState;
use crate::store::{Db, DbError};

/// What a capped label reads past its cap.
pub const OTHER: &str = "other";
/// Default for `[server] metrics_modules`.
pub const DEFAULT_MODULE_LABELS: usize = 100;
/// Default for `[server] metrics_tenants`.
pub const DEFAULT_TENANT_LABELS: usize = 100;

/// The `Content-Type` of an OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Bounds, in seconds, for durations from a millisecond to an hour: task
/// loads and short runs at the low end, long runs and late starts at the
/// high end.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
    3600.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(seconds_histogram as fn() -> Histogram)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    tenant: String,
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    tenant: String,
    module: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DutyLabel {
    duty: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostCallLabels {
    interface: &'static str,
    function: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    source: String,
    statement: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SqlSourceLabel {
    source: String,
}

/// The host calls of every run in this process, counted as each returns
/// (the sink of `caisson_host_api::observe`). One set per process, as the
/// host's hook is; every [`Metrics`] registry shows it.
#[derive(Debug)]
struct HostCalls {
    calls: Family<HostCallLabels, Counter>,
    bytes_read: Family<StoreLabel, Counter>,
    bytes_written: Family<StoreLabel, Counter>,
    statements: Family<StatementLabels, Counter>,
    statement_seconds: Histograms<SqlSourceLabel>,
}

static HOST_CALLS: LazyLock<Arc<HostCalls>> = LazyLock::new(|| {
    let calls = Arc::new(HostCalls {
        calls: Family::default(),
        bytes_read: Family::default(),
        bytes_written: Family::default(),
        statements: Family::default(),
        statement_seconds: histograms(),
    });
    caisson_host_api::observe::set_sink(calls.clone());
    calls
});

impl HostCallSink for HostCalls {
    fn host_call(&self, call: &HostCall<'_>) {
        self.calls
            .get_or_create(&HostCallLabels {
                interface: call.interface,
                function: call.function,
                error: call.error.unwrap_or("ok"),
            })
            .inc();
        let Some(label) = call.label else {
            return;
        };
        if call.interface == "objects" {
            let store = StoreLabel {
                store: label.to_owned(),
            };
            if call.bytes_read > 0 {
                self.bytes_read
                    .get_or_create(&store)
                    .inc_by(call.bytes_read);
            }
            if call.bytes_written > 0 {
                self.bytes_written
                    .get_or_create(&store)
                    .inc_by(call.bytes_written);
            }
        } else if let Some(statement) = call.statement {
            self.statements
                .get_or_create(&StatementLabels {
                    source: label.to_owned(),
                    statement,
                })
                .inc();
            self.statement_seconds
                .get_or_create(&SqlSourceLabel {
                    source: label.to_owned(),
                })
                .observe(call.elapsed.as_secs_f64());
        }
    }
}

/// Where a worker found the task it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already loaded in this process: nothing fetched or compiled.
    Memory,
    /// Compiled code read back from the runtime's cache directory.
    Disk,
    /// Compiled now (a compile-cache miss).
    Compiled,
}

impl LoadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadSource::Memory => "memory",
            LoadSource::Disk => "disk",
            LoadSource::Compiled => "compiled",
        }
    }
}

/// Why a run went back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Its attempt failed and it has retries left.
    Retry,
    /// Its worker shut down and handed it back.
    HandedBack,
}

/// A busy worker slot, from [`Metrics::slot_busy`].
#[must_use]
pub struct BusySlot(Gauge);

impl Drop for BusySlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Requeue {
    fn as_str(self) -> &'static str {
        match self {
            Requeue::Retry => "retry",
            Requeue::HandedBack => "handed_back",
        }
    }
}

/// Gives the first `cap` distinct keys their own label value and every
/// later one [`OTHER`]; a key seen before keeps its value.
#[derive(Debug)]
pub struct LabelCap {
    cap: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelCap {
    pub fn new(cap: usize) -> Self {
        LabelCap {
            cap,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Whether `key` has (or now gets) its own label value.
    pub fn admit(&self, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(key) {
            return true;
        }
        if seen.len() < self.cap {
            seen.insert(key.to_string());
            return true;
        }
        false
    }

    /// `value` if `key` is admitted, else [`OTHER`].
    fn label(&self, key: &str, value: &str) -> String {
        if self.admit(key) {
            value.to_string()
        } else {
            OTHER.to_string()
        }
    }
}

/// This process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tenant_cap: LabelCap,
    module_cap: LabelCap,
    /// Tenant names by id: runs carry the id, operators read the name.
    tenant_names: Mutex<HashMap<String, String>>,

    submitted: Family<RunLabels, Counter>,
    started: Family<RunLabels, Counter>,
    attempts_finished: Family<OutcomeLabels, Counter>,
    runs_finished: Family<OutcomeLabels, Counter>,
    requeued: Family<ReasonLabel, Counter>,
    leases_lost: Family<WorkerLabel, Counter>,
    leases_expired: Counter,
    trigger_to_start: Histograms<TenantLabel>,
    run_seconds: Histograms<RunLabels>,
    load_seconds: Histograms<SourceLabel>,
    module_loads: Family<SourceLabel, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Histograms<RouteLabel>,
    slots: Family<WorkerLabel, Gauge>,
    slots_busy: Family<WorkerLabel, Gauge>,
    restarts: Family<DutyLabel, Counter>,
    schedule_lag: Histogram,
    scheduler_pass: Gauge<f64, AtomicU64>,
    // Read from the store at each scrape.
    runs_by_state: Family<StateLabel, Gauge>,
    queue_depth: Gauge,
    queue_oldest: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_TENANT_LABELS, DEFAULT_MODULE_LABELS)
    }
}

impl Metrics {
    /// Metrics whose `tenant` label names at most `tenants` tenants and
    /// whose `module` label names at most `modules` (tenant, module) pairs.
    pub fn new(tenants: usize, modules: usize) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            tenant_cap: LabelCap::new(tenants),
            module_cap: LabelCap::new(modules),
            tenant_names: Mutex::new(HashMap::new()),
            submitted: Family::default(),
            started: Family::default(),
            attempts_finished: Family::default(),
            runs_finished: Family::default(),
            requeued: Family::default(),
            leases_lost: Family::default(),
            leases_expired: Counter::default(),
            trigger_to_start: histograms(),
            run_seconds: histograms(),
            load_seconds: histograms(),
            module_loads: Family::default(),
            http_requests: Family::default(),
            http_seconds: histograms(),
            slots: Family::default(),
            slots_busy: Family::default(),
            restarts: Family::default(),
            schedule_lag: seconds_histogram(),
            scheduler_pass: Gauge::default(),
            runs_by_state: Family::default(),
            queue_depth: Gauge::default(),
            queue_oldest: Gauge::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        // Series with a fixed set of label values start at 0, so that they
        // are in the exposition (and rates over them exist) before the
        // first event.
        for reason in [Requeue::Retry, Requeue::HandedBack] {
            let _ = m.requeued.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for duty in ["scheduler", "worker"] {
            let _ = m.restarts.get_or_create(&DutyLabel { duty });
        }
        for source in [LoadSource::Memory, LoadSource::Disk, LoadSource::Compiled] {
            let _ = m.module_loads.get_or_create(&SourceLabel {
                source: source.as_str(),
            });
        }
        // Counters are registered without `_total`: the encoder adds it.
        registry.register(
            "caisson_runs",
            "Runs in the database, by state (all processes).",
            m.runs_by_state.clone(),
        );
        registry.register(
            "caisson_queue_depth",
            "Runs waiting for a worker, including retries waiting out their backoff (all processes).",
            m.queue_depth.clone(),
        );
        registry.register(
            "caisson_queue_oldest_age_seconds",
            "How long the oldest runnable queued run has waited to start (all processes); 0 with none.",
            m.queue_oldest.clone(),
        );
        registry.register(
            "caisson_runs_submitted",
            "Runs queued through this process: the API, schedules and workflow steps.",
            m.submitted.clone(),
        );
        registry.register(
            "caisson_attempts_started",
            "Attempts this process's workers started.",
            m.started.clone(),
        );
        registry.register(
            "caisson_attempts_finished",
            "Attempts this process's workers finished, by outcome; `retry` goes back to the queue.",
            m.attempts_finished.clone(),
        );
        registry.register(
            "caisson_runs_finished",
            "Runs this process's workers brought to a final state, by state.",
            m.runs_finished.clone(),
        );
        registry.register(
            "caisson_runs_requeued",
            "Runs this process's workers put back in the queue, by reason.",
            m.requeued.clone(),
        );
        registry.register(
            "caisson_leases_lost",
            "Runs this process's workers found taken from them (the lease had expired).",
            m.leases_lost.clone(),
        );
        registry.register(
            "caisson_leases_expired",
            "Runs this process's scheduler found with an expired lease (a worker died or stalled), re-queued or ended.",
            m.leases_expired.clone(),
        );
        registry.register(
            "caisson_trigger_to_start_seconds",
            "From a run becoming runnable (submitted, fired, or its retry backoff over) to a worker starting it.",
            m.trigger_to_start.clone(),
        );
        registry.register(
            "caisson_run_duration_seconds",
            "Wall time of attempts, load and instantiation included.",
            m.run_seconds.clone(),
        );
        registry.register(
            "caisson_task_load_seconds",
            "Fetching and compiling or loading a task, by where it was found.",
            m.load_seconds.clone(),
        );
        registry.register(
            "caisson_module_loads",
            "Task loads by where the compiled code was found: `memory` and `disk` are compile-cache hits, `compiled` a miss.",
            m.module_loads.clone(),
        );
        registry.register(
            "caisson_http_requests",
            "API requests by route template and status.",
            m.http_requests.clone(),
        );
        registry.register(
            "caisson_http_request_duration_seconds",
            "Time to the start of the response, by route template.",
            m.http_seconds.clone(),
        );
        registry.register(
            "caisson_worker_slots",
            "Worker slots in this process.",
            m.slots.clone(),
        );
        registry.register(
            "caisson_worker_slots_busy",
            "Worker slots in this process running an attempt.",
            m.slots_busy.clone(),
        );
        registry.register(
            "caisson_duty_restarts",
            "Background duties (scheduler, worker slots) restarted after a panic or an error.",
            m.restarts.clone(),
        );
        registry.register(
            "caisson_schedule_fire_lag_seconds",
            "How late the scheduler fired a schedule, from its due time.",
            m.schedule_lag.clone(),
        );
        registry.register(
            "caisson_scheduler_last_pass_timestamp_seconds",
            "When this process's scheduler last finished a pass (Unix time).",
            m.scheduler_pass.clone(),
        );
        let host = &*HOST_CALLS;
        registry.register(
            "caisson_host_calls",
            "Tasks' calls of the objects and sql interfaces, by function and error case (`ok` when none).",
            host.calls.clone(),
        );
        registry.register(
            "caisson_object_bytes_read",
            "Bytes tasks read from each object store through get, get-range and read-many.",
            host.bytes_read.clone(),
        );
        registry.register(
            "caisson_object_bytes_written",
            "Bytes tasks wrote to each object store through put and writers.",
            host.bytes_written.clone(),
        );
        registry.register(
            "caisson_sql_statements",
            "SQL statements tasks ran (query, cursor, execute), by source and first keyword.",
            host.statements.clone(),
        );
        registry.register(
            "caisson_sql_statement_duration_seconds",
            "Time to a statement's answer (a cursor's first rows), by source.",
            host.statement_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The label for tenant `id`: its name, looked up in the store the
    /// first time (`other` past the cap).
    pub async fn tenant(&self, db: &Db, id: &str) -> String {
        let known = self
            .tenant_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        let name = match known {
            Some(name) => name,
            None => {
                if let Err(e) = self.learn_tenants(db).await {
                    tracing::debug!("could not read tenant names for metrics: {e}");
                }
                let names = self.tenant_names.lock().unwrap_or_else(|e| e.into_inner());
                // A tenant the store does not know (yet): its opaque id.
                names.get(id).cloned().unwrap_or_else(|| id.to_string())
            }
        };
        self.tenant_cap.label(&name, &name)
    }

    async fn learn_tenants(&self, db: &Db) -> Result<(), DbError> {
        let tenants = db.list_tenants().await?;
        let mut names = self.tenant_names.lock().unwrap_or_else(|e| e.into_inner());
        names.extend(tenants);
        Ok(())
    }

    /// The `module` label for `module` of the tenant labelled `tenant`.
    pub fn module(&self, tenant: &str, module: &str) -> String {
        self.module_cap
            .label(&format!("{tenant}\0{module}"), module)
    }

    pub fn submitted(&self, tenant: &str, module: &str) {
        let labels = RunLabels {
            tenant: tenant.to_string(),
            module: self.module(tenant, module),
        };
        self.submitted.get_or_create(&labels).inc();
    }

    /// A worker started an attempt whose run became runnable `waited` ago.
    pub fn started(&self, tenant: &str, module: &str, waited: Duration) {
        let labels = RunLabels {
            tenant: tenant.to_string(),
            module: self.module(tenant, module),
        };
        self.started.get_or_create(&labels).inc();
        self.trigger_to_start
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .observe(waited.as_secs_f64());
    }

    /// An attempt ended after `elapsed`: the run is now in `state`, or
    /// back in the queue for a retry when `state` is `Queued`.
    pub fn finished(&self, tenant: &str, module: &str, state: RunState, elapsed: Duration) {
        let module = self.module(tenant, module);
        let outcome = OutcomeLabels {
            tenant: tenant.to_string(),
            module: module.clone(),
            state: match state {
                RunState::Queued => "retry",
                state => state.as_str(),
            },
        };
        self.attempts_finished.get_or_create(&outcome).inc();
        if state == RunState::Queued {
            self.requeued(Requeue::Retry);
        } else {
            self.runs_finished.get_or_create(&outcome).inc();
        }
        self.run_seconds
            .get_or_create(&RunLabels {
                tenant: tenant.to_string(),
                module,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn requeued(&self, reason: Requeue) {
        self.requeued
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Worker `worker` found that its lease on a run had been taken.
    pub fn lease_lost(&self, worker: &str) {
        self.leases_lost
            .get_or_create(&WorkerLabel {
                worker: worker.to_string(),
            })
            .inc();
    }

    /// The scheduler found `n` runs whose lease had expired.
    pub fn leases_expired(&self, n: u64) {
        self.leases_expired.inc_by(n);
    }

    /// Fetching, compiling (or loading from cache) and linking a task.
    pub fn loaded(&self, source: LoadSource, elapsed: Duration) {
        let labels = SourceLabel {
            source: source.as_str(),
        };
        self.module_loads.get_or_create(&labels).inc();
        self.load_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Worker `worker` has `slots` slots.
    pub fn worker_slots(&self, worker: &str, slots: usize) {
        let labels = WorkerLabel {
            worker: worker.to_string(),
        };
        self.slots.get_or_create(&labels).set(slots as i64);
        self.slots_busy.get_or_create(&labels).set(0);
        let _ = self.leases_lost.get_or_create(&labels);
    }

    /// One of `worker`'s slots took a run; it counts as busy until the
    /// guard drops (also when the slot panics).
    pub fn slot_busy(&self, worker: &str) -> BusySlot {
        let gauge = self.slots_busy.get_or_create_owned(&WorkerLabel {
            worker: worker.to_string(),
        });
        gauge.inc();
        BusySlot(gauge)
    }

    /// An API request to `route` (a path template, or `None` when no
    /// route matched) answered `status` after `elapsed`.
    pub fn http_request(&self, method: &str, route: Option<&str>, status: u16, elapsed: Duration) {
        // Methods are what the client sends: only the ones the API serves
        // get their own value.
        let method = match method {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => OTHER,
        };
        let route = route.unwrap_or("unmatched").to_string();
        self.http_seconds
            .get_or_create(&RouteLabel {
                method,
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.http_requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// The scheduler fired a schedule `lag` after it was due.
    pub fn schedule_fired(&self, lag: Duration) {
        self.schedule_lag.observe(lag.as_secs_f64());
    }

    /// The scheduler finished a pass at `unix_ms`.
    pub fn scheduler_pass(&self, unix_ms: i64) {
        self.scheduler_pass.set(unix_ms as f64 / 1000.0);
    }

    /// The background duty `duty` stopped (a panic, an error, or an
    /// unexpected return) and was restarted.
    pub fn restarted(&self, duty: &'static str) {
        self.restarts.get_or_create(&DutyLabel { duty }).inc();
    }

    /// How often `duty` was restarted.
    pub fn restarts(&self, duty: &'static str) -> u64 {
        self.restarts
            .get(&DutyLabel { duty })
            .map_or(0, |c| c.get())
    }

    /// Reads what the store knows (runs by state, the queue) into the
    /// gauges, as of `now_ms`.
    pub async fn observe_store(&self, db: &Db, now_ms: i64) -> Result<(), DbError> {
        let by_state = db.count_by_state().await?;
        let oldest = db.oldest_runnable(now_ms).await?;
        self.observe_counts(&by_state, oldest.map(|t| (now_ms - t).max(0)));
        // New tenants get their names before their first run ends.
        self.learn_tenants(db).await
    }

    /// Sets the store's gauges: `by_state` runs per state, and the oldest
    /// runnable queued run waiting for `oldest_ms`.
    pub fn observe_counts(&self, by_state: &[(RunState, i64)], oldest_ms: Option<i64>) {
        for state in [
            RunState::Queued,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
            RunState::TimedOut,
        ] {
            let n = by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.runs_by_state
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(n);
            if state == RunState::Queued {
                self.queue_depth.set(n);
            }
        }
        self.queue_oldest
            .set(oldest_ms.unwrap_or(0) as f64 / 1000.0);
    }

    /// The exposition: OpenMetrics if `openmetrics`, else the Prometheus
    /// text format.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and the registry holds only
        // well-formed metrics.
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        out
    }
}

/// Whether an `Accept` header asks for OpenMetrics before the text format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_label_is_capped() {
        let metrics = Metrics::new(10, 50);
        for i in 0..10_000 {
            let module = format!("module-{i}");
            metrics.submitted("acme", &module);
            metrics.started("acme", &module, Duration::from_millis(5));
            metrics.finished(
                "acme",
                &module,
                RunState::Succeeded,
                Duration::from_millis(5),
            );
        }
        let text = metrics.render(false);
        let modules: HashSet<&str> = text
            .lines()
            .filter_map(|l| l.split_once("module=\"").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once('"').map(|(m, _)| m))
            .collect();
        // 50 names of their own, and `other`.
        assert_eq!(modules.len(), 51, "{modules:?}");
        assert!(modules.contains(OTHER));
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("module=\""))
            .count();
        // Per (tenant, module) value: submitted, started, finished twice
        // (attempts and runs), and a histogram of 16 buckets, +Inf, sum and
        // count.
        assert_eq!(series, 51 * (4 + SECONDS_BUCKETS.len() + 3), "{text}");
        // The ones that are folded are still counted.
        assert!(
            text.contains("caisson_runs_submitted_total{tenant=\"acme\",module=\"other\"} 9950"),
            "{text}"
        );
    }

    #[test]
    fn a_module_keeps_its_label_once_given() {
        let cap = LabelCap::new(2);
        assert!(cap.admit("a"));
        assert!(cap.admit("b"));
        assert!(!cap.admit("c"));
        assert!(cap.admit("a"));
    }

    #[test]
    fn both_formats_encode() {
        let metrics = Metrics::default();
        metrics.observe_counts(&[(RunState::Queued, 3)], Some(1500));
        metrics.http_request("BREW", None, 404, Duration::from_millis(1));
        let text = metrics.render(false);
        assert!(text.contains("caisson_queue_depth 3"), "{text}");
        assert!(
            text.contains("caisson_queue_oldest_age_seconds 1.5"),
            "{text}"
        );
        assert!(
            text.contains(
                "caisson_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1"
            ),
            "{text}"
        );
        let open = metrics.render(true);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("caisson_runs{state=\"queued\"} 3"), "{open}");
    }
}
