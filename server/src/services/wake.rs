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

use std::pin::Pin;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A waiter on `notify` that already counts: a `notify_waiters` call from
/// now on completes it, even one made before it is first polled.
pub fn armed(notify: &Notify) -> Pin<Box<Notified<'_>>> {
    let mut notified = Box::pin(notify.notified());
    notified.as_mut().enable();
    notified
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
