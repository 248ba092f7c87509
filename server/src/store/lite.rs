//! SQLite called in place: the writer's connection and the readers',
//! SQLite's C library run on the calling thread, one statement after
//! another, with no hand-off to a driver thread.
//!
//! sqlx runs every SQLite connection on a thread of its own, and each
//! statement (or script of statements) is a trip to that thread and back:
//! two wake-ups and their context switches. Profiled in release, those
//! switches were the largest cost of a no-op run (`finish_task_switch`
//! and the wake-ups' spin-unlocks, a quarter of the process's CPU), and a
//! write transaction of four statements took 93 µs through sqlx's thread
//! against 32 µs called in place, the same SQL on the same file
//! (BENCHMARKS.md, "a write transaction in place"). A write transaction
//! here is short (a few statements on indexed rows) and SQLite under
//! `synchronous = NORMAL` does not sync at its commit, so it is held on
//! the async task's thread for as long as sqlx's path would have kept the
//! task waiting; a read (a run, a module, a token by key) is shorter.
//! The log is checkpointed (copied back into the file, with its syncs)
//! by a thread of its own ([`Checkpointer`]), not by the commit that fills
//! it, which would hold the writers' turn for milliseconds.
//! Neither waits on that thread for another connection's lock: a writer
//! waits on a timer (`WriteTx`), a reader goes to sqlx's pool (`Db::read`).
//!
//! At its edge it speaks sqlx's `Any` types: it takes the values a
//! `sqlx::query(..).bind(..)` collected (`AnyArguments`) and returns
//! `AnyRow`s, so the store's statements, binders and row types (their
//! `FromRow` derives) serve both paths unchanged. Those types' fields are
//! sqlx's semver-exempt internals (`#[doc(hidden)]`): `sqlx-core` is
//! pinned to the release they were read from, and
//! `rows_read_in_place_decode_as_sqlx_decodes_them` below holds the rows to
//! what sqlx's own driver returns, so an upgrade that changes them fails
//! there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::types::{ToSql, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sqlx_core::any::{
    AnyArguments, AnyColumn, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue, AnyValueKind,
};
use sqlx_core::ext::ustr::UStr;

/// SQLite's durability, chosen: in WAL mode `NORMAL` syncs the log at
/// checkpoints rather than at every commit. A commit is in the WAL file
/// (the OS's page cache) before it returns, so a crash or SIGKILL of the
/// `caisson` process loses nothing committed, and a 2xx still means the
/// run is stored; an OS crash or power loss may lose the last commits
/// before a checkpoint, never corrupt the file. `FULL`, sqlx's default,
/// pays an fsync on every commit (four a run) for that last case only.
/// `an_embedded_server_killed_during_5000_submissions_loses_and_doubles_nothing`
/// holds it to the first promise. Every connection to the file, sqlx's
/// and these, is set so.
pub(super) const SQLITE_SYNCHRONOUS: &str = "PRAGMA synchronous = NORMAL";

/// The log's length, in pages, past which a commit checkpoints it
/// itself, on the committing thread. The [`Checkpointer`] copies the log
/// back long before that: this is the bound should it fall behind, as a
/// writer that never pauses makes it, since the log starts over only once
/// it is copied back whole, between two commits. Where the checkpointer
/// keeps up, the commit at this bound copies only the last few pages.
macro_rules! wal_bound {
    () => {
        4000
    };
}

/// [`wal_bound!`] for the connections that are not the writer (sqlx's,
/// which migrate the file, and the readers), so that none checkpoints at
/// SQLite's default of 1,000. The writer holds the bound itself
/// ([`Checkpointer::bound`]).
pub(super) const SQLITE_WAL_LIMIT: &str = concat!("PRAGMA wal_autocheckpoint = ", wal_bound!());

/// [`wal_bound!`] as a number, for the writer's check and its test.
pub(super) const WAL_BOUND: u32 = wal_bound!();

/// Write transactions committed between the writer's nudges of its
/// [`Checkpointer`]: about 1,000 pages of log at the hot paths' 15 or so
/// pages a transaction (fewer in a group, whose members share pages).
const CHECKPOINT_EVERY: u32 = 64;

/// sqlx turns foreign keys on for its SQLite connections; these do the
/// same.
const SQLITE_FOREIGN_KEYS: &str = "PRAGMA foreign_keys = ON";

/// What went wrong in place. The store maps it to its `DbError` as it
/// maps sqlx's errors.
#[derive(Debug, thiserror::Error)]
pub(super) enum LiteError {
    /// A uniqueness rule was broken; SQLite's message says which.
    #[error("{0}")]
    Conflict(String),
    /// Another connection holds the lock this needs (another process's
    /// writer, a log being recovered): try again later.
    #[error("the database is busy: {0}")]
    Busy(#[source] rusqlite::Error),
    /// The database was closed.
    #[error("the database is closed")]
    Closed,
    /// A statement and its values that do not fit, or a stored value sqlx
    /// could not hold.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Sqlite(rusqlite::Error),
}

/// Statements kept prepared: the hot paths' few dozen, with room for the
/// batch inserts whose text varies with their size.
const STATEMENT_CACHE: usize = 256;

/// SQLite's process-wide settings, made once, before the first
/// connection: SQLite refuses them once it is initialised.
///
/// Memory statistics off. With them on (SQLite's default) every
/// `sqlite3_malloc` and `sqlite3_free` takes one global mutex to count the
/// bytes, so the writer, the readers, the checkpointer and sqlx's
/// connection threads all queue on it: over the embedded throughput
/// figure, 62 % of the process's futex calls came from inside SQLite, and
/// 38 % from that mutex alone (BENCHMARKS.md, "SQLite's allocator lock").
/// Nothing in Caisson reads SQLite's memory counters or sets its heap
/// limits, which are what they are for.
pub(super) fn configure_process() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        // SAFETY: `SQLITE_CONFIG_MEMSTATUS` takes one `int`. Called before
        // SQLite is initialised it changes a flag that initialisation
        // reads; after, SQLite answers `SQLITE_MISUSE` and changes nothing
        // (some other part of the process opened a database first).
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(
                "SQLite was initialised before the store: its memory statistics stay on ({rc})"
            );
        }
    });
}

/// A SQLite connection that runs statements on the calling thread.
pub(super) struct LiteConn {
    /// First, so that it is closed before `checkpoints`, whose
    /// `Checkpointer::pages` its WAL hook writes to.
    conn: Connection,
    /// The writer's: nudged as it commits.
    checkpoints: Option<Checkpointer>,
}

/// Checkpoints the log on a connection and thread of its own, when the
/// writer nudges it: `PASSIVE`, so it waits for no reader or writer and
/// the writer's commits go on while it copies. The thread ends when the
/// writer's connection is dropped.
///
/// The writer checkpoints the log itself once it passes [`wal_bound!`],
/// as SQLite's own automatic checkpoint would, but first waits for the
/// thread's checkpoint to end. SQLite refuses a second checkpoint while
/// one runs, and no busy handler waits for it, so its own automatic
/// checkpoint was skipped whenever it met the thread's: under load a
/// writer that never paused grew the log to 26 MB and more against the
/// bound's 16 (`the_log_is_checkpointed_apart_and_stays_bounded`).
struct Checkpointer {
    nudge: std::sync::mpsc::SyncSender<()>,
    commits: u32,
    /// Held by whichever checkpoints: the thread, or the writer at the
    /// bound.
    copying: Arc<std::sync::Mutex<()>>,
    /// The log's length in pages after the writer's last commit, as
    /// SQLite's WAL hook reports it ([`log_length`]). Boxed, so that its
    /// address, which SQLite holds, stays put: it is dropped after the
    /// writer's connection (`LiteConn`'s field order).
    pages: Box<std::sync::atomic::AtomicU32>,
}

impl Checkpointer {
    /// Starts the thread, and has `writer` report its log's length to
    /// [`Checkpointer::pages`], in place of SQLite's automatic checkpoint.
    fn start(path: &Path, writer: &Connection) -> Result<Self, LiteError> {
        let conn = LiteConn::open(path)?;
        let copying = Arc::new(std::sync::Mutex::new(()));
        // One nudge kept while a checkpoint runs: a nudge then is not
        // lost, and nudges do not pile up.
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        let held = copying.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    let _copying = held.lock().unwrap_or_else(|e| e.into_inner());
                    checkpoint(&conn.conn);
                }
            })
            .map_err(|e| LiteError::Invalid(format!("could not start the checkpointer: {e}")))?;
        let pages = Box::new(std::sync::atomic::AtomicU32::new(0));
        // SAFETY: the hook's argument is `pages`, boxed, which outlives
        // the connection (`LiteConn` drops `conn` before `checkpoints`),
        // and `log_length` only stores into it. The hook replaces the
        // automatic checkpoint `LiteConn::open` set, which is what is
        // meant: the writer's commits checkpoint at the bound through
        // `Checkpointer::bound` instead.
        unsafe {
            rusqlite::ffi::sqlite3_wal_hook(
                writer.handle(),
                Some(log_length),
                std::ptr::from_ref::<std::sync::atomic::AtomicU32>(&pages)
                    .cast_mut()
                    .cast(),
            );
        }
        Ok(Checkpointer {
            nudge,
            commits: 0,
            copying,
            pages,
        })
    }

    fn committed(&mut self, transactions: usize) {
        self.commits = self
            .commits
            .saturating_add(u32::try_from(transactions).unwrap_or(u32::MAX));
        if self.commits >= CHECKPOINT_EVERY {
            self.commits = 0;
            // Full: a checkpoint is running or about to.
            let _ = self.nudge.try_send(());
        }
    }

    /// Past [`wal_bound!`], the writer's own checkpoint on `writer`,
    /// once the thread's (if one runs) has ended. It blocks the writer's
    /// thread for that long, which is meant: it happens only when the
    /// thread has fallen behind, and holds the writers back until the log
    /// is copied, as SQLite's own checkpoint at the bound would.
    fn bound(&self, writer: &Connection) {
        if self.pages.load(Ordering::Relaxed) < WAL_BOUND {
            return;
        }
        let _copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        checkpoint(writer);
    }
}

/// A `PASSIVE` checkpoint: as much of the log as no reader still needs,
/// copied back, waiting for no one.
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        // The next commit past the bound tries again.
        tracing::debug!("a checkpoint of the SQLite log failed: {e}");
    }
}

/// SQLite's WAL hook on the writer: after each commit, the log's length
/// in pages, stored in the `AtomicU32` at `pages`.
extern "C" fn log_length(
    pages: *mut std::ffi::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _name: *const std::ffi::c_char,
    length: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: `Checkpointer::start` registered the address of its boxed
    // `AtomicU32`, which outlives the connection that calls this.
    let pages = unsafe { &*pages.cast::<std::sync::atomic::AtomicU32>() };
    pages.store(u32::try_from(length).unwrap_or(0), Ordering::Relaxed);
    rusqlite::ffi::SQLITE_OK
}

/// What a statement did: the rows it changed and the rows it returned.
pub(super) struct Ran {
    pub(super) changed: u64,
    pub(super) rows: Vec<AnyRow>,
}

impl LiteConn {
    /// Opens the database file at `path`, which must exist (the pool's
    /// connections created and migrated it), with the settings sqlx gives
    /// its own connections to it.
    pub(super) fn open(path: &Path) -> Result<Self, LiteError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
        // No busy timeout: its handler sleeps on the calling thread, an
        // async task's. A transaction that finds the lock taken (by
        // another process) waits on a timer instead (`WriteTx`).
        conn.execute_batch(&format!(
            "PRAGMA busy_timeout = 0; {SQLITE_SYNCHRONOUS}; {SQLITE_FOREIGN_KEYS}; \
             {SQLITE_WAL_LIMIT};"
        ))
        .map_err(failed)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(LiteConn {
            conn,
            checkpoints: None,
        })
    }

    /// [`LiteConn::open`] for the writer, with its [`Checkpointer`].
    pub(super) fn open_writer(path: &Path) -> Result<Self, LiteError> {
        let mut writer = LiteConn::open(path)?;
        writer.checkpoints = Some(Checkpointer::start(path, &writer.conn)?);
        Ok(writer)
    }

    /// Commits the open transaction, which holds the work of
    /// `transactions` write transactions (a group's), and nudges the
    /// checkpointer.
    pub(super) fn commit(&mut self, transactions: usize) -> Result<(), LiteError> {
        self.control("COMMIT")?;
        if let Some(checkpoints) = &mut self.checkpoints {
            checkpoints.committed(transactions);
            checkpoints.bound(&self.conn);
        }
        Ok(())
    }

    /// Whether a transaction is open: one begun and neither committed nor
    /// rolled back.
    pub(super) fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Runs a statement that binds nothing and returns nothing: `BEGIN
    /// IMMEDIATE`, `COMMIT`, `ROLLBACK`.
    pub(super) fn control(&mut self, sql: &str) -> Result<(), LiteError> {
        self.conn.execute_batch(sql).map_err(failed)
    }

    /// Runs one statement with `arguments` bound to its `$N` placeholders
    /// (value `N`, counted from 1, as sqlx binds them), and returns what
    /// it did. A statement that names more or fewer values than it is
    /// given is refused before it runs.
    pub(super) fn run(&mut self, sql: &str, arguments: &AnyArguments) -> Result<Ran, LiteError> {
        let values = &arguments.values.0;
        let mut statement = self.conn.prepare_cached(sql).map_err(failed)?;
        let mut highest = 0;
        for at in 1..=statement.parameter_count() {
            let n = statement
                .parameter_name(at)
                .and_then(|name| name.get(1..))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(at);
            highest = highest.max(n);
            if let Some(value) = values.get(n.wrapping_sub(1)) {
                statement
                    .raw_bind_parameter(at, Bound(value))
                    .map_err(failed)?;
            }
        }
        if highest != values.len() {
            return Err(LiteError::Invalid(format!(
                "a statement binds {} values for {highest} placeholders",
                values.len()
            )));
        }
        let width = statement.column_count();
        let mut names = sqlx_core::HashMap::with_capacity(width);
        let mut columns = Vec::with_capacity(width);
        for ordinal in 0..width {
            let name = UStr::new(statement.column_name(ordinal).map_err(failed)?);
            names.insert(name.clone(), ordinal);
            columns.push(AnyColumn {
                ordinal,
                name,
                // sqlx decodes by each value's own type; a column's is
                // not read.
                type_info: AnyTypeInfo {
                    kind: AnyTypeInfoKind::Null,
                },
            });
        }
        let names = Arc::new(names);
        let mut rows = Vec::new();
        let mut stepped = statement.raw_query();
        while let Some(row) = stepped.next().map_err(failed)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(AnyValue {
                    kind: any_value(row.get_ref(i).map_err(failed)?)?,
                });
            }
            rows.push(AnyRow {
                column_names: names.clone(),
                columns: columns.clone(),
                values,
            });
        }
        drop(stepped);
        drop(statement);
        Ok(Ran {
            changed: self.conn.changes(),
            rows,
        })
    }
}

/// Idle readers kept open at most: one per thread that reads at once, on
/// a runtime of a few threads.
const IDLE_READERS: usize = 8;

/// SQLite's readers called in place: connections to the file, each taken
/// for one statement, run on the calling thread, and put back. A reader
/// in WAL mode never waits for the writer.
pub(super) struct LiteReaders {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<LiteConn>>,
    closed: AtomicBool,
}

impl LiteReaders {
    pub(super) fn new(path: PathBuf) -> Self {
        LiteReaders {
            path,
            idle: std::sync::Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs one statement that only reads, on an idle reader or a new
    /// one, and returns its rows.
    pub(super) fn read(
        &self,
        sql: &str,
        arguments: &AnyArguments,
    ) -> Result<Vec<AnyRow>, LiteError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LiteError::Closed);
        }
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => LiteConn::open(&self.path)?,
        };
        let ran = conn.run(sql, arguments)?;
        // A statement that failed may have left the connection in an
        // unknown state: only one that ran is kept.
        if !conn.in_transaction() && !self.closed.load(Ordering::Acquire) {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
        Ok(ran.rows)
    }

    /// Closes the idle readers; later reads are refused.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A value as sqlx's SQLite driver hands it to `Any`: by the storage
/// class of the value itself.
fn any_value(value: ValueRef<'_>) -> Result<AnyValueKind, LiteError> {
    Ok(match value {
        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
        ValueRef::Integer(i) => AnyValueKind::BigInt(i),
        ValueRef::Real(f) => AnyValueKind::Double(f),
        ValueRef::Text(text) => {
            AnyValueKind::Text(Arc::new(String::from_utf8(text.to_vec()).map_err(|e| {
                LiteError::Invalid(format!("a stored text is not UTF-8: {e}"))
            })?))
        }
        ValueRef::Blob(bytes) => AnyValueKind::Blob(Arc::new(bytes.to_vec())),
    })
}

/// A value bound by `sqlx::query(..).bind(..)`, as sqlx's SQLite driver
/// binds it.
struct Bound<'a>(&'a AnyValueKind);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            AnyValueKind::Null(_) => ToSqlOutput::Owned(Value::Null),
            AnyValueKind::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
            AnyValueKind::SmallInt(i) => ToSqlOutput::Owned(Value::Integer(i64::from(*i))),
            AnyValueKind::Integer(i) => ToSqlOutput::Owned(Value::Integer(i64::from(*i))),
            AnyValueKind::BigInt(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            AnyValueKind::Real(f) => ToSqlOutput::Owned(Value::Real(f64::from(*f))),
            AnyValueKind::Double(f) => ToSqlOutput::Owned(Value::Real(*f)),
            AnyValueKind::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            AnyValueKind::TextSlice(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            AnyValueKind::Blob(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            other => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("sqlx bound a value SQLite cannot take: {other:?}").into(),
                ));
            }
        })
    }
}

/// Sorts a SQLite error as the store sorts sqlx's: a broken uniqueness
/// rule is a conflict, a lock held by another connection is "try again
/// later".
fn failed(e: rusqlite::Error) -> LiteError {
    if let rusqlite::Error::SqliteFailure(code, message) = &e {
        // 1555 = SQLITE_CONSTRAINT_PRIMARYKEY, 2067 = SQLITE_CONSTRAINT_UNIQUE.
        if matches!(code.extended_code, 1555 | 2067) {
            return LiteError::Conflict(message.clone().unwrap_or_else(|| e.to_string()));
        }
        if matches!(
            code.code,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked
        ) {
            return LiteError::Busy(e);
        }
    }
    LiteError::Sqlite(e)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;
    use sqlx::any::AnyRow;

    use super::LiteConn;
    use crate::store::Db;

    /// The values `(i, r, t, b, n)` of `row`, decoded as the store decodes
    /// columns.
    fn decoded(row: &AnyRow) -> (i64, f64, String, Vec<u8>, Option<String>, Option<i64>) {
        (
            row.get("i"),
            row.get("r"),
            row.get("t"),
            row.get("b"),
            row.get("n"),
            row.get("m"),
        )
    }

    #[tokio::test]
    async fn rows_read_in_place_decode_as_sqlx_decodes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::connect(&format!("sqlite://{}", path.display()), 2)
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE t (i BIGINT NOT NULL, r REAL NOT NULL, t TEXT NOT NULL, \
             b BLOB NOT NULL, n TEXT, m BIGINT)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let mut lite = LiteConn::open(&path).unwrap();
        // Bound through sqlx, in an order other than the placeholders'.
        let mut arguments = sqlx::query::<sqlx::Any>("")
            .bind(-7_i64)
            .bind(2.5_f64)
            .bind("é and ß")
            .bind(vec![0_u8, 255, 1])
            .bind(None::<String>)
            .bind(Some(42_i64));
        let arguments = sqlx::Execute::take_arguments(&mut arguments)
            .unwrap()
            .unwrap();
        let ran = lite
            .run(
                "INSERT INTO t (m, n, b, t, r, i) VALUES ($6, $5, $4, $3, $2, $1) \
                 RETURNING i, r, t, b, n, m",
                &arguments,
            )
            .unwrap();
        assert_eq!(ran.changed, 1);
        let by_sqlx = sqlx::query("SELECT i, r, t, b, n, m FROM t")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let expected = (
            -7,
            2.5,
            "é and ß".to_owned(),
            vec![0, 255, 1],
            None,
            Some(42),
        );
        assert_eq!(decoded(&by_sqlx), expected);
        assert_eq!(ran.rows.len(), 1);
        assert_eq!(decoded(&ran.rows[0]), expected);
        // A column asked for as a type sqlx would refuse is refused too.
        assert!(ran.rows[0].try_get::<i64, _>("t").is_err());
        assert!(by_sqlx.try_get::<i64, _>("t").is_err());

        // Too few values for the placeholders: refused before it runs.
        let short = sqlx::Execute::take_arguments(&mut sqlx::query::<sqlx::Any>("").bind(1_i64))
            .unwrap()
            .unwrap();
        let refused = lite.run("UPDATE t SET i = $1 WHERE m = $2", &short);
        assert!(refused.is_err());
        let unchanged: i64 = sqlx::query_scalar("SELECT i FROM t")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(unchanged, -7);
        drop(lite);
        db.close().await;
    }
}
