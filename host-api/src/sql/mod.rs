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
//!     [orders]
//!     type = "mysql"
//!     url = "mysql://reader:secret@mysql.internal:3306/orders"
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
//! * **Statement sizes.** A statement longer than
//!   [`SqlLimits::max_statement_bytes`], with more than
//!   [`SqlLimits::max_params`] parameters or more than
//!   [`SqlLimits::max_param_bytes`] of them is refused with `too-large`
//!   before it is copied to the connection's task, let alone the driver.
//! * **Error text.** Whatever the database says may quote the statement;
//!   every error a call returns is cut to [`SqlLimits::max_error_bytes`]
//!   (then `…`), in `Connection::call` and `rows.next`.
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
//!   read-only when the connection is made, as a second line of defence.
//!   MySQL does the same with `START TRANSACTION READ ONLY` ... `COMMIT`,
//!   after setting the session default back to read-only before each
//!   statement (DDL, which commits implicitly, is refused inside a
//!   read-only transaction before it can). A refused write is
//!   `access-denied`.
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
//!   go. MySQL connections are not reused either (sqlx cannot send
//!   `COM_RESET_CONNECTION`). Each new SQLite connection is opened with
//!   `SQLITE_DBCONFIG_DEFENSIVE`,
//!   `SQLITE_DBCONFIG_TRUSTED_SCHEMA` off and capped string, blob and
//!   statement lengths.
//! * **SQL work ends with its run.** A PostgreSQL connection's
//!   `statement_timeout` is set to the run's remaining time when it is
//!   opened. Because the task can change that setting, the host does not rely
//!   on it: when a run ends (done, timed out or cancelled) while one of its
//!   statements is still running, the connection is dropped and the
//!   statement stopped at once: `pg_terminate_backend` from a fresh
//!   connection on PostgreSQL (closing the socket alone would leave
//!   `pg_sleep` or an endless query running), `KILL CONNECTION` from a fresh
//!   connection on MySQL (MariaDB also gets the time left as
//!   `max_statement_time`), `sqlite3_interrupt` on SQLite.
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
//! | WIT `value` | PostgreSQL parameter | MySQL parameter | SQLite parameter |
//! |-------------|----------------------|-----------------|------------------|
//! | `null`      | NULL of unspecified type (the server infers it, as for a literal `NULL`) | NULL | NULL |
//! | `boolean`   | `BOOL`               | `TINYINT` 0/1   | INTEGER 0/1      |
//! | `int`       | `INT8`               | `BIGINT`        | INTEGER          |
//! | `uint`      | `NUMERIC`            | `BIGINT UNSIGNED` | INTEGER (up to the `s64` maximum, else `invalid-input`) |
//! | `float`     | `FLOAT8`             | `DOUBLE`        | REAL             |
//! | `decimal`   | `NUMERIC` (exact)    | text, which the server converts exactly (no NaN or infinity: `unsupported`) | TEXT, as given (SQLite's NUMERIC affinity would round it) |
//! | `text`      | `TEXT`               | text            | TEXT             |
//! | `blob`      | `BYTEA`              | blob            | BLOB             |
//! | `date`      | `DATE`               | `DATE` (no infinity: `unsupported`) | TEXT `2024-05-06` |
//! | `time`      | `TIME`               | `TIME`          | TEXT `07:08:09.123456` |
//! | `datetime`  | `TIMESTAMP`          | `DATETIME`      | TEXT `2024-05-06 07:08:09.123456` |
//! | `timestamp` | `TIMESTAMPTZ`        | `DATETIME` in UTC, the session's zone | TEXT `2024-05-06T07:08:09.123456Z` |
//! | `interval`  | `INTERVAL`           | text `P1M2DT3.000000S` | TEXT `P1M2DT3.000000S` |
//! | `uuid`      | `UUID`               | text, lower-case hyphenated | TEXT, lower-case hyphenated |
//! | `json`      | `JSONB` (the text is validated and sent as is) | text (validated) | TEXT |
//! | `*-array`   | the element type's array (`INT8[]`, `NUMERIC[]`, ...) | text, a JSON array | TEXT, a JSON array |
//! | `other`     | `TEXT` (cast the placeholder: `$1::inet`) | text | TEXT |
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
//! from SQLite as text. MySQL: `BOOLEAN` (`TINYINT(1)`) as `boolean`; every
//! other integer width, signed or not, as `int`, except `BIGINT UNSIGNED`
//! and `BIT` as `uint`; `YEAR` as `int`; `FLOAT`/`DOUBLE`; `DECIMAL` as
//! `decimal`; the text types, `ENUM` and `SET` as `text`; the binary ones
//! (`BINARY`, `VARBINARY`, the `BLOB`s) as `blob`, while text columns with
//! a binary collation, MariaDB's JSON among them, are `text`; `JSON` as
//! `json`;
//! `DATE`; `DATETIME` as `datetime` and `TIMESTAMP` as `timestamp`;
//! `TIME` within a day as `time`, beyond it as an `interval` of
//! microseconds; a zero date, `GEOMETRY` and anything else as `other`.
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
//! MySQL's errors are mapped by error number, which `detail` names: a
//! duplicate key is `conflict` (`23505`), a deadlock `retry-transaction`
//! (`40001`), a refused privilege or a write in a read-only transaction
//! `access-denied`, and the rest `database` with MySQL's own SQLSTATE.
//!
//! # Layout
//!
//! Each module has one job, and imports run one way, downwards:
//!
//! * `observed`: the generated `Host*` traits on [`SqlView`], each call
//!   observed (`crate::observe`) and handed to `host`, the same traits on
//!   `SqlHost` with the calls themselves.
//! * `sources`: [`SqlSources`] and [`SqlCtx`], and the one place that maps
//!   a [`SqlKind`] to its backend.
//! * `connection` (the actor that owns a pooled connection) and `cursor`
//!   (the `rows` resource it streams into).
//! * `backend`: the `SqlBackend` (a source's pool) and `SqlSession` (one
//!   pooled connection) traits every database implements; `postgres`,
//!   `mysql` and `sqlite` implement them.
//! * `config`, `value` (checking guest values and sizing results) and
//!   `error` (sqlx errors to the guest's) at the bottom.

mod backend;
mod config;
mod connection;
mod cursor;
mod error;
mod host;
mod mysql;
mod observed;
mod postgres;
mod sources;
mod sqlite;
mod value;

use wasmtime::component::ResourceTable;

use crate::bindings::caisson::task::sql as wit_sql;

pub use backend::BeginOptions;
pub use config::{SqlConfig, SqlKind, SqlLimits, SqlSourceConfig};
pub use connection::Connection;
pub use cursor::Cursor;
pub use sources::{SqlCtx, SqlSources};

/// A run's SQL context and the store's resource table: what the linker
/// serves the guest's calls on. Each call is observed (a span, a record for
/// the metrics, see [`crate::observe`]) and made on a `SqlHost`.
pub struct SqlView<'a> {
    pub ctx: &'a mut SqlCtx,
    pub table: &'a mut ResourceTable,
}

/// The same borrow as [`SqlView`]: the generated host traits are
/// implemented on it with the calls themselves (`host`).
pub(crate) struct SqlHost<'a> {
    pub(crate) ctx: &'a mut SqlCtx,
    pub(crate) table: &'a mut ResourceTable,
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
