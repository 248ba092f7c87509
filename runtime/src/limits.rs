//! Per-run resource limits enforced by wasmtime's `ResourceLimiter`.

use wasmtime::ResourceLimiter;

/// The most table elements a task may grow one table to. Tables hold
/// function references; a task has no business with millions of them, and
/// each costs host memory.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Caps the total linear memory of all of a run's memories.
pub(crate) struct Limiter {
    limit: u64,
    used: u64,
    exceeded: bool,
}

impl Limiter {
    pub(crate) fn new(limit: u64) -> Self {
        Limiter {
            limit,
            used: 0,
            exceeded: false,
        }
    }

    /// Whether a growth was refused: the reason a later trap happened.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used + (desired - current) as u64;
        if total > self.limit {
            self.exceeded = true;
            // An error (rather than `Ok(false)`) traps at once: most guests
            // treat a failed `memory.grow` as an allocation failure and
            // abort anyway, and the trap carries a clear reason.
            wasmtime::bail!("memory limit {} MiB exceeded", self.limit >> 20);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            wasmtime::bail!("table limit of {MAX_TABLE_ELEMENTS} elements exceeded");
        }
        Ok(true)
    }
}
