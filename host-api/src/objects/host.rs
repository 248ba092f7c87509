//! The generated `caisson:task/objects` host traits, on `ObjectsHost`
//! (the calls themselves; `ObjectsView` observes them, see `observed`).

use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    Attribute, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use tokio::sync::oneshot;
use wasmtime::component::Resource;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::error::{StreamFailure, backend_error, map_error_ref, too_large};
use super::key::{is_partial_file, parse_key, parse_prefix};
use super::read_many::{self, ManyReader};
use super::reader;
use super::stores::Backend;
use super::upload::{Upload, UploadBody, UploadMsg, WriteOptions, header_value};
use super::{ObjectsHost, StoreHandle};
use crate::bindings::caisson::task::objects as wit;
use crate::memory::{MemoryBudget, Reservation};
use crate::{GuestError as _, ObjectsError as WitError, push_resource};

/// The most entries a listing of an unordered backend reads to sort one page.
const MAX_UNORDERED_LISTING: usize = 1_000_000;

/// About what one listed entry costs the host while a page is made: its
/// key twice (object_store's `Path`, the guest's `String`), its tags, and
/// the structs around them.
fn listed_bytes(meta: &ObjectMeta) -> usize {
    2 * meta.location.as_ref().len()
        + 2 * meta.e_tag.as_ref().map_or(0, String::len)
        + 2 * meta.version.as_ref().map_or(0, String::len)
        + 2 * size_of::<ObjectMeta>()
}

fn meta_to_wit(meta: &ObjectMeta) -> wit::ObjectMeta {
    wit::ObjectMeta {
        key: meta.location.to_string(),
        // object_store lists and heads objects only: a directory of a local
        // or HDFS store is never returned as an entry.
        kind: wit::ObjectKind::File,
        size: meta.size,
        last_modified: meta.last_modified.timestamp_micros(),
        etag: meta.e_tag.clone(),
        version: meta.version.clone(),
        content_type: None,
    }
}

/// What `head` (and `finish`, which heads the new object) returns: the
/// metadata plus the stored content type, which only a GET-style request
/// carries.
async fn head_with_attributes(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<wit::ObjectMeta, object_store::Error> {
    let options = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let result = store.get_opts(path, options).await?;
    let mut meta = meta_to_wit(&result.meta);
    meta.content_type = result
        .attributes
        .get(&Attribute::ContentType)
        .map(|v| v.as_ref().to_owned());
    Ok(meta)
}

/// A delimiter listing: one level under `prefix`, objects and common
/// prefixes (with a trailing `/`) merged in key order, one page of them
/// after `page_token` (the last entry of the previous page).
///
/// object_store's delimiter listing is not paged (S3's is, but the client
/// gathers every page), so the level is read whole and paged on the host,
/// bounded like an unordered listing. Stateless: nothing is kept between
/// pages.
async fn list_delimited(
    store: &Arc<dyn ObjectStore>,
    label: &str,
    prefix: Option<&Path>,
    page_token: Option<String>,
    page_size: usize,
    hidden: impl Fn(&ObjectMeta) -> bool,
    memory: &MemoryBudget,
) -> Result<wit::ListPage, WitError> {
    let level = store
        .list_with_delimiter(prefix)
        .await
        .map_err(|e| backend_error(label, e))?;
    if level.objects.len() + level.common_prefixes.len() > MAX_UNORDERED_LISTING {
        return Err(WitError::TooLarge(format!(
            "more than {MAX_UNORDERED_LISTING} entries at this level; list a narrower prefix"
        )));
    }
    // The level is already in (object_store gathers it whole); it is held
    // again, sorted, while the page is made.
    let level_bytes = level.objects.iter().map(listed_bytes).sum::<usize>()
        + (level.common_prefixes.iter())
            .map(|p| 2 * p.as_ref().len() + 2 * size_of::<Path>())
            .sum::<usize>();
    let _held = memory.reserve(level_bytes).map_err(too_large)?;
    enum Entry {
        Object(wit::ObjectMeta),
        Prefix(String),
    }
    let key = |entry: &Entry| -> String {
        match entry {
            Entry::Object(meta) => meta.key.clone(),
            Entry::Prefix(prefix) => prefix.clone(),
        }
    };
    let mut entries: Vec<(String, Entry)> = level
        .objects
        .iter()
        .filter(|meta| !hidden(meta))
        .map(|meta| Entry::Object(meta_to_wit(meta)))
        .chain(
            level
                .common_prefixes
                .iter()
                .map(|p| Entry::Prefix(format!("{p}/"))),
        )
        .map(|entry| (key(&entry), entry))
        .filter(|(key, _)| page_token.as_ref().is_none_or(|token| key > token))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let more = entries.len() > page_size;
    entries.truncate(page_size);
    let next_page_token = if more {
        entries.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for (_, entry) in entries {
        match entry {
            Entry::Object(meta) => objects.push(meta),
            Entry::Prefix(prefix) => prefixes.push(prefix),
        }
    }
    Ok(wit::ListPage {
        objects,
        prefixes,
        next_page_token,
    })
}

impl ObjectsHost<'_> {
    /// The handle's store, and its label for the log.
    fn store(
        &self,
        handle: &Resource<StoreHandle>,
    ) -> wasmtime::Result<(Arc<dyn ObjectStore>, Arc<str>)> {
        let handle = self.table.get(handle)?;
        Ok((handle.store.clone(), handle.label.clone()))
    }

    /// Checks a key (or a page token) from the guest: its length against
    /// the run's `max_key_bytes` first, so that a huge key is refused
    /// without being quoted back, then its spelling.
    fn key(&self, key: &str) -> Result<Path, WitError> {
        self.check_key_length(key)?;
        parse_key(key).map_err(|e| e.clipped(self.ctx.limits.max_error_bytes as usize))
    }

    /// [`Self::key`] for a `list` prefix.
    fn prefix(&self, prefix: &str) -> Result<Option<Path>, WitError> {
        self.check_key_length(prefix)?;
        parse_prefix(prefix).map_err(|e| e.clipped(self.ctx.limits.max_error_bytes as usize))
    }

    fn check_key_length(&self, key: &str) -> Result<(), WitError> {
        let max = self.ctx.limits.max_key_bytes;
        if key.len() > max as usize {
            return Err(WitError::InvalidInput(format!(
                "a key of {} bytes is longer than the {max}-byte limit (max_key_bytes)",
                key.len()
            )));
        }
        Ok(())
    }

    /// Charges `bytes` the host is about to hold for the guest to the
    /// run's memory budget.
    fn hold(&self, bytes: u64) -> Result<Reservation, WitError> {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.ctx.memory.reserve(bytes).map_err(too_large)
    }

    fn check_size(&self, size: u64, what: &str) -> Result<(), WitError> {
        let max = self.ctx.limits.max_object_bytes;
        if size > max {
            return Err(WitError::TooLarge(format!(
                "{what} of {size} bytes is over the {max}-byte limit for one call; \
                 use `reader`/`writer` to stream it"
            )));
        }
        Ok(())
    }
}

/// Shortens `?`-heavy host functions: the inner `Result` is the guest's.
macro_rules! guest_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

impl wit::Host for ObjectsHost<'_> {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, WitError>> {
        let Some(Backend {
            store,
            ordered,
            partial_files,
            read,
        }) = self.ctx.granted.get(&label).cloned()
        else {
            tracing::debug!(%label, "task opened an object store it was not granted");
            return Ok(Err(WitError::AccessDenied));
        };
        let reads =
            read_many::Reads::for_run(&mut self.ctx.read_budgets, &label, read, &self.ctx.memory);
        let label = label.into();
        push_resource(
            self.table,
            StoreHandle {
                store,
                ordered,
                label,
                partial_files,
                reads,
            },
        )
    }

    async fn stream_error(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<WitError>> {
        let err = self.table.get(&err)?;
        // A reader fails with a `StreamFailure` inside an `io::Error` (see
        // `reader`), or with the backend's error; anything else is not ours
        // to classify.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref());
        Ok(inner.and_then(|e| match e.downcast_ref::<StreamFailure>() {
            Some(failure) => Some(failure.0.clone()),
            None => e.downcast_ref::<object_store::Error>().map(map_error_ref),
        }))
    }
}

impl wit::HostStore for ObjectsHost<'_> {
    async fn get(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(self.key(&key));
        let result = guest_try!(store.get(&path).await.map_err(|e| backend_error(&label, e)));
        guest_try!(self.check_size(result.meta.size, "object"));
        // The body, then its copy for the guest.
        let _held = guest_try!(self.hold(result.meta.size.saturating_mul(2)));
        Ok(result
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| backend_error(&label, e)))
    }

    async fn get_range(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        offset: u64,
        length: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(self.key(&key));
        guest_try!(self.check_size(length, "range"));
        if length == 0 {
            return Ok(Ok(Vec::new()));
        }
        // Clamp to the object's end, as the WIT promises "fewer at the end",
        // where backends would answer a range past the end with an error.
        let meta = guest_try!(
            store
                .head(&path)
                .await
                .map_err(|e| backend_error(&label, e))
        );
        let start = offset.min(meta.size);
        let end = offset.saturating_add(length).min(meta.size);
        if start == end {
            return Ok(Ok(Vec::new()));
        }
        let _held = guest_try!(self.hold((end - start).saturating_mul(2)));
        Ok(store
            .get_range(&path, start..end)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| backend_error(&label, e)))
    }

    async fn put(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        data: Vec<u8>,
        options: Option<Resource<WriteOptions>>,
    ) -> wasmtime::Result<Result<wit::ObjectMeta, WitError>> {
        let (store, label) = self.store(&this)?;
        let options = match options {
            Some(options) => self.table.get(&options)?.clone(),
            None => WriteOptions::default(),
        };
        let path = guest_try!(self.key(&key));
        guest_try!(self.check_size(data.len() as u64, "object"));
        let size = data.len() as u64;
        // The body the guest passed, held until the backend has it.
        let _held = guest_try!(self.hold(size));
        let put_options = PutOptions {
            mode: guest_try!(options.mode()),
            attributes: options.attributes(),
            ..PutOptions::default()
        };
        let put = guest_try!(
            store
                .put_opts(&path, PutPayload::from(data), put_options)
                .await
                .map_err(|e| backend_error(&label, e))
        );
        Ok(Ok(wit::ObjectMeta {
            key,
            kind: wit::ObjectKind::File,
            size,
            last_modified: chrono::Utc::now().timestamp_micros(),
            etag: put.e_tag,
            version: put.version,
            content_type: options.content_type,
        }))
    }

    async fn head(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<wit::ObjectMeta, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(self.key(&key));
        Ok(head_with_attributes(&store, &path)
            .await
            .map_err(|e| backend_error(&label, e)))
    }

    async fn delete(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(self.key(&key));
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(Ok(())),
            Err(e) => Ok(Err(backend_error(&label, e))),
        }
    }

    async fn copy(
        &mut self,
        this: Resource<StoreHandle>,
        from: String,
        to: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let (store, label) = self.store(&this)?;
        let from = guest_try!(self.key(&from));
        let to = guest_try!(self.key(&to));
        Ok(store
            .copy(&from, &to)
            .await
            .map_err(|e| backend_error(&label, e)))
    }

    async fn list(
        &mut self,
        this: Resource<StoreHandle>,
        prefix: String,
        delimiter: Option<String>,
        page_token: Option<String>,
        page_size: u32,
    ) -> wasmtime::Result<Result<wit::ListPage, WitError>> {
        let handle = self.table.get(&this)?;
        let (store, ordered, label) = (handle.store.clone(), handle.ordered, handle.label.clone());
        // A file being written is not an object yet: S3 shows nothing until
        // the upload completes, and neither may HDFS.
        let partial_files = handle.partial_files;
        let hidden = |meta: &ObjectMeta| partial_files && is_partial_file(&meta.location);
        let prefix = guest_try!(self.prefix(&prefix));
        // `max(1)`: `clamp` panics on a maximum below its minimum.
        let page_size = page_size.clamp(1, self.ctx.limits.max_list_page.max(1)) as usize;
        match delimiter.as_deref() {
            None => {}
            Some("/") => {
                return Ok(list_delimited(
                    &store,
                    &label,
                    prefix.as_ref(),
                    page_token,
                    page_size,
                    hidden,
                    &self.ctx.memory,
                )
                .await);
            }
            Some(other) => {
                return Ok(Err(WitError::Unsupported(format!(
                    "delimiter {other:?}: only \"/\" is supported"
                ))
                .clipped(self.ctx.limits.max_error_bytes as usize)));
            }
        }
        // The token is the last key of the previous page: listing resumes
        // strictly after it (S3's start-after), so it is stateless on the host.
        let mut stream = match &page_token {
            Some(token) => {
                let offset = guest_try!(self.key(token));
                store.list_with_offset(prefix.as_ref(), &offset)
            }
            None => store.list(prefix.as_ref()),
        };
        let mut objects = Vec::with_capacity(page_size);
        let mut more = false;
        // What the page (or the whole walk, unordered) holds on the host.
        let mut held = self.ctx.memory.reservation();
        if ordered {
            // Take one more than a page to learn whether another page
            // exists; dropping the stream stops the backend's listing there.
            while let Some(meta) = stream.next().await {
                let meta = guest_try!(meta.map_err(|e| backend_error(&label, e)));
                if hidden(&meta) {
                    continue;
                }
                if objects.len() == page_size {
                    more = true;
                    break;
                }
                guest_try!(held.grow(listed_bytes(&meta)).map_err(too_large));
                objects.push(meta_to_wit(&meta));
            }
        } else {
            // A directory walk comes in no particular order, so the smallest
            // keys after the token can only be found by reading them all.
            // Bounded, because the guest picks the prefix.
            let mut all = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = guest_try!(meta.map_err(|e| backend_error(&label, e)));
                if hidden(&meta) {
                    continue;
                }
                if all.len() >= MAX_UNORDERED_LISTING {
                    return Ok(Err(WitError::TooLarge(format!(
                        "more than {MAX_UNORDERED_LISTING} objects under this prefix of a local store; \
                         list a narrower prefix"
                    ))));
                }
                guest_try!(held.grow(listed_bytes(&meta)).map_err(too_large));
                all.push(meta_to_wit(&meta));
            }
            all.sort_by(|a, b| a.key.cmp(&b.key));
            more = all.len() > page_size;
            all.truncate(page_size);
            objects = all;
        }
        let next_page_token = if more {
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        Ok(Ok(wit::ListPage {
            objects,
            prefixes: Vec::new(),
            next_page_token,
        }))
    }

    async fn reader(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(self.key(&key));
        let result = guest_try!(store.get(&path).await.map_err(|e| backend_error(&label, e)));
        let stream: DynInputStream =
            Box::new(reader::ObjectReader::new(result.into_stream(), label));
        push_resource(self.table, stream)
    }

    async fn writer(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        options: Option<Resource<WriteOptions>>,
    ) -> wasmtime::Result<Result<Resource<Upload>, WitError>> {
        let (store, label) = self.store(&this)?;
        let options = match options {
            Some(options) => self.table.get(&options)?.clone(),
            None => WriteOptions::default(),
        };
        let path = guest_try!(self.key(&key));
        // A streamed upload may become a multipart upload, and object_store
        // has no conditional multipart completion: refusing is honest where
        // checking before the upload would race with other writers.
        if !matches!(guest_try!(options.mode()), PutMode::Overwrite) {
            return Ok(Err(WitError::Unsupported(
                "`if-match` and `if-none-match` are supported by `put`, not yet by `writer`".into(),
            )));
        }
        push_resource(
            self.table,
            Upload::start(store, label, path, options.attributes(), &self.ctx.memory),
        )
    }

    async fn read_many(
        &mut self,
        this: Resource<StoreHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Resource<ManyReader>, WitError>> {
        // Every key's length before any request: a huge key is refused
        // whole, without being quoted back, as `get` refuses it.
        for key in &keys {
            guest_try!(self.check_key_length(key));
        }
        let max = self.ctx.limits.max_object_bytes;
        let reader = ManyReader::keys(self.table.get(&this)?, max, keys);
        push_resource(self.table, reader)
    }

    async fn read_prefix(
        &mut self,
        this: Resource<StoreHandle>,
        prefix: String,
    ) -> wasmtime::Result<Result<Resource<ManyReader>, WitError>> {
        guest_try!(self.check_key_length(&prefix));
        let max = self.ctx.limits.max_object_bytes;
        let reader = guest_try!(ManyReader::prefix(self.table.get(&this)?, max, &prefix));
        push_resource(self.table, reader)
    }

    async fn drop(&mut self, this: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit::HostWriter for ObjectsHost<'_> {
    async fn body(
        &mut self,
        this: Resource<Upload>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, WitError>> {
        let upload = self.table.get_mut(&this)?;
        if upload.body_taken {
            return Ok(Err(WitError::InvalidInput(
                "the writer's body was already taken".into(),
            )));
        }
        upload.body_taken = true;
        let body: DynOutputStream = Box::new(UploadBody {
            tx: upload.tx.clone(),
            permit: None,
            memory: self.ctx.memory.clone(),
        });
        push_resource(self.table, body)
    }

    async fn finish(
        &mut self,
        this: Resource<Upload>,
    ) -> wasmtime::Result<Result<wit::ObjectMeta, WitError>> {
        let upload = self.table.delete(this)?;
        let (reply, done) = oneshot::channel();
        if upload.tx.send(UploadMsg::Finish(reply)).await.is_err() {
            return Ok(Err(WitError::Backend(
                "the upload stopped unexpectedly".into(),
            )));
        }
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Ok(Err(e)),
            Err(_) => {
                return Ok(Err(WitError::Backend(
                    "the upload stopped unexpectedly".into(),
                )));
            }
        }
        Ok(head_with_attributes(&upload.store, &upload.key)
            .await
            .map_err(|e| backend_error(&upload.label, e)))
    }

    async fn drop(&mut self, this: Resource<Upload>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit::HostWriteOptions for ObjectsHost<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<WriteOptions>> {
        // A constructor cannot return an error: a full table traps here.
        Ok(self.table.push(WriteOptions::default())?)
    }

    async fn set_if_match(
        &mut self,
        this: Resource<WriteOptions>,
        etag: Option<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        if let Some(etag) = &etag {
            guest_try!(header_value("an entity tag", etag));
        }
        self.table.get_mut(&this)?.if_match = etag;
        Ok(Ok(()))
    }

    async fn set_if_none_match(
        &mut self,
        this: Resource<WriteOptions>,
        etag: Option<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let create_only = match etag.as_deref() {
            None => false,
            Some("*") => true,
            // object_store's puts can only ask "no object at all".
            Some(_) => {
                return Ok(Err(WitError::Unsupported(
                    "`if-none-match` takes only \"*\" (no object at the key)".into(),
                )));
            }
        };
        self.table.get_mut(&this)?.create_only = create_only;
        Ok(Ok(()))
    }

    async fn set_content_type(
        &mut self,
        this: Resource<WriteOptions>,
        content_type: Option<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        if let Some(content_type) = &content_type {
            guest_try!(header_value("a content type", content_type));
        }
        self.table.get_mut(&this)?.content_type = content_type;
        Ok(Ok(()))
    }

    async fn drop(&mut self, this: Resource<WriteOptions>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::ResourceTable;

    use super::*;
    use crate::objects::error::{REQUEST_FAILED, UNAVAILABLE};
    use crate::objects::{ObjectsCtx, ObjectsView};

    /// What a guest learns from `stream-error` about a failed stream
    /// whose error is `error`.
    async fn classify(error: wasmtime::Error) -> Option<WitError> {
        let mut ctx = ObjectsCtx::none();
        let mut table = ResourceTable::new();
        let err = table.push(error).unwrap();
        let mut view = ObjectsView {
            ctx: &mut ctx,
            table: &mut table,
        };
        wit::Host::stream_error(&mut view, err).await.unwrap()
    }

    #[tokio::test]
    async fn a_reader_cut_off_is_a_backend_error() {
        // As a reader fails: the backend's error inside an `io::Error`.
        let cut_off = object_store::Error::Generic {
            store: "S3",
            source: "connection reset by peer".into(),
        };
        let error = classify(std::io::Error::other(cut_off).into()).await;
        // The kind, never the backend's own words.
        assert!(
            matches!(&error, Some(WitError::Backend(m)) if m == REQUEST_FAILED),
            "{error:?}"
        );
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "http://10.1.2.3:9000/bucket-name",
            )),
        };
        let error = classify(std::io::Error::other(refused).into()).await;
        assert!(
            matches!(&error, Some(WitError::Backend(m)) if m == UNAVAILABLE),
            "{error:?}"
        );
        let gone = object_store::Error::NotFound {
            path: "k".into(),
            source: "gone".into(),
        };
        let error = classify(std::io::Error::other(gone).into()).await;
        assert!(matches!(error, Some(WitError::NotFound)), "{error:?}");
        // Not from a backend: unknown, so the guest must not retry on it.
        assert!(classify(wasmtime::format_err!("other")).await.is_none());
        let plain = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(classify(plain.into()).await.is_none());
    }
}
