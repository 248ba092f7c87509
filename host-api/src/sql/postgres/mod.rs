//! PostgreSQL sources.
//!
//! A read-only source is enforced by the server: every guest statement runs
//! in a host-issued `BEGIN READ ONLY` ... `COMMIT`, and the session default
//! is read-only too. A connection is reset to a clean session before it goes
//! back to the pool, and a statement still running when its run ends is
//! stopped with `pg_terminate_backend` (see the `sql` module docs).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgPool, PgPoolOptions};
use sqlx::{
    AssertSqlSafe, Connection as _, Executor as _, Postgres, Row as _, SqlSafeStr, SqlStr,
    Statement as _,
};
use tokio::time::Instant;

use super::backend::{ACQUIRE_TIMEOUT, BeginOptions, DecodedRow, SqlBackend, SqlSession, columns};
use super::config::SqlSourceConfig;
use super::error::map_sqlx_error;
use crate::bindings::caisson::task::sql::{
    Column, DatabaseError, ExecuteResult, IsolationLevel, Value,
};
use crate::{BoxError, ConfigError, SqlError as WitError};

mod decode;
mod params;

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub(super) const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
pub(super) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

const PG_SESSION_READ_ONLY: &str = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY";

/// What a PostgreSQL session is reset with before it goes back to the pool,
/// after sqlx's own statement cache is cleared: `DISCARD ALL`, spelled out
/// because `DISCARD ALL` itself cannot run in a multi-statement query.
/// `DEALLOCATE ALL` is what stops prepared-statement hijacking: without it a
/// task can `PREPARE` a statement under a name sqlx uses (`sqlx_s_1`) and the
/// next run on the connection executes it with its own parameters.
const PG_RESET_SESSION: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     DEALLOCATE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; \
     DISCARD SEQUENCES";

/// [`PG_RESET_SESSION`], then the read-only session default again (`RESET
/// ALL` clears it).
const PG_RESET_READ_ONLY_SESSION: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; \
     RESET ALL; DEALLOCATE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; \
     DISCARD TEMP; DISCARD SEQUENCES; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY";

/// A PostgreSQL source: its pool, and whether it is read-only.
pub(super) struct PgBackend {
    pool: PgPool,
    read_only: bool,
}

// Hand-written: the pool's connect options hold the password.
impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// A lazy pool for the source `label`: nothing connects yet.
    pub(super) fn new(label: &str, config: &SqlSourceConfig) -> Result<Self, ConfigError> {
        let invalid = |message: &str, source: Option<BoxError>| ConfigError::Invalid {
            kind: "sql",
            label: label.to_owned(),
            message: message.to_owned(),
            source,
        };
        if !(config.url.starts_with("postgres://") || config.url.starts_with("postgresql://")) {
            return Err(invalid(
                "a postgres url must start with `postgres://` or `postgresql://`",
                None,
            ));
        }
        // Parse errors from sqlx describe the problem (a bad port, an unknown
        // parameter) without echoing the URL, so they are safe to show.
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| invalid("bad postgres url", Some(e.into())))?;
        let mut pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if config.read_only {
            // Defence in depth only: the guest can change a session
            // default with `SET`. What enforces read-only is the
            // `BEGIN READ ONLY` around every statement (see `PgSession`).
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(PG_SESSION_READ_ONLY).await?;
                    Ok(())
                })
            });
        }
        Ok(Self {
            pool: pool.connect_lazy_with(options),
            read_only: config.read_only,
        })
    }
}

#[async_trait::async_trait]
impl SqlBackend for PgBackend {
    /// One round trip more than the pool's: the backend's process id (to
    /// stop its statement later), and the run's time left as
    /// `statement_timeout`.
    async fn acquire(&self, deadline: Option<Instant>) -> Result<Box<dyn SqlSession>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let pid: i32 = match deadline {
            Some(deadline) => {
                // At least 1 ms: 0 would mean no timeout at all.
                let left = deadline.saturating_duration_since(Instant::now());
                let millis = left.as_millis().max(1).to_string();
                sqlx::query_scalar(
                    "SELECT pg_backend_pid() FROM set_config('statement_timeout', $1, false)",
                )
                .bind(millis)
                .persistent(false)
                .fetch_one(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_scalar("SELECT pg_backend_pid()")
                    .persistent(false)
                    .fetch_one(&mut *conn)
                    .await?
            }
        };
        Ok(Box::new(PgSession {
            conn,
            pid,
            options: self.pool.connect_options(),
            read_only: self.read_only,
        }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// A pooled PostgreSQL connection lent to one run.
struct PgSession {
    conn: PoolConnection<Postgres>,
    /// The backend's process id, to terminate from another connection.
    pid: i32,
    options: Arc<PgConnectOptions>,
    /// Whether every guest statement is wrapped in a host-issued read-only
    /// transaction (see the module docs).
    read_only: bool,
}

impl PgSession {
    /// Runs a fixed, host-written statement. A plain `&str` has no
    /// arguments, so sqlx sends it with the simple protocol (unprepared,
    /// and several statements may be separated by `;`).
    async fn run_host_sql(&mut self, sql: impl SqlSafeStr + Send) -> Result<(), sqlx::Error> {
        (&mut *self.conn).execute(sql).await.map(drop)
    }
}

#[async_trait::async_trait]
impl SqlSession for PgSession {
    /// sqlx caches prepared statements per connection by their text alone,
    /// and PostgreSQL fixes a statement's parameter types when it is
    /// prepared. Guest parameters are dynamically typed, so the same text
    /// bound first with an `int` and later with a `float` or `timestamp`
    /// would have the later value's bytes read as the first type: silently
    /// wrong data. A trailing comment naming the parameter types makes each
    /// combination its own cache entry. (Appending a line comment cannot
    /// change what a complete statement means.)
    fn statement_text(&self, statement: String, params: &[Value]) -> String {
        if params.is_empty() {
            return statement;
        }
        let mut text = statement;
        text.push_str("\n-- caisson parameter types:");
        for param in params {
            text.push(' ');
            text.push_str(params::param_type(param).1);
        }
        text
    }

    fn fetch(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<BoxStream<'_, Result<DecodedRow, WitError>>, WitError> {
        let arguments = params::arguments(params)?;
        let mut first = true;
        let rows = (&mut *self.conn).fetch(sqlx::query_with(statement, arguments));
        Ok(rows
            .map(move |row| {
                let row = row.map_err(map_error)?;
                let columns = std::mem::take(&mut first).then(|| columns(row.columns()));
                Ok(DecodedRow::new(decode::row_values(&row)?, columns))
            })
            .boxed())
    }

    // PostgreSQL reports no inserted id: `RETURNING` does that.
    async fn execute(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError> {
        (&mut *self.conn)
            .execute(sqlx::query_with(statement, params::arguments(params)?))
            .await
            .map(|done| ExecuteResult {
                rows_affected: done.rows_affected(),
                last_insert_id: None,
            })
            .map_err(map_error)
    }

    /// The statement has just run, so preparing it again is a hit in sqlx's
    /// statement cache, not a round trip.
    async fn describe_columns(&mut self, statement: SqlStr) -> Result<Vec<Column>, WitError> {
        let prepared = (&mut *self.conn)
            .prepare(statement)
            .await
            .map_err(map_error)?;
        Ok(columns(prepared.columns()))
    }

    async fn start_statement(&mut self) -> Result<(), WitError> {
        if self.read_only {
            self.run_host_sql("BEGIN READ ONLY")
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }

    /// Ends the wrapping transaction. After a failed statement PostgreSQL
    /// turns this `COMMIT` into a rollback; if the guest's statement was
    /// itself `COMMIT`, this one is a no-op with a warning.
    async fn finish_statement(&mut self) -> Result<(), WitError> {
        if self.read_only {
            self.run_host_sql("COMMIT").await.map_err(map_error)?;
        }
        Ok(())
    }

    async fn begin(&mut self, options: &BeginOptions) -> Result<(), WitError> {
        // On a read-only source the guest's transaction is only
        // bookkeeping: each statement still runs in its own host-issued
        // `BEGIN READ ONLY` ... `COMMIT`, because a transaction the guest can
        // end (with a `COMMIT` statement) cannot be what keeps it read-only.
        // Nothing is written, so nothing is lost but snapshot consistency
        // across statements.
        if self.read_only {
            return Ok(());
        }
        // Built from fixed words only, never from guest text.
        let mut begin = String::from("BEGIN");
        if let Some(level) = options.isolation_level {
            begin.push_str(match level {
                IsolationLevel::ReadUncommitted => " ISOLATION LEVEL READ UNCOMMITTED",
                IsolationLevel::ReadCommitted => " ISOLATION LEVEL READ COMMITTED",
                IsolationLevel::RepeatableRead => " ISOLATION LEVEL REPEATABLE READ",
                IsolationLevel::Serializable => " ISOLATION LEVEL SERIALIZABLE",
            });
        }
        if options.read_only {
            begin.push_str(" READ ONLY");
        }
        // Built from the fixed fragments above only: no input reaches it.
        self.run_host_sql(AssertSqlSafe(begin))
            .await
            .map_err(map_error)
    }

    async fn commit(&mut self) -> Result<(), WitError> {
        if self.read_only {
            return Ok(());
        }
        // PostgreSQL answers `COMMIT` in a transaction that an earlier error
        // aborted by rolling back, without an error. Probe first so the
        // guest is not told its writes were committed when they were not.
        if let Err(e) = self.run_host_sql("SELECT 1").await {
            let aborted = sqlstate(&e) == Some("25P02");
            let _ = self.run_host_sql("ROLLBACK").await;
            return Err(if aborted {
                WitError::InvalidInput(
                    "a statement in this transaction failed, so it was rolled back; \
                     nothing was committed"
                        .into(),
                )
            } else {
                map_error(e)
            });
        }
        self.run_host_sql("COMMIT").await.map_err(map_error)
    }

    /// A failed PostgreSQL `COMMIT` (a deferred constraint, a serialization
    /// failure) rolls back: the transaction is over.
    fn failed_commit_keeps_transaction(&self) -> bool {
        false
    }

    async fn rollback(&mut self) -> Result<(), WitError> {
        if self.read_only {
            return Ok(());
        }
        self.run_host_sql("ROLLBACK").await.map_err(map_error)
    }

    async fn release(self: Box<Self>) {
        let mut conn = self.conn;
        // Always roll back, not only after `begin`: the guest may have sent
        // `BEGIN` as a statement (without a transaction this is a warning).
        // Then forget sqlx's prepared statements before `DEALLOCATE ALL`
        // drops them on the server, so the two agree.
        let reset = if self.read_only {
            PG_RESET_READ_ONLY_SESSION
        } else {
            PG_RESET_SESSION
        };
        let reusable = (&mut *conn).execute("ROLLBACK").await.is_ok()
            && conn.clear_cached_statements().await.is_ok()
            && (&mut *conn).execute(reset).await.is_ok();
        if !reusable {
            let _ = conn.close().await;
        }
        // Otherwise dropping `conn` returns it to the pool.
    }

    async fn abort(self: Box<Self>) {
        // Closing the socket does not stop the backend: it goes on with a
        // `pg_sleep` or an endless query until it next writes to the client.
        // End it from another connection (not from the pool, which the run
        // may have used up).
        drop(self.conn.detach());
        tokio::spawn(terminate_backend(self.options, self.pid));
    }
}

async fn terminate_backend(options: Arc<PgConnectOptions>, pid: i32) {
    let terminated = tokio::time::timeout(ACQUIRE_TIMEOUT, async {
        let mut conn = PgConnection::connect_with(&options).await?;
        let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(done)
    })
    .await;
    match terminated {
        Ok(Ok(_)) => tracing::debug!(pid, "stopped the statement of a finished run"),
        Ok(Err(e)) => {
            tracing::warn!(pid, error = %e, "could not stop the statement of a finished run")
        }
        Err(_) => tracing::warn!(pid, "timed out stopping the statement of a finished run"),
    }
}

/// Maps a sqlx error from a PostgreSQL connection to the guest's error.
fn map_error(error: sqlx::Error) -> WitError {
    map_sqlx_error(error, |db| match db.try_downcast_ref::<PgDatabaseError>() {
        Some(pg) => map_pg_error(pg),
        // Every refusal on a PostgreSQL connection is a `PgDatabaseError`.
        None => WitError::Other(db.message().to_owned()),
    })
}

/// PostgreSQL's errors by SQLSTATE: the cases a task acts on differently
/// get their own `error` case, everything else the database refused is
/// `database` with its SQLSTATE.
fn map_pg_error(error: &PgDatabaseError) -> WitError {
    let code = error.code();
    let database = || DatabaseError {
        sqlstate: code.to_owned(),
        message: error.message().to_owned(),
        detail: error.detail().map(str::to_owned),
    };
    match code {
        // read_only_sql_transaction, insufficient_privilege
        "25006" | "42501" => WitError::AccessDenied,
        // unique_violation: the row is already there.
        "23505" => WitError::Conflict(database()),
        // serialization_failure, deadlock_detected: the transaction was
        // rolled back and running it again may succeed.
        "40001" | "40P01" => WitError::RetryTransaction(database()),
        // connection exception, insufficient resources, operator
        // intervention (including a cancelled statement), system error,
        // internal error: the server, not the statement, failed.
        _ if ["08", "53", "57", "58", "XX"]
            .iter()
            .any(|class| code.starts_with(class)) =>
        {
            let mut message = error.message().to_owned();
            if let Some(detail) = error.detail() {
                message.push_str(": ");
                message.push_str(detail);
            }
            WitError::Backend(message)
        }
        _ => WitError::Database(database()),
    }
}

fn sqlstate(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.try_downcast_ref::<PgDatabaseError>().map(|e| e.code()),
        _ => None,
    }
}
