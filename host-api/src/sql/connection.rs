//! The `connection` resource, and the actor that owns its pooled connection
//! and runs its commands in order.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt as _;
use sqlx::SqlStr;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::backend::{BeginOptions, SqlSession, guest_statement};
use super::config::SqlLimits;
use super::cursor::{CursorRow, CursorStart, CursorStream, budget_bytes};
use super::value::row_size;
use crate::bindings::caisson::task::sql::{ExecuteResult, RowSet, Value};
use crate::memory::{MemoryBudget, OverBudget, Reservation};
use crate::{GuestError as _, SqlError as WitError};

/// The rows a cursor's channel holds at most, on top of its byte budget, so
/// that a result of many tiny rows cannot queue without limit either.
const CURSOR_CHANNEL_ROWS: usize = 1024;

/// An open `connection` resource.
///
/// The pooled connection itself belongs to a Tokio task (the actor) that
/// runs this resource's commands one at a time; the resource holds the
/// sending side of its command channel. Dropping the resource (the guest's
/// `drop`, or the run's store going away) closes the channel, and once the
/// cursors from it are gone too, cancels `ended`: an idle actor then rolls
/// back any open transaction, resets the
/// session and returns the connection to the pool; an actor still running a
/// statement stops it and closes the connection.
pub struct Connection {
    commands: mpsc::Sender<Command>,
    /// Shared with the connection's cursors: the session ends when the
    /// connection and every cursor from it are gone, so a guest may drop
    /// the connection and go on reading a cursor.
    pub(super) ended: Arc<DropGuard>,
    /// Set while a [`Cursor`] from this connection is alive. The actor is
    /// then busy streaming that cursor's rows (and may be waiting for the
    /// guest to take some), so other commands are refused up front instead
    /// of queueing behind it, which could deadlock a guest that waits for
    /// the command before reading the cursor.
    pub(super) cursor_open: Arc<AtomicBool>,
    pub(super) limits: SqlLimits,
    /// The run's budget, charged with statements and results.
    memory: MemoryBudget,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("cursor_open", &self.cursor_open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, WitError>>;

pub(super) enum Command {
    Query {
        statement: String,
        params: Vec<Value>,
        /// The rows, and their charge to the run's memory budget.
        reply: Reply<(RowSet, Reservation)>,
    },
    Execute {
        statement: String,
        params: Vec<Value>,
        reply: Reply<ExecuteResult>,
    },
    Cursor {
        statement: String,
        params: Vec<Value>,
        reply: Reply<CursorStart>,
    },
    Begin(BeginOptions, Reply<()>),
    Commit(Reply<()>),
    Rollback(Reply<()>),
}

impl Connection {
    pub(super) fn spawn(
        session: Box<dyn SqlSession>,
        limits: SqlLimits,
        memory: MemoryBudget,
    ) -> Self {
        // One command at a time: the guest waits for each answer anyway.
        let (commands, receiver) = mpsc::channel(1);
        let ended = CancellationToken::new();
        let actor = Actor {
            conn: session,
            in_transaction: false,
            limits,
            memory: memory.clone(),
        };
        tokio::spawn(actor.run(receiver, ended.clone()));
        Self {
            commands,
            ended: Arc::new(ended.drop_guard()),
            cursor_open: Arc::new(AtomicBool::new(false)),
            limits,
            memory,
        }
    }

    /// Refuses a statement over the run's size limits before anything
    /// copies it further: the guest chooses the text and the parameters,
    /// and the driver would buffer both again for the database. What the
    /// host holds of it meanwhile is charged to the run's memory budget
    /// until the returned reservation is dropped.
    pub(super) fn check_statement(
        &self,
        statement: &str,
        params: &[Value],
    ) -> Result<Reservation, WitError> {
        let SqlLimits {
            max_statement_bytes,
            max_params,
            max_param_bytes,
            ..
        } = self.limits;
        if statement.len() > max_statement_bytes {
            return Err(WitError::TooLarge(format!(
                "the statement is {} bytes, over the {max_statement_bytes}-byte limit \
                 (max_statement_bytes); pass data as parameters",
                statement.len()
            )));
        }
        if params.len() > max_params {
            return Err(WitError::TooLarge(format!(
                "the statement has {} parameters, over the limit of {max_params} (max_params)",
                params.len()
            )));
        }
        let bytes = row_size(params);
        if bytes > max_param_bytes {
            return Err(WitError::TooLarge(format!(
                "the parameters hold about {bytes} bytes, over the {max_param_bytes}-byte \
                 limit (max_param_bytes)"
            )));
        }
        // Twice: the host's copy, and the driver's encoding of it for the
        // database (or the text a backend rewrites it into).
        self.memory
            .reserve(statement.len().saturating_add(bytes).saturating_mul(2))
            .map_err(too_large)
    }

    /// Sends a command and waits for its answer, with its error text cut to
    /// the run's `max_error_bytes` (a database's message may quote the
    /// statement). The outer error (a trap) means the actor is gone, which
    /// only a host bug can cause.
    pub(super) async fn call<T>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> wasmtime::Result<Result<T, WitError>> {
        if self.cursor_open.load(Ordering::Acquire) {
            return Ok(Err(WitError::InvalidInput(
                "a cursor is open on this connection; drop it first".into(),
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| wasmtime::Error::msg("the SQL connection task has stopped"))?;
        let answer = answer
            .await
            .map_err(|_| wasmtime::Error::msg("the SQL connection task stopped mid-command"))?;
        Ok(answer.map_err(|e| e.clipped(self.limits.max_error_bytes)))
    }
}

/// A host buffer the run's memory limit has no room for.
pub(super) fn too_large(e: OverBudget) -> WitError {
    WitError::TooLarge(e.to_string())
}

/// Owns one pooled connection and runs a [`Connection`]'s commands in order.
struct Actor {
    conn: Box<dyn SqlSession>,
    /// Whether the guest has called `begin` without `commit`/`rollback`.
    in_transaction: bool,
    limits: SqlLimits,
    memory: MemoryBudget,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, ended: CancellationToken) {
        loop {
            let command = tokio::select! {
                biased;
                command = commands.recv() => command,
                () = ended.cancelled() => None,
            };
            let Some(command) = command else { break };
            // The guest waits for each answer, so the run can only end
            // mid-command when it is being torn down: timed out, cancelled,
            // or finished with a cursor still streaming.
            let finished = tokio::select! {
                biased;
                () = self.handle(command) => true,
                () = ended.cancelled() => false,
            };
            if !finished {
                self.conn.abort().await;
                return;
            }
        }
        self.conn.release().await;
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Query {
                statement,
                params,
                reply,
            } => {
                let _ = reply.send(self.query(statement, params).await);
            }
            Command::Execute {
                statement,
                params,
                reply,
            } => {
                let _ = reply.send(self.execute(statement, params).await);
            }
            Command::Cursor {
                statement,
                params,
                reply,
            } => self.cursor(statement, params, reply).await,
            Command::Begin(options, reply) => {
                let _ = reply.send(self.begin(options).await);
            }
            Command::Commit(reply) => {
                let _ = reply.send(self.commit().await);
            }
            Command::Rollback(reply) => {
                let _ = reply.send(self.rollback().await);
            }
        }
    }

    /// Ends the wrapper around a guest statement that produced `result`.
    async fn finish<T>(&mut self, result: Result<T, WitError>) -> Result<T, WitError> {
        let finished = self.conn.finish_statement().await;
        let value = result?;
        finished?;
        Ok(value)
    }

    async fn query(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> Result<(RowSet, Reservation), WitError> {
        let statement = guest_statement(self.conn.statement_text(statement, &params));
        self.conn.start_statement().await?;
        let result = self.query_rows(statement, params).await;
        self.finish(result).await
    }

    async fn query_rows(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<(RowSet, Reservation), WitError> {
        let SqlLimits {
            max_rows,
            max_bytes,
            ..
        } = self.limits;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        let mut held = self.memory.reservation();
        {
            let mut stream = self.conn.fetch(statement.clone(), params)?;
            // Check the limits as rows arrive and stop reading at once: the
            // guest's statement decides how much the database sends.
            while let Some(row) = stream.next().await {
                let row = row?;
                if columns.is_none() {
                    columns = row.columns;
                }
                if rows.len() >= max_rows {
                    return Err(WitError::TooLarge(format!(
                        "query returned more than {max_rows} rows; use `cursor` to stream large results"
                    )));
                }
                bytes = bytes.saturating_add(row.bytes);
                if bytes > max_bytes {
                    return Err(WitError::TooLarge(format!(
                        "query returned more than {max_bytes} bytes; use `cursor` to stream large results"
                    )));
                }
                held.grow(row.bytes).map_err(too_large)?;
                rows.push(row.values);
            }
        }
        let columns = match columns {
            Some(columns) => columns,
            None => self.conn.describe_columns(statement).await?,
        };
        Ok((RowSet { columns, rows }, held))
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError> {
        let statement = guest_statement(self.conn.statement_text(statement, &params));
        self.conn.start_statement().await?;
        let result = self.conn.execute(statement, params).await;
        self.finish(result).await
    }

    /// Runs a cursor to its end (or until the guest drops it), sending rows
    /// to the [`Cursor`] through a bounded channel and a byte budget.
    async fn cursor(&mut self, statement: String, params: Vec<Value>, reply: Reply<CursorStart>) {
        let statement = guest_statement(self.conn.statement_text(statement, &params));
        if let Err(e) = self.conn.start_statement().await {
            let _ = reply.send(Err(e));
            return;
        }
        // A cursor that fails or has no rows ends its wrapper before the
        // guest hears of it, like any other statement: once the guest has
        // its answer it may drop the connection, and an actor still busy
        // then would have to close the connection instead of reusing it.
        if let Some((reply, answer)) = self.stream_cursor(statement, params, reply).await {
            let _ = reply.send(self.finish(answer).await);
            return;
        }
        // Nobody is waiting for this result: a failure here has been or
        // will be seen by the guest's next statement.
        let _ = self.conn.finish_statement().await;
    }

    async fn stream_cursor(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
        reply: Reply<CursorStart>,
    ) -> Option<(Reply<CursorStart>, Result<CursorStart, WitError>)> {
        let max_bytes = budget_bytes(self.limits.max_bytes);
        let mut stream = match self.conn.fetch(statement.clone(), params) {
            Ok(stream) => stream,
            Err(e) => return Some((reply, Err(e))),
        };
        // Wait for the first row: it carries the columns, and an error in
        // the statement is best reported by `cursor` itself.
        let first = match stream.next().await {
            Some(Ok(row)) => row,
            Some(Err(e)) => return Some((reply, Err(e))),
            None => {
                drop(stream);
                let start =
                    self.conn
                        .describe_columns(statement)
                        .await
                        .map(|columns| CursorStart {
                            columns,
                            rows: None,
                        });
                return Some((reply, start));
            }
        };

        let (sender, receiver) = mpsc::channel(CURSOR_CHANNEL_ROWS);
        let budget = Arc::new(Semaphore::new(max_bytes));
        let start = CursorStart {
            columns: first.columns.clone().unwrap_or_default(),
            rows: Some(CursorStream {
                rows: receiver,
                budget: budget.clone(),
            }),
        };
        if reply.send(Ok(start)).is_err() {
            return None;
        }

        let mut next = Some(Ok(first));
        loop {
            let row = match next.take() {
                Some(row) => Some(row),
                // Stop as soon as the guest drops the cursor, even while the
                // database is still working on the next row.
                None => tokio::select! {
                    _ = sender.closed() => return None,
                    row = stream.next() => row,
                },
            };
            let row = match row {
                None => return None,
                Some(Err(e)) => {
                    let _ = sender.send(Err(e)).await;
                    return None;
                }
                Some(Ok(row)) => row,
            };
            if row.bytes > max_bytes {
                let _ = sender
                    .send(Err(WitError::TooLarge(format!(
                        "a row of this result is larger than the {max_bytes}-byte limit"
                    ))))
                    .await;
                return None;
            }
            // Charged to the run until the guest takes the row.
            let held = match self.memory.reserve(row.bytes) {
                Ok(held) => held,
                Err(e) => {
                    let _ = sender.send(Err(too_large(e))).await;
                    return None;
                }
            };
            // `row.bytes <= max_bytes <= u32::MAX`, see `budget_bytes`.
            let permits = row.bytes as u32;
            let permit = tokio::select! {
                _ = sender.closed() => return None,
                permit = budget.clone().acquire_many_owned(permits) => match permit {
                    Ok(permit) => permit,
                    // The cursor closed the budget: it was dropped.
                    Err(_) => return None,
                },
            };
            let row = CursorRow {
                values: row.values,
                bytes: row.bytes,
                _permit: permit,
                _held: held,
            };
            if sender.send(Ok(row)).await.is_err() {
                return None;
            }
        }
    }

    async fn begin(&mut self, options: BeginOptions) -> Result<(), WitError> {
        if self.in_transaction {
            return Err(WitError::InvalidInput(
                "a transaction is already open; commit or roll it back first".into(),
            ));
        }
        self.conn.begin(&options).await?;
        self.in_transaction = true;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), WitError> {
        if !self.in_transaction {
            return Err(WitError::InvalidInput(
                "there is no open transaction to commit; call `begin` first".into(),
            ));
        }
        let committed = self.conn.commit().await;
        if committed.is_ok() || !self.conn.failed_commit_keeps_transaction() {
            self.in_transaction = false;
        }
        committed
    }

    async fn rollback(&mut self) -> Result<(), WitError> {
        if !self.in_transaction {
            return Err(WitError::InvalidInput(
                "there is no open transaction to roll back; call `begin` first".into(),
            ));
        }
        self.in_transaction = false;
        self.conn.rollback().await
    }
}
