//! The `objects` host traits on [`ObjectsView`]: each call observed (see
//! [`crate::observe`]), then made on [`ObjectsHost`]. The option and
//! stream plumbing (`write-options`, `writer.body`, `stream-error`) is
//! handed on as it is.

use tracing::Instrument;
use wasmtime::component::Resource;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::{ManyReader, ObjectsHost, ObjectsView, StoreHandle, Upload, WriteOptions};
use crate::ObjectsError as WitError;
use crate::bindings::caisson::task::objects as wit;
use crate::observe::Call;

const OBJECTS: &str = "objects";

type Answer<T> = wasmtime::Result<Result<T, WitError>>;

impl ObjectsView<'_> {
    fn host(&mut self) -> ObjectsHost<'_> {
        ObjectsHost {
            ctx: &mut *self.ctx,
            table: &mut *self.table,
        }
    }

    /// A call on the store `this`, about `key`.
    fn call(&self, function: &'static str, this: &Resource<StoreHandle>, key: &str) -> Call {
        let label = self.table.get(this).ok().map(|h| h.label.clone());
        let mut call = Call::on(OBJECTS, function, label);
        call.key(key);
        call
    }

    /// Remembers the store label of a reader or upload `made` by `call`.
    fn remember<T: 'static>(&mut self, call: &Call, made: &Answer<Resource<T>>) {
        if let (Ok(Ok(resource)), Some(label)) = (made, call.label()) {
            self.ctx.handle_labels.insert(resource.rep(), label);
        }
    }
}

impl wit::Host for ObjectsView<'_> {
    async fn open(&mut self, label: String) -> Answer<Resource<StoreHandle>> {
        let granted = self.ctx.granted.contains_key(&label);
        let call = Call::start(OBJECTS, "open", &label, granted);
        let span = call.span();
        let result = wit::Host::open(&mut self.host(), label)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn stream_error(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<WitError>> {
        wit::Host::stream_error(&mut self.host(), err).await
    }
}

impl wit::HostStore for ObjectsView<'_> {
    async fn get(&mut self, this: Resource<StoreHandle>, key: String) -> Answer<Vec<u8>> {
        let mut call = self.call("store.get", &this, &key);
        let span = call.span();
        let result = wit::HostStore::get(&mut self.host(), this, key)
            .instrument(span)
            .await;
        if let Ok(Ok(data)) = &result {
            call.read(data.len() as u64);
        }
        call.end(result)
    }

    async fn get_range(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        offset: u64,
        length: u64,
    ) -> Answer<Vec<u8>> {
        let mut call = self.call("store.get-range", &this, &key);
        let span = call.span();
        let result = wit::HostStore::get_range(&mut self.host(), this, key, offset, length)
            .instrument(span)
            .await;
        if let Ok(Ok(data)) = &result {
            call.read(data.len() as u64);
        }
        call.end(result)
    }

    async fn put(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        data: Vec<u8>,
        options: Option<Resource<WriteOptions>>,
    ) -> Answer<wit::ObjectMeta> {
        let mut call = self.call("store.put", &this, &key);
        let size = data.len() as u64;
        let span = call.span();
        let result = wit::HostStore::put(&mut self.host(), this, key, data, options)
            .instrument(span)
            .await;
        if let Ok(Ok(_)) = &result {
            call.wrote(size);
        }
        call.end(result)
    }

    async fn head(&mut self, this: Resource<StoreHandle>, key: String) -> Answer<wit::ObjectMeta> {
        let call = self.call("store.head", &this, &key);
        let span = call.span();
        let result = wit::HostStore::head(&mut self.host(), this, key)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn delete(&mut self, this: Resource<StoreHandle>, key: String) -> Answer<()> {
        let call = self.call("store.delete", &this, &key);
        let span = call.span();
        let result = wit::HostStore::delete(&mut self.host(), this, key)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn copy(&mut self, this: Resource<StoreHandle>, from: String, to: String) -> Answer<()> {
        let call = self.call("store.copy", &this, &from);
        let span = call.span();
        let result = wit::HostStore::copy(&mut self.host(), this, from, to)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn list(
        &mut self,
        this: Resource<StoreHandle>,
        prefix: String,
        delimiter: Option<String>,
        page_token: Option<String>,
        page_size: u32,
    ) -> Answer<wit::ListPage> {
        let call = self.call("store.list", &this, &prefix);
        let span = call.span();
        let result = wit::HostStore::list(
            &mut self.host(),
            this,
            prefix,
            delimiter,
            page_token,
            page_size,
        )
        .instrument(span)
        .await;
        call.end(result)
    }

    async fn reader(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> Answer<Resource<DynInputStream>> {
        // The stream's bytes move through `wasi:io` reads, not host calls
        // of this interface: only the open is seen.
        let call = self.call("store.reader", &this, &key);
        let span = call.span();
        let result = wit::HostStore::reader(&mut self.host(), this, key)
            .instrument(span)
            .await;
        call.end(result)
    }

    async fn writer(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        options: Option<Resource<WriteOptions>>,
    ) -> Answer<Resource<Upload>> {
        let call = self.call("store.writer", &this, &key);
        let span = call.span();
        let result = wit::HostStore::writer(&mut self.host(), this, key, options)
            .instrument(span)
            .await;
        self.remember(&call, &result);
        call.end(result)
    }

    async fn read_many(
        &mut self,
        this: Resource<StoreHandle>,
        keys: Vec<String>,
    ) -> Answer<Resource<ManyReader>> {
        let first = keys.first().cloned().unwrap_or_default();
        let call = self.call("store.read-many", &this, &first);
        let span = call.span();
        let result = wit::HostStore::read_many(&mut self.host(), this, keys)
            .instrument(span)
            .await;
        self.remember(&call, &result);
        call.end(result)
    }

    async fn read_prefix(
        &mut self,
        this: Resource<StoreHandle>,
        prefix: String,
    ) -> Answer<Resource<ManyReader>> {
        let call = self.call("store.read-prefix", &this, &prefix);
        let span = call.span();
        let result = wit::HostStore::read_prefix(&mut self.host(), this, prefix)
            .instrument(span)
            .await;
        self.remember(&call, &result);
        call.end(result)
    }

    async fn drop(&mut self, this: Resource<StoreHandle>) -> wasmtime::Result<()> {
        wit::HostStore::drop(&mut self.host(), this).await
    }
}

impl wit::HostWriter for ObjectsView<'_> {
    async fn body(&mut self, this: Resource<Upload>) -> Answer<Resource<DynOutputStream>> {
        wit::HostWriter::body(&mut self.host(), this).await
    }

    async fn finish(&mut self, this: Resource<Upload>) -> Answer<wit::ObjectMeta> {
        let label = self.ctx.handle_labels.get(this.rep());
        let mut call = Call::on(OBJECTS, "writer.finish", label);
        let span = call.span();
        let result = wit::HostWriter::finish(&mut self.host(), this)
            .instrument(span)
            .await;
        if let Ok(Ok(meta)) = &result {
            call.wrote(meta.size);
        }
        call.end(result)
    }

    async fn drop(&mut self, this: Resource<Upload>) -> wasmtime::Result<()> {
        self.ctx.handle_labels.remove(this.rep());
        wit::HostWriter::drop(&mut self.host(), this).await
    }
}

impl wit::HostWriteOptions for ObjectsView<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<WriteOptions>> {
        wit::HostWriteOptions::new(&mut self.host()).await
    }

    async fn set_if_match(
        &mut self,
        this: Resource<WriteOptions>,
        etag: Option<String>,
    ) -> Answer<()> {
        wit::HostWriteOptions::set_if_match(&mut self.host(), this, etag).await
    }

    async fn set_if_none_match(
        &mut self,
        this: Resource<WriteOptions>,
        etag: Option<String>,
    ) -> Answer<()> {
        wit::HostWriteOptions::set_if_none_match(&mut self.host(), this, etag).await
    }

    async fn set_content_type(
        &mut self,
        this: Resource<WriteOptions>,
        content_type: Option<String>,
    ) -> Answer<()> {
        wit::HostWriteOptions::set_content_type(&mut self.host(), this, content_type).await
    }

    async fn drop(&mut self, this: Resource<WriteOptions>) -> wasmtime::Result<()> {
        wit::HostWriteOptions::drop(&mut self.host(), this).await
    }
}

impl wit::HostManyReader for ObjectsView<'_> {
    async fn next(
        &mut self,
        this: Resource<ManyReader>,
    ) -> Answer<Option<(String, Result<Vec<u8>, WitError>)>> {
        let label = self.ctx.handle_labels.get(this.rep());
        let mut call = Call::on(OBJECTS, "many-reader.next", label);
        let span = call.span();
        let result = wit::HostManyReader::next(&mut self.host(), this)
            .instrument(span)
            .await;
        if let Ok(Ok(Some((key, object)))) = &result {
            call.key(key);
            if let Ok(data) = object {
                call.read(data.len() as u64);
            }
        }
        call.end(result)
    }

    async fn drop(&mut self, this: Resource<ManyReader>) -> wasmtime::Result<()> {
        self.ctx.handle_labels.remove(this.rep());
        wit::HostManyReader::drop(&mut self.host(), this).await
    }
}
