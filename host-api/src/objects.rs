//! Object storage for tasks, on [`object_store`].
//!
//! The operator configures stores by label (`[objects.raw]` in
//! `caisson.toml`); [`ObjectStores`] builds one `Arc<dyn ObjectStore>` per
//! label when the worker starts, and every run gets an [`ObjectsCtx`] holding
//! only the labels it was granted. Credentials stay in the host's builder: the
//! guest sees a label and keys, nothing else.
//!
//! Every store is wrapped in a [`PrefixStore`] rooted at its configured
//! prefix, and every key the guest passes is checked by [`parse_key`] before
//! it reaches a backend, so a key can never address anything outside that
//! root.
//!
//! Large objects move as streams: `reader` hands the guest a `wasi:io`
//! input-stream fed chunk by chunk from the backend, and `writer` an
//! output-stream drained into an [`object_store::buffered::BufWriter`], which
//! switches to a multipart upload once its buffer fills. Neither side ever
//! holds a whole large object.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use hdfs_native_object_store::HdfsObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, UpdateVersion,
};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, OutputStream, StreamError};

mod reader;

use crate::bindings::caisson::task::objects as wit;
use crate::{ConfigError, Grants, ObjectsError as WitError, push_resource};

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
    },
    /// A directory on the worker's filesystem.
    Local {
        root: std::path::PathBuf,
        #[serde(default)]
        prefix: String,
    },
    /// An in-memory store, shared by every run on the worker and lost when
    /// it stops. For tests and demos.
    Memory {
        #[serde(default)]
        prefix: String,
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
            StoreConfig::Local { root, prefix } => f
                .debug_struct("Local")
                .field("root", root)
                .field("prefix", prefix)
                .finish(),
            StoreConfig::Memory { prefix } => {
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
                    let url = url::Url::parse(endpoint)
                        .map_err(|e| bad("endpoint", format!("not a URL ({e}): {endpoint:?}")))?;
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
            StoreConfig::Local { root, prefix } => {
                if root.as_os_str().is_empty() {
                    return Err(bad("root", "must not be empty".into()));
                }
                prefix
            }
            StoreConfig::Memory { prefix } => prefix,
            StoreConfig::Hdfs {
                url,
                prefix,
                user,
                config,
                config_dir,
                kerberos_principal,
                kerberos_keytab,
                kerberos_cache,
            } => {
                validate_hdfs_url(url).map_err(|m| bad("url", m))?;
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
        Ok(())
    }

    /// Builds the store this table describes, after [`validate`](Self::validate).
    /// `table` names it in errors, as there. No request is made.
    pub fn build(&self, table: &str) -> Result<Arc<dyn ObjectStore>, ConfigError> {
        self.validate(table)?;
        build_store(table, self)
    }

    /// Whether `list` yields keys in order. S3 and the memory store do; a
    /// local directory or HDFS is walked directory by directory (`a/x`
    /// comes before `a.txt`), so their pages are sorted on the host.
    fn ordered(&self) -> bool {
        matches!(self, StoreConfig::S3 { .. } | StoreConfig::Memory { .. })
    }
}

/// `hdfs://host[:port]` (a NameNode or a nameservice), or `viewfs://cluster`.
fn validate_hdfs_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e}): {text:?}"))?;
    if !matches!(url.scheme(), "hdfs" | "viewfs") {
        return Err(format!(
            "unsupported scheme `{}`, expected hdfs (or viewfs)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("no NameNode or nameservice in {text:?}"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?} has a path or query: give the directory as `prefix`"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user names go in `user`, not in the URL".into());
    }
    Ok(())
}

/// The configured prefix as a path, `None` for the store's root.
fn store_prefix(prefix: &str) -> Result<Option<Path>, String> {
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
#[derive(Debug, Clone, Copy)]
pub struct ObjectLimits {
    /// The largest object `get`, `get-range` or `put` moves in one call.
    pub max_object_bytes: u64,
    /// The most entries one `list` page returns.
    pub max_list_page: u32,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            max_object_bytes: 64 << 20,
            max_list_page: 1000,
        }
    }
}

/// Every configured store of a worker, shared by all its runs.
#[derive(Clone, Default)]
pub struct ObjectStores {
    stores: Arc<HashMap<String, Backend>>,
}

/// A built store and what its listings promise.
#[derive(Clone)]
struct Backend {
    store: Arc<dyn ObjectStore>,
    /// Whether `list` yields keys in order (see [`StoreConfig::ordered`]);
    /// if not, `HostStore::list` sorts each page on the host.
    ordered: bool,
    /// Whether files being written show up under a temporary name (HDFS:
    /// `.NAME.tmp.N` beside the key, renamed on finish); listings hide them.
    partial_files: bool,
}

impl fmt::Debug for ObjectStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.stores.keys()).finish()
    }
}

impl ObjectStores {
    /// Builds every store in `config`. No request is made: an unreachable
    /// endpoint shows up as a `backend` error on the first call that needs it.
    pub fn from_config(config: &ObjectsConfig) -> Result<Self, ConfigError> {
        let mut stores = HashMap::new();
        for (label, store) in config {
            stores.insert(
                label.clone(),
                Backend {
                    store: store.build(&format!("objects.{label}"))?,
                    ordered: store.ordered(),
                    partial_files: matches!(store, StoreConfig::Hdfs { .. }),
                },
            );
        }
        Ok(ObjectStores {
            stores: Arc::new(stores),
        })
    }

    /// Builds from already constructed stores, for embedders and tests.
    pub fn from_stores(stores: impl IntoIterator<Item = (String, Arc<dyn ObjectStore>)>) -> Self {
        // Nothing is known of these stores' listing order: assume none.
        let stores = stores
            .into_iter()
            .map(|(label, store)| {
                (
                    label,
                    Backend {
                        store,
                        ordered: false,
                        partial_files: false,
                    },
                )
            })
            .collect();
        ObjectStores {
            stores: Arc::new(stores),
        }
    }

    /// The configured labels.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// The store behind `label`, for the host's own use (uploading inputs,
    /// checking outputs). Never hand it to a guest directly.
    pub fn get(&self, label: &str) -> Option<Arc<dyn ObjectStore>> {
        self.stores.get(label).map(|b| b.store.clone())
    }

    /// The context for one run with `grants`. Granting a label that is not
    /// configured is the operator's mistake, reported here rather than as a
    /// confusing `access-denied` inside the task.
    pub fn ctx_for(
        &self,
        grants: &Grants,
        limits: ObjectLimits,
    ) -> Result<ObjectsCtx, ConfigError> {
        let mut granted = HashMap::new();
        for label in &grants.objects {
            let backend =
                self.stores
                    .get(label)
                    .cloned()
                    .ok_or_else(|| ConfigError::UnknownLabel {
                        kind: "object store",
                        label: label.clone(),
                    })?;
            granted.insert(label.clone(), backend);
        }
        Ok(ObjectsCtx { granted, limits })
    }
}

/// Makes ring the process's rustls provider, once. `object_store`'s S3
/// client (reqwest without a bundled provider) builds its TLS config from
/// the installed provider and panics without one; ring is the provider
/// sqlx and the CLI already use. Called before every S3 store is built;
/// call it before building an `AmazonS3` client of your own.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Someone else's choice, installed first, is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds a validated store; `table` (`objects.raw`) names it in errors.
fn build_store(table: &str, config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, ConfigError> {
    let backend = |source: Box<dyn std::error::Error + Send + Sync>| ConfigError::Backend {
        kind: "object store",
        label: table.to_string(),
        source,
    };
    let (store, prefix): (Arc<dyn ObjectStore>, &str) = match config {
        StoreConfig::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
            path_style,
            allow_http,
            options,
            max_retries,
            retry_timeout,
        } => {
            install_crypto_provider();
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_virtual_hosted_style_request(!path_style)
                .with_allow_http(*allow_http);
            if max_retries.is_some() || retry_timeout.is_some() {
                let default = object_store::RetryConfig::default();
                builder = builder.with_retry(object_store::RetryConfig {
                    max_retries: max_retries.unwrap_or(default.max_retries),
                    retry_timeout: retry_timeout.unwrap_or(default.retry_timeout),
                    backoff: default.backoff,
                });
            }
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = region {
                builder = builder.with_region(region);
            }
            if let Some(key) = access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(token) = session_token {
                builder = builder.with_token(token);
            }
            for (key, value) in options {
                let key: AmazonS3ConfigKey = key.parse().map_err(|_| ConfigError::Key {
                    path: format!("{table}.options.{key}"),
                    message: "not an S3 option".into(),
                })?;
                builder = builder.with_config(key, value);
            }
            let s3 = builder.build().map_err(|e| backend(Box::new(e)))?;
            (Arc::new(s3), prefix)
        }
        StoreConfig::Local { root, prefix } => {
            std::fs::create_dir_all(root).map_err(|e| backend(Box::new(e)))?;
            let local = LocalFileSystem::new_with_prefix(root).map_err(|e| backend(Box::new(e)))?;
            (Arc::new(local), prefix)
        }
        StoreConfig::Memory { prefix } => (Arc::new(InMemory::new()), prefix),
        StoreConfig::Hdfs {
            url,
            prefix,
            user,
            config,
            config_dir,
            kerberos_principal,
            kerberos_keytab,
            kerberos_cache,
        } => {
            let mut builder = hdfs_native::ClientBuilder::new()
                .with_url(url)
                .with_config(config.clone());
            if let Some(dir) = config_dir {
                builder = builder.with_config_dir(dir.to_string_lossy());
            }
            if let Some(user) = user {
                builder = builder.with_user(user);
            }
            if let Some(principal) = kerberos_principal {
                builder = builder.with_kerberos_principal(principal);
            }
            if let Some(keytab) = kerberos_keytab {
                builder = builder.with_kerberos_keytab(keytab.to_string_lossy());
            }
            if let Some(cache) = kerberos_cache {
                builder = builder.with_kerberos_cache(cache);
            }
            // Builds the RPC proxy only: the NameNode is first asked on
            // the first call.
            let client = builder.build().map_err(|e| backend(Box::new(e)))?;
            (Arc::new(HdfsObjectStore::new(client)), prefix)
        }
    };
    match store_prefix(prefix).map_err(|message| ConfigError::Key {
        path: format!("{table}.prefix"),
        message,
    })? {
        None => Ok(store),
        Some(prefix) => Ok(Arc::new(PrefixStore::new(store, prefix))),
    }
}

/// Checks a key from the guest and turns it into a store path.
///
/// The rules are stricter than `object_store`'s own: besides what
/// [`Path::parse`] rejects, a key may not be empty, start with `/`, contain
/// an empty, `.` or `..` segment, a backslash or a control character. A
/// guest therefore has no spelling that climbs out of the store's prefix,
/// whatever the backend does with such names. Percent signs are ordinary
/// characters: `%2e%2e` is a three-letter-pair name, never decoded.
pub fn parse_key(key: &str) -> Result<Path, WitError> {
    let invalid = |why: &str| {
        Err(WitError::InvalidInput(format!(
            "invalid key {key:?}: {why}"
        )))
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > 1024 {
        return invalid("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return invalid("keys are relative to the store and may not start with `/`");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return invalid("control characters and `\\` are not allowed");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("empty path segment"),
            "." | ".." => return invalid("`.` and `..` segments are not allowed"),
            _ => {}
        }
    }
    Path::parse(key).or_else(|e| invalid(&e.to_string()))
}

/// A prefix for `list`: like a key, but may be empty or end with `/`.
fn parse_prefix(prefix: &str) -> Result<Option<Path>, WitError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Ok(None);
    }
    parse_key(trimmed).map(Some)
}

/// What the guest is told when the store cannot be reached (connection
/// refused, no such host, a local store's root gone).
pub const UNAVAILABLE: &str = "object store unavailable";
/// What the guest is told for any other failure of the backend.
pub const REQUEST_FAILED: &str = "request failed (retry later)";

/// Maps a backend error to what the guest sees: a fixed message per kind
/// of failure. The backend's own text names the endpoint, the bucket, a
/// local path or quotes an S3 response, and a task never sees an address
/// (SECURITY.md), so it goes only to the server's log, through
/// [`log_error`].
fn map_error_ref(error: &object_store::Error) -> WitError {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => WitError::NotFound,
        // Keys are checked before they reach a backend; one refusing the
        // key anyway says nothing the guest needs to know beyond that.
        E::InvalidPath { .. } => WitError::InvalidInput("the store refused this key".into()),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => WitError::AccessDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            WitError::Unsupported("not supported by this store".into())
        }
        // A conditional write that did not hold (`PutMode::Create` finds an
        // object, `PutMode::Update` another version): the task decides.
        E::AlreadyExists { .. } => WitError::Conflict("the object already exists".into()),
        E::Precondition { .. } => {
            WitError::Conflict("the object is not the version the write expected".into())
        }
        E::NotModified { .. } => WitError::Other("not modified".into()),
        // Everything else is the network or the server (`Generic`, after
        // object_store's own retries): transient as far as we can tell.
        other if unreachable(other) => WitError::Backend(UNAVAILABLE.into()),
        _ => WitError::Backend(REQUEST_FAILED.into()),
    }
}

/// Whether `error` says the store could not be reached at all.
fn unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::TimedOut
                    | K::NotFound
                    | K::NotADirectory
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Writes what the backend said to the server's log (inside the run's
/// span, so with the run), with the store's label.
fn log_error(label: &str, error: &object_store::Error) {
    if matches!(error, object_store::Error::NotFound { .. }) {
        tracing::debug!(label, "object store: {error}");
    } else {
        tracing::warn!(label, "object store call failed: {error}");
    }
}

/// A reader's failure as the guest may see it, through `stream-error` or
/// through the error's `to-debug-string`: the kind, never the backend's
/// own text (which [`log_error`] logged).
#[derive(Debug)]
struct StreamFailure(WitError);

impl std::fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for StreamFailure {}

/// [`log_error`], then [`map_error_ref`]: for a failed call on `label`.
fn backend_error(label: &str, error: object_store::Error) -> WitError {
    log_error(label, &error);
    map_error_ref(&error)
}

/// An I/O error of an upload: the backend's error inside it, if any, is
/// logged and mapped; anything else is a failed request.
fn upload_error(label: &str, error: &std::io::Error) -> WitError {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<object_store::Error>())
    {
        Some(e) => {
            log_error(label, e);
            map_error_ref(e)
        }
        None => {
            tracing::warn!(label, "object store upload failed: {error}");
            WitError::Backend(REQUEST_FAILED.into())
        }
    }
}

fn meta_to_wit(meta: &ObjectMeta) -> wit::ObjectMeta {
    wit::ObjectMeta {
        key: meta.location.to_string(),
        // object_store lists and heads objects only: a directory of a local
        // or HDFS store is never returned as an entry.
        kind: wit::ObjectKind::File,
        size: meta.size,
        last_modified: meta.last_modified.timestamp_micros(),
        etag: meta.e_tag.clone(),
        version: meta.version.clone(),
        content_type: None,
    }
}

/// What `head` (and `finish`, which heads the new object) returns: the
/// metadata plus the stored content type, which only a GET-style request
/// carries.
async fn head_with_attributes(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<wit::ObjectMeta, object_store::Error> {
    let options = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let result = store.get_opts(path, options).await?;
    let mut meta = meta_to_wit(&result.meta);
    meta.content_type = result
        .attributes
        .get(&Attribute::ContentType)
        .map(|v| v.as_ref().to_owned());
    Ok(meta)
}

/// A `write-options` resource: what the guest set, checked as it was set.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    if_match: Option<String>,
    create_only: bool,
    content_type: Option<String>,
}

/// The longest entity tag or content type a task may pass. Both go into
/// request headers; nothing legitimate is this long.
const MAX_OPTION_LEN: usize = 1024;

/// Checks an option that ends up in an HTTP header: printable ASCII only,
/// so it cannot split or forge a header.
fn header_value(what: &str, value: &str) -> Result<(), WitError> {
    if value.is_empty()
        || value.len() > MAX_OPTION_LEN
        || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(WitError::InvalidInput(format!(
            "{what} must be 1 to {MAX_OPTION_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

impl WriteOptions {
    /// The write's `PutMode`.
    fn mode(&self) -> Result<PutMode, WitError> {
        match (&self.if_match, self.create_only) {
            (Some(_), true) => Err(WitError::InvalidInput(
                "set `if-match` or `if-none-match`, not both".into(),
            )),
            (Some(etag), false) => Ok(PutMode::Update(UpdateVersion {
                e_tag: Some(etag.clone()),
                version: None,
            })),
            (None, true) => Ok(PutMode::Create),
            (None, false) => Ok(PutMode::Overwrite),
        }
    }

    fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some(content_type) = &self.content_type {
            attributes.insert(Attribute::ContentType, content_type.clone().into());
        }
        attributes
    }
}

/// A delimiter listing: one level under `prefix`, objects and common
/// prefixes (with a trailing `/`) merged in key order, one page of them
/// after `page_token` (the last entry of the previous page).
///
/// object_store's delimiter listing is not paged (S3's is, but the client
/// gathers every page), so the level is read whole and paged on the host,
/// bounded like an unordered listing. Stateless: nothing is kept between
/// pages.
async fn list_delimited(
    store: &Arc<dyn ObjectStore>,
    label: &str,
    prefix: Option<&Path>,
    page_token: Option<String>,
    page_size: usize,
    hidden: impl Fn(&ObjectMeta) -> bool,
) -> Result<wit::ListPage, WitError> {
    let level = store
        .list_with_delimiter(prefix)
        .await
        .map_err(|e| backend_error(label, e))?;
    if level.objects.len() + level.common_prefixes.len() > MAX_UNORDERED_LISTING {
        return Err(WitError::TooLarge(format!(
            "more than {MAX_UNORDERED_LISTING} entries at this level; list a narrower prefix"
        )));
    }
    enum Entry {
        Object(wit::ObjectMeta),
        Prefix(String),
    }
    let key = |entry: &Entry| -> String {
        match entry {
            Entry::Object(meta) => meta.key.clone(),
            Entry::Prefix(prefix) => prefix.clone(),
        }
    };
    let mut entries: Vec<(String, Entry)> = level
        .objects
        .iter()
        .filter(|meta| !hidden(meta))
        .map(|meta| Entry::Object(meta_to_wit(meta)))
        .chain(
            level
                .common_prefixes
                .iter()
                .map(|p| Entry::Prefix(format!("{p}/"))),
        )
        .map(|entry| (key(&entry), entry))
        .filter(|(key, _)| page_token.as_ref().is_none_or(|token| key > token))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let more = entries.len() > page_size;
    entries.truncate(page_size);
    let next_page_token = if more {
        entries.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for (_, entry) in entries {
        match entry {
            Entry::Object(meta) => objects.push(meta),
            Entry::Prefix(prefix) => prefixes.push(prefix),
        }
    }
    Ok(wit::ListPage {
        objects,
        prefixes,
        next_page_token,
    })
}

/// The object stores one run may open.
pub struct ObjectsCtx {
    granted: HashMap<String, Backend>,
    limits: ObjectLimits,
}

impl ObjectsCtx {
    /// A context with nothing granted.
    pub fn none() -> Self {
        ObjectsCtx {
            granted: HashMap::new(),
            limits: ObjectLimits::default(),
        }
    }
}

/// The guest's handle on an opened store.
pub struct StoreHandle {
    store: Arc<dyn ObjectStore>,
    ordered: bool,
    /// The label it was opened by, for the server's log.
    label: Arc<str>,
    partial_files: bool,
}

/// Whether `path` is the temporary name `hdfs-native-object-store` writes a
/// file under until it is finished: `.NAME.tmp.N` in the key's directory.
fn is_partial_file(path: &Path) -> bool {
    path.filename()
        .and_then(|name| name.strip_prefix('.'))
        .and_then(|name| name.rsplit_once(".tmp."))
        .is_some_and(|(base, n)| {
            !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// An upload in progress: bytes written to its body stream are drained by a
/// background task into a [`BufWriter`].
pub struct Upload {
    tx: mpsc::Sender<UploadMsg>,
    key: Path,
    store: Arc<dyn ObjectStore>,
    label: Arc<str>,
    body_taken: bool,
}

enum UploadMsg {
    Data(Bytes),
    Finish(oneshot::Sender<Result<(), WitError>>),
}

/// How many chunks may wait between the guest and the uploader. With
/// [`UPLOAD_CHUNK`] this bounds the bytes queued per upload.
const UPLOAD_QUEUE: usize = 4;
/// The most bytes the body stream accepts per write.
const UPLOAD_CHUNK: usize = 1 << 20;
/// The most entries a listing of an unordered backend reads to sort one page.
const MAX_UNORDERED_LISTING: usize = 1_000_000;
/// Above this an upload becomes multipart; S3 needs parts of at least 5 MiB.
const MULTIPART_THRESHOLD: usize = 8 << 20;

impl Upload {
    fn start(
        store: Arc<dyn ObjectStore>,
        label: Arc<str>,
        key: Path,
        attributes: Attributes,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<UploadMsg>(UPLOAD_QUEUE);
        let mut writer = BufWriter::with_capacity(store.clone(), key.clone(), MULTIPART_THRESHOLD)
            // Parts in flight are memory: two keep the network busy.
            .with_max_concurrency(2)
            .with_attributes(attributes);
        let task_label = label.clone();
        // In the run's span, so that its log lines name the run.
        let uploader = async move {
            let mut failed: Option<WitError> = None;
            while let Some(msg) = rx.recv().await {
                match msg {
                    UploadMsg::Data(bytes) => {
                        if failed.is_none()
                            && let Err(e) = writer.write_all(&bytes).await
                        {
                            failed = Some(upload_error(&task_label, &e));
                        }
                    }
                    UploadMsg::Finish(reply) => {
                        let result = match failed.take() {
                            Some(e) => {
                                let _ = writer.abort().await;
                                Err(e)
                            }
                            None => writer
                                .shutdown()
                                .await
                                .map_err(|e| upload_error(&task_label, &e)),
                        };
                        let _ = reply.send(result);
                        return;
                    }
                }
            }
            // Every sender is gone without a `finish`: the guest dropped the
            // writer or the run ended. Nothing may become visible.
            let _ = writer.abort().await;
        };
        tokio::spawn(tracing::Instrument::in_current_span(uploader));
        Upload {
            tx,
            key,
            store,
            label,
            body_taken: false,
        }
    }
}

/// The output-stream half of an [`Upload`].
struct UploadBody {
    tx: mpsc::Sender<UploadMsg>,
    permit: Option<mpsc::OwnedPermit<UploadMsg>>,
}

#[async_trait::async_trait]
impl wasmtime_wasi_io::poll::Pollable for UploadBody {
    async fn ready(&mut self) {
        if self.permit.is_none()
            && let Ok(permit) = self.tx.clone().reserve_owned().await
        {
            self.permit = Some(permit);
        }
    }
}

impl OutputStream for UploadBody {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if bytes.len() > UPLOAD_CHUNK {
            return Err(StreamError::trap("write larger than check-write allowed"));
        }
        let permit = match self.permit.take() {
            Some(permit) => permit,
            None => match self.tx.clone().try_reserve_owned() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(StreamError::Closed),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(StreamError::trap("write without check-write permission"));
                }
            },
        };
        permit.send(UploadMsg::Data(bytes));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        // Ordering, not durability, is what a flush promises here: bytes
        // written before `finish` are uploaded before it completes.
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        if self.permit.is_some() {
            return Ok(UPLOAD_CHUNK);
        }
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => {
                self.permit = Some(permit);
                Ok(UPLOAD_CHUNK)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(0),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StreamError::Closed),
        }
    }
}

/// A run's object stores plus its resource table.
pub struct ObjectsView<'a> {
    pub ctx: &'a mut ObjectsCtx,
    pub table: &'a mut ResourceTable,
}

impl ObjectsView<'_> {
    /// The handle's store, and its label for the log.
    fn store(
        &self,
        handle: &Resource<StoreHandle>,
    ) -> wasmtime::Result<(Arc<dyn ObjectStore>, Arc<str>)> {
        let handle = self.table.get(handle)?;
        Ok((handle.store.clone(), handle.label.clone()))
    }

    fn check_size(&self, size: u64, what: &str) -> Result<(), WitError> {
        let max = self.ctx.limits.max_object_bytes;
        if size > max {
            return Err(WitError::TooLarge(format!(
                "{what} of {size} bytes is over the {max}-byte limit for one call; \
                 use `reader`/`writer` to stream it"
            )));
        }
        Ok(())
    }
}

/// Shortens `?`-heavy host functions: the inner `Result` is the guest's.
macro_rules! guest_try {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

impl wit::Host for ObjectsView<'_> {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, WitError>> {
        let Some(Backend {
            store,
            ordered,
            partial_files,
        }) = self.ctx.granted.get(&label).cloned()
        else {
            tracing::debug!(%label, "task opened an object store it was not granted");
            return Ok(Err(WitError::AccessDenied));
        };
        let label = label.into();
        push_resource(
            self.table,
            StoreHandle {
                store,
                ordered,
                label,
                partial_files,
            },
        )
    }

    async fn stream_error(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<WitError>> {
        let err = self.table.get(&err)?;
        // A reader fails with a `StreamFailure` inside an `io::Error` (see
        // `reader`), or with the backend's error; anything else is not ours
        // to classify.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref());
        Ok(inner.and_then(|e| match e.downcast_ref::<StreamFailure>() {
            Some(failure) => Some(failure.0.clone()),
            None => e.downcast_ref::<object_store::Error>().map(map_error_ref),
        }))
    }
}

impl wit::HostStore for ObjectsView<'_> {
    async fn get(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(parse_key(&key));
        let result = guest_try!(store.get(&path).await.map_err(|e| backend_error(&label, e)));
        guest_try!(self.check_size(result.meta.size, "object"));
        Ok(result
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| backend_error(&label, e)))
    }

    async fn get_range(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        offset: u64,
        length: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(parse_key(&key));
        guest_try!(self.check_size(length, "range"));
        if length == 0 {
            return Ok(Ok(Vec::new()));
        }
        // Clamp to the object's end, as the WIT promises "fewer at the end",
        // where backends would answer a range past the end with an error.
        let meta = guest_try!(
            store
                .head(&path)
                .await
                .map_err(|e| backend_error(&label, e))
        );
        let start = offset.min(meta.size);
        let end = offset.saturating_add(length).min(meta.size);
        if start == end {
            return Ok(Ok(Vec::new()));
        }
        Ok(store
            .get_range(&path, start..end)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| backend_error(&label, e)))
    }

    async fn put(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        data: Vec<u8>,
        options: Option<Resource<WriteOptions>>,
    ) -> wasmtime::Result<Result<wit::ObjectMeta, WitError>> {
        let (store, label) = self.store(&this)?;
        let options = match options {
            Some(options) => self.table.get(&options)?.clone(),
            None => WriteOptions::default(),
        };
        let path = guest_try!(parse_key(&key));
        guest_try!(self.check_size(data.len() as u64, "object"));
        let size = data.len() as u64;
        let put_options = PutOptions {
            mode: guest_try!(options.mode()),
            attributes: options.attributes(),
            ..PutOptions::default()
        };
        let put = guest_try!(
            store
                .put_opts(&path, PutPayload::from(data), put_options)
                .await
                .map_err(|e| backend_error(&label, e))
        );
        Ok(Ok(wit::ObjectMeta {
            key,
            kind: wit::ObjectKind::File,
            size,
            last_modified: chrono::Utc::now().timestamp_micros(),
            etag: put.e_tag,
            version: put.version,
            content_type: options.content_type,
        }))
    }

    async fn head(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<wit::ObjectMeta, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(parse_key(&key));
        Ok(head_with_attributes(&store, &path)
            .await
            .map_err(|e| backend_error(&label, e)))
    }

    async fn delete(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(parse_key(&key));
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(Ok(())),
            Err(e) => Ok(Err(backend_error(&label, e))),
        }
    }

    async fn copy(
        &mut self,
        this: Resource<StoreHandle>,
        from: String,
        to: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let (store, label) = self.store(&this)?;
        let from = guest_try!(parse_key(&from));
        let to = guest_try!(parse_key(&to));
        Ok(store
            .copy(&from, &to)
            .await
            .map_err(|e| backend_error(&label, e)))
    }

    async fn list(
        &mut self,
        this: Resource<StoreHandle>,
        prefix: String,
        delimiter: Option<String>,
        page_token: Option<String>,
        page_size: u32,
    ) -> wasmtime::Result<Result<wit::ListPage, WitError>> {
        let handle = self.table.get(&this)?;
        let (store, ordered, label) = (handle.store.clone(), handle.ordered, handle.label.clone());
        // A file being written is not an object yet: S3 shows nothing until
        // the upload completes, and neither may HDFS.
        let partial_files = handle.partial_files;
        let hidden = |meta: &ObjectMeta| partial_files && is_partial_file(&meta.location);
        let prefix = guest_try!(parse_prefix(&prefix));
        let page_size = page_size.clamp(1, self.ctx.limits.max_list_page) as usize;
        match delimiter.as_deref() {
            None => {}
            Some("/") => {
                return Ok(list_delimited(
                    &store,
                    &label,
                    prefix.as_ref(),
                    page_token,
                    page_size,
                    hidden,
                )
                .await);
            }
            Some(other) => {
                return Ok(Err(WitError::Unsupported(format!(
                    "delimiter {other:?}: only \"/\" is supported"
                ))));
            }
        }
        // The token is the last key of the previous page: listing resumes
        // strictly after it (S3's start-after), so it is stateless on the host.
        let mut stream = match &page_token {
            Some(token) => {
                let offset = guest_try!(parse_key(token));
                store.list_with_offset(prefix.as_ref(), &offset)
            }
            None => store.list(prefix.as_ref()),
        };
        let mut objects = Vec::with_capacity(page_size);
        let mut more = false;
        if ordered {
            // Take one more than a page to learn whether another page
            // exists; dropping the stream stops the backend's listing there.
            while let Some(meta) = stream.next().await {
                let meta = guest_try!(meta.map_err(|e| backend_error(&label, e)));
                if hidden(&meta) {
                    continue;
                }
                if objects.len() == page_size {
                    more = true;
                    break;
                }
                objects.push(meta_to_wit(&meta));
            }
        } else {
            // A directory walk comes in no particular order, so the smallest
            // keys after the token can only be found by reading them all.
            // Bounded, because the guest picks the prefix.
            let mut all = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = guest_try!(meta.map_err(|e| backend_error(&label, e)));
                if hidden(&meta) {
                    continue;
                }
                if all.len() >= MAX_UNORDERED_LISTING {
                    return Ok(Err(WitError::TooLarge(format!(
                        "more than {MAX_UNORDERED_LISTING} objects under this prefix of a local store; \
                         list a narrower prefix"
                    ))));
                }
                all.push(meta_to_wit(&meta));
            }
            all.sort_by(|a, b| a.key.cmp(&b.key));
            more = all.len() > page_size;
            all.truncate(page_size);
            objects = all;
        }
        let next_page_token = if more {
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        Ok(Ok(wit::ListPage {
            objects,
            prefixes: Vec::new(),
            next_page_token,
        }))
    }

    async fn reader(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, WitError>> {
        let (store, label) = self.store(&this)?;
        let path = guest_try!(parse_key(&key));
        let result = guest_try!(store.get(&path).await.map_err(|e| backend_error(&label, e)));
        let stream: DynInputStream =
            Box::new(reader::ObjectReader::new(result.into_stream(), label));
        push_resource(self.table, stream)
    }

    async fn writer(
        &mut self,
        this: Resource<StoreHandle>,
        key: String,
        options: Option<Resource<WriteOptions>>,
    ) -> wasmtime::Result<Result<Resource<Upload>, WitError>> {
        let (store, label) = self.store(&this)?;
        let options = match options {
            Some(options) => self.table.get(&options)?.clone(),
            None => WriteOptions::default(),
        };
        let path = guest_try!(parse_key(&key));
        // A streamed upload may become a multipart upload, and object_store
        // has no conditional multipart completion: refusing is honest where
        // checking before the upload would race with other writers.
        if !matches!(guest_try!(options.mode()), PutMode::Overwrite) {
            return Ok(Err(WitError::Unsupported(
                "`if-match` and `if-none-match` are supported by `put`, not yet by `writer`".into(),
            )));
        }
        push_resource(
            self.table,
            Upload::start(store, label, path, options.attributes()),
        )
    }

    async fn drop(&mut self, this: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit::HostWriter for ObjectsView<'_> {
    async fn body(
        &mut self,
        this: Resource<Upload>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, WitError>> {
        let upload = self.table.get_mut(&this)?;
        if upload.body_taken {
            return Ok(Err(WitError::InvalidInput(
                "the writer's body was already taken".into(),
            )));
        }
        upload.body_taken = true;
        let body: DynOutputStream = Box::new(UploadBody {
            tx: upload.tx.clone(),
            permit: None,
        });
        push_resource(self.table, body)
    }

    async fn finish(
        &mut self,
        this: Resource<Upload>,
    ) -> wasmtime::Result<Result<wit::ObjectMeta, WitError>> {
        let upload = self.table.delete(this)?;
        let (reply, done) = oneshot::channel();
        if upload.tx.send(UploadMsg::Finish(reply)).await.is_err() {
            return Ok(Err(WitError::Backend(
                "the upload stopped unexpectedly".into(),
            )));
        }
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Ok(Err(e)),
            Err(_) => {
                return Ok(Err(WitError::Backend(
                    "the upload stopped unexpectedly".into(),
                )));
            }
        }
        Ok(head_with_attributes(&upload.store, &upload.key)
            .await
            .map_err(|e| backend_error(&upload.label, e)))
    }

    async fn drop(&mut self, this: Resource<Upload>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit::HostWriteOptions for ObjectsView<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<WriteOptions>> {
        // A constructor cannot return an error: a full table traps here.
        Ok(self.table.push(WriteOptions::default())?)
    }

    async fn set_if_match(
        &mut self,
        this: Resource<WriteOptions>,
        etag: Option<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        if let Some(etag) = &etag {
            guest_try!(header_value("an entity tag", etag));
        }
        self.table.get_mut(&this)?.if_match = etag;
        Ok(Ok(()))
    }

    async fn set_if_none_match(
        &mut self,
        this: Resource<WriteOptions>,
        etag: Option<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let create_only = match etag.as_deref() {
            None => false,
            Some("*") => true,
            // object_store's puts can only ask "no object at all".
            Some(_) => {
                return Ok(Err(WitError::Unsupported(
                    "`if-none-match` takes only \"*\" (no object at the key)".into(),
                )));
            }
        };
        self.table.get_mut(&this)?.create_only = create_only;
        Ok(Ok(()))
    }

    async fn set_content_type(
        &mut self,
        this: Resource<WriteOptions>,
        content_type: Option<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        if let Some(content_type) = &content_type {
            guest_try!(header_value("a content type", content_type));
        }
        self.table.get_mut(&this)?.content_type = content_type;
        Ok(Ok(()))
    }

    async fn drop(&mut self, this: Resource<WriteOptions>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

struct HasObjects;

impl HasData for HasObjects {
    type Data<'a> = ObjectsView<'a>;
}

/// Adds the `caisson:task/objects` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> ObjectsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasObjects>(linker, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a guest learns from `stream-error` about a failed stream
    /// whose error is `error`.
    async fn classify(error: wasmtime::Error) -> Option<WitError> {
        let mut ctx = ObjectsCtx::none();
        let mut table = ResourceTable::new();
        let err = table.push(error).unwrap();
        let mut view = ObjectsView {
            ctx: &mut ctx,
            table: &mut table,
        };
        wit::Host::stream_error(&mut view, err).await.unwrap()
    }

    #[tokio::test]
    async fn a_reader_cut_off_is_a_backend_error() {
        // As a reader fails: the backend's error inside an `io::Error`.
        let cut_off = object_store::Error::Generic {
            store: "S3",
            source: "connection reset by peer".into(),
        };
        let error = classify(std::io::Error::other(cut_off).into()).await;
        // The kind, never the backend's own words.
        assert!(
            matches!(&error, Some(WitError::Backend(m)) if m == REQUEST_FAILED),
            "{error:?}"
        );
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "http://10.1.2.3:9000/bucket-name",
            )),
        };
        let error = classify(std::io::Error::other(refused).into()).await;
        assert!(
            matches!(&error, Some(WitError::Backend(m)) if m == UNAVAILABLE),
            "{error:?}"
        );
        let gone = object_store::Error::NotFound {
            path: "k".into(),
            source: "gone".into(),
        };
        let error = classify(std::io::Error::other(gone).into()).await;
        assert!(matches!(error, Some(WitError::NotFound)), "{error:?}");
        // Not from a backend: unknown, so the guest must not retry on it.
        assert!(classify(wasmtime::format_err!("other")).await.is_none());
        let plain = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(classify(plain.into()).await.is_none());
    }
}
