//! `caisson.toml`: what the operator configures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use caisson_host_api::objects::{ObjectLimits, ObjectsConfig, StoreConfig};
use caisson_host_api::sql::{SqlConfig, SqlLimits};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::RuntimeError;

/// The whole configuration file. Every table is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub engine: EngineConfig,
    /// Defaults for every run; a run may ask for less, or more up to
    /// [`EngineConfig::max_memory`].
    #[serde(default)]
    pub limits: RunLimits,
    /// Object stores by label.
    #[serde(default)]
    pub objects: ObjectsConfig,
    /// SQL sources by label.
    #[serde(default)]
    pub sql: SqlConfig,
}

impl Config {
    /// Reads and parses a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
            context: format!("could not read {}", path.display()),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            RuntimeError::Config {
                file: None,
                message,
                source,
            } => RuntimeError::Config {
                file: Some(path.to_path_buf()),
                message,
                source,
            },
            other => other,
        })
    }

    /// Parses and checks a configuration. Every `[objects.NAME]` table is
    /// read and validated on its own first, so that a bad one is reported
    /// as `objects.NAME: ...` or `objects.NAME.KEY: ...` (serde's error for
    /// a tagged table does not say which entry it was in).
    pub fn parse(text: &str) -> Result<Self, RuntimeError> {
        let table: toml::Table = toml::from_str(text).map_err(RuntimeError::toml)?;
        if let Some(toml::Value::Table(objects)) = table.get("objects") {
            for (label, value) in objects {
                check_store(&format!("objects.{label}"), value.clone())?;
            }
        }
        if let Some(toml::Value::Table(limits)) = table.get("limits") {
            check_keys::<ObjectLimits>("limits.objects", limits.get("objects"))?;
            check_keys::<SqlLimits>("limits.sql", limits.get("sql"))?;
        }
        let config: Config = toml::from_str(text).map_err(RuntimeError::toml)?;
        config.limits.objects.validate("limits.objects")?;
        config.limits.sql.validate("limits.sql")?;
        Ok(config)
    }
}

/// Reads the table at `table` (`limits.sql`) one key at a time, so that an
/// unknown key or a value of the wrong type is reported as
/// `limits.sql.KEY: ...` (serde's error for the whole table names neither).
fn check_keys<T: DeserializeOwned>(
    table: &str,
    value: Option<&toml::Value>,
) -> Result<(), RuntimeError> {
    let Some(toml::Value::Table(keys)) = value else {
        // Missing, or not a table: the whole file's parse says so.
        return Ok(());
    };
    for (key, value) in keys {
        let one = toml::Table::from_iter([(key.clone(), value.clone())]);
        T::deserialize(one).map_err(|e| RuntimeError::at(&format!("{table}.{key}"), e))?;
    }
    Ok(())
}

/// Reads one store table (`objects.raw`, `server.modules`) and validates
/// it, with errors that name the table and the key.
pub fn check_store(table: &str, value: toml::Value) -> Result<StoreConfig, RuntimeError> {
    let store = StoreConfig::deserialize(value).map_err(|e| RuntimeError::at(table, e))?;
    store.validate(table)?;
    Ok(store)
}

/// How the worker's engine is set up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Where compiled components are cached, keyed by their SHA-256.
    pub cache_dir: PathBuf,
    /// Where runs get their scratch directories: a private directory
    /// (created with mode 0700; one that is not owned by this user, or that
    /// its group or others may write, is refused at start-up, see
    /// [`EngineConfig::prepare_scratch_dir`]).
    pub scratch_dir: PathBuf,
    /// Use the pooling instance allocator (faster instantiation; reserves
    /// address space up front).
    pub pooling: bool,
    /// With pooling: how many task instances may be live at once. Each
    /// linear memory's slot reserves 4 GiB of address space (or
    /// `max_memory`, if larger) and a guard; the pool stops at 64 TiB of
    /// slots, about 16,000 memories (a Rust or Python task has one). Past
    /// about 9,900 idle instances Linux's default `vm.max_map_count`
    /// (65,530 mappings) is the limit instead.
    pub max_instances: u32,
    /// The largest memory limit any run may ask for, in bytes.
    pub max_memory: u64,
    /// Allow runs to ask for a fuel budget. Only runs that ask pay for
    /// metering: they run on a second engine whose code counts fuel, built
    /// and compiled for on the first such run.
    pub fuel: bool,
    /// With pooling: how many bytes at the start of each linear memory and
    /// table stay mapped when an instance slot is freed, reset in place
    /// instead of unmapped, so the next run does not fault them back in.
    /// `None` picks for this machine: 4 MiB where Linux can report which
    /// pages were written (`PAGEMAP_SCAN`, 6.7 and later), so only those
    /// are reset; none elsewhere, where the whole region would be zeroed.
    pub keep_resident: Option<usize>,
    /// The most handles (stores, connections, streams, files) one run may
    /// hold open at once.
    pub max_resources: usize,
    /// The most bytes of compiled code the worker keeps loaded. Past it the
    /// least recently used task is dropped from memory and, when next run,
    /// read back from `cache_dir` (not recompiled).
    pub module_cache_bytes: usize,
    /// Write `/tmp/perf-PID.map`, naming the tasks' compiled functions, so
    /// that `perf report` shows where a task spends its time. Off: every
    /// compiled function adds a line to a file that is never cleaned.
    pub perf_map: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: PathBuf::from(".caisson/cache"),
            // Beside the cache, in the state directory, not in a shared
            // /tmp where another user could have made it first.
            scratch_dir: PathBuf::from(".caisson/scratch"),
            pooling: true,
            max_instances: 128,
            max_memory: 4 << 30,
            fuel: true,
            keep_resident: None,
            max_resources: caisson_host_api::DEFAULT_MAX_RESOURCES,
            module_cache_bytes: 1 << 30,
            perf_map: false,
        }
    }
}

impl EngineConfig {
    /// [`EngineConfig::keep_resident`], with `None` decided for this machine.
    pub fn keep_resident_bytes(&self) -> usize {
        self.keep_resident.unwrap_or_else(|| {
            if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
                4 << 20
            } else {
                0
            }
        })
    }

    /// Creates `scratch_dir` (mode 0700) if it is missing, and refuses it
    /// unless it is private: a directory owned by this process's user that
    /// neither its group nor others may write. Each run's directory is
    /// made inside it; whoever else can write there could swap a run's
    /// directory (for a symbolic link to a host path, say) between its
    /// creation and its use, or read what runs leave there.
    pub fn prepare_scratch_dir(&self) -> Result<(), RuntimeError> {
        let dir = &self.scratch_dir;
        private_dir(dir).map_err(|(reason, source)| RuntimeError::ScratchDir {
            dir: dir.clone(),
            reason,
            source,
        })
    }
}

/// Why a directory is not private: what is wrong, and the I/O error that
/// said so, if one did.
type NotPrivate = (String, Option<std::io::Error>);

/// See [`EngineConfig::prepare_scratch_dir`]. The error says what is wrong.
fn private_dir(dir: &Path) -> Result<(), NotPrivate> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    fn io(what: &'static str) -> impl Fn(std::io::Error) -> NotPrivate {
        move |e| (format!("{what}: {e}"), Some(e))
    }
    let no = |reason: String| (reason, None);
    if let Err(e) = std::fs::symlink_metadata(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(io("cannot be read")(e));
        }
        // Also succeeds if someone made it meanwhile: the checks below
        // then judge theirs.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot be created"))?;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let link = std::fs::symlink_metadata(dir).map_err(io("cannot be read"))?;
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        return Err(no(format!(
            "is a symbolic link owned by another user (uid {})",
            link.uid()
        )));
    }
    let meta = std::fs::metadata(dir).map_err(io("cannot be read"))?;
    if !meta.is_dir() {
        return Err(no("is not a directory".into()));
    }
    if meta.uid() != me {
        return Err(no(format!(
            "is owned by another user (uid {}, this process runs as uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(no(format!(
            "is writable by its group or by others (mode {mode:o})"
        )));
    }
    Ok(())
}

/// Limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunLimits {
    /// Wall-clock time for the whole run, instantiation included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear memory across all the task's memories, in bytes.
    pub memory: u64,
    /// Fuel budget (roughly, wasm instructions); none means unlimited.
    pub fuel: Option<u64>,
    /// Bytes of log (the log interface, stdout and stderr together).
    pub max_log_bytes: u64,
    /// Bytes of output returned by `run`.
    pub max_output_bytes: u64,
    /// `[limits.objects]`: what one object store call may move.
    pub objects: ObjectLimits,
    /// `[limits.sql]`: what one SQL call may return or buffer.
    pub sql: SqlLimits,
}

/// The smallest memory limit a run may have: below it not even a small
/// component instantiates, so the run could only fail.
pub const MIN_MEMORY: u64 = 1 << 20;

/// Why a run's [`RunLimits`] do not fit an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The memory limit is under [`MIN_MEMORY`] or over the engine's
    /// `max_memory`.
    #[error(
        "a memory limit of {memory} bytes is outside what this engine allows: \
         at least 1 MiB and at most its `engine.max_memory` of {max} bytes"
    )]
    Memory { memory: u64, max: u64 },
    /// A fuel budget, on an engine that does not meter fuel.
    #[error(
        "a fuel budget was asked for but this engine does not meter fuel \
         (set `engine.fuel = true`, or ask for no fuel budget)"
    )]
    FuelNotMetered,
}

impl RunLimits {
    /// Whether these limits fit `engine`: the one check of a run's limits,
    /// which the server makes when it admits a run (so a run that cannot
    /// start is refused at once) and the runtime again when the run starts
    /// (its worker's engine may differ from the admitting server's).
    pub fn check(&self, engine: &EngineConfig) -> Result<(), LimitError> {
        if self.memory < MIN_MEMORY || self.memory > engine.max_memory {
            return Err(LimitError::Memory {
                memory: self.memory,
                max: engine.max_memory,
            });
        }
        if self.fuel.is_some() && !engine.fuel {
            return Err(LimitError::FuelNotMetered);
        }
        Ok(())
    }
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            timeout: Duration::from_secs(300),
            memory: 512 << 20,
            fuel: None,
            max_log_bytes: 16 << 20,
            max_output_bytes: 64 << 20,
            objects: ObjectLimits::default(),
            sql: SqlLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caisson_host_api::objects::ObjectStores;

    /// Bad `[objects.raw]` tables of every store type, and what the error
    /// must say. Each names the table, and the key where there is one.
    const BAD_STORES: &[(&str, &str)] = &[
        // S3: the URL that used to panic inside object_store, and its kin.
        (
            r#"type = "s3"
bucket = "b"
endpoint = """#,
            "objects.raw.endpoint: not a URL",
        ),
        (
            r#"type = "s3"
bucket = "b"
endpoint = "http://""#,
            "objects.raw.endpoint: not a URL",
        ),
        (
            r#"type = "s3"
bucket = "b"
endpoint = "localhost:9000""#,
            "objects.raw.endpoint: unsupported scheme `localhost`",
        ),
        (
            r#"type = "s3"
bucket = "b"
endpoint = "ftp://files.example.com""#,
            "objects.raw.endpoint: unsupported scheme `ftp`",
        ),
        (
            r#"type = "s3"
bucket = "b"
endpoint = "http://127.0.0.1:9000""#,
            "objects.raw.endpoint: an http:// endpoint needs `allow_http = true`",
        ),
        (r#"type = "s3""#, "objects.raw: missing field `bucket`"),
        (
            r#"type = "s3"
bucket = """#,
            "objects.raw.bucket: must not be empty",
        ),
        (
            r#"type = "s3"
bucket = "b/c""#,
            "objects.raw.bucket: \"b/c\" is not a bucket name",
        ),
        (
            r#"type = "s3"
bucket = 7"#,
            "objects.raw: invalid type: integer `7`, expected a string",
        ),
        (
            r#"type = "s3"
bukket = "b""#,
            "objects.raw: unknown field `bukket`",
        ),
        (
            r#"type = "s3"
bucket = "b"
region = """#,
            "objects.raw.region: must not be empty",
        ),
        (
            r#"type = "s3"
bucket = "b"
options = { aws_no_such_option = "1" }"#,
            "objects.raw.options.aws_no_such_option: not an S3 option",
        ),
        (
            r#"type = "s3"
bucket = "b"
prefix = "a/../b""#,
            "objects.raw.prefix: invalid key",
        ),
        // Any type.
        (r#"type = "gcs""#, "objects.raw: unknown variant `gcs`"),
        (r#"bucket = "b""#, "objects.raw: missing field `type`"),
        // Local and memory.
        (r#"type = "local""#, "objects.raw: missing field `root`"),
        (
            r#"type = "local"
root = """#,
            "objects.raw.root: must not be empty",
        ),
        (
            r#"type = "local"
root = "/tmp"
bucket = "b""#,
            "objects.raw: unknown field `bucket`",
        ),
        (
            r#"type = "memory"
root = "/tmp""#,
            "objects.raw: unknown field `root`",
        ),
        // HDFS.
        (r#"type = "hdfs""#, "objects.raw: missing field `url`"),
        (
            r#"type = "hdfs"
url = """#,
            "objects.raw.url: not a URL",
        ),
        (
            r#"type = "hdfs"
url = "namenode:8020""#,
            "objects.raw.url: unsupported scheme `namenode`",
        ),
        (
            r#"type = "hdfs"
url = "http://namenode:9870""#,
            "objects.raw.url: unsupported scheme `http`",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:port""#,
            "objects.raw.url: not a URL",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://""#,
            "objects.raw.url: no NameNode or nameservice",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:8020/warehouse""#,
            "objects.raw.url: \"hdfs://nn:8020/warehouse\" has a path",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://etl@nn:8020""#,
            "objects.raw.url: user names go in `user`",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:8020"
user = """#,
            "objects.raw.user: must not be empty",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:8020"
namenode = "nn""#,
            "objects.raw: unknown field `namenode`",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:8020"
config_dir = "/no/such/hadoop/conf""#,
            "objects.raw.config_dir: /no/such/hadoop/conf is not a directory",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:8020"
kerberos_keytab = "/etc/krb5.keytab""#,
            "objects.raw.kerberos_principal: required with `kerberos_keytab`",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:8020"
kerberos_principal = "etl@EXAMPLE.COM"
kerberos_keytab = "/no/such.keytab""#,
            "objects.raw.kerberos_keytab: /no/such.keytab is not a file",
        ),
        (
            r#"type = "hdfs"
url = "hdfs://nn:8020"
prefix = "/abs/../olute""#,
            "objects.raw.prefix: invalid key",
        ),
    ];

    #[test]
    fn bad_store_tables_are_named_errors_not_panics() {
        for (table, expected) in BAD_STORES {
            let text = format!("[objects.raw]\n{table}\n");
            let result = std::panic::catch_unwind(|| Config::parse(&text));
            let Ok(result) = result else {
                panic!("parsing panicked on:\n{text}");
            };
            let error = match result {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(e) => e.to_string(),
            };
            assert!(
                error.contains(expected),
                "for\n{text}\nexpected {expected:?} in: {error}"
            );
        }
    }

    /// Embedders may build stores from configs they deserialized
    /// themselves: building validates too.
    #[test]
    fn building_an_unchecked_store_table_validates_it() {
        for (table, expected) in BAD_STORES {
            // Only the tables that deserialize: the rest never get this far.
            let Ok(store) = toml::from_str::<StoreConfig>(table) else {
                continue;
            };
            let result = std::panic::catch_unwind(|| {
                ObjectStores::from_config(&[("raw".to_string(), store)].into())
            });
            let Ok(result) = result else {
                panic!("building panicked on:\n{table}");
            };
            let error = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                error.contains(expected),
                "for\n{table}\nexpected {expected:?} in: {error:?}"
            );
        }
    }

    #[test]
    fn object_and_sql_limits_load_with_their_defaults() {
        let config =
            Config::parse("[limits.objects]\nmax_list_page = 10\n[limits.sql]\nmax_rows = 3\n")
                .unwrap();
        assert_eq!(config.limits.objects.max_list_page, 10);
        assert_eq!(
            config.limits.objects.max_object_bytes,
            ObjectLimits::default().max_object_bytes
        );
        assert_eq!(config.limits.sql.max_rows, 3);
        assert_eq!(config.limits.sql.max_batch, SqlLimits::default().max_batch);
        let config = Config::parse("").unwrap();
        assert_eq!(config.limits.objects, ObjectLimits::default());
        assert_eq!(config.limits.sql, SqlLimits::default());
    }

    #[test]
    fn bad_limits_name_their_table_and_key() {
        for (text, expected) in [
            (
                "[limits.sql]\nmax_rows = \"many\"",
                "limits.sql.max_rows: invalid type: string \"many\"",
            ),
            (
                "[limits.sql]\nmax_rowz = 5",
                "limits.sql.max_rowz: unknown field `max_rowz`",
            ),
            (
                "[limits.sql]\nmax_batch = -1",
                "limits.sql.max_batch: invalid value: integer `-1`",
            ),
            (
                "[limits.sql]\nmax_bytes = 0",
                "limits.sql.max_bytes: must be at least 1",
            ),
            (
                "[limits.objects]\nmax_list_page = 0",
                "limits.objects.max_list_page: must be at least 1",
            ),
            (
                "[limits.objects]\nmax_object_bytes = 1.5",
                "limits.objects.max_object_bytes: invalid type: floating point",
            ),
        ] {
            let error = match Config::parse(text) {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(e) => e.to_string(),
            };
            assert!(
                error.contains(expected),
                "for\n{text}\nexpected {expected:?} in: {error}"
            );
        }
    }

    #[test]
    fn good_store_tables_of_every_type_load() {
        let dir = std::env::temp_dir().join("caisson-config-test");
        let text = format!(
            r#"
[objects.s3]
type = "s3"
bucket = "b"
endpoint = "http://127.0.0.1:9000"
allow_http = true
path_style = true

[objects.aws]
type = "s3"
bucket = "b"
region = "eu-west-1"
endpoint = "https://s3.eu-west-1.amazonaws.com"

[objects.local]
type = "local"
root = "{}"

[objects.mem]
type = "memory"
prefix = "a/b"

[objects.hdfs]
type = "hdfs"
url = "hdfs://127.0.0.1:8020"
prefix = "/warehouse/raw/"
user = "etl"

[objects.ha]
type = "hdfs"
url = "hdfs://ns"
config = {{ "dfs.ha.namenodes.ns" = "nn1,nn2", "dfs.namenode.rpc-address.ns.nn1" = "10.0.0.1:8020", "dfs.namenode.rpc-address.ns.nn2" = "10.0.0.2:8020" }}
"#,
            dir.display()
        );
        let config = Config::parse(&text).unwrap();
        // Building makes no request, so every one of them builds here.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let stores = rt.block_on(async { ObjectStores::from_config(&config.objects) });
        let stores = stores.unwrap();
        assert_eq!(stores.labels().count(), 6);
    }
}
