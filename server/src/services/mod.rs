//! The services: what the API and the background duties both call, over
//! the store ([`crate::store`]) and the run model ([`crate::model`]).
//!
//! - [`admission`]: checks a submitted run against its tenant and the
//!   server's limits, and queues it;
//! - [`artifacts`]: where modules and large outputs are kept;
//! - [`cancel`]: tells the worker running a run to stop it, at once;
//! - [`worker`]: claims runs and runs them in the sandbox;
//! - [`scheduler`]: re-queues lost runs, fires schedules, moves workflows;
//! - [`supervise`]: restarts a background duty that panicked or failed;
//! - [`wake`]: waits on a notification without losing one sent meanwhile.
//!
//! Each takes a [`Services`] value: never the HTTP layer's state, so a
//! worker-only process builds no API.

pub mod admission;
pub mod artifacts;
pub mod cancel;
pub mod context;
pub mod scheduler;
pub mod supervise;
pub mod wake;
pub mod worker;
pub mod workflow_defs;

pub use context::Services;
