//! Tests cancellation and fuel: busy-loops, without sleeping, for param `ms`
//! milliseconds (default 1000) of wall-clock time, read from the WASI wall
//! clock on every iteration. Output: `{"elapsed_ms": <u64>, "iterations": <u64>}`.

use std::time::{Duration, SystemTime};

use caisson_sdk::{Json, Result, params};
use serde_json::{Value, json};

#[caisson_sdk::task]
fn run() -> Result<Json<Value>> {
    let ms: u64 = params::parse("ms")?.unwrap_or(1000);
    let start = SystemTime::now();
    let mut iterations = 0u64;
    let elapsed = loop {
        let elapsed = start.elapsed().unwrap_or(Duration::ZERO);
        if elapsed >= Duration::from_millis(ms) {
            break elapsed;
        }
        iterations = std::hint::black_box(iterations + 1);
    };
    Ok(Json(
        json!({"elapsed_ms": elapsed.as_millis() as u64, "iterations": iterations}),
    ))
}

fn main() {}
