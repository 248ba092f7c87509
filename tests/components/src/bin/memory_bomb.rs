//! Tests the memory limit: allocates and touches 1 MiB chunks forever (until
//! allocation fails, which aborts: a trap).

use caisson_sdk::Result;

#[caisson_sdk::task]
fn run() -> Result<()> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // `vec![x; n]` with a non-zero `x` writes every byte, so every page
        // is really committed.
        chunks.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
    }
}

fn main() {}
