//! The SDK's error type, mirroring the WIT interfaces' `error` variants.

use std::fmt;

use crate::wit::caisson::task::objects::Error as ObjectsError;
use crate::wit::caisson::task::sql::{DatabaseError as WitDatabaseError, Error as SqlError};

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a host call or the task failed.
///
/// The variants mirror the cases of the WIT interfaces' `error` variants
/// (the object store's and the database's, merged); [`Error::Task`] carries
/// an error the task builds itself, with an explicit retry flag. Use
/// [`Error::kind`] to match on the kind by name, and
/// [`Error::is_retry_transaction`], [`Error::is_conflict`] and
/// [`Error::sqlstate`] for database errors.
///
/// ```
/// use caisson_sdk::Error;
///
/// let e = Error::msg("no such region");
/// assert_eq!(e.to_string(), "no such region");
/// assert!(!e.is_retryable());
/// assert!(Error::Backend("connection reset".into()).is_retryable());
/// assert!(Error::retryable("upstream busy").is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The object, row or label does not exist.
    NotFound,
    /// The run was not granted this label, or the backend refused the
    /// operation (for example a write to a read-only database).
    AccessDenied,
    /// The request or its answer is over a host limit; the text names the
    /// limit and, where there is one, the streaming call to use instead.
    TooLarge(String),
    /// Something malformed was passed: a bad key, a parameter of the wrong
    /// type, or task input that does not parse. (A statement the database
    /// refuses is [`Error::Database`].)
    InvalidInput(String),
    /// A conditional write did not hold: the object exists (`if-none-match`)
    /// or is another version (`if-match`). A unique violation in a database
    /// is an [`Error::Database`] whose [`DatabaseError::kind`] is
    /// [`DatabaseErrorKind::Conflict`]; [`Error::is_conflict`] covers both.
    Conflict(String),
    /// The store or database cannot do what was asked.
    Unsupported(String),
    /// The database refused a statement, with its SQLSTATE.
    Database(DatabaseError),
    /// The backend failed (network, server error). Retrying the run may help.
    Backend(String),
    /// Anything else.
    Other(String),
    /// An error the task reports with an explicit retry flag.
    Task(TaskError),
}

impl Error {
    /// An [`Error::Other`] with the given message, like `anyhow::anyhow!`.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Other(message.to_string())
    }

    /// An error that tells the scheduler that running the task again may
    /// succeed.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Error::Task(TaskError {
            message: message.to_string(),
            retryable: true,
        })
    }

    /// An [`Error::InvalidInput`] with the given message.
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Error::InvalidInput(message.to_string())
    }

    /// Whether running the task again may succeed: true for
    /// [`Error::Backend`], for a transaction that should be retried (see
    /// [`Error::is_retry_transaction`]; better retried by the task itself)
    /// and for task errors marked retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend(_) => true,
            Error::Database(db) => db.kind == DatabaseErrorKind::RetryTransaction,
            Error::Task(t) => t.retryable,
            _ => false,
        }
    }

    /// Whether the database rolled the transaction back because of a
    /// serialization failure or a deadlock: running the transaction again
    /// may succeed. [`Db::transaction_retrying`](crate::sql::Db::transaction_retrying)
    /// does that.
    pub fn is_retry_transaction(&self) -> bool {
        matches!(self, Error::Database(db) if db.kind == DatabaseErrorKind::RetryTransaction)
    }

    /// Whether the write conflicted with what is there: a conditional object
    /// write that did not hold, or a unique violation in a database.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Conflict(_) => true,
            Error::Database(db) => db.kind == DatabaseErrorKind::Conflict,
            _ => false,
        }
    }

    /// The SQLSTATE of a database error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database(db) => Some(&db.sqlstate),
            _ => None,
        }
    }

    /// The kind of error as its WIT case name: `not-found`, `access-denied`,
    /// `too-large`, `invalid-input`, `conflict`, `unsupported`,
    /// `retry-transaction`, `database`, `backend` or `other`, or `task` for
    /// [`Error::Task`].
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound => "not-found",
            Error::AccessDenied => "access-denied",
            Error::TooLarge(_) => "too-large",
            Error::InvalidInput(_) => "invalid-input",
            Error::Conflict(_) => "conflict",
            Error::Unsupported(_) => "unsupported",
            Error::Database(db) => match db.kind {
                DatabaseErrorKind::Conflict => "conflict",
                DatabaseErrorKind::RetryTransaction => "retry-transaction",
                DatabaseErrorKind::Other => "database",
            },
            Error::Backend(_) => "backend",
            Error::Other(_) => "other",
            Error::Task(_) => "task",
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound)
    }

    /// Whether this is [`Error::AccessDenied`].
    pub fn is_access_denied(&self) -> bool {
        matches!(self, Error::AccessDenied)
    }

    /// Prefixes the message with `context`, keeping the kind, except that
    /// [`Error::NotFound`] and [`Error::AccessDenied`] carry no message and so
    /// become [`Error::Other`] (`"<context>: not found"`).
    pub fn context(self, context: impl fmt::Display) -> Self {
        match self {
            Error::NotFound => Error::Other(format!("{context}: not found")),
            Error::AccessDenied => Error::Other(format!("{context}: access denied")),
            Error::TooLarge(m) => Error::TooLarge(format!("{context}: {m}")),
            Error::InvalidInput(m) => Error::InvalidInput(format!("{context}: {m}")),
            Error::Conflict(m) => Error::Conflict(format!("{context}: {m}")),
            Error::Unsupported(m) => Error::Unsupported(format!("{context}: {m}")),
            Error::Database(db) => Error::Database(DatabaseError {
                message: format!("{context}: {}", db.message),
                ..db
            }),
            Error::Backend(m) => Error::Backend(format!("{context}: {m}")),
            Error::Other(m) => Error::Other(format!("{context}: {m}")),
            Error::Task(t) => Error::Task(TaskError {
                message: format!("{context}: {}", t.message),
                retryable: t.retryable,
            }),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found"),
            Error::AccessDenied => f.write_str("access denied"),
            Error::TooLarge(m) => write!(f, "too large: {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::Conflict(m) => write!(f, "conflict: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::Database(db) => write!(f, "{db}"),
            Error::Backend(m) => write!(f, "backend error: {m}"),
            Error::Other(m) => f.write_str(m),
            Error::Task(t) => f.write_str(&t.message),
        }
    }
}

impl std::error::Error for Error {}

impl From<ObjectsError> for Error {
    fn from(e: ObjectsError) -> Self {
        match e {
            ObjectsError::NotFound => Error::NotFound,
            ObjectsError::AccessDenied => Error::AccessDenied,
            ObjectsError::TooLarge(m) => Error::TooLarge(m),
            ObjectsError::InvalidInput(m) => Error::InvalidInput(m),
            ObjectsError::Conflict(m) => Error::Conflict(m),
            ObjectsError::Unsupported(m) => Error::Unsupported(m),
            ObjectsError::Backend(m) => Error::Backend(m),
            ObjectsError::Other(m) => Error::Other(m),
        }
    }
}

impl From<SqlError> for Error {
    fn from(e: SqlError) -> Self {
        let database = |e: WitDatabaseError, kind| {
            Error::Database(DatabaseError {
                sqlstate: e.sqlstate,
                message: e.message,
                detail: e.detail,
                kind,
            })
        };
        match e {
            SqlError::AccessDenied => Error::AccessDenied,
            SqlError::TooLarge(m) => Error::TooLarge(m),
            SqlError::InvalidInput(m) => Error::InvalidInput(m),
            SqlError::Conflict(e) => database(e, DatabaseErrorKind::Conflict),
            SqlError::RetryTransaction(e) => database(e, DatabaseErrorKind::RetryTransaction),
            SqlError::Database(e) => database(e, DatabaseErrorKind::Other),
            SqlError::Unsupported(m) => Error::Unsupported(m),
            SqlError::Backend(m) => Error::Backend(m),
            SqlError::Other(m) => Error::Other(m),
        }
    }
}

/// What the database said when it refused a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseError {
    /// The SQLSTATE, e.g. `23505`. For SQLite, which has none, the host's
    /// nearest match (`23505` for a unique constraint, `40001` for a busy
    /// database), else `HY000`.
    pub sqlstate: String,
    /// The database's message.
    pub message: String,
    /// PostgreSQL's `DETAIL`, or SQLite's extended result code.
    pub detail: Option<String>,
    /// What a task may do about it.
    pub kind: DatabaseErrorKind,
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database error {}: {}", self.sqlstate, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// The class of a [`DatabaseError`], from the WIT `error` case it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseErrorKind {
    /// A unique violation: the row is already there.
    Conflict,
    /// A serialization failure or deadlock: the transaction was rolled back
    /// and running it again may succeed.
    RetryTransaction,
    /// Any other refusal; the SQLSTATE says which.
    Other,
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // Streams wrap host errors in `io::Error` so that `Read`/`Write` work;
        // unwrap them again so the kind survives a `?` through std::io.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Ok(inner) = e.into_inner().unwrap().downcast::<Error>() {
                return *inner;
            }
            unreachable!("checked with `is` above");
        }
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound,
            std::io::ErrorKind::PermissionDenied => Error::AccessDenied,
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                Error::InvalidInput(e.to_string())
            }
            _ => Error::Other(e.to_string()),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::InvalidInput(format!("JSON: {e}"))
    }
}

impl From<std::string::FromUtf8Error> for Error {
    fn from(e: std::string::FromUtf8Error) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

impl From<std::num::ParseIntError> for Error {
    fn from(e: std::num::ParseIntError) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

impl From<std::num::ParseFloatError> for Error {
    fn from(e: std::num::ParseFloatError) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Other(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Other(message.to_owned())
    }
}

impl From<TaskError> for Error {
    fn from(e: TaskError) -> Self {
        Error::Task(e)
    }
}

/// The error a task returns from `run`, as the host receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// What went wrong, for the run's record.
    pub message: String,
    /// Whether running the task again may succeed (a transient failure).
    pub retryable: bool,
}

impl TaskError {
    /// A task error with the given message and retry flag.
    pub fn new(message: impl fmt::Display, retryable: bool) -> Self {
        TaskError {
            message: message.to_string(),
            retryable,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

impl From<Error> for TaskError {
    fn from(e: Error) -> Self {
        match e {
            Error::Task(t) => t,
            e => TaskError {
                retryable: e.is_retryable(),
                message: e.to_string(),
            },
        }
    }
}

/// Adds context to errors and turns `None` into an error, like
/// `anyhow::Context`.
///
/// ```
/// use caisson_sdk::{Context, Result};
///
/// fn port(s: &str) -> Result<u16> {
///     s.parse::<u16>().context("bad port")
/// }
/// assert_eq!(
///     port("x").unwrap_err().to_string(),
///     "invalid input: bad port: invalid digit found in string",
/// );
/// let none: Option<u8> = None;
/// assert_eq!(none.context("missing").unwrap_err().to_string(), "missing");
/// ```
pub trait Context<T> {
    /// Wraps the error (or `None`) with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T>;
    /// Wraps the error (or `None`) with context computed only on failure.
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::Other(context.to_string()))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::Other(context().to_string()))
    }
}
