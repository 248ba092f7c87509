//! SQLite sources.
//!
//! A read-only source is opened with `SQLITE_OPEN_READONLY`. Connections
//! are hardened when opened (no `ATTACH`, defensive mode, an untrusted
//! schema, capped lengths), never reused by another run, and a statement
//! still running when its run ends is stopped with `sqlite3_interrupt` (see
//! the `sql` module docs).
//!
//! A missing database file is reported twice, for two audiences: to the
//! operator, with its path, in the log when the configuration loads (a
//! warning: the file may be created later, by a `mode=rwc` source over the
//! same file or by another process), and to each run that opens the source
//! meanwhile as `backend` "database file not found", without the path.

use std::ffi::{c_int, c_void};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{
    Arguments as _, Column as _, Decode, Executor as _, Row as _, SqlSafeStr, SqlStr, Sqlite,
    Statement as _, TypeInfo as _, ValueRef as _,
};
use tokio::time::Instant;

use super::backend::{ACQUIRE_TIMEOUT, BeginOptions, DecodedRow, SqlBackend, SqlSession, columns};
use super::config::SqlSourceConfig;
use super::error::{connect_error_message, map_sqlx_error};
use super::value::{
    MAX_TIME_MICROS, date_text, datetime_text, interval_text, invalid_param, json_array,
    json_param, parse_decimal, parse_uuid, time_text, timestamp_text, uuid_text,
};
use crate::bindings::caisson::task::sql::{Column, DatabaseError, ExecuteResult, Value};
use crate::{BoxError, ConfigError, SqlError as WitError};

/// A SQLite source: its pool. Whether it is read-only is in the pool's
/// connect options, which open the file read-only.
pub(super) struct SqliteBackend {
    pool: SqlitePool,
    /// The database file (none in memory), to tell a missing file from one
    /// that cannot be opened when a connection fails.
    file: Option<std::path::PathBuf>,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend").finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// A lazy pool for the source `label`: nothing opens the file yet.
    pub(super) fn new(label: &str, config: &SqlSourceConfig) -> Result<Self, ConfigError> {
        let invalid = |message: &str, source: Option<BoxError>| ConfigError::Invalid {
            kind: "sql",
            label: label.to_owned(),
            message: message.to_owned(),
            source,
        };
        if !config.url.starts_with("sqlite:") {
            return Err(invalid("a sqlite url must start with `sqlite:`", None));
        }
        let options = SqliteConnectOptions::from_str(&config.url)
            .map_err(|e| invalid("bad sqlite url", Some(e.into())))?
            // `read_only` wins over a `mode=rwc` in the URL: sqlx then
            // opens with SQLITE_OPEN_READONLY alone.
            .read_only(config.read_only);
        let file = database_file(&config.url, &options);
        if let Some(file) = &file {
            report_missing_file(label, file, config);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _meta| Box::pin(harden_sqlite(conn)));
        Ok(Self {
            pool: pool.connect_lazy_with(options),
            file,
        })
    }
}

/// The file behind a SQLite URL, `None` for an in-memory database.
fn database_file(url: &str, options: &SqliteConnectOptions) -> Option<std::path::PathBuf> {
    let (database, query) = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split_once('?')
        .unwrap_or((
            url.trim_start_matches("sqlite:").trim_start_matches("//"),
            "",
        ));
    let in_memory = database == ":memory:"
        || url::form_urlencoded::parse(query.as_bytes())
            .any(|(key, value)| key == "mode" && value == "memory");
    (!in_memory).then(|| options.get_filename().to_path_buf())
}

/// Whether the source's connections may create its file: `mode=rwc` on a
/// source that is not read-only (`read_only` opens the file read-only,
/// whatever the mode).
fn creates_file(config: &SqlSourceConfig) -> bool {
    let query = config.url.split_once('?').map_or("", |(_, query)| query);
    !config.read_only
        && url::form_urlencoded::parse(query.as_bytes())
            .any(|(key, value)| key == "mode" && value == "rwc")
}

/// Warns, when the configuration loads, about a database file that no
/// connection of this source can open or create yet. Not an error: pools
/// are lazy so that a worker starts while a database is unavailable, and a
/// SQLite file may well appear later (a read-only source over the file a
/// `mode=rwc` source or another process creates). Each run that opens the
/// source meanwhile gets `backend` "database file not found", without the
/// path, which only the operator sees, here.
fn report_missing_file(label: &str, file: &std::path::Path, config: &SqlSourceConfig) {
    if file.exists() {
        return;
    }
    let directory = file.parent().filter(|dir| !dir.as_os_str().is_empty());
    if creates_file(config) {
        if let Some(dir) = directory.filter(|dir| !dir.is_dir()) {
            tracing::warn!(
                label,
                directory = %dir.display(),
                "SQL source sql.{label}: the directory of its database file does not exist, \
                 so the file cannot be created"
            );
        }
        return;
    }
    tracing::warn!(
        label,
        file = %file.display(),
        "SQL source sql.{label}: its database file does not exist (and the source does not \
         create it: that needs `?mode=rwc` and `read_only = false`); runs that open it fail \
         until it does"
    );
}

#[async_trait::async_trait]
impl SqlBackend for SqliteBackend {
    async fn acquire(
        &self,
        _deadline: Option<Instant>,
    ) -> Result<Box<dyn SqlSession>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let handle = {
            let mut handle = conn.lock_handle().await?;
            SqliteHandle(handle.as_raw_handle().as_ptr().cast())
        };
        Ok(Box::new(SqliteSession {
            conn,
            handle,
            query_only: false,
        }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    /// SQLite's `SQLITE_CANTOPEN` (14) says nothing of why: the file is
    /// missing, or the worker may not open it. Say which, without the path.
    fn connect_error(&self, error: &sqlx::Error) -> String {
        let code = match error {
            sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()),
            _ => None,
        };
        match (code.map(|c| c & 0xff), &self.file) {
            (Some(14), Some(file)) if !file.exists() => {
                "could not open the database: database file not found".into()
            }
            (Some(14), _) => "could not open the database: the database file cannot be opened \
                              (permissions, or a directory)"
                .into(),
            (Some(26), _) => "could not open the database: the file is not a database".into(),
            _ => connect_error_message(error),
        }
    }
}

/// A pooled SQLite connection lent to one run.
struct SqliteSession {
    conn: PoolConnection<Sqlite>,
    handle: SqliteHandle,
    /// Whether a read-only transaction set `PRAGMA query_only`.
    query_only: bool,
}

impl SqliteSession {
    /// Runs a fixed, host-written statement (unprepared; several may be
    /// separated by `;`).
    async fn run_host_sql(&mut self, sql: impl SqlSafeStr + Send) -> Result<(), sqlx::Error> {
        (&mut *self.conn).execute(sql).await.map(drop)
    }

    /// Lifts a read-only transaction's `query_only` once it ends.
    async fn end_query_only(&mut self) {
        if self.query_only {
            self.query_only = false;
            // Should it fail, the connection stays read-only for the rest
            // of the run, which refuses writes rather than allowing them.
            let _ = self.run_host_sql("PRAGMA query_only = OFF").await;
        }
    }
}

#[async_trait::async_trait]
impl SqlSession for SqliteSession {
    fn fetch(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<BoxStream<'_, Result<DecodedRow, WitError>>, WitError> {
        let arguments = sqlite_arguments(params)?;
        let mut first = true;
        let rows = (&mut *self.conn).fetch(sqlx::query_with(statement, arguments));
        Ok(rows
            .map(move |row| {
                let row = row.map_err(map_error)?;
                let values = sqlite_row_values(&row)?;
                let columns = std::mem::take(&mut first).then(|| sqlite_columns(&row, &values));
                Ok(DecodedRow::new(values, columns))
            })
            .boxed())
    }

    async fn execute(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError> {
        (&mut *self.conn)
            .execute(sqlx::query_with(statement, sqlite_arguments(params)?))
            .await
            // `sqlite3_last_insert_rowid`: the connection's latest insert,
            // 0 when it has made none.
            .map(|done| ExecuteResult {
                rows_affected: done.rows_affected(),
                last_insert_id: Some(done.last_insert_rowid()).filter(|&id| id != 0),
            })
            .map_err(map_error)
    }

    async fn describe_columns(&mut self, statement: SqlStr) -> Result<Vec<Column>, WitError> {
        let prepared = (&mut *self.conn)
            .prepare(statement)
            .await
            .map_err(map_error)?;
        Ok(columns(prepared.columns()))
    }

    /// SQLite transactions are serializable, which every level allows. It
    /// has no read-only transactions: `query_only` refuses writes on the
    /// connection until the transaction ends.
    async fn begin(&mut self, options: &BeginOptions) -> Result<(), WitError> {
        if options.read_only {
            self.run_host_sql("PRAGMA query_only = ON")
                .await
                .map_err(map_error)?;
            self.query_only = true;
        }
        if let Err(e) = self.run_host_sql("BEGIN").await {
            self.end_query_only().await;
            return Err(map_error(e));
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), WitError> {
        self.run_host_sql("COMMIT").await.map_err(map_error)?;
        self.end_query_only().await;
        Ok(())
    }

    /// A failed SQLite `COMMIT` (SQLITE_BUSY, a deferred foreign key)
    /// leaves the transaction open: the guest can retry or roll back.
    fn failed_commit_keeps_transaction(&self) -> bool {
        true
    }

    async fn rollback(&mut self) -> Result<(), WitError> {
        let rolled_back = self.run_host_sql("ROLLBACK").await.map_err(map_error);
        self.end_query_only().await;
        rolled_back
    }

    /// Never reused (see the `sql` module docs). Closing rolls back.
    async fn release(self: Box<Self>) {
        let _ = self.conn.close().await;
    }

    async fn abort(self: Box<Self>) {
        // SAFETY: the connection is still open (we own it), and
        // `sqlite3_interrupt` may be called from any thread.
        unsafe { sqlite3_interrupt(self.handle.0) };
        let _ = self.conn.close().await;
    }
}

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
// the session that holds it also owns the connection, and calls it before
// closing that connection.
unsafe impl Send for SqliteHandle {}

/// Maps a sqlx error from a SQLite connection to the guest's error.
fn map_error(error: sqlx::Error) -> WitError {
    map_sqlx_error(error, |db| {
        map_sqlite_error(db.code().as_deref(), db.message())
    })
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
        Value::Interval(i) => P::Text(interval_text(i)),
        Value::Uuid(text) => P::Text(uuid_text(parse_uuid(text)?)),
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
            Ok(serde_json::Value::String(uuid_text(parse_uuid(u)?)))
        })?),
        Value::DateArray(v) => P::Text(json_array(v, |d| date_text(*d).map(Into::into))?),
        Value::DatetimeArray(v) => P::Text(json_array(v, |m| datetime_text(*m).map(Into::into))?),
        Value::TimestampArray(v) => P::Text(json_array(v, |m| timestamp_text(*m).map(Into::into))?),
    })
}

fn sqlite_arguments(params: Vec<Value>) -> Result<SqliteArguments, WitError> {
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
            let raw = row.try_get_raw(column.ordinal()).map_err(map_error)?;
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
