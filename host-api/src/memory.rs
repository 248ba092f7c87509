//! One run's memory budget, shared by the guest's linear memory and the
//! host buffers that exist because of the run.
//!
//! The runtime makes one [`MemoryBudget`] per run from the run's memory
//! limit. Its `ResourceLimiter` charges every growth of the guest's linear
//! memory to it ([`MemoryBudget::charge`]: linear memory only grows, and
//! goes when the run's store does), and the host contexts reserve what they
//! buffer for the run ([`MemoryBudget::reserve`]): SQL statements,
//! parameters and result rows, object bodies, read-ahead, listing pages,
//! log records and the output. A [`Reservation`] gives its bytes back when
//! it is dropped, so whatever the run leaves behind (a cursor still
//! streaming, a writer never finished) is released with the resource that
//! holds it when the run's store goes away.
//!
//! A reservation is one atomic compare-and-swap on the run's counter (plus
//! the `Arc` clone that lets it outlive the call, e.g. on an uploader's
//! task); nothing is shared between runs.
//!
//! ```
//! use caisson_host_api::memory::MemoryBudget;
//!
//! let budget = MemoryBudget::new(64 << 20);
//! budget.charge(48 << 20).unwrap(); // the guest's linear memory
//! let rows = budget.reserve(8 << 20).unwrap();
//! assert!(budget.reserve(16 << 20).is_err()); // past the limit: `too-large`
//! drop(rows);
//! assert_eq!(budget.used(), 48 << 20);
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The bytes one run may hold, in its linear memory and in host buffers.
/// Cheap to clone: every clone is the same budget.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: u64,
    used: AtomicU64,
    /// Whether a host buffer was refused: what a later failure of the run
    /// is put down to when the guest did not handle the refusal.
    host_refused: AtomicBool,
    /// Every byte of host buffer charged during the run, given back or not:
    /// how much the allocator may keep from the run once it ends.
    host_total: AtomicU64,
}

/// A host buffer that did not fit in the run's memory limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "memory limit {} MiB exceeded (host buffers): {asked} more bytes asked for with {used} \
     bytes already held by the run",
    .limit >> 20
)]
pub struct OverBudget {
    pub limit: u64,
    pub used: u64,
    pub asked: u64,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.inner.limit)
            .field("used", &self.used())
            .finish()
    }
}

/// No limit: for contexts built without a run (embedders' tests).
impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(u64::MAX)
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing used.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicU64::new(0),
                host_refused: AtomicBool::new(false),
                host_total: AtomicU64::new(0),
            }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// The bytes held now: linear memory plus live reservations.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Whether a host buffer was refused during the run.
    pub fn host_refused(&self) -> bool {
        self.inner.host_refused.load(Ordering::Relaxed)
    }

    /// The bytes of host buffer charged over the whole run, including
    /// those already given back.
    pub fn host_total(&self) -> u64 {
        self.inner.host_total.load(Ordering::Relaxed)
    }

    /// Charges `bytes` for good (until the budget itself goes): linear
    /// memory, which never shrinks. No record of a host buffer is kept.
    pub fn charge(&self, bytes: u64) -> Result<(), OverBudget> {
        self.inner.add(bytes)
    }

    /// Charges `bytes` of a host buffer that lives as long as the run
    /// (the log's records, which a sink may keep until the end).
    pub fn hold_for_run(&self, bytes: u64) -> Result<(), OverBudget> {
        self.inner.add_host(bytes).inspect_err(|_| self.refused())
    }

    /// Reserves `bytes` for a host buffer until the reservation is dropped.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, OverBudget> {
        let bytes = bytes as u64;
        self.inner.add_host(bytes).inspect_err(|_| self.refused())?;
        Ok(Reservation {
            inner: self.inner.clone(),
            bytes,
        })
    }

    /// An empty reservation, to [`Reservation::grow`] as a buffer fills.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            inner: self.inner.clone(),
            bytes: 0,
        }
    }

    fn refused(&self) {
        self.inner.host_refused.store(true, Ordering::Relaxed);
    }
}

impl Inner {
    /// Adds `bytes` if they fit: one compare-and-swap when uncontended. A
    /// refused attempt changes nothing, so it cannot make a concurrent call
    /// of the same run fail as a fetch-add-then-undo would.
    fn add(&self, bytes: u64) -> Result<(), OverBudget> {
        let limit = self.limit;
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .map(drop)
            .map_err(|used| OverBudget {
                limit,
                used,
                asked: bytes,
            })
    }

    /// [`Inner::add`] for a host buffer, which is also counted in
    /// `host_total` once it fits.
    fn add_host(&self, bytes: u64) -> Result<(), OverBudget> {
        self.add(bytes)?;
        self.host_total.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, bytes: u64) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// Bytes of a run's [`MemoryBudget`] held by one host buffer; given back
/// when dropped.
pub struct Reservation {
    inner: Arc<Inner>,
    bytes: u64,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Reservation {
    /// Adds `more` bytes to this reservation, if they fit.
    pub fn grow(&mut self, more: usize) -> Result<(), OverBudget> {
        let more = more as u64;
        if let Err(e) = self.inner.add_host(more) {
            self.inner.host_refused.store(true, Ordering::Relaxed);
            return Err(e);
        }
        self.bytes += more;
        Ok(())
    }

    /// Grows or shrinks this reservation to `bytes`.
    pub fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let bytes = bytes as u64;
        if bytes >= self.bytes {
            return self.grow((bytes - self.bytes) as usize);
        }
        self.inner.release(self.bytes - bytes);
        self.bytes = bytes;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_with_linear_memory_and_give_back_on_drop() {
        let budget = MemoryBudget::new(100);
        budget.charge(40).unwrap();
        let a = budget.reserve(50).unwrap();
        let err = budget.reserve(11).unwrap_err();
        assert_eq!(
            err,
            OverBudget {
                limit: 100,
                used: 90,
                asked: 11
            }
        );
        assert!(budget.host_refused());
        // A refused linear-memory growth is not a host buffer.
        assert!(budget.charge(11).is_err());
        let mut b = budget.reservation();
        b.grow(10).unwrap();
        assert!(b.grow(1).is_err());
        assert_eq!(budget.used(), 100);
        b.resize(4).unwrap();
        assert_eq!(budget.used(), 94);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 40);
        // What was reserved, given back or not; not what was refused, and
        // not linear memory.
        assert_eq!(budget.host_total(), 60);
        assert!(
            err.to_string()
                .starts_with("memory limit 0 MiB exceeded (host buffers)")
        );
    }

    #[test]
    fn an_unlimited_budget_never_overflows() {
        let budget = MemoryBudget::default();
        budget.charge(u64::MAX - 1).unwrap();
        assert!(budget.reserve(2).is_err());
    }
}
