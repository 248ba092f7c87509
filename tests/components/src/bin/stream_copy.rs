//! Tests streaming in constant memory: copies object `src` to `dst` on store
//! `store` (default `data`) through `reader` and `writer` with one 64 KiB
//! buffer. Output: the number of bytes copied, as decimal text.

use std::io::{Read, Write};

use caisson_sdk::objects::Store;
use caisson_sdk::{Result, params};

#[caisson_sdk::task]
fn run() -> Result<String> {
    let store = Store::open(&params::get_or("store", "data"))?;
    let src = params::require("src")?;
    let dst = params::require("dst")?;
    let mut reader = store.reader(&src)?;
    let mut writer = store.writer(&dst)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n])?;
        copied += n as u64;
    }
    writer.finish()?;
    Ok(copied.to_string())
}

fn main() {}
