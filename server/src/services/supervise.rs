//! Supervision of background duties: the scheduler and each worker slot
//! run under [`supervise`], so a panic or an error in one is logged,
//! counted (`caisson_duty_restarts_total` in `/metrics`) and the duty
//! restarted, instead of it ending silently while the API keeps answering.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The wait before a stopped duty starts again: long enough that a duty
/// failing at once does not spin, short enough that little is missed.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs `duty()` until `shutdown` turns true. Each time it panics, returns
/// an error, or returns at all before shutdown, the stop is logged,
/// counted under `name` in `metrics`, and after `delay` a fresh `duty()`
/// runs. Returns once `shutdown` is true and the running duty has
/// returned (a duty is expected to watch `shutdown` itself).
pub async fn supervise<F, Fut, E>(
    name: &'static str,
    metrics: &Metrics,
    mut shutdown: watch::Receiver<bool>,
    delay: Duration,
    mut duty: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    loop {
        // Caught here rather than through a spawned task's JoinError, so
        // the duty may borrow and need not be `'static`.
        let outcome = std::panic::AssertUnwindSafe(duty()).catch_unwind().await;
        if *shutdown.borrow() {
            return;
        }
        match outcome {
            Ok(Ok(())) => tracing::error!(duty = name, "stopped unexpectedly; restarting"),
            Ok(Err(e)) => tracing::error!(duty = name, "failed, restarting: {e}"),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                tracing::error!(duty = name, "panicked, restarting: {message}");
            }
        }
        metrics.restarted(name);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_duty_that_panics_is_restarted_and_counted() {
        let metrics = Metrics::default();
        let (stop, shutdown) = watch::channel(false);
        let starts = AtomicU32::new(0);
        supervise("test", &metrics, shutdown, Duration::ZERO, || async {
            let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                panic!("start {n} fails");
            }
            // The third start runs until shutdown, as a healthy duty does.
            let _ = stop.send(true);
            Ok::<(), Infallible>(())
        })
        .await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.restarts("test"), 2);
        let text = metrics.render(false);
        assert!(
            text.contains("caisson_duty_restarts_total{duty=\"test\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_duty_that_fails_or_returns_early_is_restarted() {
        let metrics = Metrics::default();
        let (stop, shutdown) = watch::channel(false);
        let starts = AtomicU32::new(0);
        supervise("test", &metrics, shutdown, Duration::ZERO, || async {
            match starts.fetch_add(1, Ordering::SeqCst) {
                0 => Err("the database went away"),
                1 => Ok(()), // returned although nobody asked it to stop
                _ => {
                    let _ = stop.send(true);
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.restarts("test"), 2);
    }

    #[tokio::test]
    async fn a_duty_that_stops_for_shutdown_is_not_counted() {
        let metrics = Metrics::default();
        let (stop, shutdown) = watch::channel(false);
        let watched = shutdown.clone();
        let duty = supervise("test", &metrics, shutdown, Duration::ZERO, || {
            let mut watched = watched.clone();
            async move {
                let _ = watched.wait_for(|s| *s).await;
                Ok::<(), Infallible>(())
            }
        });
        let _ = stop.send(true);
        duty.await;
        assert_eq!(metrics.restarts("test"), 0);
    }
}
