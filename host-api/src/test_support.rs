//! Test support, behind the `test-support` feature: the SQL capability
//! called through its host traits as a guest calls them, for this crate's
//! tests and the integration tests (`tests/all/contract.rs`), which would
//! otherwise each keep a copy. Not part of the API.
//!
//! Every helper panics on a trap: a trap is a host bug, and these are tests.

use wasmtime::component::{Resource, ResourceTable};

use crate::sql::{
    Connection, Cursor, SqlConfig, SqlCtx, SqlKind, SqlLimits, SqlSourceConfig, SqlSources, SqlView,
};
use crate::wit::sql::{
    ExecuteResult, Host, HostBeginOptions, HostConnection, HostRows, IsolationLevel, RowSet, Value,
};
use crate::{Grants, SqlError as WitError};

/// One run's SQL context and resource table over some sources.
pub struct SqlHarness {
    pub sources: SqlSources,
    pub ctx: SqlCtx,
    pub table: ResourceTable,
}

impl SqlHarness {
    /// Builds sources from `config` and grants the run `granted`.
    pub fn new(config: &SqlConfig, granted: &[&str], limits: SqlLimits) -> Self {
        let sources = SqlSources::from_config(config).expect("valid config");
        Self::with_sources(&sources, granted, limits)
    }

    /// One run over `sources`, shared with other runs (other harnesses).
    pub fn with_sources(sources: &SqlSources, granted: &[&str], limits: SqlLimits) -> Self {
        let grants = granted
            .iter()
            .fold(Grants::default(), |grants, label| grants.with_sql(*label));
        let ctx = sources
            .ctx_for(&grants, limits)
            .expect("granted labels exist");
        Self {
            sources: sources.clone(),
            ctx,
            table: ResourceTable::new(),
        }
    }

    pub fn view(&mut self) -> SqlView<'_> {
        SqlView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }

    pub async fn try_open(&mut self, label: &str) -> Result<Resource<Connection>, WitError> {
        Host::open(&mut self.view(), label.into())
            .await
            .expect("no trap")
    }

    pub async fn open(&mut self, label: &str) -> Resource<Connection> {
        self.try_open(label).await.expect("open")
    }

    pub async fn query(
        &mut self,
        conn: &Resource<Connection>,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<RowSet, WitError> {
        HostConnection::query(&mut self.view(), borrow(conn), statement.into(), params)
            .await
            .expect("no trap")
    }

    pub async fn execute(
        &mut self,
        conn: &Resource<Connection>,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<u64, WitError> {
        self.execute_result(conn, statement, params)
            .await
            .map(|done| done.rows_affected)
    }

    pub async fn execute_result(
        &mut self,
        conn: &Resource<Connection>,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError> {
        HostConnection::execute(&mut self.view(), borrow(conn), statement.into(), params)
            .await
            .expect("no trap")
    }

    pub async fn cursor(
        &mut self,
        conn: &Resource<Connection>,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Resource<Cursor>, WitError> {
        HostConnection::cursor(&mut self.view(), borrow(conn), statement.into(), params)
            .await
            .expect("no trap")
    }

    pub async fn next(
        &mut self,
        rows: &Resource<Cursor>,
        max: u32,
    ) -> Result<Vec<Vec<Value>>, WitError> {
        HostRows::next(&mut self.view(), borrow(rows), max)
            .await
            .expect("no trap")
    }

    pub async fn begin(&mut self, conn: &Resource<Connection>) -> Result<(), WitError> {
        HostConnection::begin(&mut self.view(), borrow(conn), None)
            .await
            .expect("no trap")
    }

    /// `begin` with an isolation level and read-only flag.
    pub async fn begin_with(
        &mut self,
        conn: &Resource<Connection>,
        level: Option<IsolationLevel>,
        read_only: bool,
    ) -> Result<(), WitError> {
        let options = HostBeginOptions::new(&mut self.view())
            .await
            .expect("no trap");
        if let Some(level) = level {
            HostBeginOptions::set_isolation_level(&mut self.view(), borrow(&options), level)
                .await
                .expect("no trap")?;
        }
        HostBeginOptions::set_read_only(&mut self.view(), borrow(&options), read_only)
            .await
            .expect("no trap")?;
        let begun = HostConnection::begin(&mut self.view(), borrow(conn), Some(borrow(&options)))
            .await
            .expect("no trap");
        HostBeginOptions::drop(&mut self.view(), options)
            .await
            .expect("no trap");
        begun
    }

    pub async fn commit(&mut self, conn: &Resource<Connection>) -> Result<(), WitError> {
        HostConnection::commit(&mut self.view(), borrow(conn))
            .await
            .expect("no trap")
    }

    pub async fn rollback(&mut self, conn: &Resource<Connection>) -> Result<(), WitError> {
        HostConnection::rollback(&mut self.view(), borrow(conn))
            .await
            .expect("no trap")
    }

    pub async fn drop_connection(&mut self, conn: Resource<Connection>) {
        HostConnection::drop(&mut self.view(), conn)
            .await
            .expect("no trap");
    }

    pub async fn drop_cursor(&mut self, rows: Resource<Cursor>) {
        HostRows::drop(&mut self.view(), rows)
            .await
            .expect("no trap");
    }

    /// Runs `statement` on a fresh connection and returns its rows.
    pub async fn rows(
        &mut self,
        label: &str,
        statement: &str,
        params: Vec<Value>,
    ) -> Vec<Vec<Value>> {
        let conn = self.open(label).await;
        let rows = self.query(&conn, statement, params).await.expect("query");
        self.drop_connection(conn).await;
        rows.rows
    }
}

/// A second handle to the same resource, as the guest's borrows are.
pub fn borrow<T: 'static>(resource: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(resource.rep())
}

/// A source's configuration, as a `[sql.<label>]` table gives it.
pub fn source(kind: SqlKind, url: &str, read_only: bool, max_connections: u32) -> SqlSourceConfig {
    SqlSourceConfig {
        kind,
        url: url.into(),
        read_only,
        max_connections,
    }
}

/// The test PostgreSQL's URL (`CAISSON_TEST_POSTGRES_URL`), or `None`
/// (after saying why `test` is skipped) when it is unset. With
/// `CAISSON_REQUIRE_SERVICES=1` an unset URL is a failure instead.
pub fn postgres_url(test: &str) -> Option<String> {
    service_url("CAISSON_TEST_POSTGRES_URL", test)
}

/// The test MariaDB's URL (`CAISSON_TEST_MYSQL_URL`), as [`postgres_url`].
pub fn mysql_url(test: &str) -> Option<String> {
    service_url("CAISSON_TEST_MYSQL_URL", test)
}

fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CAISSON_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{var} is not set but CAISSON_REQUIRE_SERVICES=1");
            }
            eprintln!("skipping {test}: {var} is not set");
            None
        }
    }
}

/// Runs `sql` with the `mariadb` command-line client against the database
/// at `url` (`mysql://user:password@host:port/db`) and returns its rows,
/// tab-separated, one line each: a view of the data that goes through
/// neither sqlx nor the host, for tests that claim something was written.
pub fn mariadb_cli(url: &str, sql: &str) -> String {
    let parsed = url::Url::parse(url).expect("a mysql:// url");
    let database = parsed.path().trim_start_matches('/');
    let output = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--batch",
            "--skip-column-names",
            "--protocol=tcp",
        ])
        .arg(format!(
            "--host={}",
            parsed.host_str().unwrap_or("127.0.0.1")
        ))
        .arg(format!("--port={}", parsed.port().unwrap_or(3306)))
        .arg(format!("--user={}", parsed.username()))
        .arg(format!("--database={database}"))
        .arg(format!("--execute={sql}"))
        // The password through the environment, not the command line.
        .env("MYSQL_PWD", parsed.password().unwrap_or(""))
        .output()
        .expect("the mariadb client runs (apt-get install mariadb-client)");
    assert!(
        output.status.success(),
        "mariadb {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}
