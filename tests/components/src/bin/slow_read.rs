//! Tests a store failing mid-read: streams object `key` of store `store`
//! (default `data`) through `reader` in 64 KiB reads, sleeping `pause_ms`
//! (default 0) after each, and logs `reading started` after the first read
//! so a test knows when to break the store. A failed read ends the run with
//! the SDK's error for it (`backend`, retryable, for a lost connection).
//! Output: `{"bytes": <u64>, "sum": <u64>}`, `sum` being the wrapping sum of
//! every byte.

use std::io::Read;
use std::time::Duration;

use caisson_sdk::objects::Store;
use caisson_sdk::{Json, Result, info, params};
use serde_json::{Value, json};

#[caisson_sdk::task]
fn run() -> Result<Json<Value>> {
    let store = Store::open(&params::get_or("store", "data"))?;
    let key = params::require("key")?;
    let pause = Duration::from_millis(params::parse("pause_ms")?.unwrap_or(0));
    let mut reader = store.reader(&key)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut sum) = (0u64, 0u64);
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if bytes == 0 {
            info!("reading started");
        }
        bytes += n as u64;
        sum = buf[..n]
            .iter()
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    Ok(Json(json!({"bytes": bytes, "sum": sum})))
}

fn main() {}
