//! What the server sees of a task's host calls: one `tracing` span per call
//! of the `objects` and `sql` interfaces, and one [`HostCall`] record handed
//! to the process's [`HostCallSink`] (the server's metrics) when it returns.
//!
//! The hook sits at the call boundary only. The generated host traits are
//! implemented twice: the calls themselves on `ObjectsHost`/`SqlHost`, and
//! on the [`ObjectsView`](crate::objects::ObjectsView) and
//! [`SqlView`](crate::sql::SqlView) that the linker uses, which time each
//! call and hand it on. So nothing below the boundary knows about spans or
//! metrics.
//!
//! What a span or record may carry, since a trace or a metric leaves the
//! worker: the store or source *label* (operator configuration), the
//! object key (cut to [`MAX_KEY_CHARS`]), a statement's *kind* (its first
//! keyword from a fixed list, never its text), byte counts and the WIT
//! error case. Never a statement's text, a parameter, data, or an error's
//! message (a database may quote the statement in it).
//!
//! ```
//! use caisson_host_api::observe::{statement_kind, HostCall, HostCallSink};
//!
//! assert_eq!(statement_kind("  select * from t"), "SELECT");
//! assert_eq!(statement_kind("/* hi */ WITH x AS (SELECT 1) SELECT * FROM x"), "WITH");
//! assert_eq!(statement_kind("frobnicate"), "OTHER");
//!
//! struct Count(std::sync::atomic::AtomicU64);
//! impl HostCallSink for Count {
//!     fn host_call(&self, _call: &HostCall<'_>) {
//!         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The most characters of an object key a span carries.
pub const MAX_KEY_CHARS: usize = 128;
/// The most bytes of a label a span carries: a label the guest asked for
/// but was not granted is the guest's text, not configuration.
const MAX_LABEL_BYTES: usize = 64;

/// A finished host call.
#[derive(Debug, Clone)]
pub struct HostCall<'a> {
    /// `objects` or `sql`.
    pub interface: &'static str,
    /// The WIT function, e.g. `store.get` or `connection.query`.
    pub function: &'static str,
    /// The store or source label; `None` for a label the run was not
    /// granted (whatever the guest asked for is not a bounded value).
    pub label: Option<&'a str>,
    /// The WIT error case (`not-found`, `backend`, ...), `None` on success
    /// and `trap` when the call trapped.
    pub error: Option<&'static str>,
    /// For SQL statements: [`statement_kind`].
    pub statement: Option<&'static str>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
}

/// Where finished host calls go: the server's metrics.
pub trait HostCallSink: Send + Sync {
    fn host_call(&self, call: &HostCall<'_>);
}

static SINK: OnceLock<Arc<dyn HostCallSink>> = OnceLock::new();

/// Sets this process's sink, once: host calls are the process's, whatever
/// the run. Returns `false` if one was already set (and keeps that one).
pub fn set_sink(sink: Arc<dyn HostCallSink>) -> bool {
    SINK.set(sink).is_ok()
}

/// Statement kinds: the first keyword of a statement, when it is one of
/// these. A bounded set, so it can be a metric label.
const STATEMENT_KINDS: [&str; 27] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH",
    "VALUES",
    "MERGE",
    "REPLACE",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "EXPLAIN",
    "DESCRIBE",
    "PRAGMA",
    "CALL",
    "COPY",
    "ANALYZE",
    "LOCK",
];

/// A statement's kind: its first keyword if it is a known one, else
/// `OTHER`. Leading space, comments and parentheses are skipped. Only the
/// kind leaves the host: the text may hold literals the task meant to keep.
pub fn statement_kind(statement: &str) -> &'static str {
    let mut rest = statement;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .take(16)
        .collect::<String>()
        .to_ascii_uppercase();
    STATEMENT_KINDS
        .iter()
        .find(|kind| **kind == word)
        .copied()
        .unwrap_or("OTHER")
}

/// The WIT case of an interface's error, for spans and metric labels.
pub(crate) trait ErrorKind {
    fn kind(&self) -> &'static str;
}

impl ErrorKind for crate::ObjectsError {
    fn kind(&self) -> &'static str {
        use crate::ObjectsError as E;
        match self {
            E::NotFound => "not-found",
            E::AccessDenied => "access-denied",
            E::TooLarge(_) => "too-large",
            E::InvalidInput(_) => "invalid-input",
            E::Conflict(_) => "conflict",
            E::Unsupported(_) => "unsupported",
            E::Backend(_) => "backend",
            E::Other(_) => "other",
        }
    }
}

impl ErrorKind for crate::SqlError {
    fn kind(&self) -> &'static str {
        use crate::SqlError as E;
        match self {
            E::AccessDenied => "access-denied",
            E::TooLarge(_) => "too-large",
            E::InvalidInput(_) => "invalid-input",
            E::Unsupported(_) => "unsupported",
            E::Backend(_) => "backend",
            E::Other(_) => "other",
            E::Conflict(_) => "conflict",
            E::RetryTransaction(_) => "retry-transaction",
            E::Database(_) => "database",
        }
    }
}

/// The labels of a run's live handles (connections, cursors, readers,
/// uploads), by resource index, for the calls made on them later: those
/// resources do not carry their label themselves.
#[derive(Debug, Default)]
pub(crate) struct HandleLabels(HashMap<u32, Arc<str>>);

impl HandleLabels {
    pub(crate) fn insert(&mut self, rep: u32, label: Arc<str>) {
        self.0.insert(rep, label);
    }

    pub(crate) fn get(&self, rep: u32) -> Option<Arc<str>> {
        self.0.get(&rep).cloned()
    }

    pub(crate) fn remove(&mut self, rep: u32) {
        self.0.remove(&rep);
    }
}

/// One host call in progress: its span, and what it has learnt so far.
pub(crate) struct Call {
    span: tracing::Span,
    started: Instant,
    interface: &'static str,
    function: &'static str,
    label: Option<Arc<str>>,
    statement: Option<&'static str>,
    bytes_read: u64,
    bytes_written: u64,
}

impl Call {
    /// Starts a call of `interface.function` on the store or source
    /// `label` (`granted`: whether it is a label of the run's grants).
    pub(crate) fn start(
        interface: &'static str,
        function: &'static str,
        label: &str,
        granted: bool,
    ) -> Call {
        let mut shown = label.to_owned();
        crate::clip_text(&mut shown, MAX_LABEL_BYTES);
        let span = tracing::info_span!(
            target: "caisson_host_api::call",
            "host_call",
            otel.name = %format_args!("{interface}.{function}"),
            caisson.interface = interface,
            caisson.function = function,
            caisson.label = %shown,
            caisson.key = tracing::field::Empty,
            caisson.statement = tracing::field::Empty,
            caisson.bytes_read = tracing::field::Empty,
            caisson.bytes_written = tracing::field::Empty,
            caisson.error = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        Call {
            span,
            started: Instant::now(),
            interface,
            function,
            label: granted.then(|| Arc::from(label)),
            statement: None,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    /// A call on a handle whose label is known (it was granted).
    pub(crate) fn on(
        interface: &'static str,
        function: &'static str,
        label: Option<Arc<str>>,
    ) -> Call {
        let mut call = Call::start(interface, function, label.as_deref().unwrap_or(""), true);
        call.label = label;
        call
    }

    /// The granted label the call is on, if any.
    pub(crate) fn label(&self) -> Option<Arc<str>> {
        self.label.clone()
    }

    pub(crate) fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    pub(crate) fn key(&mut self, key: &str) {
        let shown: String = key.chars().take(MAX_KEY_CHARS).collect();
        self.span.record("caisson.key", shown.as_str());
    }

    pub(crate) fn statement(&mut self, statement: &str) {
        let kind = statement_kind(statement);
        self.statement = Some(kind);
        self.span.record("caisson.statement", kind);
    }

    pub(crate) fn read(&mut self, bytes: u64) {
        self.bytes_read += bytes;
    }

    pub(crate) fn wrote(&mut self, bytes: u64) {
        self.bytes_written += bytes;
    }

    /// Ends the call with its result, and hands the result back.
    pub(crate) fn end<T, E: ErrorKind>(
        self,
        result: wasmtime::Result<Result<T, E>>,
    ) -> wasmtime::Result<Result<T, E>> {
        let error = match &result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.kind()),
            Err(_) => Some("trap"),
        };
        self.finish(error);
        result
    }

    pub(crate) fn finish(self, error: Option<&'static str>) {
        if self.bytes_read > 0 {
            self.span.record("caisson.bytes_read", self.bytes_read);
        }
        if self.bytes_written > 0 {
            self.span
                .record("caisson.bytes_written", self.bytes_written);
        }
        if let Some(error) = error {
            self.span.record("caisson.error", error);
            self.span.record("otel.status_code", "ERROR");
        }
        if let Some(sink) = SINK.get() {
            sink.host_call(&HostCall {
                interface: self.interface,
                function: self.function,
                label: self.label.as_deref(),
                error,
                statement: self.statement,
                bytes_read: self.bytes_read,
                bytes_written: self.bytes_written,
                elapsed: self.started.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::statement_kind;

    #[test]
    fn statement_kinds_are_first_keywords_from_a_fixed_list() {
        assert_eq!(statement_kind("SELECT 1"), "SELECT");
        assert_eq!(statement_kind("\n  insert into t values ($1)"), "INSERT");
        assert_eq!(statement_kind("-- note\n(select 1)"), "SELECT");
        assert_eq!(
            statement_kind("/* a */ /* b */ update t set x = 1"),
            "UPDATE"
        );
        assert_eq!(statement_kind("/* never closed"), "OTHER");
        assert_eq!(statement_kind("SELECTX"), "OTHER");
        assert_eq!(statement_kind("'secret' SELECT"), "OTHER");
        assert_eq!(statement_kind(""), "OTHER");
    }
}
