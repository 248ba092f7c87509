//! A private scratch directory per run.
//!
//! Each run gets a fresh, empty directory, preopened for the guest at
//! [`GUEST_PATH`] (and as `.`, so relative paths land there too). WASI's
//! filesystem is capability-based (`cap-std` underneath wasmtime-wasi): the
//! guest can name nothing outside its preopens, so `..` and absolute paths
//! cannot reach the host's files. The directory is removed when the
//! [`Scratch`] is dropped, at the end of the run, whatever its outcome.

use std::io;
use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Where the guest sees its scratch directory.
pub const GUEST_PATH: &str = "/scratch";

/// A run's scratch directory on the host.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates a fresh directory (mode 0700) under `parent`, which is
    /// created private (mode 0700) too if it went missing.
    pub fn create(parent: &Path) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        let dir = tempfile::Builder::new().prefix("run-").tempdir_in(parent)?;
        Ok(Scratch { dir })
    }

    /// The directory on the host.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Preopens the directory in `wasi`.
    pub fn preopen(&self, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        wasi.preopened_dir(self.path(), GUEST_PATH, FsPerms::ReadWrite)?;
        wasi.preopened_dir(self.path(), ".", FsPerms::ReadWrite)?;
        Ok(())
    }

    /// Removes the directory now, reporting failure (dropping also removes
    /// it, silently).
    pub fn remove(self) -> io::Result<PathBuf> {
        let path = self.dir.path().to_path_buf();
        self.dir.close()?;
        Ok(path)
    }
}
