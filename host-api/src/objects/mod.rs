//! Object storage for tasks, on [`object_store`].
//!
//! The operator configures stores by label (`[objects.raw]` in
//! `caisson.toml`); [`ObjectStores`] builds one `Arc<dyn ObjectStore>` per
//! label when the worker starts, and every run gets an [`ObjectsCtx`] holding
//! only the labels it was granted. Credentials stay in the host's builder: the
//! guest sees a label and keys, nothing else.
//!
//! Every store is wrapped in a
//! [`PrefixStore`](object_store::prefix::PrefixStore) rooted at its
//! configured prefix, and every key the guest passes is checked by
//! [`parse_key`] before it reaches a backend, so a key can never address
//! anything outside that root.
//!
//! Large objects move as streams: `reader` hands the guest a `wasi:io`
//! input-stream fed chunk by chunk from the backend, and `writer` an
//! output-stream drained into an [`object_store::buffered::BufWriter`], which
//! switches to a multipart upload once its buffer fills. Neither side ever
//! holds a whole large object.
//!
//! Many small objects move through `read-many` and `read-prefix`
//! ([`ManyReader`]): the host keeps several GETs in flight and hands the
//! objects over in order, holding a bounded number of bytes for the run.

use std::sync::Arc;

use object_store::ObjectStore;
use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::bindings::caisson::task::objects as wit;

mod config;
mod error;
mod host;
mod key;
mod observed;
mod read_many;
mod reader;
mod stores;
mod upload;

pub use config::{ObjectLimits, ObjectsConfig, StoreConfig};
pub use error::{REQUEST_FAILED, UNAVAILABLE};
pub use key::parse_key;
pub use read_many::{ManyReader, ReadManyConfig};
pub use stores::{ObjectStores, ObjectsCtx, install_crypto_provider};
pub use upload::{Upload, WriteOptions};

/// The guest's handle on an opened store.
pub struct StoreHandle {
    store: Arc<dyn ObjectStore>,
    ordered: bool,
    /// The label it was opened by, for the server's log.
    label: Arc<str>,
    partial_files: bool,
    /// How `read-many` and `read-prefix` read from it.
    reads: read_many::Reads,
}

/// A run's object stores plus its resource table: what the linker serves
/// the guest's calls on. Each call is observed (a span, a record for the
/// metrics, see [`crate::observe`]) and made on an `ObjectsHost`.
pub struct ObjectsView<'a> {
    pub ctx: &'a mut ObjectsCtx,
    pub table: &'a mut ResourceTable,
}

/// The same borrow as [`ObjectsView`]: the generated host traits are
/// implemented on it with the calls themselves (`host`, `read_many`).
pub(crate) struct ObjectsHost<'a> {
    pub(crate) ctx: &'a mut ObjectsCtx,
    pub(crate) table: &'a mut ResourceTable,
}

struct HasObjects;

impl HasData for HasObjects {
    type Data<'a> = ObjectsView<'a>;
}

/// Adds the `caisson:task/objects` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> ObjectsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasObjects>(linker, f)
}
