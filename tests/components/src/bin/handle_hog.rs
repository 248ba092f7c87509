//! Tests the cap on open handles: opens store `data` `count` times (default
//! 1,000,000), keeping every handle. The first failure ends the run with
//! that error, after saying how many handles were open. Output, if every
//! open succeeded: the count, as decimal text.

use caisson_sdk::objects::Store;
use caisson_sdk::{Context, Result, params};

#[caisson_sdk::task]
fn run() -> Result<String> {
    let count: usize = params::parse("count")?.unwrap_or(1_000_000);
    let mut handles = Vec::new();
    for i in 0..count {
        let store = Store::open("data").with_context(|| format!("open number {}", i + 1))?;
        handles.push(store);
    }
    Ok(handles.len().to_string())
}

fn main() {}
