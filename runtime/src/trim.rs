//! Gives the system back the memory a run's host buffers used, once the run
//! has ended.
//!
//! A worker's memory bound (`slots × (limit + allowance)`, SECURITY.md)
//! counts on what one run's host buffers used being there for the next
//! run's linear memory. By itself it is not: linear memory is mapped by
//! wasmtime, host buffers come from `malloc`, and glibc keeps what its
//! per-thread arenas freed (it trims only the top of the main heap). With
//! the hostile tasks of `tests/all/host_memory.rs`, about 125 MiB stayed
//! resident in two arenas after the uploads case and added to the peak of
//! the listings case that followed.

/// Below this many bytes of host buffers in a run, what the allocator keeps
/// is small next to the allowance, and the trim would cost more than it
/// gives back: most runs buffer far less.
pub(crate) const AFTER_HOST_BYTES: u64 = 8 << 20;

/// Trims the allocator if the run that ended charged `host_bytes` of host
/// buffers or more.
pub(crate) fn after_run(host_bytes: u64) {
    if host_bytes >= AFTER_HOST_BYTES {
        release();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // On a blocking thread: it walks every arena, each under its lock,
    // which the async workers should not wait on.
    tokio::task::spawn_blocking(|| {
        // SAFETY: `malloc_trim` takes no pointer and touches only glibc's
        // free lists; it is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) };
    });
}

/// Other allocators and C libraries give memory back on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
