//! A guest's read stream over an object, fed straight from the backend's
//! byte stream.
//!
//! wasmtime-wasi's `AsyncReadStream` would put a tokio task and a channel
//! between the backend and the guest, and copy every chunk into a buffer of
//! its own on the way. Here the chunks the backend produced are handed out
//! as slices of themselves: the only copy left is the one into the guest's
//! memory, and a read of a chunk that is already there never leaves the
//! guest's thread.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, StreamError, StreamResult};

use super::error::{StreamFailure, log_error, map_error_ref};

/// An object's bytes as a WASI input stream.
pub(super) struct ObjectReader {
    chunks: BoxStream<'static, object_store::Result<Bytes>>,
    /// What is left of the chunk being read.
    pending: Bytes,
    /// How the backend's stream ended, once it has: `None` at the end,
    /// else the error, which the next read reports.
    ended: Option<Option<StreamFailure>>,
    label: std::sync::Arc<str>,
}

impl ObjectReader {
    pub(super) fn new(
        chunks: BoxStream<'static, object_store::Result<Bytes>>,
        label: std::sync::Arc<str>,
    ) -> Self {
        ObjectReader {
            chunks,
            pending: Bytes::new(),
            ended: None,
            label,
        }
    }
}

impl InputStream for ObjectReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if !self.pending.is_empty() {
            let n = size.min(self.pending.len());
            return Ok(self.pending.split_to(n));
        }
        match self.ended.take() {
            // Not ready yet: the guest polls, and `ready` fetches.
            None => Ok(Bytes::new()),
            Some(None) => {
                self.ended = Some(None);
                Err(StreamError::Closed)
            }
            // Reported once, as the kind only; `stream_error` finds the
            // `StreamFailure` inside the `io::Error`, as for any reader.
            Some(Some(failure)) => {
                self.ended = Some(None);
                Err(StreamError::LastOperationFailed(
                    std::io::Error::other(failure).into(),
                ))
            }
        }
    }
}

#[async_trait::async_trait]
impl Pollable for ObjectReader {
    async fn ready(&mut self) {
        while self.pending.is_empty() && self.ended.is_none() {
            match self.chunks.next().await {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(e)) => {
                    log_error(&self.label, &e);
                    self.ended = Some(Some(StreamFailure(map_error_ref(&e))));
                }
                None => self.ended = Some(None),
            }
        }
    }
}
