//! The `[server]` and `[tenants]` tables of `caisson.toml`.
//!
//! The rest of the file (`[engine]`, `[limits]`, `[objects]`, `[sql]`) is
//! the runtime's; [`ServerConfig::parse`] splits the two so each keeps
//! rejecting unknown keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use caisson_host_api::Grants;
use caisson_host_api::objects::StoreConfig;
use serde::Deserialize;

use crate::store::TenantQuotas;

/// Everything `caisson serve` and `caisson worker` read.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub server: ServerSection,
    /// Tenants defined by the operator, by name.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The runtime's own configuration.
    pub runtime: caisson_runtime::Config,
    /// Traces: where they go, and how many runs are traced.
    pub telemetry: crate::telemetry::TelemetryConfig,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// `sqlite://path` (embedded default) or `postgres://...`.
    pub database: String,
    /// Where uploaded components are kept, content-addressed.
    pub modules: StoreConfig,
    /// In-process worker slots for `caisson serve`; 0 runs no worker.
    pub workers: usize,
    /// Memory the in-process workers may promise to runs at once, in
    /// bytes: a run is admitted only if its memory limit fits.
    pub worker_memory: u64,
    /// The largest component upload, in bytes.
    pub max_module_bytes: u64,
    /// Run outputs up to this size are kept in the database; larger ones
    /// in the module store (under `outputs/`), served by `/v1/runs/{id}/output`.
    pub inline_output_bytes: u64,
    /// How long a claimed run stays leased without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How often idle workers look for work.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// How often the scheduler fires schedules and re-queues lost runs.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// A token with admin rights (tenants, tokens). Also `CAISSON_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// How long a worker finishing runs on SIGTERM may take before it hands
    /// them back.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a request's head (request line and headers) may take to
    /// arrive in full, counted from when the connection opened or its
    /// previous response was sent. Cuts off slowloris clients.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight may stay silent
    /// (not a byte received) before it is closed. At most
    /// `header_read_timeout`, which bounds the same wait in full.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a request may take until its response starts: reading a
    /// JSON body and handling it. Streamed responses (log streams, output
    /// downloads) are not cut once they start; a module upload is bounded
    /// per piece of its body instead (each must arrive within this time).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The most connections served at once; more are answered 503 at once.
    pub max_connections: usize,
    /// The most live log streams (`/v1/runs/{id}/logs?follow=true`) one
    /// tenant may hold open at once; more are answered 429.
    pub max_log_streams: usize,
    /// The most splits one map step may make; a prefix that needs more
    /// fails the step, naming this setting.
    pub max_map_splits: usize,
    /// The most tenants `/metrics` names in its `tenant` label; the rest
    /// share `other`.
    pub metrics_tenants: usize,
    /// The most (tenant, module) pairs `/metrics` names in its `module`
    /// label; the rest share `other`. Bounds the series a tenant's module
    /// names can make Prometheus keep.
    pub metrics_modules: usize,
    /// Where a process that serves no API (`caisson worker`) serves
    /// `/metrics`, if anywhere; `caisson serve` serves it on `listen`.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: ([127, 0, 0, 1], 7070).into(),
            database: "sqlite://.caisson/caisson.db".into(),
            modules: toml::from_str("type = \"local\"\nroot = \".caisson/modules\"")
                .expect("a valid default"),
            workers: 2,
            worker_memory: 8 << 30,
            max_module_bytes: 256 << 20,
            inline_output_bytes: 1 << 20,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_millis(200),
            tick: Duration::from_secs(1),
            admin_token: None,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_log_streams: 16,
            max_map_splits: 10_000,
            metrics_tenants: crate::metrics::DEFAULT_TENANT_LABELS,
            metrics_modules: crate::metrics::DEFAULT_MODULE_LABELS,
            metrics_listen: None,
        }
    }
}

// Hand-written so that the admin token and a database password never
// reach a log line.
impl std::fmt::Debug for ServerSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSection")
            .field("listen", &self.listen)
            .field("database", &redact_url(&self.database))
            .field("modules", &self.modules)
            .field("workers", &self.workers)
            .field("worker_memory", &self.worker_memory)
            .field("max_module_bytes", &self.max_module_bytes)
            .field("inline_output_bytes", &self.inline_output_bytes)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("poll", &self.poll)
            .field("tick", &self.tick)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("shutdown_grace", &self.shutdown_grace)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_log_streams", &self.max_log_streams)
            .field("max_map_splits", &self.max_map_splits)
            .field("metrics_tenants", &self.metrics_tenants)
            .field("metrics_modules", &self.metrics_modules)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

/// `url` with any password replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("<redacted>"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL we can read: show the scheme alone.
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://<redacted>"),
            None => "<redacted>".into(),
        },
    }
}

impl ServerSection {
    /// Refuses values that would disable a limit or could never work,
    /// naming the table and key.
    fn validate(&self) -> anyhow::Result<()> {
        for (key, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                anyhow::bail!("`[server] {key}` must be longer than 0s");
            }
        }
        // Waiting for the next request's head is bounded by
        // `header_read_timeout` in full (hyper starts that timer as soon
        // as a connection goes idle), so a longer idle timeout would be a
        // setting that does nothing.
        if self.idle_timeout > self.header_read_timeout {
            anyhow::bail!(
                "`[server] idle_timeout` ({}) must not be longer than `[server] header_read_timeout` ({})",
                humantime::format_duration(self.idle_timeout),
                humantime::format_duration(self.header_read_timeout)
            );
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("max_log_streams", self.max_log_streams),
            ("max_map_splits", self.max_map_splits),
        ] {
            if value == 0 {
                anyhow::bail!("`[server] {key}` must be at least 1");
            }
        }
        Ok(())
    }
}

/// A tenant the operator defines: its tokens and what its runs may be granted.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Bearer tokens of this tenant.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Object store labels its runs may be granted.
    #[serde(default)]
    pub objects: Vec<String>,
    /// SQL labels its runs may be granted.
    #[serde(default)]
    pub sql: Vec<String>,
    /// See [`TenantQuotas::max_queued_runs`].
    #[serde(default = "default_max_queued_runs")]
    pub max_queued_runs: u32,
    /// See [`TenantQuotas::max_running_runs`].
    #[serde(default = "default_max_running_runs")]
    pub max_running_runs: u32,
    /// See [`TenantQuotas::max_schedules`].
    #[serde(default = "default_max_schedules")]
    pub max_schedules: u32,
}

fn default_max_queued_runs() -> u32 {
    TenantQuotas::default().max_queued_runs
}

fn default_max_running_runs() -> u32 {
    TenantQuotas::default().max_running_runs
}

fn default_max_schedules() -> u32 {
    TenantQuotas::default().max_schedules
}

// Hand-written so that tokens never reach a log line.
impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("tokens", &format!("<{} redacted>", self.tokens.len()))
            .field("objects", &self.objects)
            .field("sql", &self.sql)
            .field("quotas", &self.quotas())
            .finish()
    }
}

impl Default for TenantConfig {
    fn default() -> Self {
        let quotas = TenantQuotas::default();
        TenantConfig {
            tokens: Vec::new(),
            objects: Vec::new(),
            sql: Vec::new(),
            max_queued_runs: quotas.max_queued_runs,
            max_running_runs: quotas.max_running_runs,
            max_schedules: quotas.max_schedules,
        }
    }
}

impl TenantConfig {
    pub fn quotas(&self) -> TenantQuotas {
        TenantQuotas {
            max_queued_runs: self.max_queued_runs,
            max_running_runs: self.max_running_runs,
            max_schedules: self.max_schedules,
        }
    }

    pub fn allowed(&self) -> Grants {
        Grants {
            objects: self.objects.iter().cloned().collect(),
            sql: self.sql.iter().cloned().collect(),
        }
    }
}

/// The tenant that owns everything when no tokens are configured.
pub const DEFAULT_TENANT: &str = "default";

impl ServerConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("could not read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        let server = match table.remove("server") {
            Some(value) => {
                // Checked on its own first, for errors that name the key.
                if let Some(modules) = value.get("modules") {
                    caisson_runtime::config::check_store("server.modules", modules.clone())?;
                }
                // Through serde_path_to_error, so a bad value names its key.
                serde_path_to_error::deserialize(value).map_err(|e| {
                    match e.path().to_string().as_str() {
                        "." => anyhow::anyhow!("`[server]`: {}", e.inner()),
                        key => anyhow::anyhow!("`[server] {key}`: {}", e.inner()),
                    }
                })?
            }
            None => ServerSection::default(),
        };
        let telemetry: crate::telemetry::TelemetryConfig = match table.remove("telemetry") {
            Some(value) => serde_path_to_error::deserialize(value).map_err(|e| {
                match e.path().to_string().as_str() {
                    "." => anyhow::anyhow!("`[telemetry]`: {}", e.inner()),
                    key => anyhow::anyhow!("`[telemetry] {key}`: {}", e.inner()),
                }
            })?,
            None => Default::default(),
        };
        telemetry.validate()?;
        let tenants = match table.remove("tenants") {
            Some(value) => value.try_into()?,
            None => BTreeMap::new(),
        };
        let runtime = caisson_runtime::Config::parse(&toml::to_string(&table)?)?;
        let mut config = ServerConfig {
            server,
            tenants,
            runtime,
            telemetry,
        };
        config.server.validate()?;
        config.admin_token_from_env();
        Ok(config)
    }

    /// `CAISSON_ADMIN_TOKEN`, when no admin token is configured: with a
    /// file or without one (the embedded default).
    fn admin_token_from_env(&mut self) {
        if self.server.admin_token.is_none() {
            self.server.admin_token = std::env::var("CAISSON_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
        }
    }

    /// The default configuration rooted at `dir`, for the embedded
    /// single-machine setup.
    pub fn embedded(dir: &Path) -> Self {
        let mut server = ServerSection {
            database: format!("sqlite://{}", dir.join("caisson.db").display()),
            ..ServerSection::default()
        };
        server.modules = toml::from_str(&format!(
            "type = \"local\"\nroot = \"{}\"",
            dir.join("modules").display()
        ))
        .expect("a valid store config");
        let mut runtime = caisson_runtime::Config::default();
        runtime.engine.cache_dir = dir.join("cache");
        runtime.engine.scratch_dir = dir.join("scratch");
        let mut config = ServerConfig {
            server,
            tenants: BTreeMap::new(),
            runtime,
            telemetry: Default::default(),
        };
        config.admin_token_from_env();
        config
    }

    /// Whether the API is open (no tokens at all).
    pub fn open_access(&self) -> bool {
        self.server.admin_token.is_none() && self.tenants.values().all(|t| t.tokens.is_empty())
    }

    /// Where the SQLite file lives, if the database is SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.server
            .database
            .strip_prefix("sqlite://")
            .map(|rest| PathBuf::from(rest.split('?').next().unwrap_or(rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_tenants_and_runtime_tables_split() {
        let config = ServerConfig::parse(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            database = "postgres://u:p@db/caisson"
            workers = 4
            lease = "10s"

            [tenants.acme]
            tokens = ["t1"]
            objects = ["raw"]

            [limits]
            timeout = "30s"

            [objects.raw]
            type = "memory"
            "#,
        )
        .unwrap();
        assert_eq!(config.server.workers, 4);
        assert_eq!(config.server.lease, Duration::from_secs(10));
        assert_eq!(config.tenants["acme"].objects, vec!["raw"]);
        assert_eq!(config.runtime.limits.timeout, Duration::from_secs(30));
        assert!(config.runtime.objects.contains_key("raw"));
        assert!(!config.open_access());
    }

    #[test]
    fn tenant_quotas_have_defaults_and_may_be_set() {
        let config = ServerConfig::parse(
            r#"
            [tenants.acme]
            max_queued_runs = 5
            max_running_runs = 2

            [tenants.default]
            max_schedules = 3

            [tenants.plain]
            "#,
        )
        .unwrap();
        let defaults = TenantQuotas::default();
        let acme = config.tenants["acme"].quotas();
        assert_eq!((acme.max_queued_runs, acme.max_running_runs), (5, 2));
        assert_eq!(acme.max_schedules, defaults.max_schedules);
        assert_eq!(config.tenants["default"].quotas().max_schedules, 3);
        assert_eq!(config.tenants["plain"].quotas(), defaults);
        // Quotas alone are not tokens: still open mode.
        assert!(config.open_access());
        assert!(
            ServerConfig::parse(
                "[tenants.a]
max_running_runs = -1"
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_keys_are_rejected_in_every_table() {
        assert!(ServerConfig::parse("[server]\nlisten_on = \"x\"").is_err());
        assert!(ServerConfig::parse("[tenants.a]\ntoken = \"x\"").is_err());
        assert!(ServerConfig::parse("[engine]\npool = true").is_err());
    }

    #[test]
    fn debug_output_shows_no_secrets() {
        let config = ServerConfig::parse(
            r#"
            [server]
            database = "postgres://caisson:pg-secret-3f9@db:5432/caisson"
            admin_token = "admin-secret-81c"

            [tenants.acme]
            tokens = ["tenant-secret-5d2"]

            [objects.raw]
            type = "s3"
            bucket = "b"
            access_key_id = "access-secret-0a7"
            secret_access_key = "s3-secret-e44"

            [sql.warehouse]
            type = "postgres"
            url = "postgres://etl:sql-secret-77b@db/warehouse"
            "#,
        )
        .unwrap();
        let text = format!("{config:?}");
        for secret in [
            "pg-secret-3f9",
            "admin-secret-81c",
            "tenant-secret-5d2",
            "access-secret-0a7",
            "s3-secret-e44",
            "sql-secret-77b",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("postgres://caisson:%3Credacted%3E@db:5432/caisson")
                || text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn http_limits_are_validated_with_their_table_and_key() {
        let config = ServerConfig::parse("").unwrap();
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.server.max_connections, 512);
        for (text, key) in [
            (
                "header_read_timeout = \"0s\"",
                "`[server] header_read_timeout`",
            ),
            ("request_timeout = \"0s\"", "`[server] request_timeout`"),
            ("idle_timeout = \"0s\"", "`[server] idle_timeout`"),
            ("idle_timeout = \"20s\"", "`[server] idle_timeout` (20s)"),
            ("max_connections = 0", "`[server] max_connections`"),
            ("max_log_streams = 0", "`[server] max_log_streams`"),
            ("max_map_splits = 0", "`[server] max_map_splits`"),
        ] {
            let error = ServerConfig::parse(&format!("[server]\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
        let error = ServerConfig::parse("[server]\nheader_read_timeout = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("header_read_timeout"), "{error}");
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_mistakes_name_their_key() {
        let config = ServerConfig::parse("").unwrap();
        assert_eq!(config.telemetry.otlp_endpoint, None);
        let config = ServerConfig::parse(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsampling = 0.1",
        )
        .unwrap();
        assert_eq!(config.telemetry.sampling, 0.1);
        for (text, key) in [
            ("[telemetry]\nsampling = 2.0", "`[telemetry] sampling`"),
            ("[telemetry]\nsampling = \"all\"", "`[telemetry] sampling`"),
            ("[telemetry]\nendpoint = \"x\"", "`[telemetry] endpoint`"),
            (
                "[telemetry]\notlp_endpoint = \"nowhere\"",
                "`[telemetry] otlp_endpoint`",
            ),
        ] {
            let error = ServerConfig::parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn no_tokens_means_open_access() {
        let config = ServerConfig::parse("").unwrap();
        assert!(config.open_access());
        assert!(config.server.listen.ip().is_loopback());
    }
}
