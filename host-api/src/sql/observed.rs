//! The `sql` host traits on [`SqlView`]: each call observed (see
//! [`crate::observe`]), then made on [`SqlHost`]. A statement is seen by
//! its kind only, never its text or parameters.

use tracing::Instrument;
use wasmtime::component::Resource;

use super::backend::BeginOptions;
use super::connection::Connection;
use super::cursor::Cursor;
use super::{SqlHost, SqlView};
use crate::SqlError as WitError;
use crate::bindings::caisson::task::sql::{
    self as wit_sql, Column, ExecuteResult, IsolationLevel, RowSet, Value,
};
use crate::observe::Call;

const SQL: &str = "sql";

type Answer<T> = wasmtime::Result<Result<T, WitError>>;

impl SqlView<'_> {
    fn host(&mut self) -> SqlHost<'_> {
        SqlHost {
            ctx: &mut *self.ctx,
            table: &mut *self.table,
        }
    }

    /// A call on the connection or cursor `rep`.
    fn call(&self, function: &'static str, rep: u32) -> Call {
        Call::on(SQL, function, self.ctx.handle_labels.get(rep))
    }
}

impl wit_sql::Host for SqlView<'_> {
    async fn open(&mut self, label: String) -> Answer<Resource<Connection>> {
        let granted = self.ctx.source(&label).is_some();
        let call = Call::start(SQL, "open", &label, granted);
        let span = call.span();
        let result = wit_sql::Host::open(&mut self.host(), label)
            .instrument(span)
            .await;
        if let (Ok(Ok(connection)), Some(label)) = (&result, call.label()) {
            self.ctx.handle_labels.insert(connection.rep(), label);
        }
        call.end(result)
    }
}

impl wit_sql::HostConnection for SqlView<'_> {
    async fn query(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> Answer<RowSet> {
        let mut call = self.call("connection.query", this.rep());
        call.statement(&statement);
        let span = call.span();
        let result = wit_sql::HostConnection::query(&mut self.host(), this, statement, params)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn cursor(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> Answer<Resource<Cursor>> {
        let mut call = self.call("connection.cursor", this.rep());
        call.statement(&statement);
        let span = call.span();
        let result = wit_sql::HostConnection::cursor(&mut self.host(), this, statement, params)
            .instrument(span)
            .await;
        if let (Ok(Ok(cursor)), Some(label)) = (&result, call.label()) {
            self.ctx.handle_labels.insert(cursor.rep(), label);
        }
        call.end(result)
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> Answer<ExecuteResult> {
        let mut call = self.call("connection.execute", this.rep());
        call.statement(&statement);
        let span = call.span();
        let result = wit_sql::HostConnection::execute(&mut self.host(), this, statement, params)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn begin(
        &mut self,
        this: Resource<Connection>,
        options: Option<Resource<BeginOptions>>,
    ) -> Answer<()> {
        let call = self.call("connection.begin", this.rep());
        let span = call.span();
        let result = wit_sql::HostConnection::begin(&mut self.host(), this, options)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn commit(&mut self, this: Resource<Connection>) -> Answer<()> {
        let call = self.call("connection.commit", this.rep());
        let span = call.span();
        let result = wit_sql::HostConnection::commit(&mut self.host(), this)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn rollback(&mut self, this: Resource<Connection>) -> Answer<()> {
        let call = self.call("connection.rollback", this.rep());
        let span = call.span();
        let result = wit_sql::HostConnection::rollback(&mut self.host(), this)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn drop(&mut self, this: Resource<Connection>) -> wasmtime::Result<()> {
        self.ctx.handle_labels.remove(this.rep());
        wit_sql::HostConnection::drop(&mut self.host(), this).await
    }
}

impl wit_sql::HostBeginOptions for SqlView<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<BeginOptions>> {
        wit_sql::HostBeginOptions::new(&mut self.host()).await
    }

    async fn set_isolation_level(
        &mut self,
        this: Resource<BeginOptions>,
        level: IsolationLevel,
    ) -> Answer<()> {
        wit_sql::HostBeginOptions::set_isolation_level(&mut self.host(), this, level).await
    }

    async fn set_read_only(&mut self, this: Resource<BeginOptions>, read_only: bool) -> Answer<()> {
        wit_sql::HostBeginOptions::set_read_only(&mut self.host(), this, read_only).await
    }

    async fn drop(&mut self, this: Resource<BeginOptions>) -> wasmtime::Result<()> {
        wit_sql::HostBeginOptions::drop(&mut self.host(), this).await
    }
}

impl wit_sql::HostRows for SqlView<'_> {
    async fn columns(&mut self, this: Resource<Cursor>) -> wasmtime::Result<Vec<Column>> {
        wit_sql::HostRows::columns(&mut self.host(), this).await
    }

    async fn next(&mut self, this: Resource<Cursor>, max: u32) -> Answer<Vec<Vec<Value>>> {
        let call = self.call("rows.next", this.rep());
        let span = call.span();
        let result = wit_sql::HostRows::next(&mut self.host(), this, max)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn drop(&mut self, this: Resource<Cursor>) -> wasmtime::Result<()> {
        self.ctx.handle_labels.remove(this.rep());
        wit_sql::HostRows::drop(&mut self.host(), this).await
    }
}
