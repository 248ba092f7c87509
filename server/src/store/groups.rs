//! PostgreSQL: concurrent callers' rows of one statement, written (or
//! read) together.
//!
//! Alone, each caller's row is a statement that commits itself: a
//! statement's fixed cost in the backend (its executor's setup, its
//! triggers' plans, the commit), a trip, and the ping sqlx sends as the
//! connection goes back to the pool, for each row. A row that finds no
//! group in flight starts one at once; those that arrive while it is in
//! flight wait for it and go in the next, one multi-row statement that
//! commits them together. An idle server adds no wait: a lone row is a
//! group of one.
//!
//! The store groups three statements this way, each in a [`Groups`] of its
//! own: the submissions' insert (`Db::submit_run`), a worker's finishes of
//! runs that are no workflow step's (`Db::finish_and_claim`), and the read
//! that admits a submission (`Db::resolve_module_and_grants`). It knows
//! only a statement's shape ([`RowsStatement`]).
//!
//! The groups run on a task of their own, so a caller that goes away (its
//! HTTP client hung up) cannot cut a group short for the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::oneshot;

use super::error::DbError;
use super::held::HeldConnection;
use super::query::{AnyQuery, Binder, built};

/// The shape of a statement over several rows that returns a row for each
/// of its rows it wrote (or found), its `id` column the row's id: a
/// multi-row insert, say, or a read of several keys.
pub(super) struct RowsStatement {
    /// Its text, and how its rows' values are bound to it.
    pub(super) text: RowsText,
    /// The most rows one statement takes: within the protocol's 65,535
    /// bound values, or a JSON array a backend reads at once.
    pub(super) max: usize,
}

/// How a [`RowsStatement`]'s rows are written into it.
pub(super) enum RowsText {
    /// A text for each group's size, few enough (`max` at most) for each
    /// connection's statement cache; each row's values bound to
    /// placeholders of its own ([`RowValues::Bound`]).
    Values(ValuesText),
    /// One text for every group's size, its rows bound to `$1` as one JSON
    /// array, an element a row ([`RowValues::Json`]). PostgreSQL plans a
    /// text the first times each connection runs it, and a statement with
    /// several updates plans slowly: with a text for each size, a worker's
    /// finishes were planned about every other time (BENCHMARKS.md).
    Json(&'static str),
}

/// A multi-row statement's text, for any number of rows: a group's
/// ([`RowsText::Values`]), or a batch's written outside the groups.
pub(super) struct ValuesText {
    /// The statement up to its rows, such as `INSERT INTO t (..) VALUES `.
    pub(super) head: &'static str,
    /// Appends row `n`'s values (from 0), its placeholders numbered
    /// after the rows before it.
    pub(super) row: fn(&mut String, usize),
    /// After the rows, ending with a `RETURNING id` or a `SELECT` of
    /// the ids written.
    pub(super) tail: &'static str,
}

impl ValuesText {
    /// The text for `rows` rows, their placeholders numbered in order.
    pub(super) fn sql(&self, rows: usize) -> String {
        let mut sql = String::from(self.head);
        for n in 0..rows {
            (self.row)(&mut sql, n);
        }
        sql.push_str(self.tail);
        sql
    }
}

/// One row's values, as its statement's [`RowsText`] takes them.
pub(super) enum RowValues {
    /// Bound to the row's own placeholders ([`RowsText::Values`]).
    Bound(Binder<'static>),
    /// The row's element of the JSON array ([`RowsText::Json`]).
    Json(serde_json::Value),
}

/// One row to write in a group.
pub(super) struct GroupRow {
    /// Its id, as the statement returns it.
    pub(super) id: String,
    /// Whether the statement may leave it out and be right (a conflict
    /// clause that skips a key another row holds, an update whose
    /// condition no longer holds).
    pub(super) may_skip: bool,
    /// Its values, as the statement's [`RowsText`] takes them.
    pub(super) values: RowValues,
}

/// What became of one row in its group.
pub(super) enum Grouped {
    /// Written and committed, or found by a read: the row the statement
    /// returned for it.
    Returned(AnyRow),
    /// Not written, as it may be: the statement left it out.
    Skipped,
    /// Its group of one failed with this error.
    Failed(DbError),
    /// Its group's statement failed as a whole (because of another row,
    /// perhaps), so none of the group was written: it is to be written
    /// alone, where what refuses it is its own answer.
    Alone,
}

/// One row waiting for its group.
struct Pending {
    row: GroupRow,
    answer: oneshot::Sender<Grouped>,
}

/// The rows waiting for the next group, and how many of the statement's
/// writes are in flight: groups' tasks (each takes the next group when its
/// statement is done) and callers' statements of their own ([`Turn`]).
#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    in_flight: usize,
}

impl Queue {
    /// Counts a new group's task in flight when rows wait and fewer than
    /// `limit` writes are in flight: whether to start it.
    fn start(&mut self, limit: usize) -> bool {
        let start = !self.waiting.is_empty() && self.in_flight < limit;
        if start {
            self.in_flight += 1;
        }
        start
    }

    /// One write in flight ended without taking what waits (it was cut
    /// short). The last one out sends the waiting rows to be written
    /// alone, as nothing of them was written: no task is left to take
    /// them.
    fn let_go(&mut self) {
        self.in_flight -= 1;
        if self.in_flight == 0 {
            for pending in self.waiting.drain(..) {
                let _ = pending.answer.send(Grouped::Alone);
            }
        }
    }
}

/// This process's groups of one statement's rows: see the module's
/// comment. Every row given to one `Groups` is of the same
/// [`RowsStatement`].
pub(super) struct Groups {
    queue: Mutex<Queue>,
    /// The most writes in flight at once, groups' and callers' own
    /// ([`Groups::turn`]): beyond it, rows wait and go together. 1 puts
    /// every row that arrives while one is written in the next group; more
    /// lets that many go at once, unwaited, before rows wait.
    in_flight: AtomicUsize,
}

impl Groups {
    /// Groups with at most `in_flight` writes in flight at once.
    pub(super) fn new(in_flight: usize) -> Self {
        Groups {
            queue: Mutex::default(),
            in_flight: AtomicUsize::new(in_flight.max(1)),
        }
    }

    /// Sets the most writes in flight at once, from the next write on.
    pub(super) fn set_in_flight(&self, in_flight: usize) {
        self.in_flight.store(in_flight.max(1), Ordering::Relaxed);
    }

    fn limit(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Writes (or reads) `row`, as `shape` says, in the next group.
    /// `None`: the group was cut short (its task was dropped with its
    /// runtime), so whether the row was written is not known.
    pub(super) async fn write(
        self: &Arc<Self>,
        pool: &sqlx::AnyPool,
        shape: &'static RowsStatement,
        row: GroupRow,
    ) -> Option<Grouped> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.waiting.push(Pending { row, answer });
            queue.start(self.limit())
        };
        if start {
            self.spawn_drain(pool, shape);
        }
        answered.await.ok()
    }

    /// A turn to write a row by a statement of the caller's own, counted
    /// as one of the writes in flight, when no row waits and fewer than
    /// the most allowed are: a row that has no other to go with
    /// then takes no group's detour, and its statement may be one that
    /// costs less than a group's. `None`: the row is to wait for a group
    /// ([`Groups::write`]).
    pub(super) fn turn(
        self: &Arc<Self>,
        pool: &sqlx::AnyPool,
        shape: &'static RowsStatement,
    ) -> Option<Turn> {
        let mut queue = self.queue();
        (queue.waiting.is_empty() && queue.in_flight < self.limit()).then(|| {
            queue.in_flight += 1;
            Turn {
                groups: Arc::clone(self),
                pool: pool.clone(),
                shape,
            }
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a task that writes group after group until no row waits; it
    /// is already counted in flight.
    fn spawn_drain(self: &Arc<Self>, pool: &sqlx::AnyPool, shape: &'static RowsStatement) {
        let groups = Arc::clone(self);
        let pool = pool.clone();
        tokio::spawn(async move { groups.drain(&pool, shape).await });
    }

    /// Writes group after group until no row is waiting, on one pooled
    /// connection ([`HeldConnection`]).
    async fn drain(&self, pool: &sqlx::AnyPool, shape: &RowsStatement) {
        let mut draining = Draining {
            groups: self,
            done: false,
        };
        let mut conn = HeldConnection::new(pool);
        loop {
            let group: Vec<Pending> = {
                let mut queue = self.queue();
                if queue.waiting.is_empty() {
                    queue.in_flight -= 1;
                    // Under the lock: a task started after it is let go
                    // is not this one's to stop.
                    draining.done = true;
                    return;
                }
                let take = queue.waiting.len().min(shape.max);
                queue.waiting.drain(..take).collect()
            };
            let (rows, answers): (Vec<GroupRow>, Vec<_>) =
                group.into_iter().map(|p| (p.row, p.answer)).unzip();
            for (answer, grouped) in answers
                .into_iter()
                .zip(write_group(&mut conn, shape, rows).await)
            {
                // A caller that went away needs no answer.
                let _ = answer.send(grouped);
            }
        }
    }
}

/// A caller's statement of its own in flight ([`Groups::turn`]). Once it
/// is dropped, the rows that waited meanwhile go in a group.
pub(super) struct Turn {
    groups: Arc<Groups>,
    pool: sqlx::AnyPool,
    shape: &'static RowsStatement,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut queue = self.groups.queue();
        queue.in_flight -= 1;
        if !queue.start(self.groups.limit()) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(queue);
            self.groups.spawn_drain(&self.pool, self.shape);
        } else {
            // Dropped outside a runtime, where no task can start.
            queue.let_go();
        }
    }
}

/// Lets the next row start a task again if the draining one ends any other
/// way than by finding nothing waiting (it panicked, or was dropped with
/// its runtime).
struct Draining<'a> {
    groups: &'a Groups,
    /// It found nothing waiting and let the queue go.
    done: bool,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.groups.queue().let_go();
        }
    }
}

/// Writes `rows` in one statement, committed by itself, on `conn`: what
/// became of each row, in order. A connection whose statement failed is
/// given back to the pool, which checks it.
async fn write_group(
    conn: &mut HeldConnection<'_>,
    shape: &RowsStatement,
    rows: Vec<GroupRow>,
) -> Vec<Grouped> {
    let mut members = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        members.push((row.id, row.may_skip));
        values.push(row.values);
    }
    let fetched = async {
        let query = group_query(&shape.text, values)?;
        query.fetch_all(conn.get().await?).await
    }
    .await;
    if fetched.is_err() {
        conn.give_back();
    }
    match fetched {
        Ok(returned) => {
            let returned: HashMap<String, AnyRow> = returned
                .into_iter()
                .filter_map(|row| Some((row.try_get::<String, _>("id").ok()?, row)))
                .collect();
            members
                .into_iter()
                .map(|(id, may_skip)| {
                    if let Some(row) = returned.get(&id) {
                        Grouped::Returned(row.clone())
                    } else if may_skip {
                        Grouped::Skipped
                    } else {
                        // Not written, and nothing to explain it: its own
                        // statement says why.
                        Grouped::Alone
                    }
                })
                .collect()
        }
        Err(e) if members.len() == 1 => vec![Grouped::Failed(e.into())],
        Err(_) => members.iter().map(|_| Grouped::Alone).collect(),
    }
}

/// The statement that writes `rows`, in order, as `text` says. A row whose
/// values are not of the text's kind is a mistake in the store: the group's
/// statement fails, as one the database refused would, rather than bind
/// them wrongly.
fn group_query(text: &RowsText, rows: Vec<RowValues>) -> Result<AnyQuery, sqlx::Error> {
    let mismatch =
        || sqlx::Error::Protocol("a grouped row's values do not fit its statement".into());
    match text {
        RowsText::Values(text) => {
            let mut query = sqlx::query(built(text.sql(rows.len())));
            for values in rows {
                let RowValues::Bound(bind) = values else {
                    return Err(mismatch());
                };
                query = bind(query);
            }
            Ok(query)
        }
        RowsText::Json(sql) => {
            let elements = rows
                .into_iter()
                .map(|values| match values {
                    RowValues::Json(element) => Ok(element),
                    RowValues::Bound(_) => Err(mismatch()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(sqlx::query(*sql).bind(serde_json::Value::Array(elements).to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row waiting in `groups`, a task draining them: the row's answer.
    fn waiting_row(groups: &Groups) -> oneshot::Receiver<Grouped> {
        let (answer, answered) = oneshot::channel();
        let mut queue = groups.queue();
        queue.in_flight = 1;
        queue.waiting.push(Pending {
            row: GroupRow {
                id: "r".into(),
                may_skip: false,
                values: RowValues::Bound(Box::new(|q| q)),
            },
            answer,
        });
        answered
    }

    /// A task that ends without emptying the queue (dropped with its
    /// runtime) hands back the rows it never took, and lets the next row
    /// start a task of its own.
    #[test]
    fn a_draining_task_cut_short_sends_what_it_did_not_take_to_be_written_alone() {
        let groups = Groups::new(1);
        let mut answered = waiting_row(&groups);
        drop(Draining {
            groups: &groups,
            done: false,
        });
        assert!(matches!(answered.try_recv(), Ok(Grouped::Alone)));
        let queue = groups.queue();
        assert!(queue.in_flight == 0 && queue.waiting.is_empty());
    }

    /// A task that found nothing waiting leaves alone the task started
    /// after it let the queue go, and the rows that one will take.
    #[test]
    fn a_draining_task_that_ended_leaves_the_next_ones_rows_to_it() {
        let groups = Groups::new(1);
        let mut answered = waiting_row(&groups);
        drop(Draining {
            groups: &groups,
            done: true,
        });
        assert!(answered.try_recv().is_err(), "no answer yet");
        let queue = groups.queue();
        assert!(queue.in_flight == 1 && queue.waiting.len() == 1);
    }

    /// A statement's shape, for the turns' accounting.
    static SHAPE: RowsStatement = RowsStatement {
        text: RowsText::Json(""),
        max: 8,
    };

    /// A JSON shape binds its rows as one array, whatever their number; a
    /// row of the other kind fails the group rather than bind wrongly.
    #[test]
    fn a_json_shape_binds_its_rows_as_one_array() {
        use sqlx::Execute;
        let rows = || {
            vec![
                RowValues::Json(serde_json::json!({"id": "a"})),
                RowValues::Json(serde_json::json!({"id": "b"})),
            ]
        };
        let mut query = group_query(&RowsText::Json("SELECT $1"), rows()).unwrap();
        let arguments = query.take_arguments().unwrap().unwrap();
        assert_eq!(arguments.values.0.len(), 1, "one value for two rows");
        let mut mixed = rows();
        mixed.push(RowValues::Bound(Box::new(|q| q)));
        assert!(group_query(&RowsText::Json("SELECT $1"), mixed).is_err());
        let values = RowsText::Values(ValuesText {
            head: "",
            row: |_, _| {},
            tail: "",
        });
        assert!(group_query(&values, rows()).is_err());
    }

    /// A pool that never connects, made in `rt`: a turn holds one.
    fn unconnected_pool(rt: &tokio::runtime::Runtime) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        rt.block_on(async {
            sqlx::any::AnyPoolOptions::new()
                .connect_lazy("sqlite::memory:")
                .unwrap()
        })
    }

    /// A caller writes by a statement of its own only while no row waits
    /// and fewer writes than the statement allows are in flight.
    #[test]
    fn a_turn_is_had_while_nothing_waits_and_a_write_may_start() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = unconnected_pool(&rt);
        let groups = Arc::new(Groups::new(2));
        let first = groups.turn(&pool, &SHAPE).expect("idle");
        let second = groups.turn(&pool, &SHAPE).expect("one in flight of two");
        assert!(groups.turn(&pool, &SHAPE).is_none(), "two in flight");
        drop(second);
        let third = groups.turn(&pool, &SHAPE).expect("a write ended");
        groups.set_in_flight(1);
        assert!(
            groups.turn(&pool, &SHAPE).is_none(),
            "two in flight, one allowed from now on"
        );
        drop(third);
        groups.set_in_flight(2);
        let _waiting = waiting_row(&groups);
        assert!(
            groups.turn(&pool, &SHAPE).is_none(),
            "a row waits: the caller's goes with it"
        );
        drop(first);
    }

    /// A turn that ends while rows wait, where no task can start (outside
    /// a runtime), sends them to be written alone rather than leave them
    /// waiting for a group that never comes.
    #[test]
    fn a_turn_ended_outside_a_runtime_sends_the_waiting_rows_to_be_written_alone() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = unconnected_pool(&rt);
        let groups = Arc::new(Groups::new(2));
        let turn = groups.turn(&pool, &SHAPE).expect("idle");
        let mut answered = waiting_row(&groups);
        drop(turn);
        assert!(matches!(answered.try_recv(), Ok(Grouped::Alone)));
        let queue = groups.queue();
        assert!(queue.in_flight == 0 && queue.waiting.is_empty());
    }
}
