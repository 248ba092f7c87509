//! Waiting on a [`Notify`] without losing a notification sent while the
//! waiter was busy.
//!
//! `Notify::notify_waiters` wakes only the `Notified` futures that exist
//! and are enabled when it is called; one created afterwards waits for
//! the next call. A loop that looks for work and only then calls
//! `notified()` therefore loses every notification sent while it looked,
//! and sleeps until its timer although work is there (a workflow hop cost
//! a whole poll that way). [`armed`] registers the waiter first: create it,
//! look for work, then await it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A waiter on `notify` that already counts: a `notify_waiters` call from
/// now on completes it, even one made before it is first polled.
pub fn armed(notify: &Notify) -> Pin<Box<Notified<'_>>> {
    let mut notified = Box::pin(notify.notified());
    notified.as_mut().enable();
    notified
}

/// The runs whose end a GET waits for (`?wait=`), each with its own
/// [`Notify`]: a run that ends wakes its own waiters and no other, where
/// one shared `Notify` had every waiting GET read its run again at every
/// end in the process (a thousand reads a run with a thousand waiting).
#[derive(Default)]
pub struct RunEnds {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A GET's wait for one run's end ([`RunEnds::watch`]); the run is
/// forgotten when its last watch goes.
pub struct RunWatch<'a> {
    ends: &'a RunEnds,
    id: String,
    notify: Arc<Notify>,
}

impl RunEnds {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // The map holds no invariant a panicking holder could break.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A wait for run `id`'s end.
    pub fn watch(&self, id: &str) -> RunWatch<'_> {
        let notify = self.waiting().entry(id.to_owned()).or_default().clone();
        RunWatch {
            ends: self,
            id: id.to_owned(),
            notify,
        }
    }

    /// Run `id` ended in this process.
    pub fn ended(&self, id: &str) {
        if let Some(notify) = self.waiting().get(id) {
            notify.notify_waiters();
        }
    }

    /// Runs ended that are not named one by one (a workflow run cancelled
    /// with its steps): every waiter reads its run again.
    pub fn some_ended(&self) {
        for notify in self.waiting().values() {
            notify.notify_waiters();
        }
    }
}

impl RunWatch<'_> {
    /// What the run's end notifies.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for RunWatch<'_> {
    fn drop(&mut self) {
        let mut waiting = self.ends.waiting();
        // Under the lock no watch is made or dropped: the map's handle
        // and this one are all that is left if the count is two.
        if Arc::strong_count(&self.notify) == 2 {
            waiting.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_notification_sent_while_busy_is_not_lost() {
        let notify = Notify::new();
        let waiter = armed(&notify);
        // The pass that looks for work runs here, and meanwhile a run is
        // queued.
        notify.notify_waiters();
        assert!(
            waiter.now_or_never().is_some(),
            "the armed waiter missed a notification sent before it was awaited"
        );
    }

    #[test]
    fn a_run_end_wakes_its_own_waiters_only_and_is_forgotten_with_them() {
        let ends = RunEnds::default();
        let a = ends.watch("a");
        let a_again = ends.watch("a");
        let b = ends.watch("b");
        let (wa, wa_again, mut wb) = (
            armed(a.notify()),
            armed(a_again.notify()),
            armed(b.notify()),
        );
        ends.ended("a");
        assert!(wa.now_or_never().is_some() && wa_again.now_or_never().is_some());
        assert!((&mut wb).now_or_never().is_none(), "b was woken by a's end");
        ends.some_ended();
        assert!(wb.now_or_never().is_some(), "b missed the unnamed ends");
        drop(a);
        assert_eq!(
            ends.waiting().len(),
            2,
            "a was forgotten while still watched"
        );
        drop((a_again, b));
        assert!(ends.waiting().is_empty(), "runs nobody waits for are kept");
        ends.ended("a");
    }

    #[test]
    fn a_waiter_created_after_the_notification_misses_it() {
        // What `armed` is for: the plain pattern loses the wake-up.
        let notify = Notify::new();
        notify.notify_waiters();
        assert!(notify.notified().now_or_never().is_none());
        // And an armed waiter still waits for the next one.
        let mut waiter = armed(&notify);
        assert!((&mut waiter).now_or_never().is_none());
        notify.notify_waiters();
        assert!(waiter.now_or_never().is_some());
    }
}
