//! The artifact store: uploaded components and large run outputs, in the
//! object store that `[server] modules` names (a local directory, or S3
//! when workers are on many machines). The API writes modules and reads
//! outputs; workers read modules and write outputs; both find them by the
//! keys here.

use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::config::ServerConfig;

/// The key of a component: content-addressed by its SHA-256.
pub fn module_key(digest: &str) -> Path {
    Path::from(format!("{digest}.wasm"))
}

/// The key of a run's output that was too large to keep in the database.
pub fn output_key(run_id: &str) -> Path {
    Path::from(format!("outputs/{run_id}"))
}

/// Builds the store from `[server] modules`.
pub fn module_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    config
        .server
        .modules
        .build("server.modules")
        .context("could not set up the module store")
}
