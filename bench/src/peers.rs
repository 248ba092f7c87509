//! Against the alternatives (issue 17): the tools a user would pick instead
//! of Caisson, measured here, in the same run, on the same inputs.
//!
//! - **wasmtime CLI** (the sandbox alone): `wasmtime run` of a precompiled
//!   `.cwasm` of `word-count-cmd`, a WASI command built from the same
//!   `Counter` as the word-count task, against a fresh process that runs the
//!   task as `caisson run` does, and against a run in a warm worker.
//! - **uv** (dependency conflicts): `uv run --no-project --with PKG==VER
//!   python task.py` on a warm cache, for a trivial pinned task and for the
//!   python-etl example's work, against the same tasks in Caisson; the idle
//!   memory of a uv process tree against an idle Python task instance.
//! - **graphile-worker** (the PostgreSQL job queue): no-op jobs per second
//!   and add-to-start latency on the same PostgreSQL, with the settings of
//!   its performance page, against Caisson's figures from the service
//!   section of this run.
//! - **Airflow** (scheduling): `airflow standalone`, its quick start, runs a
//!   linear chain and a fan-out/fan-in of N no-op tasks, triggered through
//!   its REST API; Caisson's embedded default runs workflows of the same N
//!   no-op steps in the same shapes. Per hop for the chain, tasks per second
//!   for the fan-out.
//!
//! `bench/install-peers` installs them into `target/tools`; a peer that is
//! not there is skipped with a note that says so.
//!
//! A "fresh Caisson process" is this suite re-executing itself with
//! [`RUN_ENV`] set: it builds a runtime from a config, loads the task
//! (compiled code from the disk cache) and runs it, as `caisson run` does,
//! but built with the suite's profile, as the worker processes are, so that
//! a debug `caisson` binary is never timed against a release wasmtime.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use caisson_host_api::Grants;
use caisson_host_api::log::MemorySink;
use caisson_runtime::{Config, LoadedTask, RunRequest, Runtime};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::report::{Dist, Plan, Report, rss_of};
use crate::{guest, root};

/// Set in a process the suite starts to run one task as `caisson run` does:
/// the path of a JSON [`RunSpec`].
pub const RUN_ENV: &str = "CAISSON_BENCH_RUN";

/// What a fresh Caisson process runs (see [`run_main`]).
struct RunSpec {
    /// The task component.
    task: PathBuf,
    /// Where the compiled-code cache and the scratch directories live.
    dir: PathBuf,
    /// `[objects.*]` and `[sql.*]` tables of the config.
    config: String,
    objects: Vec<String>,
    sql: Vec<String>,
    params: BTreeMap<String, String>,
    input: Vec<u8>,
}

impl RunSpec {
    fn to_json(&self) -> Value {
        json!({
            "task": self.task,
            "dir": self.dir,
            "config": self.config,
            "objects": self.objects,
            "sql": self.sql,
            "params": self.params,
            "input": String::from_utf8_lossy(&self.input),
        })
    }

    fn from_json(v: &Value) -> Result<Self> {
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(RunSpec {
            task: v["task"].as_str().context("task")?.into(),
            dir: v["dir"].as_str().context("dir")?.into(),
            config: v["config"].as_str().context("config")?.into(),
            objects: strings("objects"),
            sql: strings("sql"),
            params: serde_json::from_value(v["params"].clone())?,
            input: v["input"].as_str().unwrap_or("").as_bytes().to_vec(),
        })
    }

    fn runtime(&self) -> Result<Runtime> {
        let mut config = Config::parse(&self.config)?;
        config.engine.cache_dir = self.dir.join("cache");
        config.engine.scratch_dir = self.dir.join("scratch");
        Ok(Runtime::new(config)?)
    }

    fn request(&self) -> RunRequest {
        let mut request = RunRequest::new(self.input.clone(), Arc::new(MemorySink::default()));
        let mut grants = Grants::default();
        for label in &self.objects {
            grants = grants.with_object_store(label.as_str());
        }
        for label in &self.sql {
            grants = grants.with_sql(label.as_str());
        }
        request.grants = grants;
        request.params = self.params.clone();
        request
    }
}

/// A fresh process running one task: what `caisson run TASK` does between
/// its start and its exit (config, runtime, load from the disk cache, run,
/// output to stdout).
pub fn run_main(spec: &Path) -> Result<()> {
    let spec: Value = serde_json::from_slice(&std::fs::read(spec)?)?;
    let spec = RunSpec::from_json(&spec)?;
    let tokio = tokio::runtime::Runtime::new()?;
    let output = tokio.block_on(async {
        let runtime = spec.runtime()?;
        let bytes = std::fs::read(&spec.task)
            .with_context(|| format!("could not read {}", spec.task.display()))?;
        let task = runtime.load(&bytes).await?;
        anyhow::Ok(runtime.run(&task, spec.request()).await?)
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&output)?;
    stdout.flush()?;
    Ok(())
}

/// Where `bench/install-peers` puts the peers.
fn tools() -> PathBuf {
    std::env::var_os("CAISSON_BENCH_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/tools"))
}

fn missing(report: &mut Report, peer: &str, why: &str) {
    let line = format!(
        "{peer} missing ({why}): its comparison was skipped; install it with bench/install-peers"
    );
    println!("  {line}");
    report.notes.push(line);
}

/// Runs `command` to completion `warmup + samples` times and times each
/// whole process; `check` sees every stdout.
fn time_process(
    samples: usize,
    warmup: usize,
    mut command: impl FnMut(usize) -> Result<Command>,
    check: impl Fn(&[u8]) -> Result<()>,
    mut before: impl FnMut() -> Result<()>,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        before()?;
        let mut command = command(i)?;
        let start = Instant::now();
        let out = command.output().context("could not start a peer process")?;
        let elapsed = start.elapsed();
        ensure!(
            out.status.success(),
            "{command:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        check(&out.stdout)?;
        if i >= warmup {
            times.push(elapsed);
        }
    }
    Ok(times)
}

/// A command that re-executes this suite to run `spec` as `caisson run`.
fn caisson_process(spec: &RunSpec, path: &Path) -> Result<Command> {
    std::fs::write(path, serde_json::to_vec(&spec.to_json())?)?;
    let mut command = Command::new(std::env::current_exe()?);
    command.env(RUN_ENV, path).stdin(Stdio::null());
    Ok(command)
}

fn guest_path(name: &str) -> Result<PathBuf> {
    guest(name)?; // the same "missing" message as everywhere else
    let dir = std::env::var_os("CAISSON_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/guests"));
    Ok(dir.join(format!("{name}.wasm")))
}

/// Whether the guests a comparison needs are built; a note if not.
fn guests_present(report: &mut Report, what: &str, names: &[&str]) -> bool {
    for name in names {
        if let Err(e) = guest_path(name) {
            report.notes.push(format!("{what} skipped: {e:#}"));
            return false;
        }
    }
    true
}

fn find_dist(report: &Report, name: &str) -> Option<usize> {
    report.dists.iter().position(|d| d.name == name)
}

fn find_value(report: &Report, prefix: &str) -> Option<(String, f64)> {
    report
        .values
        .iter()
        .find(|(n, _, _)| n.starts_with(prefix))
        .map(|(n, v, _)| (n.clone(), *v))
}

/// All four peers.
pub async fn run(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    println!("peers:");
    std::fs::create_dir_all(dir)?;
    wasmtime_cli(plan, &dir.join("wasmtime"), report).await?;
    uv(plan, &dir.join("uv"), report).await?;
    graphile_worker(plan, report).await?;
    airflow(plan, &dir.join("airflow"), report).await?;
    Ok(())
}

/// The sandbox alone: `wasmtime run` of the same counting code.
async fn wasmtime_cli(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    let wasmtime = tools().join("bin/wasmtime");
    let Ok(out) = Command::new(&wasmtime).arg("--version").output() else {
        missing(report, "wasmtime-cli", &format!("{}", wasmtime.display()));
        return Ok(());
    };
    if !guests_present(
        report,
        "the wasmtime comparison",
        &["word-count-cmd", "word-count"],
    ) {
        return Ok(());
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    report.notes.push(format!(
        "wasmtime CLI: {version} (`wasmtime run --allow-precompiled word-count-cmd.cwasm < \
         FRAMES`, its default settings)"
    ));

    // The same objects as files for the task's local store, and as one
    // stream of length-prefixed frames for the command's standard input.
    let input = dir.join("input");
    std::fs::create_dir_all(&input)?;
    let objects = crate::runtime::text(plan.peer_compute_bytes, plan.peer_compute_objects);
    let frames_path = dir.join("frames");
    let mut frames = std::io::BufWriter::new(std::fs::File::create(&frames_path)?);
    let mut counter = word_count::Counter::new();
    for (i, object) in objects.iter().enumerate() {
        std::fs::write(input.join(format!("part-{i:04}.txt")), object)?;
        frames.write_all(&(object.len() as u64).to_le_bytes())?;
        frames.write_all(object)?;
        counter.feed(object);
        counter.end_object();
    }
    frames.flush()?;
    drop(frames);
    let expected = counter.summary(word_count::TOP);
    let mb = objects.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    drop(objects);

    let cwasm = dir.join("word-count-cmd.cwasm");
    let status = Command::new(&wasmtime)
        .arg("compile")
        .arg(guest_path("word-count-cmd")?)
        .arg("-o")
        .arg(&cwasm)
        .status()?;
    ensure!(status.success(), "wasmtime compile: {status}");
    let check = |out: &[u8]| crate::runtime::check_summary(out, &expected);
    let samples = plan.peer_compute_samples;
    let bare = time_process(
        samples,
        1,
        |_| {
            let mut c = Command::new(&wasmtime);
            c.arg("run")
                .arg("--allow-precompiled")
                .arg(&cwasm)
                .stdin(std::fs::File::open(&frames_path)?);
            Ok(c)
        },
        check,
        || Ok(()),
    )?;
    let bare = report.dist(Dist::new(
        format!("word-count {mb:.0} MiB, `wasmtime run` of a `.cwasm` (a process)"),
        bare,
    ));

    // The task reads the same files through a local object store; its
    // summary goes outside the prefix it counts.
    let spec = RunSpec {
        task: guest_path("word-count")?,
        dir: dir.to_path_buf(),
        config: format!(
            "[objects.data]\ntype = \"local\"\nroot = \"{}\"\n",
            dir.display()
        ),
        objects: vec!["data".into()],
        sql: vec![],
        params: BTreeMap::from([
            ("store".into(), "data".into()),
            ("prefix".into(), "input".into()),
            ("output".into(), "out/summary.json".into()),
        ]),
        input: vec![],
    };
    let spec_path = dir.join("run.json");
    // The first run compiles the task into the disk cache.
    let fresh = time_process(
        samples,
        1,
        |_| caisson_process(&spec, &spec_path),
        check,
        || Ok(()),
    )?;
    let fresh = report.dist(Dist::new(
        format!("word-count {mb:.0} MiB, a fresh Caisson process (`caisson run`, cached)"),
        fresh,
    ));
    let rt = spec.runtime()?;
    let task = rt.load(&std::fs::read(&spec.task)?).await?;
    let warm = warm_runs(&rt, &task, &spec, samples, |out| check(out)).await?;
    let warm = report.dist(Dist::new(
        format!("word-count {mb:.0} MiB, a run in a warm Caisson worker"),
        warm,
    ));
    report.ratio(
        "fresh Caisson process / `wasmtime run`, word count, p50",
        fresh,
        50.0,
        bare,
        50.0,
    );
    report.ratio(
        "warm Caisson worker / `wasmtime run`, word count, p50",
        warm,
        50.0,
        bare,
        50.0,
    );
    Ok(())
}

/// Runs in a runtime that already holds the task: what a warm worker does.
async fn warm_runs(
    rt: &Runtime,
    task: &LoadedTask,
    spec: &RunSpec,
    samples: usize,
    check: impl Fn(&[u8]) -> Result<()>,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + 1 {
        let start = Instant::now();
        let output = rt.run(task, spec.request()).await?;
        let elapsed = start.elapsed();
        check(&output)?;
        if i >= 1 {
            times.push(elapsed);
        }
    }
    Ok(times)
}

/// The real interpreter behind `python3`, which uv is told to use.
fn python() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("python3")?;
    ensure!(out.status.success(), "python3 failed");
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

/// `uv run --no-project --with PKG python SCRIPT ARGS`, on the installed
/// cache, offline: the figure is uv's own cost with a warm cache, not a
/// round trip to PyPI.
fn uv_command(uv: &Path, python: &Path, script: &str, args: &[&Path]) -> Result<Command> {
    let path = root().join("bench/peers/uv").join(script);
    let text = std::fs::read_to_string(&path)?;
    let with = text
        .lines()
        .find_map(|l| l.strip_prefix("# with: "))
        .with_context(|| format!("{} names no `# with:` package", path.display()))?;
    let mut c = Command::new(uv);
    c.stdin(Stdio::null())
        .env("UV_CACHE_DIR", tools().join("uv-cache"))
        .env("UV_PYTHON", python)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_OFFLINE", "1")
        .args(["run", "--no-project", "--quiet", "--with", with, "python"])
        .arg(&path)
        .args(args);
    Ok(c)
}

/// Python with pinned dependencies: uv against Caisson's Python tasks.
async fn uv(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    let uv = tools().join("uv/bin/uv");
    let Ok(out) = Command::new(&uv).arg("--version").output() else {
        missing(report, "uv", &format!("{}", uv.display()));
        return Ok(());
    };
    if !guests_present(
        report,
        "the uv comparison",
        &["py-packaging-old", "python-etl"],
    ) {
        return Ok(());
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let python = python()?;
    report.notes.push(format!(
        "uv: {version}, `uv run --no-project --with packaging==21.3 python TASK.py` with \
         {}, on a warm cache, offline (UV_OFFLINE=1)",
        python.display()
    ));
    std::fs::create_dir_all(dir)?;
    let samples = plan.peer_process_samples;

    // A trivial task pinned to packaging 21.3 (LegacyVersion, gone in 22).
    let uv_trivial = time_process(
        samples,
        2,
        |_| uv_command(&uv, &python, "trivial.py", &[]),
        |out| {
            let v: Value = serde_json::from_slice(out)?;
            ensure!(
                v["packaging"] == "21.3",
                "uv ran packaging {}",
                v["packaging"]
            );
            Ok(())
        },
        || Ok(()),
    )?;
    let uv_trivial = report.dist(Dist::new(
        "trivial task pinned to packaging 21.3, `uv run --with` (a process)",
        uv_trivial,
    ));
    let check_trivial = |out: &[u8]| {
        let v: Value = serde_json::from_slice(out)?;
        ensure!(
            v["packaging"] == "21.3",
            "the task saw packaging {}",
            v["packaging"]
        );
        Ok(())
    };
    let spec = RunSpec {
        task: guest_path("py-packaging-old")?,
        dir: dir.to_path_buf(),
        config: String::new(),
        objects: vec![],
        sql: vec![],
        params: BTreeMap::new(),
        input: vec![],
    };
    let spec_path = dir.join("trivial.json");
    let fresh = time_process(
        samples,
        1,
        |_| caisson_process(&spec, &spec_path),
        check_trivial,
        || Ok(()),
    )?;
    let fresh = report.dist(Dist::new(
        "trivial task pinned to packaging 21.3, a fresh Caisson process (cached)",
        fresh,
    ));
    let rt = spec.runtime()?;
    let task = rt.load(&std::fs::read(&spec.task)?).await?;
    let warm = warm_runs(&rt, &task, &spec, samples, check_trivial).await?;
    let warm = report.dist(Dist::new(
        "trivial task pinned to packaging 21.3, a run in a warm Caisson worker",
        warm,
    ));
    for (name, caisson) in [
        ("`uv run --with` / fresh Caisson process", fresh),
        ("`uv run --with` / warm Caisson worker", warm),
    ] {
        report.ratio(
            &format!("{name}, trivial task, p50"),
            uv_trivial,
            50.0,
            caisson,
            50.0,
        );
        report.ratio(
            &format!("{name}, trivial task, p99"),
            uv_trivial,
            99.0,
            caisson,
            99.0,
        );
    }

    etl(plan, &uv, &python, dir, report).await?;
    idle_memory(plan, &uv, &python, report).await?;
    Ok(())
}

/// The python-etl example's work: CSV lines into a SQLite table, in one
/// transaction, read from the same files on both sides.
async fn etl(plan: &Plan, uv: &Path, python: &Path, dir: &Path, report: &mut Report) -> Result<()> {
    let lines = plan.etl_lines;
    let csv = dir.join("csv");
    std::fs::create_dir_all(&csv)?;
    let files = 4;
    for f in 0..files {
        let mut text = String::from("name,amount\n");
        for i in (f..lines).step_by(files) {
            text.push_str(&format!("item-{i},{}\n", (i * 37) % 1000));
        }
        std::fs::write(csv.join(format!("part-{f}.csv")), text)?;
    }
    let db = dir.join("warehouse.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS events (source TEXT, name TEXT, amount BIGINT)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    // Each sample starts from an empty table (not timed).
    let clear = || -> Result<()> {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut conn = sqlx::SqliteConnection::connect(&url).await?;
                sqlx::query("DELETE FROM events").execute(&mut conn).await?;
                conn.close().await?;
                anyhow::Ok(())
            })
        })
    };
    let check = |out: &[u8]| {
        let v: Value = serde_json::from_slice(out)?;
        ensure!(
            v["rows"] == lines && v["files"] == files,
            "expected {lines} rows from {files} files, got {v}"
        );
        Ok(())
    };
    let samples = plan.peer_process_samples;
    let with_uv = time_process(
        samples,
        1,
        |_| uv_command(uv, python, "etl.py", &[csv.as_path(), db.as_path()]),
        check,
        clear,
    )?;
    let with_uv = report.dist(Dist::new(
        format!("python-etl, {lines} CSV lines into SQLite, `uv run --with` (a process)"),
        with_uv,
    ));
    let spec = RunSpec {
        task: guest_path("python-etl")?,
        dir: dir.to_path_buf(),
        config: format!(
            "[objects.raw]\ntype = \"local\"\nroot = \"{}\"\n\n\
             [sql.warehouse]\ntype = \"sqlite\"\nurl = \"{url}\"\n",
            dir.display()
        ),
        objects: vec!["raw".into()],
        sql: vec!["warehouse".into()],
        params: BTreeMap::new(),
        input: br#"{"prefix": "csv/", "table": "events"}"#.to_vec(),
    };
    let spec_path = dir.join("etl.json");
    let fresh = time_process(
        samples,
        1,
        |_| caisson_process(&spec, &spec_path),
        check,
        clear,
    )?;
    let fresh = report.dist(Dist::new(
        format!("python-etl, {lines} CSV lines into SQLite, a fresh Caisson process (cached)"),
        fresh,
    ));
    let rt = spec.runtime()?;
    let task = rt.load(&std::fs::read(&spec.task)?).await?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + 1 {
        clear()?;
        let start = Instant::now();
        let output = rt.run(&task, spec.request()).await?;
        let elapsed = start.elapsed();
        check(&output)?;
        if i >= 1 {
            times.push(elapsed);
        }
    }
    let warm = report.dist(Dist::new(
        format!("python-etl, {lines} CSV lines into SQLite, a run in a warm Caisson worker"),
        times,
    ));
    report.ratio(
        "`uv run --with` / fresh Caisson process, python-etl, p50",
        with_uv,
        50.0,
        fresh,
        50.0,
    );
    report.ratio(
        "`uv run --with` / warm Caisson worker, python-etl, p50",
        with_uv,
        50.0,
        warm,
        50.0,
    );
    Ok(())
}

/// The children of `pid`: each thread lists those it spawned (uv spawns
/// Python from a worker thread, not its main one).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        all.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    all
}

/// Every descendant of `pid`, deepest first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    for child in children(pid) {
        all.extend(descendants(child));
        all.push(child);
    }
    all
}

/// Kills the processes this suite started and their descendants. SIGKILL
/// cannot be passed on, so uv's Python children go first, by their pids:
/// they would otherwise outlive uv.
fn kill_trees(processes: &mut [std::process::Child]) {
    for c in processes {
        for pid in descendants(c.id()) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The RSS of `pid` and all its descendants, in bytes.
fn tree_rss(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(descendants(pid))
        .filter_map(rss_of)
        .sum()
}

/// Idle memory per concurrent task: uv process trees (uv waits on its
/// Python child, so both count) against the density section's idle Python
/// task instances.
async fn idle_memory(plan: &Plan, uv: &Path, python: &Path, report: &mut Report) -> Result<()> {
    let n = plan.uv_idle_processes;
    let mut processes = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = uv_command(uv, python, "idle.py", &[])?;
        processes.push(c.stdin(Stdio::null()).spawn()?);
    }
    // Until every uv has its Python child and the import is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = processes.iter().all(|c| !children(c.id()).is_empty());
        if ready {
            break;
        }
        if Instant::now() > deadline {
            kill_trees(&mut processes);
            bail!("the idle uv tasks did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let total: u64 = processes.iter().map(|c| tree_rss(c.id())).sum();
    kill_trees(&mut processes);
    let per = total as f64 / n as f64;
    let name = format!("RSS per idle task, `uv run --with` (uv + python, {n} at once), KiB");
    report.value(&name, per / 1024.0, n);
    match find_value(report, "worker RSS per idle `py-probe` instance") {
        Some((caisson, kib)) => report.plain_ratio(
            "idle `uv run --with` task RSS / idle Python task instance RSS",
            per / 1024.0 / kib,
            &name,
            &caisson,
        ),
        None => report.notes.push(
            "the idle-memory ratio against uv needs the density section in the same run".into(),
        ),
    }
    Ok(())
}

/// graphile-worker against Caisson on the same PostgreSQL.
async fn graphile_worker(plan: &Plan, report: &mut Report) -> Result<()> {
    let dir = tools().join("graphile-worker");
    if !dir
        .join("node_modules/graphile-worker/package.json")
        .exists()
    {
        missing(report, "graphile-worker", &format!("{}", dir.display()));
        return Ok(());
    }
    let Ok(pg) = std::env::var("CAISSON_TEST_POSTGRES_URL") else {
        report
            .notes
            .push("graphile-worker skipped: PostgreSQL not configured".into());
        return Ok(());
    };
    let url = crate::service::fresh_postgres(&pg, "graphile").await?;
    let script = root().join("bench/peers/graphile-worker/bench.cjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&dir)
        .env("DATABASE_URL", &url)
        .env("JOBS", plan.throughput_runs.to_string())
        .env("LATENCY_SAMPLES", plan.trigger_samples.to_string())
        .env("CLIENTS", "8")
        // It logs a line per job by default; that stays, unread.
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .output()
        .await
        .context("could not start node")?;
    ensure!(out.status.success(), "{}: {}", script.display(), out.status);
    // Its default logger writes to stdout too: the result is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("graphile-worker printed no result")?;
    let result: Value = serde_json::from_str(line).context("graphile-worker's result")?;
    let version = result["version"].as_str().unwrap_or("?");
    report.notes.push(format!(
        "graphile-worker {version} on Node.js {}: concurrentJobs 24, maxPoolSize 25, \
         localQueue size 500, completeJobBatchDelay 0, failJobBatchDelay 0 (its performance \
         page's settings), everything else default; jobs added with addJob by 8 concurrent \
         clients, in the worker's process",
        node_version()
    ));
    let latency: Vec<Duration> = result["latency_ns"]
        .as_array()
        .context("latency_ns")?
        .iter()
        .filter_map(Value::as_u64)
        .map(Duration::from_nanos)
        .collect();
    let gw_latency = report.dist(Dist::new(
        "add to start, graphile-worker (PostgreSQL)",
        latency,
    ));
    let rate = result["throughput"].as_f64().context("throughput")?;
    let drain = result["drain"].as_f64().context("drain")?;
    let rate_name = "throughput, graphile-worker, no-op jobs/s (8 clients adding)";
    report.value(rate_name, rate, plan.throughput_runs);
    report.value(
        "throughput, graphile-worker, no-op jobs/s (queued first, drained)",
        drain,
        plan.throughput_runs,
    );

    let trigger = find_dist(
        report,
        "trigger to start, PostgreSQL (API process + 1 worker process)",
    );
    let caisson_rate = find_value(report, "throughput, PostgreSQL, 1 worker process");
    let (Some(trigger), Some((caisson_rate_name, caisson_rate))) = (trigger, caisson_rate) else {
        report.notes.push(
            "graphile-worker's ratios need the service section's PostgreSQL figures in the same run"
                .into(),
        );
        return Ok(());
    };
    report.ratio(
        "Caisson trigger to start / graphile-worker add to start, PostgreSQL, p50",
        trigger,
        50.0,
        gw_latency,
        50.0,
    );
    report.ratio(
        "Caisson trigger to start / graphile-worker add to start, PostgreSQL, p99",
        trigger,
        99.0,
        gw_latency,
        99.0,
    );
    report.plain_ratio(
        "Caisson no-op runs/s / graphile-worker no-op jobs/s, PostgreSQL",
        caisson_rate / rate,
        &caisson_rate_name,
        rate_name,
    );
    // A Caisson run also instantiates a sandbox; graphile-worker calls a
    // JavaScript function.
    if let Some(inst) = find_dist(report, "instantiate + run `hello` (cached, pooling)") {
        let share =
            report.dists[inst].p50().as_secs_f64() / report.dists[trigger].p50().as_secs_f64();
        report.plain_ratio(
            "share of Caisson's trigger to start spent instantiating and running the sandbox, p50",
            share,
            "instantiate + run `hello` (cached, pooling) p50",
            "trigger to start, PostgreSQL (API process + 1 worker process) p50",
        );
    }
    Ok(())
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Airflow's workflows against Caisson's, the same shapes and sizes: a
/// chain of `n` no-op tasks and a fan-out/fan-in of `n` (1 → n-2 → 1).
///
/// Airflow is `airflow standalone` (bench/peers/airflow/bench.py), its quick
/// start: LocalExecutor on SQLite. Caisson is its own single-process default
/// beside it: `serve` on SQLite with 2 worker slots. Both are timed from
/// just before the trigger request; Airflow to its last task's `end_date`,
/// Caisson until `GET /v1/workflow-runs/{id}?wait=30s` answers that the run
/// ended, which also counts the scheduler closing the run.
async fn airflow(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    let venv = tools().join("airflow");
    if !venv.join("bin/airflow").exists() {
        missing(
            report,
            "airflow",
            &format!("{}", venv.join("bin/airflow").display()),
        );
        return Ok(());
    }
    if !guests_present(report, "the Airflow comparison", &["bench-probe"]) {
        return Ok(());
    }
    // A hop of Airflow's chain takes about a second on this machine, so
    // fewer steps than the service section's 1,000, and fewer samples.
    let (n, samples) = if plan.quick { (10, 1) } else { (50, 3) };
    std::fs::create_dir_all(dir)?;
    // Its home (SQLite database, task logs) outlives the run, beside the
    // results, for reading why a task failed.
    let home = root().join("target/bench/airflow");
    if home.exists() {
        std::fs::remove_dir_all(&home)?;
    }
    let script = root().join("bench/peers/airflow/bench.py");
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(&home)
        .arg(n.to_string())
        .arg(samples.to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .context("could not start Airflow's Python")?;
    ensure!(
        out.status.success(),
        "{}: {}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).context("Airflow's result")?;
    let settings = result["settings"]
        .as_object()
        .map(|s| {
            s.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    report.notes.push(format!(
        "Airflow {} (`airflow standalone`: {}, SQLite, Python {}): everything at its defaults \
         but {settings}; no-op `@task`s, runs triggered with `POST /api/v2/dags/ID/dagRuns`, \
         one at a time after one untimed run",
        result["version"].as_str().unwrap_or("?"),
        result["executor"].as_str().unwrap_or("?"),
        python_version(&venv.join("bin/python")),
    ));
    // Runs of Airflow's that failed were tried again; they are reported.
    let failures = result["failures"].as_array().cloned().unwrap_or_default();
    if !failures.is_empty() {
        let runs =
            result["chain_runs"].as_u64().unwrap_or(0) + result["fan_runs"].as_u64().unwrap_or(0);
        let what: Vec<String> = failures
            .iter()
            .map(|f| format!("{} {}", f["dag_id"].as_str().unwrap_or("?"), f["tasks"]))
            .collect();
        let line = format!(
            "Airflow: {} of its {runs} DAG runs failed and were tried again: {} (logs in {})",
            failures.len(),
            what.join("; "),
            home.join("logs").display()
        );
        println!("  {line}");
        report.notes.push(line);
    }
    let nanos = |key: &str| -> Result<Vec<Duration>> {
        Ok(result[key]
            .as_array()
            .with_context(|| format!("Airflow's {key}"))?
            .iter()
            .filter_map(Value::as_u64)
            .map(Duration::from_nanos)
            .collect())
    };
    let af_chain = report.dist(Dist::new(
        format!("{n}-task linear chain, Airflow (trigger to last task's end)"),
        nanos("chain_ns")?,
    ));
    let af_fan = report.dist(Dist::new(
        format!("{n}-task fan-out/fan-in, Airflow (trigger to last task's end)"),
        nanos("fan_ns")?,
    ));

    // Caisson's embedded default, the same shapes, the same warm-up.
    let caisson_dir = dir.join("caisson");
    std::fs::create_dir_all(&caisson_dir)?;
    let service = crate::service::Service::start(
        &caisson_dir,
        &crate::service::sqlite_url(&caisson_dir),
        2,
        0,
    )
    .await?;
    let name = |i: usize| format!("s{i}");
    let chain: Vec<Value> = (0..n)
        .map(|i| crate::service::step(name(i), if i == 0 { vec![] } else { vec![name(i - 1)] }))
        .collect();
    let middle: Vec<String> = (1..n - 1).map(name).collect();
    let mut fan = vec![crate::service::step(name(0), vec![])];
    fan.extend(
        middle
            .iter()
            .map(|m| crate::service::step(m.clone(), vec![name(0)])),
    );
    fan.push(crate::service::step(name(n - 1), middle));
    let mut chain_walls =
        crate::service::workflow(&service, "airflow-chain", chain, samples + 1).await?;
    let mut fan_walls = crate::service::workflow(&service, "airflow-fan", fan, samples + 1).await?;
    service.stop().await?;
    chain_walls.remove(0);
    fan_walls.remove(0);
    let chain = report.dist(Dist::new(
        format!("{n}-step linear chain, Caisson (embedded SQLite, 2 slots)"),
        chain_walls,
    ));
    let fan = report.dist(Dist::new(
        format!("{n}-step fan-out/fan-in, Caisson (embedded SQLite, 2 slots)"),
        fan_walls,
    ));

    let hop_ms = |d: usize| report.dists[d].p50().as_secs_f64() * 1e3 / n as f64;
    let per_sec = |d: usize| n as f64 / report.dists[d].p50().as_secs_f64();
    let (af_hop, hop) = (hop_ms(af_chain), hop_ms(chain));
    let (af_rate, rate) = (per_sec(af_fan), per_sec(fan));
    let af_hop_name = format!("{n}-task chain, Airflow, ms per hop (p50 wall / {n})");
    let hop_name = format!("{n}-step chain, Caisson, ms per hop (p50 wall / {n})");
    let af_rate_name = format!("{n}-task fan-out, Airflow, tasks/s ({n} / p50 wall)");
    let rate_name = format!("{n}-step fan-out, Caisson, tasks/s ({n} / p50 wall)");
    report.value(&af_hop_name, af_hop, samples);
    report.value(&hop_name, hop, samples);
    report.value(&af_rate_name, af_rate, samples);
    report.value(&rate_name, rate, samples);
    report.plain_ratio(
        "Airflow / Caisson, time per hop of a chain",
        af_hop / hop,
        &af_hop_name,
        &hop_name,
    );
    report.plain_ratio(
        "Caisson / Airflow, fan-out tasks/s",
        rate / af_rate,
        &rate_name,
        &af_rate_name,
    );
    Ok(())
}

fn python_version(python: &Path) -> String {
    Command::new(python)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .trim_start_matches("Python ")
                .to_string()
        })
        .unwrap_or_default()
}
