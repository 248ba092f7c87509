//! `writer`: a streamed put. The guest writes to an output-stream; a
//! background task drains it into a [`BufWriter`], which switches to a
//! multipart upload once its buffer fills. [`WriteOptions`] is what the
//! guest asks of a write, streamed or not.

use std::sync::Arc;

use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, PutMode, UpdateVersion};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use wasmtime_wasi_io::streams::{OutputStream, StreamError};

use super::error::{StreamFailure, too_large, upload_error};
use crate::ObjectsError as WitError;
use crate::memory::{MemoryBudget, Reservation};

/// An upload in progress: bytes written to its body stream are drained by a
/// background task into a [`BufWriter`].
pub struct Upload {
    pub(super) tx: mpsc::Sender<UploadMsg>,
    pub(super) key: Path,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) label: Arc<str>,
    pub(super) body_taken: bool,
}

pub(super) enum UploadMsg {
    /// A chunk, charged to the run until the uploader has copied it.
    Data(Bytes, Reservation),
    Finish(oneshot::Sender<Result<(), WitError>>),
}

/// How many chunks may wait between the guest and the uploader. With
/// [`UPLOAD_CHUNK`] this bounds the bytes queued per upload.
const UPLOAD_QUEUE: usize = 4;
/// The most bytes the body stream accepts per write.
const UPLOAD_CHUNK: usize = 1 << 20;
/// Above this an upload becomes multipart; S3 needs parts of at least 5 MiB.
const MULTIPART_THRESHOLD: usize = 8 << 20;
/// The most parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// The most the uploader holds of one upload: the [`BufWriter`]'s buffer
/// plus the parts in flight, each [`MULTIPART_THRESHOLD`] bytes.
const MAX_UPLOAD_BUFFER: usize = MULTIPART_THRESHOLD * (1 + PARTS_IN_FLIGHT);

impl Upload {
    pub(super) fn start(
        store: Arc<dyn ObjectStore>,
        label: Arc<str>,
        key: Path,
        attributes: Attributes,
        memory: &MemoryBudget,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<UploadMsg>(UPLOAD_QUEUE);
        let mut writer = BufWriter::with_capacity(store.clone(), key.clone(), MULTIPART_THRESHOLD)
            // Parts in flight are memory: two keep the network busy.
            .with_max_concurrency(PARTS_IN_FLIGHT)
            .with_attributes(attributes);
        // What the writer holds, charged as it fills up to its most: the
        // bytes written so far, up to `MAX_UPLOAD_BUFFER`. Kept until the
        // upload ends, as object_store does not say when a part is sent.
        let mut buffered = memory.reservation();
        let task_label = label.clone();
        // In the run's span, so that its log lines name the run.
        let uploader = async move {
            let mut failed: Option<WitError> = None;
            while let Some(msg) = rx.recv().await {
                match msg {
                    UploadMsg::Data(bytes, _chunk) => {
                        if failed.is_some() {
                            continue;
                        }
                        let grown = (buffered.bytes() as usize)
                            .saturating_add(bytes.len())
                            .min(MAX_UPLOAD_BUFFER);
                        if let Err(e) = buffered.resize(grown) {
                            failed = Some(too_large(e));
                        } else if let Err(e) = writer.write_all(&bytes).await {
                            failed = Some(upload_error(&task_label, &e));
                        }
                    }
                    UploadMsg::Finish(reply) => {
                        let result = match failed.take() {
                            Some(e) => {
                                let _ = writer.abort().await;
                                Err(e)
                            }
                            None => writer
                                .shutdown()
                                .await
                                .map_err(|e| upload_error(&task_label, &e)),
                        };
                        let _ = reply.send(result);
                        return;
                    }
                }
            }
            // Every sender is gone without a `finish`: the guest dropped the
            // writer or the run ended. Nothing may become visible.
            let _ = writer.abort().await;
        };
        tokio::spawn(tracing::Instrument::in_current_span(uploader));
        Upload {
            tx,
            key,
            store,
            label,
            body_taken: false,
        }
    }
}

/// The output-stream half of an [`Upload`].
pub(super) struct UploadBody {
    pub(super) tx: mpsc::Sender<UploadMsg>,
    pub(super) permit: Option<mpsc::OwnedPermit<UploadMsg>>,
    /// The run's budget, charged with each chunk until it is uploaded.
    pub(super) memory: MemoryBudget,
}

#[async_trait::async_trait]
impl wasmtime_wasi_io::poll::Pollable for UploadBody {
    async fn ready(&mut self) {
        if self.permit.is_none()
            && let Ok(permit) = self.tx.clone().reserve_owned().await
        {
            self.permit = Some(permit);
        }
    }
}

impl OutputStream for UploadBody {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if bytes.len() > UPLOAD_CHUNK {
            return Err(StreamError::trap("write larger than check-write allowed"));
        }
        // The guest learns why with `stream-error`, as for a reader.
        let chunk = self.memory.reserve(bytes.len()).map_err(|e| {
            StreamError::LastOperationFailed(
                std::io::Error::other(StreamFailure(too_large(e))).into(),
            )
        })?;
        let permit = match self.permit.take() {
            Some(permit) => permit,
            None => match self.tx.clone().try_reserve_owned() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(StreamError::Closed),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(StreamError::trap("write without check-write permission"));
                }
            },
        };
        permit.send(UploadMsg::Data(bytes, chunk));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        // Ordering, not durability, is what a flush promises here: bytes
        // written before `finish` are uploaded before it completes.
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        if self.permit.is_some() {
            return Ok(UPLOAD_CHUNK);
        }
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => {
                self.permit = Some(permit);
                Ok(UPLOAD_CHUNK)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(0),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StreamError::Closed),
        }
    }
}

/// A `write-options` resource: what the guest set, checked as it was set.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub(super) if_match: Option<String>,
    pub(super) create_only: bool,
    pub(super) content_type: Option<String>,
}

/// The longest entity tag or content type a task may pass. Both go into
/// request headers; nothing legitimate is this long.
const MAX_OPTION_LEN: usize = 1024;

/// Checks an option that ends up in an HTTP header: printable ASCII only,
/// so it cannot split or forge a header.
pub(super) fn header_value(what: &str, value: &str) -> Result<(), WitError> {
    if value.is_empty()
        || value.len() > MAX_OPTION_LEN
        || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(WitError::InvalidInput(format!(
            "{what} must be 1 to {MAX_OPTION_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

impl WriteOptions {
    /// The write's `PutMode`.
    pub(super) fn mode(&self) -> Result<PutMode, WitError> {
        match (&self.if_match, self.create_only) {
            (Some(_), true) => Err(WitError::InvalidInput(
                "set `if-match` or `if-none-match`, not both".into(),
            )),
            (Some(etag), false) => Ok(PutMode::Update(UpdateVersion {
                e_tag: Some(etag.clone()),
                version: None,
            })),
            (None, true) => Ok(PutMode::Create),
            (None, false) => Ok(PutMode::Overwrite),
        }
    }

    pub(super) fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some(content_type) = &self.content_type {
            attributes.insert(Attribute::ContentType, content_type.clone().into());
        }
        attributes
    }
}
