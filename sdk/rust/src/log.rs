//! The run's log and progress.
//!
//! Messages go to the run's record with their level. Standard output and
//! standard error (`println!`, `eprintln!`, panic messages) are captured into
//! the same log, so either works; the macros here add a level.
//!
//! ```no_run
//! use caisson_sdk::{info, log, warn};
//!
//! let files = ["a.csv", "b.csv"];
//! for (i, name) in files.iter().enumerate() {
//!     info!("loading {name}");
//!     log::progress(i as u64 + 1, files.len() as u64);
//! }
//! warn!("{} files skipped", 0);
//! ```

use crate::wit::caisson::task::log as wit;

/// How important a log message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Detail useful when debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the task worked around.
    Warn,
    /// A failure.
    Error,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        }
    }
}

/// Writes `message` to the run's log at `level`. The macros ([`info!`](crate::info)
/// and friends) call this. Once the run's log budget is spent the message
/// is dropped (see [`try_log`]).
pub fn log(level: Level, message: &str) {
    let _ = try_log(level, message);
}

/// The run's log budget is spent: the message was dropped, and the run will
/// fail with the log-limit error when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExceeded;

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run's log budget is spent")
    }
}

impl std::error::Error for BudgetExceeded {}

/// Like [`log`], but says whether the message was kept, so that a task can
/// stop logging (and wind down) once its budget is spent.
pub fn try_log(level: Level, message: &str) -> Result<(), BudgetExceeded> {
    wit::log(level.into(), message).map_err(|wit::LogError::BudgetExceeded| BudgetExceeded)
}

/// Reports that `done` of `total` units of work are finished; pass `total`
/// 0 when it is unknown.
pub fn progress(done: u64, total: u64) {
    wit::progress(done, total);
}

/// Logs a message at [`Level::Trace`], formatted like `format!`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Trace, &::std::format!($($arg)+)) };
}

/// Logs a message at [`Level::Debug`], formatted like `format!`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)+)) };
}

/// Logs a message at [`Level::Info`], formatted like `format!`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)+)) };
}

/// Logs a message at [`Level::Warn`], formatted like `format!`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)+)) };
}

/// Logs a message at [`Level::Error`], formatted like `format!`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)+)) };
}

#[doc(inline)]
pub use crate::{debug, error, info, trace, warn};
