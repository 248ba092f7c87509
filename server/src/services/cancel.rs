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
//! listener reconnects, is still stopped by the heartbeat.
//!
//! A cancel can also come between a run's claim and its registration
//! here: a client that sees the run running (the claim committed) and
//! cancels it at once, while the slot is still loading its module. So a
//! cancel that finds no run here is kept for a while (`EARLY_KEPT`),
//! and a run registered with one kept is stopped as it registers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long a cancel that found no run here is kept for one about to
/// register: far longer than a claim takes to reach its registration.
/// Cancels of runs in other processes are forgotten after it.
const EARLY_KEPT: Duration = Duration::from_secs(60);

/// At most this many are kept, so that a burst of cancels of other
/// processes' runs cannot grow the map without bound.
const EARLY_MAX: usize = 10_000;

pub use crate::store::CANCEL_CHANNEL;

/// The cancel switches of the runs this process is running, by run id.
#[derive(Debug, Default)]
pub struct Cancels {
    switches: Mutex<Switches>,
    next: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Switches {
    /// The runs running here, by id: their attempt's token and switch.
    running: HashMap<String, (u64, watch::Sender<bool>)>,
    /// Cancels that found no run here, and when they came.
    early: HashMap<String, Instant>,
}

impl Cancels {
    /// Registers `switch` as the way to stop `run_id` until the returned
    /// guard is dropped (when the attempt ends).
    pub fn register(self: &Arc<Self>, run_id: &str, switch: watch::Sender<bool>) -> Registered {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut switches = self.lock();
        if switches.early.remove(run_id).is_some() {
            tracing::info!(run = %run_id, "cancel requested before the run started; stopping it");
            switch.send_replace(true);
        }
        switches.running.insert(run_id.to_owned(), (token, switch));
        Registered {
            cancels: self.clone(),
            run_id: run_id.to_owned(),
            token,
        }
    }

    /// Flips the switch of `run_id` if this process runs it. Returns
    /// whether it did; if not, the cancel is kept for the run, should it
    /// register here soon.
    pub fn cancel(&self, run_id: &str) -> bool {
        let mut switches = self.lock();
        if let Some((_, switch)) = switches.running.get(run_id) {
            tracing::info!(run = %run_id, "cancel requested; stopping the run");
            switch.send_replace(true);
            return true;
        }
        let now = Instant::now();
        switches
            .early
            .retain(|_, at| now.duration_since(*at) < EARLY_KEPT);
        if switches.early.len() < EARLY_MAX {
            switches.early.insert(run_id.to_owned(), now);
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Switches> {
        // The maps stay consistent whatever panicked while holding them:
        // every operation on them is a single insert, get or remove.
        self.switches
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
        let mut switches = self.cancels.lock();
        let running = &mut switches.running;
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

    #[test]
    fn a_cancel_that_comes_before_the_run_registers_stops_it_as_it_registers() {
        let cancels = Arc::new(Cancels::default());
        assert!(!cancels.cancel("r1"), "no run r1 here yet");
        let (switch, stopped) = watch::channel(false);
        let _registered = cancels.register("r1", switch);
        assert!(*stopped.borrow(), "the early cancel did not stop r1");
        // Kept once: a later attempt of the run is not stopped by it.
        let (switch, again) = watch::channel(false);
        let _later = cancels.register("r1", switch);
        assert!(!*again.borrow());
        // Another run's registration is not touched.
        let (switch, other) = watch::channel(false);
        let _other = cancels.register("r2", switch);
        assert!(!*other.borrow());
    }
}
