//! Schedules and workflows: the rows behind `/v1/schedules` and
//! `/v1/workflows`. Definitions and run templates are stored as JSON text;
//! the API validates them before they get here.

use serde::Serialize;
use sqlx::{FromRow, Row};

use super::db::{Db, new_id};
use super::error::DbError;
use super::query::{built, in_list};
use super::write_tx::{Statement, WriteTx};
use crate::model::columns::{Flag, JsonText};

/// A stored cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, FromRow)]
pub struct ScheduleRecord {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The run template (a `SubmitRun`).
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub template: serde_json::Value,
    /// `skip` or `all`.
    pub catch_up: String,
    #[sqlx(try_from = "Flag")]
    pub paused: bool,
    /// When it fires next (ms); `None` while paused.
    pub next_fire_at: Option<i64>,
    pub last_fired_at: Option<i64>,
    pub created_at: i64,
}

/// A stored workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, FromRow)]
pub struct WorkflowRecord {
    pub name: String,
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub definition: serde_json::Value,
    pub created_at: i64,
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, FromRow)]
pub struct WorkflowRunRecord {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    #[sqlx(rename = "workflow_name")]
    pub workflow: String,
    /// The definition as it was when the run started.
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub definition: serde_json::Value,
    /// running | succeeded | failed | cancelled
    pub state: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A workflow run the scheduler still moves along.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OpenWorkflowRun {
    pub id: String,
    pub tenant_id: String,
}

/// A step of a workflow run about to start, with what the event-driven
/// advance needs to count it down (see [`Db::create_workflow_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    pub name: String,
    /// How many steps it depends on.
    pub waiting: i64,
    /// The steps that depend on it.
    pub successors: Vec<String>,
}

/// What a step reaching its end set in motion, as the transaction that
/// ended it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub workflow_run_id: String,
    pub tenant_id: String,
    pub step: String,
    /// Whether the step succeeded (else it failed or was skipped).
    pub succeeded: bool,
    /// Pending successors none of whose dependencies is still open: the
    /// ones to start (or skip) now.
    pub ready: Vec<String>,
    /// Whether no step of the workflow run is open any more: it is over.
    pub all_ended: bool,
    /// Whether the workflow run was still running in the commit that
    /// settled the step: read there, so that starting what follows needs
    /// no read of its own. (A cancel after that commit ends a run queued
    /// for what follows in the run's own insert: `step_started`.)
    pub workflow_running: bool,
    /// For a map step: the index of the split whose run ended. The fields
    /// above then describe the step only if `step_ended`.
    pub split: Option<i64>,
    /// Whether the step itself ended (always, but for a map step's split
    /// whose siblings are still open).
    pub step_ended: bool,
}

/// The most names one `IN (...)` list binds (PostgreSQL allows 65,535
/// parameters, older SQLite 999).
const IN_LIST_CHUNK: usize = 500;

/// One step of a workflow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, FromRow)]
pub struct StepRecord {
    #[sqlx(rename = "step_name")]
    pub name: String,
    /// pending | running | succeeded | failed | skipped
    pub state: String,
    pub run_id: Option<String>,
    /// Why the step failed, when no run of its own says so (a map step
    /// whose listing failed or gave too many splits).
    #[sqlx(default)]
    pub error: Option<String>,
    /// A map step's number of splits, once it has listed its prefix.
    #[sqlx(default)]
    pub splits: Option<i64>,
}

const SCHEDULE_COLUMNS: &str =
    "id, name, cron, timezone, template, catch_up, paused, next_fire_at, last_fired_at, created_at";
const WORKFLOW_RUN_COLUMNS: &str =
    "id, tenant_id, workflow_name, definition, state, created_at, finished_at";

impl Db {
    // ---- schedules

    /// Stores a new schedule; a taken name is `Conflict`, and a tenant
    /// with `max_schedules` schedules gets [`DbError::QuotaExceeded`].
    pub async fn insert_schedule(
        &self,
        tenant_id: &str,
        schedule: &ScheduleRecord,
    ) -> Result<(), DbError> {
        let mut turn = self.begin_write().await;
        let mut tx = turn.begin().await?;
        let limit = Db::lock_tenant(&mut tx, tenant_id, "max_schedules").await?;
        // Dropping `tx` on a refusal rolls it back.
        Db::within_quota(
            &mut tx,
            tenant_id,
            ("max_schedules", limit),
            "SELECT COUNT(*) AS n FROM schedules WHERE tenant_id = $1",
        )
        .await?;
        sqlx::query(
            "INSERT INTO schedules (id, tenant_id, name, cron, timezone, template, catch_up, paused, \
             next_fire_at, last_fired_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&schedule.id)
        .bind(tenant_id)
        .bind(&schedule.name)
        .bind(&schedule.cron)
        .bind(&schedule.timezone)
        .bind(schedule.template.to_string())
        .bind(&schedule.catch_up)
        .bind(i64::from(schedule.paused))
        .bind(schedule.next_fire_at)
        .bind(schedule.last_fired_at)
        .bind(schedule.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_schedules(&self, tenant_id: &str) -> Result<Vec<ScheduleRecord>, DbError> {
        Ok(sqlx::query_as::<_, ScheduleRecord>(built(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE tenant_id = $1 ORDER BY name"
        )))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_schedule(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<ScheduleRecord>, DbError> {
        Ok(sqlx::query_as::<_, ScheduleRecord>(built(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE tenant_id = $1 AND name = $2"
        )))
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn delete_schedule(&self, tenant_id: &str, name: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Pauses (`next_fire_at = None`) or resumes a schedule.
    pub async fn set_schedule_paused(
        &self,
        tenant_id: &str,
        name: &str,
        paused: bool,
        next_fire_at: Option<i64>,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE schedules SET paused = $3, next_fire_at = $4 WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(i64::from(paused))
        .bind(next_fire_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Schedules due at `now`, with their tenant ids.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<(String, ScheduleRecord)>, DbError> {
        let rows = sqlx::query(built(format!(
            "SELECT tenant_id, {SCHEDULE_COLUMNS} FROM schedules \
             WHERE paused = 0 AND next_fire_at IS NOT NULL AND next_fire_at <= $1 ORDER BY next_fire_at"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("tenant_id")?, ScheduleRecord::from_row(row)?)))
            .collect()
    }

    /// Moves a schedule on, if its `next_fire_at` is still `expected`.
    /// Two schedulers racing for one firing: only one sees `true`.
    pub async fn advance_schedule(
        &self,
        id: &str,
        expected: i64,
        next_fire_at: Option<i64>,
        fired_at: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE schedules SET next_fire_at = $3, last_fired_at = $4 \
             WHERE id = $1 AND next_fire_at = $2 AND paused = 0",
        )
        .bind(id)
        .bind(expected)
        .bind(next_fire_at)
        .bind(fired_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- workflows

    /// Stores a workflow definition; a taken name is `Conflict`.
    pub async fn insert_workflow(
        &self,
        tenant_id: &str,
        name: &str,
        definition: &serde_json::Value,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query("INSERT INTO workflows (tenant_id, name, definition, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant_id)
            .bind(name)
            .bind(definition.to_string())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_workflows(&self, tenant_id: &str) -> Result<Vec<WorkflowRecord>, DbError> {
        Ok(sqlx::query_as::<_, WorkflowRecord>(
            "SELECT name, definition, created_at FROM workflows WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_workflow(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<WorkflowRecord>, DbError> {
        Ok(sqlx::query_as::<_, WorkflowRecord>(
            "SELECT name, definition, created_at FROM workflows WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn delete_workflow(&self, tenant_id: &str, name: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM workflows WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Starts a workflow run with every step pending. Returns its id.
    ///
    /// Each step keeps how many dependencies it waits for and which steps
    /// wait for it, so that ending a step's run moves its successors on in
    /// the same transaction (see [`Db::finish_and_claim`]).
    pub async fn create_workflow_run(
        &self,
        tenant_id: &str,
        workflow: &str,
        definition: &serde_json::Value,
        steps: &[NewStep],
        now: i64,
    ) -> Result<String, DbError> {
        let id = new_id();
        let mut turn = self.begin_write().await;
        let mut tx = turn.begin().await?;
        sqlx::query(
            "INSERT INTO workflow_runs (id, tenant_id, workflow_name, definition, state, created_at, \
             open_steps) VALUES ($1, $2, $3, $4, 'running', $5, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(workflow)
        .bind(definition.to_string())
        .bind(now)
        .bind(steps.len() as i64)
        .execute(&mut *tx)
        .await?;
        for step in steps {
            let successors =
                serde_json::to_string(&step.successors).map_err(|e| DbError::Other(e.into()))?;
            sqlx::query(
                "INSERT INTO workflow_steps (workflow_run_id, step_name, state, waiting, successors) \
                 VALUES ($1, $2, 'pending', $3, $4)",
            )
            .bind(&id)
            .bind(&step.name)
            .bind(step.waiting)
            .bind(successors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn get_workflow_run(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<WorkflowRunRecord>, DbError> {
        Ok(sqlx::query_as::<_, WorkflowRunRecord>(built(format!(
            "SELECT {WORKFLOW_RUN_COLUMNS} FROM workflow_runs WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Only the state of a tenant's workflow run, for a waiting GET: every
    /// run that ends in this process wakes it, and reading the whole row
    /// would parse the run's definition (a 1,000-step workflow's is about
    /// 100 KB of JSON) on every step's end.
    pub async fn workflow_run_state_of(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<String>, DbError> {
        let rows = self
            .read(
                "SELECT state FROM workflow_runs WHERE tenant_id = $1 AND id = $2",
                |q| q.bind(tenant_id).bind(id),
            )
            .await?;
        rows.first()
            .map(|row| row.try_get("state"))
            .transpose()
            .map_err(DbError::from)
    }

    /// A tenant's runs of one workflow, newest first.
    pub async fn list_workflow_runs(
        &self,
        tenant_id: &str,
        workflow: &str,
    ) -> Result<Vec<WorkflowRunRecord>, DbError> {
        Ok(sqlx::query_as::<_, WorkflowRunRecord>(built(format!(
            "SELECT {WORKFLOW_RUN_COLUMNS} FROM workflow_runs WHERE tenant_id = $1 AND workflow_name = $2 \
             ORDER BY created_at DESC LIMIT 100"
        )))
        .bind(tenant_id)
        .bind(workflow)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every workflow run still in progress, all tenants: the scheduler's
    /// work list. Without definitions, which the scheduler keeps parsed
    /// (see [`Db::workflow_run_definition`]).
    pub async fn open_workflow_runs(&self) -> Result<Vec<OpenWorkflowRun>, DbError> {
        Ok(sqlx::query_as::<_, OpenWorkflowRun>(
            "SELECT id, tenant_id FROM workflow_runs WHERE state = 'running' ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The definition a workflow run started with.
    pub async fn workflow_run_definition(
        &self,
        id: &str,
    ) -> Result<Option<serde_json::Value>, DbError> {
        let definition: Option<JsonText<serde_json::Value>> =
            sqlx::query_scalar::<_, JsonText<serde_json::Value>>(
                "SELECT definition FROM workflow_runs WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(definition.map(serde_json::Value::from))
    }

    pub async fn workflow_steps(&self, workflow_run_id: &str) -> Result<Vec<StepRecord>, DbError> {
        Ok(sqlx::query_as::<_, StepRecord>(
            "SELECT step_name, state, run_id, error, splits FROM workflow_steps \
             WHERE workflow_run_id = $1 ORDER BY step_name",
        )
        .bind(workflow_run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The steps of a workflow run, each with its run's state: one query,
    /// however many steps are running.
    pub async fn workflow_steps_with_runs(
        &self,
        workflow_run_id: &str,
    ) -> Result<Vec<(StepRecord, Option<crate::model::RunState>)>, DbError> {
        let rows = sqlx::query(
            "SELECT s.step_name, s.state, s.run_id, r.state AS run_state \
             FROM workflow_steps s LEFT JOIN runs r ON r.id = s.run_id \
             WHERE s.workflow_run_id = $1 ORDER BY s.step_name",
        )
        .bind(workflow_run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let run_state: Option<String> = row.try_get("run_state")?;
                Ok((
                    StepRecord::from_row(row)?,
                    run_state.as_deref().and_then(crate::model::RunState::parse),
                ))
            })
            .collect()
    }

    /// The inline outputs of the runs of `steps` of a workflow run, by
    /// step, read together: a step joining a thousand others reads their
    /// outputs in a few statements, not one each. A step without a run is
    /// left out; a run without an inline output gives an empty one.
    pub async fn step_outputs(
        &self,
        workflow_run_id: &str,
        steps: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let mut outputs = Vec::with_capacity(steps.len());
        for chunk in steps.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT s.step_name, r.output FROM workflow_steps s JOIN runs r ON r.id = s.run_id \
                 WHERE s.workflow_run_id = $1 AND s.step_name IN ({})",
                in_list(2, chunk.len())
            );
            let rows = self
                .read(sql, |mut query| {
                    query = query.bind(workflow_run_id);
                    for name in chunk {
                        query = query.bind(*name);
                    }
                    query
                })
                .await?;
            for row in rows {
                let output: Option<Vec<u8>> = row.try_get("output")?;
                outputs.push((row.try_get("step_name")?, output.unwrap_or_default()));
            }
        }
        Ok(outputs)
    }

    /// Moves a step from `from` to `to` (with its run id, if any). Returns
    /// whether it moved: schedulers racing on one step agree on one winner.
    /// A step that ends (`to` is succeeded, failed or skipped) counts its
    /// successors down in the same transaction, as `Db::settle_step` says.
    pub async fn move_step(
        &self,
        workflow_run_id: &str,
        step: &str,
        from: &str,
        to: &str,
        run_id: Option<&str>,
    ) -> Result<bool, DbError> {
        if matches!(to, "succeeded" | "failed" | "skipped") {
            let mut turn = self.join_write().await;
            let tx = turn.transaction().await?;
            let settled =
                Self::settle_step_committed(tx, workflow_run_id, step, Some(from), to).await?;
            return Ok(settled.is_some());
        }
        let done = sqlx::query(
            "UPDATE workflow_steps SET state = $4, run_id = COALESCE($5, run_id) \
             WHERE workflow_run_id = $1 AND step_name = $2 AND state = $3",
        )
        .bind(workflow_run_id)
        .bind(step)
        .bind(from)
        .bind(to)
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// [`Db::settle_step`] with no run of its own, and `tx` committed.
    pub(super) async fn settle_step_committed(
        mut tx: WriteTx<'_>,
        workflow_run_id: &str,
        step: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<Option<Settled>, DbError> {
        let settled = Self::settle_step(&mut tx, workflow_run_id, step, from, to, None).await?;
        tx.commit().await?;
        Ok(settled)
    }

    /// Ends a step (`from` → `to`, a final state) in `tx`, which the
    /// caller commits, if the step is still in `from` (`None`: pending or
    /// running), recording `run_id` as its run if given. Counts down the
    /// dependencies its successors wait for and the run's open steps, and
    /// returns what that made ready; `None` if the step did not move
    /// (another process ended it first, so the count-down happens exactly
    /// once).
    ///
    /// Steps of runs started before the counters existed have none; for
    /// them nothing is ready and `all_ended` stays false, and the
    /// scheduler's periodic pass moves them on.
    pub(super) async fn settle_step(
        tx: &mut WriteTx<'_>,
        workflow_run_id: &str,
        step: &str,
        from: Option<&str>,
        to: &str,
        run_id: Option<&str>,
    ) -> Result<Option<Settled>, DbError> {
        let bound = (
            workflow_run_id.to_string(),
            step.to_string(),
            from.map(str::to_string),
            to.to_string(),
            run_id.map(str::to_string),
        );
        let rows = tx
            .fetch_all(
                "UPDATE workflow_steps SET state = $4, run_id = COALESCE($5, run_id) \
                 WHERE workflow_run_id = $1 AND step_name = $2 \
                 AND (state = $3 OR ($3 IS NULL AND state IN ('pending', 'running'))) \
                 RETURNING successors",
                move |q| {
                    let (id, step, from, to, run_id) = bound;
                    q.bind(id).bind(step).bind(from).bind(to).bind(run_id)
                },
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let successors: Option<String> = row.try_get("successors")?;
        let successors: Vec<String> = match successors {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| DbError::other(format!("corrupt successors of {step}: {e}")))?,
            None => Vec::new(),
        };
        let mut reads = Vec::new();
        for chunk in successors.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "UPDATE workflow_steps SET waiting = waiting - 1 \
                 WHERE workflow_run_id = $1 AND step_name IN ({}) RETURNING step_name, state, waiting",
                in_list(2, chunk.len())
            );
            let id = workflow_run_id.to_string();
            let names = chunk.to_vec();
            reads.push(Statement::new(sql, move |q| {
                names.into_iter().fold(q.bind(id), |q, name| q.bind(name))
            }));
        }
        let id = workflow_run_id.to_string();
        reads.push(Statement::new(
            "UPDATE workflow_runs SET open_steps = open_steps - 1 WHERE id = $1 \
             RETURNING tenant_id, open_steps, state",
            move |q| q.bind(id),
        ));
        let mut results = tx.fetch_each(reads).await?;
        let run_rows = results.pop().unwrap_or_default();
        let mut ready = Vec::new();
        for row in results.iter().flatten() {
            let waiting: Option<i64> = row.try_get("waiting")?;
            let state: String = row.try_get("state")?;
            if waiting == Some(0) && state == "pending" {
                ready.push(row.try_get("step_name")?);
            }
        }
        let row = run_rows
            .first()
            .ok_or_else(|| DbError::other(format!("workflow run {workflow_run_id} vanished")))?;
        let open: Option<i64> = row.try_get("open_steps")?;
        let workflow_state: String = row.try_get("state")?;
        Ok(Some(Settled {
            workflow_run_id: workflow_run_id.to_string(),
            tenant_id: row.try_get("tenant_id")?,
            step: step.to_string(),
            succeeded: to == "succeeded",
            ready,
            all_ended: open == Some(0),
            workflow_running: workflow_state == "running",
            split: None,
            step_ended: true,
        }))
    }

    /// Ends a workflow run.
    pub async fn finish_workflow_run(
        &self,
        id: &str,
        state: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE workflow_runs SET state = $2, finished_at = $3 WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(state)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Db {
    /// The first schedule or workflow of `tenant_id` whose runs use
    /// `module`, named (`schedule NAME`, `workflow NAME`): a module in use
    /// is not deleted.
    pub async fn module_user(
        &self,
        tenant_id: &str,
        module: &str,
    ) -> Result<Option<String>, DbError> {
        for schedule in self.list_schedules(tenant_id).await? {
            if schedule.template["module"] == module {
                return Ok(Some(format!("schedule {}", schedule.name)));
            }
        }
        for workflow in self.list_workflows(tenant_id).await? {
            let uses = workflow.definition["steps"]
                .as_array()
                .is_some_and(|steps| steps.iter().any(|s| s["run"]["module"] == module));
            if uses {
                return Ok(Some(format!("workflow {}", workflow.name)));
            }
        }
        Ok(None)
    }
}
