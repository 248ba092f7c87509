//! Telling the worker that runs a run to stop it, at once.
//!
//! A cancel request sets `cancel_requested` on the run's row; a worker's
//! heartbeat reads it back, but only every `server.heartbeat` (seconds).
//! So each worker process also keeps [`Cancels`]: the cancel switch of
//! every run it is running. The API's cancel flips the switch directly
//! when the worker is in the same process (the embedded server), and on
//! PostgreSQL also sends `NOTIFY caisson_cancels, '<run id>'`, which a
//! worker in another process relays to its own [`Cancels`] (see
//! `worker::listen`). Both are best effort: a notification lost while a
//! listener reconnects, or a run cancelled in the instant between its
//! claim and its registration here, is still stopped by the heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub use crate::store::CANCEL_CHANNEL;

/// The cancel switches of the runs this process is running, by run id.
#[derive(Debug, Default)]
pub struct Cancels {
    running: Mutex<HashMap<String, (u64, watch::Sender<bool>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Cancels {
    /// Registers `switch` as the way to stop `run_id` until the returned
    /// guard is dropped (when the attempt ends).
    pub fn register(self: &Arc<Self>, run_id: &str, switch: watch::Sender<bool>) -> Registered {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(run_id.to_owned(), (token, switch));
        Registered {
            cancels: self.clone(),
            run_id: run_id.to_owned(),
            token,
        }
    }

    /// Flips the switch of `run_id` if this process runs it. Returns
    /// whether it did.
    pub fn cancel(&self, run_id: &str) -> bool {
        match self.lock().get(run_id) {
            Some((_, switch)) => {
                tracing::info!(run = %run_id, "cancel requested; stopping the run");
                switch.send_replace(true);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, watch::Sender<bool>)>> {
        // The map stays consistent whatever panicked while holding it:
        // every operation on it is a single insert, get or remove.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps a run registered in [`Cancels`]; dropping it unregisters the run.
#[must_use = "the run is unregistered when this is dropped"]
pub struct Registered {
    cancels: Arc<Cancels>,
    run_id: String,
    token: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut running = self.cancels.lock();
        // Only our own entry: a later attempt of the same run may have
        // registered since (never in one process today, but cheap to get right).
        if running
            .get(&self.run_id)
            .is_some_and(|(token, _)| *token == self.token)
        {
            running.remove(&self.run_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_run_is_cancelled_and_forgotten_when_done() {
        let cancels = Arc::new(Cancels::default());
        let (switch, stopped) = watch::channel(false);
        let registered = cancels.register("r1", switch);
        assert!(!cancels.cancel("r2"));
        assert!(cancels.cancel("r1"));
        assert!(*stopped.borrow());
        drop(registered);
        assert!(!cancels.cancel("r1"));
    }
}
