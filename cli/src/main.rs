//! `caisson`: run task components locally, serve the scheduling API, run
//! workers, and talk to a server.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use caisson_host_api::log::{Level, LogRecord, LogSink};
use caisson_runtime::{Config, RunRequest, Runtime};
use caisson_server::{Roles, ServerConfig};
use clap::{Parser, Subcommand};

mod args;
mod client;
mod escape;
mod project;
mod pybuild;

use args::{parse_bytes, parse_grants, parse_params, read_input};

#[derive(Parser)]
#[command(
    name = "caisson",
    version,
    about = "Run WebAssembly task components in a sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a task project: source with an example, a test, sample data
    /// and a `caisson.toml` for local runs.
    New(project::NewArgs),
    /// Build a task project (Rust or Python) into a component and check it.
    Build(project::BuildArgs),
    /// Run a task once locally (`caisson run TASK.wasm`, or `caisson run DIR`
    /// for a task project, built first if its sources changed), or manage
    /// runs on a server (`caisson run submit|get|list|logs|cancel`).
    Run(Box<RunCommand>),
    /// Check that a file is a task component, and list its imports and exports.
    Inspect {
        task: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve the REST API with the scheduler and in-process workers.
    Serve(ServeArgs),
    /// Run a worker that claims runs from a shared database.
    Worker(WorkerArgs),
    /// Upload and list modules on a server.
    #[command(subcommand)]
    Module(client::ModuleCommand),
    /// Manage cron schedules on a server.
    #[command(subcommand)]
    Schedule(client::ScheduleCommand),
    /// Manage workflows on a server.
    #[command(subcommand)]
    Workflow(client::WorkflowCommand),
    /// Build a Python task directory into a task component (componentize-py
    /// 0.25.1), bundling its pure-Python requirements.
    BuildPython(pybuild::BuildPythonArgs),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct RunCommand {
    #[command(subcommand)]
    remote: Option<client::RunRemote>,
    #[command(flatten)]
    local: LocalRunArgs,
}

#[derive(clap::Args)]
struct LocalRunArgs {
    /// The task component (`.wasm`), or a task project's directory: built
    /// if its sources changed, run with its `caisson.toml`, and granted
    /// every store and database that file configures unless `--grant` says
    /// otherwise.
    #[arg(required = true)]
    task: Option<PathBuf>,
    /// The configuration file (stores, databases, limits).
    #[arg(long, short, env = "CAISSON_CONFIG")]
    config: Option<PathBuf>,
    /// Grant a capability: `objects=LABEL` or `sql=LABEL`. Repeatable.
    #[arg(long = "grant", short = 'g', value_name = "KIND=LABEL")]
    grants: Vec<String>,
    /// A run parameter, `NAME=VALUE`. Repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// The input: literal text, `@FILE`, or `@-` for standard input.
    #[arg(long, short, default_value = "")]
    input: String,
    /// Wall-clock limit, e.g. `30s` or `5m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Memory limit, e.g. `64MiB` or `1GiB`.
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<u64>,
    /// Fuel budget (roughly, wasm instructions).
    #[arg(long)]
    fuel: Option<u64>,
    /// Write the output to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Print only the task's own log lines and output, no timing summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The configuration file; without one, everything lives under `--data-dir`.
    #[arg(long, short, env = "CAISSON_CONFIG")]
    config: Option<PathBuf>,
    /// Where the embedded default keeps its database, modules and cache.
    #[arg(long, default_value = ".caisson")]
    data_dir: PathBuf,
    /// Listen address, overriding the configuration.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The coordination database URL, overriding the configuration.
    #[arg(long, env = "CAISSON_DATABASE")]
    database: Option<String>,
    /// The module store, overriding the configuration: `s3://bucket/prefix`,
    /// `hdfs://namenode:port/prefix` or a directory.
    #[arg(long, env = "CAISSON_MODULES")]
    modules: Option<String>,
    /// In-process worker slots, overriding the configuration.
    #[arg(long)]
    workers: Option<usize>,
    /// Serve the API and scheduler only; workers run elsewhere.
    #[arg(long)]
    no_worker: bool,
    /// Log lines on standard error as `text` or `json` (one object a line,
    /// with the run id, tenant and trace id of a run's lines).
    #[arg(long, value_enum, default_value = "text", env = "CAISSON_LOG_FORMAT")]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for caisson_server::telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => caisson_server::telemetry::LogFormat::Text,
            LogFormat::Json => caisson_server::telemetry::LogFormat::Json,
        }
    }
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[arg(long, short, env = "CAISSON_CONFIG")]
    config: Option<PathBuf>,
    /// The shared coordination database, e.g. `postgres://...`.
    #[arg(long, env = "CAISSON_DATABASE")]
    database: Option<String>,
    /// The shared module store: `s3://bucket/prefix` (credentials from the
    /// usual `AWS_*` variables), `hdfs://namenode:port/prefix` or a directory.
    #[arg(long, env = "CAISSON_MODULES")]
    modules: Option<String>,
    /// Worker slots (concurrent runs).
    #[arg(long)]
    slots: Option<usize>,
    /// Serve `/metrics` (Prometheus) on this address, e.g. `0.0.0.0:9464`;
    /// overrides `[server] metrics_listen`.
    #[arg(long, env = "CAISSON_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log lines on standard error as `text` or `json`.
    #[arg(long, value_enum, default_value = "text", env = "CAISSON_LOG_FORMAT")]
    log_format: LogFormat,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `serve` and `worker` set up logging (and traces) once their
    // configuration is read: `[telemetry]` says where spans go.
    if !matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("CAISSON_LOG").unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,sqlx::postgres::notice=error")
                }),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // An error can quote a task's own error text.
            eprintln!("error: {}", escape::escape_controls(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(command) => match *command {
            RunCommand {
                remote: Some(remote),
                ..
            } => client::run_remote(remote).await,
            RunCommand {
                remote: None,
                local,
            } => run(local).await,
        },
        Command::New(args) => project::new(args),
        Command::Build(args) => project::build(args).await,
        Command::Inspect { task, config } => inspect(&task, config.as_deref()).await,
        Command::Serve(args) => serve(args).await,
        Command::Worker(args) => worker(args).await,
        Command::Module(command) => client::module(command).await,
        Command::Schedule(command) => client::schedule(command).await,
        Command::Workflow(command) => client::workflow(command).await,
        Command::BuildPython(args) => {
            tokio::task::spawn_blocking(move || pybuild::build_python(args)).await?
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn server_config(path: Option<&Path>, data_dir: &Path) -> anyhow::Result<ServerConfig> {
    match path {
        Some(path) => ServerConfig::from_file(path),
        None if Path::new("caisson.toml").exists() => {
            ServerConfig::from_file(Path::new("caisson.toml"))
        }
        None => Ok(ServerConfig::embedded(data_dir)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = server_config(args.config.as_deref(), &args.data_dir)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(database) = args.database {
        config.server.database = database;
    }
    if let Some(workers) = args.workers {
        config.server.workers = workers;
    }
    if let Some(modules) = &args.modules {
        config.server.modules = parse_module_store(modules)?;
    }
    let workers = if args.no_worker {
        0
    } else {
        config.server.workers
    };
    let roles = Roles {
        api: true,
        workers,
        scheduler: true,
    };
    let telemetry = caisson_server::telemetry::init(&config.telemetry, args.log_format.into())?;
    let served = caisson_server::serve(config, roles, shutdown_signal()).await;
    telemetry.shutdown();
    served
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let mut config = server_config(args.config.as_deref(), Path::new(".caisson"))?;
    if let Some(database) = args.database {
        config.server.database = database;
    }
    if let Some(modules) = &args.modules {
        config.server.modules = parse_module_store(modules)?;
    }
    let slots = args.slots.unwrap_or(config.server.workers).max(1);
    if let Some(addr) = args.metrics_listen {
        config.server.metrics_listen = Some(addr);
    }
    // Workers also re-queue expired leases: with no API process alive,
    // surviving workers still pick up a dead one's runs.
    let roles = Roles {
        api: false,
        workers: slots,
        scheduler: true,
    };
    let telemetry = caisson_server::telemetry::init(&config.telemetry, args.log_format.into())?;
    let served = caisson_server::serve(config, roles, shutdown_signal()).await;
    telemetry.shutdown();
    served
}

/// `s3://bucket[/prefix]`, `hdfs://namenode:port[/prefix]` or a directory,
/// as a store configuration, validated like `[server] modules`.
fn parse_module_store(text: &str) -> anyhow::Result<caisson_host_api::objects::StoreConfig> {
    let mut table = toml::Table::new();
    if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("bad module store {text:?}: expected s3://bucket/prefix");
        }
        table.insert("type".into(), "s3".into());
        table.insert("bucket".into(), bucket.into());
        table.insert("prefix".into(), prefix.into());
    } else if let Some(rest) = text.strip_prefix("hdfs://") {
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        table.insert("type".into(), "hdfs".into());
        table.insert("url".into(), format!("hdfs://{authority}").into());
        table.insert("prefix".into(), prefix.into());
    } else {
        table.insert("type".into(), "local".into());
        table.insert("root".into(), text.into());
    }
    Ok(caisson_runtime::config::check_store(
        "--modules",
        toml::Value::Table(table),
    )?)
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(ServerConfig::from_file(path)?.runtime),
        None if Path::new("caisson.toml").exists() => {
            Ok(ServerConfig::from_file(Path::new("caisson.toml"))?.runtime)
        }
        None => Ok(Config::default()),
    }
}

async fn inspect(task: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(task).with_context(|| format!("could not read {}", task.display()))?;
    let info = caisson_runtime::inspect(&bytes)?;
    let runtime = Runtime::new(load_config(config)?)?;
    let loaded = runtime.load(&bytes).await?;
    println!("{}: a valid Caisson task", task.display());
    println!("  sha256:  {}", loaded.digest());
    println!("  size:    {} bytes", bytes.len());
    for import in &info.imports {
        println!("  imports: {import}");
    }
    for export in &info.exports {
        println!("  exports: {export}");
    }
    Ok(())
}

async fn run(mut args: LocalRunArgs) -> anyhow::Result<()> {
    let mut task_path = args.task.clone().context("a task file is required")?;
    // Read before a project run moves into its directory.
    let input = read_input(&args.input)?;
    let mut default_grants = false;
    if task_path.is_dir() {
        let dir = std::fs::canonicalize(&task_path)?;
        task_path = project::ensure_built(&dir).await?;
        for path in [&mut args.config, &mut args.output].into_iter().flatten() {
            *path = std::path::absolute(&*path)?;
        }
        // The project's `caisson.toml` and the relative paths in it (a
        // local store's `root`, the compile cache) are the project's.
        std::env::set_current_dir(&dir).with_context(|| format!("entering {}", dir.display()))?;
        default_grants = args.grants.is_empty();
    }
    let mut config = load_config(args.config.as_deref())?;
    let mut limits = config.limits;
    if let Some(timeout) = args.timeout {
        limits.timeout = timeout;
    }
    if let Some(memory) = args.memory {
        limits.memory = memory;
    }
    if args.fuel.is_some() {
        limits.fuel = args.fuel;
    }
    config.limits = limits;

    let mut grants = parse_grants(&args.grants)?;
    if default_grants {
        // A project's own configuration is the author's, for local runs:
        // everything in it is granted.
        for label in config.objects.keys() {
            grants = grants.with_object_store(label);
        }
        for label in config.sql.keys() {
            grants = grants.with_sql(label);
        }
        if !args.quiet {
            let objects = config.objects.keys().map(|l| format!("objects={l}"));
            let sql = config.sql.keys().map(|l| format!("sql={l}"));
            let labels: Vec<String> = objects.chain(sql).collect();
            eprintln!(
                "caisson: granted {} (everything in caisson.toml; --grant to choose)",
                if labels.is_empty() {
                    "nothing".to_string()
                } else {
                    labels.join(", ")
                }
            );
        }
    }
    let params = parse_params(&args.params)?;
    let bytes = std::fs::read(&task_path)
        .with_context(|| format!("could not read {}", task_path.display()))?;

    let runtime = Runtime::new(config)?;
    let started = Instant::now();
    let task = runtime.load(&bytes).await?;
    let loaded = started.elapsed();

    let mut request = RunRequest::new(input, Arc::new(TerminalSink::new()));
    request.grants = grants;
    request.params = params;
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    request.cancel = Some(cancel_rx);
    // Ctrl-C stops the task (epoch interruption) instead of killing the
    // process mid-write.
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel_tx.send(true);
        }
    });

    let run_started = Instant::now();
    let result = runtime.run(&task, request).await;
    let ran = run_started.elapsed();
    if !args.quiet {
        eprintln!("caisson: load {loaded:.2?}, run {ran:.2?}");
    }
    let output = result.map_err(|e| anyhow::anyhow!("run failed: {e}"))?;
    match &args.output {
        Some(path) => std::fs::write(path, &output)
            .with_context(|| format!("could not write {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            if std::io::stdout().is_terminal() {
                // For a person: escaped. Piped or redirected, the output
                // is data and goes out byte for byte.
                let text = String::from_utf8_lossy(&output);
                stdout.write_all(escape::escape_controls(&text).as_bytes())?;
                if !output.ends_with(b"\n") {
                    stdout.write_all(b"\n")?;
                }
            } else {
                stdout.write_all(&output)?;
            }
        }
    }
    Ok(())
}

/// Prints the task's log to standard error as it happens.
struct TerminalSink {
    color: bool,
}

impl TerminalSink {
    fn new() -> Self {
        TerminalSink {
            color: std::io::stderr().is_terminal(),
        }
    }
}

impl LogSink for TerminalSink {
    fn record(&self, record: LogRecord) {
        let LogRecord {
            time,
            level,
            source,
            message,
        } = record;
        let source = match source {
            caisson_host_api::log::Source::Task => "",
            caisson_host_api::log::Source::Stdout => " stdout",
            caisson_host_api::log::Source::Stderr => " stderr",
        };
        let (start, end) = match (self.color, level) {
            (true, Level::Error) => ("\x1b[31m", "\x1b[0m"),
            (true, Level::Warn) => ("\x1b[33m", "\x1b[0m"),
            (true, Level::Debug | Level::Trace) => ("\x1b[2m", "\x1b[0m"),
            _ => ("", ""),
        };
        eprintln!(
            "{start}{} {level:>5}{source}: {}{end}",
            time.format("%H:%M:%S%.3f"),
            escape::escape_log_message(&message)
        );
    }

    fn progress(&self, done: u64, total: u64) {
        if total > 0 {
            eprintln!("progress: {done}/{total}");
        } else {
            eprintln!("progress: {done}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }

    #[test]
    fn module_stores_parse_from_urls_and_paths() {
        let s3 = format!(
            "{:?}",
            parse_module_store("s3://modules/prod/tasks").unwrap()
        );
        assert!(
            s3.contains("bucket: \"modules\"") && s3.contains("prefix: \"prod/tasks\""),
            "{s3}"
        );
        let local = format!("{:?}", parse_module_store("/srv/modules").unwrap());
        assert!(local.contains("/srv/modules"), "{local}");
        assert!(parse_module_store("s3://").is_err());
        let hdfs = format!(
            "{:?}",
            parse_module_store("hdfs://nn:8020/caisson/modules").unwrap()
        );
        assert!(
            hdfs.contains("url: \"hdfs://nn:8020\"")
                && hdfs.contains("prefix: \"caisson/modules\""),
            "{hdfs}"
        );
        let error = parse_module_store("hdfs://").unwrap_err().to_string();
        assert!(error.starts_with("--modules.url: "), "{error}");
    }

    #[test]
    fn grants_name_their_kind() {
        let grants = parse_grants(&["objects=raw".into(), "sql=warehouse".into()]).unwrap();
        assert!(grants.objects.contains("raw"));
        assert!(grants.sql.contains("warehouse"));
        assert!(parse_grants(&["raw".into()]).is_err());
        assert!(parse_grants(&["network=any".into()]).is_err());
    }
}
