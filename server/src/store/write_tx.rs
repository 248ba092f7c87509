//! A write transaction: on a SQLite file, on the writers' connection
//! called in place ([`LiteConn`](super::lite::LiteConn)), each statement
//! run on the calling thread as it comes; elsewhere (PostgreSQL,
//! in-memory SQLite's one pooled connection) sqlx's transaction, each
//! statement a trip to the database.
//!
//! On PostgreSQL a caller whose statements each stand alone (each is
//! atomic by itself, and none needs another's commit) runs them as
//! [`WriteTx::alone`]: each commits itself, in one trip, where `BEGIN`
//! and `COMMIT` would take two more and hold the statements' row locks
//! across them. They share one pooled connection ([`HeldConnection`]),
//! taken at the first and given back when the `WriteTx` is dropped.
//!
//! The statements are sqlx's either way (`sqlx::query(..).bind(..)`, rows
//! as `AnyRow`), so each store function is written once for both
//! backends and both paths.

use sqlx::any::AnyRow;
use std::time::{Duration, Instant};

use super::db::Db;
use super::error::DbError;
use super::held::HeldConnection;
use super::lite::{LiteError, Ran};
use super::query::{AnyQuery, Binder, bound, built};
use super::turn::WriterTurn;

/// How long a transaction waits for another process's writer to let go
/// of the file: sqlx's busy timeout for its own SQLite connections.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// A statement and what binds its values, for [`WriteTx::commit_with`].
pub(super) struct Statement<'a> {
    sql: String,
    bind: Binder<'a>,
}

impl<'a> Statement<'a> {
    pub(super) fn new(
        sql: impl Into<String>,
        bind: impl FnOnce(AnyQuery) -> AnyQuery + Send + 'a,
    ) -> Self {
        Statement {
            sql: sql.into(),
            bind: Box::new(bind),
        }
    }
}

/// A write transaction: see the module's comment. Dropped unfinished, it
/// is rolled back (on SQLite's writer, by its turn as that is dropped).
pub(super) struct WriteTx<'t> {
    inner: Inner<'t>,
}

enum Inner<'t> {
    Sqlx(sqlx::Transaction<'t, sqlx::Any>),
    Lite(Lite<'t>),
    /// Each statement committing itself, on a connection from the pool,
    /// taken at the first.
    Alone(HeldConnection<'t>),
}

/// Where one statement of a [`WriteTx`] runs.
enum Target<'a, 't> {
    /// A sqlx connection: the transaction's, or the one statements that
    /// stand alone share.
    Conn(&'a mut sqlx::AnyConnection),
    /// SQLite's writer in place, its transaction begun.
    Lite(&'a mut Lite<'t>),
}

/// SQLite's writer called in place, its transaction begun by the first
/// statement; on the turn, which it may pass on as it commits (group
/// commit: `store::turn`).
struct Lite<'t> {
    turn: &'t mut WriterTurn,
    begun: bool,
    /// A statement failed: the transaction was rolled back, so nothing
    /// more may run in it (it would run outside any transaction).
    failed: bool,
}

impl WriterTurn {
    /// A [`WriteTx`]: on the writers' connection called in place, or
    /// sqlx's transaction on a pooled connection. Bound after the turn,
    /// as [`WriterTurn::begin`]'s.
    pub(super) async fn transaction(&mut self) -> Result<WriteTx<'_>, DbError> {
        let pool = self.pool().clone();
        if self.in_place().is_some() {
            return Ok(WriteTx {
                inner: Inner::Lite(Lite {
                    turn: self,
                    begun: false,
                    failed: false,
                }),
            });
        }
        Ok(WriteTx {
            inner: Inner::Sqlx(pool.begin().await?),
        })
    }
}

impl Db {
    /// A [`WriteTx`] whose statements each commit themselves when
    /// `alone`, or else one on the writers' turn, which `turn` then holds.
    pub(super) async fn write_tx<'a>(
        &'a self,
        turn: &'a mut Option<WriterTurn>,
        alone: bool,
    ) -> Result<WriteTx<'a>, DbError> {
        if alone {
            return Ok(WriteTx::alone(&self.pool));
        }
        turn.insert(self.join_write().await).transaction().await
    }
}

impl<'t> WriteTx<'t> {
    /// Statements that each commit themselves, on `pool`: for statements
    /// that each stand alone (see the module's comment). Its commit and
    /// rollback do nothing.
    pub(super) fn alone(pool: &'t sqlx::AnyPool) -> WriteTx<'t> {
        WriteTx {
            inner: Inner::Alone(HeldConnection::new(pool)),
        }
    }

    /// Where the next statement runs.
    async fn target<'a>(&'a mut self) -> Result<Target<'a, 't>, DbError> {
        Ok(match &mut self.inner {
            Inner::Sqlx(tx) => Target::Conn(tx),
            Inner::Alone(held) => Target::Conn(held.get().await?),
            Inner::Lite(lite) => {
                lite.begin().await?;
                Target::Lite(lite)
            }
        })
    }

    /// Whether each statement commits itself ([`WriteTx::alone`]).
    pub(super) fn is_alone(&self) -> bool {
        matches!(self.inner, Inner::Alone(_))
    }

    /// Runs a statement whose rows nobody reads; returns the rows it
    /// changed.
    pub(super) async fn execute(
        &mut self,
        sql: impl Into<String>,
        bind: impl FnOnce(AnyQuery) -> AnyQuery + Send + 't,
    ) -> Result<u64, DbError> {
        match self.target().await? {
            Target::Conn(conn) => Ok(bind(sqlx::query(built(sql.into())))
                .execute(conn)
                .await?
                .rows_affected()),
            Target::Lite(lite) => Ok(lite.run(&sql.into(), bind)?.changed),
        }
    }

    /// [`WriteTx::execute`] for a statement built apart.
    pub(super) async fn execute_statement(
        &mut self,
        statement: Statement<'t>,
    ) -> Result<u64, DbError> {
        self.execute(statement.sql, statement.bind).await
    }

    /// Runs one statement and returns its rows.
    pub(super) async fn fetch_all(
        &mut self,
        sql: impl Into<String>,
        bind: impl FnOnce(AnyQuery) -> AnyQuery + Send + 't,
    ) -> Result<Vec<AnyRow>, DbError> {
        match self.target().await? {
            Target::Conn(conn) => Ok(bind(sqlx::query(built(sql.into()))).fetch_all(conn).await?),
            Target::Lite(lite) => Ok(lite.run(&sql.into(), bind)?.rows),
        }
    }

    /// Commits.
    pub(super) async fn commit(self) -> Result<(), DbError> {
        match self.inner {
            Inner::Sqlx(tx) => Ok(tx.commit().await?),
            Inner::Lite(mut lite) => lite.commit().await,
            Inner::Alone(_) => Ok(()),
        }
    }

    /// Runs `reads`, in order; returns each one's rows.
    pub(super) async fn fetch_each(
        &mut self,
        reads: Vec<Statement<'t>>,
    ) -> Result<Vec<Vec<AnyRow>>, DbError> {
        let mut rows = Vec::with_capacity(reads.len());
        for read in reads {
            rows.push(self.fetch_all(read.sql, read.bind).await?);
        }
        Ok(rows)
    }

    /// Runs `reads`, in order, and commits; returns each one's rows.
    pub(super) async fn commit_with(
        mut self,
        reads: Vec<Statement<'t>>,
    ) -> Result<Vec<Vec<AnyRow>>, DbError> {
        let rows = self.fetch_each(reads).await?;
        self.commit().await?;
        Ok(rows)
    }

    /// Rolls back.
    pub(super) async fn rollback(self) -> Result<(), DbError> {
        match self.inner {
            Inner::Sqlx(tx) => Ok(tx.rollback().await?),
            Inner::Alone(_) => Ok(()),
            Inner::Lite(mut lite) => {
                if lite.begun && !lite.failed {
                    lite.fail();
                }
                Ok(())
            }
        }
    }
}

impl Lite<'_> {
    /// The writers' state in place: held until the commit passes the turn
    /// on.
    fn writer(&mut self) -> Result<&mut super::turn::SharedWriter, DbError> {
        self.turn
            .in_place()
            .ok_or_else(|| DbError::other("the writers' turn was passed on"))
    }

    /// Begins the transaction, if this is its first statement. Another
    /// process's writer may hold the file's lock (this process's writers
    /// take turns): the wait for it is a timer, so that it keeps no
    /// thread, up to the busy timeout sqlx's connections wait.
    async fn begin(&mut self) -> Result<(), DbError> {
        self.usable()?;
        if self.begun {
            return Ok(());
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.writer()?.begin_in_place() {
                Ok(()) => break,
                Err(LiteError::Busy(_)) if started.elapsed() < BUSY_WAIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.begun = true;
        Ok(())
    }

    /// Runs one statement in the begun transaction. A failure rolls the
    /// whole transaction back.
    fn run(&mut self, sql: &str, bind: impl FnOnce(AnyQuery) -> AnyQuery) -> Result<Ran, DbError> {
        self.usable()?;
        let arguments = bound(bind)?;
        let ran = self.writer()?.run_in_place(sql, &arguments);
        Ok(ran.inspect_err(|_| self.fail())?)
    }

    /// Commits, or leaves the work to a group and waits for its commit: a
    /// failed transaction can only say it failed.
    async fn commit(&mut self) -> Result<(), DbError> {
        self.usable()?;
        if !self.begun {
            return Ok(());
        }
        let ended = self.turn.end_in_place().await;
        if ended.is_err() && self.turn.in_place().is_some() {
            // It failed before the turn passed on: undo it here.
            self.fail();
        }
        ended
    }

    fn usable(&self) -> Result<(), DbError> {
        if self.failed {
            return Err(DbError::other(
                "a statement of this transaction failed; it was rolled back",
            ));
        }
        Ok(())
    }

    /// Rolls back after a failure: this transaction's work only, if it is
    /// a group's member. If even that fails, the connection is closed.
    fn fail(&mut self) {
        self.failed = true;
        if let Some(writer) = self.turn.in_place() {
            writer.roll_back_lite();
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::Statement;
    use crate::store::{Db, DbError};

    /// Rows of `t` as another connection sees them: what is committed.
    async fn committed(db: &Db) -> Vec<(String, i64)> {
        sqlx::query("SELECT k, v FROM t ORDER BY k")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get("k"), row.get("v")))
            .collect()
    }

    fn insert(
        k: &'static str,
        v: i64,
    ) -> (
        &'static str,
        impl FnOnce(super::AnyQuery) -> super::AnyQuery + Send,
    ) {
        (
            "INSERT INTO t (k, v) VALUES ($1, $2)",
            move |q: super::AnyQuery| q.bind(k).bind(v),
        )
    }

    /// A fresh SQLite file (kept while the directory is) with table `t`.
    async fn table_t() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::connect(&url, 4).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn a_write_transaction_in_place_commits_whole_or_rolls_back_whole() {
        let (_dir, db) = table_t().await;

        // Statements run in order, in the transaction: the read sees the
        // writes before it; nothing is visible elsewhere before the commit.
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("a", 1);
            tx.execute(sql, bind).await.unwrap();
            let (sql, bind) = insert("b", 2);
            tx.execute(sql, bind).await.unwrap();
            let rows = tx
                .fetch_all("SELECT k FROM t WHERE v >= $1 ORDER BY k", |q| {
                    q.bind(1_i64)
                })
                .await
                .unwrap();
            let keys: Vec<String> = rows.iter().map(|row| row.get("k")).collect();
            assert_eq!(keys, ["a", "b"]);
            assert!(committed(&db).await.is_empty(), "visible before the commit");
            let (sql, bind) = insert("c", 3);
            tx.execute(sql, bind).await.unwrap();
            tx.commit().await.unwrap();
        }
        let abc = vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("c".to_owned(), 3),
        ];
        assert_eq!(committed(&db).await, abc);

        // A statement that fails fails the commit, and the statements
        // before it are rolled back.
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("d", 4);
            tx.execute(sql, bind).await.unwrap();
            let (sql, bind) = insert("a", 5);
            let failed = tx.execute(sql, bind).await;
            assert!(matches!(failed, Err(DbError::Conflict(_))), "{failed:?}");
            assert!(tx.commit().await.is_err(), "a failed transaction committed");
        }
        assert_eq!(committed(&db).await, abc, "a failed commit kept a write");

        // A transaction dropped after its first statement, with nothing
        // committed: the next turn rolls it back before its own.
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let rows = tx
                .fetch_all("INSERT INTO t (k, v) VALUES ($1, $2) RETURNING k", |q| {
                    q.bind("e").bind(6_i64)
                })
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
        }
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("f", 7);
            tx.execute(sql, bind).await.unwrap();
            tx.commit().await.unwrap();
        }
        let mut abcf = abc.clone();
        abcf.push(("f".to_owned(), 7));
        assert_eq!(
            committed(&db).await,
            abcf,
            "the dropped transaction's row stayed"
        );

        // A statement bound with fewer values than it names is refused
        // before anything runs.
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let refused = tx
                .fetch_all("INSERT INTO t (k, v) VALUES ($1, $2)", |q| q.bind("g"))
                .await;
            assert!(refused.is_err(), "a short binding ran");
            assert!(tx.commit().await.is_err(), "a failed transaction committed");
        }
        assert_eq!(committed(&db).await, abcf);

        // Reads with the commit: each one's rows come back apart, in
        // order, after the statement before them, and all is committed.
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("g", 8);
            tx.execute(sql, bind).await.unwrap();
            let rows = tx
                .commit_with(vec![
                    Statement::new("UPDATE t SET v = v + $1 WHERE k = $2 RETURNING v", |q| {
                        q.bind(10_i64).bind("g")
                    }),
                    Statement::new("SELECT k FROM t WHERE v < $1 ORDER BY k", |q| q.bind(3_i64)),
                    Statement::new("UPDATE t SET v = 0 WHERE k = $1", |q| q.bind("none")),
                ])
                .await
                .unwrap();
            let v: Vec<i64> = rows[0].iter().map(|row| row.get("v")).collect();
            let k: Vec<String> = rows[1].iter().map(|row| row.get("k")).collect();
            assert_eq!(
                (v, k, rows[2].len()),
                (vec![18], vec!["a".into(), "b".into()], 0)
            );
        }
        abcf.push(("g".to_owned(), 18));
        assert_eq!(committed(&db).await, abcf, "reads with the commit");

        // A read that fails before the commit rolls the whole transaction
        // back.
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("h", 9);
            tx.execute(sql, bind).await.unwrap();
            let failed = tx
                .commit_with(vec![Statement::new(
                    "INSERT INTO t (k, v) VALUES ($1, $2) RETURNING k",
                    |q| q.bind("a").bind(1_i64),
                )])
                .await;
            assert!(failed.is_err(), "a failing read committed");
        }
        assert_eq!(committed(&db).await, abcf, "a failed commit kept a write");
        db.close().await;
    }

    #[tokio::test]
    async fn a_transaction_waits_for_another_writers_lock_without_holding_the_thread() {
        let (_dir, db) = table_t().await;
        // Another connection, as another process's would, holds the
        // file's write lock for a while. This test's runtime has one
        // thread: a writer that waited for the lock on it would keep the
        // holder from ever letting go.
        let mut other = db.pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *other)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (k, v) VALUES ('x', 1)")
            .execute(&mut *other)
            .await
            .unwrap();
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            sqlx::query("COMMIT").execute(&mut *other).await.unwrap();
        };
        let write = async {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await?;
            let (sql, bind) = insert("y", 2);
            tx.execute(sql, bind).await?;
            tx.commit().await
        };
        let ((), written) = tokio::join!(release, write);
        written.unwrap();
        drop(other);
        assert_eq!(
            committed(&db).await,
            [("x".to_owned(), 1), ("y".to_owned(), 2)]
        );
        db.close().await;
    }

    /// Back-to-back commits, 4 KB each (two pages of log or more): the
    /// checkpointer copies the log back long before its bound, and under
    /// a writer that never pauses the log stays within the bound (4,000
    /// pages, `lite::WAL_BOUND`) and one commit, however far the
    /// checkpointer falls behind: the commit past the bound waits for its
    /// checkpoint and copies the rest itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_checkpointed_apart_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.db");
        let db = Db::connect(&format!("sqlite://{}", file.display()), 4)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let wal = dir.path().join("b.db-wal");
        let write = |n: i64| {
            let db = db.clone();
            async move {
                let mut turn = db.join_write().await;
                let mut tx = turn.transaction().await.unwrap();
                tx.execute("INSERT INTO b (id, data) VALUES ($1, $2)", move |q| {
                    q.bind(n).bind(vec![n as u8; 4096])
                })
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        };

        // 128 commits: a few hundred pages, far under the bound, where no
        // commit checkpoints. The file grows only if the checkpointer ran.
        let before = size(&file);
        for n in 0..128 {
            write(n).await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size(&file) < before + 128 * 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing was copied back: file {} bytes, log {} bytes",
                size(&file),
                size(&wal)
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        // 6,000 more without a pause: 12,000 pages and more, three times
        // the bound.
        let mut largest = 0;
        for n in 128..6128 {
            write(n).await;
            largest = largest.max(size(&wal));
        }
        // The bound's pages and one commit's (a few pages), with their
        // frame headers and the log's header. Unchecked, this writer grew
        // it to 37-44 MB; when the commit at the bound skipped its
        // checkpoint because the checkpointer's was under way, to 26 MB
        // on a loaded machine.
        let bound = u64::from(crate::store::lite::WAL_BOUND + 16) * (4096 + 24) + 32;
        assert!(largest <= bound, "the log grew to {largest} bytes");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM b")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, 6128);
        db.close().await;
    }

    #[tokio::test]
    async fn a_turn_after_a_dropped_transaction_lets_a_pooled_write_in() {
        let (_dir, db) = table_t().await;
        {
            let mut turn = db.join_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("a", 1);
            tx.execute(sql, bind).await.unwrap();
            // Dropped unfinished: its transaction, and the file's write
            // lock, stay open on the in-place connection.
        }
        {
            // A write that holds the turn alone, on a pooled connection:
            // with that lock still held it would fail as busy.
            let _turn = db.begin_write().await;
            sqlx::query("INSERT INTO t (k, v) VALUES ('b', 2)")
                .execute(&db.pool)
                .await
                .unwrap();
        }
        assert_eq!(committed(&db).await, [("b".to_owned(), 2)]);
        db.close().await;
    }
}
