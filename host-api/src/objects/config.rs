//! The `[objects.<label>]` tables of `caisson.toml`, checked before any
//! store is built, and a run's [`ObjectLimits`].

use std::collections::BTreeMap;
use std::fmt;

use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path;
use serde::Deserialize;

use super::key::parse_key;
use crate::{ConfigError, ObjectsError as WitError, at_least_one};

/// The `[objects]` table of `caisson.toml`: store label to store.
pub type ObjectsConfig = BTreeMap<String, StoreConfig>;

/// One configured store, tagged by `type`.
#[derive(Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreConfig {
    /// An S3-compatible store. Credentials not given here are read from the
    /// standard `AWS_*` environment variables of the worker.
    S3 {
        bucket: String,
        /// Keys are rooted here: the task cannot see above it.
        #[serde(default)]
        prefix: String,
        /// For S3-compatible servers (MinIO, Ceph, ...): `http://host:port`.
        endpoint: Option<String>,
        region: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
        /// Path-style requests (`endpoint/bucket/key`), which most
        /// S3-compatible servers need.
        #[serde(default)]
        path_style: bool,
        /// Allow plain `http://` endpoints.
        #[serde(default)]
        allow_http: bool,
        /// Any other `object_store` S3 option, by its `aws_*` name, e.g.
        /// `aws_server_side_encryption = "aws:kms"`.
        #[serde(default)]
        options: BTreeMap<String, String>,
        /// How many times a failed request (or a body cut off mid-read) is
        /// retried, with backoff, before the task sees a `backend` error.
        /// Default 10.
        max_retries: Option<usize>,
        /// The longest a request keeps being retried, e.g. `"10s"`. Default
        /// 3 minutes: while the server is down a reading task waits that
        /// long. Lower both to fail fast and leave retrying to the run's
        /// own `retries`.
        #[serde(default, with = "humantime_serde")]
        retry_timeout: Option<std::time::Duration>,
        /// How many objects `read-many` and `read-prefix` request at once
        /// (default 16; see [`ReadManyConfig`](super::ReadManyConfig)).
        read_concurrency: Option<usize>,
        /// How many bytes of objects read ahead a run may hold for the
        /// task, across its `read-many` readers on this store (default
        /// 64 MiB).
        read_buffer_bytes: Option<u64>,
    },
    /// A directory on the worker's filesystem.
    Local {
        root: std::path::PathBuf,
        #[serde(default)]
        prefix: String,
        /// How many objects `read-many` and `read-prefix` request at once
        /// (default 16; see [`ReadManyConfig`](super::ReadManyConfig)).
        read_concurrency: Option<usize>,
        /// How many bytes of objects read ahead a run may hold for the
        /// task, across its `read-many` readers on this store (default
        /// 64 MiB).
        read_buffer_bytes: Option<u64>,
    },
    /// An in-memory store, shared by every run on the worker and lost when
    /// it stops. For tests and demos.
    Memory {
        #[serde(default)]
        prefix: String,
        /// How many objects `read-many` and `read-prefix` request at once
        /// (default 16; see [`ReadManyConfig`](super::ReadManyConfig)).
        read_concurrency: Option<usize>,
        /// How many bytes of objects read ahead a run may hold for the
        /// task, across its `read-many` readers on this store (default
        /// 64 MiB).
        read_buffer_bytes: Option<u64>,
    },
    /// HDFS, through the native client `hdfs-native` (no JVM, no libhdfs).
    Hdfs {
        /// `hdfs://namenode:port`, or `hdfs://nameservice` for an HA pair
        /// whose NameNodes are named in `config` (or in `config_dir`).
        url: String,
        /// Keys are rooted here: the task cannot see above it.
        #[serde(default)]
        prefix: String,
        /// The user the NameNode sees (simple authentication). Default:
        /// `HADOOP_USER_NAME`, else the worker's OS user. With Kerberos,
        /// a user other than the principal's is a proxy user.
        user: Option<String>,
        /// Hadoop client settings, as in `hdfs-site.xml`, e.g.
        /// `"dfs.ha.namenodes.ns" = "nn1,nn2"`. They override `config_dir`.
        #[serde(default)]
        config: BTreeMap<String, String>,
        /// A directory holding `core-site.xml` and `hdfs-site.xml`. Default:
        /// `$HADOOP_CONF_DIR`, else `$HADOOP_HOME/etc/hadoop`, else none.
        config_dir: Option<std::path::PathBuf>,
        /// Kerberos (`hadoop.security.authentication = "kerberos"` in
        /// `config`): the client principal. Needed with a keytab or cache.
        kerberos_principal: Option<String>,
        /// A keytab to log in from; its tickets stay in memory.
        kerberos_keytab: Option<std::path::PathBuf>,
        /// A credential cache, e.g. `FILE:/run/krb5/caisson.ccache`.
        /// Default: the process's (`KRB5CCNAME`).
        kerberos_cache: Option<String>,
        /// How many objects `read-many` and `read-prefix` request at once
        /// (default 16; see [`ReadManyConfig`](super::ReadManyConfig)).
        read_concurrency: Option<usize>,
        /// How many bytes of objects read ahead a run may hold for the
        /// task, across its `read-many` readers on this store (default
        /// 64 MiB).
        read_buffer_bytes: Option<u64>,
    },
}

// Hand-written so that secrets never reach a log line.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                path_style,
                ..
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("endpoint", endpoint)
                .field("region", region)
                .field("path_style", path_style)
                .finish_non_exhaustive(),
            StoreConfig::Local { root, prefix, .. } => f
                .debug_struct("Local")
                .field("root", root)
                .field("prefix", prefix)
                .finish(),
            StoreConfig::Memory { prefix, .. } => {
                f.debug_struct("Memory").field("prefix", prefix).finish()
            }
            // Keytab and cache paths are not secrets, but keep them out of
            // logs anyway: they point at credentials.
            StoreConfig::Hdfs {
                url,
                prefix,
                user,
                kerberos_principal,
                ..
            } => f
                .debug_struct("Hdfs")
                .field("url", url)
                .field("prefix", prefix)
                .field("user", user)
                .field("kerberos_principal", kerberos_principal)
                .finish_non_exhaustive(),
        }
    }
}

impl StoreConfig {
    /// Checks what can be checked without a request, so that a bad table
    /// fails when the configuration loads, not on a task's first call (an
    /// S3 `endpoint = ""` used to panic inside `object_store` there).
    /// `table` is where this store sits in `caisson.toml`, e.g.
    /// `objects.raw` or `server.modules`; errors name it and the key.
    pub fn validate(&self, table: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Key {
            path: format!("{table}.{key}"),
            message,
            source: None,
        };
        let nonempty = |key: &str, value: &str| {
            if value.trim().is_empty() {
                Err(bad(key, "must not be empty".into()))
            } else {
                Ok(())
            }
        };
        let prefix = match self {
            StoreConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                allow_http,
                options,
                ..
            } => {
                nonempty("bucket", bucket)?;
                if bucket.contains('/') || bucket.chars().any(char::is_whitespace) {
                    return Err(bad(
                        "bucket",
                        format!("{bucket:?} is not a bucket name (put a path in `prefix`)"),
                    ));
                }
                if let Some(endpoint) = endpoint {
                    let url = url::Url::parse(endpoint).map_err(|e| ConfigError::Key {
                        path: format!("{table}.endpoint"),
                        message: format!("not a URL: {endpoint:?}"),
                        source: Some(e.into()),
                    })?;
                    match url.scheme() {
                        "https" => {}
                        "http" if *allow_http => {}
                        "http" => {
                            return Err(bad(
                                "endpoint",
                                "an http:// endpoint needs `allow_http = true`".into(),
                            ));
                        }
                        other => {
                            return Err(bad(
                                "endpoint",
                                format!("unsupported scheme `{other}`, expected http or https"),
                            ));
                        }
                    }
                    if url.host_str().is_none_or(str::is_empty) {
                        return Err(bad("endpoint", format!("no host in {endpoint:?}")));
                    }
                }
                if let Some(region) = region {
                    nonempty("region", region)?;
                }
                for key in options.keys() {
                    if key.parse::<AmazonS3ConfigKey>().is_err() {
                        return Err(bad(
                            &format!("options.{key}"),
                            "not an S3 option (see object_store's AmazonS3ConfigKey)".into(),
                        ));
                    }
                }
                prefix
            }
            StoreConfig::Local { root, prefix, .. } => {
                if root.as_os_str().is_empty() {
                    return Err(bad("root", "must not be empty".into()));
                }
                prefix
            }
            StoreConfig::Memory { prefix, .. } => prefix,
            StoreConfig::Hdfs {
                url,
                prefix,
                user,
                config,
                config_dir,
                kerberos_principal,
                kerberos_keytab,
                kerberos_cache,
                ..
            } => {
                validate_hdfs_url(&format!("{table}.url"), url)?;
                if let Some(user) = user {
                    nonempty("user", user)?;
                }
                for key in config.keys() {
                    nonempty("config", key)?;
                }
                if let Some(dir) = config_dir
                    && !dir.is_dir()
                {
                    return Err(bad(
                        "config_dir",
                        format!("{} is not a directory", dir.display()),
                    ));
                }
                if let Some(principal) = kerberos_principal {
                    nonempty("kerberos_principal", principal)?;
                } else if kerberos_keytab.is_some() || kerberos_cache.is_some() {
                    return Err(bad(
                        "kerberos_principal",
                        "required with `kerberos_keytab` or `kerberos_cache`".into(),
                    ));
                }
                if let Some(keytab) = kerberos_keytab
                    && !keytab.is_file()
                {
                    return Err(bad(
                        "kerberos_keytab",
                        format!("{} is not a file", keytab.display()),
                    ));
                }
                prefix
            }
        };
        store_prefix(prefix).map_err(|m| bad("prefix", m))?;
        self.read_many().validate(table)
    }
}

/// `hdfs://host[:port]` (a NameNode or a nameservice), or `viewfs://cluster`.
/// `path` is the key's place in `caisson.toml`, for the error.
fn validate_hdfs_url(path: &str, text: &str) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::Key {
        path: path.to_owned(),
        message,
        source: None,
    };
    let url = url::Url::parse(text).map_err(|e| ConfigError::Key {
        path: path.to_owned(),
        message: format!("not a URL: {text:?}"),
        source: Some(e.into()),
    })?;
    if !matches!(url.scheme(), "hdfs" | "viewfs") {
        return Err(bad(format!(
            "unsupported scheme `{}`, expected hdfs (or viewfs)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!("no NameNode or nameservice in {text:?}")));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(format!(
            "{text:?} has a path or query: give the directory as `prefix`"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("user names go in `user`, not in the URL".into()));
    }
    Ok(())
}

/// The configured prefix as a path, `None` for the store's root.
pub(super) fn store_prefix(prefix: &str) -> Result<Option<Path>, String> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(None);
    }
    match parse_key(prefix) {
        Ok(path) => Ok(Some(path)),
        Err(WitError::InvalidInput(m)) => Err(m),
        Err(other) => Err(format!("{other:?}")),
    }
}

/// Bounds on what one call may move through guest memory. The guest chooses
/// sizes and page lengths, so every one of them is clamped here.
///
/// ```toml
/// [limits.objects]
/// max_object_bytes = 67108864   # default 64 MiB
/// max_list_page = 1000          # default 1000
/// max_key_bytes = 1024          # default 1024, S3's limit
/// max_error_bytes = 256         # default 256
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectLimits {
    /// The largest object `get`, `get-range` or `put` moves in one call.
    pub max_object_bytes: u64,
    /// The most entries one `list` page returns.
    pub max_list_page: u32,
    /// The longest key (or prefix, or page token) a call may pass, in
    /// bytes. A longer one is `invalid-input`, without being echoed.
    pub max_key_bytes: u32,
    /// Longest error text handed back to the task, in bytes; longer text
    /// is cut there and ends in `…`.
    pub max_error_bytes: u32,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            max_object_bytes: 64 << 20,
            max_list_page: 1000,
            max_key_bytes: 1024,
            max_error_bytes: 256,
        }
    }
}

impl ObjectLimits {
    /// Checks that every limit is at least 1 (a limit of 0 would refuse
    /// every call). `table` is where these limits sit in `caisson.toml`,
    /// e.g. `limits.objects`; errors name it and the key.
    pub fn validate(&self, table: &str) -> Result<(), ConfigError> {
        at_least_one(table, "max_object_bytes", self.max_object_bytes)?;
        at_least_one(table, "max_list_page", self.max_list_page.into())?;
        at_least_one(table, "max_key_bytes", self.max_key_bytes.into())?;
        at_least_one(table, "max_error_bytes", self.max_error_bytes.into())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_bad_url_keeps_the_parsers_reason_as_its_source() {
        for table in [
            "type = \"s3\"\nbucket = \"b\"\nendpoint = \"http://\"",
            "type = \"hdfs\"\nurl = \"hdfs://nn:port\"",
        ] {
            let store: StoreConfig = toml::from_str(table).unwrap();
            let error = store.validate("objects.raw").unwrap_err();
            let source = error.source().expect("a source");
            assert!(
                source.downcast_ref::<url::ParseError>().is_some(),
                "{error}: {source:?}"
            );
        }
    }
}
