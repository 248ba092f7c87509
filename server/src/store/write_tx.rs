//! A write transaction that costs SQLite as few trips to its driver
//! thread as the transaction's reads allow.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every
//! statement, `BEGIN` and `COMMIT` is a round trip to that thread: two
//! thread switches and their wake-ups. Profiled, a no-op run spent 44 % of
//! the server's time in the kernel, mostly those switches, at about 19
//! trips a run (BENCHMARKS.md, "group commit"). SQLite runs a text of
//! several statements in one call, and sqlx's driver binds `$N` in each of
//! them against one list of values. So on the writers' shared connection a
//! [`WriteTx`] sends `BEGIN IMMEDIATE` with its first statement, holds the
//! statements whose results nobody reads ([`WriteTx::defer`]) until one
//! that is read, and sends `COMMIT` with the last of them.
//!
//! sqlx calls several statements in one prepared query a SQLite-only
//! behaviour it has deprecated in its database-agnostic API (launchbadge
//! sqlx#3108); its SQLite driver still runs them, as its migrations need.
//! `a_write_transaction_sends_its_statements_together_and_rolls_back_whole`,
//! below,
//! holds this module to it, so an upgrade that drops it fails there.
//!
//! PostgreSQL's extended protocol takes one statement per message, so
//! there (and on in-memory SQLite's one pooled connection) each statement
//! runs as it comes, in sqlx's own transaction.

use futures::TryStreamExt;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AnyConnection, Arguments, Either, Execute, Executor};

use super::db::{DbError, WriterTurn, built};

/// A statement with its values bound, as `sqlx::query(..).bind(..)` builds
/// it; [`WriteTx`]'s callers bind through a closure given this.
pub(super) type AnyQuery = sqlx::query::Query<'static, sqlx::Any, AnyArguments>;

/// Binds one statement's values, in its placeholders' order.
type Binder<'a> = Box<dyn FnOnce(AnyQuery) -> AnyQuery + Send + 'a>;

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
/// is rolled back (on SQLite's shared writer, by the next writer's turn,
/// before its own statements).
pub(super) struct WriteTx<'t> {
    inner: Inner<'t>,
}

enum Inner<'t> {
    Sqlx(sqlx::Transaction<'t, sqlx::Any>),
    Script(Script<'t>),
}

/// SQLite's shared writer, its transaction begun and ended by statements
/// of its own that ride on the others.
struct Script<'t> {
    conn: &'t mut AnyConnection,
    /// The shared writer's mark that a transaction may be open on `conn`
    /// that nobody will finish: set before anything is sent, cleared once
    /// `COMMIT` or `ROLLBACK` has run; the next turn rolls back while it is
    /// set.
    open: &'t mut bool,
    begun: bool,
    /// A statement failed: the rest of a script after it did not run, so
    /// neither may anything more (it would run outside the transaction
    /// if the failure was its `BEGIN`).
    failed: bool,
    held: Vec<Statement<'t>>,
}

impl WriterTurn {
    /// A [`WriteTx`]: on the writers' shared connection, one whose `BEGIN`
    /// and `COMMIT` ride on its statements; else sqlx's transaction on a
    /// pooled connection. Bound after the turn, as [`WriterTurn::begin`]'s.
    pub(super) async fn transaction(&mut self) -> Result<WriteTx<'_>, DbError> {
        let pool = self.pool().clone();
        Ok(match self.shared().await? {
            Some((conn, open)) => WriteTx::script(conn, open),
            None => WriteTx::sqlx(pool.begin().await?),
        })
    }
}

impl<'t> WriteTx<'t> {
    /// sqlx's transaction, begun.
    fn sqlx(tx: sqlx::Transaction<'t, sqlx::Any>) -> Self {
        WriteTx {
            inner: Inner::Sqlx(tx),
        }
    }

    /// A transaction on SQLite's shared writer, not yet begun: `open`
    /// must be clear (the turn has rolled back what was left open).
    fn script(conn: &'t mut AnyConnection, open: &'t mut bool) -> Self {
        WriteTx {
            inner: Inner::Script(Script {
                conn,
                open,
                begun: false,
                failed: false,
                held: Vec::new(),
            }),
        }
    }

    /// A statement whose outcome nobody reads: run now, or on SQLite's
    /// writer sent with the next one that is read (its error, if any,
    /// surfaces there). It must return no rows.
    pub(super) async fn defer(
        &mut self,
        sql: impl Into<String>,
        bind: impl FnOnce(AnyQuery) -> AnyQuery + Send + 't,
    ) -> Result<(), DbError> {
        match &mut self.inner {
            Inner::Sqlx(tx) => {
                bind(sqlx::query(built(sql.into())))
                    .execute(&mut **tx)
                    .await?;
            }
            Inner::Script(script) => script.held.push(Statement::new(sql, bind)),
        }
        Ok(())
    }

    /// [`WriteTx::defer`] for a statement built apart.
    pub(super) async fn defer_statement(
        &mut self,
        statement: Statement<'t>,
    ) -> Result<(), DbError> {
        self.defer(statement.sql, statement.bind).await
    }

    /// Runs one statement (after those held) and returns its rows.
    pub(super) async fn fetch_all(
        &mut self,
        sql: impl Into<String>,
        bind: impl FnOnce(AnyQuery) -> AnyQuery + Send + 't,
    ) -> Result<Vec<AnyRow>, DbError> {
        match &mut self.inner {
            Inner::Sqlx(tx) => Ok(bind(sqlx::query(built(sql.into())))
                .fetch_all(&mut **tx)
                .await?),
            Inner::Script(script) => {
                let mut rows = script.send(vec![Statement::new(sql, bind)], false).await?;
                Ok(rows.pop().unwrap_or_default())
            }
        }
    }

    /// The connection, for statements of a helper's own, every held one
    /// sent first.
    pub(super) async fn conn(&mut self) -> Result<&mut AnyConnection, DbError> {
        match &mut self.inner {
            Inner::Sqlx(tx) => Ok(&mut **tx),
            Inner::Script(script) => {
                if !script.begun || !script.held.is_empty() {
                    script.send(Vec::new(), false).await?;
                }
                Ok(&mut *script.conn)
            }
        }
    }

    /// Commits: on SQLite's writer, with the statements still held.
    pub(super) async fn commit(self) -> Result<(), DbError> {
        match self.inner {
            Inner::Sqlx(tx) => Ok(tx.commit().await?),
            Inner::Script(mut script) => {
                // A failed script's error again: it can only roll back.
                if script.failed || script.begun || !script.held.is_empty() {
                    script.send(Vec::new(), true).await?;
                }
                Ok(())
            }
        }
    }

    /// Runs `reads`, in order after the held statements, and commits;
    /// returns each one's rows. On SQLite's writer that is one trip, the
    /// `COMMIT` riding on the reads: a transaction whose last statements
    /// are read ends without a trip of its own.
    pub(super) async fn commit_with(
        mut self,
        reads: Vec<Statement<'t>>,
    ) -> Result<Vec<Vec<AnyRow>>, DbError> {
        if let Inner::Script(script) = &mut self.inner {
            return script.send(reads, true).await;
        }
        let mut rows = Vec::with_capacity(reads.len());
        for read in reads {
            rows.push(self.fetch_all(read.sql, read.bind).await?);
        }
        self.commit().await?;
        Ok(rows)
    }

    /// Rolls back, and the held statements never run.
    pub(super) async fn rollback(self) -> Result<(), DbError> {
        match self.inner {
            Inner::Sqlx(tx) => Ok(tx.rollback().await?),
            Inner::Script(script) => {
                if script.begun {
                    sqlx::query("ROLLBACK").execute(&mut *script.conn).await?;
                }
                *script.open = false;
                Ok(())
            }
        }
    }
}

impl Script<'_> {
    /// Sends, as one text, `BEGIN IMMEDIATE` if the transaction has not
    /// begun, the held statements, `reads`, and `COMMIT` if `commit`;
    /// returns the rows of each of `reads`. Each statement's placeholders
    /// are renumbered to follow the values of those before it.
    async fn send(
        &mut self,
        reads: Vec<Statement<'_>>,
        commit: bool,
    ) -> Result<Vec<Vec<AnyRow>>, DbError> {
        if self.failed {
            return Err(DbError::other(
                "a statement of this transaction failed; it can only roll back",
            ));
        }
        let mut text = String::new();
        // Statements before the first of `reads`, each of which yields its
        // own result.
        let mut before = 0;
        if !self.begun {
            // IMMEDIATE: the write lock from the start, so what the
            // transaction reads is what it writes over, even against
            // another process on the same file.
            text.push_str("BEGIN IMMEDIATE;\n");
            before += 1;
        }
        before += self.held.len();
        let mut rows: Vec<Vec<AnyRow>> = reads.iter().map(|_| Vec::new()).collect();
        let statements: Vec<Statement<'_>> = self.held.drain(..).chain(reads).collect();
        let mut values = 0;
        for statement in &statements {
            let (shifted, used) = shift_placeholders(&statement.sql, values);
            text.push_str(&shifted);
            text.push_str(";\n");
            values += used;
        }
        if commit {
            text.push_str("COMMIT");
        }
        // The values, collected on a query of no text of its own: the
        // script's text goes with them below.
        let mut binding = sqlx::query(built(String::new()));
        for statement in statements {
            binding = (statement.bind)(binding);
        }
        let arguments = binding
            .take_arguments()
            .map_err(DbError::Other)?
            .unwrap_or_default();
        if arguments.len() != values {
            self.failed = true;
            return Err(DbError::other(format!(
                "a write script binds {} values for {values} placeholders",
                arguments.len()
            )));
        }
        *self.open = true;
        self.begun = true;
        // Each statement's rows come before its own result: rows that
        // arrive after `ended` results belong to statement `ended`.
        let mut ended: usize = 0;
        let mut results = self
            .conn
            .fetch_many(sqlx::query_with(built(text), arguments));
        loop {
            match results.try_next().await {
                Ok(Some(Either::Left(_))) => ended += 1,
                Ok(Some(Either::Right(row))) => {
                    if let Some(read) = ended.checked_sub(before).and_then(|i| rows.get_mut(i)) {
                        read.push(row);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.failed = true;
                    return Err(e.into());
                }
            }
        }
        if commit {
            *self.open = false;
        }
        Ok(rows)
    }
}

/// `sql` with each `$N` placeholder outside quotes made `$(N + by)`, and
/// the highest `N` in it: the values it binds.
///
/// It scans bytes and copies the text between placeholders whole: every
/// byte it looks for is ASCII, so each cut is a character boundary. (Char
/// by char, it was 4 % of a workflow's CPU, profiled.)
fn shift_placeholders(sql: &str, by: usize) -> (String, usize) {
    use std::fmt::Write;
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut highest = 0;
    let mut quote: Option<u8> = None;
    // Where the text not yet copied to `out` starts.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' && bytes.get(i).is_some_and(u8::is_ascii_digit) => {
                let digits = i;
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let n = sql[digits..i].bytes().fold(0usize, |n, d| {
                    n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
                });
                highest = highest.max(n);
                out.push_str(&sql[copied..digits]);
                let _ = write!(out, "{}", n.saturating_add(by));
                copied = i;
            }
            None => {}
        }
    }
    out.push_str(&sql[copied..]);
    (out, highest)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::{Statement, shift_placeholders};
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

    #[tokio::test]
    async fn a_write_transaction_sends_its_statements_together_and_rolls_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::connect(&url, 4).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();

        // Held statements run before the one read, which alone answers;
        // nothing is visible elsewhere before the commit.
        {
            let mut turn = db.begin_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("a", 1);
            tx.defer(sql, bind).await.unwrap();
            let (sql, bind) = insert("b", 2);
            tx.defer(sql, bind).await.unwrap();
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
            tx.defer(sql, bind).await.unwrap();
            tx.commit().await.unwrap();
        }
        let abc = vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("c".to_owned(), 3),
        ];
        assert_eq!(committed(&db).await, abc);

        // A held statement that fails at the commit fails the commit, and
        // the statements before it in the same script are rolled back.
        {
            let mut turn = db.begin_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("d", 4);
            tx.defer(sql, bind).await.unwrap();
            let (sql, bind) = insert("a", 5);
            tx.defer(sql, bind).await.unwrap();
            let failed = tx.commit().await;
            assert!(matches!(failed, Err(DbError::Conflict(_))), "{failed:?}");
        }
        assert_eq!(committed(&db).await, abc, "a failed commit kept a write");

        // A transaction dropped after its first round trip, with nothing
        // committed: the next turn rolls it back before its own.
        {
            let mut turn = db.begin_write().await;
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
            let mut turn = db.begin_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("f", 7);
            tx.defer(sql, bind).await.unwrap();
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
            let mut turn = db.begin_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let refused = tx
                .fetch_all("INSERT INTO t (k, v) VALUES ($1, $2)", |q| q.bind("g"))
                .await;
            assert!(refused.is_err(), "a short binding ran");
            assert!(tx.commit().await.is_err(), "a failed transaction committed");
        }
        assert_eq!(committed(&db).await, abcf);

        // Reads sent with the commit: each one's rows come back apart, in
        // order, the held statement runs before them, and all is committed.
        {
            let mut turn = db.begin_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("g", 8);
            tx.defer(sql, bind).await.unwrap();
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

        // A read that fails in the commit's script rolls the whole
        // transaction back.
        {
            let mut turn = db.begin_write().await;
            let mut tx = turn.transaction().await.unwrap();
            let (sql, bind) = insert("h", 9);
            tx.defer(sql, bind).await.unwrap();
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

    #[test]
    fn placeholders_are_shifted_outside_quotes_only() {
        let (sql, used) = shift_placeholders(
            "UPDATE t SET a = $1, b = '$2', \"$3\" = $12 WHERE c = $1",
            4,
        );
        assert_eq!(
            sql,
            "UPDATE t SET a = $5, b = '$2', \"$3\" = $16 WHERE c = $5"
        );
        assert_eq!(used, 12);
        assert_eq!(shift_placeholders("COMMIT", 3), ("COMMIT".to_owned(), 0));
        // Text around placeholders is copied whole, multi-byte characters
        // included, and a placeholder may end the text.
        assert_eq!(
            shift_placeholders("SELECT 'é$1' || $2 || ß$10", 2),
            ("SELECT 'é$1' || $4 || ß$12".to_owned(), 10)
        );
        assert_eq!(shift_placeholders("$", 1), ("$".to_owned(), 0));
        // An escaped quote ('') closes and reopens the literal.
        assert_eq!(
            shift_placeholders("SELECT 'it''s $1', $2", 1),
            ("SELECT 'it''s $1', $3".to_owned(), 2)
        );
    }
}
