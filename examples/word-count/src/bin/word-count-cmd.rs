//! The word-count example's counting as a plain WASI command, for comparing
//! Caisson with the bare `wasmtime run` CLI on the same work (issue 17).
//!
//! `word-count-cmd DIR` counts every file in `DIR` in name order, streamed
//! through the same `Counter` the task uses, and prints the same JSON
//! summary the task returns. It imports only WASI, so any WASI 0.2 runtime
//! can run it: `wasmtime run --dir data::/data word-count-cmd.wasm /data`.
//!
//! The counter comes in by path, not through the `word_count` library: the
//! library also holds the task's exports, and linking it would make this
//! command import Caisson's interfaces too.

use std::io::{BufReader, Write};

#[path = "../counter.rs"]
#[allow(dead_code)] // `count_words` is the library's, for in-memory callers.
mod counter;

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".to_string());
    let mut paths = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    // Name order, as an object store lists keys.
    paths.sort();
    let mut counter = counter::Counter::new();
    for path in paths.iter().filter(|p| p.is_file()) {
        // 256 KiB reads, as the host hands a task its objects in chunks.
        let file = std::fs::File::open(path)?;
        counter.count_reader(BufReader::with_capacity(256 << 10, file))?;
    }
    let summary = counter.summary(counter::TOP);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &summary)?;
    stdout.flush()
}
