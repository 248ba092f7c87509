//! Tests the filesystem sandbox. Tries, through `std::fs`:
//!
//! - reading `/etc/passwd`, `../../etc/passwd`, `/scratch/../etc/passwd` and
//!   `/scratch/../../etc/passwd` (each should fail);
//! - writing then reading back `/scratch/probe.txt` (should work when the run
//!   has a scratch directory) and `./probe.txt` (relative to the current
//!   directory);
//! - listing `/`;
//! - whether `/scratch` was empty when the run started (`scratch_was_empty`);
//!   it then leaves `/scratch/leftover.txt` behind, so a second run shows
//!   whether scratch directories are really fresh per run.
//!
//! Output: a JSON object from each path tried (`"list /"` for the listing) to
//! `"ok"` or `"error: <message>"`. For the reads, `"ok"` means the file was
//! read, i.e. an escape.

use caisson_sdk::{Json, Result};
use serde_json::{Map, Value};

fn write_read(path: &str) -> std::io::Result<()> {
    let data = b"scratch probe";
    std::fs::write(path, data)?;
    let back = std::fs::read(path)?;
    if back != data {
        return Err(std::io::Error::other("read back different bytes"));
    }
    std::fs::remove_file(path)
}

fn describe(result: std::io::Result<()>) -> Value {
    Value::String(match result {
        Ok(()) => "ok".into(),
        Err(e) => format!("error: {e}"),
    })
}

#[caisson_sdk::task]
fn run() -> Result<Json<Map<String, Value>>> {
    let mut out = Map::new();
    let was_empty = std::fs::read_dir("/scratch").map(|entries| entries.count() == 0);
    out.insert(
        "scratch_was_empty".into(),
        match was_empty {
            Ok(empty) => Value::Bool(empty),
            Err(e) => Value::String(format!("error: {e}")),
        },
    );
    std::fs::write("/scratch/leftover.txt", b"left behind")?;
    for path in [
        "/etc/passwd",
        "../../etc/passwd",
        "/scratch/../etc/passwd",
        "/scratch/../../etc/passwd",
    ] {
        out.insert(path.into(), describe(std::fs::read(path).map(drop)));
    }
    for path in ["/scratch/probe.txt", "./probe.txt"] {
        out.insert(path.into(), describe(write_read(path)));
    }
    out.insert("list /".into(), describe(std::fs::read_dir("/").map(drop)));
    Ok(Json(out))
}

fn main() {}
