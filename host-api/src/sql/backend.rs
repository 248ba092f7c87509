//! What every database behind a SQL source provides.
//!
//! A backend is two small traits: [`SqlBackend`], a source's pool, shared by
//! every run on the worker, and [`SqlSession`], one pooled connection lent
//! to one run. The connection's actor (`connection.rs`) speaks only to these
//! traits, so everything that differs between databases (how parameters
//! are bound and results decoded, how a read-only source is enforced, how a
//! session is reset or a running statement stopped, what their refusals
//! mean) lives in that database's module. Adding one is a new module that
//! implements both traits, plus its arm in `sources.rs`.

use std::fmt;
use std::time::Duration;

use futures::stream::BoxStream;
use sqlx::{AssertSqlSafe, SqlSafeStr as _, SqlStr};
use tokio::time::Instant;

use super::error::connect_error_message;
use super::value::row_size;
use crate::SqlError as WitError;
use crate::bindings::caisson::task::sql::{Column, ExecuteResult, IsolationLevel, Value};

/// How long `open` waits for a pooled connection (including connecting to a
/// database that is down) before failing with `backend`, and how long the
/// host waits for a connection of its own (to stop a statement).
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured source: its pool of connections to one database.
#[async_trait::async_trait]
pub(super) trait SqlBackend: fmt::Debug + Send + Sync {
    /// Takes a connection from the pool for one run. `deadline` is when the
    /// run must be over; a backend that can bound its statements' time with
    /// it does (PostgreSQL's `statement_timeout`).
    async fn acquire(&self, deadline: Option<Instant>) -> Result<Box<dyn SqlSession>, sqlx::Error>;

    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// What the guest is told when [`acquire`](Self::acquire) failed with
    /// `error`: never the URL, a host or a path.
    fn connect_error(&self, error: &sqlx::Error) -> String {
        connect_error_message(error)
    }
}

/// A guest's statement as sqlx takes it.
///
/// sqlx asks that SQL not written into the program be asserted safe: its
/// guard is against host code splicing input into a statement. Here the
/// statement *is* the input, by design: it is the task's own program, run
/// with the source's grant and the database user's rights, and its values
/// travel as bind parameters. The host never adds text to it.
/// [`SqlStr`] is shared, so the cursor and the column lookup reuse one copy.
pub(super) fn guest_statement(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// One pooled connection, owned by a run's connection actor, which calls it
/// one command at a time.
///
/// The guest's transactions go through [`begin`](Self::begin),
/// [`commit`](Self::commit) and [`rollback`](Self::rollback); the actor
/// keeps track of whether one is open and refuses the ones that make no
/// sense (a second `begin`, a `commit` with nothing open) before they get
/// here.
#[async_trait::async_trait]
pub(super) trait SqlSession: Send {
    /// The text to prepare for `statement` bound with `params`. The default
    /// is the statement itself.
    fn statement_text(&self, statement: String, params: &[Value]) -> String {
        let _ = params;
        statement
    }

    /// Runs `statement` and streams its decoded rows. The first row carries
    /// the result's columns.
    fn fetch(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<BoxStream<'_, Result<DecodedRow, WitError>>, WitError>;

    async fn execute(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError>;

    /// The columns of a statement that has just returned no rows (a row
    /// carries its columns; an empty result does not).
    async fn describe_columns(&mut self, statement: SqlStr) -> Result<Vec<Column>, WitError>;

    /// Called before every guest statement, and [`finish_statement`] after
    /// it (whatever its outcome): where a backend that enforces a read-only
    /// source around each statement does so.
    ///
    /// [`finish_statement`]: Self::finish_statement
    async fn start_statement(&mut self) -> Result<(), WitError> {
        Ok(())
    }

    async fn finish_statement(&mut self) -> Result<(), WitError> {
        Ok(())
    }

    async fn begin(&mut self, options: &BeginOptions) -> Result<(), WitError>;

    async fn commit(&mut self) -> Result<(), WitError>;

    /// Whether a `commit` that failed left the transaction open, for the
    /// guest to retry or roll back, rather than rolled back.
    fn failed_commit_keeps_transaction(&self) -> bool;

    async fn rollback(&mut self) -> Result<(), WitError>;

    /// The run has let go of the connection, idle: make it fit for the next
    /// run and return it to the pool, or close it.
    async fn release(self: Box<Self>);

    /// The run has ended while a statement was still running: stop that
    /// statement and close the connection (mid-statement, it cannot go back
    /// to the pool).
    async fn abort(self: Box<Self>);
}

/// One decoded row, plus the result's columns on the first row.
pub(super) struct DecodedRow {
    pub values: Vec<Value>,
    /// Estimated size, for [`SqlLimits::max_bytes`](super::SqlLimits).
    pub bytes: usize,
    pub columns: Option<Vec<Column>>,
}

impl DecodedRow {
    pub(super) fn new(values: Vec<Value>, columns: Option<Vec<Column>>) -> Self {
        Self {
            bytes: row_size(&values),
            values,
            columns,
        }
    }
}

/// A result's columns as the guest sees them: names and type names.
pub(super) fn columns<C: sqlx::Column>(columns: &[C]) -> Vec<Column> {
    use sqlx::TypeInfo as _;
    columns
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_info().name().to_owned(),
        })
        .collect()
}

/// A `begin-options` resource: what the guest set.
#[derive(Debug, Clone, Default)]
pub struct BeginOptions {
    pub(super) isolation_level: Option<IsolationLevel>,
    pub(super) read_only: bool,
}
