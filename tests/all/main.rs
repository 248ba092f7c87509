//! Integration tests: real components built from the SDK, run by the real
//! runtime against real services. One binary, one module per area.

mod api;
mod authoring;
mod cli;
mod contract;
mod db;
mod examples;
mod exhaustion;
mod faults;
mod flows;
mod fuzz;
mod host_memory;
mod hostile;
mod http;
mod map;
mod metrics;
mod objects;
mod python;
mod python_packages;
mod read_many;
mod security;
mod server;
mod sessions;
mod streaming;
mod suite;
mod traces;
mod ui;
mod uploads;
mod validation;

use std::sync::Arc;

use caisson_host_api::log::MemorySink;
use caisson_runtime::{LoadedTask, RunError, RunRequest, Runtime};

/// Loads guest `name` into `runtime`.
async fn load(runtime: &Runtime, name: &str) -> Arc<LoadedTask> {
    runtime
        .load(&caisson_tests::guest(name))
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Runs `task` with `request` edits applied, returning the result and the log.
async fn run_with(
    runtime: &Runtime,
    task: &LoadedTask,
    input: &[u8],
    edit: impl FnOnce(&mut RunRequest),
) -> (Result<Vec<u8>, RunError>, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::default());
    let mut request = RunRequest::new(input.to_vec(), sink.clone());
    edit(&mut request);
    (runtime.run(task, request).await, sink)
}

fn json(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output).unwrap_or_else(|e| {
        panic!(
            "output is not JSON ({e}): {}",
            String::from_utf8_lossy(output)
        )
    })
}
