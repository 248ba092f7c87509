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
pub mod metrics;
pub mod model;
pub mod serve;
pub mod services;

pub use services::{scheduler, worker};

pub use config::ServerConfig;
pub use serve::{Roles, serve};

pub use model::now_ms;
