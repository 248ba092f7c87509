//! This process's SQLite writers: their turn, the connections they
//! share, and group commit.
//!
//! SQLite has one write lock per file, and a connection that finds it
//! taken sleeps in its busy handler (1, 2, 5, 10 ms and up) however soon
//! the lock is released. So this process's writers take turns on a mutex
//! ([`WriterTurn::join`], [`WriterTurn::alone`]) before they begin, and
//! the next starts the moment the last one is done. The busy handler still
//! settles contention with other processes.
//!
//! The turn holds the connections the writers share (a file database):
//! the one called in place that [`WriteTx`](super::write_tx::WriteTx) runs
//! on, and sqlx's for the transactions of sqlx's own
//! ([`WriterTurn::begin`]), kept out of the pool so that it is not pinged
//! each time it is given back.
//!
//! **Group commit.** A write transaction in place costs about its commit
//! (the log's pages written), so when other writers are waiting for the
//! turn, one that ends does not commit: it leaves its work in the
//! writer's open transaction (a *group*), passes the turn on, and answers
//! once the group has committed. The next writer runs in a `SAVEPOINT` of
//! the group, so a refusal or failure undoes only its own work; the writer
//! that ends with nobody waiting (or the group full) commits every
//! member's work at once and tells them. No member answers before that
//! commit, so what an answer promises (a 2xx is stored) is unchanged; it
//! only waits for the writers behind it, at most [`GROUP_MAX`] of them.
//! A writer that does not run in place (sqlx's transactions, a write on a
//! pooled connection) commits the open group first, since the group holds
//! the file's write lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::error::DbError;
use super::lite::{LiteConn, LiteError, Ran};

/// Members of one group at most: what its first member may wait for.
const GROUP_MAX: usize = 32;

/// How long a member waits for its group's commit before it takes the
/// turn and commits the group itself. The writer that the group was left
/// open for may have stopped waiting (its request dropped) before its
/// turn came, and then nobody else would. A turn is tens of
/// microseconds, so this is reached only then.
const GROUP_WAIT: Duration = Duration::from_millis(20);

/// A member's work runs in a savepoint: opened, kept, and undone. Fixed
/// texts, since they run for every member of every group.
const MEMBER_BEGIN: &str = "SAVEPOINT member";
const MEMBER_KEEP: &str = "RELEASE member";
const MEMBER_UNDO: &str = "ROLLBACK TO member; RELEASE member";

/// How a group's commit went, `None` until then. The error is a message:
/// every member gets it.
type Outcome = Option<Result<(), Arc<str>>>;

/// Write transactions ended but not yet committed, in the writer's open
/// transaction.
struct Group {
    id: u64,
    members: usize,
    done: watch::Sender<Outcome>,
}

/// The writers of a SQLite database: the turn, and how many wait for it.
#[derive(Clone)]
pub(super) struct Writers {
    turn: Arc<Mutex<SharedWriter>>,
    /// Writers waiting for the turn: one that ends leaves its work to a
    /// group only if some other will come after it.
    waiting: Arc<AtomicUsize>,
}

/// The connections SQLite writers share, held by their turn.
#[derive(Default)]
pub(super) struct SharedWriter {
    /// The database file, where writers share connections at all. An
    /// in-memory database is its pool's one connection, so its writers
    /// take a turn and then that connection.
    path: Option<PathBuf>,
    /// sqlx's connection, for transactions that run sqlx's statements
    /// ([`WriterTurn::begin`]). Taken from the pool at its first use.
    conn: Option<AnyConnection>,
    /// Its last `BEGIN` failed (its driver thread gone, say): replaced at
    /// the next turn.
    broken: bool,
    /// The connection called in place, for [`WriteTx`](super::write_tx::WriteTx)'s
    /// transactions. Opened at its first use.
    lite: Option<LiteConn>,
    /// The group open on `lite`, if any.
    group: Option<Group>,
    /// Groups opened so far: each one's id.
    groups: u64,
    /// The turn's holder is a member of the group, its savepoint open.
    member: bool,
    /// [`Db::close`](super::Db::close) ran: nothing is opened again.
    closed: bool,
}

impl Writers {
    pub(super) fn new(path: Option<PathBuf>) -> Self {
        Writers {
            turn: Arc::new(Mutex::new(SharedWriter {
                path,
                ..SharedWriter::default()
            })),
            waiting: Arc::default(),
        }
    }

    /// The turn, counted as waiting until it is held (or the wait given
    /// up).
    async fn take(&self) -> OwnedMutexGuard<SharedWriter> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        self.turn.clone().lock_owned().await
    }

    fn others_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Commits the open group, then closes the shared connections for
    /// good.
    pub(super) async fn close(&self) {
        let mut writer = self.take().await;
        writer.settle();
        writer.closed = true;
        writer.lite = None;
        let conn = writer.conn.take();
        drop(writer);
        if let Some(conn) = conn {
            let _ = conn.close().await;
        }
    }
}

impl SharedWriter {
    /// Ready for a transaction of sqlx's: the open group committed and
    /// what the last holder left rolled back, as they hold the file's
    /// write lock; and sqlx's connection replaced if it is broken or
    /// missing.
    async fn ready(&mut self, pool: &sqlx::AnyPool) -> Result<(), DbError> {
        self.settle();
        if self.broken || self.conn.is_none() {
            // A closed pool refuses this, so a closed `Db` stays closed.
            self.conn = Some(pool.acquire().await?.detach());
            self.broken = false;
        }
        Ok(())
    }

    /// Nothing left open on the connection in place: what the last holder
    /// left undone, then the open group committed.
    fn settle(&mut self) {
        self.roll_back_lite();
        self.commit_group();
    }

    /// Undoes what the turn's holder left unfinished in place: a member's
    /// work back to its savepoint, or a transaction of its own whole. The
    /// group stays open.
    pub(super) fn roll_back_lite(&mut self) {
        let Some(lite) = self.lite.as_mut() else {
            self.fail_group("the connection in place was closed");
            return;
        };
        if std::mem::take(&mut self.member)
            && lite.control(MEMBER_UNDO).is_err()
            && lite.in_transaction()
        {
            // Closing it rolls back whatever it held, the group too.
            self.lite = None;
            self.fail_group("a member's work could not be undone alone");
            return;
        }
        if !lite.in_transaction() {
            // SQLite rolls a transaction back whole on some errors (a full
            // disk, an I/O error): the group's work with it.
            self.fail_group("the group's transaction was rolled back after an error");
        } else if self.group.is_none() && lite.control("ROLLBACK").is_err() {
            self.lite = None;
        }
    }

    /// Commits the open group, if any, and tells its members how it went.
    fn commit_group(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        let outcome = match self.lite.as_mut() {
            Some(lite) if lite.in_transaction() => lite
                .commit(group.members)
                .map_err(|e| Arc::from(e.to_string())),
            _ => Err(Arc::from("the group's transaction was lost")),
        };
        if outcome.is_err()
            && let Some(lite) = self.lite.as_mut()
            && lite.in_transaction()
            && lite.control("ROLLBACK").is_err()
        {
            self.lite = None;
        }
        group.done.send_replace(Some(outcome));
    }

    /// Tells the open group's members that their work is gone.
    fn fail_group(&mut self, why: &str) {
        if let Some(group) = self.group.take() {
            group.done.send_replace(Some(Err(Arc::from(why))));
        }
    }

    /// The connection in place, opened if it was not yet.
    fn lite(&mut self) -> Result<&mut LiteConn, LiteError> {
        let path = self.path.as_deref().ok_or(LiteError::Closed)?;
        if self.closed {
            return Err(LiteError::Closed);
        }
        if self.lite.is_none() {
            self.lite = Some(LiteConn::open_writer(path)?);
        }
        self.lite.as_mut().ok_or(LiteError::Closed)
    }

    /// Begins a write transaction in place: a member's savepoint in the
    /// open group, else a transaction of its own. `BEGIN IMMEDIATE`: the
    /// write lock from the start, so what the transaction reads is what it
    /// writes over, even against another process on the same file.
    pub(super) fn begin_in_place(&mut self) -> Result<(), LiteError> {
        let in_group = self.group.is_some();
        let lite = self.lite()?;
        if in_group {
            lite.control(MEMBER_BEGIN)?;
            self.member = true;
        } else {
            lite.control("BEGIN IMMEDIATE")?;
        }
        Ok(())
    }

    /// Runs one statement of the begun transaction.
    pub(super) fn run_in_place(
        &mut self,
        sql: &str,
        arguments: &sqlx::any::AnyArguments,
    ) -> Result<Ran, LiteError> {
        self.lite()?.run(sql, arguments)
    }

    /// Ends the begun transaction: commits it now if nobody waits for the
    /// turn, else leaves it to the group and returns the wait for the
    /// group's commit, which comes once the turn has passed on.
    fn end_in_place(&mut self, others_waiting: bool) -> Result<Option<GroupWait>, LiteError> {
        if self.member {
            self.lite()?.control(MEMBER_KEEP)?;
            self.member = false;
        } else if !others_waiting {
            return self.lite()?.commit(1).map(|()| None);
        }
        let groups = &mut self.groups;
        let group = self.group.get_or_insert_with(|| {
            *groups += 1;
            Group {
                id: *groups,
                members: 0,
                done: watch::Sender::new(None),
            }
        });
        group.members += 1;
        let wait = GroupWait {
            id: group.id,
            done: group.done.subscribe(),
        };
        if !others_waiting || group.members >= GROUP_MAX {
            self.commit_group();
        }
        Ok(Some(wait))
    }
}

/// A member's wait for its group's commit.
pub(super) struct GroupWait {
    id: u64,
    done: watch::Receiver<Outcome>,
}

impl GroupWait {
    /// Waits for the group's commit; past [`GROUP_WAIT`], takes the turn
    /// and commits the group itself if it is still open.
    pub(super) async fn wait(mut self, writers: &Writers) -> Result<(), DbError> {
        let outcome = match tokio::time::timeout(GROUP_WAIT, self.outcome()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let mut writer = writers.take().await;
                if writer.group.as_ref().is_some_and(|g| g.id == self.id) {
                    writer.settle();
                }
                drop(writer);
                self.outcome().await
            }
        };
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(DbError::other(format!(
                "this write was not committed: {why}"
            ))),
            None => Err(LiteError::Closed.into()),
        }
    }

    /// The outcome once it is known; `None` if the group was dropped
    /// unknown (its connection closed).
    async fn outcome(&mut self) -> Outcome {
        match self.done.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        }
    }
}

/// A writer's turn ([`WriterTurn::join`], [`WriterTurn::alone`]): held until
/// the transaction ends. Dropped, it undoes what its holder left
/// unfinished in place, and commits the open group if nobody waits to
/// join it.
pub(super) struct WriterTurn {
    held: Option<OwnedMutexGuard<SharedWriter>>,
    writers: Option<Writers>,
    pool: sqlx::AnyPool,
}

impl WriterTurn {
    /// This process's writer turn on SQLite (see the module's comment),
    /// nothing to wait for on PostgreSQL (no `writers`), whose row locks
    /// need no turn. The turn a [`WriteTx`](super::write_tx::WriteTx)
    /// takes ([`WriterTurn::transaction`]): it joins the open group.
    pub(super) async fn join(writers: Option<&Writers>, pool: &sqlx::AnyPool) -> WriterTurn {
        WriterTurn {
            held: match writers {
                Some(writers) => Some(writers.take().await),
                None => None,
            },
            writers: writers.cloned(),
            pool: pool.clone(),
        }
    }

    /// [`WriterTurn::join`] for a write that may not run in place: a
    /// transaction of sqlx's ([`WriterTurn::begin`]) or a statement that
    /// commits on its own on a pooled connection. The open group is
    /// committed first, since it holds the file's write lock. A write
    /// transaction never waits for another turn while it holds one.
    pub(super) async fn alone(writers: Option<&Writers>, pool: &sqlx::AnyPool) -> WriterTurn {
        let mut turn = WriterTurn::join(writers, pool).await;
        if let Some(writer) = turn.held.as_deref_mut() {
            writer.settle();
        }
        turn
    }

    /// A transaction on the writers' shared connection, or on a pooled
    /// one. Bind the turn before the transaction (`let mut turn = ...;
    /// let mut tx = turn.begin().await?;`) so that it is dropped after
    /// it: the turn passes on once the transaction has committed or rolled
    /// back (a transaction dropped unfinished queues its rollback on the
    /// connection, ahead of the next writer's statements).
    pub(super) async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Any>, DbError> {
        let Some(writer) = self.held.as_deref_mut().filter(|w| w.path.is_some()) else {
            return Ok(self.pool.begin().await?);
        };
        writer.ready(&self.pool).await?;
        let SharedWriter { conn, broken, .. } = writer;
        let conn = conn
            .as_mut()
            .ok_or_else(|| DbError::other("the writers' connection is missing"))?;
        match conn.begin().await {
            Ok(tx) => Ok(tx),
            Err(e) => {
                *broken = true;
                Err(e.into())
            }
        }
    }

    /// The writers' state, where they share a connection in place (a
    /// SQLite file) and the turn is still held.
    pub(super) fn in_place(&mut self) -> Option<&mut SharedWriter> {
        self.held.as_deref_mut().filter(|w| w.path.is_some())
    }

    /// The pool, for a turn with no shared connection.
    pub(super) fn pool(&self) -> &sqlx::AnyPool {
        &self.pool
    }

    /// Ends the begun transaction in place ([`SharedWriter::end_in_place`]).
    /// If it was left to a group, passes the turn on and waits for the
    /// group's commit.
    pub(super) async fn end_in_place(&mut self) -> Result<(), DbError> {
        let others_waiting = self.writers.as_ref().is_some_and(Writers::others_waiting);
        let writer = self
            .in_place()
            .ok_or_else(|| DbError::other("the writers' turn was passed on"))?;
        let Some(wait) = writer.end_in_place(others_waiting)? else {
            return Ok(());
        };
        // The writers waiting for the turn join the group before it
        // commits.
        drop(self.held.take());
        match &self.writers {
            Some(writers) => wait.wait(writers).await,
            None => Err(DbError::other("a group without writers")),
        }
    }
}

impl Drop for WriterTurn {
    fn drop(&mut self) {
        if let Some(writer) = self.held.as_deref_mut() {
            writer.roll_back_lite();
            if !self.writers.as_ref().is_some_and(Writers::others_waiting) {
                writer.commit_group();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use sqlx::Row;

    use crate::store::{Db, DbError};

    /// A fresh SQLite file (kept while the directory is) with table `t`.
    async fn table_t() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::connect(&url, 4).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&db.pool)
            .await
            .unwrap();
        (dir, db)
    }

    /// A fresh table `t` (as `db`) and the turn (as `turn`), holding a
    /// transaction (as `tx`) that inserted `a` and has not ended.
    macro_rules! holding_a {
        ($db:ident, $turn:ident, $tx:ident) => {
            let (_dir, $db) = table_t().await;
            let mut $turn = $db.join_write().await;
            let mut $tx = $turn.transaction().await.unwrap();
            $tx.execute("INSERT INTO t (k) VALUES ('a')", |q| q)
                .await
                .unwrap();
        };
    }

    /// Keys of `t` as another connection sees them: what is committed.
    async fn committed(db: &Db) -> Vec<String> {
        sqlx::query("SELECT k FROM t ORDER BY k")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get("k"))
            .collect()
    }

    /// Inserts `k` in a write transaction of its own.
    async fn insert(db: &Db, k: &'static str) -> Result<(), DbError> {
        let mut turn = db.join_write().await;
        let mut tx = turn.transaction().await?;
        tx.execute("INSERT INTO t (k) VALUES ($1)", move |q| q.bind(k))
            .await?;
        tx.commit().await
    }

    /// [`insert`] on a task of its own.
    fn spawn_insert(db: &Db, k: &'static str) -> tokio::task::JoinHandle<Result<(), DbError>> {
        let db = db.clone();
        tokio::spawn(async move { insert(&db, k).await })
    }

    /// Waits until `n` writers wait for the turn.
    async fn until_waiting(db: &Db, n: usize) {
        let writers = db.writer.as_ref().unwrap();
        while writers.waiting.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn groups(db: &Db) -> u64 {
        db.writer.as_ref().unwrap().turn.try_lock().unwrap().groups
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_that_end_while_others_wait_commit_as_one_group() {
        let (_dir, db) = table_t().await;
        // One holds the turn while three queue behind it.
        let mut turn = db.join_write().await;
        let mut tx = turn.transaction().await.unwrap();
        tx.execute("INSERT INTO t (k) VALUES ('a')", |q| q)
            .await
            .unwrap();
        let behind: Vec<_> = ["b", "c", "d"]
            .into_iter()
            .map(|k| spawn_insert(&db, k))
            .collect();
        until_waiting(&db, 3).await;
        // Each answers only once its work is committed, and all of it is.
        tx.commit().await.unwrap();
        drop(turn);
        assert!(committed(&db).await.contains(&"a".to_owned()));
        for writer in behind {
            writer.await.unwrap().unwrap();
        }
        assert_eq!(committed(&db).await, ["a", "b", "c", "d"]);
        // The first left its work to a group, which the last committed.
        assert_eq!(groups(&db), 1);
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_fails_or_is_dropped_undoes_only_its_own_work() {
        holding_a!(db, turn, tx);
        // Behind it, in order: a duplicate of `a` (refused), one dropped
        // after its statement, and `c`.
        let duplicate = spawn_insert(&db, "a");
        until_waiting(&db, 1).await;
        let dropped = tokio::spawn({
            let db = db.clone();
            async move {
                let mut turn = db.join_write().await;
                let mut tx = turn.transaction().await.unwrap();
                tx.execute("INSERT INTO t (k) VALUES ('b')", |q| q)
                    .await
                    .unwrap();
            }
        });
        until_waiting(&db, 2).await;
        let last = spawn_insert(&db, "c");
        until_waiting(&db, 3).await;
        tx.commit().await.unwrap();
        drop(turn);

        let refused = duplicate.await.unwrap().unwrap_err();
        assert!(matches!(refused, DbError::Conflict(_)), "{refused}");
        dropped.await.unwrap();
        last.await.unwrap().unwrap();
        assert_eq!(committed(&db).await, ["a", "c"]);
        assert_eq!(groups(&db), 1);
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_cannot_join_commits_the_open_group_first() {
        holding_a!(db, turn, tx);
        // Behind it, a write on a pooled connection: the group's open
        // transaction would leave it busy for its whole timeout.
        let pooled = tokio::spawn({
            let db = db.clone();
            async move {
                let _turn = db.begin_write().await;
                sqlx::query("INSERT INTO t (k) VALUES ('b')")
                    .execute(&db.pool)
                    .await
                    .map(|_| ())
            }
        });
        until_waiting(&db, 1).await;
        tx.commit().await.unwrap();
        drop(turn);
        pooled.await.unwrap().unwrap();
        assert_eq!(committed(&db).await, ["a", "b"]);
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_its_next_holder_leaves_open_is_committed_by_its_member() {
        holding_a!(db, turn, tx);
        // The next holder takes the turn and lets it go without ending
        // the group (as a writer that stopped waiting just as the turn
        // came to it): nobody is left to commit it but its member.
        let writers = db.writer.clone().unwrap();
        let next = tokio::spawn(async move {
            let held = writers.take().await;
            tokio::time::sleep(super::GROUP_WAIT * 2).await;
            drop(held);
        });
        until_waiting(&db, 1).await;
        tokio::time::timeout(Duration::from_secs(5), tx.commit())
            .await
            .expect("the member committed its group itself")
            .unwrap();
        drop(turn);
        next.await.unwrap();
        assert_eq!(committed(&db).await, ["a"]);
        db.close().await;
    }
}
