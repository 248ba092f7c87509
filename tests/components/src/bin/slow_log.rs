//! Tests live logs and the dashboard: logs param `lines` lines (default
//! 10), one every `interval_ms` milliseconds (default 500), each
//! `<message> <n>` (param `message`, default `line`) at debug, info, warn
//! and error in turn (line 0 at debug). Output: param `output` if set, else
//! `logged <lines> lines`.

use std::time::Duration;

use caisson_sdk::{Result, debug, error, info, params, warn};

#[caisson_sdk::task]
fn run() -> Result<String> {
    let lines: u64 = params::parse("lines")?.unwrap_or(10);
    let interval = Duration::from_millis(params::parse("interval_ms")?.unwrap_or(500));
    let message = params::get_or("message", "line");
    for n in 0..lines {
        if n > 0 {
            std::thread::sleep(interval);
        }
        match n % 4 {
            0 => debug!("{message} {n}"),
            1 => info!("{message} {n}"),
            2 => warn!("{message} {n}"),
            _ => error!("{message} {n}"),
        }
    }
    Ok(params::get("output").unwrap_or_else(|| format!("logged {lines} lines")))
}

fn main() {}
