//! Caisson's sandboxed task runtime.
//!
//! A [`Runtime`] owns a wasmtime [`Engine`] (Cranelift, pooling allocator,
//! copy-on-write memory images, epoch interruption), the worker's object
//! stores and SQL pools, and a cache of compiled tasks. Runs that ask for a
//! fuel budget use a second engine, built on first use, whose code meters
//! fuel: metering costs about a quarter of a task's speed, so runs without
//! a budget do not pay for it. [`Runtime::load`]
//! validates and compiles a component once (on disk, keyed by SHA-256) and
//! keeps its `InstancePre`; [`Runtime::run`] instantiates it in a fresh store
//! with the run's grants and limits and calls its `run` export.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use caisson_runtime::{Config, Runtime, RunRequest};
//! use caisson_host_api::log::MemorySink;
//!
//! let runtime = Runtime::new(Config::default())?;
//! let task = runtime.load(&std::fs::read("hello.wasm")?).await?;
//! let sink = Arc::new(MemorySink::default());
//! let output = runtime.run(&task, RunRequest::new(b"world".to_vec(), sink)).await?;
//! println!("{}", String::from_utf8_lossy(&output));
//! # Ok(()) }
//! ```
//!
//! Everything a task can do wrong ends its own run with a [`RunError`]
//! naming the reason (timeout, memory, fuel, log or output limit, trap with
//! its wasm backtrace); the engine, the other runs and the worker go on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use caisson_host_api::log::{self, LogCtx, LogSink};
use caisson_host_api::memory::MemoryBudget;
use caisson_host_api::objects::{ObjectStores, ObjectsCtx, ObjectsView};
use caisson_host_api::params::ParamsCtx;
use caisson_host_api::scratch::{Scratch, ScratchCtx, ScratchPool, ScratchView};
use caisson_host_api::sql::{SqlCtx, SqlSources, SqlView};
use caisson_host_api::{ConfigError, Grants, TaskBindingsPre};
use tokio::sync::watch;
use tracing::Instrument as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod cache;
pub mod config;
mod limits;
mod trim;
mod validate;

pub use config::{Config, EngineConfig, LimitError, RunLimits};
pub use validate::{TaskInfo, inspect};

use limits::Limiter;

/// How often the epoch ticks. A running task yields to the executor at
/// every tick, which is what lets timeouts and cancellation interrupt a
/// guest that never calls the host.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Makes `store`'s guest yield to the executor at every epoch tick.
///
/// The first yield (the store's deadline starts passed, so at the guest's
/// first check) is wasmtime's own, which wakes the task at once, as every
/// run has always yielded. Every later one, in a guest that has computed
/// for a tick or more, is tokio's `yield_now`, as wasmtime advises for
/// tokio: its task is resumed once the worker thread has polled the I/O
/// driver and run the tasks that were ready. wasmtime's own yield puts the
/// guest straight back in the worker's queue, and tokio polls the driver
/// only every 61 tasks, so two guests computing on a 2-thread runtime ran
/// about 300 ms (61 ticks) between polls: a process running them answered
/// no socket for seconds, and its heartbeats timed out on the pool and lost
/// their runs' leases.
fn yield_at_every_tick<T>(store: &mut Store<T>) {
    let mut first = true;
    store.epoch_deadline_callback(move |_| {
        if std::mem::take(&mut first) {
            return Ok(wasmtime::UpdateDeadline::Yield(1));
        }
        Ok(wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
}

/// A problem with the runtime itself or with a component, before any run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A configuration value is wrong. `message` says where (the file, and
    /// the table and key when known) and what; `source` is the parser's
    /// error.
    #[error("invalid configuration: {}{message}", in_file(.file.as_ref()))]
    Config {
        /// The file, when the configuration was read from one.
        file: Option<PathBuf>,
        message: String,
        /// Boxed: a TOML error is large, and every `RuntimeError` would
        /// pay for it.
        #[source]
        source: Option<Box<toml::de::Error>>,
    },
    /// `engine.scratch_dir` is not a private directory (see
    /// [`EngineConfig::prepare_scratch_dir`]).
    #[error(
        "invalid configuration: `engine.scratch_dir` ({}) {reason}; point it at a private \
         directory (mode 0700, owned by the user Caisson runs as), or remove it to have it created",
        .dir.display()
    )]
    ScratchDir {
        dir: PathBuf,
        reason: String,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error(transparent)]
    Capability(#[from] ConfigError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a task component. The message says why.
    #[error("invalid task component: {0}")]
    InvalidComponent(String),
    #[error("wasmtime: {0:#}")]
    Wasmtime(wasmtime::Error),
}

fn in_file(file: Option<&PathBuf>) -> String {
    file.map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

impl RuntimeError {
    /// A configuration that is not valid TOML, or not of the right shape.
    pub(crate) fn toml(source: toml::de::Error) -> Self {
        RuntimeError::Config {
            file: None,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A bad value at `path` (`limits.sql.max_rows`, `objects.raw`). Only
    /// the parser's message is shown: its location points into a table
    /// read on its own, not into the file.
    pub(crate) fn at(path: &str, source: toml::de::Error) -> Self {
        RuntimeError::Config {
            file: None,
            message: format!("{path}: {}", source.message().trim_end()),
            source: Some(Box::new(source)),
        }
    }
}

/// Why a run did not produce output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("timeout after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("memory limit {} MiB exceeded", .0 >> 20)]
    MemoryLimit(u64),
    /// The run's memory limit, which counts the host's buffers for the run
    /// with its linear memory, had no room for a buffer the guest could
    /// not be refused: its log, its output, or one it did not handle.
    #[error("memory limit {} MiB exceeded (host buffers)", .0 >> 20)]
    HostMemoryLimit(u64),
    #[error("fuel budget of {0} exhausted")]
    FuelExhausted(u64),
    #[error("log limit of {0} bytes exceeded")]
    LogLimit(u64),
    #[error("output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputLimit { size: u64, limit: u64 },
    /// The guest trapped: a panic, `unreachable`, stack overflow, bad host
    /// call. The message includes the wasm backtrace.
    #[error("task trapped: {0}")]
    Trap(String),
    /// The task returned an error from `run`.
    #[error("task failed: {message}")]
    Failed { message: String, retryable: bool },
    #[error("cancelled")]
    Cancelled,
    /// The run could not be set up: limits this worker cannot give, grants
    /// naming unknown labels, no scratch directory, an instantiation that
    /// failed.
    #[error("could not start the task: {0}")]
    Setup(#[source] SetupError),
}

/// Why a run could not be set up. Each variant keeps its cause, shared so
/// that a [`RunError`] stays cheap to clone.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The run's limits do not fit this worker's engine.
    #[error(transparent)]
    Limits(#[from] LimitError),
    #[error("could not create a scratch directory: {0}")]
    Scratch(#[source] Arc<std::io::Error>),
    /// A grant naming a label this worker does not have, a backend that
    /// could not be built, or the fuel-metered engine that did not build.
    #[error("{0}")]
    Runtime(#[source] Arc<RuntimeError>),
    /// wasmtime refused the store or the instance.
    #[error("{0}")]
    Wasmtime(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl SetupError {
    fn runtime(e: RuntimeError) -> RunError {
        RunError::Setup(SetupError::Runtime(Arc::new(e)))
    }

    fn wasmtime(e: wasmtime::Error) -> RunError {
        RunError::Setup(SetupError::Wasmtime(Arc::from(e.into_boxed_dyn_error())))
    }
}

/// Two setup errors are equal when they say the same: their causes (I/O
/// and wasmtime errors) have no equality of their own.
impl PartialEq for SetupError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for SetupError {}

impl RunError {
    /// Whether running again may help.
    pub fn retryable(&self) -> bool {
        match self {
            RunError::Failed { retryable, .. } => *retryable,
            RunError::Timeout(_) => true,
            _ => false,
        }
    }
}

/// A compiled, linked task ready to instantiate.
pub struct LoadedTask {
    digest: String,
    pre: TaskBindingsPre<RunState>,
    /// The same task compiled for the fuel-metered engine, on the first run
    /// that asks for a budget.
    metered: tokio::sync::OnceCell<TaskBindingsPre<RunState>>,
}

impl LoadedTask {
    /// The SHA-256 of the component's bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// Everything one run needs besides the task.
pub struct RunRequest {
    pub input: Vec<u8>,
    pub params: BTreeMap<String, String>,
    pub grants: Grants,
    /// Limits for this run; `None` uses the configured defaults.
    pub limits: Option<RunLimits>,
    pub log: Arc<dyn LogSink>,
    /// Set to `true` to cancel the run.
    pub cancel: Option<watch::Receiver<bool>>,
}

impl RunRequest {
    pub fn new(input: Vec<u8>, log: Arc<dyn LogSink>) -> Self {
        RunRequest {
            input,
            params: BTreeMap::new(),
            grants: Grants::default(),
            limits: None,
            log,
            cancel: None,
        }
    }
}

/// The store data of one run.
pub struct RunState {
    table: ResourceTable,
    wasi: WasiCtx,
    objects: ObjectsCtx,
    sql: SqlCtx,
    log: LogCtx,
    params: ParamsCtx,
    /// The scratch directory's preopens, opened on the guest's first call.
    scratch: ScratchCtx,
    limiter: Limiter,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The sandboxed runtime of one worker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<RunState>,
    /// The fuel-metered engine, built on the first run with a budget.
    metered: Arc<OnceLock<Metered>>,
    config: Config,
    objects: ObjectStores,
    sql: SqlSources,
    cache: cache::ComponentCache,
    loaded: Mutex<cache::LoadedTasks<LoadedTask>>,
    /// Runs' scratch directories, made and cleaned off their path.
    scratch: ScratchPool,
    _ticker: EpochTicker,
}

/// An engine whose code meters fuel, with its own linker and cache tag.
struct Metered {
    engine: Engine,
    linker: Linker<RunState>,
    cache: cache::ComponentCache,
}

impl Runtime {
    /// Builds the engine and every configured backend. Databases are
    /// connected lazily, so a database that is down fails the runs that
    /// use it, not the worker.
    pub fn new(config: Config) -> Result<Self, RuntimeError> {
        config.engine.prepare_scratch_dir()?;
        let engine = build_engine(&config.engine, false)?;
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).map_err(RuntimeError::Wasmtime)?;
        let objects = ObjectStores::from_config(&config.objects)?;
        let sql = SqlSources::from_config(&config.sql)?;
        let cache = cache::ComponentCache::new(&config.engine.cache_dir, &engine)?;
        let loaded = cache::LoadedTasks::new(config.engine.module_cache_bytes);
        let metered = Arc::new(OnceLock::new());
        let ticker = EpochTicker::start(engine.clone(), metered.clone());
        let scratch =
            ScratchPool::new(&config.engine.scratch_dir).map_err(|source| RuntimeError::Io {
                context: "could not start the scratch directories' janitor thread".into(),
                source,
            })?;
        Ok(Runtime {
            engine,
            linker,
            metered,
            config,
            objects,
            sql,
            cache,
            loaded: Mutex::new(loaded),
            scratch,
            _ticker: ticker,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The worker's object stores, for the host's own use.
    pub fn object_stores(&self) -> &ObjectStores {
        &self.objects
    }

    /// The task with this digest, if this runtime has loaded it already:
    /// lets a worker skip fetching bytes it has compiled before.
    pub fn loaded(&self, digest: &str) -> Option<Arc<LoadedTask>> {
        self.loaded.lock().unwrap().get(digest)
    }

    /// Whether compiled code for the task with this digest is in the
    /// cache directory, so that [`Runtime::load`] would not compile it:
    /// lets a worker count compile-cache hits and misses.
    pub fn is_compiled(&self, digest: &str) -> bool {
        self.cache.has(digest)
    }

    /// The bytes of compiled code of the tasks this runtime keeps loaded,
    /// at most [`EngineConfig::module_cache_bytes`].
    pub fn loaded_bytes(&self) -> usize {
        self.loaded.lock().unwrap().resident_bytes()
    }

    /// Validates, compiles (or loads from the cache) and links a task.
    pub async fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedTask>, RuntimeError> {
        let digest = cache::digest(bytes);
        if let Some(task) = self.loaded.lock().unwrap().get(&digest) {
            return Ok(task);
        }
        validate::check_header(bytes)?;
        let component = self
            .cache
            .get_or_compile(&self.engine, &digest, bytes)
            .await?;
        if self.config.engine.fuel {
            self.cache.keep_source(&digest, bytes);
        }
        let task = Arc::new(self.link(digest.clone(), &component)?);
        let bytes = cache::code_bytes(&component);
        self.loaded
            .lock()
            .unwrap()
            .insert(digest, task.clone(), bytes);
        Ok(task)
    }

    fn link(&self, digest: String, component: &Component) -> Result<LoadedTask, RuntimeError> {
        validate::check_imports(&self.engine, component)?;
        let pre = link_pre(&self.linker, component)?;
        Ok(LoadedTask {
            digest,
            pre,
            metered: tokio::sync::OnceCell::new(),
        })
    }

    /// The fuel-metered engine, built now if this is the first run to
    /// need it. No pooling: budgeted runs are the exception, and a second
    /// pool would reserve as much address space again.
    fn metered(&self) -> Result<&Metered, RuntimeError> {
        if let Some(metered) = self.metered.get() {
            return Ok(metered);
        }
        let engine = build_engine(&self.config.engine, true)?;
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).map_err(RuntimeError::Wasmtime)?;
        let cache = cache::ComponentCache::new(&self.config.engine.cache_dir, &engine)?;
        // Two runs racing here each build one; the loser's is dropped.
        Ok(self.metered.get_or_init(|| Metered {
            engine,
            linker,
            cache,
        }))
    }

    /// `task` compiled and linked for the metered engine.
    async fn metered_pre<'a>(
        &self,
        task: &'a LoadedTask,
    ) -> Result<(&Engine, &'a TaskBindingsPre<RunState>), RuntimeError> {
        let metered = self.metered()?;
        let pre = task
            .metered
            .get_or_try_init(|| async {
                let component = metered
                    .cache
                    .get_or_compile_with(&metered.engine, &task.digest, || {
                        self.cache.source(&task.digest)
                    })
                    .await?;
                link_pre(&metered.linker, &component)
            })
            .await?;
        Ok((&metered.engine, pre))
    }

    /// Runs `task` once.
    pub async fn run(&self, task: &LoadedTask, request: RunRequest) -> Result<Vec<u8>, RunError> {
        let limits = request.limits.unwrap_or(self.config.limits);
        limits
            .check(&self.config.engine)
            .map_err(|e| RunError::Setup(e.into()))?;
        let scratch = self
            .scratch
            .take()
            .map_err(|e| RunError::Setup(SetupError::Scratch(Arc::new(e))))?;
        let memory = MemoryBudget::new(limits.memory);
        let result = self.run_in(task, &request, limits, &scratch, &memory).await;
        trim::after_run(memory.host_total());
        // Checked and cleaned off the run's critical path. A timeout or a
        // cancel may leave a filesystem call running: never reuse then.
        let ended = !matches!(result, Err(RunError::Timeout(_) | RunError::Cancelled));
        self.scratch.give_back(scratch, ended);
        result
    }

    async fn run_in(
        &self,
        task: &LoadedTask,
        request: &RunRequest,
        limits: RunLimits,
        scratch: &Scratch,
        memory: &MemoryBudget,
    ) -> Result<Vec<u8>, RunError> {
        let log = LogCtx::with_memory(request.log.clone(), limits.max_log_bytes, memory.clone());
        let state = self
            .run_state(request, &limits, &log, memory, Some(scratch))
            .map_err(SetupError::runtime)?;
        // `run` checked the limits: a budget means this engine meters fuel.
        let (engine, pre) = match limits.fuel {
            None => (&self.engine, &task.pre),
            Some(_) => self.metered_pre(task).await.map_err(SetupError::runtime)?,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        if let Some(fuel) = limits.fuel {
            store.set_fuel(fuel).map_err(SetupError::wasmtime)?;
        }
        yield_at_every_tick(&mut store);

        let started = Instant::now();
        // Spans for traces (`instantiate`, then `execute`, where the
        // task's host calls are): children of the caller's current span.
        let call = async {
            let task = (pre.instantiate_async(&mut store))
                .instrument(tracing::info_span!("instantiate"))
                .await?;
            (task.call_run(&mut store, &request.input))
                .instrument(tracing::info_span!("execute"))
                .await
        };
        let cancelled = async {
            match request.cancel.clone() {
                Some(mut rx) => {
                    let _ = rx.wait_for(|c| *c).await;
                }
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            result = tokio::time::timeout(limits.timeout, call) => match result {
                Ok(result) => result,
                Err(_) => return Err(RunError::Timeout(limits.timeout)),
            },
            () = cancelled => return Err(RunError::Cancelled),
        };
        tracing::debug!(elapsed = ?started.elapsed(), "run finished");

        // A task that logged past its budget had its records dropped, not
        // its run stopped (`log` does not trap); the run still fails, as it
        // does for output past its limit, whatever it returned.
        // Memory first: once the log's own limit is passed, nothing more
        // is charged to memory, so a record refused for memory came first.
        if log.memory_exceeded() && outcome.is_ok() {
            return Err(RunError::HostMemoryLimit(limits.memory));
        }
        if log.exceeded() && outcome.is_ok() {
            return Err(RunError::LogLimit(log.max_bytes()));
        }
        let output = match outcome {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(RunError::Failed {
                    message: e.message,
                    retryable: e.retryable,
                });
            }
            Err(e) => return Err(classify_trap(e, &store, &limits, &log)),
        };
        if output.len() as u64 > limits.max_output_bytes {
            return Err(RunError::OutputLimit {
                size: output.len() as u64,
                limit: limits.max_output_bytes,
            });
        }
        // The output is a host copy, beside the linear memory it came from.
        memory
            .reserve(output.len())
            .map_err(|_| RunError::HostMemoryLimit(limits.memory))?;
        Ok(output)
    }

    /// Instantiates `task` in a fresh store with no grants and no scratch
    /// directory, and drops it: how long `instantiate_async` alone takes,
    /// for the benchmarks.
    #[doc(hidden)]
    pub async fn time_instantiate(&self, task: &LoadedTask) -> Result<Duration, RunError> {
        let request = RunRequest::new(Vec::new(), Arc::new(log::NullSink));
        let limits = self.config.limits;
        let memory = MemoryBudget::new(limits.memory);
        let log = LogCtx::with_memory(request.log.clone(), limits.max_log_bytes, memory.clone());
        let state = self
            .run_state(&request, &limits, &log, &memory, None)
            .map_err(SetupError::runtime)?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        yield_at_every_tick(&mut store);
        let started = Instant::now();
        let instance = task.pre.instantiate_async(&mut store).await;
        let elapsed = started.elapsed();
        instance.map_err(SetupError::wasmtime)?;
        Ok(elapsed)
    }

    fn run_state(
        &self,
        request: &RunRequest,
        limits: &RunLimits,
        log: &LogCtx,
        memory: &MemoryBudget,
        scratch: Option<&Scratch>,
    ) -> Result<RunState, RuntimeError> {
        let mut wasi = WasiCtxBuilder::new();
        // No network: not a socket, not a name lookup. Tasks reach the
        // outside only through the capabilities they were granted.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(log.stdout())
            .stderr(log.stderr());
        let objects =
            (self.objects.ctx_for(&request.grants, limits.objects)?).with_memory(memory.clone());
        let sql = self
            .sql
            .ctx_for(&request.grants, limits.sql)?
            .with_deadline(tokio::time::Instant::now() + limits.timeout)
            .with_memory(memory.clone());
        let mut table = ResourceTable::new();
        table.set_max_capacity(self.config.engine.max_resources);
        Ok(RunState {
            table,
            wasi: wasi.build(),
            objects,
            sql,
            log: log.clone(),
            params: ParamsCtx::new(request.params.clone()),
            scratch: ScratchCtx::new(scratch),
            limiter: Limiter::new(memory.clone()),
        })
    }
}

fn classify_trap(
    error: wasmtime::Error,
    store: &Store<RunState>,
    limits: &RunLimits,
    log: &LogCtx,
) -> RunError {
    if store.data().limiter.exceeded() {
        return RunError::MemoryLimit(limits.memory);
    }
    // Records dropped for want of memory: the guest was not told (stdout
    // fails, `log` says `budget-exceeded`), so say it here.
    if log.memory_exceeded() {
        return RunError::HostMemoryLimit(limits.memory);
    }
    if log.exceeded() {
        return RunError::LogLimit(log.max_bytes());
    }
    if let Some(Trap::OutOfFuel) = error.downcast_ref::<Trap>() {
        return RunError::FuelExhausted(limits.fuel.unwrap_or(u64::MAX));
    }
    RunError::Trap(describe_trap(&error))
}

/// The most backtrace frames a trap message keeps. A stack overflow has
/// thousands of identical ones.
const MAX_BACKTRACE_FRAMES: usize = 24;
/// Identical frames on top of a backtrace that suggest runaway recursion.
/// wasmtime itself keeps only the innermost frames, about 20.
const RECURSION_FRAMES: usize = 16;

/// The trap's reason, then the top of its wasm backtrace.
fn describe_trap(error: &wasmtime::Error) -> String {
    let mut message = error.root_cause().to_string();
    let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return message;
    };
    let frames = backtrace.frames();
    let names: Vec<String> = frames
        .iter()
        .take(MAX_BACKTRACE_FRAMES)
        .map(|frame| match frame.func_name() {
            Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
            None => format!("<function {}>", frame.func_index()),
        })
        .collect();
    // Compiled languages keep their stack in linear memory, so unbounded
    // recursion ends as an out-of-bounds access (the stack pointer wraps)
    // or as wasm call-stack exhaustion. Say which when the backtrace shows it.
    if names.len() >= RECURSION_FRAMES && names.windows(2).all(|w| w[0] == w[1]) {
        message.push_str(&format!(
            " in `{}`, which called itself {} times or more: the task overflowed its stack \
             (unbounded recursion?)",
            names[0],
            names.len()
        ));
    }
    message.push_str("\nwasm backtrace:");
    for (i, name) in names.iter().enumerate() {
        message.push_str(&format!("\n  {i:>3}: {name}"));
    }
    if frames.len() > MAX_BACKTRACE_FRAMES {
        message.push_str(&format!(
            "\n  ... {} more frames",
            frames.len() - MAX_BACKTRACE_FRAMES
        ));
    }
    message
}

fn link_pre(
    linker: &Linker<RunState>,
    component: &Component,
) -> Result<TaskBindingsPre<RunState>, RuntimeError> {
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| RuntimeError::InvalidComponent(validate::explain_link_error(&e)))?;
    TaskBindingsPre::new(instance_pre).map_err(|e| {
        RuntimeError::InvalidComponent(format!(
            "it does not export the `caisson:task/task` world's `run` function: {e:#}"
        ))
    })
}

fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    // The scratch directory's preopens, in place of wasmtime-wasi's.
    caisson_host_api::scratch::add_to_linker(linker, |s| ScratchView {
        ctx: &mut s.scratch,
        table: &mut s.table,
    })?;
    caisson_host_api::objects::add_to_linker(linker, |s| ObjectsView {
        ctx: &mut s.objects,
        table: &mut s.table,
    })?;
    caisson_host_api::sql::add_to_linker(linker, |s| SqlView {
        ctx: &mut s.sql,
        table: &mut s.table,
    })?;
    caisson_host_api::log::add_to_linker(linker, |s| &mut s.log)?;
    caisson_host_api::params::add_to_linker(linker, |s| &mut s.params)?;
    // The standard interfaces, for components written for other hosts.
    caisson_host_api::log::add_logging_to_linker(linker, |s| &mut s.log)?;
    caisson_host_api::params::add_config_to_linker(linker, |s| &mut s.params)?;
    Ok(())
}

fn build_engine(config: &EngineConfig, fuel: bool) -> Result<Engine, RuntimeError> {
    let mut wasm = wasmtime::Config::new();
    wasm.epoch_interruption(true)
        .consume_fuel(fuel)
        .wasm_component_model(true)
        .memory_init_cow(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    if config.perf_map {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if config.pooling && !fuel {
        let n = config.max_instances;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        // A component has several core instances (a Python task has about
        // 14) but usually one memory. Each memory slot reserves its own
        // address space (4 GiB and a guard, so that wasm accesses need no
        // bounds checks): 20 per instance would not fit 10,000 instances
        // in the 128 TiB a process has, so the slots stop at half of it.
        let slot = config.max_memory.max(4 << 30) + (32 << 20);
        let memories = (u64::from(n) * 20).min(POOL_ADDRESS_SPACE / slot).max(1);
        pool.total_component_instances(n)
            .total_core_instances(n * 20)
            .total_memories(u32::try_from(memories).unwrap_or(u32::MAX))
            .total_tables(n * 20)
            .max_memory_size(config.max_memory as usize)
            .max_memories_per_component(32)
            .max_tables_per_component(32)
            .max_core_instances_per_component(32)
            .total_stacks(n)
            // Memory and tables this small are zeroed in place when an
            // instance slot is reused, instead of being unmapped and
            // faulted back in by the next run.
            .linear_memory_keep_resident(config.keep_resident_bytes())
            .table_keep_resident(config.keep_resident_bytes())
            .pagemap_scan(wasmtime::Enabled::Auto);
        wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&wasm).map_err(RuntimeError::Wasmtime)
}

/// The address space the pooling allocator's linear-memory slots may
/// reserve: half of x86-64's 47-bit user address space, leaving the rest to
/// the process (the metered engine's memories, stacks, heaps).
const POOL_ADDRESS_SPACE: u64 = 64 << 40;

/// Advances the engines' epochs every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine, metered: Arc<OnceLock<Metered>>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("caisson-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                    if let Some(metered) = metered.get() {
                        metered.engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
