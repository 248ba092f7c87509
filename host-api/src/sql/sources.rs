//! A worker's SQL sources ([`SqlSources`]) and what one run may open of them
//! ([`SqlCtx`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::backend::SqlBackend;
use super::config::{SqlConfig, SqlKind, SqlLimits, SqlSourceConfig};
use super::{mysql, postgres, sqlite};
use crate::memory::MemoryBudget;
use crate::{ConfigError, Grants};

/// Every SQL source of a worker, shared by all its runs. Cloning is cheap.
#[derive(Clone, Debug, Default)]
pub struct SqlSources {
    sources: Arc<BTreeMap<String, Arc<dyn SqlBackend>>>,
}

impl SqlSources {
    /// Builds a lazy pool for every source. Nothing connects yet: a database
    /// that is down fails the runs that open it, not the worker.
    ///
    /// Must be called inside a Tokio runtime (the pools spawn maintenance
    /// tasks); outside one it fails with [`ConfigError::Backend`].
    pub fn from_config(config: &SqlConfig) -> Result<Self, ConfigError> {
        let mut sources = BTreeMap::new();
        for (label, source) in config {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(ConfigError::Backend {
                    kind: "sql",
                    label: label.clone(),
                    source: "SQL pools must be created inside a Tokio runtime".into(),
                });
            }
            sources.insert(label.clone(), build_source(label, source)?);
        }
        Ok(Self {
            sources: Arc::new(sources),
        })
    }

    /// The configured labels, in order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// The context for one run: the sources it was granted.
    ///
    /// A granted label that is not configured is the operator's mistake and
    /// fails here, when the run is admitted, rather than at `open`.
    pub fn ctx_for(&self, grants: &Grants, limits: SqlLimits) -> Result<SqlCtx, ConfigError> {
        let mut sources = BTreeMap::new();
        for label in &grants.sql {
            let source = self
                .sources
                .get(label)
                .ok_or_else(|| ConfigError::UnknownLabel {
                    kind: "sql",
                    label: label.clone(),
                })?;
            sources.insert(label.clone(), source.clone());
        }
        Ok(SqlCtx {
            sources,
            limits,
            deadline: None,
            handle_labels: Default::default(),
            memory: MemoryBudget::default(),
        })
    }

    /// Closes every pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        for source in self.sources.values() {
            source.close().await;
        }
    }
}

/// The one place that knows every backend: a new database is one more arm.
fn build_source(label: &str, config: &SqlSourceConfig) -> Result<Arc<dyn SqlBackend>, ConfigError> {
    if config.max_connections == 0 {
        return Err(ConfigError::Invalid {
            kind: "sql",
            label: label.to_owned(),
            message: "max_connections must be at least 1".into(),
            source: None,
        });
    }
    Ok(match config.kind {
        SqlKind::Postgres => Arc::new(postgres::PgBackend::new(label, config)?),
        SqlKind::Sqlite => Arc::new(sqlite::SqliteBackend::new(label, config)?),
        SqlKind::Mysql => Arc::new(mysql::MySqlBackend::new(label, config)?),
    })
}

/// The SQL sources one run may open, and its limits. Built by
/// [`SqlSources::ctx_for`]; the default has no sources.
#[derive(Debug, Default)]
pub struct SqlCtx {
    sources: BTreeMap<String, Arc<dyn SqlBackend>>,
    limits: SqlLimits,
    /// When the run must be over: what a PostgreSQL connection's
    /// `statement_timeout` is set from.
    deadline: Option<Instant>,
    /// The source labels of the run's connections and cursors, for
    /// observing the calls made on them.
    pub(super) handle_labels: crate::observe::HandleLabels,
    /// What statements, parameters and rows held by the host are charged to.
    memory: MemoryBudget,
}

impl SqlCtx {
    /// Charges what the host holds for this run's statements and results
    /// to `memory`, the run's budget.
    pub fn with_memory(mut self, memory: MemoryBudget) -> Self {
        self.memory = memory;
        self
    }

    pub(super) fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// Sets when the run must be over. Connections opened afterwards get a
    /// `statement_timeout` of the time left (PostgreSQL); whatever the
    /// timeout, a statement still running when the run ends is stopped.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The labels this run may open.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    pub(super) fn source(&self, label: &str) -> Option<&dyn SqlBackend> {
        self.sources.get(label).map(|source| &**source)
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// This run's limits.
    pub fn limits(&self) -> SqlLimits {
        self.limits
    }
}
