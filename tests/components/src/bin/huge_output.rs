//! Tests the output size limit: returns as many `x` bytes as the input says
//! (decimal text; default 64 MiB when the input is empty), built 1 MiB at a
//! time.

use caisson_sdk::{Error, Result};

#[caisson_sdk::task]
fn run(input: String) -> Result<Vec<u8>> {
    let size: usize = match input.trim() {
        "" => 64 << 20,
        n => n
            .parse()
            .map_err(|e| Error::invalid_input(format!("size {n:?}: {e}")))?,
    };
    let mut out = Vec::new();
    while out.len() < size {
        let n = (size - out.len()).min(1 << 20);
        out.resize(out.len() + n, b'x');
    }
    Ok(out)
}

fn main() {}
