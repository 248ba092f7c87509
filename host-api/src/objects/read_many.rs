//! `read-many` and `read-prefix`: many whole objects read with several
//! GETs in flight, handed to the guest in order.
//!
//! A task that reads small objects one after another waits on the store's
//! latency, not on work. Here the host keeps up to `read_concurrency`
//! requests in flight per reader (`futures`' `buffered`, which yields in
//! order) on a background task, so the requests also overlap the guest's
//! own work on the objects it already has.
//!
//! # Memory
//!
//! Objects read ahead wait in host memory until the guest takes them. A
//! [`ReadBudget`] caps those bytes per run and store label, whatever the
//! number of readers the run opens on it: `read_buffer_bytes`, plus at most
//! one object (itself capped by `max_object_bytes`) that the guest is
//! waiting for. That exception is what keeps a reader from deadlocking: an
//! object the guest waits for never waits for bytes held by objects behind
//! it in the order, or by another reader the guest has stopped reading.
//!
//! Every object held is also charged to the run's memory budget
//! ([`crate::memory`]), with the guest's linear memory and the host's
//! other buffers: an object that does not fit there fails at its place
//! with `too-large`. This budget stays a bound of its own, set per store in
//! `caisson.toml`, on how far the host reads ahead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;
use wasmtime::component::Resource;

use super::config::StoreConfig;
use super::error::{backend_error, too_large};
use super::key::{is_partial_file, parse_key, parse_prefix};
use super::{ObjectsHost, StoreHandle};
use crate::bindings::caisson::task::objects as wit;
use crate::memory::{MemoryBudget, Reservation};
use crate::{ConfigError, ObjectsError as WitError, at_least_one};

/// Requests in flight per reader when the store's table does not say.
/// Enough to hide loopback and LAN latency on a 2-core worker without
/// flooding the store.
pub const DEFAULT_READ_CONCURRENCY: usize = 16;
/// Bytes read ahead per run and store when the table does not say.
pub const DEFAULT_READ_BUFFER_BYTES: u64 = 64 << 20;
/// The most requests in flight per reader a table may ask for: more only
/// opens connections, it does not read faster.
pub const MAX_READ_CONCURRENCY: usize = 1024;
/// The most keys a listing of a store without ordered listings (a local
/// directory, HDFS) collects to sort, as `list` does.
const MAX_UNORDERED_LISTING: usize = 1_000_000;
/// Keys a `read-prefix` reader lists ahead of its reads: one page of an S3
/// listing. The store's listing asks for the next page only once its
/// current one is taken; read ahead, that request overlaps the reads of the
/// current page instead of stalling them when they catch up with it.
const LIST_AHEAD: usize = 1000;

/// How `read-many` and `read-prefix` read from one store: the
/// `read_concurrency` and `read_buffer_bytes` keys of its
/// `[objects.<label>]` table.
///
/// ```toml
/// [objects.raw]
/// type = "s3"
/// bucket = "logs"
/// read_concurrency = 16         # requests in flight per reader
/// read_buffer_bytes = 67108864  # bytes read ahead, per run (64 MiB)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadManyConfig {
    /// Requests in flight per reader.
    pub concurrency: usize,
    /// Bytes of objects the host holds for the task, per run, ahead of
    /// what it has taken.
    pub buffer_bytes: u64,
}

impl Default for ReadManyConfig {
    fn default() -> Self {
        ReadManyConfig {
            concurrency: DEFAULT_READ_CONCURRENCY,
            buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
        }
    }
}

impl ReadManyConfig {
    /// Checks both values; `table` is the store's table (`objects.raw`),
    /// which errors name with the key.
    pub fn validate(&self, table: &str) -> Result<(), ConfigError> {
        at_least_one(table, "read_concurrency", self.concurrency as u64)?;
        if self.concurrency > MAX_READ_CONCURRENCY {
            return Err(ConfigError::Key {
                path: format!("{table}.read_concurrency"),
                message: format!(
                    "{} is more than {MAX_READ_CONCURRENCY} requests in flight",
                    self.concurrency
                ),
                source: None,
            });
        }
        at_least_one(table, "read_buffer_bytes", self.buffer_bytes)
    }
}

impl StoreConfig {
    /// This store's `read_concurrency` and `read_buffer_bytes`, with the
    /// defaults for what the table leaves out.
    pub fn read_many(&self) -> ReadManyConfig {
        let (concurrency, buffer_bytes) = match self {
            StoreConfig::S3 {
                read_concurrency,
                read_buffer_bytes,
                ..
            }
            | StoreConfig::Local {
                read_concurrency,
                read_buffer_bytes,
                ..
            }
            | StoreConfig::Memory {
                read_concurrency,
                read_buffer_bytes,
                ..
            }
            | StoreConfig::Hdfs {
                read_concurrency,
                read_buffer_bytes,
                ..
            } => (*read_concurrency, *read_buffer_bytes),
        };
        let default = ReadManyConfig::default();
        ReadManyConfig {
            concurrency: concurrency.unwrap_or(default.concurrency),
            buffer_bytes: buffer_bytes.unwrap_or(default.buffer_bytes),
        }
    }
}

/// The bytes read ahead for one run on one store label, shared by every
/// reader the run opens there (see the module doc).
pub(crate) struct ReadBudget {
    limit: u64,
    used: Mutex<u64>,
    /// Signalled when bytes are released or the guest starts waiting.
    changed: Notify,
}

impl ReadBudget {
    fn new(limit: u64) -> Arc<Self> {
        Arc::new(ReadBudget {
            limit,
            used: Mutex::new(0),
            changed: Notify::new(),
        })
    }

    /// Waits until `bytes` fit, or until the guest waits for object
    /// `index` of `place` (which then may go over: see the module doc).
    async fn reserve(self: &Arc<Self>, place: &Place, index: u64, bytes: u64) -> Held {
        loop {
            // Registered before the check, so a release between the check
            // and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
                if used.saturating_add(bytes) <= self.limit || place.awaited(index) {
                    *used += bytes;
                    return Held {
                        budget: self.clone(),
                        bytes,
                    };
                }
            }
            changed.await;
        }
    }

    /// Bytes currently held, for tests.
    #[cfg(test)]
    fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bytes of a [`ReadBudget`] held by one object until the guest takes it
/// (or the reader is dropped).
struct Held {
    budget: Arc<ReadBudget>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used -= self.bytes;
        drop(used);
        self.budget.changed.notify_waiters();
    }
}

/// Where the guest is in one reader's order.
#[derive(Default)]
struct Place {
    /// The index of the next object the guest takes.
    next: AtomicU64,
    /// Whether the guest is inside `next`, waiting for that object.
    waiting: AtomicBool,
}

impl Place {
    fn awaited(&self, index: u64) -> bool {
        self.waiting.load(Ordering::SeqCst) && self.next.load(Ordering::SeqCst) == index
    }
}

/// What a [`StoreHandle`] needs to start readers: its store's settings and
/// the run's budget for its label.
#[derive(Clone)]
pub(super) struct Reads {
    concurrency: usize,
    budget: Arc<ReadBudget>,
    /// The run's memory budget.
    memory: MemoryBudget,
}

impl Reads {
    /// The settings for `label` in this run; the budget is made when the
    /// run first opens the label and shared by every later handle.
    /// `budgets` is the run's, by label (`ObjectsCtx::read_budgets`).
    pub(super) fn for_run(
        budgets: &mut HashMap<String, Arc<ReadBudget>>,
        label: &str,
        config: ReadManyConfig,
        memory: &MemoryBudget,
    ) -> Self {
        let budget = budgets
            .entry(label.to_owned())
            .or_insert_with(|| ReadBudget::new(config.buffer_bytes))
            .clone();
        Reads {
            concurrency: config.concurrency,
            budget,
            memory: memory.clone(),
        }
    }
}

/// One place in a reader's order, as the background task delivers it.
enum Entry {
    Object {
        key: String,
        data: Result<Bytes, WitError>,
        /// Released when the guest takes the object.
        _held: Option<(Held, Reservation)>,
    },
    /// A `read-prefix` listing failed; nothing follows.
    ListingFailed(WitError),
}

/// The objects of a `read-many` or `read-prefix` call, read by a
/// background task and delivered in order. Dropping it (the guest drops
/// the resource, or the run ends) stops the requests in flight.
pub struct ManyReader {
    entries: mpsc::Receiver<Entry>,
    place: Arc<Place>,
    budget: Arc<ReadBudget>,
    driver: tokio::task::JoinHandle<()>,
    done: bool,
}

impl Drop for ManyReader {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// What one fetch needs besides its key.
#[derive(Clone)]
struct Fetcher {
    store: Arc<dyn ObjectStore>,
    label: Arc<str>,
    max_object_bytes: u64,
    budget: Arc<ReadBudget>,
    place: Arc<Place>,
    memory: MemoryBudget,
}

impl Fetcher {
    /// Reads the object at `key`, the `index`th of the order, as `get` does.
    async fn fetch(self, index: u64, key: String) -> Entry {
        let fetched = async {
            let path = parse_key(&key)?;
            let result =
                (self.store.get(&path).await).map_err(|e| backend_error(&self.label, e))?;
            let size = result.meta.size;
            if size > self.max_object_bytes {
                return Err(WitError::TooLarge(format!(
                    "object of {size} bytes is over the {}-byte limit for one call; \
                     use `reader` to stream it",
                    self.max_object_bytes
                )));
            }
            // The response's headers are in; its body waits for room.
            let held = self.budget.reserve(&self.place, index, size).await;
            let charged = (self
                .memory
                .reserve(usize::try_from(size).unwrap_or(usize::MAX)))
            .map_err(too_large)?;
            let bytes = (result.bytes().await).map_err(|e| backend_error(&self.label, e))?;
            Ok((bytes, (held, charged)))
        };
        match fetched.await {
            Ok((bytes, held)) => Entry::Object {
                key,
                data: Ok(bytes),
                _held: Some(held),
            },
            Err(e) => Entry::Object {
                key,
                data: Err(e),
                _held: None,
            },
        }
    }
}

impl ManyReader {
    /// A reader of `keys`, in that order. A bad key fails at its place.
    pub(super) fn keys(handle: &StoreHandle, max_object_bytes: u64, keys: Vec<String>) -> Self {
        Self::start(
            handle,
            max_object_bytes,
            stream::iter(keys.into_iter().map(Ok)).boxed(),
        )
    }

    /// A reader of every object under `prefix`, in key order.
    pub(super) fn prefix(
        handle: &StoreHandle,
        max_object_bytes: u64,
        prefix: &str,
    ) -> Result<Self, WitError> {
        let prefix = parse_prefix(prefix)?;
        let listing = handle.store.list(prefix.as_ref());
        let label = handle.label.clone();
        let partial_files = handle.partial_files;
        let memory = handle.reads.memory.clone();
        // A file being written is not an object yet (as in `list`).
        let keys = listing
            .try_filter(move |meta| {
                std::future::ready(!(partial_files && is_partial_file(&meta.location)))
            })
            .map_ok(|meta| meta.location.to_string())
            .map_err(move |e| backend_error(&label, e));
        let keys = if handle.ordered {
            list_ahead(keys.boxed(), memory)
        } else {
            // A directory walk comes in no particular order: collect and
            // sort, bounded as `list` is, since the guest picks the prefix.
            stream::once(async move {
                let mut all = Vec::new();
                // The keys are held, charged to the run, until read.
                let mut held = memory.reservation();
                let mut keys = std::pin::pin!(keys);
                while let Some(key) = keys.next().await {
                    if all.len() >= MAX_UNORDERED_LISTING {
                        return Err(WitError::TooLarge(format!(
                            "more than {MAX_UNORDERED_LISTING} objects under this prefix of \
                             a store without ordered listings; read a narrower prefix"
                        )));
                    }
                    let key = key?;
                    held.grow(key.len() + size_of::<String>())
                        .map_err(too_large)?;
                    all.push(key);
                }
                all.sort_unstable();
                Ok((all, held))
            })
            .flat_map(|listed| match listed {
                Ok((all, held)) => stream::iter(all.into_iter().map(Ok))
                    .map(move |key| {
                        let _ = &held;
                        key
                    })
                    .boxed(),
                Err(e) => stream::iter([Err(e)]).boxed(),
            })
            .boxed()
        };
        Ok(Self::start(handle, max_object_bytes, keys))
    }

    fn start(
        handle: &StoreHandle,
        max_object_bytes: u64,
        keys: BoxStream<'static, Result<String, WitError>>,
    ) -> Self {
        let concurrency = handle.reads.concurrency;
        let place = Arc::new(Place::default());
        let fetcher = Fetcher {
            store: handle.store.clone(),
            label: handle.label.clone(),
            max_object_bytes,
            budget: handle.reads.budget.clone(),
            place: place.clone(),
            memory: handle.reads.memory.clone(),
        };
        let entries = keys
            .enumerate()
            .map(move |(index, key)| {
                let fetcher = fetcher.clone();
                async move {
                    match key {
                        Ok(key) => fetcher.fetch(index as u64, key).await,
                        Err(e) => Entry::ListingFailed(e),
                    }
                }
            })
            // In order, `concurrency` at a time.
            .buffered(concurrency);
        // Room for as many finished objects as are in flight: the budget,
        // not this channel, bounds the bytes.
        let (tx, rx) = mpsc::channel(concurrency);
        let driver = tokio::spawn(
            async move {
                let mut entries = std::pin::pin!(entries);
                while let Some(entry) = entries.next().await {
                    let last = matches!(entry, Entry::ListingFailed(_));
                    if tx.send(entry).await.is_err() || last {
                        break;
                    }
                }
            }
            // The backend's errors are logged with the run.
            .in_current_span(),
        );
        ManyReader {
            entries: rx,
            place,
            budget: handle.reads.budget.clone(),
            driver,
            done: false,
        }
    }

    /// The next entry, for the guest: see `many-reader.next` in the WIT.
    async fn next(&mut self) -> Result<Option<(String, Result<Vec<u8>, WitError>)>, WitError> {
        if self.done {
            return Ok(None);
        }
        self.place.waiting.store(true, Ordering::SeqCst);
        // The object the guest now waits for may go over the budget.
        self.budget.changed.notify_waiters();
        let entry = self.entries.recv().await;
        self.place.waiting.store(false, Ordering::SeqCst);
        self.place.next.fetch_add(1, Ordering::SeqCst);
        match entry {
            None => {
                self.done = true;
                Ok(None)
            }
            Some(Entry::ListingFailed(e)) => {
                self.done = true;
                Err(e)
            }
            // Dropping the entry releases its bytes once they are copied
            // out for the guest.
            Some(Entry::Object { key, data, .. }) => Ok(Some((key, data.map(Vec::from)))),
        }
    }
}

/// `keys`, listed up to [`LIST_AHEAD`] keys ahead of the caller by a task
/// of its own, which stops when the stream is dropped. The keys waiting
/// are charged to the run's `memory`.
fn list_ahead(
    keys: BoxStream<'static, Result<String, WitError>>,
    memory: MemoryBudget,
) -> BoxStream<'static, Result<String, WitError>> {
    let (tx, rx) = mpsc::channel(LIST_AHEAD);
    let lister = tokio::spawn(
        async move {
            let mut keys = keys;
            while let Some(key) = keys.next().await {
                let key = key.and_then(|key| {
                    let held =
                        (memory.reserve(key.len() + size_of::<String>())).map_err(too_large)?;
                    Ok((key, held))
                });
                let failed = key.is_err();
                if tx.send(key).await.is_err() || failed {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    stream::unfold((rx, AbortOnDrop(lister)), |(mut rx, lister)| async move {
        let key = rx.recv().await?;
        // The key's charge ends here: from now on it is an entry's.
        Some((key.map(|(key, _held)| key), (rx, lister)))
    })
    .boxed()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl wit::HostManyReader for ObjectsHost<'_> {
    async fn next(
        &mut self,
        this: Resource<ManyReader>,
    ) -> wasmtime::Result<Result<Option<(String, Result<Vec<u8>, WitError>)>, WitError>> {
        Ok(self.table.get_mut(&this)?.next().await)
    }

    async fn drop(&mut self, this: Resource<ManyReader>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The reader's order, bounds and failure paths on an in-memory store;
    //! `tests/all/read_many.rs` runs it on the real S3 server and HDFS.

    use std::fmt;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use async_trait::async_trait;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };
    use wasmtime::component::ResourceTable;

    use super::*;
    use crate::Grants;
    use crate::bindings::caisson::task::objects::{Host, HostManyReader, HostStore};
    use crate::objects::{ObjectStores, ObjectsCtx, ObjectsView};

    /// An in-memory store that counts GETs in flight and makes each take a
    /// little while, so that a reader's concurrency shows.
    #[derive(Debug)]
    struct Counting {
        inner: InMemory,
        in_flight: AtomicUsize,
        most: AtomicUsize,
    }

    impl fmt::Display for Counting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let result = self.inner.get_opts(location, options).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    struct Run {
        ctx: ObjectsCtx,
        table: ResourceTable,
    }

    impl Run {
        fn new(stores: &ObjectStores) -> Self {
            let grants = Grants::default().with_object_store("raw");
            Run {
                ctx: stores.ctx_for(&grants, Default::default()).unwrap(),
                table: ResourceTable::new(),
            }
        }

        fn view(&mut self) -> ObjectsView<'_> {
            ObjectsView {
                ctx: &mut self.ctx,
                table: &mut self.table,
            }
        }

        async fn open(&mut self) -> Resource<StoreHandle> {
            Host::open(&mut self.view(), "raw".into())
                .await
                .unwrap()
                .unwrap()
        }

        async fn read_many(
            &mut self,
            store: &Resource<StoreHandle>,
            keys: &[String],
        ) -> Resource<ManyReader> {
            let store = Resource::new_borrow(store.rep());
            HostStore::read_many(&mut self.view(), store, keys.to_vec())
                .await
                .unwrap()
                .unwrap()
        }

        async fn read_prefix(
            &mut self,
            store: &Resource<StoreHandle>,
            prefix: &str,
        ) -> Resource<ManyReader> {
            let store = Resource::new_borrow(store.rep());
            HostStore::read_prefix(&mut self.view(), store, prefix.into())
                .await
                .unwrap()
                .unwrap()
        }

        async fn next(
            &mut self,
            reader: &Resource<ManyReader>,
        ) -> Result<Option<(String, Result<Vec<u8>, WitError>)>, WitError> {
            let reader = Resource::new_borrow(reader.rep());
            HostManyReader::next(&mut self.view(), reader)
                .await
                .unwrap()
        }

        /// Every entry left, as (key, bytes or error).
        async fn drain(
            &mut self,
            reader: &Resource<ManyReader>,
        ) -> Vec<(String, Result<Vec<u8>, WitError>)> {
            let mut all = Vec::new();
            while let Some(entry) = self.next(reader).await.unwrap() {
                all.push(entry);
            }
            all
        }
    }

    fn body(i: usize) -> Vec<u8> {
        format!("object {i} ").repeat(i % 7 + 1).into_bytes()
    }

    async fn seed(store: &dyn ObjectStore, keys: &[String]) {
        for (i, key) in keys.iter().enumerate() {
            store
                .put(&Path::from(key.as_str()), body(i).into())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn objects_arrive_in_order_with_bounded_requests_in_flight() {
        let counting = Arc::new(Counting {
            inner: InMemory::new(),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        // Keys whose order is not their sort order.
        let keys: Vec<String> = (0..200)
            .map(|i| format!("in/{}", (i * 7919) % 1000))
            .collect();
        seed(counting.as_ref(), &keys).await;
        let shared: Arc<dyn ObjectStore> = counting.clone();
        let stores = ObjectStores::from_stores([("raw".to_string(), shared)]);
        let mut run = Run::new(&stores);
        let store = run.open().await;

        let mut asked = keys.clone();
        asked.insert(50, "in/missing".into());
        asked.insert(120, "../escape".into());
        let reader = run.read_many(&store, &asked).await;
        let got = run.drain(&reader).await;

        let got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            got_keys,
            asked.iter().map(String::as_str).collect::<Vec<_>>()
        );
        for (key, data) in &got {
            match key.as_str() {
                "in/missing" => assert!(matches!(data, Err(WitError::NotFound)), "{data:?}"),
                "../escape" => assert!(matches!(data, Err(WitError::InvalidInput(_))), "{data:?}"),
                _ => {
                    let i = keys.iter().position(|k| k == key).unwrap();
                    assert_eq!(data.as_deref().unwrap(), body(i), "{key}");
                }
            }
        }
        let most = counting.most.load(Ordering::SeqCst);
        assert!(
            (2..=DEFAULT_READ_CONCURRENCY).contains(&most),
            "{most} GETs were in flight at once"
        );
        // Finished: a further call says so again.
        assert!(run.next(&reader).await.unwrap().is_none());
    }

    /// A budget smaller than one object still delivers every object, one
    /// at a time, and never holds more than the budget plus the object the
    /// guest waits for; a second reader on the same label is not starved by
    /// a first one the guest stopped reading.
    #[tokio::test]
    async fn a_small_budget_bounds_the_bytes_and_never_deadlocks() {
        let config: crate::objects::ObjectsConfig = toml::from_str(
            "[raw]\ntype = \"memory\"\nread_concurrency = 8\nread_buffer_bytes = 100",
        )
        .unwrap();
        let stores = ObjectStores::from_config(&config).unwrap();
        let keys: Vec<String> = (0..40).map(|i| format!("k/{i:03}")).collect();
        let raw = stores.get("raw").unwrap();
        for key in &keys {
            raw.put(&Path::from(key.as_str()), vec![b'x'; 60].into())
                .await
                .unwrap();
        }
        let mut run = Run::new(&stores);
        let store = run.open().await;

        let first = run.read_many(&store, &keys).await;
        let (key, _) = run.next(&first).await.unwrap().unwrap();
        assert_eq!(key, "k/000");
        // Let the first reader fill the budget and stall behind it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let budget = run.table.get(&store).unwrap().reads.budget.clone();
        assert!(budget.used() <= 100, "{} bytes held", budget.used());

        let second = run.read_many(&store, &keys).await;
        let mut n = 0;
        while let Some((key, data)) = run.next(&second).await.unwrap() {
            assert_eq!(key, keys[n]);
            assert_eq!(data.unwrap().len(), 60);
            assert!(budget.used() <= 160, "{} bytes held", budget.used());
            n += 1;
        }
        assert_eq!(n, keys.len());
        assert_eq!(run.drain(&first).await.len(), keys.len() - 1);
        // Dropping a reader mid-way gives its bytes back.
        let third = run.read_many(&store, &keys).await;
        assert!(run.next(&third).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(20)).await;
        HostManyReader::drop(&mut run.view(), third).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_prefix_is_read_in_key_order_on_a_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let config: crate::objects::ObjectsConfig = toml::from_str(&format!(
            "[raw]\ntype = \"local\"\nroot = {:?}",
            dir.path().display().to_string()
        ))
        .unwrap();
        let stores = ObjectStores::from_config(&config).unwrap();
        // A directory walk would give `a/x/1` before `a.txt`; key order
        // does not.
        let keys = ["a.txt", "a/x/1", "b", "c/d"].map(String::from);
        seed(stores.get("raw").unwrap().as_ref(), &keys).await;
        let mut run = Run::new(&stores);
        let store = run.open().await;
        let reader = {
            let store = Resource::new_borrow(store.rep());
            HostStore::read_prefix(&mut run.view(), store, String::new())
                .await
                .unwrap()
                .unwrap()
        };
        let got: Vec<String> = run
            .drain(&reader)
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut sorted = keys.to_vec();
        sorted.sort();
        assert_eq!(got, sorted);

        let store = Resource::new_borrow(store.rep());
        let bad = HostStore::read_prefix(&mut run.view(), store, "../up".into())
            .await
            .unwrap();
        assert!(matches!(bad, Err(WitError::InvalidInput(_))));
    }

    /// An ordered store's prefix is listed ahead of the reads, a page at a
    /// time: every key still arrives once, in order; the keys waiting are
    /// charged to the run, and given back when the reader is dropped
    /// mid-way (its lister stops with it).
    #[tokio::test]
    async fn a_prefix_is_listed_ahead_in_order_and_charged_to_the_run() {
        use crate::memory::MemoryBudget;

        let config: crate::objects::ObjectsConfig =
            toml::from_str("[raw]\ntype = \"memory\"").unwrap();
        let stores = ObjectStores::from_config(&config).unwrap();
        let n = LIST_AHEAD * 2 + 500;
        let keys: Vec<String> = (0..n).map(|i| format!("in/{i:05}")).collect();
        seed(stores.get("raw").unwrap().as_ref(), &keys).await;
        stores
            .get("raw")
            .unwrap()
            .put(&Path::from("out/other"), vec![b'x'].into())
            .await
            .unwrap();
        let grants = Grants::default().with_object_store("raw");
        let memory = MemoryBudget::new(1 << 30);
        let mut run = Run::new(&stores);
        run.ctx =
            (stores.ctx_for(&grants, Default::default()).unwrap()).with_memory(memory.clone());
        let store = run.open().await;
        let reader = run.read_prefix(&store, "in").await;
        let got = run.drain(&reader).await;
        assert_eq!(got.len(), n);
        for (i, (key, data)) in got.iter().enumerate() {
            assert_eq!(key, &keys[i]);
            assert_eq!(data.as_deref().unwrap(), body(i), "{key}");
        }
        assert!(run.next(&reader).await.unwrap().is_none());

        let reader = run.read_prefix(&store, "in").await;
        assert_eq!(run.next(&reader).await.unwrap().unwrap().0, keys[0]);
        // The lister runs ahead of the reads, holding its keys.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(memory.used() > 0);
        HostManyReader::drop(&mut run.view(), reader).await.unwrap();
        for _ in 0..200 {
            if memory.used() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} bytes still charged after the reader", memory.used());
    }

    /// What a run's readers and writers hold is charged to the run's
    /// memory budget, refused with `too-large` past it, and given back
    /// when the run's resources go, as they do with its store.
    #[tokio::test]
    async fn host_buffers_are_charged_to_the_run_and_released_with_it() {
        use crate::bindings::caisson::task::objects::HostWriter;
        use crate::memory::MemoryBudget;

        let config: crate::objects::ObjectsConfig =
            toml::from_str("[raw]\ntype = \"memory\"").unwrap();
        let stores = ObjectStores::from_config(&config).unwrap();
        let keys: Vec<String> = (0..40).map(|i| format!("k/{i:03}")).collect();
        let raw = stores.get("raw").unwrap();
        for key in &keys {
            raw.put(&Path::from(key.as_str()), vec![b'x'; 1000].into())
                .await
                .unwrap();
        }
        let grants = Grants::default().with_object_store("raw");
        let memory = MemoryBudget::new(1 << 20);
        let mut run = Run::new(&stores);
        run.ctx =
            (stores.ctx_for(&grants, Default::default()).unwrap()).with_memory(memory.clone());
        let store = run.open().await;
        let reader = run.read_many(&store, &keys).await;
        let (_, first) = run.next(&reader).await.unwrap().unwrap();
        assert_eq!(first.unwrap().len(), 1000);
        let borrowed = Resource::new_borrow(store.rep());
        let writer = HostStore::writer(&mut run.view(), borrowed, "out".into(), None)
            .await
            .unwrap()
            .unwrap();
        let body = HostWriter::body(&mut run.view(), Resource::new_borrow(writer.rep()))
            .await
            .unwrap()
            .unwrap();
        let stream = run.table.get_mut(&body).unwrap();
        assert!(stream.check_write().unwrap() >= 5000);
        stream.write(vec![b'w'; 5000].into()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(memory.used() > 5000, "{} bytes charged", memory.used());

        // A budget with no room: each object fails at its place.
        let small = MemoryBudget::new(100);
        let mut tight = Run::new(&stores);
        tight.ctx = (stores.ctx_for(&grants, Default::default()).unwrap()).with_memory(small);
        let store = tight.open().await;
        let reader = tight.read_many(&store, &keys[..2]).await;
        for (_, data) in tight.drain(&reader).await {
            match data {
                Err(WitError::TooLarge(m)) => assert!(m.contains("(host buffers)"), "{m}"),
                other => panic!("expected too-large, got {other:?}"),
            }
        }

        // The run ends: its table goes, and with it every reservation
        // (the uploader's once its task has aborted the upload).
        drop(run);
        for _ in 0..200 {
            if memory.used() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} bytes still charged after the run", memory.used());
    }

    #[test]
    fn bad_settings_name_the_table_and_key() {
        for (table, key) in [
            ("read_concurrency = 0", "objects.raw.read_concurrency"),
            ("read_concurrency = 100000", "objects.raw.read_concurrency"),
            ("read_buffer_bytes = 0", "objects.raw.read_buffer_bytes"),
        ] {
            let store: StoreConfig =
                toml::from_str(&format!("type = \"memory\"\n{table}")).unwrap();
            let error = store.validate("objects.raw").unwrap_err().to_string();
            assert!(error.starts_with(key), "{table}: {error}");
        }
        let store: StoreConfig = toml::from_str("type = \"memory\"").unwrap();
        assert_eq!(store.read_many(), ReadManyConfig::default());
    }
}
