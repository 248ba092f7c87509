//! Live log streams per tenant, capped at `[server] max_log_streams`.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Live log streams per tenant id.
#[derive(Default)]
pub(crate) struct StreamCounts(Arc<std::sync::Mutex<BTreeMap<String, usize>>>);

/// One live log stream, counted against its tenant until dropped (when
/// the stream ends or the client goes away).
pub(crate) struct StreamSlot {
    counts: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    tenant: String,
}

impl StreamCounts {
    /// A slot for one more of `tenant`'s streams, unless it holds `max`.
    pub(crate) fn open(&self, tenant: &str, max: usize) -> Option<StreamSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(tenant.to_string()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            counts: self.0.clone(),
            tenant: tenant.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}
