//! The run's log: `caisson:task/log` calls plus the guest's stdout and stderr.
//!
//! Everything the task says goes to one [`LogSink`] chosen by the embedder
//! (the CLI prints it live, a worker stores it), under one byte budget. The
//! budget is the guest's to exhaust, so it is checked on every write: past
//! it, records are dropped, `log` returns `budget-exceeded` (it does not
//! trap: no host call does) and stdout/stderr writes fail. The runtime then
//! fails the run with the log-limit error when it ends, whatever it
//! returned, through [`LogCtx::exceeded`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamError, StreamResult};

use crate::bindings::caisson::task::log as wit;
use crate::memory::MemoryBudget;

/// How important a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// `INFO`, `WARN`, ...; padded to a width when one is given.
impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

impl Level {
    /// The lowercase name, as serde writes it: `info`, `warn`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A level name that is none of [`Level`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown log level {0:?}")]
pub struct UnknownLevel(pub String);

/// Either case: `info` or `INFO`.
impl std::str::FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            "error" => Level::Error,
            _ => return Err(UnknownLevel(name.to_string())),
        })
    }
}

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The `log` interface.
    Task,
    Stdout,
    Stderr,
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time: DateTime<Utc>,
    pub level: Level,
    pub source: Source,
    pub message: String,
}

/// Where a run's log goes.
pub trait LogSink: Send + Sync + 'static {
    fn record(&self, record: LogRecord);
    /// The task reported progress; `total` is 0 when unknown.
    fn progress(&self, _done: u64, _total: u64) {}
}

/// A sink that keeps everything in memory, for tests and short runs.
#[derive(Debug, Default)]
pub struct MemorySink {
    records: std::sync::Mutex<Vec<LogRecord>>,
    progress: std::sync::Mutex<Option<(u64, u64)>>,
}

impl MemorySink {
    pub fn records(&self) -> Vec<LogRecord> {
        self.records.lock().unwrap().clone()
    }

    /// The last progress reported.
    pub fn last_progress(&self) -> Option<(u64, u64)> {
        *self.progress.lock().unwrap()
    }
}

impl LogSink for MemorySink {
    fn record(&self, record: LogRecord) {
        self.records.lock().unwrap().push(record);
    }

    fn progress(&self, done: u64, total: u64) {
        *self.progress.lock().unwrap() = Some((done, total));
    }
}

/// A sink that drops everything: for runs whose log nobody reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl LogSink for NullSink {
    fn record(&self, _record: LogRecord) {}
}

struct Budget {
    max: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
    /// The run's memory budget. A sink may hold every record until the run
    /// ends (the worker's batches them for the database, a `MemorySink`
    /// keeps them), so what is logged stays charged until the run ends.
    memory: MemoryBudget,
    memory_exceeded: AtomicBool,
}

impl Budget {
    /// Charges `n` bytes to the log and to the run's memory; false once
    /// either is spent.
    fn charge(&self, n: usize) -> bool {
        let used = self.used.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if used > self.max {
            self.exceeded.store(true, Ordering::Relaxed);
            return false;
        }
        if self.memory.hold_for_run(n as u64).is_err() {
            self.memory_exceeded.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// One run's log.
#[derive(Clone)]
pub struct LogCtx {
    sink: Arc<dyn LogSink>,
    budget: Arc<Budget>,
}

impl LogCtx {
    /// A log of at most `max_bytes` bytes of messages going to `sink`.
    pub fn new(sink: Arc<dyn LogSink>, max_bytes: u64) -> Self {
        Self::with_memory(sink, max_bytes, MemoryBudget::default())
    }

    /// [`LogCtx::new`], with what is logged also charged to `memory`, the
    /// run's budget, until the run ends.
    pub fn with_memory(sink: Arc<dyn LogSink>, max_bytes: u64, memory: MemoryBudget) -> Self {
        LogCtx {
            sink,
            budget: Arc::new(Budget {
                max: max_bytes,
                used: AtomicU64::new(0),
                exceeded: AtomicBool::new(false),
                memory,
                memory_exceeded: AtomicBool::new(false),
            }),
        }
    }

    /// Whether a record was dropped because the run's memory budget had no
    /// room for it: the run then fails with the memory limit.
    pub fn memory_exceeded(&self) -> bool {
        self.budget.memory_exceeded.load(Ordering::Relaxed)
    }

    /// Whether the task tried to log past its budget.
    pub fn exceeded(&self) -> bool {
        self.budget.exceeded.load(Ordering::Relaxed)
    }

    /// The budget, for error messages.
    pub fn max_bytes(&self) -> u64 {
        self.budget.max
    }

    /// A stream to give the guest as its stdout.
    pub fn stdout(&self) -> CapturedOutput {
        CapturedOutput {
            log: self.clone(),
            source: Source::Stdout,
        }
    }

    /// A stream to give the guest as its stderr.
    pub fn stderr(&self) -> CapturedOutput {
        CapturedOutput {
            log: self.clone(),
            source: Source::Stderr,
        }
    }

    fn emit(&self, level: Level, source: Source, message: String) {
        self.sink.record(LogRecord {
            time: Utc::now(),
            level,
            source,
            message,
        });
    }
}

impl wit::Host for LogCtx {
    async fn log(
        &mut self,
        level: wit::Level,
        message: String,
    ) -> wasmtime::Result<Result<(), wit::LogError>> {
        if !self.budget.charge(message.len()) {
            return Ok(Err(wit::LogError::BudgetExceeded));
        }
        let level = match level {
            wit::Level::Trace => Level::Trace,
            wit::Level::Debug => Level::Debug,
            wit::Level::Info => Level::Info,
            wit::Level::Warn => Level::Warn,
            wit::Level::Error => Level::Error,
        };
        self.emit(level, Source::Task, message);
        Ok(Ok(()))
    }

    async fn progress(&mut self, done: u64, total: u64) -> wasmtime::Result<()> {
        self.sink.progress(done, total);
        Ok(())
    }
}

/// The guest's stdout or stderr, split into log records at newlines.
pub struct CapturedOutput {
    log: LogCtx,
    source: Source,
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl CapturedOutput {
    fn writer(&self) -> LineWriter {
        LineWriter {
            log: self.log.clone(),
            source: self.source,
            partial: Vec::new(),
        }
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    /// Writing is a copy into the log, never blocking, so the stream is
    /// always ready: without this, wasmtime-wasi would put a buffer and a
    /// tokio task between the guest and the log, and every flush would
    /// suspend the guest until that task ran.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
}

/// The most a guest may write in one call: it writes at most what
/// `check-write` allows, and the log keeps lines of [`MAX_LINE`] anyway.
const WRITE_PERMIT: usize = 1 << 20;

/// A line longer than this is cut into records of this size, so a guest
/// that never writes a newline cannot grow the buffer without bound.
const MAX_LINE: usize = 64 * 1024;

struct LineWriter {
    log: LogCtx,
    source: Source,
    partial: Vec<u8>,
}

impl LineWriter {
    /// Charges `buf` to the log budget and logs its complete lines.
    fn write_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        if !self.log.budget.charge(buf.len()) {
            if self.log.memory_exceeded() {
                return Err(io::Error::other(format!(
                    "memory limit {} MiB exceeded (host buffers)",
                    self.log.budget.memory.limit() >> 20
                )));
            }
            return Err(io::Error::other(format!(
                "log limit of {} bytes exceeded",
                self.log.budget.max
            )));
        }
        let mut rest = buf;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(newline);
            if self.partial.is_empty() {
                self.emit(line);
            } else {
                self.partial.extend_from_slice(line);
                self.emit_partial();
            }
            rest = &tail[1..];
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= MAX_LINE {
            let tail = self.partial.split_off(MAX_LINE);
            self.emit_partial();
            self.partial = tail;
        }
        Ok(())
    }

    fn emit(&mut self, line: &[u8]) {
        let level = match self.source {
            Source::Stderr => Level::Warn,
            _ => Level::Info,
        };
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        self.log.emit(level, self.source, text.to_string());
    }

    fn emit_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.write_bytes(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.emit_partial();
        Poll::Ready(Ok(()))
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(e.into()))
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Complete lines are logged as they are written; a partial line
        // waits for its newline (or the end of the run), as on a terminal.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit_partial();
    }
}

/// Adds the `caisson:task/log` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> &mut LogCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<LogCtx>>(linker, f)
}

/// `wasi:logging/logging`, for components written for other hosts: the
/// run's log, under the same budget. Its `log` returns nothing, so past the
/// budget a record is dropped silently (and the run fails with the
/// log-limit error when it ends, as for `caisson:task/log`). The context,
/// when there is one, prefixes the message; `critical` is logged as an
/// error.
impl crate::standard_bindings::wasi::logging::logging::Host for LogCtx {
    async fn log(
        &mut self,
        level: crate::wit::logging::Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        use crate::wit::logging::Level as L;
        let message = if context.is_empty() {
            message
        } else {
            format!("{context}: {message}")
        };
        if !self.budget.charge(message.len()) {
            return Ok(());
        }
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error | L::Critical => Level::Error,
        };
        self.emit(level, Source::Task, message);
        Ok(())
    }
}

/// Adds `wasi:logging/logging` to `linker`, writing to the run's log.
pub fn add_logging_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> &mut LogCtx,
) -> wasmtime::Result<()> {
    crate::standard_bindings::wasi::logging::logging::add_to_linker::<T, HasSelf<LogCtx>>(linker, f)
}
