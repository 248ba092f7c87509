//! Caisson's host capabilities, served to task components.
//!
//! Each capability follows one shape (as in `wasmtime-wasi-keyvalue`): a
//! context built from typed configuration (`ObjectsCtx`, `SqlCtx`, ...), a
//! borrowed view of that context plus the store's [`ResourceTable`]
//! (`ObjectsView`, `SqlView`, ...) that implements the generated `Host`
//! traits, and an `add_to_linker` function. The runtime only calls the
//! `add_to_linker` functions.
//!
//! Backends are shared by every run on a worker ([`objects::ObjectStores`],
//! [`sql::SqlSources`]); what a run may reach is decided per run by its
//! [`Grants`]. A label the run was not granted is indistinguishable, to the
//! guest, from a label that does not exist: both are `access-denied`.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use caisson_host_api::{objects::{ObjectStores, ObjectsConfig}, Grants};
//!
//! let config: ObjectsConfig = toml::from_str(r#"
//!     [raw]
//!     type = "local"
//!     root = "/srv/data/raw"
//! "#)?;
//! let stores = ObjectStores::from_config(&config)?;
//! let grants = Grants::default().with_object_store("raw");
//! let ctx = stores.ctx_for(&grants, Default::default())?;
//! # let _ = ctx; Ok(()) }
//! ```

use std::collections::BTreeSet;

use wasmtime::component::ResourceTable;

pub mod log;
pub mod memory;
pub mod objects;
pub mod observe;
pub mod params;
pub mod scratch;
pub mod sql;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod test_support;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "caisson:task/task",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "caisson:task/objects.store": crate::objects::StoreHandle,
            "caisson:task/objects.writer": crate::objects::Upload,
            "caisson:task/objects.write-options": crate::objects::WriteOptions,
            "caisson:task/objects.many-reader": crate::objects::ManyReader,
            "caisson:task/sql.connection": crate::sql::Connection,
            "caisson:task/sql.rows": crate::sql::Cursor,
            "caisson:task/sql.begin-options": crate::sql::BeginOptions,
        },
        require_store_data_send: true,
    });
}

/// Bindings for the standard interfaces Caisson also serves (the
/// `standard` world): `wasi:config/store` and `wasi:logging/logging`.
mod standard_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "caisson:task/standard",
        imports: { default: async | trappable },
        require_store_data_send: true,
    });
}

pub use bindings::Task as TaskBindings;
pub use bindings::TaskPre as TaskBindingsPre;
/// The `objects` interface's error.
pub use bindings::caisson::task::objects::Error as ObjectsError;
/// The `sql` interface's error.
pub use bindings::caisson::task::sql::Error as SqlError;
pub use bindings::caisson::task::task_types::TaskError;

/// The generated WIT types, for hosts that need to name them.
pub mod wit {
    pub use crate::bindings::caisson::task::{log, objects, params, sql, task_types};
    /// `wasi:config/store`, served from the run's parameters.
    pub use crate::standard_bindings::wasi::config::store as config_store;
    /// `wasi:logging/logging`, written to the run's log.
    pub use crate::standard_bindings::wasi::logging::logging;
}

/// The labels a run may open. Everything not named here is denied.
///
/// The same type says what a run asks for and what a tenant may give; in
/// JSON it is `{"objects": [...], "sql": [...]}`, either list optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Object store labels.
    #[serde(default)]
    // A label given twice is taken once, so the document does not ask
    // for unique items.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub objects: BTreeSet<String>,
    /// SQL source labels.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub sql: BTreeSet<String>,
}

/// The kind of a granted label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    Objects,
    Sql,
}

impl Grants {
    /// The labels of these grants that `allowed` does not hold, each with
    /// its kind: the one check of what a run asks for against what its
    /// tenant may give, when the run is admitted and again when it starts.
    pub fn not_in(&self, allowed: &Grants) -> Vec<(GrantKind, &str)> {
        let objects = (self.objects.iter())
            .filter(|l| !allowed.objects.contains(*l))
            .map(|l| (GrantKind::Objects, l.as_str()));
        let sql = (self.sql.iter())
            .filter(|l| !allowed.sql.contains(*l))
            .map(|l| (GrantKind::Sql, l.as_str()));
        objects.chain(sql).collect()
    }

    /// The labels of these grants that `allowed` holds.
    pub fn within(&self, allowed: &Grants) -> Grants {
        Grants {
            objects: self
                .objects
                .intersection(&allowed.objects)
                .cloned()
                .collect(),
            sql: self.sql.intersection(&allowed.sql).cloned().collect(),
        }
    }

    /// Grants the object store `label`.
    pub fn with_object_store(mut self, label: impl Into<String>) -> Self {
        self.objects.insert(label.into());
        self
    }

    /// Grants the SQL source `label`.
    pub fn with_sql(mut self, label: impl Into<String>) -> Self {
        self.sql.insert(label.into());
        self
    }
}

/// Something the operator's configuration got wrong, found when the worker
/// starts or a run is admitted rather than when a task calls in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("unknown {kind} label `{label}`: it is not in the configuration")]
    UnknownLabel { kind: &'static str, label: String },
    /// A bad value; `source` is the parser's reason, where there is one.
    #[error("invalid configuration for {kind} `{label}`: {message}")]
    Invalid {
        kind: &'static str,
        label: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A bad value in one key of a table, e.g. `objects.raw.endpoint`;
    /// `source` is the parser's reason, where there is one.
    #[error("{path}: {message}")]
    Key {
        path: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("could not build {kind} `{label}`")]
    Backend {
        kind: &'static str,
        label: String,
        #[source]
        source: BoxError,
    },
}

/// `Ok` if the limit `value` (of `table.key`) is at least 1.
pub(crate) fn at_least_one(table: &str, key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::Key {
            path: format!("{table}.{key}"),
            message: "must be at least 1".into(),
            source: None,
        });
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes (on a char boundary) and marks the
/// cut with `…`. The one place error text bound for a guest is shortened:
/// a database or a key check may quote what the task sent, and a task that
/// sends megabytes must not get megabytes back (nor fill the log with them).
pub(crate) fn clip_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

/// An interface's error whose text the guest receives: every string in it
/// goes through [`clip_text`].
pub(crate) trait GuestError {
    fn clipped(self, max: usize) -> Self;
}

impl GuestError for ObjectsError {
    fn clipped(mut self, max: usize) -> Self {
        use ObjectsError as E;
        match &mut self {
            E::NotFound | E::AccessDenied => {}
            E::TooLarge(m)
            | E::InvalidInput(m)
            | E::Conflict(m)
            | E::Unsupported(m)
            | E::Backend(m)
            | E::Other(m) => clip_text(m, max),
        }
        self
    }
}

impl GuestError for SqlError {
    fn clipped(mut self, max: usize) -> Self {
        use SqlError as E;
        match &mut self {
            E::AccessDenied => {}
            E::TooLarge(m)
            | E::InvalidInput(m)
            | E::Unsupported(m)
            | E::Backend(m)
            | E::Other(m) => clip_text(m, max),
            E::Conflict(db) | E::RetryTransaction(db) | E::Database(db) => {
                clip_text(&mut db.sqlstate, max);
                clip_text(&mut db.message, max);
                if let Some(detail) = &mut db.detail {
                    clip_text(detail, max);
                }
            }
        }
        self
    }
}

/// The cause carried by a [`ConfigError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The number of live resources a run may hold in its table (stores,
/// connections, cursors, streams, WASI handles). Without a cap a task could
/// open handles until the host runs out of memory. The runtime applies it
/// with [`ResourceTable::set_max_capacity`].
pub const DEFAULT_MAX_RESOURCES: usize = 10_000;

/// An interface's error type that can say "too large", which is what a full
/// resource table becomes.
pub(crate) trait TooLarge {
    fn too_large(message: String) -> Self;
}

impl TooLarge for ObjectsError {
    fn too_large(message: String) -> Self {
        ObjectsError::TooLarge(message)
    }
}

impl TooLarge for SqlError {
    fn too_large(message: String) -> Self {
        SqlError::TooLarge(message)
    }
}

/// Pushes `value` into `table`, turning a full table into a `too-large`
/// error the guest can handle instead of a trap.
pub(crate) fn push_resource<T: Send + 'static, E: TooLarge>(
    table: &mut ResourceTable,
    value: T,
) -> wasmtime::Result<Result<wasmtime::component::Resource<T>, E>> {
    match table.push(value) {
        Ok(resource) => Ok(Ok(resource)),
        Err(wasmtime::component::ResourceTableError::Full) => Ok(Err(E::too_large(format!(
            "this run already holds {} open handles; drop some before opening more",
            table.max_capacity()
        )))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::clip_text;

    #[test]
    fn clipped_text_ends_on_a_char_boundary_with_a_mark() {
        let mut short = "abc".to_owned();
        clip_text(&mut short, 3);
        assert_eq!(short, "abc");
        let mut long = "a".repeat(10);
        clip_text(&mut long, 4);
        assert_eq!(long, "aaaa…");
        // `é` is two bytes: a cut inside it moves back before it.
        let mut wide = "aéé".to_owned();
        clip_text(&mut wide, 2);
        assert_eq!(wide, "a…");
    }
}
