//! The word-count example's counting as a plain WASI command, for comparing
//! Caisson with the bare `wasmtime run` CLI on the same work (issue 17).
//!
//! `word-count-cmd < FRAMES` counts the objects on standard input, each an
//! 8-byte little-endian length followed by that many bytes, streamed
//! through the same `Counter` the task uses, and prints the same JSON
//! summary the task returns. It imports only WASI, so any WASI 0.2 runtime
//! can run it: `wasmtime run word-count-cmd.wasm < frames`.
//!
//! Standard input, not files: with the preview1 libc that this machine's
//! guest toolchain wraps in an adapter (see scripts/build-guests), a
//! command that uses preopened directories traps before `main` ("cannot
//! leave component instance": the libc's constructors read the preopens
//! from inside the adapter's first allocation). Framing keeps the object
//! boundaries, which the summary counts.
//!
//! The counter comes in by path, not through the `word_count` library: the
//! library also holds the task's exports, and linking it would make this
//! command import Caisson's interfaces too.

use std::io::{BufRead, BufReader, Read, Write};

#[path = "../counter.rs"]
#[allow(dead_code)] // `count_words` is the library's, for in-memory callers.
mod counter;

fn main() -> std::io::Result<()> {
    // 256 KiB reads, as the host hands a task its objects in chunks.
    let mut input = BufReader::with_capacity(256 << 10, std::io::stdin().lock());
    let mut counter = counter::Counter::new();
    loop {
        let mut len = [0u8; 8];
        if input.fill_buf()?.is_empty() {
            break;
        }
        input.read_exact(&mut len)?;
        counter.count_reader((&mut input).take(u64::from_le_bytes(len)))?;
    }
    let summary = counter.summary(counter::TOP);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &summary)?;
    stdout.flush()
}
