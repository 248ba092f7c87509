//! The coordination database: SQLite (embedded default) or PostgreSQL
//! (many workers), behind one API.
//!
//! Both backends share one logical schema (`migrations/sqlite` and
//! `migrations/postgres` differ only in column types) and one set of query
//! texts, through sqlx's `Any` driver with `$N` placeholders, which SQLite
//! accepts too. Only the claim query differs: PostgreSQL claims with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers never block on or double
//! claim a run; SQLite serialises writers anyway.
//!
//! Times are milliseconds since the Unix epoch. Every function that reads
//! tenant data takes the tenant id, so isolation is enforced here and not
//! left to each handler.

mod db;
mod error;
mod flows;
mod groups;
mod held;
mod lite;
mod logs;
mod modules;
mod query;
mod runs;
mod splits;
mod tenants;
mod tokens;
mod turn;
mod write_tx;
pub use db::{Db, DbKind};
pub use error::{BoxError, DbError};
pub use flows::{
    NewStep, OpenWorkflowRun, ScheduleRecord, Settled, StepRecord, WorkflowRecord,
    WorkflowRunRecord,
};
pub use logs::LogLine;
pub use modules::ModuleRecord;
pub use runs::{
    AttemptOutcome, AttemptRecord, CANCEL_CHANNEL, Claim, ClaimAsk, Finished, RunFilter, RunRecord,
};
pub use splits::{CancelledWorkflow, NewSplit, PendingSplit, SplitOutputRow, SplitRecord};
pub use tenants::TenantQuotas;
pub use tokens::{TokenRecord, TokenSource};
