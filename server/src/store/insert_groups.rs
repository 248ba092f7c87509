//! PostgreSQL: concurrent submissions of one run each, inserted together.
//!
//! Alone, each submission is an insert that commits itself: a statement's
//! fixed cost in the backend (its executor's setup, the queued count's
//! trigger's plan, the `NOTIFY` statement trigger, the commit) and a trip,
//! for each run. A submission that finds no group in flight starts one at
//! once; those that arrive while it is in flight wait for it and go in
//! the next, one multi-row insert that commits them together. An idle
//! server adds no wait: a lone submission is a group of one.
//!
//! The store's run submissions use it (`Db::submit_run` on PostgreSQL);
//! it knows only the statement's shape ([`RowsInsert`]).
//!
//! The groups run on a task of their own, so a caller that goes away (its
//! HTTP client hung up) cannot cut a group short for the others.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::Row;
use tokio::sync::oneshot;

use super::error::DbError;
use super::query::{Binder, built};

/// The most rows one insert takes: few enough statements' texts (one for
/// each size) for each connection's statement cache, and, at 23 values a
/// run, well within the protocol's 65,535 bound values.
const MAX_GROUP: usize = 64;

/// The shape of a multi-row insert that returns the ids it inserted.
pub(super) struct RowsInsert {
    /// The statement up to its rows: `INSERT INTO t (..) VALUES `.
    pub(super) into: &'static str,
    /// Appends row `n`'s values (from 0), its placeholders numbered after
    /// the rows before it.
    pub(super) row: fn(&mut String, usize),
    /// After the rows: a conflict clause, if any, and `RETURNING id`.
    pub(super) returning: &'static str,
}

/// One row to insert in a group.
pub(super) struct GroupRow {
    /// Its id, as the insert returns it.
    pub(super) id: String,
    /// Whether the conflict clause may skip it (a key another row holds).
    pub(super) may_skip: bool,
    /// Binds its values, as `RowsInsert::row` numbers them.
    pub(super) bind: Binder<'static>,
}

/// What became of one row in its group.
#[derive(Debug)]
pub(super) enum Grouped {
    /// Inserted and committed.
    Inserted,
    /// Not inserted: the conflict clause skipped it.
    Skipped,
    /// Its group of one failed with this error.
    Failed(DbError),
    /// Its group's insert failed as a whole (because of another row,
    /// perhaps), so none of the group was written: it is to be inserted
    /// alone, where what refuses it is its own answer.
    Alone,
}

/// One row waiting for its group.
struct Pending {
    row: GroupRow,
    answer: oneshot::Sender<Grouped>,
}

/// The rows waiting for the next group, and whether a group's task is
/// running (it takes them).
#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    draining: bool,
}

/// This process's groups of one insert's rows: see the module's comment.
/// Every row given to one `InsertGroups` is of the same [`RowsInsert`].
#[derive(Default)]
pub(super) struct InsertGroups {
    queue: Mutex<Queue>,
}

impl InsertGroups {
    /// Inserts `row`, as `shape` says, in the next group. `None`: the group
    /// was cut short (its task was dropped with its runtime), so whether
    /// the row was inserted is not known.
    pub(super) async fn insert(
        self: &Arc<Self>,
        pool: &sqlx::AnyPool,
        shape: &'static RowsInsert,
        row: GroupRow,
    ) -> Option<Grouped> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.waiting.push(Pending { row, answer });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            let groups = Arc::clone(self);
            let pool = pool.clone();
            tokio::spawn(async move { groups.drain(&pool, shape).await });
        }
        answered.await.ok()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts group after group until no row is waiting.
    async fn drain(&self, pool: &sqlx::AnyPool, shape: &RowsInsert) {
        let mut draining = Draining {
            groups: self,
            done: false,
        };
        loop {
            let group: Vec<Pending> = {
                let mut queue = self.queue();
                if queue.waiting.is_empty() {
                    queue.draining = false;
                    // Under the lock: a task started after it is let go
                    // is not this one's to stop.
                    draining.done = true;
                    return;
                }
                let take = queue.waiting.len().min(MAX_GROUP);
                queue.waiting.drain(..take).collect()
            };
            let (rows, answers): (Vec<GroupRow>, Vec<_>) =
                group.into_iter().map(|p| (p.row, p.answer)).unzip();
            for (answer, grouped) in answers
                .into_iter()
                .zip(insert_group(pool, shape, rows).await)
            {
                // A caller that went away needs no answer.
                let _ = answer.send(grouped);
            }
        }
    }
}

/// Lets the next row start a task again if the draining one ends any other
/// way than by finding nothing waiting (it panicked, or was dropped with
/// its runtime); the rows it had not taken are sent to be inserted alone,
/// as nothing of them was written.
struct Draining<'a> {
    groups: &'a InsertGroups,
    /// It found nothing waiting and let the queue go.
    done: bool,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut queue = self.groups.queue();
        queue.draining = false;
        for pending in queue.waiting.drain(..) {
            let _ = pending.answer.send(Grouped::Alone);
        }
    }
}

/// Inserts `rows` in one statement, committed by itself: what became of
/// each row, in order.
async fn insert_group(
    pool: &sqlx::AnyPool,
    shape: &RowsInsert,
    rows: Vec<GroupRow>,
) -> Vec<Grouped> {
    let mut sql = String::from(shape.into);
    for n in 0..rows.len() {
        (shape.row)(&mut sql, n);
    }
    sql.push_str(shape.returning);
    let mut query = sqlx::query(built(sql));
    let mut members = Vec::with_capacity(rows.len());
    for row in rows {
        query = (row.bind)(query);
        members.push((row.id, row.may_skip));
    }
    match query.fetch_all(pool).await {
        Ok(returned) => {
            let inserted: HashSet<String> = returned
                .iter()
                .filter_map(|row| row.try_get::<String, _>("id").ok())
                .collect();
            members
                .into_iter()
                .map(|(id, may_skip)| {
                    if inserted.contains(&id) {
                        Grouped::Inserted
                    } else if may_skip {
                        Grouped::Skipped
                    } else {
                        // Not inserted, and nothing to explain it: its own
                        // insert says why.
                        Grouped::Alone
                    }
                })
                .collect()
        }
        Err(e) if members.len() == 1 => vec![Grouped::Failed(e.into())],
        Err(_) => members.iter().map(|_| Grouped::Alone).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row waiting in `groups`, a task draining them: the row's answer.
    fn waiting_row(groups: &InsertGroups) -> oneshot::Receiver<Grouped> {
        let (answer, answered) = oneshot::channel();
        let mut queue = groups.queue();
        queue.draining = true;
        queue.waiting.push(Pending {
            row: GroupRow {
                id: "r".into(),
                may_skip: false,
                bind: Box::new(|q| q),
            },
            answer,
        });
        answered
    }

    /// A task that ends without emptying the queue (dropped with its
    /// runtime) hands back the rows it never took, and lets the next row
    /// start a task of its own.
    #[test]
    fn a_draining_task_cut_short_sends_what_it_did_not_take_to_be_inserted_alone() {
        let groups = InsertGroups::default();
        let mut answered = waiting_row(&groups);
        drop(Draining {
            groups: &groups,
            done: false,
        });
        assert!(matches!(answered.try_recv(), Ok(Grouped::Alone)));
        let queue = groups.queue();
        assert!(!queue.draining && queue.waiting.is_empty());
    }

    /// A task that found nothing waiting leaves alone the task started
    /// after it let the queue go, and the rows that one will take.
    #[test]
    fn a_draining_task_that_ended_leaves_the_next_ones_rows_to_it() {
        let groups = InsertGroups::default();
        let mut answered = waiting_row(&groups);
        drop(Draining {
            groups: &groups,
            done: true,
        });
        assert!(answered.try_recv().is_err(), "no answer yet");
        let queue = groups.queue();
        assert!(queue.draining && queue.waiting.len() == 1);
    }
}
