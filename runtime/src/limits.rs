//! Per-run resource limits enforced by wasmtime's `ResourceLimiter`.

use caisson_host_api::memory::MemoryBudget;
use wasmtime::ResourceLimiter;

/// The most table elements a task may grow one table to. Tables hold
/// function references; a task has no business with millions of them, and
/// each costs host memory.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Caps the total linear memory of all of a run's memories, together with
/// the host buffers the run holds: both are charged to the run's one
/// [`MemoryBudget`].
pub(crate) struct Limiter {
    memory: MemoryBudget,
    exceeded: bool,
}

impl Limiter {
    pub(crate) fn new(memory: MemoryBudget) -> Self {
        Limiter {
            memory,
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
        // Linear memory never shrinks: it is given back with the store.
        if self.memory.charge((desired - current) as u64).is_err() {
            self.exceeded = true;
            // An error (rather than `Ok(false)`) traps at once: most guests
            // treat a failed `memory.grow` as an allocation failure and
            // abort anyway, and the trap carries a clear reason.
            wasmtime::bail!("memory limit {} MiB exceeded", self.memory.limit() >> 20);
        }
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
