//! sqlx's errors as the guest's `error`, for every backend. A backend maps
//! its database's own refusals (SQLSTATEs, result codes); everything else a
//! driver reports is mapped here, the same way for all of them.

use sqlx::error::DatabaseError;

use crate::SqlError as WitError;

/// Maps a sqlx error to the guest's error, with `database` mapping what the
/// database itself refused. Messages come from the database or the driver
/// and describe the statement, never the connection URL.
pub(super) fn map_sqlx_error(
    error: sqlx::Error,
    database: impl FnOnce(&dyn DatabaseError) -> WitError,
) -> WitError {
    match error {
        sqlx::Error::RowNotFound => WitError::Other("no rows".into()),
        sqlx::Error::Database(db) => database(&*db),
        // The driver's own text for these can name the server's address or
        // its certificate's host: the guest gets the kind, the server log
        // the details.
        e @ (sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed) => {
            tracing::warn!(error = %e, "SQL connection failed");
            WitError::Backend("the database connection failed; retry later".into())
        }
        e @ sqlx::Error::Configuration(_) => {
            tracing::warn!(error = %e, "SQL source misconfigured");
            WitError::Other("the database source is misconfigured".into())
        }
        // Decoding and column errors describe the statement's result.
        e => WitError::Other(e.to_string()),
    }
}

/// The guest's message when `open` cannot get a connection. A database's
/// refusal (bad password, unknown database...) is reduced to its code: its
/// message can name the role or database of the URL.
pub(super) fn connect_error_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => format!(
            "could not connect to the database: it refused the connection (code {})",
            db.code().as_deref().unwrap_or("unknown")
        ),
        sqlx::Error::PoolTimedOut => {
            "could not connect to the database: no connection was free or it did not answer in time"
                .into()
        }
        // An I/O or TLS error's text can name the server.
        _ => "could not connect to the database".into(),
    }
}
