//! Tests the `map` workflow step. Its input is a split ([`Split`]); it reads
//! every piece with the split reader and outputs
//! `{"index": i, "keys": [...], "bytes": n}`.
//!
//! Params:
//! - `fail_once` = a split index: that split's first attempt writes the
//!   marker object `map-probe/failed-<index>` to the split's store and
//!   fails retryably; the attempt that finds the marker succeeds.
//! - `spin_ms`: busy-loop this long before answering (for cancelling).

use std::time::{Duration, SystemTime};

use caisson_sdk::map::Split;
use caisson_sdk::objects::Store;
use caisson_sdk::{Json, Result, TaskError, params};
use serde_json::{Value, json};

#[caisson_sdk::task]
fn run(split: Split) -> Result<Json<Value>> {
    if params::parse::<u64>("fail_once")? == Some(split.index) {
        let store = Store::open(&split.store)?;
        let marker = format!("map-probe/failed-{}", split.index);
        if !store.exists(&marker)? {
            store.put(&marker, b"1")?;
            return Err(TaskError::new("failing split once, as asked", true).into());
        }
    }
    let spin = Duration::from_millis(params::parse("spin_ms")?.unwrap_or(0));
    let start = SystemTime::now();
    while start.elapsed().unwrap_or(Duration::ZERO) < spin {
        std::hint::black_box(0);
    }
    let mut keys = Vec::new();
    let mut bytes = 0;
    for (piece, data) in split.read()? {
        bytes += data?.len();
        keys.push(piece.key);
    }
    Ok(Json(
        json!({"index": split.index, "keys": keys, "bytes": bytes}),
    ))
}

fn main() {}
