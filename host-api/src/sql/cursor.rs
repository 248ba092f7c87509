//! The `rows` resource: a result streamed from a connection's actor.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::DropGuard;

use super::config::SqlLimits;
use crate::SqlError as WitError;
use crate::bindings::caisson::task::sql::{Column, Value};

/// What the actor answers to a `cursor` command.
pub(super) struct CursorStart {
    pub(super) columns: Vec<Column>,
    /// `None` for a result with no rows.
    pub(super) rows: Option<CursorStream>,
}

/// The guest's end of a streaming cursor.
pub(super) struct CursorStream {
    pub(super) rows: mpsc::Receiver<Result<CursorRow, WitError>>,
    /// Shared with the actor, which takes a row's size from it before
    /// sending the row.
    pub(super) budget: Arc<Semaphore>,
}

/// A row on its way to the guest. Its permits count against the cursor's
/// byte budget until it is handed to the guest (or the cursor is dropped).
pub(super) struct CursorRow {
    pub(super) values: Vec<Value>,
    pub(super) bytes: usize,
    pub(super) _permit: OwnedSemaphorePermit,
    /// The row's charge to the run's memory budget.
    pub(super) _held: crate::memory::Reservation,
}

/// An open `rows` resource: a streamed result.
///
/// The connection's actor decodes rows ahead of the guest into a channel.
/// What it buffers is bounded twice: by a byte budget of
/// [`SqlLimits::max_bytes`] (a row holds its share until `next` hands it
/// over) and by a row count. Each `next` call returns at most
/// [`SqlLimits::max_batch`] rows and `max_bytes` bytes, so the host holds at
/// most about twice `max_bytes` of decoded rows per cursor.
///
/// Dropping the cursor closes the channel and the budget; the actor stops
/// reading the result and the connection accepts commands again.
pub struct Cursor {
    columns: Vec<Column>,
    /// `None` once the result is exhausted (or failed).
    stream: Option<CursorStream>,
    /// A row received but not returned because the batch was full.
    pending: Option<CursorRow>,
    /// An error received after some rows, returned by the next call.
    pending_error: Option<WitError>,
    max_batch: u32,
    max_bytes: usize,
    /// What this run's error texts are cut to (`SqlLimits::max_error_bytes`).
    pub(super) max_error_bytes: usize,
    /// Clears the connection's `cursor_open` flag when dropped.
    connection_busy: Arc<AtomicBool>,
    /// Keeps the session from being ended while the cursor is read.
    _ended: Arc<DropGuard>,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("columns", &self.columns)
            .field("finished", &self.stream.is_none())
            .finish_non_exhaustive()
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // Wake an actor waiting for budget so it notices the cursor is gone.
        if let Some(stream) = &self.stream {
            stream.budget.close();
        }
        self.connection_busy.store(false, Ordering::Release);
    }
}

impl Cursor {
    /// The cursor over `start`, which holds `connection_busy` (set while
    /// rows are still streaming) and the connection's session until dropped.
    pub(super) fn new(
        start: CursorStart,
        limits: SqlLimits,
        connection_busy: Arc<AtomicBool>,
        ended: Arc<DropGuard>,
    ) -> Self {
        Self {
            columns: start.columns,
            stream: start.rows,
            pending: None,
            pending_error: None,
            max_batch: limits.max_batch,
            max_bytes: limits.max_bytes,
            max_error_bytes: limits.max_error_bytes,
            connection_busy,
            _ended: ended,
        }
    }

    pub(super) fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Returns up to `max` rows (clamped to `1..=max_batch`; 0 would make an
    /// empty answer, which means "done", ambiguous), stopping early before
    /// the batch would pass `max_bytes`. An empty batch means the end.
    pub(super) async fn next(&mut self, max: u32) -> Result<Vec<Vec<Value>>, WitError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let limit = max.clamp(1, self.max_batch.max(1)) as usize;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < limit {
            let row = match self.pending.take() {
                Some(row) => row,
                None => {
                    let Some(stream) = &mut self.stream else {
                        break;
                    };
                    match stream.rows.recv().await {
                        Some(Ok(row)) => row,
                        Some(Err(e)) => {
                            self.stream = None;
                            if batch.is_empty() {
                                return Err(e);
                            }
                            self.pending_error = Some(e);
                            break;
                        }
                        None => {
                            self.stream = None;
                            break;
                        }
                    }
                }
            };
            if !batch.is_empty() && bytes.saturating_add(row.bytes) > self.max_bytes {
                self.pending = Some(row);
                break;
            }
            bytes = bytes.saturating_add(row.bytes);
            // Dropping the row's permit here lets the actor read ahead again.
            batch.push(row.values);
        }
        Ok(batch)
    }
}

/// The byte budget of a cursor: at least 1 byte (so that zero-size rows
/// still flow), and small enough to count in the `u32` permits of
/// [`Semaphore::acquire_many_owned`].
pub(super) fn budget_bytes(max_bytes: usize) -> usize {
    max_bytes.clamp(1, u32::MAX as usize)
}
