//! Building the configured stores (S3, HDFS, a local directory, memory)
//! once per worker, and handing each run the ones it was granted.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use hdfs_native_object_store::HdfsObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore};

use super::config::{ObjectLimits, ObjectsConfig, StoreConfig, store_prefix};
use super::key::is_partial_file;
use super::read_many::{ReadBudget, ReadManyConfig};
use crate::memory::MemoryBudget;
use crate::{ConfigError, Grants};

/// Every configured store of a worker, shared by all its runs.
#[derive(Clone, Default)]
pub struct ObjectStores {
    stores: Arc<HashMap<String, Backend>>,
}

/// A built store and what its listings promise.
#[derive(Clone)]
pub(super) struct Backend {
    pub(super) store: Arc<dyn ObjectStore>,
    /// Whether `list` yields keys in order (see [`StoreConfig::ordered`]);
    /// if not, `HostStore::list` sorts each page on the host.
    pub(super) ordered: bool,
    /// Whether files being written show up under a temporary name (HDFS:
    /// `.NAME.tmp.N` beside the key, renamed on finish); listings hide them.
    pub(super) partial_files: bool,
    /// How `read-many` reads from it.
    pub(super) read: ReadManyConfig,
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
                    read: store.read_many(),
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
                        read: ReadManyConfig::default(),
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

    /// Every finished object under `prefix` in the store behind `label`,
    /// for the host's own use (the map step's listing): files still being
    /// written, which HDFS shows under a temporary name, are left out, as
    /// the guest's own listings leave them out. `None` for an unknown label.
    pub fn list_finished(
        &self,
        label: &str,
        prefix: Option<&object_store::path::Path>,
    ) -> Option<BoxStream<'static, object_store::Result<ObjectMeta>>> {
        let backend = self.stores.get(label)?;
        let partial_files = backend.partial_files;
        Some(
            backend
                .store
                .list(prefix)
                .try_filter(move |meta| {
                    std::future::ready(!(partial_files && is_partial_file(&meta.location)))
                })
                .boxed(),
        )
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
        Ok(ObjectsCtx {
            granted,
            limits,
            read_budgets: HashMap::new(),
            handle_labels: Default::default(),
            memory: MemoryBudget::default(),
        })
    }
}

/// The object stores one run may open.
pub struct ObjectsCtx {
    pub(super) granted: HashMap<String, Backend>,
    pub(super) limits: ObjectLimits,
    /// The bytes `read-many` holds for this run, per label, made when the
    /// label is first opened.
    pub(super) read_budgets: HashMap<String, Arc<ReadBudget>>,
    /// The store labels of the run's readers and uploads, for observing
    /// the calls made on them.
    pub(super) handle_labels: crate::observe::HandleLabels,
    /// The run's memory budget: bodies, read-ahead and listings held by
    /// the host are charged to it.
    pub(super) memory: MemoryBudget,
}

impl ObjectsCtx {
    /// A context with nothing granted.
    pub fn none() -> Self {
        ObjectsCtx {
            granted: HashMap::new(),
            limits: ObjectLimits::default(),
            read_budgets: HashMap::new(),
            handle_labels: Default::default(),
            memory: MemoryBudget::default(),
        }
    }

    /// Charges what the host buffers for this run to `memory`, the run's
    /// budget.
    pub fn with_memory(mut self, memory: MemoryBudget) -> Self {
        self.memory = memory;
        self
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

impl StoreConfig {
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
            ..
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
                let key: AmazonS3ConfigKey = key.parse().map_err(|e| ConfigError::Key {
                    path: format!("{table}.options.{key}"),
                    message: "not an S3 option".into(),
                    source: Some(Box::new(e)),
                })?;
                builder = builder.with_config(key, value);
            }
            let s3 = builder.build().map_err(|e| backend(Box::new(e)))?;
            (Arc::new(s3), prefix)
        }
        StoreConfig::Local { root, prefix, .. } => {
            std::fs::create_dir_all(root).map_err(|e| backend(Box::new(e)))?;
            let local = LocalFileSystem::new_with_prefix(root).map_err(|e| backend(Box::new(e)))?;
            (Arc::new(local), prefix)
        }
        StoreConfig::Memory { prefix, .. } => (Arc::new(InMemory::new()), prefix),
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
        source: None,
    })? {
        None => Ok(store),
        Some(prefix) => Ok(Arc::new(PrefixStore::new(store, prefix))),
    }
}
