//! Caisson's scheduling service: the REST API, the scheduler and the
//! workers, over a coordination database (SQLite embedded, PostgreSQL for
//! many machines) and a module store (a local directory or S3).
//!
//! [`serve()`] wires them together; `caisson serve` and `caisson worker`
//! call it with different [`Roles`].

pub mod api;
pub mod config;
pub mod cron;
pub mod dag;
pub mod db;
pub mod http;
pub mod metrics;
pub mod scheduler;
pub mod serve;
pub mod ui;
pub mod worker;

pub use config::ServerConfig;
pub use serve::{Roles, serve};

/// Milliseconds since the Unix epoch: the database's unit of time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
