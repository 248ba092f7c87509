//! The scheduler's cache of workflow definitions, kept in [`super::Services`]
//! so that every tick, and the API's first move of a new workflow run,
//! share it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dag::WorkflowDef;
use crate::store::OpenWorkflowRun;

/// The parsed definitions of open workflow runs, so that a tick does not
/// read and parse every definition again (a workflow may have thousands
/// of steps).
///
/// A workflow run keeps the definition it started with (a snapshot in
/// `workflow_runs.definition`), so an entry never goes stale: changing a
/// workflow (deleting it and creating it again) changes only the runs
/// started after, which have new ids. An entry is dropped when its run is
/// no longer open.
#[derive(Default)]
pub struct WorkflowDefs {
    defs: std::sync::Mutex<HashMap<String, Arc<WorkflowDef>>>,
    loads: AtomicU64,
}

impl WorkflowDefs {
    /// How many definitions were read from the database so far: one per
    /// workflow run this process moved along, however many ticks it took.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// How many definitions are held now.
    pub fn len(&self) -> usize {
        self.defs.lock().unwrap().len()
    }

    /// Counts one definition read from the store.
    pub(super) fn loaded(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn get(&self, run_id: &str) -> Option<Arc<WorkflowDef>> {
        self.defs.lock().unwrap().get(run_id).cloned()
    }

    pub(super) fn insert(&self, run_id: &str, def: Arc<WorkflowDef>) {
        self.defs.lock().unwrap().insert(run_id.to_string(), def);
    }

    /// Drops the definitions of runs not in `open`.
    pub(super) fn keep_only(&self, open: &[OpenWorkflowRun]) {
        let open: HashSet<&str> = open.iter().map(|r| r.id.as_str()).collect();
        self.defs
            .lock()
            .unwrap()
            .retain(|id, _| open.contains(id.as_str()));
    }
}
