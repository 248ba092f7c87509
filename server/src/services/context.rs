//! [`Services`]: the handles every service and duty shares.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use caisson_runtime::Runtime;
use object_store::ObjectStore;
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::model::RunSpec;
use crate::store::{Db, DbError};

use super::cancel::Cancels;
use super::wake::RunEnds;
use super::workflow_defs::WorkflowDefs;

/// What [`LocalWorker::dispatch`] answers, in time: the run's id and
/// whether it is new, or `None` when the caller is to queue it.
pub type Dispatched<'a> =
    Pin<Box<dyn Future<Output = Result<Option<(String, bool)>, DbError>> + Send + 'a>>;

/// This process's worker as admission sees it: something a run admitted
/// here can be handed to. A trait, so that these shared handles do not
/// depend on the worker, which depends on them (`super::worker::Worker`
/// implements it).
pub trait LocalWorker: Send + Sync {
    /// Queues `run` and, when one of the worker's slots is idle and a
    /// claim would take the run now, claims it for that slot in the same
    /// commit. `None` when no slot is idle: the caller queues the run.
    fn dispatch<'a>(&'a self, run: &'a RunSpec, now: i64) -> Dispatched<'a>;
}

/// What the services share: cheap to clone, every field is a handle.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    /// The artifact store: components under `<digest>.wasm`, large outputs
    /// under `outputs/<run id>` (see [`super::artifacts`]).
    pub modules: Arc<dyn ObjectStore>,
    /// Validates uploads and runs tasks.
    pub runtime: Arc<Runtime>,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    /// Woken when a run is queued, so idle worker slots in this process
    /// start it at once instead of at their next poll.
    pub work_available: Arc<Notify>,
    /// Woken to make the scheduler pass at once rather than at its next
    /// tick (a workflow step that could not be moved on by its worker).
    pub scheduler_wake: Arc<Notify>,
    /// The runs a GET waits for (`?wait=`): told when one ends in this
    /// process, so the GET answers at once.
    pub run_ends: Arc<RunEnds>,
    /// Woken when a workflow run ends in this process, and only then: a
    /// GET waiting for a workflow run waits here, not on [`Self::run_ends`],
    /// which each of its steps' runs would wake (a read of its state, a
    /// thousand times for a thousand steps, in the middle of each hop).
    pub workflow_ended: Arc<Notify>,
    /// The scheduler's parsed workflow definitions.
    pub workflow_defs: Arc<WorkflowDefs>,
    /// The cancel switches of the runs this process's worker is running,
    /// which the API's cancel flips directly.
    pub cancels: Arc<Cancels>,
    /// This process's worker while it runs, for handing it a run admitted
    /// here ([`LocalWorker::dispatch`]).
    pub local_worker: Arc<std::sync::RwLock<Option<Weak<dyn LocalWorker>>>>,
}

impl Services {
    pub fn new(
        db: Db,
        modules: Arc<dyn ObjectStore>,
        runtime: Arc<Runtime>,
        config: Arc<ServerConfig>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Services {
            db,
            modules,
            runtime,
            config,
            metrics,
            work_available: Arc::new(Notify::new()),
            scheduler_wake: Arc::new(Notify::new()),
            run_ends: Default::default(),
            workflow_ended: Arc::new(Notify::new()),
            workflow_defs: Default::default(),
            cancels: Default::default(),
            local_worker: Arc::new(std::sync::RwLock::new(None)),
        }
    }

    /// This process's worker, if one runs.
    pub fn local_worker(&self) -> Option<Arc<dyn LocalWorker>> {
        self.local_worker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }
}
