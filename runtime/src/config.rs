//! `caisson.toml`: what the operator configures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use caisson_host_api::objects::ObjectsConfig;
use caisson_host_api::sql::SqlConfig;
use serde::Deserialize;

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
            RuntimeError::Config(message) => {
                RuntimeError::Config(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, RuntimeError> {
        toml::from_str(text).map_err(|e| RuntimeError::Config(e.to_string()))
    }
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
    /// With pooling: how many task instances may be live at once.
    pub max_instances: u32,
    /// The largest memory limit any run may ask for, in bytes.
    pub max_memory: u64,
    /// Meter fuel so runs can be given a fuel budget. Costs some speed.
    pub fuel: bool,
    /// The most handles (stores, connections, streams, files) one run may
    /// hold open at once.
    pub max_resources: usize,
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
            max_resources: caisson_host_api::DEFAULT_MAX_RESOURCES,
        }
    }
}

impl EngineConfig {
    /// Creates `scratch_dir` (mode 0700) if it is missing, and refuses it
    /// unless it is private: a directory owned by this process's user that
    /// neither its group nor others may write. Each run's directory is
    /// made inside it; whoever else can write there could swap a run's
    /// directory (for a symbolic link to a host path, say) between its
    /// creation and its use, or read what runs leave there.
    pub fn prepare_scratch_dir(&self) -> Result<(), RuntimeError> {
        let dir = &self.scratch_dir;
        private_dir(dir).map_err(|reason| {
            RuntimeError::Config(format!(
                "`engine.scratch_dir` ({}) {reason}; point it at a private directory \
                 (mode 0700, owned by the user Caisson runs as), or remove it to have it created",
                dir.display()
            ))
        })
    }
}

/// See [`EngineConfig::prepare_scratch_dir`]. The error says what is wrong.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Err(e) = std::fs::symlink_metadata(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(format!("cannot be read: {e}"));
        }
        // Also succeeds if someone made it meanwhile: the checks below
        // then judge theirs.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot be created: {e}"))?;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let link = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot be read: {e}"))?;
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        return Err(format!(
            "is a symbolic link owned by another user (uid {})",
            link.uid()
        ));
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    if meta.uid() != me {
        return Err(format!(
            "is owned by another user (uid {}, this process runs as uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "is writable by its group or by others (mode {mode:o})"
        ));
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
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            timeout: Duration::from_secs(300),
            memory: 512 << 20,
            fuel: None,
            max_log_bytes: 16 << 20,
            max_output_bytes: 64 << 20,
        }
    }
}
