//! The generated `caisson:task/sql` host traits, on `SqlHost` (`SqlView`
//! observes each call, see `observed`): each call
//! checks the run's grants and handles, then hands the work to the
//! connection's actor or the cursor.

use std::sync::atomic::Ordering;

use wasmtime::component::Resource;

use super::SqlHost;
use super::backend::BeginOptions;
use super::connection::{Command, Connection};
use super::cursor::Cursor;
use crate::bindings::caisson::task::sql::{
    self as wit_sql, Column, ExecuteResult, IsolationLevel, RowSet, Value,
};
use crate::{GuestError as _, SqlError as WitError};

impl wit_sql::Host for SqlHost<'_> {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, WitError>> {
        // Not granted and not configured look the same: the guest cannot
        // probe the worker's configuration.
        let Some(source) = self.ctx.source(&label) else {
            return Ok(Err(WitError::AccessDenied));
        };
        let session = match source.acquire(self.ctx.deadline()).await {
            Ok(session) => session,
            Err(e) => {
                tracing::warn!(label, error = %e, "could not get a SQL connection");
                return Ok(Err(WitError::Backend(source.connect_error(&e))));
            }
        };
        let connection = Connection::spawn(session, self.ctx.limits(), self.ctx.memory().clone());
        crate::push_resource(self.table, connection)
    }
}

impl wit_sql::HostConnection for SqlHost<'_> {
    async fn query(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, WitError>> {
        let conn = self.table.get(&this)?;
        // Held until the answer is in: the actor and the driver hold the
        // statement and its parameters until then.
        let _held = match conn.check_statement(&statement, &params) {
            Ok(held) => held,
            Err(e) => return Ok(Err(e)),
        };
        // The rows' reservation goes as the rows are handed to the guest.
        Ok(conn
            .call(|reply| Command::Query {
                statement,
                params,
                reply,
            })
            .await?
            .map(|(rows, _held)| rows))
    }

    async fn cursor(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Resource<Cursor>, WitError>> {
        let conn = self.table.get(&this)?;
        let _held = match conn.check_statement(&statement, &params) {
            Ok(held) => held,
            Err(e) => return Ok(Err(e)),
        };
        let limits = conn.limits;
        let busy = conn.cursor_open.clone();
        let ended = conn.ended.clone();
        let start = match conn
            .call(|reply| Command::Cursor {
                statement,
                params,
                reply,
            })
            .await?
        {
            Ok(start) => start,
            Err(e) => return Ok(Err(e)),
        };
        // Only a cursor that is still streaming keeps the actor busy. (While
        // one is, no other cursor can be opened, so dropping an empty one
        // cannot clear the flag of another.)
        busy.store(start.rows.is_some(), Ordering::Release);
        let cursor = Cursor::new(start, limits, busy, ended);
        crate::push_resource(self.table, cursor)
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<ExecuteResult, WitError>> {
        let conn = self.table.get(&this)?;
        let _held = match conn.check_statement(&statement, &params) {
            Ok(held) => held,
            Err(e) => return Ok(Err(e)),
        };
        conn.call(|reply| Command::Execute {
            statement,
            params,
            reply,
        })
        .await
    }

    async fn begin(
        &mut self,
        this: Resource<Connection>,
        options: Option<Resource<BeginOptions>>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let options = match options {
            Some(options) => self.table.get(&options)?.clone(),
            None => BeginOptions::default(),
        };
        self.table
            .get(&this)?
            .call(|reply| Command::Begin(options, reply))
            .await
    }

    async fn commit(
        &mut self,
        this: Resource<Connection>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        self.table.get(&this)?.call(Command::Commit).await
    }

    async fn rollback(
        &mut self,
        this: Resource<Connection>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        self.table.get(&this)?.call(Command::Rollback).await
    }

    async fn drop(&mut self, this: Resource<Connection>) -> wasmtime::Result<()> {
        // The actor notices the closed channel and cleans up on its own.
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit_sql::HostBeginOptions for SqlHost<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<BeginOptions>> {
        // A constructor cannot return an error: a full table traps here.
        Ok(self.table.push(BeginOptions::default())?)
    }

    async fn set_isolation_level(
        &mut self,
        this: Resource<BeginOptions>,
        level: IsolationLevel,
    ) -> wasmtime::Result<Result<(), WitError>> {
        self.table.get_mut(&this)?.isolation_level = Some(level);
        Ok(Ok(()))
    }

    async fn set_read_only(
        &mut self,
        this: Resource<BeginOptions>,
        read_only: bool,
    ) -> wasmtime::Result<Result<(), WitError>> {
        self.table.get_mut(&this)?.read_only = read_only;
        Ok(Ok(()))
    }

    async fn drop(&mut self, this: Resource<BeginOptions>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit_sql::HostRows for SqlHost<'_> {
    async fn columns(&mut self, this: Resource<Cursor>) -> wasmtime::Result<Vec<Column>> {
        Ok(self.table.get(&this)?.columns().to_vec())
    }

    async fn next(
        &mut self,
        this: Resource<Cursor>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<Vec<Value>>, WitError>> {
        // A row's decoding error or the database's mid-stream message.
        let cursor = self.table.get_mut(&this)?;
        let max_error_bytes = cursor.max_error_bytes;
        Ok(cursor
            .next(max)
            .await
            .map_err(|e| e.clipped(max_error_bytes)))
    }

    async fn drop(&mut self, this: Resource<Cursor>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
