//! In-memory dispatch on the embedded default (SQLite, the worker in the
//! API's process): a run queued while a slot of this process's worker
//! waits is handed to that slot by id, and the slot starts it with one
//! guarded update of its row ([`crate::store::Db::start_run`]) instead of
//! a claim that looks over every tenant's queue.
//!
//! The database stays the record: the run is committed as queued before
//! it is offered, so a crash loses nothing and a restart finds it as any
//! claim would. An offer is only a hint. The start takes the run only if
//! it is still queued and is the only run waiting to start (so no other
//! tenant's or older run is passed over: fairness and priority are the
//! claim's whenever there is a choice), and only within the tenant's
//! `max_running_runs`; otherwise the slot claims as before.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs offered to idle slots, at most one per idle slot.
#[derive(Default)]
pub struct Dispatch {
    /// Set by a worker on SQLite in this process. On PostgreSQL runs are
    /// shared with workers in other processes, whose claims decide.
    enabled: AtomicBool,
    /// Slots of this process's worker waiting for a run.
    idle: AtomicUsize,
    offered: Mutex<VecDeque<String>>,
}

/// A slot counted idle while this lives.
pub struct Idle<'a>(&'a Dispatch);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.idle.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dispatch {
    /// Turns dispatch on: a worker on SQLite runs in this process.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Counts the calling slot idle until the guard drops. Taken before
    /// the slot's last look at the queue, so a run queued after that look
    /// is offered to it.
    pub fn idle(&self) -> Idle<'_> {
        self.idle.fetch_add(1, Ordering::Relaxed);
        Idle(self)
    }

    /// Offers a run just committed as queued to an idle slot; returns
    /// whether it was offered. The caller wakes the slots either way.
    pub fn offer(&self, run_id: &str) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
        // More offers than idle slots would only be taken by busy slots
        // when they finish, with a backlog queued: the claim's case.
        if offered.len() >= self.idle.load(Ordering::Relaxed) {
            return false;
        }
        offered.push_back(run_id.to_owned());
        true
    }

    /// The oldest run offered and not yet taken.
    pub fn take(&self) -> Option<String> {
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_offered_only_to_idle_slots_of_an_enabled_dispatch() {
        let dispatch = Dispatch::default();
        let idle = dispatch.idle();
        assert!(!dispatch.offer("a"), "offered with no worker here");
        dispatch.enable();
        assert!(dispatch.offer("a"));
        assert!(!dispatch.offer("b"), "two offers for one idle slot");
        assert_eq!(dispatch.take().as_deref(), Some("a"));
        assert!(dispatch.offer("b"));
        drop(idle);
        assert_eq!(dispatch.take().as_deref(), Some("b"));
        assert!(!dispatch.offer("c"), "offered with every slot busy");
        assert_eq!(dispatch.take(), None);
    }
}
