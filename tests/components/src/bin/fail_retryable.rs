//! Tests task errors. Fails with `task-error { message: "transient failure:
//! try again", retryable: true }`; with param `retryable=false`, the same
//! message with `retryable: false`.

use caisson_sdk::{Result, TaskError, params};

#[caisson_sdk::task]
fn run() -> Result<()> {
    let retryable = params::get("retryable").as_deref() != Some("false");
    Err(TaskError::new("transient failure: try again", retryable).into())
}

fn main() {}
