//! The splits of map steps (`workflow_splits`): stored when a map step
//! starts, each submitted as a run of its own (at most the step's
//! `parallelism` at a time), each settled in the transaction that ends its
//! run; the last one to settle ends the step.

use serde::Serialize;
use sqlx::{FromRow, Row};

use super::db::Db;
use super::error::DbError;
use super::flows::Settled;
use super::query::built;
use super::runs::{CANCELLED_WITH_WORKFLOW, QueueRoom};
use super::write_tx::WriteTx;
use crate::model::{RunSpec, RunState};

/// A split to store when its map step starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSplit {
    /// Its run's input (JSON, see `map::Split::input`).
    pub input: String,
    pub objects: i64,
    pub bytes: i64,
}

/// A stored split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, FromRow)]
pub struct SplitRecord {
    #[serde(skip)]
    pub step_name: String,
    /// 0-based: the order its output has in the dependent step's input.
    #[sqlx(rename = "split_index")]
    pub index: i64,
    /// pending | running | succeeded | failed | cancelled
    pub state: String,
    pub run_id: Option<String>,
    pub objects: i64,
    pub bytes: i64,
}

/// A split waiting for its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSplit {
    pub index: i64,
    pub input: String,
}

/// A split's output, as its run left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitOutputRow {
    pub run_id: Option<String>,
    /// Only for a split whose run succeeded.
    pub succeeded: bool,
    pub output: Option<Vec<u8>>,
    pub output_key: Option<String>,
}

/// What a workflow run's cancellation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledWorkflow {
    /// The workflow run's state after the call.
    pub state: String,
    /// Its runs that were running, which their workers must be told to stop.
    pub running: Vec<String>,
    /// Its runs that were queued, now cancelled.
    pub dequeued: usize,
}

/// Splits inserted per statement (7 values each, far under any
/// backend's parameter limit).
const INSERT_CHUNK: usize = 100;

impl Db {
    /// Starts a map step: pending → running, with its splits stored. With
    /// no splits, the step succeeds at once (its dependants get `[]`).
    /// `None` if the step was no longer pending (another scheduler started
    /// it); else what an immediate end set in motion.
    pub async fn start_map_step(
        &self,
        workflow_run_id: &str,
        step: &str,
        splits: &[NewSplit],
    ) -> Result<Option<Option<Settled>>, DbError> {
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        let count = splits.len() as i64;
        let started = tx
            .execute(
                "UPDATE workflow_steps SET state = 'running', splits = $3, splits_open = $3, \
                 splits_failed = 0 \
                 WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'pending'",
                move |q| q.bind(workflow_run_id).bind(step).bind(count),
            )
            .await?;
        if started == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        for (c, chunk) in splits.chunks(INSERT_CHUNK).enumerate() {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 3 + i * 4;
                    format!(
                        "($1, $2, ${}, ${}, ${}, ${}, 'pending')",
                        n,
                        n + 1,
                        n + 2,
                        n + 3
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO workflow_splits (workflow_run_id, step_name, split_index, input, \
                 objects, bytes, state) VALUES {}",
                rows.join(", ")
            );
            tx.execute(sql, move |mut query| {
                query = query.bind(workflow_run_id).bind(step);
                for (i, split) in chunk.iter().enumerate() {
                    query = query
                        .bind((c * INSERT_CHUNK + i) as i64)
                        .bind(&split.input)
                        .bind(split.objects)
                        .bind(split.bytes);
                }
                query
            })
            .await?;
        }
        if !splits.is_empty() {
            tx.commit().await?;
            return Ok(Some(None));
        }
        let settled =
            Self::settle_step_committed(tx, workflow_run_id, step, Some("running"), "succeeded")
                .await?;
        Ok(Some(settled))
    }

    /// Fails a pending step that could not start, saying why (a map step
    /// whose listing failed). `None` if it was no longer pending.
    pub async fn fail_step(
        &self,
        workflow_run_id: &str,
        step: &str,
        error: &str,
    ) -> Result<Option<Settled>, DbError> {
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        // Guarded as the step's end below is, so the error is written if
        // and only if the step fails here.
        let bound = (
            workflow_run_id.to_string(),
            step.to_string(),
            error.to_string(),
        );
        tx.execute(
            "UPDATE workflow_steps SET error = $3 \
             WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'pending'",
            move |q| {
                let (id, step, error) = bound;
                q.bind(id).bind(step).bind(error)
            },
        )
        .await?;
        Self::settle_step_committed(tx, workflow_run_id, step, Some("pending"), "failed").await
    }

    /// The pending splits of a running map step that may start now: as
    /// many as `parallelism` leaves room for, lowest index first.
    pub async fn launchable_splits(
        &self,
        workflow_run_id: &str,
        step: &str,
        parallelism: i64,
    ) -> Result<Vec<PendingSplit>, DbError> {
        let running: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM workflow_splits \
             WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'running'",
        )
        .bind(workflow_run_id)
        .bind(step)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let room = parallelism - running;
        if room <= 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT split_index, input FROM workflow_splits \
             WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'pending' \
             ORDER BY split_index LIMIT $3",
        )
        .bind(workflow_run_id)
        .bind(step)
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PendingSplit {
                    index: row.try_get("split_index")?,
                    input: row.try_get("input")?,
                })
            })
            .collect()
    }

    /// Queues `run` as split `index`'s run, if the split is still pending,
    /// its step still running and fewer than `parallelism` of its splits
    /// run; all in one transaction, so racing schedulers start a split
    /// once and never pass the step's parallelism. Returns the run's id,
    /// or `None` when nothing was queued. A tenant at its
    /// `max_queued_runs` gets [`DbError::QuotaExceeded`].
    pub async fn submit_split(
        &self,
        run: &RunSpec,
        index: i64,
        parallelism: i64,
        now: i64,
    ) -> Result<Option<String>, DbError> {
        let (Some(workflow_run_id), Some(step)) = (&run.workflow_run_id, &run.step_name) else {
            return Err(DbError::other("a split's run names no workflow step"));
        };
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        // A write to the step's row first: it holds the row until commit,
        // so the count below cannot be raced by another submission.
        let held = tx
            .execute(
                "UPDATE workflow_steps SET splits = splits \
                 WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'running'",
                move |q| q.bind(workflow_run_id).bind(step),
            )
            .await?;
        if held == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let counted = tx
            .fetch_all(
                "SELECT COUNT(*) AS n FROM workflow_splits \
                 WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'running'",
                move |q| q.bind(workflow_run_id).bind(step),
            )
            .await?;
        let running: i64 = match counted.first() {
            Some(row) => row.try_get("n")?,
            None => 0,
        };
        if running >= parallelism {
            tx.rollback().await?;
            return Ok(None);
        }
        let moved = tx
            .execute(
                "UPDATE workflow_splits SET state = 'running' WHERE workflow_run_id = $1 \
                 AND step_name = $2 AND split_index = $3 AND state = 'pending'",
                move |q| q.bind(workflow_run_id).bind(step).bind(index),
            )
            .await?;
        if moved == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let key = run.idempotency_key.as_deref();
        let mut room = QueueRoom::of(&mut tx, self.kind, &run.tenant_id, key).await?;
        let (run_id, _) = Self::insert_run(&mut tx, self.kind, run, &mut room, now).await?;
        let split_run = run_id.clone();
        tx.execute(
            "UPDATE workflow_splits SET run_id = $4 \
             WHERE workflow_run_id = $1 AND step_name = $2 AND split_index = $3",
            move |q| {
                q.bind(workflow_run_id)
                    .bind(step)
                    .bind(index)
                    .bind(split_run)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(run_id))
    }

    /// Fails every pending split of a running map step whose runs cannot
    /// be admitted any more (its module or a grant went away), saying why
    /// on the step. Returns the step's end if no split is left running.
    pub async fn fail_pending_splits(
        &self,
        workflow_run_id: &str,
        step: &str,
        error: &str,
    ) -> Result<Option<Settled>, DbError> {
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        let failed = tx
            .execute(
                "UPDATE workflow_splits SET state = 'failed' \
                 WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'pending'",
                move |q| q.bind(workflow_run_id).bind(step),
            )
            .await? as i64;
        if failed == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let rows = tx
            .fetch_all(
                "UPDATE workflow_steps SET splits_open = splits_open - $3, \
                 splits_failed = splits_failed + $3, error = $4 \
                 WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'running' \
                 RETURNING splits_open",
                move |q| q.bind(workflow_run_id).bind(step).bind(failed).bind(error),
            )
            .await?;
        let open: i64 = match rows.first() {
            Some(row) => row.try_get("splits_open")?,
            None => 1,
        };
        if open > 0 {
            tx.commit().await?;
            return Ok(None);
        }
        Self::settle_step_committed(tx, workflow_run_id, step, Some("running"), "failed").await
    }

    /// Settles the split whose run `run_id` ended as `state`, in `tx`, the
    /// transaction that ended it, which the caller commits. The split's
    /// step ends with its last split: succeeded if every split succeeded,
    /// else failed. `None` if the split was settled already, or its step ended
    /// another way.
    pub(super) async fn settle_split(
        tx: &mut WriteTx<'_>,
        run_id: &str,
        state: RunState,
    ) -> Result<Option<Settled>, DbError> {
        let to = match state {
            RunState::Succeeded => "succeeded",
            RunState::Cancelled => "cancelled",
            _ => "failed",
        };
        // The update guards the split's state, so a split settled
        // meanwhile settles once.
        let id = run_id.to_string();
        let rows = tx
            .fetch_all(
                "UPDATE workflow_splits SET state = $2 WHERE run_id = $1 AND state = 'running' \
                 RETURNING workflow_run_id, step_name, split_index",
                move |q| q.bind(id).bind(to),
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let workflow_run_id: String = row.try_get("workflow_run_id")?;
        let step: String = row.try_get("step_name")?;
        let index: i64 = row.try_get("split_index")?;
        let failed = i64::from(state != RunState::Succeeded);
        let bound = (workflow_run_id.clone(), step.clone());
        let rows = tx
            .fetch_all(
                "UPDATE workflow_steps SET splits_open = splits_open - 1, \
                 splits_failed = splits_failed + $3 \
                 WHERE workflow_run_id = $1 AND step_name = $2 AND state = 'running' \
                 RETURNING splits_open, splits_failed, \
                 (SELECT tenant_id FROM workflow_runs WHERE id = $1) AS tenant_id, \
                 (SELECT state FROM workflow_runs WHERE id = $1) AS workflow_state",
                move |q| {
                    let (id, step) = bound;
                    q.bind(id).bind(step).bind(failed)
                },
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let open: i64 = row.try_get("splits_open")?;
        let failed_total: i64 = row.try_get("splits_failed")?;
        if open <= 0 {
            let to = if failed_total == 0 {
                "succeeded"
            } else {
                "failed"
            };
            let settled =
                Self::settle_step(tx, &workflow_run_id, &step, Some("running"), to, None).await?;
            return Ok(settled.map(|s| Settled {
                split: Some(index),
                ..s
            }));
        }
        let tenant_id: String = row.try_get("tenant_id")?;
        let workflow_state: String = row.try_get("workflow_state")?;
        Ok(Some(Settled {
            workflow_run_id,
            tenant_id,
            step,
            succeeded: failed == 0,
            ready: Vec::new(),
            all_ended: false,
            workflow_running: workflow_state == "running",
            split: Some(index),
            step_ended: false,
        }))
    }

    /// Settles the running splits of a map step whose runs ended without
    /// settling them (a queued run cancelled on its own, or a process that
    /// died): the periodic pass's recovery. Returns the step's end, if
    /// that settled it.
    pub async fn settle_ended_splits(
        &self,
        workflow_run_id: &str,
        step: &str,
    ) -> Result<Option<Settled>, DbError> {
        let rows = sqlx::query(
            "SELECT s.run_id, r.state AS run_state FROM workflow_splits s \
             JOIN runs r ON r.id = s.run_id \
             WHERE s.workflow_run_id = $1 AND s.step_name = $2 AND s.state = 'running' \
             AND r.state NOT IN ('queued', 'running')",
        )
        .bind(workflow_run_id)
        .bind(step)
        .fetch_all(&self.pool)
        .await?;
        let mut ended = None;
        for row in rows {
            let run_id: String = row.try_get("run_id")?;
            let run_state: String = row.try_get("run_state")?;
            let Some(state) = RunState::parse(&run_state) else {
                continue;
            };
            let mut turn = self.join_write().await;
            let mut tx = turn.transaction().await?;
            let settled = Self::settle_split(&mut tx, &run_id, state).await?;
            tx.commit().await?;
            if let Some(settled) = settled
                && settled.step_ended
            {
                ended = Some(settled);
            }
        }
        Ok(ended)
    }

    /// A map step's split outputs, in split order.
    pub async fn split_outputs(
        &self,
        workflow_run_id: &str,
        step: &str,
    ) -> Result<Vec<SplitOutputRow>, DbError> {
        let rows = sqlx::query(
            "SELECT s.run_id, r.state AS run_state, r.output, r.output_key \
             FROM workflow_splits s LEFT JOIN runs r ON r.id = s.run_id \
             WHERE s.workflow_run_id = $1 AND s.step_name = $2 ORDER BY s.split_index",
        )
        .bind(workflow_run_id)
        .bind(step)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let run_state: Option<String> = row.try_get("run_state")?;
                Ok(SplitOutputRow {
                    run_id: row.try_get("run_id")?,
                    succeeded: run_state.as_deref() == Some("succeeded"),
                    output: row.try_get("output")?,
                    output_key: row.try_get("output_key")?,
                })
            })
            .collect()
    }

    /// Every split of a workflow run, by step and index.
    pub async fn workflow_splits(
        &self,
        workflow_run_id: &str,
    ) -> Result<Vec<SplitRecord>, DbError> {
        Ok(sqlx::query_as::<_, SplitRecord>(
            "SELECT step_name, split_index, state, run_id, objects, bytes FROM workflow_splits \
             WHERE workflow_run_id = $1 ORDER BY step_name, split_index",
        )
        .bind(workflow_run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The state of a workflow run (any tenant's), if it exists.
    pub async fn workflow_run_state(&self, id: &str) -> Result<Option<String>, DbError> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT state FROM workflow_runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Cancels a running workflow run: no step or split starts any more,
    /// its queued runs are cancelled here, and the ids of its running runs
    /// are returned for the caller to cancel (as a run's cancel does).
    /// `None` if the tenant has no such workflow run; a run already over
    /// is left as it is.
    pub async fn cancel_workflow_run(
        &self,
        tenant_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<CancelledWorkflow>, DbError> {
        const OPEN: &str = "EXISTS (SELECT 1 FROM workflow_runs \
             WHERE id = $1 AND tenant_id = $2 AND state = 'running')";
        let mut turn = self.begin_write().await;
        let mut tx = turn.begin().await?;
        // Writes only, from the first statement: a SQLite transaction that
        // read first could not take the write lock once another writer
        // committed. Splits and steps first, then the run's row: the order
        // in which a step's end takes them, so the two cannot deadlock.
        sqlx::query(built(format!(
            "UPDATE workflow_splits SET state = 'cancelled' \
             WHERE workflow_run_id = $1 AND state = 'pending' AND {OPEN}"
        )))
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(built(format!(
            "UPDATE workflow_steps SET state = 'skipped' \
             WHERE workflow_run_id = $1 AND state = 'pending' AND {OPEN}"
        )))
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        let ended = sqlx::query(
            "UPDATE workflow_runs SET state = 'cancelled', finished_at = $3 \
             WHERE id = $1 AND tenant_id = $2 AND state = 'running' RETURNING id",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        if ended.is_empty() {
            tx.rollback().await?;
            let state =
                sqlx::query("SELECT state FROM workflow_runs WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant_id)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            return match state {
                None => Ok(None),
                Some(row) => Ok(Some(CancelledWorkflow {
                    state: row.try_get("state")?,
                    running: Vec::new(),
                    dequeued: 0,
                })),
            };
        }
        let dequeued = sqlx::query(
            "UPDATE runs SET state = 'cancelled', finished_at = $2, error = $3 \
             WHERE workflow_run_id = $1 AND state = 'queued' RETURNING id",
        )
        .bind(id)
        .bind(now)
        .bind(CANCELLED_WITH_WORKFLOW)
        .fetch_all(&mut *tx)
        .await?;
        for row in &dequeued {
            let run_id: String = row.try_get("id")?;
            sqlx::query(
                "UPDATE workflow_splits SET state = 'cancelled' WHERE run_id = $1 AND state = 'running'",
            )
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        let running = sqlx::query(
            "SELECT id FROM runs WHERE workflow_run_id = $1 AND state = 'running' ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<Vec<String>, _>>()?;
        tx.commit().await?;
        Ok(Some(CancelledWorkflow {
            state: "cancelled".into(),
            running,
            dequeued: dequeued.len(),
        }))
    }
}
