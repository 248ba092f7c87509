//! A private scratch directory per run.
//!
//! Each run gets an empty directory, preopened for the guest at
//! [`GUEST_PATH`] (and as `.`, so relative paths land there too). WASI's
//! filesystem is capability-based (`cap-std` underneath wasmtime-wasi): the
//! guest can name nothing outside its preopens, so `..` and absolute paths
//! cannot reach the host's files.
//!
//! The preopens are served by [`add_to_linker`] in place of wasmtime-wasi's
//! `wasi:filesystem/preopens`: the directory is opened on the guest's first
//! call, and that one descriptor serves both names. A run that never touches
//! the filesystem holds no descriptor, and one that does holds one, not two:
//! file descriptors, not memory, bounded how many idle instances a worker
//! could hold.
//!
//! Directories come from a [`ScratchPool`]: making and removing a directory
//! is most of what a short run costs (on ext4, `mkdir` after many `rmdir`s
//! searches the inode bitmap for recently deleted inodes), so a janitor
//! thread does it off the runs' critical path, in batches: a run neither
//! waits for it nor, usually, wakes it. A directory a run gives back
//! is used again only if it is empty and the run ended on its own; any
//! other is removed, so no run ever sees another's files.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::filesystem::{Descriptor, Dir};
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::{FsPerms, OpenMode};

/// Where the guest sees its scratch directory.
pub const GUEST_PATH: &str = "/scratch";

/// A run's scratch directory on the host. Dropping it removes it.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Set when the guest's preopens open the directory: only then can it
    /// hold files, and the pool removes it without waiting for a tick.
    opened: Arc<AtomicBool>,
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
        Ok(Scratch {
            dir,
            opened: Arc::default(),
        })
    }

    /// The directory on the host.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the directory now, reporting failure (dropping also removes
    /// it, silently).
    pub fn remove(self) -> io::Result<PathBuf> {
        let path = self.dir.path().to_path_buf();
        self.dir.close()?;
        Ok(path)
    }

    /// Whether the directory holds nothing.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(std::fs::read_dir(self.path())?.next().is_none())
    }
}

/// A run's preopens: its scratch directory, if it has one, opened on the
/// guest's first call for them.
#[derive(Default)]
pub struct ScratchCtx {
    path: Option<PathBuf>,
    opened: Option<Arc<AtomicBool>>,
    /// The directory once opened: every descriptor the guest is given for
    /// it shares this one file descriptor, closed with the store.
    dir: Option<Dir>,
}

impl ScratchCtx {
    /// Preopens for a run: `scratch` at [`GUEST_PATH`] and as `.`, or none.
    pub fn new(scratch: Option<&Scratch>) -> Self {
        ScratchCtx {
            path: scratch.map(|s| s.path().to_path_buf()),
            opened: scratch.map(|s| s.opened.clone()),
            dir: None,
        }
    }

    fn dir(&mut self) -> io::Result<Option<Dir>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        if self.dir.is_none() {
            if let Some(opened) = &self.opened {
                opened.store(true, Ordering::Relaxed);
            }
            // What `WasiCtxBuilder::preopened_dir` does: the directory,
            // opened `O_PATH`. Every path the guest names is then resolved
            // beneath it by cap-std, which refuses `..` and absolute paths.
            let dir = cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
            self.dir = Some(Dir::new(
                dir.into_std_file(),
                FsPerms::ReadWrite,
                OpenMode::READ | OpenMode::WRITE,
                false,
            ));
        }
        Ok(self.dir.clone())
    }
}

/// [`ScratchCtx`] with the store's resource table, where the guest's
/// descriptors live.
pub struct ScratchView<'a> {
    pub ctx: &'a mut ScratchCtx,
    pub table: &'a mut ResourceTable,
}

impl preopens::Host for ScratchView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        // A directory the run was given but the host cannot open (its
        // descriptors exhausted) traps: with no preopens the guest would
        // see every path fail as if it had no scratch directory.
        let Some(dir) = self.ctx.dir().map_err(|e| {
            wasmtime::Error::msg(format!("could not open the scratch directory: {e}"))
        })?
        else {
            return Ok(Vec::new());
        };
        let mut preopens = Vec::with_capacity(2);
        for name in [GUEST_PATH, "."] {
            let descriptor = self.table.push(Descriptor::Dir(dir.clone()))?;
            preopens.push((descriptor, name.to_string()));
        }
        Ok(preopens)
    }
}

struct ScratchPreopens;

impl HasData for ScratchPreopens {
    type Data<'a> = ScratchView<'a>;
}

/// Serves `wasi:filesystem/preopens` from the store's [`ScratchCtx`], in
/// place of wasmtime-wasi's: call it after
/// `wasmtime_wasi::p2::add_to_linker_async`, whose definition it replaces.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ScratchView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = preopens::add_to_linker::<T, ScratchPreopens>(linker, get);
    linker.allow_shadowing(false);
    result
}

/// Empty directories the janitor keeps ready.
const READY: usize = 32;
/// Below this many ready directories a run taking one wakes the janitor:
/// until then runs neither wait for it nor wake it, and it refills the
/// pool in batches, one wake-up for `READY - LOW_WATER` runs.
const LOW_WATER: usize = 8;
/// The most empty directories kept for reuse; past it they are removed.
const MAX_READY: usize = 64;
/// How often the janitor looks at the directories given back while runs
/// keep coming: waking it on every run (a futex wake and, on a busy
/// machine, a switch to its thread) was most of what a short run cost.
const TICK: Duration = Duration::from_millis(50);
/// Ticks with nothing given back before the janitor sleeps until woken,
/// so an idle process does not wake up for nothing.
const IDLE_TICKS: u32 = 20;
/// How long the janitor waits before looking again when it could not make
/// a directory (a full disk, a missing parent).
const RETRY: Duration = Duration::from_millis(200);

/// Scratch directories under one parent, made and cleaned off the runs'
/// critical path by a janitor thread. Dropping the pool stops the janitor
/// and removes every directory it holds.
pub struct ScratchPool {
    shared: Arc<Shared>,
    janitor: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    parent: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Empty directories no run has (or that were checked empty after one).
    ready: Vec<Scratch>,
    /// Directories given back, and whether each may be reused if empty.
    returned: Vec<(Scratch, bool)>,
    /// The janitor was asked to look now (a condvar forgets a notification
    /// made while nobody waits, so the janitor checks this before waiting).
    woken: bool,
    /// The janitor waits without a timeout: a directory given back must
    /// wake it, or it would stay until the next run takes the pool low.
    asleep: bool,
    stop: bool,
}

impl State {
    /// Asks the janitor to look now, unless it was already asked: runs
    /// that find the pool low one after another wake it once.
    fn wake(&mut self, condvar: &Condvar) {
        if !self.woken {
            self.woken = true;
            condvar.notify_one();
        }
    }
}

impl ScratchPool {
    /// A pool of directories under `parent` (created private if missing,
    /// as [`Scratch::create`] does).
    pub fn new(parent: &Path) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            parent: parent.to_path_buf(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let janitor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("caisson-scratch".into())
                .spawn(move || shared.janitor())?
        };
        Ok(ScratchPool {
            shared,
            janitor: Some(janitor),
        })
    }

    /// An empty directory for a run: a ready one, or a new one made now if
    /// none is ready. Taking the pool below its low-water mark wakes the
    /// janitor to refill it.
    pub fn take(&self) -> io::Result<Scratch> {
        let ready = {
            let mut state = self.shared.state.lock().unwrap();
            let ready = state.ready.pop();
            if state.ready.len() < LOW_WATER {
                state.wake(&self.shared.wake);
            }
            ready
        };
        match ready {
            Some(scratch) => Ok(scratch),
            None => Scratch::create(&self.shared.parent),
        }
    }

    /// Gives a run's directory back. `reusable` says whether the run ended
    /// on its own: a run stopped by its timeout or cancelled may have had a
    /// filesystem call still running on a blocking thread, which could
    /// create a file after the check that the directory is empty, so its
    /// directory is removed, never reused.
    ///
    /// Usually this only pushes onto a list the janitor looks at within a
    /// tick (50 ms). It wakes the janitor at once for a directory that must be
    /// removed, for one the guest opened (it may hold files, which should
    /// not outlive the run by a tick), or when the janitor sleeps because
    /// the pool was idle. A
    /// reusable directory is never handed out before the janitor checked it
    /// empty, whenever that happens.
    pub fn give_back(&self, scratch: Scratch, reusable: bool) {
        let opened = scratch.opened.load(Ordering::Relaxed);
        let mut state = self.shared.state.lock().unwrap();
        state.returned.push((scratch, reusable));
        if !reusable || opened || state.asleep {
            state.wake(&self.shared.wake);
        }
    }
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().stop = true;
        self.shared.wake.notify_one();
        if let Some(janitor) = self.janitor.take() {
            let _ = janitor.join();
        }
    }
}

impl Shared {
    fn janitor(&self) {
        let mut state = self.state.lock().unwrap();
        let mut idle_ticks = 0;
        loop {
            if state.stop {
                let State {
                    ready, returned, ..
                } = std::mem::take(&mut *state);
                drop(state);
                ready
                    .into_iter()
                    .chain(returned.into_iter().map(|(s, _)| s))
                    .for_each(remove);
                return;
            }
            state.woken = false;
            let returned = std::mem::take(&mut state.returned);
            let ready = state.ready.len();
            drop(state);

            let given_back = !returned.is_empty();
            let room = MAX_READY.saturating_sub(ready);
            let mut clean = Vec::new();
            for (scratch, reusable) in returned {
                // Checked here, off the run's path. A directory that cannot
                // be read is not known to be empty.
                if reusable && clean.len() < room && scratch.is_empty().unwrap_or(false) {
                    // Its next run starts unopened: only that run's own
                    // opening should wake the janitor when it is given back.
                    scratch.opened.store(false, Ordering::Relaxed);
                    clean.push(scratch);
                } else {
                    remove(scratch);
                }
            }
            let missing = READY.saturating_sub(ready + clean.len());
            let mut failed = false;
            let mut made = 0;
            while made < missing {
                match Scratch::create(&self.parent) {
                    Ok(scratch) => {
                        clean.push(scratch);
                        made += 1;
                    }
                    Err(e) => {
                        // Runs make their own meanwhile, and report why
                        // they could not.
                        tracing::debug!("could not make a scratch directory ahead: {e}");
                        failed = true;
                        break;
                    }
                }
            }

            state = self.state.lock().unwrap();
            state.ready.append(&mut clean);
            if state.woken || state.stop {
                continue;
            }
            if failed {
                state = self.wake.wait_timeout(state, RETRY).unwrap().0;
                continue;
            }
            // While runs keep giving directories back, look at them every
            // tick; after a while with none, sleep until one is.
            idle_ticks = if given_back { 0 } else { idle_ticks + 1 };
            if idle_ticks < IDLE_TICKS || !state.returned.is_empty() {
                state = self.wake.wait_timeout(state, TICK).unwrap().0;
            } else {
                state.asleep = true;
                state = self.wake.wait(state).unwrap();
                state.asleep = false;
            }
        }
    }
}

fn remove(scratch: Scratch) {
    if let Err(e) = scratch.remove() {
        tracing::warn!("could not remove a scratch directory: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory given back empty is reused; its next run must not
    /// inherit the earlier run's "opened" mark, or every give-back of it
    /// would wake the janitor for nothing.
    #[test]
    fn a_reused_directory_starts_unopened() {
        let parent = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(parent.path()).unwrap();
        let first = pool.take().unwrap();
        let path = first.path().to_path_buf();
        first.opened.store(true, Ordering::Relaxed);
        pool.give_back(first, true);

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut held = Vec::new();
        let reused = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the directory given back was never offered again"
            );
            let scratch = pool.take().unwrap();
            if scratch.path() == path {
                break scratch;
            }
            held.push(scratch);
            if held.len() >= MAX_READY + READY {
                // Every ready directory is out and the given-back one is
                // not among them yet: give them back and wait a tick.
                for s in held.drain(..) {
                    pool.give_back(s, true);
                }
                std::thread::sleep(TICK);
            }
        };
        assert!(!reused.opened.load(Ordering::Relaxed));
    }
}
