//! Tests a full scratch disk: writes `/scratch/fill` in 1 MiB chunks until
//! a write fails, or `mib` MiB (default 1024) are written. A failed write
//! ends the run with an error naming how far it got and the OS's reason.
//! Output, if every write succeeded: the MiB written, as decimal text.

use std::io::Write;

use caisson_sdk::{Error, Result, params};

#[caisson_sdk::task]
fn run() -> Result<String> {
    let mib: u64 = params::parse("mib")?.unwrap_or(1024);
    let chunk = vec![0x5Au8; 1 << 20];
    let mut file = std::fs::File::create("/scratch/fill")?;
    for written in 0..mib {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.flush()) {
            return Err(Error::msg(format!(
                "could not write to /scratch after {written} MiB: {e}"
            )));
        }
    }
    file.sync_all()
        .map_err(|e| Error::msg(format!("could not sync /scratch/fill: {e}")))?;
    Ok(mib.to_string())
}

fn main() {}
