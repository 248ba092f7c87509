//! The scheduler: background duties of a `caisson serve` process.
//!
//! Today that is re-queuing runs whose worker died (their lease expired).
//! It is idempotent and safe to run in several processes at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::db::Db;

/// Re-queues expired leases every `tick` until `shutdown`.
pub async fn run(
    db: Db,
    tick: Duration,
    work_available: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match db.requeue_expired(crate::now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    runs = n,
                    "re-queued runs whose worker stopped renewing its lease"
                );
                work_available.notify_waiters();
            }
            Err(e) => tracing::warn!("could not check for expired leases: {e}"),
        }
    }
}
