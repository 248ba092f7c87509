//! Object storage: S3-compatible stores, local directories, in-memory stores.
//!
//! Open a store by the label the operator configured with [`Store::open`].
//! Keys are `/`-separated paths relative to the store's root; a key may not
//! be empty, start with `/` or contain an empty, `.` or `..` segment.
//!
//! Small objects can be read and written whole ([`Store::get`],
//! [`Store::put`]); the host refuses a whole read above its limit with
//! [`Error::TooLarge`]. Objects of any size stream through
//! [`Store::reader`] (a [`std::io::Read`] + [`BufRead`]) and
//! [`Store::writer`] (a [`std::io::Write`]) in bounded memory. Many small
//! objects are read fastest by [`Store::read_many`] and
//! [`Store::read_prefix`], which keep several requests in flight on the
//! host and yield the objects in order.
//!
//! ```no_run
//! use std::io::{BufRead, Write};
//! use caisson_sdk::objects::Store;
//!
//! # fn f() -> caisson_sdk::Result<()> {
//! let store = Store::open("raw")?;
//! let mut out = store.writer("upper/all.txt")?;
//! for meta in store.list("logs/") {
//!     let meta = meta?;
//!     for line in store.reader(&meta.key)?.lines() {
//!         writeln!(out, "{}", line?.to_uppercase())?;
//!     }
//! }
//! let written = out.finish()?;
//! println!("wrote {} bytes", written.size);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use crate::wit::caisson::task::objects as wit;
use crate::wit::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::{Error, Result};

/// How many bytes a reader asks the host for at a time.
const READ_CHUNK: u64 = 64 * 1024;
/// The most bytes a writer hands the host in one `write`, whatever the
/// stream's `check-write` allows, so one call never copies a huge buffer.
const WRITE_CHUNK: usize = 64 * 1024;
/// Listing page size when the caller does not choose one; the host may cap it.
const DEFAULT_PAGE_SIZE: u32 = 1000;

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ObjectKind {
    /// An object (a file on HDFS and local stores).
    File,
    /// A directory of a store that has real ones.
    Directory,
}

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// A file or a directory.
    pub kind: ObjectKind,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, in microseconds since the Unix epoch.
    pub last_modified: i64,
    /// The store's entity tag, if it has one: what [`WriteOptions::if_match`]
    /// takes.
    pub etag: Option<String>,
    /// The object's version, on a versioned store.
    pub version: Option<String>,
    /// The content type it was written with, where the store keeps one
    /// (not in listings).
    pub content_type: Option<String>,
}

impl From<wit::ObjectMeta> for ObjectMeta {
    fn from(m: wit::ObjectMeta) -> Self {
        ObjectMeta {
            key: m.key,
            kind: match m.kind {
                wit::ObjectKind::File => ObjectKind::File,
                wit::ObjectKind::Directory => ObjectKind::Directory,
            },
            size: m.size,
            last_modified: m.last_modified,
            etag: m.etag,
            version: m.version,
            content_type: m.content_type,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// The objects on this page, in key order.
    pub objects: Vec<ObjectMeta>,
    /// With a delimiter, the keys one level down that have objects under
    /// them, each ending with the delimiter; empty without one.
    pub prefixes: Vec<String>,
    /// The token for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// How a write is made: conditions and a content type.
///
/// ```no_run
/// use caisson_sdk::objects::{Store, WriteOptions};
///
/// # fn f() -> caisson_sdk::Result<()> {
/// let store = Store::open("raw")?;
/// // Only one task gets to write the marker: the others see a conflict.
/// let options = WriteOptions::new().if_none_match("*").content_type("text/plain");
/// match store.put_with("locks/daily", "mine", &options) {
///     Ok(_) => { /* ours */ }
///     Err(e) if e.is_conflict() => { /* someone else's */ }
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    if_match: Option<String>,
    if_none_match: Option<String>,
    content_type: Option<String>,
}

impl WriteOptions {
    /// No conditions, no content type.
    pub fn new() -> Self {
        Self::default()
    }

    /// Write only if the object's entity tag is `etag` (from
    /// [`ObjectMeta::etag`]); otherwise the write fails with a conflict.
    pub fn if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }

    /// `"*"`: write only if there is no object at the key; otherwise the
    /// write fails with a conflict.
    pub fn if_none_match(mut self, etag: impl Into<String>) -> Self {
        self.if_none_match = Some(etag.into());
        self
    }

    /// The content type to store with the object.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    fn to_wit(&self) -> Result<wit::WriteOptions> {
        let options = wit::WriteOptions::new();
        if self.if_match.is_some() {
            options.set_if_match(self.if_match.as_deref())?;
        }
        if self.if_none_match.is_some() {
            options.set_if_none_match(self.if_none_match.as_deref())?;
        }
        if self.content_type.is_some() {
            options.set_content_type(self.content_type.as_deref())?;
        }
        Ok(options)
    }
}

/// An open object store.
///
/// ```no_run
/// use caisson_sdk::objects::Store;
///
/// # fn f() -> caisson_sdk::Result<()> {
/// let store = Store::open("raw")?;
/// store.put("greeting.txt", "hello")?;
/// assert_eq!(store.read_to_string("greeting.txt")?, "hello");
/// assert_eq!(store.get_range("greeting.txt", 1, 3)?, b"ell");
/// store.copy("greeting.txt", "copy.txt")?;
/// store.delete("greeting.txt")?;
/// assert!(store.head("greeting.txt").unwrap_err().is_not_found());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Store {
    inner: wit::Store,
}

impl Store {
    /// Opens the store the operator configured under `label`. Fails with
    /// [`Error::AccessDenied`] if the run was not granted it.
    pub fn open(label: &str) -> Result<Store> {
        Ok(Store {
            inner: wit::open(label)?,
        })
    }

    /// Reads a whole object into memory. Fails with [`Error::NotFound`] if
    /// there is none, and [`Error::TooLarge`] above the host's limit for a
    /// single read: use [`Store::reader`] for large objects.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.inner.get(key)?)
    }

    /// Same as [`Store::get`].
    pub fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.get(key)
    }

    /// Reads a whole object as UTF-8 text.
    pub fn read_to_string(&self, key: &str) -> Result<String> {
        Ok(String::from_utf8(self.get(key)?)?)
    }

    /// Reads `length` bytes starting at `offset`; fewer at the end of the
    /// object.
    pub fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        Ok(self.inner.get_range(key, offset, length)?)
    }

    /// Writes a whole object, replacing any object at `key`.
    pub fn put(&self, key: &str, data: impl AsRef<[u8]>) -> Result<ObjectMeta> {
        Ok(self.inner.put(key, data.as_ref(), None)?.into())
    }

    /// Writes a whole object as `options` say: only if a condition holds
    /// (else [`Error::Conflict`]), with a content type.
    pub fn put_with(
        &self,
        key: &str,
        data: impl AsRef<[u8]>,
        options: &WriteOptions,
    ) -> Result<ObjectMeta> {
        let options = options.to_wit()?;
        Ok(self.inner.put(key, data.as_ref(), Some(&options))?.into())
    }

    /// Same as [`Store::put`].
    pub fn write(&self, key: &str, data: impl AsRef<[u8]>) -> Result<ObjectMeta> {
        self.put(key, data)
    }

    /// The object's metadata; [`Error::NotFound`] if there is none.
    pub fn head(&self, key: &str) -> Result<ObjectMeta> {
        Ok(self.inner.head(key)?.into())
    }

    /// Whether an object exists at `key`.
    pub fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key) {
            Ok(_) => Ok(true),
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object. Deleting a missing object succeeds.
    pub fn delete(&self, key: &str) -> Result<()> {
        Ok(self.inner.delete(key)?)
    }

    /// Copies an object within this store, replacing any object at `to`.
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        Ok(self.inner.copy(from, to)?)
    }

    /// Fetches one page of the listing of `prefix`; pass the previous page's
    /// `next_page_token` to continue. Most callers want [`Store::list`].
    pub fn list_page(
        &self,
        prefix: &str,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<ListPage> {
        self.list_page_delimited(prefix, None, page_token, page_size)
    }

    /// Fetches one page of a listing of `prefix` with `delimiter` (only
    /// `"/"` is supported): objects one level down, and the prefixes of the
    /// levels below in [`ListPage::prefixes`], like an S3 delimiter listing.
    pub fn list_page_delimited(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<ListPage> {
        let page = self.inner.list(prefix, delimiter, page_token, page_size)?;
        Ok(ListPage {
            objects: page.objects.into_iter().map(Into::into).collect(),
            prefixes: page.prefixes,
            next_page_token: page.next_page_token,
        })
    }

    /// One level of the store under `prefix`, like `ls`: the objects
    /// directly under it and the prefixes (ending in `/`) of the levels
    /// below, every page of them.
    pub fn list_level(&self, prefix: &str) -> Result<ListPage> {
        let mut level = ListPage {
            objects: Vec::new(),
            prefixes: Vec::new(),
            next_page_token: None,
        };
        let mut token = None;
        loop {
            let page =
                self.list_page_delimited(prefix, Some("/"), token.as_deref(), DEFAULT_PAGE_SIZE)?;
            level.objects.extend(page.objects);
            level.prefixes.extend(page.prefixes);
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(level),
            }
        }
    }

    /// Iterates over every object whose key starts with `prefix` (`""` for
    /// all), in key order. Pages are fetched lazily as the iteration reaches
    /// them; an error ends the iteration after it is yielded.
    ///
    /// ```no_run
    /// # fn f(store: &caisson_sdk::objects::Store) -> caisson_sdk::Result<()> {
    /// let total: u64 = store
    ///     .list("logs/2024/")
    ///     .map(|m| m.map(|m| m.size))
    ///     .sum::<caisson_sdk::Result<u64>>()?;
    /// # Ok(()) }
    /// ```
    pub fn list(&self, prefix: &str) -> List<'_> {
        List {
            pages: self.list_pages(prefix),
            current: VecDeque::new(),
        }
    }

    /// Iterates over the pages of the listing of `prefix`.
    pub fn list_pages(&self, prefix: &str) -> ListPages<'_> {
        ListPages {
            store: self,
            prefix: prefix.to_owned(),
            token: None,
            page_size: DEFAULT_PAGE_SIZE,
            done: false,
        }
    }

    /// Reads many whole objects, in the order of `keys`, while the host
    /// keeps several requests in flight (as many as the operator configured
    /// for this store, 16 by default) and reads ahead within a bounded
    /// buffer. The task does not manage any concurrency.
    ///
    /// Each item is a key and what [`Store::get`] would have returned for
    /// it: an object that is missing or too large for a whole read fails
    /// at its place ([`Error::NotFound`], [`Error::TooLarge`], ...), and the
    /// objects after it still arrive.
    ///
    /// ```no_run
    /// # fn f(store: &caisson_sdk::objects::Store) -> caisson_sdk::Result<()> {
    /// let keys = ["a.txt", "b.txt", "c.txt"];
    /// for (key, data) in store.read_many(keys)? {
    ///     match data {
    ///         Ok(bytes) => println!("{key}: {} bytes", bytes.len()),
    ///         Err(e) if e.is_not_found() => println!("{key}: gone"),
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_many<I>(&self, keys: I) -> Result<ReadMany>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let keys: Vec<String> = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        Ok(ReadMany {
            inner: Some(self.inner.read_many(&keys)?),
            prefix: None,
        })
    }

    /// Reads every object whose key starts with `prefix` (`""` for all),
    /// in key order, as [`Store::read_many`] does: the host lists and reads
    /// ahead while the task works. If the listing itself fails, the last
    /// item carries `prefix` as its key and the listing's error.
    ///
    /// ```no_run
    /// # fn f(store: &caisson_sdk::objects::Store) -> caisson_sdk::Result<()> {
    /// let mut total = 0;
    /// for (key, data) in store.read_prefix("logs/2024/")? {
    ///     total += data?.len();
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_prefix(&self, prefix: &str) -> Result<ReadMany> {
        Ok(ReadMany {
            inner: Some(self.inner.read_prefix(prefix)?),
            prefix: Some(prefix.to_owned()),
        })
    }

    /// Streams an object. Fails with [`Error::NotFound`] if there is none.
    pub fn reader(&self, key: &str) -> Result<ObjectReader> {
        Ok(ObjectReader {
            stream: self.inner.reader(key)?,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            read: 0,
        })
    }

    /// Streams an object's lines, without their `\n` or `\r\n` ending. A line
    /// that is not UTF-8 yields [`Error::InvalidInput`].
    pub fn lines(&self, key: &str) -> Result<Lines> {
        Ok(Lines {
            reader: self.reader(key)?,
            line: 0,
            done: false,
        })
    }

    /// Starts a streamed upload to `key`. Nothing is visible at `key` until
    /// [`ObjectWriter::finish`] succeeds; dropping the writer aborts the
    /// upload.
    pub fn writer(&self, key: &str) -> Result<ObjectWriter> {
        self.start_writer(key, None)
    }

    /// Starts a streamed upload with a content type. (Conditions are refused
    /// by the host for streamed uploads for now: use [`Store::put_with`].)
    pub fn writer_with(&self, key: &str, options: &WriteOptions) -> Result<ObjectWriter> {
        let options = options.to_wit()?;
        self.start_writer(key, Some(&options))
    }

    fn start_writer(&self, key: &str, options: Option<&wit::WriteOptions>) -> Result<ObjectWriter> {
        let writer = self.inner.writer(key, options)?;
        let body = writer.body()?;
        Ok(ObjectWriter {
            body: Some(body),
            writer: Some(writer),
            written: 0,
        })
    }
}

/// The pages of a listing, from [`Store::list_pages`].
#[derive(Debug)]
pub struct ListPages<'a> {
    store: &'a Store,
    prefix: String,
    token: Option<String>,
    page_size: u32,
    done: bool,
}

impl ListPages<'_> {
    /// Asks for at most `page_size` objects per page (the host may cap it;
    /// 0 is taken as 1).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }
}

impl Iterator for ListPages<'_> {
    type Item = Result<ListPage>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self
            .store
            .list_page(&self.prefix, self.token.as_deref(), self.page_size)
        {
            Ok(page) => {
                self.token.clone_from(&page.next_page_token);
                self.done = page.next_page_token.is_none();
                Some(Ok(page))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for ListPages<'_> {}

/// The objects of a listing, from [`Store::list`].
#[derive(Debug)]
pub struct List<'a> {
    pages: ListPages<'a>,
    current: VecDeque<ObjectMeta>,
}

impl List<'_> {
    /// Fetches at most `page_size` objects per host call.
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.pages = self.pages.page_size(page_size);
        self
    }
}

impl Iterator for List<'_> {
    type Item = Result<ObjectMeta>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(meta) = self.current.pop_front() {
                return Some(Ok(meta));
            }
            // An empty page with a token is legal: keep going.
            match self.pages.next()? {
                Ok(page) => self.current = page.objects.into(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl std::iter::FusedIterator for List<'_> {}

/// Objects read with several requests in flight, from [`Store::read_many`]
/// and [`Store::read_prefix`]: each item is a key and its bytes, or why it
/// could not be read. Dropping the iterator stops the host's requests.
#[derive(Debug)]
pub struct ReadMany {
    /// `None` once the host said there is nothing more.
    inner: Option<wit::ManyReader>,
    /// The prefix of a `read_prefix`, the key a listing failure is reported
    /// under.
    prefix: Option<String>,
}

impl Iterator for ReadMany {
    type Item = (String, Result<Vec<u8>>);

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.inner.as_ref()?.next();
        match next {
            Ok(Some((key, data))) => Some((key, data.map_err(Error::from))),
            Ok(None) => {
                self.inner = None;
                None
            }
            Err(e) => {
                self.inner = None;
                Some((self.prefix.clone().unwrap_or_default(), Err(e.into())))
            }
        }
    }
}

impl std::iter::FusedIterator for ReadMany {}

fn stream_error(e: StreamError) -> io::Error {
    match e {
        // The host says what kind of failure it was when it knows (a broken
        // connection is `backend`, so the run is retryable). When it does
        // not, call it `other` (not retryable) rather than risk retrying a
        // deterministic failure such as an upload over the size limit.
        StreamError::LastOperationFailed(e) => io::Error::other(
            match wit::stream_error(&e) {
                Some(kind) => Error::from(kind),
                None => Error::Other(e.to_debug_string()),
            }
            .context("object stream failed"),
        ),
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "stream closed"),
    }
}

/// A streamed object body, from [`Store::reader`].
///
/// Implements [`Read`] and [`BufRead`] directly: each host call returns up to
/// 64 KiB, which serves as the buffer, so there is no need to wrap it in a
/// `BufReader`.
///
/// ```no_run
/// use std::io::BufRead;
///
/// # fn f(store: &caisson_sdk::objects::Store) -> caisson_sdk::Result<()> {
/// let mut longest = 0;
/// for line in store.reader("big.log")?.lines() {
///     longest = longest.max(line?.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ObjectReader {
    stream: InputStream,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    read: u64,
}

impl ObjectReader {
    /// How many bytes have been consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl BufRead for ObjectReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.buf.len() && !self.eof {
            // `blocking-read` waits for at least one byte, or reports the end
            // of the stream as `closed`.
            match self.stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Err(StreamError::Closed) => self.eof = true,
                Err(e) => return Err(stream_error(e)),
            }
        }
        Ok(&self.buf[self.pos.min(self.buf.len())..])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.buf.len().saturating_sub(self.pos));
        self.pos += amt;
        self.read += amt as u64;
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The lines of an object, from [`Store::lines`].
#[derive(Debug)]
pub struct Lines {
    reader: ObjectReader,
    line: u64,
    done: bool,
}

impl Iterator for Lines {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                self.line += 1;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                Some(String::from_utf8(buf).map_err(|e| {
                    Error::InvalidInput(format!("line {} is not UTF-8: {e}", self.line))
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}

impl std::iter::FusedIterator for Lines {}

/// A streamed upload, from [`Store::writer`].
///
/// Implements [`Write`]. Call [`ObjectWriter::finish`] to complete the
/// upload: until then nothing is visible at the key, and dropping the writer
/// instead aborts it. Writes go straight to the host stream (at most 64 KiB
/// per call, waiting while the host applies backpressure); wrap the writer in
/// a [`std::io::BufWriter`] when writing many small pieces, and recover it
/// with `into_inner` before `finish`.
///
/// ```no_run
/// use std::io::Write;
///
/// # fn f(store: &caisson_sdk::objects::Store) -> caisson_sdk::Result<()> {
/// let mut out = store.writer("report.csv")?;
/// writeln!(out, "id,name")?;
/// writeln!(out, "1,Ada")?;
/// let meta = out.finish()?;
/// assert_eq!(meta.key, "report.csv");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ObjectWriter {
    // `body` is a child of `writer`: it is declared first so that it drops
    // first.
    body: Option<OutputStream>,
    writer: Option<wit::Writer>,
    written: u64,
}

impl ObjectWriter {
    /// How many bytes have been written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Flushes the body, closes it and completes the upload, returning the
    /// new object's metadata.
    pub fn finish(mut self) -> Result<ObjectMeta> {
        let body = self.body.take().expect("body is present until finish");
        body.blocking_flush().map_err(stream_error)?;
        drop(body);
        let writer = self.writer.take().expect("writer is present until finish");
        Ok(wit::Writer::finish(writer)?.into())
    }

    fn body(&self) -> &OutputStream {
        self.body.as_ref().expect("body is present until finish")
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let body = self.body();
        loop {
            // `write` may only hand over what `check-write` permits; wait on
            // the stream's pollable while the host has no room.
            let permit = body.check_write().map_err(stream_error)?;
            if permit == 0 {
                body.subscribe().block();
                continue;
            }
            let n = buf
                .len()
                .min(WRITE_CHUNK)
                .min(usize::try_from(permit).unwrap_or(usize::MAX));
            body.write(&buf[..n]).map_err(stream_error)?;
            self.written += n as u64;
            return Ok(n);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.body().blocking_flush().map_err(stream_error)
    }
}
