//! The connection: [`Db`], and the helpers every concern shares.

use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, Connection};

use super::error::{BoxError, DbError};
use super::groups::Groups;
use super::lite::{LiteError, LiteReaders, SQLITE_SYNCHRONOUS, SQLITE_WAL_LIMIT};
use super::query::{AnyQuery, bound, built};
use super::turn::{WriterTurn, Writers};

/// Which backend a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// The coordination database.
#[derive(Clone)]
pub struct Db {
    pub(super) pool: sqlx::AnyPool,
    pub(super) kind: DbKind,
    /// SQLite only: this process's writers, who take turns (see
    /// `store::turn`).
    pub(super) writer: Option<Writers>,
    /// A SQLite file's readers, called in place ([`Db::read`]).
    readers: Option<std::sync::Arc<LiteReaders>>,
    /// PostgreSQL only: this process's submissions inserted in groups
    /// (`store::groups`).
    pub(super) inserts: Option<std::sync::Arc<Groups>>,
    /// PostgreSQL only: this process's finishes of runs that are no
    /// workflow step's, written in groups.
    pub(super) finishes: Option<std::sync::Arc<Groups>>,
    /// PostgreSQL only: this process's reads that admit a submission (a
    /// module and its tenant's grants), read in groups.
    pub(super) admissions: Option<std::sync::Arc<Groups>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// How long a query waits for a pooled connection before the database
/// counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for PostgreSQL. While the server refuses connections (a
/// restart) the pool keeps retrying until this timeout, so it bounds how
/// long an API request hangs before it answers 503 with `Retry-After`.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a pooled PostgreSQL connection may sit idle and still be
/// handed out without a ping. sqlx pings every connection as it goes back
/// to the pool (and closes one that does not answer), so a connection
/// taken out again within this time answered a moment ago; pinging it
/// again on the way out was one more round trip for every statement a
/// busy server sends (BENCHMARKS.md: about 8 % of PostgreSQL's runs/s).
/// A connection idle for longer is pinged, as before, so one that died
/// while idle (a restart, a killed backend) is replaced, not used.
const PG_PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How long a SQLite connection waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

static INSTALL_DRIVERS: Once = Once::new();

/// Removes the password of `url` from a connection error message, in case a
/// driver ever echoes the URL back.
fn redact(message: String, url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return message;
    };
    let Some(password) = parsed.password().filter(|p| !p.is_empty()) else {
        return message;
    };
    let mut message = message.replace(password, "***");
    if let Some(decoded) = percent_decode(password).ok().filter(|d| !d.is_empty()) {
        message = message.replace(&decoded, "***");
    }
    message
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new row's id: a UUID whose first bits are the time (version 7),
/// so that rows made one after another sit side by side in the primary
/// key's index, where a random one (version 4) put each on a page of its
/// own, written with the commit and split as the index grew. The other
/// 74 bits are random: an id is still not guessable, and a run is only
/// ever read within its tenant.
pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// `sqlite://path` does not create a missing file unless asked to:
/// default to `mode=rwc` when the URL names no mode.
fn sqlite_url_with_create(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

pub(super) fn corrupt(what: &str, id: &str, e: impl std::fmt::Display) -> DbError {
    DbError::other(format!("stored {what} of run {id} is invalid: {e}"))
}

impl Db {
    /// The writers' turn for a [`WriteTx`](super::write_tx::WriteTx),
    /// which joins the open group ([`WriterTurn::join`]).
    pub(super) async fn join_write(&self) -> WriterTurn {
        WriterTurn::join(self.writer.as_ref(), &self.pool).await
    }

    /// The writers' turn for a sqlx transaction or a pooled write, after
    /// the open group has committed ([`WriterTurn::alone`]).
    pub(super) async fn begin_write(&self) -> WriterTurn {
        WriterTurn::alone(self.writer.as_ref(), &self.pool).await
    }

    /// Connects and migrates. `sqlite://path` (created if missing, WAL
    /// mode, busy timeout) or `postgres://...`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        // Connection errors go through `redact`: the URL may hold a
        // password. Their cause is kept as its redacted message only, as
        // the driver's error could still show the password.
        let hide = |e: BoxError| -> BoxError { redact(e.to_string(), url).into() };
        let fail = |e: sqlx::Error| match DbError::from(e) {
            DbError::Unavailable(e) => DbError::Unavailable(hide(e)),
            DbError::Conflict(m) => DbError::Conflict(redact(m, url)),
            DbError::Other(e) => DbError::Other(hide(e)),
            DbError::Migrate(e) => DbError::Migrate(hide(e)),
            other => other,
        };
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbKind::Postgres
        } else {
            return Err(DbError::other(
                "unsupported database URL: expected sqlite:// or postgres://",
            ));
        };
        if kind == DbKind::Sqlite {
            super::lite::configure_process();
        }
        let in_memory = kind == DbKind::Sqlite && is_sqlite_memory(url);
        let full_url = if kind == DbKind::Sqlite && !in_memory {
            sqlite_url_with_create(url)
        } else {
            url.to_owned()
        };
        let options: AnyConnectOptions = full_url.parse().map_err(fail)?;

        if !in_memory {
            // One connection first: it fails fast when the server is down
            // (the pool would retry until its timeout), and it switches
            // SQLite to WAL, a persistent setting that needs an exclusive
            // lock the busy timeout cannot wait for, so it is done once
            // here rather than on every pooled connection.
            let mut conn = AnyConnection::connect_with(&options).await.map_err(fail)?;
            if kind == DbKind::Sqlite {
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&mut conn)
                    .await
                    .map_err(fail)?;
            }
            conn.close().await.map_err(fail)?;
        }

        let mut pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(match kind {
                DbKind::Sqlite => ACQUIRE_TIMEOUT,
                DbKind::Postgres => PG_ACQUIRE_TIMEOUT,
            });
        if kind == DbKind::Sqlite {
            pool = pool
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        sqlx::query(SQLITE_BUSY_TIMEOUT).execute(&mut *conn).await?;
                        sqlx::query(SQLITE_SYNCHRONOUS).execute(&mut *conn).await?;
                        sqlx::query(SQLITE_WAL_LIMIT).execute(&mut *conn).await?;
                        Ok(())
                    })
                })
                // A local file: a pooled connection does not go stale the
                // way a network one can, so no ping before each use (a
                // round trip through the driver's worker thread per query).
                .test_before_acquire(false);
        }
        if kind == DbKind::Postgres {
            pool = pool
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PG_PING_AFTER_IDLE {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                });
        }
        if in_memory {
            // Every connection to `:memory:` is its own database: keep
            // exactly one, forever.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool.connect_with(options).await.map_err(fail)?;

        let migrated = match kind {
            DbKind::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            DbKind::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        };
        if let Err(e) = migrated {
            pool.close().await;
            return Err(match e {
                sqlx::migrate::MigrateError::Execute(e) => match fail(e) {
                    DbError::Unavailable(e) => DbError::Unavailable(e),
                    other => DbError::Migrate(other.into()),
                },
                e => DbError::Migrate(redact(e.to_string(), url).into()),
            });
        }
        let path = if kind == DbKind::Sqlite && !in_memory {
            // sqlx's own reading of the URL, so both open the same file;
            // made absolute now, as the in-place connections open later.
            let options: SqliteConnectOptions = full_url.parse().map_err(fail)?;
            let file = options.get_filename();
            Some(std::path::absolute(file).unwrap_or_else(|_| file.to_owned()))
        } else {
            None
        };
        let readers = path
            .clone()
            .map(|path| std::sync::Arc::new(LiteReaders::new(path)));
        let writer = (kind == DbKind::Sqlite).then(|| Writers::new(path));
        // Every submission that arrives while a group is inserted goes in
        // the next (measured, BENCHMARKS.md, stop 45).
        let inserts = (kind == DbKind::Postgres).then(|| Arc::new(Groups::new(1)));
        // Until a worker says how many slots finish here
        // (`Db::finishing_slots`): each finish at once, as two slots do.
        let finishes = (kind == DbKind::Postgres).then(|| Arc::new(Groups::new(2)));
        // Every admission that arrives while a group is read goes in the
        // next, as submissions' inserts do.
        let admissions = (kind == DbKind::Postgres).then(|| Arc::new(Groups::new(1)));
        Ok(Db {
            pool,
            kind,
            writer,
            readers,
            inserts,
            finishes,
            admissions,
        })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Runs one statement that only reads and returns its rows: on a
    /// SQLite file in place ([`LiteReaders`]), else on the pool. A reader
    /// that finds the file busy (another process recovering its log, say)
    /// does not wait on the calling thread: the read goes to the pool,
    /// whose connections wait on their own.
    pub(super) async fn read(
        &self,
        sql: impl Into<String>,
        bind: impl FnOnce(AnyQuery) -> AnyQuery,
    ) -> Result<Vec<AnyRow>, DbError> {
        let sql = sql.into();
        let arguments = bound(bind)?;
        if let Some(readers) = &self.readers {
            match readers.read(&sql, &arguments) {
                Err(LiteError::Busy(_)) => {}
                read => return Ok(read?),
            }
        }
        Ok(sqlx::query_with(built(sql), arguments)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Closes every pooled connection; later calls fail with
    /// [`DbError::Unavailable`].
    pub async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close();
        }
        if let Some(writers) = &self.writer {
            // After the transaction that holds the turn, if any.
            writers.close().await;
        }
        self.pool.close().await;
    }

    /// Cheap liveness check (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::Db;
    use crate::store::query::built;

    /// A database migrated before `sqlite/0012` (attempts and log lines in
    /// rowid tables), with one run, two attempts and three log lines.
    async fn before_0012(url: &str) {
        let mut before = sqlx::migrate!("./migrations/sqlite");
        before.migrations = before
            .migrations
            .iter()
            .filter(|m| m.version < 12)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        before.run(&pool).await.unwrap();
        for sql in [
            "INSERT INTO tenants (id, name, created_at) VALUES ('t', 'acme', 1)",
            "INSERT INTO runs (id, tenant_id, module_name, module_version, digest, input, \
             params, grants, timeout_ms, memory_bytes, max_retries, backoff_ms, retry_timeouts, \
             priority, state, attempts, not_before, created_at) \
             VALUES ('r', 't', 'm', '1', 'd', x'', '{}', '{}', 1000, 1, 1, 0, 0, 0, \
             'failed', 2, 0, 1)",
            "INSERT INTO run_attempts (run_id, attempt, worker_id, started_at, finished_at, \
             state, error) VALUES ('r', 1, 'w', 2, 3, 'failed', 'first'), \
             ('r', 2, 'w', 4, 5, 'failed', 'second')",
            "INSERT INTO run_logs (run_id, seq, attempt, time, level, source, message) \
             VALUES ('r', 1, 1, 2, 'info', 'task', 'one'), ('r', 2, 1, 3, 'warn', 'task', 'two'), \
             ('r', 3, 2, 4, 'error', 'host', 'three')",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }

    #[tokio::test]
    async fn an_upgrade_keeps_every_attempt_and_log_line_in_tables_keyed_by_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
        before_0012(&url).await;

        let db = Db::connect(&url, 2).await.unwrap();
        let attempts: Vec<(i64, String)> = sqlx::query(
            "SELECT attempt, error FROM run_attempts WHERE run_id = 'r' ORDER BY attempt",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get("attempt"), row.get("error")))
        .collect();
        assert_eq!(attempts, [(1, "first".into()), (2, "second".into())]);
        let lines: Vec<(i64, i64, String, String, String)> = sqlx::query(
            "SELECT seq, attempt, level, source, message FROM run_logs WHERE run_id = 'r' ORDER BY seq",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let text = |c: &str| row.get::<String, _>(c);
            (row.get("seq"), row.get("attempt"), text("level"), text("source"), text("message"))
        })
        .collect();
        assert_eq!(
            lines,
            [
                (1, 1, "info".into(), "task".into(), "one".into()),
                (2, 1, "warn".into(), "task".into(), "two".into()),
                (3, 2, "error".into(), "host".into(), "three".into()),
            ]
        );

        // Stored in their keys' B-trees, and the unused index is gone.
        for table in ["run_attempts", "run_logs"] {
            let sql: String = sqlx::query("SELECT sql FROM sqlite_master WHERE name = $1")
                .bind(table)
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .get("sql");
            assert!(sql.ends_with("WITHOUT ROWID"), "{table}: {sql}");
        }
        let index: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'runs_by_tenant_state'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get("n");
        assert_eq!(index, 0);

        // Their rows still belong to the run: deleting it deletes them.
        sqlx::query("DELETE FROM runs WHERE id = 'r'")
            .execute(&db.pool)
            .await
            .unwrap();
        for table in ["run_attempts", "run_logs"] {
            let n: i64 = sqlx::query(built(format!("SELECT COUNT(*) AS n FROM {table}")))
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .get("n");
            assert_eq!(n, 0, "{table}");
        }
    }
}
