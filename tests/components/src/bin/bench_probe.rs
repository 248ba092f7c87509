//! The benchmark suite's task (`cargo bench -p caisson-bench`). Param `op`:
//! - `clock` (default): returns the wall clock at its first instruction,
//!   nanoseconds since the Unix epoch, so the suite can time trigger-to-start;
//! - `sleep`: logs a line, then sleeps `ms` milliseconds without using CPU
//!   (idle instances);
//! - `read`: streams object `key` of store `data` and returns its length;
//! - `write`: streams `bytes` bytes to object `key` of store `data`;
//! - `read-each`: lists `prefix` of store `data` and `get`s each object in
//!   turn, returning `"<objects> <bytes>"`;
//! - `read-many`: the same through `read_prefix` (several reads in flight).

use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use caisson_sdk::objects::Store;
use caisson_sdk::{Error, Result, info, params};

const CHUNK: usize = 256 * 1024;

#[caisson_sdk::task]
fn run() -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match params::get_or("op", "clock").as_str() {
        "clock" => Ok(now.as_nanos().to_string()),
        "sleep" => {
            let ms: u64 = params::parse("ms")?.unwrap_or(1000);
            // The suite counts these lines to know every instance is up.
            info!("sleeping {ms} ms");
            std::thread::sleep(Duration::from_millis(ms));
            Ok(String::new())
        }
        "read" => {
            let mut reader = Store::open("data")?.reader(&params::require("key")?)?;
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            Ok(total.to_string())
        }
        "write" => {
            let bytes: u64 = params::parse("bytes")?.unwrap_or(0);
            let mut writer = Store::open("data")?.writer(&params::require("key")?)?;
            let buf: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                writer.write_all(&buf[..n])?;
                left -= n as u64;
            }
            writer.finish()?;
            Ok(bytes.to_string())
        }
        "read-each" => {
            let store = Store::open("data")?;
            let (mut objects, mut bytes) = (0, 0);
            for meta in store.list(&params::require("prefix")?) {
                bytes += store.get(&meta?.key)?.len();
                objects += 1;
            }
            Ok(format!("{objects} {bytes}"))
        }
        "read-many" => {
            let store = Store::open("data")?;
            let (mut objects, mut bytes) = (0, 0);
            for (_, data) in store.read_prefix(&params::require("prefix")?)? {
                bytes += data?.len();
                objects += 1;
            }
            Ok(format!("{objects} {bytes}"))
        }
        other => Err(Error::invalid_input(format!("unknown op {other:?}"))),
    }
}

fn main() {}
