//! MySQL and MariaDB sources.
//!
//! A read-only source is enforced by the server: every guest statement runs
//! in a host-issued `START TRANSACTION READ ONLY` ... `COMMIT`, after the
//! session default is set to read-only again (a guest statement may have
//! changed it). Connections are never reused by another run: a session's
//! state (user variables, temporary tables, `GET_LOCK` locks, settings) is
//! dropped with the connection. A statement still running when its run ends
//! is stopped with `KILL` from another connection (see the `sql` module
//! docs).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use sqlx::error::BoxDynError;
use sqlx::mysql::types::{MySqlTime, MySqlTimeSign};
use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool,
    MySqlPoolOptions, MySqlRow, MySqlValueRef,
};
use sqlx::pool::PoolConnection;
use sqlx::{
    Arguments as _, AssertSqlSafe, Column as _, Connection as _, Decode, Executor as _, MySql,
    Row as _, SqlSafeStr, SqlStr, Statement as _, TypeInfo as _, ValueRef as _,
};
use tokio::time::Instant;

use super::backend::{ACQUIRE_TIMEOUT, BeginOptions, DecodedRow, SqlBackend, SqlSession, columns};
use super::config::SqlSourceConfig;
use super::error::map_sqlx_error;
use super::value::{
    Decimal, MAX_TIME_MICROS, date_text, datetime_text, interval_text, invalid_param, json_array,
    json_param, parse_decimal, parse_uuid, timestamp_text, uuid_text,
};
use crate::bindings::caisson::task::sql::{
    self as wit_sql, Column, DatabaseError, ExecuteResult, IsolationLevel, Value,
};
use crate::{BoxError, ConfigError, SqlError as WitError};

/// MySQL's limit on bound parameters per statement (the protocol's count is
/// a `u16`). Checked up front so the guest gets `invalid-input` rather than
/// a protocol error.
const MYSQL_MAX_PARAMS: usize = u16::MAX as usize;

/// Before every guest statement on a read-only source. The session default
/// comes first: a guest `COMMIT` (or a statement that commits implicitly)
/// then starts a read-only transaction too, whatever the guest set.
const READ_ONLY_STATEMENT: &str = "SET SESSION TRANSACTION READ ONLY; START TRANSACTION READ ONLY";

/// A MySQL or MariaDB source: its pool, and whether it is read-only.
pub(super) struct MySqlBackend {
    pool: MySqlPool,
    read_only: bool,
}

// Hand-written: the pool's connect options hold the password.
impl fmt::Debug for MySqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlBackend")
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl MySqlBackend {
    /// A lazy pool for the source `label`: nothing connects yet.
    pub(super) fn new(label: &str, config: &SqlSourceConfig) -> Result<Self, ConfigError> {
        let invalid = |message: &str, source: Option<BoxError>| ConfigError::Invalid {
            kind: "sql",
            label: label.to_owned(),
            message: message.to_owned(),
            source,
        };
        if !(config.url.starts_with("mysql://") || config.url.starts_with("mariadb://")) {
            return Err(invalid(
                "a mysql url must start with `mysql://` or `mariadb://`",
                None,
            ));
        }
        // sqlx knows the `mysql` scheme only; `mariadb://` is the same URL.
        let url = match config.url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => config.url.clone(),
        };
        // Parse errors from sqlx describe the problem without echoing the URL.
        let options = MySqlConnectOptions::from_str(&url)
            .map_err(|e| invalid("bad mysql url", Some(e.into())))?
            // TIMESTAMP columns are read and written in the session's zone:
            // UTC makes a `timestamp` an instant both ways.
            .timezone(Some("+00:00".into()));
        let read_only = config.read_only;
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Never reused (see `release`): nothing to check on the way out.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if read_only {
                        // Defence in depth only: what enforces read-only is
                        // the transaction around every statement.
                        conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
                    }
                    Ok(())
                })
            });
        Ok(Self {
            pool: pool.connect_lazy_with(options),
            read_only,
        })
    }
}

#[async_trait::async_trait]
impl SqlBackend for MySqlBackend {
    /// One or two round trips more than the pool's: the connection's id (to
    /// stop its statement later), and on MariaDB the run's time left as
    /// `max_statement_time`.
    async fn acquire(&self, deadline: Option<Instant>) -> Result<Box<dyn SqlSession>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let id: u64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS UNSIGNED)")
            .persistent(false)
            .fetch_one(&mut *conn)
            .await?;
        if let Some(deadline) = deadline {
            // MariaDB only (MySQL has no such variable, and its
            // `max_execution_time` bounds SELECTs alone): an error here is
            // ignored, because stopping a run's statement when it ends does
            // not rely on it.
            let left = deadline.saturating_duration_since(Instant::now());
            let seconds = left.as_secs_f64().max(0.001);
            let _ = sqlx::query("SET SESSION max_statement_time = ?")
                .bind(seconds)
                .persistent(false)
                .execute(&mut *conn)
                .await;
        }
        Ok(Box::new(MySqlSession {
            conn,
            id,
            options: self.pool.connect_options(),
            read_only: self.read_only,
        }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// A pooled MySQL connection lent to one run.
struct MySqlSession {
    conn: PoolConnection<MySql>,
    /// The server's id for this connection, to `KILL` from another one.
    id: u64,
    options: Arc<MySqlConnectOptions>,
    /// Whether every guest statement is wrapped in a host-issued read-only
    /// transaction (see the module docs).
    read_only: bool,
}

impl MySqlSession {
    /// Runs a fixed, host-written statement. A plain `&str` has no
    /// arguments, so sqlx sends it unprepared (and several statements may be
    /// separated by `;`).
    async fn run_host_sql(&mut self, sql: impl SqlSafeStr + Send) -> Result<(), sqlx::Error> {
        (&mut *self.conn).execute(sql).await.map(drop)
    }
}

#[async_trait::async_trait]
impl SqlSession for MySqlSession {
    fn fetch(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<BoxStream<'_, Result<DecodedRow, WitError>>, WitError> {
        let arguments = arguments(params)?;
        let mut first = true;
        let rows = (&mut *self.conn).fetch(sqlx::query_with(statement, arguments));
        Ok(rows
            .map(move |row| {
                let row = row.map_err(map_error)?;
                let columns = std::mem::take(&mut first).then(|| columns(row.columns()));
                Ok(DecodedRow::new(row_values(&row)?, columns))
            })
            .boxed())
    }

    /// `last_insert_id` is MySQL's `LAST_INSERT_ID()` for this statement:
    /// the first `AUTO_INCREMENT` value it generated, 0 (none) otherwise.
    async fn execute(
        &mut self,
        statement: SqlStr,
        params: Vec<Value>,
    ) -> Result<ExecuteResult, WitError> {
        (&mut *self.conn)
            .execute(sqlx::query_with(statement, arguments(params)?))
            .await
            .map(|done| ExecuteResult {
                rows_affected: done.rows_affected(),
                last_insert_id: i64::try_from(done.last_insert_id())
                    .ok()
                    .filter(|&id| id != 0),
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

    async fn start_statement(&mut self) -> Result<(), WitError> {
        if self.read_only {
            self.run_host_sql(READ_ONLY_STATEMENT)
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }

    /// Ends the wrapping transaction. If the guest's statement committed it
    /// already (a `COMMIT`, or DDL's implicit commit, which a read-only
    /// transaction refuses anyway), this `COMMIT` has nothing to do.
    async fn finish_statement(&mut self) -> Result<(), WitError> {
        if self.read_only {
            self.run_host_sql("COMMIT").await.map_err(map_error)?;
        }
        Ok(())
    }

    async fn begin(&mut self, options: &BeginOptions) -> Result<(), WitError> {
        // On a read-only source the guest's transaction is bookkeeping only,
        // as on PostgreSQL: each statement runs in its own host-issued
        // read-only transaction.
        if self.read_only {
            return Ok(());
        }
        // Built from fixed words only, never from guest text. MySQL sets
        // the next transaction's isolation level with its own statement.
        let mut begin = String::new();
        if let Some(level) = options.isolation_level {
            begin.push_str(match level {
                IsolationLevel::ReadUncommitted => {
                    "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED; "
                }
                IsolationLevel::ReadCommitted => "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; ",
                IsolationLevel::RepeatableRead => {
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
                }
                IsolationLevel::Serializable => "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; ",
            });
        }
        begin.push_str("START TRANSACTION");
        if options.read_only {
            begin.push_str(" READ ONLY");
        }
        // Built from the fixed fragments above only: no input reaches it.
        self.run_host_sql(AssertSqlSafe(begin))
            .await
            .map_err(map_error)
    }

    /// Unlike PostgreSQL, a failed statement does not abort a MySQL
    /// transaction (only a deadlock rolls it back): `COMMIT` commits what
    /// did succeed, as MySQL itself does.
    async fn commit(&mut self) -> Result<(), WitError> {
        if self.read_only {
            return Ok(());
        }
        self.run_host_sql("COMMIT").await.map_err(map_error)
    }

    /// A failed MySQL `COMMIT` means the server or the connection failed;
    /// the transaction is not left open for the guest to retry.
    fn failed_commit_keeps_transaction(&self) -> bool {
        false
    }

    async fn rollback(&mut self) -> Result<(), WitError> {
        if self.read_only {
            return Ok(());
        }
        self.run_host_sql("ROLLBACK").await.map_err(map_error)
    }

    /// Never reused (see the module docs): closing the connection rolls
    /// back any transaction and drops the session with everything in it.
    /// MySQL's `COM_RESET_CONNECTION` would let it be reused, but sqlx does
    /// not send it.
    async fn release(self: Box<Self>) {
        let _ = self.conn.close().await;
    }

    async fn abort(self: Box<Self>) {
        // Closing the socket does not stop the server's thread: it goes on
        // with a `SLEEP` or an endless query. Kill it from another
        // connection (not from the pool, which the run may have used up).
        drop(self.conn.detach());
        tokio::spawn(kill_connection(self.options, self.id));
    }
}

async fn kill_connection(options: Arc<MySqlConnectOptions>, id: u64) {
    let killed = tokio::time::timeout(ACQUIRE_TIMEOUT, async {
        let mut conn = MySqlConnection::connect_with(&options).await?;
        // `KILL` takes no placeholder; the id is a number the server gave.
        (&mut conn)
            .execute(AssertSqlSafe(format!("KILL CONNECTION {id}")))
            .await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(())
    })
    .await;
    match killed {
        Ok(Ok(())) => tracing::debug!(id, "stopped the statement of a finished run"),
        Ok(Err(e)) => {
            tracing::warn!(id, error = %e, "could not stop the statement of a finished run")
        }
        Err(_) => tracing::warn!(id, "timed out stopping the statement of a finished run"),
    }
}

/// Maps a sqlx error from a MySQL connection to the guest's error.
fn map_error(error: sqlx::Error) -> WitError {
    map_sqlx_error(error, |db| {
        match db.try_downcast_ref::<MySqlDatabaseError>() {
            Some(my) => map_mysql_error(my.number(), my.code(), my.message()),
            // Every refusal on a MySQL connection is a `MySqlDatabaseError`.
            None => WitError::Other(db.message().to_owned()),
        }
    })
}

/// MySQL's errors by error number (its SQLSTATEs are too coarse: `42000`
/// is both a syntax error and a denied privilege). The cases a task acts on
/// differently get their own `error` case, with the SQLSTATE the other
/// databases use for them; everything else is `database` with MySQL's own
/// SQLSTATE. The error number is always in `detail`.
fn map_mysql_error(number: u16, sqlstate: Option<&str>, message: &str) -> WitError {
    let own = sqlstate.unwrap_or("HY000");
    let database = |sqlstate: &str| DatabaseError {
        sqlstate: sqlstate.to_owned(),
        message: message.to_owned(),
        detail: Some(format!("MySQL error {number} (SQLSTATE {own})")),
    };
    match number {
        // ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR,
        // ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR,
        // ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_PROCACCESS_DENIED_ERROR,
        // ER_OPTION_PREVENTS_STATEMENT (a `read_only` server),
        // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION.
        1044 | 1045 | 1142 | 1143 | 1227 | 1370 | 1290 | 1792 => WitError::AccessDenied,
        // ER_DUP_ENTRY, ER_DUP_ENTRY_WITH_KEY_NAME: the row is already
        // there. `23505`, as PostgreSQL and SQLite report it.
        1062 | 1586 => WitError::Conflict(database("23505")),
        // ER_LOCK_DEADLOCK (InnoDB rolled the transaction back), and
        // MariaDB's ER_CHECKREAD (a snapshot-isolation conflict): running
        // the transaction again may succeed.
        1213 | 1020 => WitError::RetryTransaction(database("40001")),
        // ER_CON_COUNT_ERROR, ER_OUT_OF_RESOURCES, ER_SERVER_SHUTDOWN,
        // ER_QUERY_INTERRUPTED, ER_CONNECTION_KILLED, MariaDB's
        // ER_STATEMENT_TIMEOUT and MySQL's ER_QUERY_TIMEOUT: the server,
        // not the statement, failed or stopped it.
        1040 | 1041 | 1053 | 1317 | 1927 | 1969 | 3024 => WitError::Backend(message.to_owned()),
        _ if own.starts_with("08") => WitError::Backend(message.to_owned()),
        _ => WitError::Database(database(own)),
    }
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// What MySQL is sent for a guest value. Kinds MySQL has no type for
/// (intervals, arrays) are sent as text, the way SQLite stores them.
enum MySqlParam {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
    Date(NaiveDate),
    Time(MySqlTime),
    Datetime(NaiveDateTime),
    Timestamp(DateTime<Utc>),
}

/// Refuses what MySQL cannot store: `unsupported`, not a wrong value.
fn unsupported(index: usize, message: &str) -> WitError {
    WitError::Unsupported(format!("parameter {}: {message}", index + 1))
}

fn mysql_param(index: usize, value: &Value) -> Result<MySqlParam, WitError> {
    use MySqlParam as P;
    let invalid = |e: String| invalid_param(index, e);
    let string = |s: &String| Ok(serde_json::Value::String(s.clone()));
    Ok(match value {
        Value::Null => P::Null,
        Value::Boolean(b) => P::Bool(*b),
        Value::Int(i) => P::Int(*i),
        Value::Uint(u) => P::Uint(*u),
        Value::Float(f) => P::Float(*f),
        // Sent as text: the server converts it to DECIMAL exactly.
        Value::Decimal(d) => match parse_decimal(d).map_err(invalid)? {
            Decimal::Finite { .. } => P::Text(d.clone()),
            _ => return Err(unsupported(index, "MySQL decimals have no NaN or infinity")),
        },
        Value::Text(s) => P::Text(s.clone()),
        Value::Other(other) => P::Text(other.text.clone()),
        Value::Blob(b) => P::Blob(b.clone()),
        Value::Date(days) => match *days {
            i32::MAX | i32::MIN => {
                return Err(unsupported(index, "MySQL dates have no infinity"));
            }
            days => P::Date(
                NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|epoch| {
                        epoch.checked_add_signed(chrono::TimeDelta::days(days.into()))
                    })
                    .ok_or_else(|| invalid(format!("date {days} is out of range")))?,
            ),
        },
        Value::Time(micros) => {
            if *micros > MAX_TIME_MICROS {
                return Err(invalid(format!("time {micros} us is past 24:00:00")));
            }
            let seconds = micros / 1_000_000;
            let time = MySqlTime::new(
                MySqlTimeSign::Positive,
                (seconds / 3600) as u32,
                (seconds / 60 % 60) as u8,
                (seconds % 60) as u8,
                (micros % 1_000_000) as u32,
            )
            .map_err(|e| invalid(e.to_string()))?;
            P::Time(time)
        }
        Value::Datetime(micros) | Value::Timestamp(micros)
            if matches!(*micros, i64::MAX | i64::MIN) =>
        {
            return Err(unsupported(index, "MySQL dates and times have no infinity"));
        }
        Value::Datetime(micros) => P::Datetime(
            DateTime::from_timestamp_micros(*micros)
                .ok_or_else(|| invalid(format!("datetime {micros} us is out of range")))?
                .naive_utc(),
        ),
        Value::Timestamp(micros) => P::Timestamp(
            DateTime::from_timestamp_micros(*micros)
                .ok_or_else(|| invalid(format!("timestamp {micros} us is out of range")))?,
        ),
        Value::Interval(i) => P::Text(interval_text(i)),
        Value::Uuid(text) => P::Text(uuid_text(parse_uuid(text).map_err(invalid)?)),
        // Sent as the text given (validated): MySQL parses it into a JSON
        // column, and MariaDB's JSON is text with a validity check.
        Value::Json(text) => {
            json_param(text).map_err(invalid)?;
            P::Text(text.clone())
        }
        Value::BooleanArray(v) => P::Text(json_array(v, |b| Ok((*b).into())).map_err(invalid)?),
        Value::IntArray(v) => P::Text(json_array(v, |i| Ok((*i).into())).map_err(invalid)?),
        Value::FloatArray(v) => P::Text(
            json_array(v, |f| {
                serde_json::Number::from_f64(*f)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| format!("{f} has no JSON form"))
            })
            .map_err(invalid)?,
        ),
        Value::DecimalArray(v) => P::Text(
            json_array(v, |d| {
                parse_decimal(d)?;
                string(d)
            })
            .map_err(invalid)?,
        ),
        Value::TextArray(v) => P::Text(json_array(v, string).map_err(invalid)?),
        Value::UuidArray(v) => P::Text(
            json_array(v, |u| {
                Ok(serde_json::Value::String(uuid_text(parse_uuid(u)?)))
            })
            .map_err(invalid)?,
        ),
        Value::DateArray(v) => {
            P::Text(json_array(v, |d| date_text(*d).map(Into::into)).map_err(invalid)?)
        }
        Value::DatetimeArray(v) => {
            P::Text(json_array(v, |m| datetime_text(*m).map(Into::into)).map_err(invalid)?)
        }
        Value::TimestampArray(v) => {
            P::Text(json_array(v, |m| timestamp_text(*m).map(Into::into)).map_err(invalid)?)
        }
    })
}

fn arguments(params: Vec<Value>) -> Result<MySqlArguments, WitError> {
    if params.len() > MYSQL_MAX_PARAMS {
        return Err(WitError::InvalidInput(format!(
            "{} parameters; MySQL takes at most {MYSQL_MAX_PARAMS}",
            params.len()
        )));
    }
    let mut arguments = MySqlArguments::default();
    for (index, param) in params.iter().enumerate() {
        let added = match mysql_param(index, param)? {
            MySqlParam::Null => arguments.add(None::<String>),
            MySqlParam::Bool(b) => arguments.add(b),
            MySqlParam::Int(i) => arguments.add(i),
            MySqlParam::Uint(u) => arguments.add(u),
            MySqlParam::Float(f) => arguments.add(f),
            MySqlParam::Text(s) => arguments.add(s),
            MySqlParam::Blob(b) => arguments.add(b),
            MySqlParam::Date(d) => arguments.add(d),
            MySqlParam::Time(t) => arguments.add(t),
            MySqlParam::Datetime(d) => arguments.add(d),
            MySqlParam::Timestamp(t) => arguments.add(t),
        };
        added.map_err(|e| invalid_param(index, e))?;
    }
    Ok(arguments)
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

fn row_values(row: &MySqlRow) -> Result<Vec<Value>, WitError> {
    row.columns()
        .iter()
        .map(|column| {
            let raw = row.try_get_raw(column.ordinal()).map_err(map_error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let name = raw.type_info().name().to_owned();
            mysql_value(&name, raw).map_err(|e| {
                WitError::InvalidInput(format!(
                    "could not decode column `{}` of type `{name}`: {e}",
                    column.name()
                ))
            })
        })
        .collect()
}

/// Decodes one MySQL value by its type (sqlx's name for it, see the value
/// mapping in the `sql` module docs).
fn mysql_value(type_name: &str, raw: MySqlValueRef<'_>) -> Result<Value, BoxDynError> {
    fn decode<'r, T: Decode<'r, MySql>>(raw: MySqlValueRef<'r>) -> Result<T, BoxDynError> {
        T::decode(raw)
    }
    Ok(match type_name {
        // `TINYINT(1)`, MySQL's `BOOLEAN`.
        "BOOLEAN" => Value::Boolean(decode::<i64>(raw)? != 0),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => Value::Int(decode(raw)?),
        // Every unsigned type but the widest fits an `int`.
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "YEAR" => Value::Int(i64::try_from(decode::<u64>(raw)?)?),
        "BIGINT UNSIGNED" | "BIT" => Value::Uint(decode(raw)?),
        "FLOAT" => Value::Float(decode::<f32>(raw)?.into()),
        "DOUBLE" => Value::Float(decode(raw)?),
        // Sent as its exact text, in both formats.
        "DECIMAL" => Value::Decimal(decode::<&str>(raw)?.to_owned()),
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            Value::Text(decode::<&str>(raw)?.to_owned())
        }
        // sqlx names these by MySQL's BINARY flag, which a text column with
        // a binary collation (`utf8mb4_bin`, and so MariaDB's JSON) carries
        // too. The collation is what tells them apart: only the `binary`
        // one means bytes, and sqlx 0.9 checks it (launchbadge/sqlx#3387).
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            if <&str as sqlx::Type<MySql>>::compatible(&raw.type_info()) {
                Value::Text(decode::<&str>(raw)?.to_owned())
            } else {
                Value::Blob(decode::<&[u8]>(raw)?.to_vec())
            }
        }
        "JSON" => Value::Json(decode::<&str>(raw)?.to_owned()),
        // MySQL's zero dates (`0000-00-00`) are no date at all: they fail
        // to decode and come back as `other`.
        "DATE" => match decode::<NaiveDate>(raw.clone()) {
            Ok(date) => Value::Date(days_since_epoch(date)?),
            Err(_) => other_value(type_name, raw)?,
        },
        "DATETIME" | "TIMESTAMP" => match decode::<NaiveDateTime>(raw.clone()) {
            // TIMESTAMP is an instant, read in the session's zone (UTC, set
            // when connecting); DATETIME a wall clock.
            Ok(at) if type_name == "TIMESTAMP" => Value::Timestamp(at.and_utc().timestamp_micros()),
            Ok(at) => Value::Datetime(at.and_utc().timestamp_micros()),
            Err(_) => other_value(type_name, raw)?,
        },
        "TIME" => time_value(decode(raw)?),
        "NULL" => Value::Null,
        // GEOMETRY and anything newer: its name and bytes.
        _ => other_value(type_name, raw)?,
    })
}

/// A MySQL TIME is a time of day or a span of up to ±838 hours: within a
/// day it is a `time`, otherwise an `interval` of microseconds.
fn time_value(time: MySqlTime) -> Value {
    // Through the sign: `MySqlTime::is_negative` answers `is_positive`
    // (still so in sqlx 0.9.0).
    let negative = time.sign().is_negative();
    let micros = ((u64::from(time.hours()) * 60 + u64::from(time.minutes())) * 60
        + u64::from(time.seconds()))
        * 1_000_000
        + u64::from(time.microseconds());
    if !negative && micros <= MAX_TIME_MICROS {
        return Value::Time(micros);
    }
    // At most 838:59:59.999999, far inside an `s64`.
    let micros = micros as i64;
    Value::Interval(wit_sql::Interval {
        months: 0,
        days: 0,
        microseconds: if negative { -micros } else { micros },
    })
}

fn days_since_epoch(date: NaiveDate) -> Result<i32, BoxDynError> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("no epoch")?;
    Ok(i32::try_from(date.signed_duration_since(epoch).num_days())?)
}

/// The fallback for a type with no case: its name, and its text if it is
/// valid UTF-8, else its bytes in hex after `\x`.
fn other_value(type_name: &str, raw: MySqlValueRef<'_>) -> Result<Value, BoxDynError> {
    let bytes = <&[u8] as Decode<MySql>>::decode(raw)?;
    let text = match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => text.to_owned(),
        _ => {
            let mut text = String::with_capacity(2 + 2 * bytes.len());
            text.push_str("\\x");
            for byte in bytes {
                use std::fmt::Write as _;
                let _ = write!(text, "{byte:02x}");
            }
            text
        }
    };
    Ok(Value::Other(wit_sql::OtherValue {
        type_name: type_name.to_owned(),
        text,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_errors_map_by_number() {
        assert!(matches!(
            map_mysql_error(1792, Some("25006"), "read only"),
            WitError::AccessDenied
        ));
        assert!(matches!(
            map_mysql_error(1142, Some("42000"), "denied"),
            WitError::AccessDenied
        ));
        assert!(matches!(
            map_mysql_error(1062, Some("23000"), "Duplicate entry"),
            WitError::Conflict(DatabaseError { ref sqlstate, ref detail, .. })
                if sqlstate == "23505" && detail.as_deref() == Some("MySQL error 1062 (SQLSTATE 23000)")
        ));
        assert!(matches!(
            map_mysql_error(1213, Some("40001"), "Deadlock"),
            WitError::RetryTransaction(DatabaseError { ref sqlstate, .. }) if sqlstate == "40001"
        ));
        // A syntax error shares `42000` with a denied privilege.
        assert!(matches!(
            map_mysql_error(1064, Some("42000"), "syntax"),
            WitError::Database(DatabaseError { ref sqlstate, .. }) if sqlstate == "42000"
        ));
        assert!(matches!(
            map_mysql_error(1969, Some("70100"), "timeout"),
            WitError::Backend(_)
        ));
    }
}
