//! Tests stack exhaustion: recurses without bound (each frame keeps a live
//! buffer and the recursion is not a tail call) until the wasm stack or the
//! shadow stack overflows, which traps.

use caisson_sdk::Result;

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    // `black_box` hides that the condition is always true, so the recursion
    // can be neither proven infinite nor removed.
    if std::hint::black_box(depth) != u64::MAX {
        recurse(depth + 1).wrapping_add(frame[(depth % 32) as usize])
    } else {
        depth
    }
}

#[caisson_sdk::task]
fn run() -> Result<String> {
    Ok(recurse(0).to_string())
}

fn main() {}
