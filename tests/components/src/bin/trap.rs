//! Tests a guest trap: panics with `boom: deliberate trap` (the message goes
//! to stderr), which aborts the instance.

use caisson_sdk::Result;

#[caisson_sdk::task]
fn run() -> Result<()> {
    panic!("boom: deliberate trap");
}

fn main() {}
