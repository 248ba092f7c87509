//! Caisson's scheduling service: the REST API, the scheduler and the
//! workers, over a coordination database (SQLite embedded, PostgreSQL for
//! many machines) and a module store (a local directory or S3).
//!
//! The modules are floors; each imports only the ones below it:
//!
//! 1. [`model`]: the run model (what a run asks for, its grants, its
//!    states), and the pure [`cron`], [`dag`] and [`map`] (splitting)
//!    logic; [`telemetry`], the log and trace setup and a run's trace
//!    context;
//! 2. [`store`]: the coordination database, one file per concern (runs and
//!    leases, logs, modules, tenants, tokens, schedules and workflows);
//! 3. [`services`]: admission, artifacts, the worker and the scheduler,
//!    sharing one [`services::Services`] value;
//! 4. [`api`]: the HTTP layer, handlers only;
//! 5. [`serve()`]: the wiring, which `caisson serve` and `caisson worker`
//!    call with different [`Roles`].
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let config = caisson_server::ServerConfig::parse("[server]\nworkers = 2\n")?;
//! let roles = caisson_server::Roles { api: true, workers: 2, scheduler: true };
//! caisson_server::serve(config, roles, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod config;
pub mod cron;
pub mod dag;
pub mod map;
pub mod metrics;
pub mod model;
pub mod serve;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod ui;

pub use config::ServerConfig;
pub use model::now_ms;
pub use serve::{Roles, serve};
pub use services::{scheduler, worker};
