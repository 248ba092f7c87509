//! Runs and their leases: submit, read and list runs; claim one under a
//! lease, renew it, report the attempt; re-queue runs whose lease expired.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Row};

use super::db::{Db, DbKind, corrupt, new_id};
use super::error::DbError;
use super::groups::{GroupRow, Grouped, RowValues, RowsStatement, RowsText, ValuesText};
use super::logs::{LOG_ROWS_PER_INSERT, bind_log_rows, log_rows_insert};
use super::query::{AnyQuery, Binder, built, in_list};
use super::write_tx::{Statement, WriteTx};

/// The PostgreSQL channel a cancel request is announced on, with the run's
/// id as the payload (see `services::cancel`).
pub const CANCEL_CHANNEL: &str = "caisson_cancels";
use super::flows::Settled;
use crate::model::columns::{Flag, MaybeFlag};
use crate::model::{NewLogLine, RunSpec, RunState};

/// A stored run: its spec, and where it is in its life.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunRecord {
    pub id: String,
    #[sqlx(flatten)]
    pub spec: RunSpec,
    #[sqlx(try_from = "String")]
    pub state: RunState,
    pub attempts: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub worker_id: Option<String>,
    pub lease_until: Option<i64>,
    #[sqlx(try_from = "Flag")]
    pub cancel_requested: bool,
    /// The inline output. `None` also in a record read for a list (see
    /// `has_output`).
    #[sqlx(default)]
    pub output: Option<Vec<u8>>,
    /// Where a large output is kept in the artifact store, instead of `output`.
    pub output_key: Option<String>,
    /// Whether the run has an output, inline or in the artifact store,
    /// whether or not this record holds it.
    #[sqlx(try_from = "Flag")]
    pub has_output: bool,
    pub error: Option<String>,
    #[sqlx(try_from = "MaybeFlag")]
    pub retryable: Option<bool>,
}

/// Where a submission's runs are held to their tenant's `max_queued_runs`.
pub(super) enum QueueRoom {
    /// SQLite: the quota and the queued runs, read once under the tenant's
    /// lock by [`Db::submit_runs`] and kept up to date as the batch inserts.
    /// `key`: an idempotency key looked up in the same read, and the run
    /// that holds it, if any, for [`Db::insert_run`] to take instead of a
    /// read of its own.
    Counted {
        limit: i64,
        queued: i64,
        key: Option<(String, Option<String>)>,
    },
    /// PostgreSQL: by the insert's trigger (migrations 0012 and 0017), which takes
    /// the tenant's lock only then, so the lock is held from the insert to
    /// the commit rather than over the count and the insert too.
    InTheInsert,
}

impl QueueRoom {
    /// The room a submission of the tenant's runs works in: on SQLite, its
    /// quota and queued runs read under its lock, with the run holding
    /// `key` (the first run's idempotency key) if one is given, so that a
    /// keyed submission's lookup costs no trip of its own; on PostgreSQL
    /// nothing to read.
    pub(super) async fn of<'t>(
        tx: &mut WriteTx<'t>,
        kind: DbKind,
        tenant_id: &'t str,
        key: Option<&'t str>,
    ) -> Result<QueueRoom, DbError> {
        if kind == DbKind::Postgres {
            return Ok(QueueRoom::InTheInsert);
        }
        // A no-op write takes the tenant's lock (as [`Db::lock_tenant`]);
        // the count is its row's `queued_runs` (migration 0010's triggers).
        let rows = tx
            .fetch_all(
                "UPDATE tenants SET max_queued_runs = max_queued_runs WHERE id = $1 \
                 RETURNING max_queued_runs, queued_runs, \
                 (SELECT r.id FROM runs r WHERE r.tenant_id = $1 AND r.idempotency_key = $2) \
                 AS keyed_run",
                move |q| q.bind(tenant_id).bind(key),
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(DbError::other(format!("no tenant {tenant_id}")));
        };
        Ok(QueueRoom::Counted {
            limit: row.try_get("max_queued_runs")?,
            queued: row.try_get("queued_runs")?,
            key: match key {
                Some(key) => Some((key.to_string(), row.try_get("keyed_run")?)),
                None => None,
            },
        })
    }

    /// The run holding `key`, if the room's read looked it up: `None` when
    /// it did not (the caller reads it), `Some(None)` when no run holds it.
    /// Taken once: the batch's inserts change the answer.
    fn take_key(&mut self, key: &str) -> Option<Option<String>> {
        match self {
            QueueRoom::Counted { key: looked_up, .. }
                if looked_up.as_ref().is_some_and(|(k, _)| k == key) =>
            {
                looked_up.take().map(|(_, run)| run)
            }
            _ => None,
        }
    }

    /// Counts one more queued run, or refuses it past the quota.
    fn take_one(&mut self) -> Result<(), DbError> {
        match self {
            QueueRoom::Counted { limit, queued, .. } => {
                if *queued >= *limit {
                    return Err(DbError::QuotaExceeded {
                        quota: "max_queued_runs",
                        limit: *limit,
                    });
                }
                *queued += 1;
                Ok(())
            }
            QueueRoom::InTheInsert => Ok(()),
        }
    }

    /// The quota error the insert's trigger (migrations 0012 and 0017) raises, as
    /// [`DbError::QuotaExceeded`]; any other error as it is.
    fn refused_by_trigger(e: DbError) -> DbError {
        const MARK: &str = "caisson_quota max_queued_runs ";
        let limit = match &e {
            DbError::Other(source) => source
                .downcast_ref::<sqlx::Error>()
                .and_then(sqlx::Error::as_database_error)
                .and_then(|d| d.message().strip_prefix(MARK))
                .and_then(|limit| limit.trim().parse().ok()),
            _ => None,
        };
        match limit {
            Some(limit) => DbError::QuotaExceeded {
                quota: "max_queued_runs",
                limit,
            },
            None => e,
        }
    }
}

/// [`Db::claim_writes`]'s stamp of the claimed run's tenant, written only
/// if the claim took the run; `$count` is what else it sets on the row.
macro_rules! claim_stamp_sql {
    ($count:literal) => {
        concat!(
            "UPDATE tenants SET last_claim_at = $2",
            $count,
            " WHERE id = $1 AND EXISTS \
             (SELECT 1 FROM runs WHERE id = $3 AND state = 'running' AND worker_id = $4)"
        )
    };
}

impl Db {
    /// The run `tenant_id` submitted with idempotency `key`, if any.
    async fn run_by_key<'t>(
        tx: &mut WriteTx<'t>,
        tenant_id: &'t str,
        key: &'t str,
    ) -> Result<Option<String>, DbError> {
        let rows = tx
            .fetch_all(RUN_BY_KEY, move |q| q.bind(tenant_id).bind(key))
            .await?;
        rows.first()
            .map(|row| row.try_get("id"))
            .transpose()
            .map_err(DbError::from)
    }

    /// The claims' round robin: the tenant's `last_claim_at` set to `now`,
    /// and the `running` row of the claimed run's attempt. Both written
    /// only if `worker_id` holds `run_id` (in this transaction, its
    /// claim), as SQL decides: so they can go in the same trip as the
    /// claim itself, after it. The attempt's row is an upsert: a row left
    /// by an attempt number that is being reused (never expected, as
    /// release deletes its row) must not fail the claim.
    ///
    /// On PostgreSQL the tenant's row also counts the run out of its queue
    /// (a claim fires no count trigger there, migration 0017), which is
    /// exact because there only [`Db::submit_claimed`] calls this, for
    /// the run it inserted in this transaction: it is running only if
    /// this claim took it.
    ///
    /// On PostgreSQL a claim by [`Db::claim_runs`] writes the same two
    /// rows through `caisson_claims_held` (migration 0017), which a
    /// migration's text cannot share with this one: the attempt's row
    /// both write is checked on both backends by `db.rs`'s tests.
    fn claim_writes<'t>(
        kind: DbKind,
        tenant_id: String,
        run_id: String,
        worker_id: &'t str,
        now: i64,
    ) -> [Statement<'t>; 2] {
        let stamped = run_id.clone();
        [
            Statement::new(
                match kind {
                    DbKind::Sqlite => claim_stamp_sql!(""),
                    DbKind::Postgres => claim_stamp_sql!(", queued_runs = queued_runs - 1"),
                },
                move |q| q.bind(tenant_id).bind(now).bind(stamped).bind(worker_id),
            ),
            Statement::new(
                "INSERT INTO run_attempts (run_id, attempt, worker_id, started_at, state) \
                 SELECT id, attempts, $2, $3, 'running' FROM runs \
                 WHERE id = $1 AND state = 'running' AND worker_id = $2 \
                 ON CONFLICT (run_id, attempt) DO UPDATE SET worker_id = $2, started_at = $3, \
                 finished_at = NULL, state = 'running', error = NULL",
                move |q| q.bind(run_id).bind(worker_id).bind(now),
            ),
        ]
    }
}

/// The error of a run its workflow run's cancel ended before it started.
pub(super) const CANCELLED_WITH_WORKFLOW: &str =
    "cancelled with its workflow run before it started";

/// The statement that ends an attempt's row: the run's id and attempt
/// number at placeholders `run` and `attempt`, its state, end time and
/// error at `$first` onwards, in that order. One text for every end
/// (a finish, alone or in a finish's CTE, and a lost lease).
fn attempt_end_sql(run: &str, attempt: &str, first: usize) -> String {
    format!(
        "UPDATE run_attempts SET state = ${first}, finished_at = ${}, error = ${} \
         WHERE run_id = {run} AND attempt = {attempt}",
        first + 1,
        first + 2
    )
}

/// PostgreSQL: the finishes of several runs that are no workflow step's,
/// in one statement that commits itself (`store::groups`): each run's
/// update as [`Db::finish_and_claim`]'s for its outcome, its attempt's
/// end and its last log lines, the last two written only if the update
/// applied (the worker still held the run). The rows are one JSON array
/// ([`finish_row`]), and a row carries its outcome's kind and every value
/// any kind sets, so one text serves every group whatever its size, its
/// outcomes and its lines: each connection plans it only its first
/// times, where a text for each size was planned about every other call.
static FINISH_ROWS: RowsStatement = RowsStatement {
    text: RowsText::Json(concat!(
        "WITH v AS (SELECT * FROM jsonb_to_recordset($1::JSONB) AS v(id TEXT, worker_id TEXT, \
         attempt BIGINT, kind TEXT, state TEXT, output TEXT, output_key TEXT, error TEXT, \
         retryable BIGINT, not_before BIGINT, attempt_state TEXT, finished_at BIGINT, lines JSONB)), ",
        // A cancel requested while a retried attempt was failing wins, as
        // in a finish of its own: retrying would run what the user asked
        // to stop. The output comes as hex, as JSON holds no bytes.
        "r AS (UPDATE runs SET \
         state = CASE WHEN v.kind = 'retry' THEN \
         CASE WHEN runs.cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END ELSE v.state END, \
         output = CASE WHEN v.kind = 'succeeded' THEN decode(v.output, 'hex') ELSE runs.output END, \
         output_key = CASE WHEN v.kind = 'succeeded' THEN v.output_key ELSE runs.output_key END, \
         error = v.error, retryable = v.retryable, \
         finished_at = CASE WHEN v.kind = 'retry' AND runs.cancel_requested <> 1 THEN NULL \
         ELSE v.finished_at END, \
         not_before = CASE WHEN v.kind = 'retry' THEN v.not_before ELSE runs.not_before END, \
         worker_id = CASE WHEN v.kind = 'retry' THEN NULL ELSE runs.worker_id END, \
         lease_until = NULL \
         FROM v WHERE runs.id = v.id AND runs.state = 'running' AND runs.worker_id = v.worker_id \
         AND runs.attempts = v.attempt AND runs.workflow_run_id IS NULL RETURNING runs.id), ",
        "a AS (UPDATE run_attempts SET state = v.attempt_state, finished_at = v.finished_at, \
         error = v.error FROM v JOIN r ON r.id = v.id \
         WHERE run_attempts.run_id = v.id AND run_attempts.attempt = v.attempt), ",
        // Each line's `seq` is the run's last one plus its place, as
        // `log_rows_insert` numbers them.
        "l AS (INSERT INTO run_logs (run_id, seq, attempt, time, level, source, message) \
         SELECT v.id, (SELECT COALESCE(MAX(g.seq), 0) FROM run_logs g WHERE g.run_id = v.id) + x.n, \
         v.attempt, x.time, x.level, x.source, x.message FROM v JOIN r ON r.id = v.id \
         CROSS JOIN LATERAL jsonb_to_recordset(v.lines) \
         AS x(n BIGINT, time BIGINT, level TEXT, source TEXT, message TEXT)) \
         SELECT id FROM r"
    )),
    // A worker's slots finishing together.
    max: 32,
};

/// One run's row of [`FINISH_ROWS`]: its outcome's kind and values, and
/// its log lines, each numbered from 1.
fn finish_row(
    run_id: &str,
    worker_id: &str,
    attempt: i64,
    outcome: &AttemptOutcome,
    lines: &[NewLogLine],
    now: i64,
) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = (1_i64..)
        .zip(lines)
        .map(|(n, line)| {
            serde_json::json!({
                "n": n,
                "time": line.time,
                "level": line.level.as_str(),
                "source": line.source.as_str(),
                "message": line.message,
            })
        })
        .collect();
    let mut row = serde_json::json!({
        "id": run_id,
        "worker_id": worker_id,
        "attempt": attempt,
        "finished_at": now,
        "lines": lines,
    });
    let values = match outcome {
        AttemptOutcome::Succeeded { output, output_key } => serde_json::json!({
            "kind": "succeeded",
            "state": "succeeded",
            "output": hex::encode(output),
            "output_key": output_key,
            "attempt_state": "succeeded",
        }),
        AttemptOutcome::Finished {
            state,
            error,
            retryable,
        } => serde_json::json!({
            "kind": "finished",
            "state": state.as_str(),
            "error": error,
            "retryable": i64::from(*retryable),
            "attempt_state": state.as_str(),
        }),
        AttemptOutcome::Retry {
            error,
            not_before,
            timed_out,
        } => serde_json::json!({
            "kind": "retry",
            "error": error,
            "retryable": 1,
            "not_before": not_before,
            "attempt_state": if *timed_out { "timed_out" } else { "failed" },
        }),
    };
    if let (Some(row), serde_json::Value::Object(values)) = (row.as_object_mut(), values) {
        row.extend(values);
    }
    row
}

/// A claim that failed after the finish it followed had committed: logged
/// and dropped, as the finish stands and the slot claims as it looks next.
fn claim_dropped(run_id: &str, e: DbError) -> Option<Vec<Claim>> {
    tracing::warn!(
        run = run_id,
        "finished, but could not claim the next run: {e}"
    );
    None
}

/// When a lease of `lease` taken at `now` ends, in milliseconds.
fn lease_end(now: i64, lease: Duration) -> i64 {
    now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

impl RunRecord {
    /// The record [`Db::submit_runs`] writes for a new run of `spec` at
    /// `created_at`, so a submission can answer without reading it back.
    pub fn queued(id: String, spec: RunSpec, created_at: i64) -> RunRecord {
        RunRecord {
            id,
            spec,
            state: RunState::Queued,
            attempts: 0,
            created_at,
            started_at: None,
            finished_at: None,
            worker_id: None,
            lease_until: None,
            cancel_requested: false,
            output: None,
            output_key: None,
            has_output: false,
            error: None,
            retryable: None,
        }
    }
}

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct AttemptRecord {
    pub attempt: i64,
    pub worker_id: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// running | succeeded | failed | timed_out | cancelled | lost
    pub state: String,
    pub error: Option<String>,
}

/// Filters for listing runs. `None` means any.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<RunState>,
    pub module: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    pub workflow_run_id: Option<String>,
    /// Keyset pagination: runs strictly older than this (created_at, id).
    pub before: Option<(i64, String)>,
    /// Page size, clamped by the caller.
    pub limit: i64,
}

/// What a worker gets when it claims a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub run: RunRecord,
    /// The attempt number this claim is (1 for the first).
    pub attempt: i64,
}

/// What a worker asks a claim for ([`Db::claim_runs`],
/// [`Db::finish_and_claim`]).
#[derive(Debug, Clone, Copy)]
pub struct ClaimAsk<'a> {
    pub worker_id: &'a str,
    /// Each claimed run is leased until now plus this.
    pub lease: Duration,
    /// The claimed runs' memory limits together fit this.
    pub max_memory: i64,
    pub max_runs: usize,
}

/// What [`Db::finish_and_claim`] did besides the finish.
#[derive(Debug)]
pub struct Finished {
    /// What the step's end made ready, if the run is a workflow step's
    /// and ended.
    pub settled: Option<Settled>,
    /// The runs claimed in the same commit; `None` if it did not look:
    /// no claim was asked, or the run was a step whose end made another
    /// ready, which the worker starts instead.
    pub claims: Option<Vec<Claim>>,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Succeeded {
        output: Vec<u8>,
        /// Set when the output was stored in the artifact store; `output`
        /// is then empty.
        output_key: Option<String>,
    },
    /// The run is over with `state` (failed, timed_out or cancelled).
    Finished {
        state: RunState,
        error: String,
        retryable: bool,
    },
    /// Try again at `not_before`: the run goes back to `queued`.
    Retry {
        error: String,
        not_before: i64,
        timed_out: bool,
    },
}

/// Lost attempts (beyond a run's retries) after which a run whose worker
/// keeps dying fails instead of being re-queued.
const MAX_LOST_ATTEMPTS: i64 = 3;

/// The columns of `runs` a list of runs shows: not `input` or `output`,
/// which may be megabytes each, but whether there is an output. A
/// [`RunRecord`] read from them has an empty `input` and no `output`. A
/// macro so that it can be `concat!`ed into constant query texts.
macro_rules! run_summary_columns {
    () => {
        "id, tenant_id, module_name, module_version, digest, params, grants, timeout_ms, \
         memory_bytes, fuel, max_retries, backoff_ms, retry_timeouts, priority, idempotency_key, \
         state, attempts, not_before, created_at, started_at, finished_at, worker_id, lease_until, \
         cancel_requested, error, retryable, schedule_id, workflow_run_id, step_name, \
         logical_date, output_key, trace_parent, \
         CAST(CASE WHEN output IS NULL AND output_key IS NULL THEN 0 ELSE 1 END AS BIGINT) \
         AS has_output"
    };
}

/// Every column of `runs`, for a [`RunRecord`] that holds its input and output.
macro_rules! run_columns {
    () => {
        concat!(run_summary_columns!(), ", input, output")
    };
}

/// The running runs of the tenant `t` in a claim's SQL: its row's
/// `running_runs` on SQLite (kept by migration 0010's triggers), a probe of
/// `runs_by_tenant_state` on PostgreSQL (migration 0011 took them out there).
macro_rules! running_count {
    (sqlite) => {
        "t.running_runs"
    };
    (postgres) => {
        "(SELECT COUNT(*) FROM runs b WHERE b.tenant_id = t.id AND b.state = 'running')"
    };
}

/// SQLite's claim of one run. `$1` worker, `$2` lease end, `$3` now, `$4`
/// memory cap. The outer `state = 'queued'` guards against a row that
/// changed between the subquery and the update. Writers are serialised by
/// the database lock, so the plain update is already atomic.
///
/// Fair between tenants: a tenant at its `max_running_runs` is passed
/// over; of the others, the one with the fewest runs running goes first,
/// ties to the one whose last claim is oldest (round robin), and only then
/// do a run's `priority` and age count, so priority orders a tenant's own
/// runs and never puts one tenant ahead of another. PostgreSQL's
/// [`CLAIM_POSTGRES`] picks in the same order, several runs at once.
///
/// Shaped so that indexes answer it (migrations 0009 to 0011): for each
/// tenant, its running count is its row's `running_runs`, and its next run
/// the first entry of `runs_claim` (queued runs in `priority DESC,
/// created_at, id` order) that is due and fits. Only those candidates, one
/// per tenant, are sorted; the backlog never is, however long it grows.
const CLAIM_SQLITE: &str = concat!(
    "UPDATE runs SET state = 'running', worker_id = $1, lease_until = $2, \
     attempts = attempts + 1, started_at = COALESCE(started_at, $3) \
     WHERE state = 'queued' AND id = (SELECT n.id FROM (\
     SELECT t.last_claim_at, t.max_running_runs, ",
    running_count!(sqlite),
    " AS busy, \
     (SELECT q.id FROM runs q WHERE q.tenant_id = t.id AND q.state = 'queued' \
     AND q.not_before <= $3 AND q.memory_bytes <= $4 \
     ORDER BY q.priority DESC, q.created_at, q.id LIMIT 1) AS next_id FROM tenants t) c \
     JOIN runs n ON n.id = c.next_id \
     WHERE c.busy < c.max_running_runs \
     ORDER BY c.busy, c.last_claim_at, n.priority DESC, n.created_at, n.id \
     LIMIT 1) RETURNING ",
    run_columns!()
);

/// How often a claim that lost a race for a tenant's last running slot
/// is tried again before the worker waits for its next poll.
const CLAIM_TRIES: usize = 4;

/// What one claim statement took.
#[derive(Default)]
struct Taken {
    /// The claims that stand, in the order they were picked.
    runs: Vec<Claim>,
    /// Claims undone by their tenant's check: a race with another worker.
    undone: usize,
}

/// PostgreSQL: up to `$5` runs claimed in one statement, each picked in the
/// order one-run claims ([`CLAIM_SQLITE`]) would pick them, and checked
/// under each tenant's lock (`caisson_claims_held`, migrations 0016 and 0017), once
/// a tenant; `held` says whether a run's claim stands. A statement's
/// fixed cost (its plan's setup, the tenants' scan, the trip) is most of
/// a one-run claim's, so a worker claiming ahead for its slots pays it
/// once a batch (BENCHMARKS.md).
///
/// - **Fair between tenants as one-run claims are:** each tenant offers
///   its first `$5` runs in its own order, numbered from its running
///   count (`turn`: the run's place were the tenant's runs claimed one by
///   one), and those within its `max_running_runs` are taken by `turn`,
///   ties to the tenant whose last claim is oldest, then by the runs'
///   own order. So a tenant with one run running gets its second slot
///   only after every tenant with none has had its first.
/// - **Memory:** a run is taken only while the runs before it in that
///   order, and it, fit `$4` together (a running sum), so a batch never
///   promises more than the worker has.
/// - **Locks:** `SKIP LOCKED` lets concurrent claimers pass over a row
///   another transaction is claiming instead of waiting for it (and then
///   finding it taken). A tenant's offered runs that are not taken stay
///   locked until this statement commits, so a concurrent claim takes
///   the next ones meanwhile: a tenant's own order may bend under
///   concurrent claims, never the order between tenants.
/// - **The check:** the function is called once a tenant, with the
///   tenant's runs this claim took in the tenant's own order, after the
///   claim's update has taken them all (an aggregate's input is read to
///   its end first). It is volatile, so each of its statements runs in a
///   snapshot of its own and counts this batch's runs with the rest. When
///   a race took a tenant past its quota, exactly the excess is undone,
///   from the end of that order: the tenant's last runs in its order.
/// - **Each tenant's running count** is taken once: `OFFSET 0` keeps the
///   tenants' subquery from being merged into the query around it, where
///   the count was copied into each place that reads `busy` and taken
///   again in each (three times for a claim of two runs).
/// - **The update** finds the picked rows by `ctid`, which their row
///   locks keep where they are until the commit: one fetch a run. Joined
///   on `id` instead, the planner, with statistics from when the queue was
///   near empty, scanned the whole queue for them on every claim
///   (BENCHMARKS.md). A row that another transaction changed after this
///   statement's snapshot is not found by it, so not claimed: it stays
///   queued for the next claim.
const CLAIM_POSTGRES: &str = concat!(
    "WITH pick AS MATERIALIZED (SELECT f.row_ref FROM (\
     SELECT p.row_ref, SUM(p.memory_bytes) OVER (ORDER BY p.turn, p.last_claim_at, \
     p.priority DESC, p.created_at, p.id) AS memory FROM (\
     SELECT q.id, q.row_ref, q.priority, q.created_at, q.memory_bytes, c.last_claim_at, c.max_running_runs, \
     c.busy + ROW_NUMBER() OVER (PARTITION BY c.tenant \
     ORDER BY q.priority DESC, q.created_at, q.id) AS turn \
     FROM (SELECT t.id AS tenant, t.last_claim_at, t.max_running_runs, ",
    running_count!(postgres),
    " AS busy FROM tenants t OFFSET 0) c \
     CROSS JOIN LATERAL (SELECT q.ctid AS row_ref, q.id, q.priority, q.created_at, q.memory_bytes FROM runs q \
     WHERE q.tenant_id = c.tenant AND q.state = 'queued' AND q.not_before <= $3 \
     AND q.memory_bytes <= $4 ORDER BY q.priority DESC, q.created_at, q.id \
     LIMIT $5 FOR UPDATE SKIP LOCKED) q \
     WHERE c.busy < c.max_running_runs) p \
     WHERE p.turn <= p.max_running_runs \
     ORDER BY p.turn, p.last_claim_at, p.priority DESC, p.created_at, p.id LIMIT $5) f \
     WHERE f.memory <= $4), \
     c AS (UPDATE runs SET state = 'running', worker_id = $1, lease_until = $2, \
     attempts = attempts + 1, started_at = COALESCE(started_at, $3) \
     FROM pick WHERE runs.ctid = pick.row_ref AND runs.state = 'queued' RETURNING ",
    run_columns!(),
    "), h AS (SELECT c.tenant_id, caisson_claims_held(\
     array_agg(c.id ORDER BY c.priority DESC, c.created_at, c.id), c.tenant_id, $1, $3) AS undone \
     FROM c GROUP BY c.tenant_id) \
     SELECT c.*, NOT (c.id = ANY (h.undone)) AS held FROM c JOIN h ON h.tenant_id = c.tenant_id \
     ORDER BY c.priority DESC, c.created_at, c.id"
);

/// [`Db::submit_claimed`]'s claim of the run it has just inserted (`$1`):
/// the claim's own conditions on that one row (still queued, due, fits
/// `$5`; its tenant under `max_running_runs`, which the tenant's lock
/// holds still) and no other run waiting that a claim could pick first
/// (`$alone`). `$2` worker, `$3` lease end, `$4` now.
macro_rules! claim_submitted_sql {
    ($busy:expr, $alone:literal) => {
        concat!(
            "UPDATE runs SET state = 'running', worker_id = $2, lease_until = $3, \
             attempts = attempts + 1, started_at = COALESCE(started_at, $4) \
             WHERE id = $1 AND state = 'queued' AND not_before <= $4 AND memory_bytes <= $5 \
             AND EXISTS (SELECT 1 FROM tenants t WHERE t.id = runs.tenant_id AND ",
            $busy,
            " < t.max_running_runs) AND ",
            $alone,
            " RETURNING ",
            run_columns!()
        )
    };
}

/// SQLite: no tenant has another run queued, due or not, read from the
/// tenants' counts (migration 0010) rather than from an index of the
/// queue by time, which every run entered and left (migration 0013
/// dropped it). A run waiting out a backoff sends a new submission down
/// the ordinary claim, which passes over it.
const CLAIM_SUBMITTED_SQLITE: &str = claim_submitted_sql!(
    running_count!(sqlite),
    "NOT EXISTS (SELECT 1 FROM tenants o WHERE o.queued_runs > (o.id = runs.tenant_id))"
);

/// PostgreSQL: no other run queued and due, over `runs_queue`.
const CLAIM_SUBMITTED_POSTGRES: &str = claim_submitted_sql!(
    running_count!(postgres),
    "NOT EXISTS (SELECT 1 FROM runs o WHERE o.state = 'queued' \
     AND o.not_before <= $4 AND o.id <> $1)"
);

/// The start of a new run's insert: its columns, for
/// [`new_run_values`]'s values.
macro_rules! insert_run_into {
    () => {
        "INSERT INTO runs (id, tenant_id, module_name, module_version, digest, \
         input, params, grants, timeout_ms, memory_bytes, fuel, max_retries, backoff_ms, \
         retry_timeouts, priority, idempotency_key, state, attempts, not_before, created_at, \
         cancel_requested, schedule_id, workflow_run_id, step_name, logical_date, trace_parent) "
    };
}

/// A new run's values, as [`bind_new_run`] binds them.
macro_rules! new_run_values {
    () => {
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
         'queued', 0, $17, $18, 0, $19, $20, $21, $22, $23"
    };
}

/// What a PostgreSQL insert of new runs does with a key one of the
/// tenant's runs already holds: insert nothing for that run, and return
/// only the ids inserted.
macro_rules! on_key_conflict {
    () => {
        " ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id"
    };
}

/// PostgreSQL: [`INSERT_KEYED`] for several runs in one statement. At most
/// [`NEW_RUNS_MAX`] runs: 23 values a run.
const NEW_RUNS: ValuesText = ValuesText {
    head: concat!(insert_run_into!(), "VALUES "),
    row: push_new_run_row,
    tail: on_key_conflict!(),
};

/// The most runs one [`NEW_RUNS`] statement inserts.
const NEW_RUNS_MAX: usize = 64;

/// [`NEW_RUNS`] for concurrent submissions inserted together
/// (`store::groups`).
static INSERT_KEYED_ROWS: RowsStatement = RowsStatement {
    text: RowsText::Values(NEW_RUNS),
    max: NEW_RUNS_MAX,
};

/// How many values [`bind_new_run`] binds.
const NEW_RUN_BINDS: usize = 23;

/// Appends a new run's values (`(`[`new_run_values`]`)`) as row `row`
/// (from 0) of a multi-row insert: its placeholders numbered after the
/// rows before it, for [`bind_new_run`] called once for each row in order.
fn push_new_run_row(sql: &mut String, row: usize) {
    use std::fmt::Write;
    if row > 0 {
        sql.push_str(", ");
    }
    sql.push('(');
    let mut rest = new_run_values!();
    while let Some(at) = rest.find('$') {
        sql.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - at - 1);
        // Digits only, and few: the test below holds the text to
        // `new_run_values!`'s.
        let number: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or_default();
        let _ = write!(sql, "${}", number + row * NEW_RUN_BINDS);
        rest = &rest[at + 1 + digits..];
    }
    sql.push_str(rest);
    sql.push(')');
}

/// SQLite: a new run's insert that checks what [`QueueRoom`] and the key's
/// lookup check, itself: the tenant under `max_queued_runs` (its row's
/// count, kept by migration 0010's triggers) and no run of the tenant
/// holding the key. Nothing is inserted (and no row returned) otherwise,
/// so the statements that go with it hang on it in SQL, and nothing needs
/// reading before it: a refusal is explained after the commit.
const INSERT_CHECKED: &str = concat!(
    insert_run_into!(),
    "SELECT ",
    new_run_values!(),
    " WHERE (SELECT t.queued_runs < t.max_queued_runs FROM tenants t WHERE t.id = $2) \
     AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.tenant_id = $2 AND r.idempotency_key = $16) \
     RETURNING id"
);

/// Binds `run`'s values, as run `id` submitted at `now`, to
/// [`new_run_values`].
///
/// `run` is borrowed or owned: the binder of a run inserted in a group
/// outlives its caller's borrow.
fn bind_new_run<R: std::borrow::Borrow<RunSpec> + Send>(
    id: String,
    run: R,
    now: i64,
) -> Result<impl FnOnce(AnyQuery) -> AnyQuery + Send, DbError> {
    let params =
        serde_json::to_string(&run.borrow().params).map_err(|e| DbError::Other(e.into()))?;
    let grants =
        serde_json::to_string(&run.borrow().grants).map_err(|e| DbError::Other(e.into()))?;
    Ok(move |q: AnyQuery| {
        let run = run.borrow();
        q.bind(id)
            .bind(&run.tenant_id)
            .bind(&run.module_name)
            .bind(&run.module_version)
            .bind(&run.digest)
            .bind(run.input.as_slice())
            .bind(params)
            .bind(grants)
            .bind(run.timeout_ms)
            .bind(run.memory_bytes)
            .bind(run.fuel)
            .bind(run.max_retries)
            .bind(run.backoff_ms)
            .bind(i64::from(run.retry_timeouts))
            .bind(run.priority)
            .bind(run.idempotency_key.as_deref())
            .bind(run.not_before)
            .bind(now)
            .bind(run.schedule_id.as_deref())
            .bind(run.workflow_run_id.as_deref())
            .bind(run.step_name.as_deref())
            .bind(run.logical_date)
            .bind(run.trace_parent.as_deref())
    })
}

/// What inserting run `id` of a workflow step writes beside it, in its
/// transaction (none for a run of no step), each a no-op unless the run's
/// row is there:
/// - the step is running from the same commit, so the run cannot end
///   before its step says it started;
/// - a workflow run that is over (cancelled) starts nothing more: its
///   cancel may have come after the scheduler saw it running. The run is
///   then over before anyone can claim it, as the cancel ends the runs it
///   finds queued. (On PostgreSQL a cancel committing between this and
///   the commit can still miss it; on SQLite the write lock orders them.)
fn step_started<'t>(id: &str, run: &'t RunSpec, now: i64) -> Vec<Statement<'t>> {
    let Some((workflow_run_id, step)) = run.workflow_step() else {
        return Vec::new();
    };
    let (run_id, ended) = (id.to_string(), id.to_string());
    vec![
        Statement::new(
            "UPDATE workflow_steps SET state = 'running', run_id = $3 \
             WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'pending' \
             AND EXISTS (SELECT 1 FROM runs WHERE id = $3)",
            move |q| q.bind(workflow_run_id).bind(step).bind(run_id),
        ),
        Statement::new(
            "UPDATE runs SET state = 'cancelled', finished_at = $3, error = $4 \
             WHERE id = $1 AND EXISTS \
             (SELECT 1 FROM workflow_runs WHERE id = $2 AND state <> 'running')",
            move |q| {
                q.bind(ended)
                    .bind(workflow_run_id)
                    .bind(now)
                    .bind(CANCELLED_WITH_WORKFLOW)
            },
        ),
    ]
}

/// A new run of `run` submitted at `now`, on SQLite: its id, and the
/// statements that insert it ([`INSERT_CHECKED`], its first) and what goes
/// with it ([`step_started`]), each a no-op if the insert was refused.
fn insert_checked(run: &RunSpec, now: i64) -> Result<(String, Vec<Statement<'_>>), DbError> {
    let id = new_id();
    let mut statements = vec![Statement::new(
        INSERT_CHECKED,
        bind_new_run(id.clone(), run, now)?,
    )];
    statements.extend(step_started(&id, run, now));
    Ok((id, statements))
}

/// PostgreSQL: a new run's insert that inserts nothing (and returns no
/// row) when a run of the tenant holds its key; one of a concurrent
/// submission not yet committed is waited for.
const INSERT_KEYED: &str = concat!(
    insert_run_into!(),
    "VALUES (",
    new_run_values!(),
    ")",
    on_key_conflict!()
);

/// The run of tenant `$1` that holds idempotency key `$2`.
const RUN_BY_KEY: &str = "SELECT id FROM runs WHERE tenant_id = $1 AND idempotency_key = $2";

/// The run that holds the key an insert conflicted on, as a read found
/// it. The insert lost to that run, so finding none is the store's
/// inconsistency, not the caller's mistake.
fn key_holder(holder: Option<String>) -> Result<String, DbError> {
    holder.ok_or_else(|| DbError::other("a run's key conflicted, but no run holds it"))
}

/// A value bound to a query assembled at run time.
enum Bind {
    Int(i64),
    Text(String),
}

impl Db {
    /// Inserts a queued run. With an idempotency key that the tenant already
    /// used, returns the existing run's id and `false` instead. A tenant
    /// with `max_queued_runs` runs queued gets [`DbError::QuotaExceeded`].
    pub async fn submit_run(&self, run: &RunSpec, now: i64) -> Result<(String, bool), DbError> {
        let mut submitted = self.submit_runs(std::slice::from_ref(run), now).await?;
        Ok(submitted.remove(0))
    }

    /// Inserts queued runs in one transaction: all of them, or none when
    /// one is refused (a quota, a database error). Each answer is what
    /// [`Db::submit_run`] would give, in order; an idempotency key used
    /// twice in the batch names the first of the two runs.
    pub async fn submit_runs(
        &self,
        runs: &[RunSpec],
        now: i64,
    ) -> Result<Vec<(String, bool)>, DbError> {
        // One run on PostgreSQL with nothing written beside it (no
        // workflow step): its insert alone, which commits itself.
        if let ([run], DbKind::Postgres) = (runs, self.kind)
            && run.workflow_step().is_none()
        {
            return Ok(vec![self.insert_grouped(run, now).await?]);
        }
        if self.kind == DbKind::Postgres {
            return self.insert_batch(runs, now).await;
        }
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        // One run on SQLite: its insert checks its room and key itself
        // (`INSERT_CHECKED`), as `submit_claimed`'s does. A batch must see
        // every refusal before it commits: it reads its rooms first.
        if let [run] = runs {
            let (id, statements) = insert_checked(run, now)?;
            let results = tx.commit_with(statements).await?;
            if results.first().is_none_or(Vec::is_empty) {
                return Ok(vec![(self.refused(run).await?, false)]);
            }
            return Ok(vec![(id, true)]);
        }
        // A batch on SQLite: each tenant's room once, for the whole batch,
        // its queued runs counted once under the writers' lock, and this
        // batch's new ones added as they go in.
        let mut rooms: Vec<(&str, QueueRoom)> = Vec::new();
        let mut submitted = Vec::with_capacity(runs.len());
        for run in runs {
            let at = match rooms
                .iter()
                .position(|(tenant, _)| *tenant == run.tenant_id)
            {
                Some(at) => at,
                None => {
                    let key = run.idempotency_key.as_deref();
                    let room = QueueRoom::of(&mut tx, self.kind, &run.tenant_id, key).await?;
                    rooms.push((&run.tenant_id, room));
                    rooms.len() - 1
                }
            };
            submitted.push(Self::insert_run(&mut tx, self.kind, run, &mut rooms[at].1, now).await?);
        }
        tx.commit().await?;
        Ok(submitted)
    }

    /// PostgreSQL: [`Db::submit_runs`] for more than one run, or one run
    /// that is a workflow step's, in one transaction of multi-row inserts
    /// ([`NEW_RUNS`], at most [`NEW_RUNS_MAX`] runs a statement), so that
    /// the queue's count trigger fires, and takes the tenant's row, once a
    /// statement rather than once a run; the one transaction keeps the
    /// batch all or nothing. A new run that is a workflow step's then
    /// starts its step ([`step_started`]), in the same transaction. A run
    /// the inserts left out lost its key's conflict, to an earlier run or
    /// to one before it in the batch. The keys' runs are read in one
    /// statement a tenant, in the transaction so that it sees the batch's
    /// own, and are the answers: a client resubmitting a whole keyed batch
    /// after a timeout costs one read, not one a run.
    async fn insert_batch(
        &self,
        runs: &[RunSpec],
        now: i64,
    ) -> Result<Vec<(String, bool)>, DbError> {
        self.refuse_without_room(runs).await?;
        let ids: Vec<String> = runs.iter().map(|_| new_id()).collect();
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        let mut inserted = HashSet::with_capacity(runs.len());
        for (runs, ids) in runs.chunks(NEW_RUNS_MAX).zip(ids.chunks(NEW_RUNS_MAX)) {
            let binds = runs
                .iter()
                .zip(ids)
                .map(|(run, id)| bind_new_run(id.clone(), run, now))
                .collect::<Result<Vec<_>, _>>()?;
            let rows = tx
                .fetch_all(NEW_RUNS.sql(runs.len()), move |query| {
                    binds.into_iter().fold(query, |query, bind| bind(query))
                })
                .await
                .map_err(QueueRoom::refused_by_trigger)?;
            for row in rows {
                inserted.insert(row.try_get::<String, _>("id")?);
            }
        }
        for (run, id) in runs.iter().zip(&ids) {
            if inserted.contains(id) {
                for statement in step_started(id, run, now) {
                    tx.execute_statement(statement).await?;
                }
            }
        }
        let lost = runs
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !inserted.contains(*id))
            .map(|(run, _)| run);
        let holders = Self::runs_by_keys(&mut tx, lost).await?;
        tx.commit().await?;
        runs.iter()
            .zip(ids)
            .map(|(run, id)| {
                if inserted.contains(&id) {
                    return Ok((id, true));
                }
                let holder = run.idempotency_key.as_ref().and_then(|key| {
                    holders
                        .get(run.tenant_id.as_str())
                        .and_then(|held| held.get(key))
                });
                key_holder(holder.cloned()).map(|id| (id, false))
            })
            .collect()
    }

    /// PostgreSQL: refuses a batch of runs without idempotency keys, before
    /// anything is written, when a tenant's stored queue count (what the
    /// insert's trigger holds to `max_queued_runs`, migration 0018) leaves
    /// no room for its runs in the batch. A client that sends a refused
    /// batch again at once would otherwise have every try inserted and
    /// rolled back, leaving dead entries in the queue's indexes that every
    /// claim, of every tenant, then walks past until a vacuum
    /// (BENCHMARKS.md). The trigger still decides, under the tenant's
    /// lock; this read, without one, only spares the doomed insert. A
    /// keyed run may be answered by the run that holds its key and take
    /// no room, so a batch with keys goes straight to the insert.
    async fn refuse_without_room(&self, runs: &[RunSpec]) -> Result<(), DbError> {
        if runs.iter().any(|run| run.idempotency_key.is_some()) {
            return Ok(());
        }
        let mut wanted: HashMap<&str, i64> = HashMap::new();
        for run in runs {
            *wanted.entry(run.tenant_id.as_str()).or_default() += 1;
        }
        let sql = format!(
            "SELECT id, queued_runs, max_queued_runs FROM tenants WHERE id IN ({})",
            in_list(1, wanted.len())
        );
        let tenants: Vec<String> = wanted.keys().map(|tenant| tenant.to_string()).collect();
        let rows = self
            .read(sql, move |query| {
                tenants.into_iter().fold(query, |q, tenant| q.bind(tenant))
            })
            .await?;
        for row in rows {
            let tenant: String = row.try_get("id")?;
            let queued: i64 = row.try_get("queued_runs")?;
            let limit: i64 = row.try_get("max_queued_runs")?;
            if queued + wanted.get(tenant.as_str()).copied().unwrap_or(0) > limit {
                return Err(DbError::QuotaExceeded {
                    quota: "max_queued_runs",
                    limit,
                });
            }
        }
        Ok(())
    }

    /// The runs that hold `runs`' idempotency keys: for each tenant among
    /// them, its keys' runs by key, read in one statement. A run without a
    /// key is skipped: no run holds its key.
    async fn runs_by_keys<'r>(
        tx: &mut WriteTx<'_>,
        runs: impl Iterator<Item = &'r RunSpec>,
    ) -> Result<HashMap<&'r str, HashMap<String, String>>, DbError> {
        let mut keys: HashMap<&str, Vec<String>> = HashMap::new();
        for run in runs {
            if let Some(key) = &run.idempotency_key {
                keys.entry(&run.tenant_id).or_default().push(key.clone());
            }
        }
        let mut holders = HashMap::new();
        for (tenant_id, keys) in keys {
            let sql = format!(
                "SELECT idempotency_key, id FROM runs WHERE tenant_id = $1 AND idempotency_key IN ({})",
                in_list(2, keys.len())
            );
            let tenant = tenant_id.to_string();
            let rows = tx
                .fetch_all(sql, move |query| {
                    keys.into_iter()
                        .fold(query.bind(tenant), |q, key| q.bind(key))
                })
                .await?;
            let held: &mut HashMap<String, String> = holders.entry(tenant_id).or_default();
            for row in rows {
                held.insert(row.try_get("idempotency_key")?, row.try_get("id")?);
            }
        }
        Ok(holders)
    }

    /// One run of [`Db::submit_runs`], inside its transaction, with the
    /// tenant already locked and its queue's room read.
    pub(super) async fn insert_run<'t>(
        tx: &mut WriteTx<'t>,
        kind: DbKind,
        run: &'t RunSpec,
        room: &mut QueueRoom,
        now: i64,
    ) -> Result<(String, bool), DbError> {
        if let Some(key) = &run.idempotency_key {
            let existing = match room.take_key(key) {
                Some(looked_up) => looked_up,
                None => Self::run_by_key(tx, &run.tenant_id, key).await?,
            };
            if let Some(existing) = existing {
                return Ok((existing, false));
            }
        }
        // Dropping the transaction on a refusal rolls it back.
        room.take_one()?;
        let id = new_id();
        // The run's row; on PostgreSQL a key a concurrent submission
        // holds is settled below instead of failing the transaction.
        const INSERT: &str = concat!(insert_run_into!(), "VALUES (", new_run_values!(), ")");
        let bind = bind_new_run(id.clone(), run, now)?;
        match kind {
            // The key was looked up under the write lock, so the insert
            // cannot conflict: it goes with the next statement.
            DbKind::Sqlite => {
                tx.execute(INSERT, bind).await?;
            }
            DbKind::Postgres => {
                let inserted = tx
                    .fetch_all(INSERT_KEYED, bind)
                    .await
                    .map_err(QueueRoom::refused_by_trigger)?;
                // The key's conflict: a concurrent submission with the
                // same key inserted first (the check above takes no lock,
                // so it cannot see a run not yet committed); the insert
                // waited for it to commit and did nothing, and its run is
                // the answer.
                if inserted.is_empty()
                    && let Some(key) = &run.idempotency_key
                {
                    let existing = Self::run_by_key(tx, &run.tenant_id, key).await?;
                    return key_holder(existing).map(|id| (id, false));
                }
            }
        }
        for statement in step_started(&id, run, now) {
            tx.execute_statement(statement).await?;
        }
        Ok((id, true))
    }

    /// [`Db::submit_run`] for a run the submitting process can start at
    /// once (a workflow's next step, queued by the worker whose run ended
    /// the last): in the same transaction, it is claimed for `worker_id`
    /// under a lease until `now + lease`, as a claim would take it, if a
    /// claim would take it now. That is: nothing else is queued and due
    /// (so no other run, of any tenant, is passed over; on SQLite nothing
    /// else is queued at all, see `CLAIM_SUBMITTED_SQLITE`), its tenant is
    /// under `max_running_runs`, and its memory fits `max_memory`. Else it
    /// stays queued, for any worker to claim. Returns the run's id,
    /// whether it is new, and the claim if it was claimed here.
    ///
    /// One commit where the submit and the claim took two, and no wake-up
    /// of another slot between them: a workflow's hop.
    pub async fn submit_claimed(
        &self,
        run: &RunSpec,
        worker_id: &str,
        lease: Duration,
        now: i64,
        max_memory: i64,
    ) -> Result<(String, bool, Option<Claim>), DbError> {
        let lease_until = lease_end(now, lease);
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        let (id, mut statements) = match self.kind {
            // Everything hangs on the insert (`INSERT_CHECKED`); a refused
            // insert is explained after, by reads of its own.
            DbKind::Sqlite => insert_checked(run, now)?,
            DbKind::Postgres => {
                let mut room = QueueRoom::of(&mut tx, self.kind, &run.tenant_id, None).await?;
                let (id, new) = Self::insert_run(&mut tx, self.kind, run, &mut room, now).await?;
                if !new {
                    tx.commit().await?;
                    return Ok((id, false, None));
                }
                (id, Vec::new())
            }
        };
        // Claimed only where a claim would take it (`claim_submitted_sql!`),
        // with what a claim writes besides the run (`claim_writes`), which
        // is written only if the claim took it: so they and the `COMMIT`
        // go with the claim.
        let claim = match self.kind {
            DbKind::Sqlite => CLAIM_SUBMITTED_SQLITE,
            DbKind::Postgres => CLAIM_SUBMITTED_POSTGRES,
        };
        let run_id = id.clone();
        let claimed_at = statements.len();
        statements.push(Statement::new(claim, move |q| {
            q.bind(run_id)
                .bind(worker_id)
                .bind(lease_until)
                .bind(now)
                .bind(max_memory)
        }));
        statements.extend(Self::claim_writes(
            self.kind,
            run.tenant_id.clone(),
            id.clone(),
            worker_id,
            now,
        ));
        let mut results = tx.commit_with(statements).await?;
        if self.kind == DbKind::Sqlite && results.first().is_none_or(Vec::is_empty) {
            return Ok((self.refused(run).await?, false, None));
        }
        let claimed = results.swap_remove(claimed_at);
        let Some(claimed) = claimed.first() else {
            return Ok((id, true, None));
        };
        let claimed = RunRecord::from_row(claimed)?;
        Ok((
            id,
            true,
            Some(Claim {
                attempt: claimed.attempts,
                run: claimed,
            }),
        ))
    }

    /// [`Db::submit_run`] on PostgreSQL for a run with nothing to write
    /// beside it: its insert, with those of the submissions that arrive
    /// while another group is being inserted (`store::groups`), in
    /// one statement that commits itself. One trip where `BEGIN`, the
    /// insert and `COMMIT` took three, shared by the group, and the
    /// tenant's lock, which the insert's quota trigger (migrations 0012 and 0017)
    /// takes, is released in the same trip: concurrent submissions and
    /// claims queue on that lock. A key another run holds inserts nothing;
    /// that run is then read and is the answer. A run whose group failed
    /// as a whole (another run past its quota, say) is inserted alone, so
    /// that only what refuses it refuses it.
    async fn insert_grouped(&self, run: &RunSpec, now: i64) -> Result<(String, bool), DbError> {
        let id = new_id();
        let grouped = match &self.inserts {
            Some(inserts) => {
                let row = GroupRow {
                    id: id.clone(),
                    may_skip: run.idempotency_key.is_some(),
                    values: RowValues::Bound(Box::new(bind_new_run(id.clone(), run.clone(), now)?)),
                };
                inserts.write(&self.pool, &INSERT_KEYED_ROWS, row).await
            }
            None => Some(Grouped::Alone),
        };
        let inserted = match grouped {
            Some(Grouped::Returned(_)) => true,
            Some(Grouped::Skipped) => false,
            Some(Grouped::Failed(e)) => return Err(QueueRoom::refused_by_trigger(e)),
            Some(Grouped::Alone) => !bind_new_run(id.clone(), run, now)?(sqlx::query(INSERT_KEYED))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| QueueRoom::refused_by_trigger(e.into()))?
                .is_empty(),
            None => {
                return Err(DbError::Unavailable(
                    "the submission's group was cut short: it may or may not be stored".into(),
                ));
            }
        };
        if inserted {
            return Ok((id, true));
        }
        let existing = match &run.idempotency_key {
            Some(key) => self.keyed_run(&run.tenant_id, key).await?,
            None => None,
        };
        key_holder(existing).map(|id| (id, false))
    }

    /// The id of the tenant's run that holds `key`, if one does.
    async fn keyed_run(&self, tenant_id: &str, key: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query(RUN_BY_KEY)
            .bind(tenant_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("id")).transpose()?)
    }

    /// Why [`INSERT_CHECKED`] inserted nothing: the run that holds the
    /// run's key (which is then the answer), or else its tenant's full
    /// queue. Read after the transaction, which wrote nothing.
    async fn refused(&self, run: &RunSpec) -> Result<String, DbError> {
        if let Some(key) = &run.idempotency_key
            && let Some(id) = self.keyed_run(&run.tenant_id, key).await?
        {
            return Ok(id);
        }
        let quota = sqlx::query("SELECT max_queued_runs FROM tenants WHERE id = $1")
            .bind(&run.tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        match quota {
            Some(row) => Err(DbError::QuotaExceeded {
                quota: "max_queued_runs",
                limit: row.try_get("max_queued_runs")?,
            }),
            None => Err(DbError::other(format!("no tenant {}", run.tenant_id))),
        }
    }

    pub async fn get_run(&self, tenant_id: &str, id: &str) -> Result<Option<RunRecord>, DbError> {
        let rows = self
            .read(
                concat!(
                    "SELECT ",
                    run_columns!(),
                    " FROM runs WHERE tenant_id = $1 AND id = $2"
                ),
                |q| q.bind(tenant_id).bind(id),
            )
            .await?;
        rows.first()
            .map(RunRecord::from_row)
            .transpose()
            .map_err(DbError::from)
    }

    /// [`Db::get_run`] and the run's [`Db::attempts`], in one statement:
    /// the attempts come as a JSON array from a subquery (each backend's
    /// own JSON functions), so the API's run view costs one round trip.
    pub async fn get_run_and_attempts(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<(RunRecord, Vec<AttemptRecord>)>, DbError> {
        let sql = match self.kind {
            DbKind::Sqlite => concat!(
                "SELECT ",
                run_columns!(),
                ", (SELECT json_group_array(json_object('attempt', a.attempt, \
                 'worker_id', a.worker_id, 'started_at', a.started_at, \
                 'finished_at', a.finished_at, 'state', a.state, 'error', a.error)) \
                 FROM (SELECT * FROM run_attempts WHERE run_id = runs.id ORDER BY attempt) a) \
                 AS attempt_rows FROM runs WHERE tenant_id = $1 AND id = $2"
            ),
            DbKind::Postgres => concat!(
                "SELECT ",
                run_columns!(),
                ", (SELECT COALESCE(json_agg(json_build_object('attempt', a.attempt, \
                 'worker_id', a.worker_id, 'started_at', a.started_at, \
                 'finished_at', a.finished_at, 'state', a.state, 'error', a.error) \
                 ORDER BY a.attempt), '[]'::json)::text \
                 FROM run_attempts a WHERE a.run_id = runs.id) \
                 AS attempt_rows FROM runs WHERE tenant_id = $1 AND id = $2"
            ),
        };
        let rows = self.read(sql, |q| q.bind(tenant_id).bind(id)).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let run = RunRecord::from_row(row)?;
        let attempts: String = row.try_get("attempt_rows")?;
        let attempts: Vec<AttemptRecord> =
            serde_json::from_str(&attempts).map_err(|e| corrupt("attempts", id, e))?;
        Ok(Some((run, attempts)))
    }

    /// Only the state of a run, for a followed log's polls (which must not
    /// read a large input or output five times a second).
    pub async fn run_state(&self, tenant_id: &str, id: &str) -> Result<Option<RunState>, DbError> {
        let rows = self
            .read(
                "SELECT state FROM runs WHERE tenant_id = $1 AND id = $2",
                |q| q.bind(tenant_id).bind(id),
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let state: String = row.try_get("state")?;
        RunState::parse(&state)
            .map(Some)
            .ok_or_else(|| corrupt("state", id, &state))
    }

    /// Any tenant's run, for workers and the scheduler.
    pub async fn get_run_any(&self, id: &str) -> Result<Option<RunRecord>, DbError> {
        let rows = self
            .read(
                concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"),
                |q| q.bind(id),
            )
            .await?;
        rows.first()
            .map(RunRecord::from_row)
            .transpose()
            .map_err(DbError::from)
    }

    /// Newest first, without their inputs and outputs (see
    /// `run_summary_columns!`): a page of 500 runs stays small however
    /// large each run's data is.
    pub async fn list_runs(
        &self,
        tenant_id: &str,
        filter: &RunFilter,
    ) -> Result<Vec<RunRecord>, DbError> {
        let mut sql = String::from(concat!(
            "SELECT ",
            run_summary_columns!(),
            " FROM runs WHERE tenant_id = $1"
        ));
        let mut binds = vec![Bind::Text(tenant_id.to_owned())];
        let next = |b: Bind, binds: &mut Vec<Bind>| {
            binds.push(b);
            binds.len()
        };
        if let Some(state) = filter.state {
            let n = next(Bind::Text(state.as_str().to_owned()), &mut binds);
            sql.push_str(&format!(" AND state = ${n}"));
        }
        if let Some(module) = &filter.module {
            let n = next(Bind::Text(module.clone()), &mut binds);
            sql.push_str(&format!(" AND module_name = ${n}"));
        }
        if let Some(since) = filter.since {
            let n = next(Bind::Int(since), &mut binds);
            sql.push_str(&format!(" AND created_at >= ${n}"));
        }
        if let Some(workflow_run_id) = &filter.workflow_run_id {
            let n = next(Bind::Text(workflow_run_id.clone()), &mut binds);
            sql.push_str(&format!(" AND workflow_run_id = ${n}"));
        }
        if let Some((created_at, id)) = &filter.before {
            let t = next(Bind::Int(*created_at), &mut binds);
            let i = next(Bind::Text(id.clone()), &mut binds);
            sql.push_str(&format!(
                " AND (created_at < ${t} OR (created_at = ${t} AND id < ${i}))"
            ));
        }
        let n = next(Bind::Int(filter.limit.max(0)), &mut binds);
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${n}"));

        let mut query = sqlx::query_as::<_, RunRecord>(built(sql));
        for b in binds {
            query = match b {
                Bind::Int(v) => query.bind(v),
                Bind::Text(v) => query.bind(v),
            };
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, DbError> {
        Ok(sqlx::query_as::<_, AttemptRecord>(
            "SELECT attempt, worker_id, started_at, finished_at, state, error FROM run_attempts \
             WHERE run_id = $1 ORDER BY attempt",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims the next queued run, fairly between tenants (see
    /// `CLAIM_SQLITE` in this module), whose `not_before <= now` and whose
    /// `memory_bytes <= max_memory`, leasing it to `worker_id` until
    /// `now + lease`. Increments `attempts`, sets `started_at` on the first
    /// attempt, and inserts a `running` attempt row. Atomic: two workers
    /// never claim the same run, and a tenant never has more than its
    /// `max_running_runs` running.
    pub async fn claim_run(
        &self,
        worker_id: &str,
        lease: Duration,
        now: i64,
        max_memory: i64,
    ) -> Result<Option<Claim>, DbError> {
        let mut claims = self
            .claim_runs(worker_id, lease, now, max_memory, 1)
            .await?;
        Ok(claims.pop())
    }

    /// Claims up to `max_runs` runs at once, as [`Db::claim_run`] claims
    /// one, in one transaction: one commit for a worker's free slots rather
    /// than one each. Their memory limits together fit `max_memory`. Each
    /// is picked as a claim of its own would pick it (the fairness between
    /// tenants counts the ones before it), and all are leased until
    /// `now + lease`; a worker that dies holding them loses them all to
    /// the lease's expiry, as it would a single run.
    pub async fn claim_runs(
        &self,
        worker_id: &str,
        lease: Duration,
        now: i64,
        max_memory: i64,
        max_runs: usize,
    ) -> Result<Vec<Claim>, DbError> {
        let ask = ClaimAsk {
            worker_id,
            lease,
            max_memory,
            max_runs,
        };
        // On PostgreSQL the claims are one statement that stands alone
        // (`CLAIM_POSTGRES`): one trip, and their tenants' locks are held
        // only while PostgreSQL runs it.
        let mut turn = None;
        let mut tx = self
            .write_tx(&mut turn, self.kind == DbKind::Postgres)
            .await?;
        let claims = Self::claim_in(&mut tx, self.kind, &ask, now).await?;
        if claims.is_empty() {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(claims)
    }

    /// The claims of [`Db::claim_runs`], in `tx`, which the caller commits.
    async fn claim_in<'t>(
        tx: &mut WriteTx<'t>,
        kind: DbKind,
        ask: &ClaimAsk<'t>,
        now: i64,
    ) -> Result<Vec<Claim>, DbError> {
        let lease_until = lease_end(now, ask.lease);
        let mut claims = Vec::new();
        let mut memory = ask.max_memory;
        // A claim that raced another worker for a tenant's last running
        // slot is undone and the rest asked for again; the next statement
        // no longer sees room for that tenant, so this ends quickly.
        let mut races = 0;
        while claims.len() < ask.max_runs && races < CLAIM_TRIES {
            let wanted = ask.max_runs - claims.len();
            // What the statement asked for: a SQLite claim takes one run.
            let (taken, asked) = match kind {
                DbKind::Postgres => (
                    Self::claim_postgres(tx, ask.worker_id, lease_until, now, memory, wanted).await,
                    wanted,
                ),
                DbKind::Sqlite => (
                    Self::claim_sqlite(tx, ask.worker_id, lease_until, now, memory).await,
                    1,
                ),
            };
            match taken {
                Ok(Taken { runs, undone }) => {
                    let short = runs.len() + undone < asked;
                    for claim in runs {
                        memory = memory.saturating_sub(claim.run.spec.memory_bytes.max(0));
                        claims.push(claim);
                    }
                    if undone > 0 {
                        races += 1;
                    } else if short {
                        break;
                    }
                }
                // Each statement so far has committed itself: those runs
                // are the worker's now, so they are what it gets, not the
                // error, which would leave them to their leases' end.
                Err(e) if tx.is_alone() && !claims.is_empty() => {
                    tracing::warn!(
                        "claimed {} runs, then could not claim more: {e}",
                        claims.len()
                    );
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(claims)
    }

    /// Up to `wanted` claims in one statement ([`CLAIM_POSTGRES`]), which
    /// also stamps their tenants and writes their attempts' rows.
    ///
    /// The claim read running counts in its own snapshot; another worker
    /// may have claimed for the same tenant meanwhile. Counting again under
    /// the tenant's lock settles it: the count already holds this
    /// statement's claims, and whoever commits second sees the first, and
    /// backs out of what is past the tenant's quota, undoing those claims
    /// in the same statement (`held` false), counted in `undone`.
    async fn claim_postgres<'t>(
        tx: &mut WriteTx<'t>,
        worker_id: &'t str,
        lease_until: i64,
        now: i64,
        max_memory: i64,
        wanted: usize,
    ) -> Result<Taken, DbError> {
        let limit = i64::try_from(wanted).unwrap_or(i64::MAX);
        let rows = tx
            .fetch_all(CLAIM_POSTGRES, move |q| {
                q.bind(worker_id)
                    .bind(lease_until)
                    .bind(now)
                    .bind(max_memory)
                    .bind(limit)
            })
            .await?;
        let mut taken = Taken::default();
        // In the order the worker starts them.
        for row in &rows {
            if row.try_get::<bool, _>("held")? {
                let run = RunRecord::from_row(row)?;
                taken.runs.push(Claim {
                    attempt: run.attempts,
                    run,
                });
            } else {
                taken.undone += 1;
            }
        }
        Ok(taken)
    }

    /// One claim ([`CLAIM_SQLITE`]) inside the transaction, with what it
    /// writes besides the run (the round robin stamp, the attempt's row),
    /// which go with the next claim or the commit. The claim read the
    /// tenant's running count under the write lock this transaction took
    /// at its `BEGIN IMMEDIATE` (or on the one connection of an in-memory
    /// database), so it holds: nothing is ever undone.
    async fn claim_sqlite<'t>(
        tx: &mut WriteTx<'t>,
        worker_id: &'t str,
        lease_until: i64,
        now: i64,
        max_memory: i64,
    ) -> Result<Taken, DbError> {
        // `fetch_all`, not `fetch_optional`: a statement with RETURNING is
        // always stepped to its end.
        let rows = tx
            .fetch_all(CLAIM_SQLITE, move |q| {
                q.bind(worker_id)
                    .bind(lease_until)
                    .bind(now)
                    .bind(max_memory)
            })
            .await?;
        let mut taken = Taken::default();
        if let Some(row) = rows.first() {
            let run = RunRecord::from_row(row)?;
            let [stamp, attempt] = Self::claim_writes(
                DbKind::Sqlite,
                run.spec.tenant_id.clone(),
                run.id.clone(),
                worker_id,
                now,
            );
            tx.execute_statement(stamp).await?;
            tx.execute_statement(attempt).await?;
            taken.runs.push(Claim {
                attempt: run.attempts,
                run,
            });
        }
        Ok(taken)
    }

    /// Extends the lease of a run this worker holds. Returns `None` if the
    /// run is no longer this worker's (lease lost), else whether a cancel
    /// was requested.
    pub async fn heartbeat(
        &self,
        run_id: &str,
        worker_id: &str,
        lease_until: i64,
    ) -> Result<Option<bool>, DbError> {
        let _turn = self.begin_write().await;
        let rows = sqlx::query(
            "UPDATE runs SET lease_until = $3 WHERE id = $1 AND state = 'running' AND worker_id = $2 \
             RETURNING cancel_requested",
        )
        .bind(run_id)
        .bind(worker_id)
        .bind(lease_until)
        .fetch_all(&self.pool)
        .await?;
        match rows.first() {
            Some(row) => {
                let cancel: i64 = row.try_get("cancel_requested")?;
                Ok(Some(cancel != 0))
            }
            None => Ok(None),
        }
    }

    /// Tells the store how many slots of this process finish runs. With
    /// more than two, a finish that arrives while another is written waits
    /// and goes with the others that arrive meanwhile, in one statement;
    /// with two or fewer, each goes at once, as there is seldom another to
    /// go with. Measured (BENCHMARKS.md, stop 46): one in flight against
    /// two was 1.03-1.14× the runs/s with 8 slots a worker process and
    /// 0.91-0.96× with 2. PostgreSQL only; SQLite's writer groups commits
    /// itself.
    pub fn finishing_slots(&self, slots: usize) {
        if let Some(finishes) = &self.finishes {
            finishes.set_in_flight(if slots > 2 { 1 } else { 2 });
        }
    }

    /// Records how an attempt ended. Only applies if `worker_id` still holds
    /// the run in state `running` (so a worker whose lease expired cannot
    /// finish a run twice); returns whether it applied. Updates the attempt
    /// row too.
    ///
    /// "Holds" includes the attempt number: a worker that lost attempt 1
    /// and then claimed the same run again cannot finish attempt 2 with a
    /// late report for attempt 1.
    pub async fn finish_attempt(
        &self,
        run_id: &str,
        worker_id: &str,
        attempt: i64,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<bool, DbError> {
        Ok(self
            .finish_and_claim(run_id, worker_id, attempt, outcome, &[], now, false, None)
            .await?
            .is_some())
    }

    /// [`Db::finish_attempt`], and for a workflow step's run that ended,
    /// the step's end in the same transaction (`Db::settle_step`): `None`
    /// if the attempt was not this worker's to finish, else what the step
    /// ending made ready, if the run is a step and ended, and what was
    /// claimed with it.
    ///
    /// `lines` are the attempt's last log lines, stored in the same commit
    /// (a no-op run's whole log): one transaction where the log and the
    /// outcome took two. They are stored only if the outcome is; the caller
    /// keeps them otherwise.
    ///
    /// With `next`, it claims as [`Db::claim_runs`] would, in the same
    /// commit, unless the run is a workflow step's whose end made another
    /// step ready (the worker starts that one itself): a busy worker's
    /// slot finishes one run and takes the next in one transaction, where
    /// it took two, a fan-out's steps as any other runs. Nothing is
    /// claimed if the attempt was not `worker_id`'s to finish.
    ///
    /// `plain` says the run is known to be no workflow step's, so nothing
    /// but its finish need commit with it. On PostgreSQL its finish is
    /// then one statement that commits itself and a claim another: two
    /// trips where `BEGIN`, the finish, the claim and `COMMIT` took four,
    /// and the claim's tenant lock is not held across a trip. While as
    /// many finishes of this process are in flight as its slots call for
    /// ([`Db::finishing_slots`]), the next ones wait and go together, one
    /// statement for several runs (`FINISH_ROWS`, `store::groups`). A claim that fails then is dropped, not returned:
    /// the finish stands, and the slot claims as it looks next. A run a
    /// group's statement leaves out (a step's after all, or no longer the
    /// worker's) is finished as any other, in a transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_and_claim(
        &self,
        run_id: &str,
        worker_id: &str,
        attempt: i64,
        outcome: &AttemptOutcome,
        lines: &[NewLogLine],
        now: i64,
        plain: bool,
        next: Option<ClaimAsk<'_>>,
    ) -> Result<Option<Finished>, DbError> {
        // `splits`: whether the run is a map step's split, read here rather
        // than by a statement of its own when the step settles.
        const HELD: &str = " WHERE id = $1 AND state = 'running' AND worker_id = $2 AND attempts = $3 \
             RETURNING state, workflow_run_id, step_name, CASE WHEN workflow_run_id IS NULL THEN 0 \
             ELSE (SELECT COUNT(*) FROM workflow_splits s WHERE s.run_id = runs.id) END AS splits";
        if let AttemptOutcome::Finished { state, .. } = outcome
            && !state.is_final()
        {
            return Err(DbError::other(format!(
                "an attempt cannot finish a run as {}",
                state.as_str()
            )));
        }
        // PostgreSQL: the run's update, the attempt's end and the lines in
        // one statement, each of the last two written only if the update
        // applied: one trip where they took three (SQLite's writer runs
        // them in place, where a trip costs nothing).
        let together = self.kind == DbKind::Postgres && lines.len() <= LOG_ROWS_PER_INSERT;
        // A turn to finish by the statement below, a write of its own,
        // counted in flight so that the finishes that arrive meanwhile wait
        // and go together: on PostgreSQL, a run that is no step's.
        let finishes = self.finishes.as_ref().filter(|_| together && plain);
        let own_turn = finishes.and_then(|f| f.turn(&self.pool, &FINISH_ROWS));
        if let Some(finishes) = finishes
            && own_turn.is_none()
        {
            let row = GroupRow {
                id: run_id.to_owned(),
                // Left out when the run is no longer this worker's, or is
                // a step's after all.
                may_skip: true,
                values: RowValues::Json(finish_row(
                    run_id, worker_id, attempt, outcome, lines, now,
                )),
            };
            let written = match finishes.write(&self.pool, &FINISH_ROWS, row).await {
                Some(Grouped::Returned(_)) => true,
                // Left out, or nothing of its group written (the group
                // failed as a whole): found out below, in a transaction of
                // its own, as any other finish, whose error is its own.
                Some(Grouped::Skipped | Grouped::Alone) => false,
                Some(Grouped::Failed(e)) => return Err(e),
                None => {
                    return Err(DbError::Unavailable(
                        "the finish's group was cut short: it may or may not be recorded".into(),
                    ));
                }
            };
            if written {
                return Ok(Some(Finished {
                    settled: None,
                    claims: self.claim_after_finish(run_id, next, now).await,
                }));
            }
        }
        // Alone: the finish is one statement that commits itself, and the
        // claim another.
        let alone = own_turn.is_some();
        let mut turn = None;
        let mut tx = self.write_tx(&mut turn, alone).await?;
        // The run's update, which holds its row if it applies, as the
        // placeholders it binds; and what the attempt's row is to say.
        let (sql, bind, placeholders, attempt_state, attempt_error): (String, Binder, usize, _, _) =
            match outcome {
                AttemptOutcome::Succeeded { output, output_key } => (
                    format!(
                        "UPDATE runs SET state = 'succeeded', output = $4, output_key = $6, \
                         error = NULL, retryable = NULL, finished_at = $5, lease_until = NULL{HELD}"
                    ),
                    Box::new(move |q| {
                        q.bind(run_id)
                            .bind(worker_id)
                            .bind(attempt)
                            .bind(output.as_slice())
                            .bind(now)
                            .bind(output_key.as_deref())
                    }),
                    6,
                    "succeeded",
                    None,
                ),
                AttemptOutcome::Finished {
                    state,
                    error,
                    retryable,
                } => (
                    format!(
                        "UPDATE runs SET state = $4, error = $5, retryable = $6, \
                             finished_at = $7, lease_until = NULL{HELD}"
                    ),
                    Box::new(move |q| {
                        q.bind(run_id)
                            .bind(worker_id)
                            .bind(attempt)
                            .bind(state.as_str())
                            .bind(error.as_str())
                            .bind(i64::from(*retryable))
                            .bind(now)
                    }),
                    7,
                    state.as_str(),
                    Some(error.as_str()),
                ),
                AttemptOutcome::Retry {
                    error,
                    not_before,
                    timed_out,
                } => (
                    // A cancel requested while the attempt was failing
                    // wins: retrying would run what the user asked to stop.
                    format!(
                        "UPDATE runs SET \
                         state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, \
                         finished_at = CASE WHEN cancel_requested = 1 THEN $6 ELSE NULL END, \
                         not_before = $4, error = $5, retryable = 1, \
                         worker_id = NULL, lease_until = NULL{HELD}"
                    ),
                    Box::new(move |q| {
                        q.bind(run_id)
                            .bind(worker_id)
                            .bind(attempt)
                            .bind(*not_before)
                            .bind(error.as_str())
                            .bind(now)
                    }),
                    6,
                    if *timed_out { "timed_out" } else { "failed" },
                    Some(error.as_str()),
                ),
            };
        let rows = if together {
            let mut sql = format!(
                "WITH r AS ({sql}), a AS ({} AND EXISTS (SELECT 1 FROM r))",
                attempt_end_sql("$1", "$3", placeholders + 1)
            );
            if !lines.is_empty() {
                let insert = log_rows_insert("$1", "$3", placeholders + 4, lines.len());
                sql.push_str(&format!(", l AS ({insert} WHERE EXISTS (SELECT 1 FROM r))"));
            }
            sql.push_str(" SELECT * FROM r");
            tx.fetch_all(sql, move |q| {
                let q = bind(q).bind(attempt_state).bind(now).bind(attempt_error);
                bind_log_rows(q, lines)
            })
            .await?
        } else {
            tx.fetch_all(sql, bind).await?
        };
        // Written: the finishes that waited for it may go.
        drop(own_turn);
        let Some(row) = rows.first() else {
            tx.rollback().await?;
            return Ok(None);
        };
        let run_state: String = row.try_get("state")?;
        let workflow_run_id: Option<String> = row.try_get("workflow_run_id")?;
        let step_name: Option<String> = row.try_get("step_name")?;
        let splits: i64 = row.try_get("splits")?;
        // The update above holds the run's row, as `append_logs` needs.
        // The lines and the attempt's end go with the commit, or with the
        // step's statements below.
        if !together {
            Self::insert_logs(&mut tx, run_id, attempt, lines).await?;
            tx.execute(attempt_end_sql("$1", "$2", 3), move |q| {
                q.bind(run_id)
                    .bind(attempt)
                    .bind(attempt_state)
                    .bind(now)
                    .bind(attempt_error)
            })
            .await?;
        }
        // A step's run that ended ends its step, in this transaction, which
        // the step's end commits: a retry leaves it running. Pending counts
        // too: a run queued by an older version, which moved its step to
        // running in a transaction of its own, can end first. A step has
        // one run (its idempotency key), so this run is the step's; a map
        // step's runs are its splits', each settling its split.
        let settled = match (workflow_run_id, step_name, RunState::parse(&run_state)) {
            (Some(_), Some(_), Some(state)) if state.is_final() && splits > 0 => {
                Self::settle_split(&mut tx, run_id, state).await?
            }
            (Some(workflow_run_id), Some(step), Some(state)) if state.is_final() => {
                let to = if state == RunState::Succeeded {
                    "succeeded"
                } else {
                    "failed"
                };
                Self::settle_step(&mut tx, &workflow_run_id, &step, None, to, Some(run_id)).await?
            }
            _ => None,
        };
        // A step whose end made another ready does not claim: the worker
        // moves the workflow on from it and, when the ready step waited
        // for this one alone, takes it itself (`start_here`), so a chain's
        // next hop is not put behind another queued run.
        let claims = match &next {
            Some(ask) if settled.as_ref().is_none_or(|s| s.ready.is_empty()) => {
                match Self::claim_in(&mut tx, self.kind, ask, now).await {
                    Ok(claims) => Some(claims),
                    Err(e) if alone => claim_dropped(run_id, e),
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        tx.commit().await?;
        Ok(Some(Finished { settled, claims }))
    }

    /// The claim that follows a finish written in a group: a statement of
    /// its own. One that fails is dropped, not returned: the finish stands,
    /// and the slot claims as it looks next.
    async fn claim_after_finish(
        &self,
        run_id: &str,
        next: Option<ClaimAsk<'_>>,
        now: i64,
    ) -> Option<Vec<Claim>> {
        let ask = next?;
        match self
            .claim_runs(ask.worker_id, ask.lease, now, ask.max_memory, ask.max_runs)
            .await
        {
            Ok(claims) => Some(claims),
            Err(e) => claim_dropped(run_id, e),
        }
    }

    /// Hands a claimed run back without counting the attempt (graceful
    /// shutdown), storing `lines` (the attempt's last log lines, which say
    /// why) in the same commit: a run seen queued again has its reason in
    /// its log. Returns whether the run was this worker's to hand back;
    /// if not, the lines are not stored.
    pub async fn release_run(
        &self,
        run_id: &str,
        worker_id: &str,
        attempt: i64,
        lines: &[NewLogLine],
    ) -> Result<bool, DbError> {
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        // `attempts` on the right-hand side is the value before the update,
        // so a first attempt handed back also forgets its start time. The
        // update holds the run's row, as the log lines' insert needs.
        let released = tx
            .fetch_all(
                "UPDATE runs SET state = 'queued', attempts = attempts - 1, worker_id = NULL, \
                 lease_until = NULL, started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END \
                 WHERE id = $1 AND state = 'running' AND worker_id = $2 AND attempts = $3 RETURNING id",
                move |q| q.bind(run_id).bind(worker_id).bind(attempt),
            )
            .await?;
        if released.is_empty() {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::insert_logs(&mut tx, run_id, attempt, lines).await?;
        tx.execute(
            "DELETE FROM run_attempts WHERE run_id = $1 AND attempt = $2",
            move |q| q.bind(run_id).bind(attempt),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Requests cancellation. A queued run becomes `cancelled` at once; a
    /// running one gets `cancel_requested` (its worker stops it), and on
    /// PostgreSQL a `NOTIFY` on `caisson_cancels` tells its worker now. Returns
    /// the run's state after the call, or `None` if no such run.
    pub async fn request_cancel(
        &self,
        tenant_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<RunState>, DbError> {
        let mut turn = self.begin_write().await;
        let mut tx = turn.begin().await?;
        sqlx::query(
            "UPDATE runs SET state = 'cancelled', finished_at = $3, error = 'cancelled before it started' \
             WHERE tenant_id = $1 AND id = $2 AND state = 'queued'",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let running = sqlx::query(
            "UPDATE runs SET cancel_requested = 1 WHERE tenant_id = $1 AND id = $2 AND state = 'running'",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if running.rows_affected() > 0 && self.kind == DbKind::Postgres {
            // Sent at commit, to the worker's listener (`services::cancel`),
            // so a worker in another process stops the run at once instead
            // of at its next heartbeat.
            // `FROM`, so the row has an int4 column: the Any driver has no
            // type for pg_notify's `void`.
            sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
                .bind(CANCEL_CHANNEL)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query("SELECT state FROM runs WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        RunState::parse(&state)
            .map(Some)
            .ok_or_else(|| corrupt("state", id, &state))
    }

    /// Re-queues running runs whose lease expired before `now` (their
    /// worker died): the attempt is marked `lost` and the run goes back to
    /// `queued` immediately. Returns how many.
    ///
    /// A run whose cancellation was requested is not re-queued but
    /// finished as `cancelled` (and counted too): running it again would
    /// defeat the request.
    pub async fn requeue_expired(&self, now: i64) -> Result<u64, DbError> {
        const LOST: &str = "its worker stopped renewing the lease";
        let mut turn = self.begin_write().await;
        let mut tx = turn.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE runs SET state = 'cancelled', finished_at = $1, lease_until = NULL, \
             error = $2, retryable = 0 \
             WHERE state = 'running' AND lease_until < $1 AND cancel_requested = 1 \
             RETURNING id, attempts",
        )
        .bind(now)
        .bind(format!("cancelled: {LOST}"))
        .fetch_all(&mut *tx)
        .await?;
        // A run that has lost its worker again and again is probably what
        // kills it: after MAX_LOST_ATTEMPTS losses beyond its retries it
        // fails, instead of taking down one worker after another forever.
        let abandoned = sqlx::query(
            "UPDATE runs SET state = 'failed', finished_at = $1, lease_until = NULL, \
             error = $2, retryable = 0 \
             WHERE state = 'running' AND lease_until < $1 AND attempts >= max_retries + $3 \
             RETURNING id, attempts",
        )
        .bind(now)
        .bind(format!("{LOST} on {MAX_LOST_ATTEMPTS} attempts beyond its retries; the task may be crashing its workers"))
        .bind(MAX_LOST_ATTEMPTS)
        .fetch_all(&mut *tx)
        .await?;
        let requeued = sqlx::query(
            "UPDATE runs SET state = 'queued', worker_id = NULL, lease_until = NULL, \
             error = $2, retryable = 1 \
             WHERE state = 'running' AND lease_until < $1 RETURNING id, attempts",
        )
        .bind(now)
        .bind(LOST)
        .fetch_all(&mut *tx)
        .await?;
        let lost = attempt_end_sql("$1", "$2", 3);
        for row in cancelled.iter().chain(&abandoned).chain(&requeued) {
            let id: String = row.try_get("id")?;
            let attempt: i64 = row.try_get("attempts")?;
            sqlx::query(built(lost.clone()))
                .bind(id)
                .bind(attempt)
                .bind("lost")
                .bind(now)
                .bind(LOST)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((cancelled.len() + abandoned.len() + requeued.len()) as u64)
    }

    /// When the longest-waiting runnable queued run (all tenants) became
    /// runnable: the queue's age, for metrics. Runs waiting out a retry
    /// backoff are not runnable yet. One probe of the `runs_queue` index on
    /// PostgreSQL; on SQLite a walk of the queue's `runs_claim`, once a
    /// scrape.
    pub async fn oldest_runnable(&self, now: i64) -> Result<Option<i64>, DbError> {
        let row = sqlx::query(
            "SELECT MIN(not_before) AS oldest FROM runs WHERE state = 'queued' AND not_before <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("oldest")?)
    }

    /// Number of runs per state (all tenants), for metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(RunState, i64)>, DbError> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            if let Some(state) = RunState::parse(&state) {
                counts.push((state, n));
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::{NEW_RUN_BINDS, push_new_run_row};

    #[test]
    fn a_multi_row_inserts_rows_are_the_one_rows_values_numbered_on() {
        let mut sql = String::new();
        push_new_run_row(&mut sql, 0);
        assert_eq!(sql, concat!("(", new_run_values!(), ")"));

        push_new_run_row(&mut sql, 1);
        let second = &sql[sql.find("), (").unwrap() + 3..];
        let numbers: Vec<usize> = second
            .split('$')
            .skip(1)
            .map(|p| {
                p[..p.find(|c: char| !c.is_ascii_digit()).unwrap()]
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            numbers,
            (NEW_RUN_BINDS + 1..=2 * NEW_RUN_BINDS).collect::<Vec<_>>()
        );
        assert!(second.contains("'queued', 0, $40"), "{second}");
    }
}
