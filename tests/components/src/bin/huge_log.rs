//! Tests log limits: logs without end, alternating `info!` lines and
//! `println!` lines (about 100 bytes each), never returning.

use caisson_sdk::{Result, info};

#[caisson_sdk::task]
fn run() -> Result<()> {
    let filler = "x".repeat(80);
    let mut n = 0u64;
    loop {
        info!("log line {n} {filler}");
        println!("stdout line {n} {filler}");
        n += 1;
    }
}

fn main() {}
