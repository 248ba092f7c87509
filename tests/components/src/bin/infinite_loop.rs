//! Tests the time / fuel limit: spins forever without calling the host.

use caisson_sdk::Result;

#[caisson_sdk::task]
fn run() -> Result<()> {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn main() {}
