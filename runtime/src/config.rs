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
    /// Where runs get their scratch directories.
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
            scratch_dir: std::env::temp_dir().join("caisson-scratch"),
            pooling: true,
            max_instances: 128,
            max_memory: 4 << 30,
            fuel: true,
            max_resources: caisson_host_api::DEFAULT_MAX_RESOURCES,
        }
    }
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
