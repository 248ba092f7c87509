//! The writers' turn on SQLite, and group commit: writers that arrive
//! together share one transaction and one `COMMIT`.
//!
//! SQLite has one write lock per file, so this process's writers take
//! turns ([`Db::begin_write`], [`Db::join_write_group`]). A commit writes
//! every page its transaction changed to the WAL, and the runs of a burst
//! change the same few pages (their tenant's row, the last leaf of `runs`
//! and of each of its indexes), so each of a burst's commits wrote them
//! again; and every 1,000 WAL pages a checkpoint syncs the file.
//!
//! So a writer that finds other writers waiting for their turn opens a
//! *group*: `BEGIN IMMEDIATE` on a pooled connection. Each writer whose
//! turn comes while the group is open does its work in a `SAVEPOINT` of the
//! group's transaction (an error rolls back its own work only), passes the
//! turn on, and queues for it again ([`GroupTurn::committed`]). The first
//! member back commits the group: by then every writer that was queued
//! behind it has added its work. A group is as large as the queue of
//! writers, and closes when that queue has drained. A writer that finds
//! nobody waiting runs alone, a transaction of its own, as before groups:
//! a lone request pays no savepoint and waits for no one.
//!
//! What a 2xx means does not change: a member answers only once
//! [`GroupTurn::committed`] has returned the group's `COMMIT` (under
//! `synchronous = NORMAL`, in the WAL file when it returns: it survives a
//! crash of the process).
//!
//! PostgreSQL has no turn and no groups: its row locks let writers
//! overlap, and a shared transaction would hold all of their locks until
//! the last member is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Acquire, AnyConnection, Connection};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::db::{Db, DbError};

/// How long a member waits for its group's `COMMIT` before it checks
/// that someone is still going to commit it.
const GROUP_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// The writers of one SQLite database in this process.
pub(super) struct Writers {
    turn: Arc<Mutex<SharedWriter>>,
    /// Group members waiting for their turn to begin ([`Db::join_write_group`]):
    /// a member that finds one opens a group rather than running alone.
    waiting: AtomicUsize,
}

impl Writers {
    /// `shared`: a SQLite file, whose writers share connections. An
    /// in-memory database is its pool's one connection: its writers take a
    /// turn and then that connection, alone.
    pub(super) fn new(shared: bool) -> Arc<Writers> {
        Arc::new(Writers {
            turn: Arc::new(Mutex::new(SharedWriter {
                shared,
                ..SharedWriter::default()
            })),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Commits the open group, if any, then closes the connection of the
    /// writers that run alone ([`Db::close`]).
    pub(super) async fn close(&self) {
        let mut writer = self.turn.lock().await;
        writer.close_group().await;
        if let Some(conn) = writer.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// What a writer's turn holds.
#[derive(Default)]
struct SharedWriter {
    /// Whether writers share connections at all (see [`Writers::new`]).
    shared: bool,
    /// The connection writers that run alone share: kept out of the pool,
    /// it is not pinged each time it is given back, a round trip to its
    /// driver thread per write transaction. Taken from the pool at the
    /// first write.
    conn: Option<AnyConnection>,
    /// Its last `BEGIN` failed (its driver thread gone, say): replaced at
    /// the next turn.
    broken: bool,
    /// The group open now, if any.
    group: Option<OpenGroup>,
    /// The last group's number.
    groups: u64,
}

/// A group's transaction, open until its first member comes back for it.
struct OpenGroup {
    /// On a pooled connection, owned: a member's savepoint borrows it
    /// during its turn, and the group outlives every turn.
    tx: sqlx::Transaction<'static, sqlx::Any>,
    number: u64,
    /// The savepoints begun in it: its members, those rolled back included.
    members: usize,
    /// How its `COMMIT` went, once it has: each member waits for it.
    done: watch::Sender<Option<Result<(), GroupFailed>>>,
}

/// Why a group did not commit, as each of its members reports it.
#[derive(Debug, Clone)]
struct GroupFailed {
    unavailable: bool,
    message: String,
}

impl GroupFailed {
    fn new(e: DbError) -> GroupFailed {
        GroupFailed {
            unavailable: matches!(e, DbError::Unavailable(_)),
            message: e.to_string(),
        }
    }

    fn to_error(&self) -> DbError {
        let cause = format!("a group commit failed: {}", self.message).into();
        if self.unavailable {
            DbError::Unavailable(cause)
        } else {
            DbError::Other(cause)
        }
    }
}

impl OpenGroup {
    async fn commit(self) {
        tracing::debug!(members = self.members, "a group of writers commits");
        let done = self
            .tx
            .commit()
            .await
            .map_err(|e| GroupFailed::new(e.into()));
        self.done.send_replace(Some(done));
    }
}

impl SharedWriter {
    /// Commits the open group, if any, and tells its members how that
    /// went. A caller dropped during the `COMMIT` (a client gone) leaves
    /// the members an error, never a false success.
    async fn close_group(&mut self) {
        if let Some(group) = self.group.take() {
            group.commit().await;
        }
    }

    /// A transaction of its own on the connection writers share.
    async fn begin_alone(
        &mut self,
        pool: &sqlx::AnyPool,
    ) -> Result<sqlx::Transaction<'_, sqlx::Any>, DbError> {
        if self.broken || self.conn.is_none() {
            // A closed pool refuses this, so a closed `Db` stays closed.
            self.conn = Some(pool.acquire().await?.detach());
            self.broken = false;
        }
        let SharedWriter { conn, broken, .. } = self;
        let conn = conn
            .as_mut()
            .ok_or_else(|| DbError::other("the writers' connection is missing"))?;
        match Connection::begin(conn).await {
            Ok(tx) => Ok(tx),
            Err(e) => {
                *broken = true;
                Err(e.into())
            }
        }
    }
}

/// A writer's turn on its own ([`Db::begin_write`]): held until its
/// transaction ends, which commits alone.
pub(super) struct WriterTurn {
    held: Option<OwnedMutexGuard<SharedWriter>>,
    pool: sqlx::AnyPool,
}

impl WriterTurn {
    /// A transaction on the writers' shared connection, or on a pooled
    /// one. Bind the turn before the transaction (`let mut turn = ...;
    /// let mut tx = turn.begin().await?;`) so that it is dropped after
    /// it: the turn passes on once the transaction has committed or rolled
    /// back (a transaction dropped unfinished queues its rollback on the
    /// connection, ahead of the next writer's statements).
    pub(super) async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Any>, DbError> {
        match self.held.as_deref_mut().filter(|w| w.shared) {
            Some(writer) => writer.begin_alone(&self.pool).await,
            None => Ok(self.pool.begin().await?),
        }
    }
}

/// A group member's turn ([`Db::join_write_group`]). Used as a
/// [`WriterTurn`] is, and then [`GroupTurn::committed`] before the
/// writer answers anyone.
pub(super) struct GroupTurn {
    held: Option<OwnedMutexGuard<SharedWriter>>,
    pool: sqlx::AnyPool,
    writers: Option<Arc<Writers>>,
    /// Nobody was waiting when this turn came: no group to open.
    alone: bool,
    /// The group this writer's work went into.
    joined: Option<Joined>,
}

struct Joined {
    number: u64,
    done: watch::Receiver<Option<Result<(), GroupFailed>>>,
}

impl GroupTurn {
    /// A savepoint in the open group's transaction (opening the group if
    /// others wait for their turn), or a transaction of its own as
    /// [`WriterTurn::begin`] gives. Bound as that one is.
    pub(super) async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Any>, DbError> {
        let GroupTurn {
            held,
            pool,
            alone,
            joined,
            ..
        } = self;
        let Some(writer) = held.as_deref_mut().filter(|w| w.shared) else {
            return Ok(pool.begin().await?);
        };
        if writer.group.is_none() {
            if *alone {
                return writer.begin_alone(pool).await;
            }
            // `IMMEDIATE`: the write lock from the start, so no member's
            // first write can find it taken by another process.
            let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            writer.groups += 1;
            writer.group = Some(OpenGroup {
                tx,
                number: writer.groups,
                members: 0,
                done: watch::Sender::new(None),
            });
        }
        let group = writer
            .group
            .as_mut()
            .ok_or_else(|| DbError::other("the writers' group is missing"))?;
        group.members += 1;
        *joined = Some(Joined {
            number: group.number,
            done: group.done.subscribe(),
        });
        // A savepoint failing means the group's connection failed: its
        // `COMMIT` will say so to every member.
        Ok(Acquire::begin(&mut group.tx).await?)
    }

    /// Waits until the work of this turn's committed transaction is
    /// committed: at once for a transaction of its own; for a group
    /// member, once the group's `COMMIT` has returned, whose error, if
    /// any, is this writer's too. Call it after the transaction's commit
    /// or rollback, before answering.
    ///
    /// The member that finds nobody waiting for a turn is the last of its
    /// burst and commits the group; the others pass the turn on and wait.
    pub(super) async fn committed(mut self) -> Result<(), DbError> {
        let Some(mut joined) = self.joined.take() else {
            return Ok(());
        };
        if let (Some(writer), Some(writers)) = (self.held.as_deref_mut(), &self.writers)
            && writers.waiting.load(Ordering::Acquire) == 0
            && writer.group.as_ref().map(|g| g.number) == Some(joined.number)
        {
            writer.close_group().await;
        }
        drop(self.held.take());
        loop {
            // Owned before any other await: the channel's read guard
            // must not be held across one.
            let done = joined.done.wait_for(Option::is_some);
            let waited = tokio::time::timeout(GROUP_WAIT, done)
                .await
                .map(|done| done.map(|d| d.as_ref().and_then(|d| d.as_ref().err().cloned())));
            match waited {
                Ok(failed) => {
                    let failed =
                        failed.map_err(|_| DbError::other("a group commit was interrupted"))?;
                    return match failed {
                        Some(failed) => Err(failed.to_error()),
                        None => Ok(()),
                    };
                }
                // The writers that were waiting behind this one went away
                // (their callers dropped) before their turn: nobody else
                // will commit the group.
                Err(_) => {
                    if let Some(writers) = &self.writers {
                        let mut writer = writers.turn.clone().lock_owned().await;
                        if writer.group.as_ref().map(|g| g.number) == Some(joined.number) {
                            writer.close_group().await;
                        }
                    }
                }
            }
        }
    }
}

impl Drop for GroupTurn {
    /// A member that did not wait for its group (an error, or a caller gone)
    /// must not leave it open, holding the write lock, until the next
    /// writer comes: a task commits it once the turn is free.
    fn drop(&mut self) {
        let Some(joined) = self.joined.take() else {
            return;
        };
        let committed = joined.done.borrow().is_some();
        if committed {
            return;
        }
        let (Some(writers), Ok(runtime)) =
            (self.writers.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let mut writer = writers.turn.clone().lock_owned().await;
            if writer.group.as_ref().map(|g| g.number) == Some(joined.number) {
                writer.close_group().await;
            }
        });
    }
}

/// Counts a member waiting for its turn, until it has it or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Db {
    /// This process's writer turn on SQLite, nothing to wait for on
    /// PostgreSQL, whose row locks need no turn; then [`WriterTurn::begin`]
    /// for a transaction that commits alone. An open group is committed
    /// first. A write outside a transaction (one statement that commits on
    /// its own, on a pooled connection) holds the turn alone. A write
    /// transaction never waits for another turn while it holds one.
    pub(super) async fn begin_write(&self) -> WriterTurn {
        let held = match &self.writer {
            Some(writers) => {
                let mut writer = writers.turn.clone().lock_owned().await;
                writer.close_group().await;
                Some(writer)
            }
            None => None,
        };
        WriterTurn {
            held,
            pool: self.pool.clone(),
        }
    }

    /// A writer's turn as a member of the open group, or of a new one if
    /// others are waiting (see the module's documentation): the hot paths
    /// (submit, claim, finish, log lines), whose writers come in bursts.
    /// Then [`GroupTurn::begin`] and, once its transaction has committed,
    /// [`GroupTurn::committed`].
    pub(super) async fn join_write_group(&self) -> GroupTurn {
        let Some(writers) = &self.writer else {
            return GroupTurn {
                held: None,
                pool: self.pool.clone(),
                writers: None,
                alone: true,
                joined: None,
            };
        };
        writers.waiting.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(&writers.waiting);
        let held = writers.turn.clone().lock_owned().await;
        drop(waiting);
        GroupTurn {
            held: Some(held),
            pool: self.pool.clone(),
            writers: Some(writers.clone()),
            alone: writers.waiting.load(Ordering::Acquire) == 0,
            joined: None,
        }
    }
}
