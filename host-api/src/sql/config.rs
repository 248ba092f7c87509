//! The `[sql.<label>]` tables of `caisson.toml`, and a run's [`SqlLimits`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::{ConfigError, at_least_one};

/// The `[sql.<label>]` tables of `caisson.toml`, by label.
pub type SqlConfig = BTreeMap<String, SqlSourceConfig>;

/// One SQL source.
///
/// ```toml
/// [sql.warehouse]
/// type = "postgres"            # or "sqlite", "mysql" (MySQL or MariaDB)
/// url = "postgres://reader:secret@db.internal/warehouse"
/// read_only = true             # default false
/// max_connections = 5          # default 5: the pool's size for this worker
/// ```
///
/// `Debug` redacts the URL's password, so the configuration can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSourceConfig {
    #[serde(rename = "type")]
    pub kind: SqlKind,
    /// A sqlx connection URL: `postgres://user:password@host:port/db?...`,
    /// `mysql://user:password@host:port/db?...` or
    /// `sqlite:///path/to/file.db?mode=rwc`.
    pub url: String,
    /// Whether the database refuses every write from tasks.
    #[serde(default)]
    pub read_only: bool,
    /// The most connections this worker opens to the source, shared by all
    /// its runs. Each open `connection` resource holds one.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    5
}

impl fmt::Debug for SqlSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlSourceConfig")
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("read_only", &self.read_only)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The database behind a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlKind {
    #[serde(alias = "postgresql")]
    Postgres,
    Sqlite,
    /// MySQL or MariaDB.
    #[serde(alias = "mariadb")]
    Mysql,
}

/// Returns `url` with its password, and any `password`-like query parameter,
/// replaced. A URL that does not parse is hidden entirely: it might still
/// hold a password in a form we did not recognise.
fn redact_url(url: &str) -> String {
    const REDACTED: &str = "REDACTED";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return format!("<{REDACTED} unparsable url>");
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, and this one has.
        let _ = parsed.set_password(Some(REDACTED));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let secret = key.to_ascii_lowercase().contains("password");
                let value = if secret {
                    REDACTED.into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

/// Per-run limits on what a task can make the host hold or copy. A
/// statement over `max_statement_bytes`, `max_params` or `max_param_bytes`
/// is refused with `too-large` before it reaches the database.
///
/// ```toml
/// [limits.sql]
/// max_rows = 10000         # default 10000
/// max_bytes = 16777216     # default 16 MiB
/// max_batch = 1000         # default 1000
/// max_statement_bytes = 1048576  # default 1 MiB
/// max_params = 65535       # default 65535
/// max_param_bytes = 16777216     # default 16 MiB
/// max_error_bytes = 256    # default 256
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlLimits {
    /// Most rows `query` returns; above it the task must use `cursor`.
    pub max_rows: usize,
    /// Most bytes (estimated from the decoded values) that `query` returns,
    /// that one `rows.next` returns, and that a cursor buffers ahead.
    pub max_bytes: usize,
    /// Most rows one `rows.next` returns, whatever the task asks for.
    pub max_batch: u32,
    /// Longest statement text, in bytes. The host holds the text, and a
    /// database driver copies it, for as long as the statement runs.
    pub max_statement_bytes: usize,
    /// Most parameters one statement binds (PostgreSQL's and MySQL's
    /// protocols stop at 65535 anyway).
    pub max_params: usize,
    /// Most bytes all parameters of one statement hold together
    /// (estimated like results).
    pub max_param_bytes: usize,
    /// Longest error text handed back to the task, in bytes; longer text
    /// (a database quoting a huge statement) is cut there and ends in `…`.
    pub max_error_bytes: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_batch: 1000,
            max_statement_bytes: 1 << 20,
            max_params: 65_535,
            max_param_bytes: 16 << 20,
            max_error_bytes: 256,
        }
    }
}

impl SqlLimits {
    /// Checks that every limit is at least 1 (a limit of 0 would refuse
    /// every result). `table` is where these limits sit in `caisson.toml`,
    /// e.g. `limits.sql`; errors name it and the key.
    pub fn validate(&self, table: &str) -> Result<(), ConfigError> {
        // usize fits in u64 on every target Caisson builds for.
        at_least_one(table, "max_rows", self.max_rows as u64)?;
        at_least_one(table, "max_bytes", self.max_bytes as u64)?;
        at_least_one(table, "max_batch", self.max_batch.into())?;
        at_least_one(
            table,
            "max_statement_bytes",
            self.max_statement_bytes as u64,
        )?;
        at_least_one(table, "max_params", self.max_params as u64)?;
        at_least_one(table, "max_param_bytes", self.max_param_bytes as u64)?;
        at_least_one(table, "max_error_bytes", self.max_error_bytes as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let redacted =
            redact_url("postgres://user:hunter2@db:5432/app?sslmode=require&password=x2");
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(!redacted.contains("x2"), "{redacted}");
        assert!(redacted.contains("sslmode=require"), "{redacted}");
        assert!(!redact_url("postgres://u:p@[bad").contains("p@"));
    }
}
