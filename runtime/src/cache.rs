//! The compiled-component cache: compile once per worker, keyed by the
//! component's SHA-256 and the engine's compatibility hash.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::RuntimeError;

/// The hex SHA-256 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) struct ComponentCache {
    dir: PathBuf,
    /// Distinguishes artifacts of engines with different settings or
    /// versions, which cannot load each other's code.
    engine_tag: String,
}

impl ComponentCache {
    pub(crate) fn new(dir: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
            context: format!("could not create the cache directory {}", dir.display()),
            source,
        })?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ComponentCache {
            dir: dir.to_path_buf(),
            engine_tag: format!("{:016x}", hasher.finish()),
        })
    }

    /// Whether compiled code for `digest` is in the cache directory.
    pub(crate) fn has(&self, digest: &str) -> bool {
        self.path(digest).exists()
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_tag))
    }

    fn source_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    /// Keeps the component's bytes beside its compiled code, so that a
    /// second engine (the fuel-metered one) can compile it later without
    /// the runtime holding every loaded component's bytes in memory.
    pub(crate) fn keep_source(&self, digest: &str, bytes: &[u8]) {
        let path = self.source_path(digest);
        if path.exists() {
            return;
        }
        let store = || -> std::io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(bytes)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = store() {
            tracing::warn!(path = %path.display(), "could not keep a component's source: {e}");
        }
    }

    /// The bytes [`Self::keep_source`] kept, checked against their digest.
    pub(crate) fn source(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let path = self.source_path(digest);
        let bytes = std::fs::read(&path).map_err(|source| RuntimeError::Io {
            context: format!(
                "the component's source is gone from the cache ({}); load it again",
                path.display()
            ),
            source,
        })?;
        if self::digest(&bytes) != digest {
            return Err(RuntimeError::InvalidComponent(format!(
                "the cached source {} does not match its digest; load the component again",
                path.display()
            )));
        }
        Ok(bytes)
    }

    pub(crate) async fn get_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, RuntimeError> {
        self.get_or_compile_with(engine, digest, || Ok(bytes.to_vec()))
            .await
    }

    /// As [`Self::get_or_compile`], reading the bytes only if the compiled
    /// code is not cached.
    pub(crate) async fn get_or_compile_with(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: impl FnOnce() -> Result<Vec<u8>, RuntimeError>,
    ) -> Result<Component, RuntimeError> {
        let path = self.path(digest);
        if path.exists() {
            // SAFETY: the file was written by `compile_and_store` below for
            // this engine configuration (the name carries its compatibility
            // tag) into a directory only the worker writes. Deserializing
            // trusts that; the cache directory must not be writable by
            // anyone who may not run native code on the worker.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding an unloadable cache entry: {e:#}")
                }
            }
        }
        let engine = engine.clone();
        let bytes = bytes()?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || compile_and_store(&engine, &bytes, &dir, &path))
            .await
            .map_err(|e| RuntimeError::Wasmtime(wasmtime::Error::msg(e.to_string())))?
    }
}

fn compile_and_store(
    engine: &Engine,
    bytes: &[u8],
    dir: &Path,
    path: &Path,
) -> Result<Component, RuntimeError> {
    let started = std::time::Instant::now();
    let component = Component::new(engine, bytes)
        .map_err(|e| RuntimeError::InvalidComponent(format!("{e:#}")))?;
    tracing::info!(elapsed = ?started.elapsed(), size = bytes.len(), "compiled a component");
    let serialized = component.serialize().map_err(RuntimeError::Wasmtime)?;
    // Write then rename, so a crash or a full disk never leaves a torn
    // artifact under the final name.
    let store = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serialized)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = store() {
        tracing::warn!(path = %path.display(), "could not cache a compiled component: {e}");
    }
    Ok(component)
}

/// The tasks a runtime keeps loaded, by digest, bounded by the bytes of
/// their compiled code: the least recently used go first. An evicted task
/// is loaded again from the on-disk [`ComponentCache`] (its code is read
/// back, not recompiled); runs still holding it keep their own `Arc`.
pub(crate) struct LoadedTasks<T> {
    max_bytes: usize,
    bytes: usize,
    /// Counts uses, to tell which entry was used least recently.
    clock: u64,
    entries: HashMap<String, Loaded<T>>,
}

struct Loaded<T> {
    value: Arc<T>,
    bytes: usize,
    used: u64,
}

impl<T> LoadedTasks<T> {
    pub(crate) fn new(max_bytes: usize) -> Self {
        LoadedTasks {
            max_bytes,
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    pub(crate) fn get(&mut self, digest: &str) -> Option<Arc<T>> {
        self.clock += 1;
        let entry = self.entries.get_mut(digest)?;
        entry.used = self.clock;
        Some(entry.value.clone())
    }

    /// Keeps `value` (of `bytes` bytes of code), evicting the least
    /// recently used until everything fits. A task larger than the whole
    /// bound is not kept at all: each load reads it from disk again.
    pub(crate) fn insert(&mut self, digest: String, value: Arc<T>, bytes: usize) {
        if let Some(old) = self.entries.remove(&digest) {
            self.bytes -= old.bytes;
        }
        if bytes > self.max_bytes {
            return;
        }
        while self.bytes + bytes > self.max_bytes {
            // Linear, but only on a miss that overflows, which compiles or
            // reads a component anyway; a worker holds few tasks.
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(digest, _)| digest.clone())
            else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.bytes -= evicted.bytes;
                tracing::debug!(digest = %oldest, bytes = evicted.bytes, "evicted a loaded task");
            }
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.insert(
            digest,
            Loaded {
                value,
                bytes,
                used: self.clock,
            },
        );
    }

    /// The bytes of code of the tasks kept.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.bytes
    }
}

/// The bytes of compiled code `component` keeps in memory.
pub(crate) fn code_bytes(component: &Component) -> usize {
    let range = component.image_range();
    (range.end as usize).saturating_sub(range.start as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_tasks_stay_within_their_bound_least_recently_used_first() {
        let mut tasks = LoadedTasks::new(10);
        tasks.insert("a".into(), Arc::new('a'), 4);
        tasks.insert("b".into(), Arc::new('b'), 4);
        // `a` is used again, so `b` is the one to go.
        assert!(tasks.get("a").is_some());
        tasks.insert("c".into(), Arc::new('c'), 4);
        assert!(tasks.get("b").is_none());
        assert!(tasks.get("a").is_some() && tasks.get("c").is_some());
        assert_eq!(tasks.resident_bytes(), 8);
        // Larger than the whole bound: not kept, nothing evicted for it.
        tasks.insert("huge".into(), Arc::new('h'), 11);
        assert!(tasks.get("huge").is_none());
        assert_eq!(tasks.resident_bytes(), 8);
        // Replacing an entry counts its bytes once.
        tasks.insert("a".into(), Arc::new('A'), 2);
        assert_eq!(tasks.resident_bytes(), 6);
        assert_eq!(tasks.get("a").as_deref(), Some(&'A'));
    }
}
