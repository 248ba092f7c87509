//! SQL sources: the host side of the `caisson:task/sql` interface.
//!
//! The operator names each database in `caisson.toml`; a run is granted some
//! of those names (labels) and opens them with `sql.open(label)`. The pieces
//! follow the shape of every capability in this crate:
//!
//! * [`SqlConfig`] / [`SqlSourceConfig`]: the `[sql.<label>]` tables.
//! * [`SqlSources`]: one lazy sqlx pool per label, shared by every run on
//!   the worker. Pools connect on first use, so a worker starts even while
//!   a database is down; the run that needs it gets `backend` instead.
//! * [`SqlCtx`]: the sources one run was granted, plus its [`SqlLimits`].
//! * [`SqlView`]: the context and the store's resource table; it implements
//!   the generated host traits. [`add_to_linker`] wires it up.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use caisson_host_api::Grants;
//! use caisson_host_api::sql::{SqlConfig, SqlSources};
//!
//! let config: SqlConfig = toml::from_str(r#"
//!     [warehouse]
//!     type = "postgres"
//!     url = "postgres://reader:secret@db.internal/warehouse"
//!     read_only = true
//!
//!     [scratch]
//!     type = "sqlite"
//!     url = "sqlite:///srv/caisson/scratch.db?mode=rwc"
//! "#)?;
//! // Inside a Tokio runtime: the pools' maintenance tasks need one.
//! let sources = SqlSources::from_config(&config)?;
//! let grants = Grants::default().with_sql("warehouse");
//! let ctx = sources.ctx_for(&grants, Default::default())?;
//! # let _ = ctx; Ok(()) }
//! ```
//!
//! # What the guest controls, and how it is bounded
//!
//! Everything a task passes in is untrusted: statement text, parameters,
//! the `max` of `rows.next`, the number of handles it opens.
//!
//! * **Parameters are always bound**, never spliced into the statement. A
//!   text parameter that looks like SQL is stored verbatim.
//! * **Result sizes.** `query` buffers the whole result, so it stops reading
//!   from the database as soon as the result passes [`SqlLimits::max_rows`]
//!   or [`SqlLimits::max_bytes`] and fails with `too-large`, pointing the
//!   task at `cursor`. A cursor streams: the connection's task decodes rows
//!   ahead of the guest but holds at most `max_bytes` of them (a byte budget,
//!   see [`Cursor`]), and `rows.next(max)` returns at most
//!   [`SqlLimits::max_batch`] rows and `max_bytes` bytes whatever `max` says.
//! * **Connections.** Each `connection` resource holds one of its source's
//!   `max_connections` pooled connections until it is dropped; `open` waits
//!   at most 10 seconds for one, then fails with `backend`. The resource
//!   table's cap bounds how many handles a run holds, but not how many of a
//!   source's connections: one run can hold all of them for its lifetime.
//! * **Read-only sources are enforced by the database**, never by looking at
//!   the statement text (which cannot be done reliably: functions, CTEs,
//!   `SET`, comments...). SQLite opens the file with `SQLITE_OPEN_READONLY`.
//!   PostgreSQL runs every guest statement inside a host-issued
//!   `BEGIN READ ONLY` ... `COMMIT`, so neither a guest `COMMIT` nor a guest
//!   `SET default_transaction_read_only = off` leaves a statement running
//!   outside a read-only transaction; the session default is also set to
//!   read-only when the connection is made, as a second line of defence. A
//!   refused write is `access-denied`.
//! * **SQLite files outside the source.** `ATTACH` (and `VACUUM INTO`, which
//!   attaches) would let a task open or create any file the worker can
//!   reach, so every SQLite connection is opened with
//!   `SQLITE_LIMIT_ATTACHED = 0`.
//! * **No session state survives a run.** When a run lets go of a
//!   PostgreSQL connection, the host rolls back any transaction, clears
//!   sqlx's cache of prepared statements and runs the equivalent of `DISCARD
//!   ALL` (prepared statements, settings, role, temporary tables, advisory
//!   locks, listeners, cursors, sequences and plans), so a statement one run
//!   prepared under a name sqlx uses can never answer another run's query. A
//!   connection that cannot be reset is closed. SQLite connections are never
//!   reused: `PRAGMA`s, temporary objects and per-connection settings cannot
//!   be enumerated soundly, so each run's connection is closed when it lets
//!   go, and each new one is opened with `SQLITE_DBCONFIG_DEFENSIVE`,
//!   `SQLITE_DBCONFIG_TRUSTED_SCHEMA` off and capped string, blob and
//!   statement lengths.
//! * **SQL work ends with its run.** A PostgreSQL connection's
//!   `statement_timeout` is set to the run's remaining time when it is
//!   opened. Because the task can change that setting, the host does not rely
//!   on it: when a run ends (done, timed out or cancelled) while one of its
//!   statements is still running, the connection is dropped and the
//!   statement stopped at once: `pg_terminate_backend` from a fresh
//!   connection on PostgreSQL (closing the socket alone would leave
//!   `pg_sleep` or an endless query running), `sqlite3_interrupt` on SQLite.
//! * **Errors never carry the connection URL or its credentials.** The
//!   configuration's `Debug` output redacts passwords too.
//!
//! The host enforces grants and read-only; anything else a statement may do
//! is up to the database role in the URL, so give Caisson a role with the
//! least privilege it needs (a PostgreSQL superuser can, for example, run
//! `COPY ... TO PROGRAM`).
//!
//! # Value mapping
//!
//! | WIT `value` | PostgreSQL parameter | SQLite parameter |
//! |-------------|----------------------|------------------|
//! | `null`      | NULL of unspecified type (the server infers it, as for a literal `NULL`) | NULL |
//! | `boolean`   | `BOOL`               | INTEGER 0/1      |
//! | `int`       | `INT8`               | INTEGER          |
//! | `uint`      | `NUMERIC`            | INTEGER (up to the `s64` maximum, else `invalid-input`) |
//! | `float`     | `FLOAT8`             | REAL             |
//! | `decimal`   | `NUMERIC` (exact)    | TEXT, as given (SQLite's NUMERIC affinity would round it) |
//! | `text`      | `TEXT`               | TEXT             |
//! | `blob`      | `BYTEA`              | BLOB             |
//! | `date`      | `DATE`               | TEXT `2024-05-06` |
//! | `time`      | `TIME`               | TEXT `07:08:09.123456` |
//! | `datetime`  | `TIMESTAMP`          | TEXT `2024-05-06 07:08:09.123456` |
//! | `timestamp` | `TIMESTAMPTZ`        | TEXT `2024-05-06T07:08:09.123456Z` |
//! | `interval`  | `INTERVAL`           | TEXT `P1M2DT3.000000S` |
//! | `uuid`      | `UUID`               | TEXT, lower-case hyphenated |
//! | `json`      | `JSONB` (the text is validated and sent as is) | TEXT |
//! | `*-array`   | the element type's array (`INT8[]`, `NUMERIC[]`, ...) | TEXT, a JSON array |
//! | `other`     | `TEXT` (cast the placeholder: `$1::inet`) | TEXT |
//!
//! The extremes of `date`, `datetime` and `timestamp` are PostgreSQL's
//! `infinity` and `-infinity`, both ways (SQLite stores the words).
//! SQLite's date and time texts are fixed-width, so they sort as text, and
//! SQLite's date functions understand them.
//!
//! Results are decoded by type. PostgreSQL: `BOOL`; `INT2/4/8` and `OID` as
//! `int`; `FLOAT4/8`; `NUMERIC` as `decimal` (exact); text types (`TEXT`,
//! `VARCHAR`, `BPCHAR`, `NAME`, `CITEXT`, enums); `BYTEA`; `DATE`; `TIME`;
//! `TIMESTAMP` as `datetime` and `TIMESTAMPTZ` as `timestamp` (never mixed:
//! one is a wall clock, the other an instant); `INTERVAL`; `UUID`;
//! `JSON`/`JSONB`; one-dimensional arrays of those as the array cases;
//! domains as their base type. Any other type (or a multi-dimensional
//! array) is `other`, with its type name and its binary wire form in hex:
//! cast it in the statement (`col::text`) for its text. SQLite is
//! dynamically typed, so each value is decoded by its storage class
//! (INTEGER, REAL, TEXT, BLOB, NULL), except that an INTEGER in a column
//! declared `BOOLEAN` is a `boolean`, and text in a column declared `DATE`,
//! `TIME` or `DATETIME`/`TIMESTAMP` that is spelled as above is a `date`, a
//! `time`, or (with a zone) a `timestamp` and (without, as
//! `CURRENT_TIMESTAMP` writes it) a `datetime`. The other kinds come back
//! from SQLite as text.
//!
//! # Errors
//!
//! A statement the database refuses is `database` with its SQLSTATE, except
//! a unique violation (`23505`), which is `conflict`, and a serialization
//! failure or deadlock (`40001`, `40P01`), which is `retry-transaction`: the
//! transaction was rolled back and may be run again. A refusal for lack of
//! privilege or on a read-only source is `access-denied`; a failed
//! connection or server is `backend`. SQLite has no SQLSTATE: the host maps
//! its result codes to the nearest SQLSTATE (`23505`, `40001`, else `HY000`).

use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde::Deserialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgConnection, PgDatabaseError, PgPool,
    PgPoolOptions, PgRow, PgTypeInfo, PgTypeKind, PgValueFormat, PgValueRef, Postgres,
};
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{Arguments as _, Column as _, Connection as _, Executor as _, Row as _, Statement as _};
use sqlx::{Decode, Encode, Type, TypeInfo as _, ValueRef as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use wasmtime::component::{Resource, ResourceTable};

use crate::bindings::caisson::task::sql::{
    self as wit_sql, Column, DatabaseError, ExecuteResult, IsolationLevel, RowSet, Value,
};
use crate::{ConfigError, Grants, SqlError as WitError};

/// How long `open` waits for a pooled connection (including connecting to a
/// database that is down) before failing with `backend`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL's limit on bound parameters per statement (the protocol's
/// count is a `u16`). Checked up front so the guest gets `invalid-input`
/// rather than a protocol error.
const PG_MAX_PARAMS: usize = u16::MAX as usize;

/// The rows a cursor's channel holds at most, on top of its byte budget, so
/// that a result of many tiny rows cannot queue without limit either.
const CURSOR_CHANNEL_ROWS: usize = 1024;

/// Estimated cost of one decoded value beyond its payload: the size of a
/// `value` in the guest's memory under the canonical ABI.
const VALUE_OVERHEAD: usize = 16;
/// Estimated cost of one row beyond its values (a `list` pointer and length).
const ROW_OVERHEAD: usize = 8;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// The `[sql.<label>]` tables of `caisson.toml`, by label.
pub type SqlConfig = BTreeMap<String, SqlSourceConfig>;

/// One SQL source.
///
/// ```toml
/// [sql.warehouse]
/// type = "postgres"            # or "sqlite"
/// url = "postgres://reader:secret@db.internal/warehouse"
/// read_only = true             # default false
/// max_connections = 5          # default 5: the pool's size for this worker
/// ```
///
/// `Debug` redacts the URL's password, so the configuration can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSourceConfig {
    #[serde(rename = "type")]
    pub kind: SqlKind,
    /// A sqlx connection URL: `postgres://user:password@host:port/db?...`
    /// or `sqlite:///path/to/file.db?mode=rwc`.
    pub url: String,
    /// Whether the database refuses every write from tasks.
    #[serde(default)]
    pub read_only: bool,
    /// The most connections this worker opens to the source, shared by all
    /// its runs. Each open `connection` resource holds one.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    5
}

impl fmt::Debug for SqlSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlSourceConfig")
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("read_only", &self.read_only)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The database behind a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlKind {
    #[serde(alias = "postgresql")]
    Postgres,
    Sqlite,
}

/// Returns `url` with its password, and any `password`-like query parameter,
/// replaced. A URL that does not parse is hidden entirely: it might still
/// hold a password in a form we did not recognise.
fn redact_url(url: &str) -> String {
    const REDACTED: &str = "REDACTED";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return format!("<{REDACTED} unparsable url>");
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, and this one has.
        let _ = parsed.set_password(Some(REDACTED));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let secret = key.to_ascii_lowercase().contains("password");
                let value = if secret {
                    REDACTED.into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

/// Per-run limits on what a task can make the host hold or copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Most rows `query` returns; above it the task must use `cursor`.
    pub max_rows: usize,
    /// Most bytes (estimated from the decoded values) that `query` returns,
    /// that one `rows.next` returns, and that a cursor buffers ahead.
    pub max_bytes: usize,
    /// Most rows one `rows.next` returns, whatever the task asks for.
    pub max_batch: u32,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_batch: 1000,
        }
    }
}

// ---------------------------------------------------------------------------
// Sources and contexts
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum DbPool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// One configured source: its pool and whether it is read-only.
#[derive(Clone)]
struct Source {
    pool: DbPool,
    read_only: bool,
}

impl Source {
    fn kind(&self) -> SqlKind {
        match self.pool {
            DbPool::Postgres(_) => SqlKind::Postgres,
            DbPool::Sqlite(_) => SqlKind::Sqlite,
        }
    }

    /// Takes a connection from the pool for one run, and what stops its
    /// statements when the run ends. On PostgreSQL this is one round trip
    /// more than the pool's: the backend's process id, and the run's time
    /// left as `statement_timeout`.
    async fn acquire(&self, deadline: Option<Instant>) -> Result<(DbConn, Interrupt), sqlx::Error> {
        Ok(match &self.pool {
            DbPool::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
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
                let options = pool.connect_options();
                (DbConn::Postgres(conn), Interrupt::Postgres { pid, options })
            }
            DbPool::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let handle = {
                    let mut handle = conn.lock_handle().await?;
                    SqliteHandle(handle.as_raw_handle().as_ptr().cast())
                };
                (DbConn::Sqlite(conn), Interrupt::Sqlite(handle))
            }
        })
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("kind", &self.kind())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// Every SQL source of a worker, shared by all its runs. Cloning is cheap.
#[derive(Clone, Debug, Default)]
pub struct SqlSources {
    sources: Arc<BTreeMap<String, Source>>,
}

impl SqlSources {
    /// Builds a lazy pool for every source. Nothing connects yet: a database
    /// that is down fails the runs that open it, not the worker.
    ///
    /// Must be called inside a Tokio runtime (the pools spawn maintenance
    /// tasks); outside one it fails with [`ConfigError::Backend`].
    pub fn from_config(config: &SqlConfig) -> Result<Self, ConfigError> {
        let mut sources = BTreeMap::new();
        for (label, source) in config {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(ConfigError::Backend {
                    kind: "sql",
                    label: label.clone(),
                    source: "SQL pools must be created inside a Tokio runtime".into(),
                });
            }
            sources.insert(label.clone(), build_source(label, source)?);
        }
        Ok(Self {
            sources: Arc::new(sources),
        })
    }

    /// The configured labels, in order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// The context for one run: the sources it was granted.
    ///
    /// A granted label that is not configured is the operator's mistake and
    /// fails here, when the run is admitted, rather than at `open`.
    pub fn ctx_for(&self, grants: &Grants, limits: SqlLimits) -> Result<SqlCtx, ConfigError> {
        let mut sources = BTreeMap::new();
        for label in &grants.sql {
            let source = self
                .sources
                .get(label)
                .ok_or_else(|| ConfigError::UnknownLabel {
                    kind: "sql",
                    label: label.clone(),
                })?;
            sources.insert(label.clone(), source.clone());
        }
        Ok(SqlCtx {
            sources,
            limits,
            deadline: None,
        })
    }

    /// Closes every pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        for source in self.sources.values() {
            match &source.pool {
                DbPool::Postgres(pool) => pool.close().await,
                DbPool::Sqlite(pool) => pool.close().await,
            }
        }
    }
}

fn build_source(label: &str, config: &SqlSourceConfig) -> Result<Source, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        kind: "sql",
        label: label.to_owned(),
        message,
    };
    if config.max_connections == 0 {
        return Err(invalid("max_connections must be at least 1".into()));
    }
    // Parse errors from sqlx describe the problem (a bad port, an unknown
    // parameter) without echoing the URL, so they are safe to show.
    let pool = match config.kind {
        SqlKind::Postgres => {
            if !(config.url.starts_with("postgres://") || config.url.starts_with("postgresql://")) {
                return Err(invalid(
                    "a postgres url must start with `postgres://` or `postgresql://`".into(),
                ));
            }
            let options = PgConnectOptions::from_str(&config.url)
                .map_err(|e| invalid(format!("bad postgres url: {e}")))?;
            let mut pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT);
            if config.read_only {
                // Defence in depth only: the guest can change a session
                // default with `SET`. What enforces read-only is the
                // `BEGIN READ ONLY` around every statement (see `Actor`).
                pool = pool.after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(PG_SESSION_READ_ONLY).await?;
                        Ok(())
                    })
                });
            }
            DbPool::Postgres(pool.connect_lazy_with(options))
        }
        SqlKind::Sqlite => {
            if !config.url.starts_with("sqlite:") {
                return Err(invalid("a sqlite url must start with `sqlite:`".into()));
            }
            let options = SqliteConnectOptions::from_str(&config.url)
                .map_err(|e| invalid(format!("bad sqlite url: {e}")))?
                // `read_only` wins over a `mode=rwc` in the URL: sqlx then
                // opens with SQLITE_OPEN_READONLY alone.
                .read_only(config.read_only);
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .after_connect(|conn, _meta| Box::pin(harden_sqlite(conn)));
            DbPool::Sqlite(pool.connect_lazy_with(options))
        }
    };
    Ok(Source {
        pool,
        read_only: config.read_only,
    })
}

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

// From `sqlite3.h`.
const SQLITE_LIMIT_LENGTH: c_int = 0;
const SQLITE_LIMIT_SQL_LENGTH: c_int = 1;
const SQLITE_LIMIT_ATTACHED: c_int = 7;
const SQLITE_DBCONFIG_DEFENSIVE: c_int = 1010;
const SQLITE_DBCONFIG_TRUSTED_SCHEMA: c_int = 1017;

/// The longest string or blob a SQLite value may be, and the longest
/// statement: SQLite's default is 1 GB, which a task could make the worker
/// allocate several times over. A value larger than a query's whole byte
/// budget could never be returned anyway.
const SQLITE_MAX_LENGTH: c_int = 64 << 20;

unsafe extern "C" {
    // SQLite itself, linked into the worker by sqlx's bundled
    // `libsqlite3-sys`. Declared here rather than through a direct
    // dependency on `libsqlite3-sys` to keep the dependency list as it is.
    fn sqlite3_limit(db: *mut c_void, id: c_int, new_value: c_int) -> c_int;
    fn sqlite3_db_config(db: *mut c_void, op: c_int, ...) -> c_int;
    fn sqlite3_interrupt(db: *mut c_void);
}

/// Hardens a new SQLite connection:
///
/// * no `ATTACH`: without this a task could `ATTACH '/any/path'` (or `VACUUM
///   INTO '/any/path'`, which attaches) and read or create files anywhere
///   the worker can, outside its source;
/// * `SQLITE_DBCONFIG_DEFENSIVE`: no writes to the schema table or other
///   ways of corrupting the file on purpose;
/// * an untrusted schema: functions with side effects cannot be called from
///   views and triggers someone else wrote into the file;
/// * capped value and statement lengths ([`SQLITE_MAX_LENGTH`]).
async fn harden_sqlite(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr().cast::<c_void>();
    // SAFETY: `db` is the live `sqlite3*` of this connection, and holding
    // `handle` locks the connection, so no other thread uses it meanwhile.
    // These calls only change the connection's settings; the variadic
    // arguments of `sqlite3_db_config` for these two options are an `int`
    // and an `int*` (which may be null).
    let refused = unsafe {
        sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
        sqlite3_limit(db, SQLITE_LIMIT_LENGTH, SQLITE_MAX_LENGTH);
        sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, SQLITE_MAX_LENGTH);
        [
            (SQLITE_DBCONFIG_DEFENSIVE, 1),
            (SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0),
        ]
        .into_iter()
        .any(|(op, on)| sqlite3_db_config(db, op, on as c_int, std::ptr::null_mut::<c_int>()) != 0)
    };
    if refused {
        // A SQLite too old for these options: refuse the connection rather
        // than run tasks on a weaker one.
        return Err(sqlx::Error::Configuration(
            "this SQLite does not support SQLITE_DBCONFIG_DEFENSIVE".into(),
        ));
    }
    Ok(())
}

/// The raw `sqlite3*` of a connection, kept so that [`sqlite3_interrupt`]
/// can stop its running statement from another task.
#[derive(Clone, Copy)]
struct SqliteHandle(*mut c_void);

// SAFETY: the pointer is only used for `sqlite3_interrupt`, which SQLite
// documents as safe to call from any thread while the connection is open;
// the actor that holds it also owns the connection, and calls it before
// closing that connection.
unsafe impl Send for SqliteHandle {}

/// How the actor stops a statement still running when its run ends.
enum Interrupt {
    /// Terminate the backend with this process id from a new connection.
    Postgres {
        pid: i32,
        options: Arc<PgConnectOptions>,
    },
    Sqlite(SqliteHandle),
}

/// Ends PostgreSQL backend `pid`, whose client has gone mid-statement.
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

/// The SQL sources one run may open, and its limits. Built by
/// [`SqlSources::ctx_for`]; the default has no sources.
#[derive(Debug, Default)]
pub struct SqlCtx {
    sources: BTreeMap<String, Source>,
    limits: SqlLimits,
    /// When the run must be over: what a PostgreSQL connection's
    /// `statement_timeout` is set from.
    deadline: Option<Instant>,
}

impl SqlCtx {
    /// Sets when the run must be over. Connections opened afterwards get a
    /// `statement_timeout` of the time left (PostgreSQL); whatever the
    /// timeout, a statement still running when the run ends is stopped.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The labels this run may open.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// This run's limits.
    pub fn limits(&self) -> SqlLimits {
        self.limits
    }
}

/// A run's SQL context and the store's resource table: what the generated
/// host traits are implemented on.
pub struct SqlView<'a> {
    pub ctx: &'a mut SqlCtx,
    pub table: &'a mut ResourceTable,
}

/// Adds the `caisson:task/sql` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    f: fn(&mut T) -> SqlView<'_>,
) -> wasmtime::Result<()> {
    wit_sql::add_to_linker::<T, HasSql>(linker, f)
}

struct HasSql;

impl wasmtime::component::HasData for HasSql {
    type Data<'a> = SqlView<'a>;
}

// ---------------------------------------------------------------------------
// The connection resource and its actor
// ---------------------------------------------------------------------------

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
    ended: Arc<DropGuard>,
    /// Set while a [`Cursor`] from this connection is alive. The actor is
    /// then busy streaming that cursor's rows (and may be waiting for the
    /// guest to take some), so other commands are refused up front instead
    /// of queueing behind it, which could deadlock a guest that waits for
    /// the command before reading the cursor.
    cursor_open: Arc<AtomicBool>,
    limits: SqlLimits,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("cursor_open", &self.cursor_open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, WitError>>;

enum Command {
    Query {
        statement: String,
        params: Vec<Value>,
        reply: Reply<RowSet>,
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
    fn spawn(conn: DbConn, interrupt: Interrupt, read_only: bool, limits: SqlLimits) -> Self {
        // One command at a time: the guest waits for each answer anyway.
        let (commands, receiver) = mpsc::channel(1);
        let ended = CancellationToken::new();
        let actor = Actor {
            conn,
            interrupt,
            read_only,
            in_transaction: false,
            query_only: false,
            limits,
        };
        tokio::spawn(actor.run(receiver, ended.clone()));
        Self {
            commands,
            ended: Arc::new(ended.drop_guard()),
            cursor_open: Arc::new(AtomicBool::new(false)),
            limits,
        }
    }

    /// Sends a command and waits for its answer. The outer error (a trap)
    /// means the actor is gone, which only a host bug can cause.
    async fn call<T>(
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
        answer
            .await
            .map_err(|_| wasmtime::Error::msg("the SQL connection task stopped mid-command"))
    }
}

/// The pooled connection an actor owns.
enum DbConn {
    Postgres(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

/// One decoded row, plus the result's columns on the first row.
struct DecodedRow {
    values: Vec<Value>,
    /// Estimated size, for [`SqlLimits::max_bytes`].
    bytes: usize,
    columns: Option<Vec<Column>>,
}

impl DbConn {
    /// The text sqlx prepares for `statement`.
    ///
    /// sqlx caches prepared statements per connection by their text alone,
    /// and PostgreSQL fixes a statement's parameter types when it is
    /// prepared. Guest parameters are dynamically typed, so the same text
    /// bound first with an `int` and later with a `float` or `timestamp`
    /// would have the later value's bytes read as the first type: silently
    /// wrong data. A trailing comment naming the parameter types makes each
    /// combination its own cache entry. (Appending a line comment cannot
    /// change what a complete statement means.)
    fn statement_text(&self, statement: String, params: &[Value]) -> String {
        match self {
            DbConn::Postgres(_) if !params.is_empty() => {
                let mut text = statement;
                text.push_str("\n-- caisson parameter types:");
                for param in params {
                    text.push(' ');
                    text.push_str(pg_param_type(param).1);
                }
                text
            }
            _ => statement,
        }
    }

    /// Runs `statement` and streams its decoded rows.
    fn fetch<'c>(
        &'c mut self,
        statement: &'c str,
        params: Vec<Value>,
    ) -> Result<BoxStream<'c, Result<DecodedRow, WitError>>, WitError> {
        match self {
            DbConn::Postgres(conn) => {
                let arguments = pg_arguments(params)?;
                let mut first = true;
                let rows = (&mut **conn).fetch(sqlx::query_with(statement, arguments));
                Ok(rows
                    .map(move |row| {
                        let row = row.map_err(map_sqlx_error)?;
                        let columns = std::mem::take(&mut first).then(|| pg_columns(&row));
                        let values = pg_row_values(&row)?;
                        Ok(DecodedRow {
                            bytes: row_size(&values),
                            values,
                            columns,
                        })
                    })
                    .boxed())
            }
            DbConn::Sqlite(conn) => {
                let arguments = sqlite_arguments(params)?;
                let mut first = true;
                let rows = (&mut **conn).fetch(sqlx::query_with(statement, arguments));
                Ok(rows
                    .map(move |row| {
                        let row = row.map_err(map_sqlx_error)?;
                        let values = sqlite_row_values(&row)?;
                        let columns =
                            std::mem::take(&mut first).then(|| sqlite_columns(&row, &values));
                        Ok(DecodedRow {
                            bytes: row_size(&values),
                            values,
                            columns,
                        })
                    })
                    .boxed())
            }
        }
    }

    async fn execute(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError> {
        let result = match self {
            // PostgreSQL reports no inserted id: `RETURNING` does that.
            DbConn::Postgres(conn) => (&mut **conn)
                .execute(sqlx::query_with(statement, pg_arguments(params)?))
                .await
                .map(|done| ExecuteResult {
                    rows_affected: done.rows_affected(),
                    last_insert_id: None,
                }),
            // `sqlite3_last_insert_rowid`: the connection's latest insert,
            // 0 when it has made none.
            DbConn::Sqlite(conn) => (&mut **conn)
                .execute(sqlx::query_with(statement, sqlite_arguments(params)?))
                .await
                .map(|done| ExecuteResult {
                    rows_affected: done.rows_affected(),
                    last_insert_id: Some(done.last_insert_rowid()).filter(|&id| id != 0),
                }),
        };
        result.map_err(map_sqlx_error)
    }

    /// The columns of a statement that returned no rows (a row carries its
    /// columns; an empty result does not). The statement has just run, so
    /// preparing it again is a hit in sqlx's statement cache, not a round
    /// trip.
    async fn describe_columns(&mut self, statement: &str) -> Result<Vec<Column>, WitError> {
        fn columns<C: sqlx::Column>(columns: &[C]) -> Vec<Column> {
            columns
                .iter()
                .map(|c| Column {
                    name: c.name().to_owned(),
                    type_name: c.type_info().name().to_owned(),
                })
                .collect()
        }
        match self {
            DbConn::Postgres(conn) => (&mut **conn)
                .prepare(statement)
                .await
                .map(|s| columns(s.columns())),
            DbConn::Sqlite(conn) => (&mut **conn)
                .prepare(statement)
                .await
                .map(|s| columns(s.columns())),
        }
        .map_err(map_sqlx_error)
    }

    /// Runs a fixed, host-written statement. A plain `&str` has no
    /// arguments, so sqlx sends it with the simple protocol (unprepared,
    /// and several statements may be separated by `;`).
    async fn run_host_sql(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            DbConn::Postgres(conn) => (&mut **conn).execute(sql).await.map(drop),
            DbConn::Sqlite(conn) => (&mut **conn).execute(sql).await.map(drop),
        }
    }
}

/// Owns one pooled connection and runs a [`Connection`]'s commands in order.
struct Actor {
    conn: DbConn,
    interrupt: Interrupt,
    read_only: bool,
    /// Whether the guest has called `begin` without `commit`/`rollback`.
    in_transaction: bool,
    /// Whether a read-only SQLite transaction set `PRAGMA query_only`.
    query_only: bool,
    limits: SqlLimits,
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
                self.abort().await;
                return;
            }
        }
        self.release().await;
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

    /// Stops the statement still running for a run that has ended, and
    /// closes its connection: mid-statement, it cannot go back to the pool.
    async fn abort(self) {
        match self.conn {
            DbConn::Postgres(conn) => {
                // Closing the socket does not stop the backend: it goes on
                // with a `pg_sleep` or an endless query until it next writes
                // to the client. End it from another connection (not from
                // the pool, which the run may have used up).
                drop(conn.detach());
                if let Interrupt::Postgres { pid, options } = self.interrupt {
                    tokio::spawn(terminate_backend(options, pid));
                }
            }
            DbConn::Sqlite(conn) => {
                if let Interrupt::Sqlite(handle) = self.interrupt {
                    // SAFETY: the connection is still open (we own it), and
                    // `sqlite3_interrupt` may be called from any thread.
                    unsafe { sqlite3_interrupt(handle.0) };
                }
                let _ = conn.close().await;
            }
        }
    }

    /// Whether every guest statement must be wrapped in a host-issued
    /// read-only transaction (see the module docs).
    fn wraps_statements(&self) -> bool {
        self.read_only && matches!(self.conn, DbConn::Postgres(_))
    }

    async fn start_statement(&mut self) -> Result<(), WitError> {
        if self.wraps_statements() {
            self.conn
                .run_host_sql("BEGIN READ ONLY")
                .await
                .map_err(map_sqlx_error)?;
        }
        Ok(())
    }

    /// Ends the wrapping transaction. After a failed statement PostgreSQL
    /// turns this `COMMIT` into a rollback; if the guest's statement was
    /// itself `COMMIT`, this one is a no-op with a warning.
    async fn finish_statement(&mut self) -> Result<(), WitError> {
        if self.wraps_statements() {
            self.conn
                .run_host_sql("COMMIT")
                .await
                .map_err(map_sqlx_error)?;
        }
        Ok(())
    }

    /// Ends the wrapper around a guest statement that produced `result`.
    async fn finish<T>(&mut self, result: Result<T, WitError>) -> Result<T, WitError> {
        let finished = self.finish_statement().await;
        let value = result?;
        finished?;
        Ok(value)
    }

    async fn query(&mut self, statement: String, params: Vec<Value>) -> Result<RowSet, WitError> {
        let statement = self.conn.statement_text(statement, &params);
        self.start_statement().await?;
        let result = self.query_rows(&statement, params).await;
        self.finish(result).await
    }

    async fn query_rows(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<RowSet, WitError> {
        let SqlLimits {
            max_rows,
            max_bytes,
            ..
        } = self.limits;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        {
            let mut stream = self.conn.fetch(statement, params)?;
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
                rows.push(row.values);
            }
        }
        let columns = match columns {
            Some(columns) => columns,
            None => self.conn.describe_columns(statement).await?,
        };
        Ok(RowSet { columns, rows })
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError> {
        let statement = self.conn.statement_text(statement, &params);
        self.start_statement().await?;
        let result = self.conn.execute(&statement, params).await;
        self.finish(result).await
    }

    /// Runs a cursor to its end (or until the guest drops it), sending rows
    /// to the [`Cursor`] through a bounded channel and a byte budget.
    async fn cursor(&mut self, statement: String, params: Vec<Value>, reply: Reply<CursorStart>) {
        let statement = self.conn.statement_text(statement, &params);
        if let Err(e) = self.start_statement().await {
            let _ = reply.send(Err(e));
            return;
        }
        // A cursor that fails or has no rows ends its wrapper before the
        // guest hears of it, like any other statement: once the guest has
        // its answer it may drop the connection, and an actor still busy
        // then would have to close the connection instead of reusing it.
        if let Some((reply, answer)) = self.stream_cursor(&statement, params, reply).await {
            let _ = reply.send(self.finish(answer).await);
            return;
        }
        // Nobody is waiting for this result: a failure here has been or
        // will be seen by the guest's next statement.
        let _ = self.finish_statement().await;
    }

    async fn stream_cursor(
        &mut self,
        statement: &str,
        params: Vec<Value>,
        reply: Reply<CursorStart>,
    ) -> Option<(Reply<CursorStart>, Result<CursorStart, WitError>)> {
        let max_bytes = budget_bytes(self.limits.max_bytes);
        let mut stream = match self.conn.fetch(statement, params) {
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
        // On a read-only PostgreSQL source the guest's transaction is only
        // bookkeeping: each statement still runs in its own host-issued
        // `BEGIN READ ONLY` ... `COMMIT`, because a transaction the guest can
        // end (with a `COMMIT` statement) cannot be what keeps it read-only.
        // Nothing is written, so nothing is lost but snapshot consistency
        // across statements.
        if !self.wraps_statements() {
            match self.conn {
                DbConn::Postgres(_) => {
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
                    self.conn
                        .run_host_sql(&begin)
                        .await
                        .map_err(map_sqlx_error)?;
                }
                DbConn::Sqlite(_) => {
                    // SQLite transactions are serializable, which every
                    // level allows. It has no read-only transactions:
                    // `query_only` refuses writes on the connection until
                    // the transaction ends.
                    if options.read_only {
                        self.conn
                            .run_host_sql("PRAGMA query_only = ON")
                            .await
                            .map_err(map_sqlx_error)?;
                        self.query_only = true;
                    }
                    if let Err(e) = self.conn.run_host_sql("BEGIN").await {
                        self.end_query_only().await;
                        return Err(map_sqlx_error(e));
                    }
                }
            }
        }
        self.in_transaction = true;
        Ok(())
    }

    /// Lifts a read-only transaction's `query_only` (SQLite) once it ends.
    async fn end_query_only(&mut self) {
        if self.query_only {
            self.query_only = false;
            // Should it fail, the connection stays read-only for the rest
            // of the run, which refuses writes rather than allowing them.
            let _ = self.conn.run_host_sql("PRAGMA query_only = OFF").await;
        }
    }

    async fn commit(&mut self) -> Result<(), WitError> {
        if !self.in_transaction {
            return Err(WitError::InvalidInput(
                "there is no open transaction to commit; call `begin` first".into(),
            ));
        }
        if self.wraps_statements() {
            self.in_transaction = false;
            return Ok(());
        }
        match self.conn {
            DbConn::Postgres(_) => {
                // PostgreSQL answers `COMMIT` in a transaction that an
                // earlier error aborted by rolling back, without an error.
                // Probe first so the guest is not told its writes were
                // committed when they were not.
                self.in_transaction = false;
                if let Err(e) = self.conn.run_host_sql("SELECT 1").await {
                    let aborted = pg_sqlstate(&e) == Some("25P02");
                    let _ = self.conn.run_host_sql("ROLLBACK").await;
                    return Err(if aborted {
                        WitError::InvalidInput(
                            "a statement in this transaction failed, so it was rolled back; \
                             nothing was committed"
                                .into(),
                        )
                    } else {
                        map_sqlx_error(e)
                    });
                }
                // A failed PostgreSQL `COMMIT` (a deferred constraint, a
                // serialization failure) rolls back: the transaction is over.
                self.conn
                    .run_host_sql("COMMIT")
                    .await
                    .map_err(map_sqlx_error)
            }
            DbConn::Sqlite(_) => {
                // A failed SQLite `COMMIT` (SQLITE_BUSY, a deferred foreign
                // key) leaves the transaction open: the guest can retry or
                // roll back.
                self.conn
                    .run_host_sql("COMMIT")
                    .await
                    .map_err(map_sqlx_error)?;
                self.in_transaction = false;
                self.end_query_only().await;
                Ok(())
            }
        }
    }

    async fn rollback(&mut self) -> Result<(), WitError> {
        if !self.in_transaction {
            return Err(WitError::InvalidInput(
                "there is no open transaction to roll back; call `begin` first".into(),
            ));
        }
        self.in_transaction = false;
        if self.wraps_statements() {
            return Ok(());
        }
        let rolled_back = self
            .conn
            .run_host_sql("ROLLBACK")
            .await
            .map_err(map_sqlx_error);
        self.end_query_only().await;
        rolled_back
    }

    /// Makes the connection fit for the next run, or closes it.
    async fn release(self) {
        match self.conn {
            DbConn::Postgres(mut conn) => {
                // Always roll back, not only after `begin`: the guest may
                // have sent `BEGIN` as a statement (without a transaction
                // this is a warning). Then forget sqlx's prepared statements
                // before `DEALLOCATE ALL` drops them on the server, so the
                // two agree.
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
            DbConn::Sqlite(conn) => {
                // Never reused (see the module docs). Closing rolls back.
                let _ = conn.close().await;
            }
        }
    }
}

/// The byte budget of a cursor: at least 1 byte (so that zero-size rows
/// still flow), and small enough to count in the `u32` permits of
/// [`Semaphore::acquire_many_owned`].
fn budget_bytes(max_bytes: usize) -> usize {
    max_bytes.clamp(1, u32::MAX as usize)
}

// ---------------------------------------------------------------------------
// The rows resource
// ---------------------------------------------------------------------------

/// What the actor answers to a `cursor` command.
struct CursorStart {
    columns: Vec<Column>,
    /// `None` for a result with no rows.
    rows: Option<CursorStream>,
}

/// The guest's end of a streaming cursor.
struct CursorStream {
    rows: mpsc::Receiver<Result<CursorRow, WitError>>,
    /// Shared with the actor, which takes a row's size from it before
    /// sending the row.
    budget: Arc<Semaphore>,
}

/// A row on its way to the guest. Its permits count against the cursor's
/// byte budget until it is handed to the guest (or the cursor is dropped).
struct CursorRow {
    values: Vec<Value>,
    bytes: usize,
    _permit: OwnedSemaphorePermit,
}

/// An open `rows` resource: a streamed result.
///
/// The connection's actor decodes rows ahead of the guest into a channel.
/// What it buffers is bounded twice: by a byte budget of
/// [`SqlLimits::max_bytes`] (a row holds its share until `next` hands it
/// over) and by a row count. Each `next` call returns at most
/// [`SqlLimits::max_batch`] rows and `max_bytes` bytes, so the host holds at
/// most about twice `max_bytes` of decoded rows per cursor.
///
/// Dropping the cursor closes the channel and the budget; the actor stops
/// reading the result and the connection accepts commands again.
pub struct Cursor {
    columns: Vec<Column>,
    /// `None` once the result is exhausted (or failed).
    stream: Option<CursorStream>,
    /// A row received but not returned because the batch was full.
    pending: Option<CursorRow>,
    /// An error received after some rows, returned by the next call.
    pending_error: Option<WitError>,
    max_batch: u32,
    max_bytes: usize,
    /// Clears the connection's `cursor_open` flag when dropped.
    connection_busy: Arc<AtomicBool>,
    /// Keeps the session from being ended while the cursor is read.
    _ended: Arc<DropGuard>,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("columns", &self.columns)
            .field("finished", &self.stream.is_none())
            .finish_non_exhaustive()
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // Wake an actor waiting for budget so it notices the cursor is gone.
        if let Some(stream) = &self.stream {
            stream.budget.close();
        }
        self.connection_busy.store(false, Ordering::Release);
    }
}

impl Cursor {
    /// Returns up to `max` rows (clamped to `1..=max_batch`; 0 would make an
    /// empty answer, which means "done", ambiguous), stopping early before
    /// the batch would pass `max_bytes`. An empty batch means the end.
    async fn next(&mut self, max: u32) -> Result<Vec<Vec<Value>>, WitError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let limit = max.clamp(1, self.max_batch.max(1)) as usize;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < limit {
            let row = match self.pending.take() {
                Some(row) => row,
                None => {
                    let Some(stream) = &mut self.stream else {
                        break;
                    };
                    match stream.rows.recv().await {
                        Some(Ok(row)) => row,
                        Some(Err(e)) => {
                            self.stream = None;
                            if batch.is_empty() {
                                return Err(e);
                            }
                            self.pending_error = Some(e);
                            break;
                        }
                        None => {
                            self.stream = None;
                            break;
                        }
                    }
                }
            };
            if !batch.is_empty() && bytes.saturating_add(row.bytes) > self.max_bytes {
                self.pending = Some(row);
                break;
            }
            bytes = bytes.saturating_add(row.bytes);
            // Dropping the row's permit here lets the actor read ahead again.
            batch.push(row.values);
        }
        Ok(batch)
    }
}

// ---------------------------------------------------------------------------
// Host trait implementations
// ---------------------------------------------------------------------------

impl wit_sql::Host for SqlView<'_> {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, WitError>> {
        // Not granted and not configured look the same: the guest cannot
        // probe the worker's configuration.
        let Some(source) = self.ctx.sources.get(&label) else {
            return Ok(Err(WitError::AccessDenied));
        };
        let (conn, interrupt) = match source.acquire(self.ctx.deadline).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(label, error = %e, "could not get a SQL connection");
                return Ok(Err(WitError::Backend(connect_error_message(&e))));
            }
        };
        let connection = Connection::spawn(conn, interrupt, source.read_only, self.ctx.limits);
        crate::push_resource(self.table, connection)
    }
}

impl wit_sql::HostConnection for SqlView<'_> {
    async fn query(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, WitError>> {
        let conn = self.table.get(&this)?;
        conn.call(|reply| Command::Query {
            statement,
            params,
            reply,
        })
        .await
    }

    async fn cursor(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Resource<Cursor>, WitError>> {
        let conn = self.table.get(&this)?;
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
        let cursor = Cursor {
            columns: start.columns,
            stream: start.rows,
            pending: None,
            pending_error: None,
            max_batch: limits.max_batch,
            max_bytes: limits.max_bytes,
            connection_busy: busy,
            _ended: ended,
        };
        crate::push_resource(self.table, cursor)
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<ExecuteResult, WitError>> {
        let conn = self.table.get(&this)?;
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

/// A `begin-options` resource: what the guest set.
#[derive(Debug, Clone, Default)]
pub struct BeginOptions {
    isolation_level: Option<IsolationLevel>,
    read_only: bool,
}

impl wit_sql::HostBeginOptions for SqlView<'_> {
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

impl wit_sql::HostRows for SqlView<'_> {
    async fn columns(&mut self, this: Resource<Cursor>) -> wasmtime::Result<Vec<Column>> {
        Ok(self.table.get(&this)?.columns.clone())
    }

    async fn next(
        &mut self,
        this: Resource<Cursor>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<Vec<Value>>, WitError>> {
        Ok(self.table.get_mut(&this)?.next(max).await)
    }

    async fn drop(&mut self, this: Resource<Cursor>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Maps a sqlx error to the guest's error. Messages come from the database
/// or the driver and describe the statement, never the connection URL.
fn map_sqlx_error(error: sqlx::Error) -> WitError {
    match error {
        sqlx::Error::RowNotFound => WitError::Other("no rows".into()),
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                map_pg_error(pg)
            } else {
                map_sqlite_error(db.code().as_deref(), db.message())
            }
        }
        // The driver's own text for these can name the server's address or
        // its certificate's host: the guest gets the kind, the server log
        // the details.
        e @ (sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed) => {
            tracing::warn!(error = %e, "SQL connection failed");
            WitError::Backend("the database connection failed; retry later".into())
        }
        e @ sqlx::Error::Configuration(_) => {
            tracing::warn!(error = %e, "SQL source misconfigured");
            WitError::Other("the database source is misconfigured".into())
        }
        // Decoding and column errors describe the statement's result.
        e => WitError::Other(e.to_string()),
    }
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

/// SQLite's errors by result code. SQLite has no SQLSTATE, so the codes
/// with an obvious one get it, and the rest `HY000` (general error); the
/// extended result code goes in `detail`.
fn map_sqlite_error(code: Option<&str>, message: &str) -> WitError {
    // sqlx reports the extended result code; its low byte is the primary one.
    let Some(extended) = code.and_then(|c| c.parse::<i32>().ok()) else {
        return WitError::Other(message.to_owned());
    };
    let database = |sqlstate: &str| DatabaseError {
        sqlstate: sqlstate.to_owned(),
        message: message.to_owned(),
        detail: Some(format!("SQLite result code {extended}")),
    };
    match (extended & 0xff, extended) {
        // SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH
        (3 | 8 | 23, _) => WitError::AccessDenied,
        // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
        (_, 1555 | 2067) => WitError::Conflict(database("23505")),
        (_, 1299) => WitError::Database(database("23502")), // NOT NULL
        (_, 787) => WitError::Database(database("23503")),  // FOREIGN KEY
        (_, 275) => WitError::Database(database("23514")),  // CHECK
        (19, _) => WitError::Database(database("23000")),   // other constraints
        // SQLITE_BUSY, SQLITE_LOCKED: another connection holds a lock the
        // transaction needs (SQLITE_BUSY_SNAPSHOT: its snapshot is stale).
        // Rolling back and running the transaction again may succeed.
        (5 | 6, _) => WitError::RetryTransaction(database("40001")),
        (18, _) => WitError::Database(database("54000")), // SQLITE_TOOBIG
        (20, _) => WitError::Database(database("42804")), // SQLITE_MISMATCH
        // SQLITE_NOMEM, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL,
        // SQLITE_CANTOPEN, SQLITE_PROTOCOL: the file or the host failed.
        (7 | 10 | 11 | 13 | 14 | 15, _) => WitError::Backend(message.to_owned()),
        // SQLITE_ERROR (syntax, missing table...) and the rest.
        _ => WitError::Database(database("HY000")),
    }
}

fn pg_sqlstate(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.try_downcast_ref::<PgDatabaseError>().map(|e| e.code()),
        _ => None,
    }
}

/// The guest's message when `open` cannot get a connection. A database's
/// refusal (bad password, unknown database...) is reduced to its code: its
/// message can name the role or database of the URL.
fn connect_error_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => format!(
            "could not connect to the database: it refused the connection (code {})",
            db.code().as_deref().unwrap_or("unknown")
        ),
        sqlx::Error::PoolTimedOut => {
            "could not connect to the database: no connection was free or it did not answer in time"
                .into()
        }
        // An I/O or TLS error's text can name the server.
        _ => "could not connect to the database".into(),
    }
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

fn invalid_param(index: usize, message: impl fmt::Display) -> WitError {
    WitError::InvalidInput(format!("parameter {}: {message}", index + 1))
}

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// The last time of day PostgreSQL accepts: 24:00:00.
const MAX_TIME_MICROS: u64 = 86_400_000_000;
/// The most decimal digits a `decimal` parameter may expand to. PostgreSQL
/// takes 131072 before the point and 16383 after; a short text with a huge
/// exponent must not make the host allocate that much first.
const MAX_DECIMAL_DIGITS: usize = 1000;

/// A decimal the guest passed, split into its digits and the position of
/// the point: `-12.50` is `{ negative, integer: "12", fraction: "50" }`.
#[derive(Debug, PartialEq, Eq)]
enum Decimal {
    NaN,
    Infinity {
        negative: bool,
    },
    Finite {
        negative: bool,
        integer: String,
        fraction: String,
    },
}

/// Parses `[+-]digits[.digits][e[+-]digits]`, `NaN` or `[+-]Infinity`.
fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let bad = || format!("{text:?} is not a decimal number");
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest.eq_ignore_ascii_case("nan") && rest.len() == text.len() {
        return Ok(Decimal::NaN);
    }
    if rest.eq_ignore_ascii_case("infinity") || rest.eq_ignore_ascii_case("inf") {
        return Ok(Decimal::Infinity { negative });
    }
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => {
            let exponent: i64 = rest[at + 1..].parse().map_err(|_| bad())?;
            (&rest[..at], exponent)
        }
        None => (rest, 0),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if integer.is_empty() && fraction.is_empty()
        || !integer
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // Shift the point by the exponent.
    let digits = format!("{integer}{fraction}");
    let point = i64::try_from(integer.len()).map_err(|_| bad())? + exponent;
    let too_long = || format!("{text:?} has more than {MAX_DECIMAL_DIGITS} digits");
    let limit = MAX_DECIMAL_DIGITS as i64;
    if point > limit || point < -limit || digits.len() > MAX_DECIMAL_DIGITS {
        return Err(too_long());
    }
    let (integer, fraction) = if point <= 0 {
        (
            String::new(),
            format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        let (i, f) = digits.split_at(point as usize);
        (i.to_owned(), f.to_owned())
    };
    let integer = integer.trim_start_matches('0').to_owned();
    Ok(Decimal::Finite {
        negative,
        integer,
        fraction,
    })
}

/// PostgreSQL's binary `NUMERIC`: base-10000 digits, the weight of the
/// first, a sign and the display scale (the fraction's length).
fn pg_numeric_bytes(decimal: &Decimal) -> Result<Vec<u8>, String> {
    let header = |ndigits: u16, weight: i16, sign: u16, scale: u16| {
        let mut out = Vec::with_capacity(8 + 2 * usize::from(ndigits));
        for part in [ndigits, weight as u16, sign, scale] {
            out.extend_from_slice(&part.to_be_bytes());
        }
        out
    };
    let (negative, integer, fraction) = match decimal {
        Decimal::NaN => return Ok(header(0, 0, 0xC000, 0)),
        Decimal::Infinity { negative: false } => return Ok(header(0, 0, 0xD000, 0)),
        Decimal::Infinity { negative: true } => return Ok(header(0, 0, 0xF000, 0)),
        Decimal::Finite {
            negative,
            integer,
            fraction,
        } => (*negative, integer, fraction),
    };
    let scale = u16::try_from(fraction.len()).map_err(|_| "too many fraction digits")?;
    // Pad the integer part on the left and the fraction on the right to
    // whole groups of four digits.
    let int_pad = (4 - integer.len() % 4) % 4;
    let frac_pad = (4 - fraction.len() % 4) % 4;
    let padded = format!(
        "{}{integer}{fraction}{}",
        "0".repeat(int_pad),
        "0".repeat(frac_pad)
    );
    let mut groups: Vec<u16> = padded
        .as_bytes()
        .chunks(4)
        .map(|chunk| chunk.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
        .collect();
    let mut weight = ((integer.len() + int_pad) / 4) as i64 - 1;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= leading as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        return Ok(header(0, 0, 0, scale));
    }
    let ndigits = u16::try_from(groups.len()).map_err(|_| "too many digits")?;
    let weight = i16::try_from(weight).map_err(|_| "out of range")?;
    let mut out = header(ndigits, weight, if negative { 0x4000 } else { 0 }, scale);
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Ok(out)
}

/// A UUID from its hyphenated (or plain 32-digit) hex form.
fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let bad = || format!("{text:?} is not a UUID");
    let hex: String = if text.len() == 36 {
        let hyphens = [8, 13, 18, 23];
        if !hyphens.iter().all(|&i| text.as_bytes()[i] == b'-') {
            return Err(bad());
        }
        text.chars().filter(|&c| c != '-').collect()
    } else {
        text.to_owned()
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn json_param(text: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| format!("not valid JSON: {e}"))
}

/// A guest value encoded for PostgreSQL: the type it is bound as and its
/// binary form (`None` for NULL). Each value names its own type through
/// [`Encode::produces`], so one Rust type carries every kind.
struct PgParam {
    oid: u32,
    bytes: Option<Vec<u8>>,
}

impl Type<Postgres> for PgParam {
    fn type_info() -> PgTypeInfo {
        // Never used: `produces` always answers.
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for PgParam {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.bytes {
            Some(bytes) => {
                buf.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(PgTypeInfo::with_oid(Oid(self.oid)))
    }
}

/// The PostgreSQL type a guest value is bound as, by OID and name (the name
/// keys sqlx's statement cache, see [`DbConn::statement_text`]).
fn pg_param_type(value: &Value) -> (u32, &'static str) {
    match value {
        // A NULL of unspecified type (OID 0): the server infers its type
        // from context, as for a literal `NULL`, so it fits any column.
        Value::Null => (0, "unknown"),
        Value::Boolean(_) => (16, "bool"),
        Value::Int(_) => (20, "int8"),
        // PostgreSQL has no unsigned integers; NUMERIC holds any u64.
        Value::Uint(_) | Value::Decimal(_) => (1700, "numeric"),
        Value::Float(_) => (701, "float8"),
        // `other` is text: the statement casts it (`$1::inet`).
        Value::Text(_) | Value::Other(_) => (25, "text"),
        Value::Blob(_) => (17, "bytea"),
        Value::Date(_) => (1082, "date"),
        Value::Time(_) => (1083, "time"),
        Value::Datetime(_) => (1114, "timestamp"),
        Value::Timestamp(_) => (1184, "timestamptz"),
        Value::Interval(_) => (1186, "interval"),
        Value::Uuid(_) => (2950, "uuid"),
        Value::Json(_) => (3802, "jsonb"),
        Value::BooleanArray(_) => (1000, "bool[]"),
        Value::IntArray(_) => (1016, "int8[]"),
        Value::FloatArray(_) => (1022, "float8[]"),
        Value::DecimalArray(_) => (1231, "numeric[]"),
        Value::TextArray(_) => (1009, "text[]"),
        Value::UuidArray(_) => (2951, "uuid[]"),
        Value::DateArray(_) => (1182, "date[]"),
        Value::DatetimeArray(_) => (1115, "timestamp[]"),
        Value::TimestampArray(_) => (1185, "timestamptz[]"),
    }
}

fn pg_date_bytes(days: i32) -> Vec<u8> {
    let pg = match days {
        i32::MAX | i32::MIN => days,
        // Cannot overflow: MIN + 10957 is in range, MAX was handled.
        days => days.saturating_sub(PG_EPOCH_DAYS),
    };
    pg.to_be_bytes().to_vec()
}

fn pg_micros_bytes(micros: i64) -> Vec<u8> {
    let pg = match micros {
        i64::MAX | i64::MIN => micros,
        // Out of PostgreSQL's range either way; the server says so.
        micros => micros.saturating_sub(PG_EPOCH_MICROS),
    };
    pg.to_be_bytes().to_vec()
}

fn pg_time_bytes(micros: u64) -> Result<Vec<u8>, String> {
    if micros > MAX_TIME_MICROS {
        return Err(format!("time {micros} us is past 24:00:00"));
    }
    Ok((micros as i64).to_be_bytes().to_vec())
}

fn pg_decimal_bytes(text: &str) -> Result<Vec<u8>, String> {
    pg_numeric_bytes(&parse_decimal(text)?)
}

/// A one-dimensional PostgreSQL array of `element_oid` in binary form.
fn pg_array_bytes<T>(
    element_oid: u32,
    elements: &[Option<T>],
    mut encode: impl FnMut(&T) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let len = i32::try_from(elements.len()).map_err(|_| "array too long")?;
    let mut out = Vec::new();
    let has_null = elements.iter().any(Option::is_none);
    out.extend_from_slice(&i32::from(len > 0).to_be_bytes()); // dimensions
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&element_oid.to_be_bytes());
    if len > 0 {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    }
    for element in elements {
        match element {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(value) => {
                let bytes = encode(value)?;
                let n = i32::try_from(bytes.len()).map_err(|_| "array element too long")?;
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }
    Ok(out)
}

/// Encodes one guest value as PostgreSQL binds it (see the module docs).
fn pg_param(value: &Value) -> Result<PgParam, String> {
    let (oid, _) = pg_param_type(value);
    let ok = |bytes: Vec<u8>| Ok(Some(bytes));
    let bytes: Result<Option<Vec<u8>>, String> = match value {
        Value::Null => Ok(None),
        Value::Boolean(b) => ok(vec![u8::from(*b)]),
        Value::Int(i) => ok(i.to_be_bytes().to_vec()),
        Value::Uint(u) => pg_decimal_bytes(&u.to_string()).map(Some),
        Value::Float(f) => ok(f.to_be_bytes().to_vec()),
        Value::Decimal(d) => pg_decimal_bytes(d).map(Some),
        Value::Text(s) => ok(s.as_bytes().to_vec()),
        Value::Other(other) => ok(other.text.as_bytes().to_vec()),
        Value::Blob(b) => ok(b.clone()),
        Value::Date(days) => ok(pg_date_bytes(*days)),
        Value::Time(micros) => pg_time_bytes(*micros).map(Some),
        Value::Datetime(micros) | Value::Timestamp(micros) => ok(pg_micros_bytes(*micros)),
        Value::Interval(interval) => {
            let mut out = interval.microseconds.to_be_bytes().to_vec();
            out.extend_from_slice(&interval.days.to_be_bytes());
            out.extend_from_slice(&interval.months.to_be_bytes());
            ok(out)
        }
        Value::Uuid(text) => parse_uuid(text).map(|u| Some(u.to_vec())),
        Value::Json(text) => {
            // Sent as is, not parsed into a `serde_json::Value` first: that
            // would reorder keys and round numbers beyond `f64` precision.
            // The binary `JSONB` format is a version byte (1), then the text.
            json_param(text)?;
            let mut out = vec![1];
            out.extend_from_slice(text.as_bytes());
            ok(out)
        }
        Value::BooleanArray(v) => pg_array_bytes(16, v, |b| Ok(vec![u8::from(*b)])).map(Some),
        Value::IntArray(v) => pg_array_bytes(20, v, |i| Ok(i.to_be_bytes().to_vec())).map(Some),
        Value::FloatArray(v) => pg_array_bytes(701, v, |f| Ok(f.to_be_bytes().to_vec())).map(Some),
        Value::DecimalArray(v) => pg_array_bytes(1700, v, |d| pg_decimal_bytes(d)).map(Some),
        Value::TextArray(v) => pg_array_bytes(25, v, |s| Ok(s.as_bytes().to_vec())).map(Some),
        Value::UuidArray(v) => {
            pg_array_bytes(2950, v, |s| parse_uuid(s).map(|u| u.to_vec())).map(Some)
        }
        Value::DateArray(v) => pg_array_bytes(1082, v, |d| Ok(pg_date_bytes(*d))).map(Some),
        Value::DatetimeArray(v) => pg_array_bytes(1114, v, |m| Ok(pg_micros_bytes(*m))).map(Some),
        Value::TimestampArray(v) => pg_array_bytes(1184, v, |m| Ok(pg_micros_bytes(*m))).map(Some),
    };
    Ok(PgParam { oid, bytes: bytes? })
}

fn pg_arguments(params: Vec<Value>) -> Result<PgArguments, WitError> {
    if params.len() > PG_MAX_PARAMS {
        return Err(WitError::InvalidInput(format!(
            "{} parameters; PostgreSQL takes at most {PG_MAX_PARAMS}",
            params.len()
        )));
    }
    let mut arguments = PgArguments::default();
    for (index, param) in params.iter().enumerate() {
        let param = pg_param(param).map_err(|e| invalid_param(index, e))?;
        arguments.add(param).map_err(|e| invalid_param(index, e))?;
    }
    Ok(arguments)
}

/// `YYYY-MM-DD`, or `infinity`/`-infinity` for the extremes.
fn date_text(days: i32) -> Result<String, String> {
    match days {
        i32::MAX => Ok("infinity".into()),
        i32::MIN => Ok("-infinity".into()),
        days => NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|epoch| epoch.checked_add_signed(TimeDelta::days(days.into())))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .ok_or_else(|| format!("date {days} is out of range")),
    }
}

/// `HH:MM:SS.ffffff`.
fn time_text(micros: u64) -> Result<String, String> {
    if micros == MAX_TIME_MICROS {
        return Ok("24:00:00.000000".into());
    }
    let secs = u32::try_from(micros / 1_000_000).map_err(|e| e.to_string())?;
    let nanos = (micros % 1_000_000) as u32 * 1000;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
        .map(|t| t.format("%H:%M:%S%.6f").to_string())
        .ok_or_else(|| format!("time {micros} us is past 24:00:00"))
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, SQLite's own spelling, with no zone.
fn datetime_text(micros: i64) -> Result<String, String> {
    match micros {
        i64::MAX => Ok("infinity".into()),
        i64::MIN => Ok("-infinity".into()),
        micros => DateTime::from_timestamp_micros(micros)
            .map(|at| at.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
            .ok_or_else(|| format!("datetime {micros} us is out of range")),
    }
}

/// RFC 3339 in UTC with microseconds, fixed width.
fn timestamp_text(micros: i64) -> Result<String, String> {
    match micros {
        i64::MAX => Ok("infinity".into()),
        i64::MIN => Ok("-infinity".into()),
        micros => DateTime::from_timestamp_micros(micros)
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Micros, true))
            .ok_or_else(|| format!("timestamp {micros} us is out of range")),
    }
}

/// An array as the JSON text SQLite stores it: numbers and booleans as
/// themselves, everything else as strings in the scalar's text form.
fn json_array<T>(
    elements: &[Option<T>],
    mut convert: impl FnMut(&T) -> Result<serde_json::Value, String>,
) -> Result<String, String> {
    let values = elements
        .iter()
        .map(|e| e.as_ref().map_or(Ok(serde_json::Value::Null), &mut convert))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::Value::Array(values).to_string())
}

/// What SQLite stores for a guest value: SQLite has five storage classes,
/// so the other kinds are stored as text (see the module docs).
enum SqliteParam {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn sqlite_param(value: &Value) -> Result<SqliteParam, String> {
    use SqliteParam as P;
    let string = |s: &String| Ok(serde_json::Value::String(s.clone()));
    Ok(match value {
        Value::Null => P::Null,
        Value::Boolean(b) => P::Int(i64::from(*b)),
        Value::Int(i) => P::Int(*i),
        Value::Uint(u) => P::Int(i64::try_from(*u).map_err(|_| {
            format!("{u} is above SQLite's largest integer (bind it as `decimal` text)")
        })?),
        Value::Float(f) => P::Float(*f),
        Value::Decimal(d) => {
            parse_decimal(d)?;
            P::Text(d.clone())
        }
        Value::Text(s) => P::Text(s.clone()),
        Value::Other(other) => P::Text(other.text.clone()),
        Value::Blob(b) => P::Blob(b.clone()),
        Value::Date(days) => P::Text(date_text(*days)?),
        Value::Time(micros) => P::Text(time_text(*micros)?),
        Value::Datetime(micros) => P::Text(datetime_text(*micros)?),
        Value::Timestamp(micros) => P::Text(timestamp_text(*micros)?),
        Value::Interval(i) => P::Text(format!(
            "P{}M{}DT{}{}.{:06}S",
            i.months,
            i.days,
            if i.microseconds < 0 { "-" } else { "" },
            i.microseconds.unsigned_abs() / 1_000_000,
            i.microseconds.unsigned_abs() % 1_000_000
        )),
        Value::Uuid(text) => P::Text(pg_uuid(parse_uuid(text)?)),
        Value::Json(text) => {
            json_param(text)?;
            P::Text(text.clone())
        }
        Value::BooleanArray(v) => P::Text(json_array(v, |b| Ok((*b).into()))?),
        Value::IntArray(v) => P::Text(json_array(v, |i| Ok((*i).into()))?),
        Value::FloatArray(v) => P::Text(json_array(v, |f| {
            serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| format!("{f} has no JSON form"))
        })?),
        Value::DecimalArray(v) => P::Text(json_array(v, |d| {
            parse_decimal(d)?;
            string(d)
        })?),
        Value::TextArray(v) => P::Text(json_array(v, string)?),
        Value::UuidArray(v) => P::Text(json_array(v, |u| {
            Ok(serde_json::Value::String(pg_uuid(parse_uuid(u)?)))
        })?),
        Value::DateArray(v) => P::Text(json_array(v, |d| date_text(*d).map(Into::into))?),
        Value::DatetimeArray(v) => P::Text(json_array(v, |m| datetime_text(*m).map(Into::into))?),
        Value::TimestampArray(v) => P::Text(json_array(v, |m| timestamp_text(*m).map(Into::into))?),
    })
}

fn sqlite_arguments<'q>(params: Vec<Value>) -> Result<SqliteArguments<'q>, WitError> {
    let mut arguments = SqliteArguments::default();
    for (index, param) in params.iter().enumerate() {
        let added = match sqlite_param(param).map_err(|e| invalid_param(index, e))? {
            SqliteParam::Null => arguments.add(None::<i64>),
            SqliteParam::Int(i) => arguments.add(i),
            SqliteParam::Float(f) => arguments.add(f),
            SqliteParam::Text(s) => arguments.add(s),
            SqliteParam::Blob(b) => arguments.add(b),
        };
        added.map_err(|e| invalid_param(index, e))?;
    }
    Ok(arguments)
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

fn value_size(value: &Value) -> usize {
    fn list<T>(items: &[Option<T>], each: impl Fn(&T) -> usize) -> usize {
        items
            .iter()
            .map(|item| 8 + item.as_ref().map_or(0, &each))
            .fold(0, usize::saturating_add)
    }
    VALUE_OVERHEAD
        + match value {
            Value::Text(s) | Value::Json(s) | Value::Decimal(s) | Value::Uuid(s) => s.len(),
            Value::Other(o) => o.type_name.len() + o.text.len(),
            Value::Blob(b) => b.len(),
            Value::BooleanArray(v) => list(v, |_| 1),
            Value::IntArray(v) => list(v, |_| 8),
            Value::FloatArray(v) => list(v, |_| 8),
            Value::DateArray(v) => list(v, |_| 4),
            Value::DatetimeArray(v) | Value::TimestampArray(v) => list(v, |_| 8),
            Value::DecimalArray(v) | Value::TextArray(v) | Value::UuidArray(v) => {
                list(v, |s| 8 + s.len())
            }
            _ => 0,
        }
}

fn row_size(values: &[Value]) -> usize {
    values
        .iter()
        .map(value_size)
        .fold(ROW_OVERHEAD, usize::saturating_add)
}

fn pg_columns(row: &PgRow) -> Vec<Column> {
    row.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_info().name().to_owned(),
        })
        .collect()
}

fn pg_row_values(row: &PgRow) -> Result<Vec<Value>, WitError> {
    row.columns()
        .iter()
        .map(|column| {
            let raw = row.try_get_raw(column.ordinal()).map_err(map_sqlx_error)?;
            pg_value(column.name(), raw)
        })
        .collect()
}

/// Decodes one PostgreSQL value from its binary format (sqlx prepares every
/// statement, so results are binary). Done by hand rather than through
/// sqlx's chrono decoders, which panic on `infinity` timestamps and dates.
fn pg_value(column: &str, raw: PgValueRef<'_>) -> Result<Value, WitError> {
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let mut ty = raw.type_info().into_owned();
    while let PgTypeKind::Domain(base) = ty.kind() {
        ty = base.clone();
    }
    let name = ty.name().to_owned();
    let fail = |message: String| {
        WitError::InvalidInput(format!(
            "could not decode column `{column}` of type `{name}`: {message}"
        ))
    };
    if raw.format() == PgValueFormat::Text {
        return raw
            .as_str()
            .map(|s| Value::Text(s.to_owned()))
            .map_err(|e| fail(e.to_string()));
    }
    let bytes = raw.as_bytes().map_err(|e| fail(e.to_string()))?;
    pg_binary(&ty, bytes).map_err(fail)
}

/// Decodes a value of type `ty` from its binary form.
fn pg_binary(ty: &PgTypeInfo, bytes: &[u8]) -> Result<Value, String> {
    let text = || {
        std::str::from_utf8(bytes)
            .map(|s| s.to_owned())
            .map_err(|e| e.to_string())
    };
    Ok(match ty.name() {
        "BOOL" => Value::Boolean(fixed::<1>(bytes)?[0] != 0),
        "INT2" => Value::Int(i16::from_be_bytes(fixed(bytes)?).into()),
        "INT4" => Value::Int(i32::from_be_bytes(fixed(bytes)?).into()),
        "INT8" => Value::Int(i64::from_be_bytes(fixed(bytes)?)),
        "OID" => Value::Int(u32::from_be_bytes(fixed(bytes)?).into()),
        "FLOAT4" => Value::Float(f32::from_be_bytes(fixed(bytes)?).into()),
        "FLOAT8" => Value::Float(f64::from_be_bytes(fixed(bytes)?)),
        "NUMERIC" => Value::Decimal(pg_numeric(bytes)?),
        "UUID" => Value::Uuid(pg_uuid(fixed(bytes)?)),
        "BYTEA" => Value::Blob(bytes.to_vec()),
        "TIMESTAMPTZ" => Value::Timestamp(pg_micros(bytes)?),
        "TIMESTAMP" => Value::Datetime(pg_micros(bytes)?),
        "DATE" => Value::Date(match i32::from_be_bytes(fixed(bytes)?) {
            days @ (i32::MAX | i32::MIN) => days,
            days => days
                .checked_add(PG_EPOCH_DAYS)
                .ok_or_else(|| "out of range".to_owned())?,
        }),
        "TIME" => {
            let micros = i64::from_be_bytes(fixed(bytes)?);
            Value::Time(u64::try_from(micros).map_err(|e| e.to_string())?)
        }
        "INTERVAL" => {
            let (micros, rest) = bytes.split_at_checked(8).ok_or("truncated INTERVAL")?;
            let (days, months) = rest.split_at_checked(4).ok_or("truncated INTERVAL")?;
            Value::Interval(wit_sql::Interval {
                microseconds: i64::from_be_bytes(fixed(micros)?),
                days: i32::from_be_bytes(fixed(days)?),
                months: i32::from_be_bytes(fixed(months)?),
            })
        }
        "JSON" => Value::Json(text()?),
        "JSONB" => match bytes.split_first() {
            Some((1, json)) => Value::Json(
                std::str::from_utf8(json)
                    .map_err(|e| e.to_string())?
                    .to_owned(),
            ),
            _ => return Err("unknown JSONB format version".into()),
        },
        "VOID" => Value::Null,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "\"CHAR\"" | "UNKNOWN" => Value::Text(text()?),
        _ => match ty.kind() {
            PgTypeKind::Array(element) => pg_array(ty, element, bytes)?,
            // Enums and text-like extension types (`citext`) are sent as
            // text even in binary format.
            PgTypeKind::Enum(_) => Value::Text(text()?),
            _ if <String as Type<Postgres>>::compatible(ty) => Value::Text(text()?),
            // Any other type degrades to its name and wire form rather than
            // failing the whole query.
            _ => other_value(ty, bytes),
        },
    })
}

/// The fallback for a type with no case: its name and its binary form as
/// `\x`-prefixed hex (its text form needs a cast in the statement).
fn other_value(ty: &PgTypeInfo, bytes: &[u8]) -> Value {
    let mut text = String::with_capacity(2 + 2 * bytes.len());
    text.push_str("\\x");
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    Value::Other(wit_sql::OtherValue {
        type_name: ty.name().to_owned(),
        text,
    })
}

/// A TIMESTAMP or TIMESTAMPTZ: microseconds since 2000-01-01 to since
/// 1970-01-01, keeping the `infinity` sentinels.
fn pg_micros(bytes: &[u8]) -> Result<i64, String> {
    match i64::from_be_bytes(fixed(bytes)?) {
        micros @ (i64::MAX | i64::MIN) => Ok(micros),
        micros => micros
            .checked_add(PG_EPOCH_MICROS)
            .ok_or_else(|| "out of range".into()),
    }
}

/// The next `n` bytes of `rest`, which moves past them.
fn take_bytes<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    let (head, tail) = rest
        .split_at_checked(n)
        .ok_or_else(|| "truncated array".to_owned())?;
    *rest = tail;
    Ok(head)
}

/// Decodes a binary array. One-dimensional arrays of the element types
/// `value` has an array case for become that case; anything else (more
/// dimensions, other element types) is an `other`.
fn pg_array(ty: &PgTypeInfo, element: &PgTypeInfo, bytes: &[u8]) -> Result<Value, String> {
    let mut rest = bytes;
    let mut take = |n: usize| take_bytes(&mut rest, n);
    let dimensions = i32::from_be_bytes(fixed(take(4)?)?);
    let _has_nulls = take(4)?;
    let _element_oid = take(4)?;
    let len = match dimensions {
        0 => 0,
        1 => {
            let len = i32::from_be_bytes(fixed(take(4)?)?);
            let _lower_bound = take(4)?;
            usize::try_from(len).map_err(|e| e.to_string())?
        }
        _ => return Ok(other_value(ty, bytes)),
    };
    // Each element takes at least its 4-byte length: a bogus count cannot
    // make us reserve more than the bytes can hold.
    let mut elements = Vec::with_capacity(len.min(bytes.len() / 4));
    for _ in 0..len {
        let n = i32::from_be_bytes(fixed(take(4)?)?);
        if n < 0 {
            elements.push(None);
        } else {
            let body = take(n as usize)?;
            elements.push(Some(pg_binary(element, body)?));
        }
    }
    macro_rules! pack {
        ($case:ident, $variant:ident) => {
            Value::$case(
                elements
                    .into_iter()
                    .map(|e| match e {
                        None => Ok(None),
                        Some(Value::$variant(v)) => Ok(Some(v)),
                        Some(_) => Err("mixed array".to_owned()),
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    Ok(match element.name() {
        "BOOL" => pack!(BooleanArray, Boolean),
        "INT2" | "INT4" | "INT8" | "OID" => pack!(IntArray, Int),
        "FLOAT4" | "FLOAT8" => pack!(FloatArray, Float),
        "NUMERIC" => pack!(DecimalArray, Decimal),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => pack!(TextArray, Text),
        "UUID" => pack!(UuidArray, Uuid),
        "DATE" => pack!(DateArray, Date),
        "TIMESTAMP" => pack!(DatetimeArray, Datetime),
        "TIMESTAMPTZ" => pack!(TimestampArray, Timestamp),
        _ => other_value(ty, bytes),
    })
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", bytes.len()))
}

fn pg_uuid(bytes: [u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Formats PostgreSQL's binary `NUMERIC` exactly: base-10000 digits, the
/// weight (position) of the first one, a sign and the display scale.
fn pg_numeric(bytes: &[u8]) -> Result<String, String> {
    let header = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    if bytes.len() < 8 {
        return Err("truncated NUMERIC".into());
    }
    let ndigits = usize::from(header(0));
    let weight = i32::from(header(2) as i16);
    let sign = header(4);
    let scale = usize::from(header(6));
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => return Err(format!("unknown NUMERIC sign {sign:#x}")),
    };
    if bytes.len() != 8 + 2 * ndigits {
        return Err("truncated NUMERIC".into());
    }
    let digits: Vec<u16> = bytes[8..]
        .chunks_exact(2)
        .map(|d| u16::from_be_bytes([d[0], d[1]]))
        .collect();
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let _ = if i == 0 {
                write!(out, "{}", digit(i))
            } else {
                write!(out, "{:04}", digit(i))
            };
        }
    }
    if scale > 0 {
        let mut fraction = String::with_capacity(scale + 4);
        let mut i = weight + 1;
        while fraction.len() < scale {
            let _ = write!(fraction, "{:04}", digit(i));
            i += 1;
        }
        fraction.truncate(scale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

/// SQLite's columns. sqlx names a column's type from its declaration
/// (`INTEGER`, `TEXT`, `BOOLEAN`, `DATETIME`...); an expression has none and
/// shows as `NULL`, so for those the first row's storage class is used.
fn sqlite_columns(row: &SqliteRow, first_values: &[Value]) -> Vec<Column> {
    row.columns()
        .iter()
        .zip(first_values)
        .map(|(c, value)| {
            let declared = c.type_info().name();
            let type_name = match (declared, value) {
                ("NULL", Value::Int(_)) => "INTEGER",
                ("NULL", Value::Float(_)) => "REAL",
                ("NULL", Value::Text(_)) => "TEXT",
                ("NULL", Value::Blob(_)) => "BLOB",
                (declared, _) => declared,
            };
            Column {
                name: c.name().to_owned(),
                type_name: type_name.to_owned(),
            }
        })
        .collect()
}

fn sqlite_row_values(row: &SqliteRow) -> Result<Vec<Value>, WitError> {
    row.columns()
        .iter()
        .map(|column| {
            let raw = row.try_get_raw(column.ordinal()).map_err(map_sqlx_error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let declared = column.type_info().name();
            let storage = raw.type_info().name().to_owned();
            let fail = |e: BoxDynError| {
                WitError::InvalidInput(format!(
                    "could not decode column `{}` ({storage}): {e}",
                    column.name()
                ))
            };
            Ok(match storage.as_str() {
                "INTEGER" => {
                    let i = <i64 as Decode<Sqlite>>::decode(raw).map_err(fail)?;
                    if declared == "BOOLEAN" {
                        Value::Boolean(i != 0)
                    } else {
                        Value::Int(i)
                    }
                }
                "REAL" => Value::Float(<f64 as Decode<Sqlite>>::decode(raw).map_err(fail)?),
                "TEXT" => {
                    let s = <String as Decode<Sqlite>>::decode(raw).map_err(fail)?;
                    parse_sqlite_text(declared, &s).unwrap_or(Value::Text(s))
                }
                "BLOB" => Value::Blob(<Vec<u8> as Decode<Sqlite>>::decode(raw).map_err(fail)?),
                other => {
                    return Err(WitError::InvalidInput(format!(
                        "column `{}` holds a value of storage class `{other}`, which has no \
                         SQL value kind",
                        column.name()
                    )));
                }
            })
        })
        .collect()
}

/// Text in a column declared `DATETIME`/`TIMESTAMP`, `DATE` or `TIME` that
/// is spelled as the host binds those kinds (or as SQLite's own functions
/// write them) comes back as that kind; anything else stays text. In a
/// `DATETIME` column, text with a zone (`Z`, `+02:00`) is a `timestamp` and
/// text without one (`CURRENT_TIMESTAMP`'s `YYYY-MM-DD HH:MM:SS`) a
/// `datetime`: SQLite keeps no zone, so the spelling is all there is.
fn parse_sqlite_text(declared: &str, text: &str) -> Option<Value> {
    match declared {
        "DATETIME" => {
            match text {
                "infinity" => return Some(Value::Timestamp(i64::MAX)),
                "-infinity" => return Some(Value::Timestamp(i64::MIN)),
                _ => {}
            }
            if let Ok(at) = DateTime::parse_from_rfc3339(text) {
                return Some(Value::Timestamp(at.timestamp_micros()));
            }
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .map(|at| Value::Datetime(at.and_utc().timestamp_micros()))
        }
        "DATE" => match text {
            "infinity" => Some(Value::Date(i32::MAX)),
            "-infinity" => Some(Value::Date(i32::MIN)),
            _ => {
                let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
                let days = date.signed_duration_since(epoch).num_days();
                i32::try_from(days).ok().map(Value::Date)
            }
        },
        "TIME" => {
            if text.starts_with("24:00:00") {
                return Some(Value::Time(MAX_TIME_MICROS));
            }
            let time = NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?;
            let micros = time
                .signed_duration_since(NaiveTime::MIN)
                .num_microseconds()?;
            u64::try_from(micros).ok().map(Value::Time)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_formats_exactly() {
        fn numeric(ndigits: u16, weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
            let mut out = Vec::new();
            for part in [ndigits, weight as u16, sign, scale] {
                out.extend_from_slice(&part.to_be_bytes());
            }
            for d in digits {
                out.extend_from_slice(&d.to_be_bytes());
            }
            out
        }
        let cases: [(Vec<u8>, &str); 7] = [
            (numeric(2, 0, 0, 2, &[123, 4500]), "123.45"),
            (numeric(1, -1, 0, 3, &[10]), "0.001"),
            (numeric(1, 1, 0, 0, &[1]), "10000"),
            (numeric(0, 0, 0, 0, &[]), "0"),
            (numeric(0, 0, 0, 2, &[]), "0.00"),
            (numeric(3, 1, 0x4000, 1, &[12, 3456, 7000]), "-123456.7"),
            (numeric(0, 0, 0xC000, 0, &[]), "NaN"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(pg_numeric(&bytes).unwrap(), expected);
        }
        assert!(pg_numeric(&[0, 1]).is_err());
    }

    #[test]
    fn urls_are_redacted() {
        let redacted =
            redact_url("postgres://user:hunter2@db:5432/app?sslmode=require&password=x2");
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(!redacted.contains("x2"), "{redacted}");
        assert!(redacted.contains("sslmode=require"), "{redacted}");
        assert!(!redact_url("postgres://u:p@[bad").contains("p@"));
    }

    #[test]
    fn sqlite_errors_map_by_primary_code() {
        // SQLITE_READONLY_DBMOVED is an extended code of SQLITE_READONLY.
        assert!(matches!(
            map_sqlite_error(Some("1032"), "x"),
            WitError::AccessDenied
        ));
        assert!(matches!(
            map_sqlite_error(Some("8"), "x"),
            WitError::AccessDenied
        ));
        assert!(matches!(
            map_sqlite_error(Some("2067"), "UNIQUE constraint failed"),
            WitError::Conflict(DatabaseError { ref sqlstate, .. }) if sqlstate == "23505"
        ));
        // SQLITE_BUSY_SNAPSHOT
        assert!(matches!(
            map_sqlite_error(Some("517"), "database is locked"),
            WitError::RetryTransaction(_)
        ));
    }
}
