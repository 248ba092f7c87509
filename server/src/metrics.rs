//! Prometheus metrics, rendered by hand in the text exposition format: a
//! few counters and histograms do not need a metrics framework.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::RunState;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// This process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    submitted: AtomicU64,
    finished: Mutex<Vec<(RunState, u64)>>,
    run_seconds: Mutex<Histogram>,
    load_seconds: Mutex<Histogram>,
    queue_wait_seconds: Mutex<Histogram>,
    /// Restarts of background duties, by duty name.
    restarts: Mutex<Vec<(&'static str, u64)>>,
}

impl Metrics {
    pub fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt ended in `state` after running for `elapsed`.
    pub fn finished(&self, state: RunState, elapsed: Duration) {
        let mut finished = self.finished.lock().unwrap();
        match finished.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => finished.push((state, 1)),
        }
        self.run_seconds.lock().unwrap().observe(elapsed);
    }

    /// Fetching, compiling (or loading from cache) and linking a task.
    pub fn loaded(&self, elapsed: Duration) {
        self.load_seconds.lock().unwrap().observe(elapsed);
    }

    /// Time from a run becoming runnable to a worker starting it.
    pub fn waited(&self, elapsed: Duration) {
        self.queue_wait_seconds.lock().unwrap().observe(elapsed);
    }

    /// The background duty `duty` stopped (a panic, an error, or an
    /// unexpected return) and was restarted.
    pub fn restarted(&self, duty: &'static str) {
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        match restarts.iter_mut().find(|(d, _)| *d == duty) {
            Some((_, n)) => *n += 1,
            None => restarts.push((duty, 1)),
        }
    }

    /// How often `duty` was restarted.
    pub fn restarts(&self, duty: &str) -> u64 {
        let restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        restarts
            .iter()
            .find(|(d, _)| *d == duty)
            .map_or(0, |(_, n)| *n)
    }

    /// The exposition text; `by_state` is the database's count of runs per state.
    pub fn render(&self, by_state: &[(RunState, i64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP caisson_runs Runs in the database, by state.\n# TYPE caisson_runs gauge"
        );
        for (state, n) in by_state {
            let _ = writeln!(out, "caisson_runs{{state=\"{}\"}} {n}", state.as_str());
        }
        let queued = by_state
            .iter()
            .find(|(s, _)| *s == RunState::Queued)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(
            out,
            "# HELP caisson_queue_depth Runs waiting for a worker.\n# TYPE caisson_queue_depth gauge\ncaisson_queue_depth {queued}"
        );
        let _ = writeln!(
            out,
            "# HELP caisson_runs_submitted_total Runs submitted through this process.\n# TYPE caisson_runs_submitted_total counter\ncaisson_runs_submitted_total {}",
            self.submitted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP caisson_attempts_finished_total Attempts this process's workers finished, by outcome.\n# TYPE caisson_attempts_finished_total counter"
        );
        for (state, n) in self.finished.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "caisson_attempts_finished_total{{state=\"{}\"}} {n}",
                state.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP caisson_duty_restarts_total Background duties (scheduler, worker slots) restarted after a panic or an error.\n# TYPE caisson_duty_restarts_total counter"
        );
        for (duty, n) in self
            .restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "caisson_duty_restarts_total{{duty=\"{duty}\"}} {n}");
        }
        self.run_seconds.lock().unwrap().render(
            &mut out,
            "caisson_run_seconds",
            "Wall time of attempts, instantiation included.",
        );
        self.load_seconds.lock().unwrap().render(
            &mut out,
            "caisson_task_load_seconds",
            "Fetching and compiling or loading a task.",
        );
        self.queue_wait_seconds.lock().unwrap().render(
            &mut out,
            "caisson_queue_wait_seconds",
            "From runnable to started.",
        );
        out
    }
}
