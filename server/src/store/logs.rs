//! A run's log lines, appended in batches by the worker as the task writes
//! them and read in pages by the API.

use caisson_host_api::log::Level;
use serde::{Deserialize, Serialize};

use super::db::Db;
use super::error::DbError;
use super::query::AnyQuery;
use super::write_tx::WriteTx;
use crate::model::columns::LevelName;
use crate::model::{LogSource, NewLogLine};

/// One stored log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct LogLine {
    pub seq: i64,
    pub attempt: i64,
    pub time: i64,
    #[sqlx(try_from = "LevelName")]
    pub level: Level,
    #[sqlx(try_from = "String")]
    pub source: LogSource,
    pub message: String,
}

/// The most lines one statement stores: [`log_rows_insert`] binds five
/// values a line, and a statement takes at most 32,766 (SQLite) or
/// 65,535 (PostgreSQL).
pub(super) const LOG_ROWS_PER_INSERT: usize = 100;

/// The insert of `lines` log lines of run `run` (a placeholder, such as
/// `$1`), attempt `attempt` (another), each line's values bound by
/// [`bind_log_rows`] from placeholder `$first` on. Each line's `seq` is the
/// run's last one plus its place in the chunk, the last one read by the
/// insert itself (see [`Db::insert_logs`]).
pub(super) fn log_rows_insert(run: &str, attempt: &str, first: usize, lines: usize) -> String {
    // `VALUES` names its columns `column1`, `column2`... on both backends.
    let mut sql = format!(
        "INSERT INTO run_logs (run_id, seq, attempt, time, level, source, message) \
         SELECT {run}, (SELECT COALESCE(MAX(seq), 0) FROM run_logs WHERE run_id = {run}) \
         + v.column1, {attempt}, v.column2, v.column3, v.column4, v.column5 FROM (VALUES "
    );
    for i in 0..lines {
        let p = first + i * 5;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${})",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4
        ));
    }
    sql.push_str(") AS v");
    sql
}

/// Binds `lines`' values to [`log_rows_insert`]'s placeholders.
pub(super) fn bind_log_rows(mut query: AnyQuery, lines: &[NewLogLine]) -> AnyQuery {
    for (place, line) in (1_i64..).zip(lines) {
        query = query
            .bind(place)
            .bind(line.time)
            .bind(line.level.as_str())
            .bind(line.source.as_str())
            .bind(line.message.as_str());
    }
    query
}

impl Db {
    /// Appends lines to a run's log; `seq` is assigned here, continuing
    /// after the run's last line.
    pub async fn append_logs(
        &self,
        run_id: &str,
        attempt: i64,
        lines: &[NewLogLine],
    ) -> Result<(), DbError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut turn = self.join_write().await;
        let mut tx = turn.transaction().await?;
        // A no-op write on the run's row first: it makes concurrent appends
        // to one run take turns (a row lock on PostgreSQL, the write lock on
        // SQLite, taken before the read so it cannot turn into a stale
        // snapshot), so two never read the same last `seq`.
        let locked = tx
            .fetch_all(
                "UPDATE runs SET attempts = attempts WHERE id = $1 RETURNING id",
                move |q| q.bind(run_id),
            )
            .await?;
        if locked.is_empty() {
            tx.rollback().await?;
            return Err(DbError::other(format!("no run {run_id}")));
        }
        Self::insert_logs(&mut tx, run_id, attempt, lines).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The insert of [`Db::append_logs`], in a transaction that already
    /// holds the run's row (its no-op write, or the write that finishes
    /// the run: [`Db::finish_and_claim`] stores an attempt's last lines
    /// with its outcome, in one commit).
    ///
    /// Each line's `seq` is the run's last one plus its place in the
    /// chunk, the last one read by the insert itself: one statement a
    /// chunk, where a read of `MAX(seq)` first took two. The row lock the
    /// caller holds keeps another append from reading the same last
    /// `seq`; the statement reads the table before it writes (PostgreSQL's
    /// snapshot; SQLite materialises an insert that reads its own table).
    pub(super) async fn insert_logs<'t>(
        tx: &mut WriteTx<'t>,
        run_id: &'t str,
        attempt: i64,
        lines: &'t [NewLogLine],
    ) -> Result<(), DbError> {
        for chunk in lines.chunks(LOG_ROWS_PER_INSERT) {
            let sql = log_rows_insert("$1", "$2", 3, chunk.len());
            tx.execute(sql, move |query| {
                bind_log_rows(query.bind(run_id).bind(attempt), chunk)
            })
            .await?;
        }
        Ok(())
    }

    /// Lines with `seq > after`, oldest first, at most `limit`. Tenant-checked.
    pub async fn logs(
        &self,
        tenant_id: &str,
        run_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>, DbError> {
        Ok(sqlx::query_as::<_, LogLine>(
            "SELECT l.seq AS seq, l.attempt AS attempt, l.time AS time, l.level AS level, \
             l.source AS source, l.message AS message FROM run_logs l JOIN runs r ON r.id = l.run_id \
             WHERE r.tenant_id = $1 AND l.run_id = $2 AND l.seq > $3 ORDER BY l.seq LIMIT $4",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(after)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?)
    }
}
