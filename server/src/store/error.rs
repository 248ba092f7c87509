//! [`DbError`]: what went wrong talking to the database, sorted the same
//! way whichever driver reported it (sqlx's, or SQLite called in place).

use sqlx::error::ErrorKind;

use super::lite::LiteError;

/// What went wrong talking to the database. Each variant keeps its cause
/// as its source: the driver's error, or a message of Caisson's own (a row
/// that breaks a rule, a connection error with its password removed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database could not be reached or the connection broke.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A uniqueness rule was broken (duplicate name, version, ...). The
    /// message is shown to the caller.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Other(#[source] BoxError),
    #[error("migration failed: {0}")]
    Migrate(#[source] BoxError),
    /// The tenant is at one of its quotas (named by its configuration key).
    #[error("this tenant is at its `{quota}` quota of {limit}")]
    QuotaExceeded { quota: &'static str, limit: i64 },
}

/// The cause a [`DbError`] keeps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl DbError {
    /// An error of Caisson's own, with no driver error behind it.
    pub(super) fn other(message: impl Into<String>) -> Self {
        DbError::Other(message.into().into())
    }
}

/// Maps a sqlx error to a [`DbError`]: `?` on any query does this. The
/// messages come from the driver and never contain the connection URL.
impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => DbError::Unavailable(e.into()),
            sqlx::Error::Database(d) => {
                if d.kind() == ErrorKind::UniqueViolation {
                    DbError::Conflict(d.message().to_owned())
                } else if is_unavailable(d.as_ref()) {
                    DbError::Unavailable(e.into())
                } else {
                    DbError::Other(e.into())
                }
            }
            _ => DbError::Other(e.into()),
        }
    }
}

/// Database errors that mean "try again later" rather than "this query is
/// wrong": a broken or refused PostgreSQL connection, a server shutting
/// down, and a SQLite lock still held after the busy timeout.
fn is_unavailable(e: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        // 08: connection exception; 53300: too many connections;
        // 57P01..57P03: admin/crash shutdown, cannot connect now.
        return code.starts_with("08")
            || code == "53300"
            || matches!(code, "57P01" | "57P02" | "57P03");
    }
    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // The code is the extended result code; the low byte is the
        // primary one. 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED.
        let primary = e
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .map(|c| c & 0xff);
        return matches!(primary, Some(5 | 6));
    }
    false
}

/// Errors of SQLite called in place, sorted as sqlx's are.
impl From<LiteError> for DbError {
    fn from(e: LiteError) -> Self {
        match e {
            LiteError::Conflict(message) => DbError::Conflict(message),
            LiteError::Busy(_) | LiteError::Closed => DbError::Unavailable(e.into()),
            LiteError::Invalid(_) | LiteError::Sqlite(_) => DbError::Other(e.into()),
        }
    }
}
