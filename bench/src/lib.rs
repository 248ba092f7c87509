//! Caisson's benchmark suite: `cargo bench -p caisson-bench`.
//!
//! Every figure is either a distribution over many samples (p50/p99) or a
//! ratio against a baseline measured in the same run, never an absolute
//! threshold: the numbers depend on the machine, the ratios much less.
//!
//! 1. **Instantiate.** Instantiating and calling the `hello` task from the
//!    compiled cache (pooling allocator, `Runtime::run`), against compiling
//!    the same component afresh and against spawning a Python process (what a
//!    scheduler that runs each task as a process pays).
//!    A trivial Python task (`py-probe`, built by scripts/build-python-guests)
//!    gets the same treatment: first compile, load from the disk cache, and
//!    instantiate + run against spawning `python3 -c pass`.
//! 2. **Trigger to start.** From `POST /v1/runs` to the guest's first
//!    instruction, on the embedded SQLite default and on PostgreSQL with an
//!    API process and a worker process.
//!    **Cancel to stopped**, on the same two: from `POST /v1/runs/{id}/cancel`
//!    of a running (sleeping) task until its worker has stopped it and
//!    recorded it cancelled.
//! 3. **Throughput.** No-op runs per second through REST from 8 concurrent
//!    clients: one embedded `serve`; an API plus 1, then 2, worker processes
//!    on PostgreSQL. With each, the CPU every process spent per run (the
//!    bench process, each worker process, PostgreSQL's backends).
//! 4. **DAG.** A 1,000-step chain and a 1,000-step fan-out/fan-in, against a
//!    chain of direct triggers and the same runs submitted at once.
//! 5. **I/O.** A 1 GiB object (`CAISSON_BENCH_IO_MIB`) written and read,
//!    streamed, by a task through the host interface, against a native
//!    `object_store` client on the same S3 server and, when configured, the
//!    same MiniDFS; the process's peak RSS meanwhile. Then the word-count
//!    task over the compute section's text stored on each, against the
//!    native `Counter` fed by a native client. **Small objects**
//!    (`small-objects`): 2,000 objects of 0.1-3 KB read by a task one `get`
//!    at a time and through `read_prefix`, against a native client one at a
//!    time and with `buffer_unordered(16)`. **Map** (`map`):
//!    10,000 objects of 1-8 KB and 20 of 16 MiB (500 and 2 of 1 MiB in quick
//!    mode), read by a task one `get` at a time, through `read_prefix`, and
//!    by a workflow `map` step in 2, 4 and 8 splits, against a native client
//!    with `buffer_unordered(16)`.
//! 6. **Compute.** The word-count task over 200 MiB in a memory object store,
//!    against the same counting code compiled natively over the same bytes.
//! 7. **Density.** 10,000 idle instances at once (`CAISSON_BENCH_DENSITY`;
//!    and 100 Python ones), the RSS, PSS and private memory each adds,
//!    against the RSS of one idle `python3` process.
//! 8. **SQL sessions.** What a run's database session costs now that nothing
//!    survives it (open, one query, reset on release), against the same
//!    query on a plain sqlx pool and on a fresh connection each time.
//!
//! 9. **Against the alternatives** (issue 17, `peers`): `wasmtime run`,
//!    `uv run --with`, graphile-worker and Airflow, installed by
//!    `bench/install-peers`, measured beside Caisson on the same inputs; a
//!    peer not installed is named in a note and skipped.
//!
//! `CAISSON_BENCH_ONLY=io,density` runs only those sections (`instantiate`,
//! `python` (the Python task's rows of `instantiate` alone),
//! `service`, `dag` (the workflows alone, with the trigger to start that
//! is the chain's baseline), `throughput` (the embedded default's
//! throughput alone; `CAISSON_BENCH_THROUGHPUT_RUNS` sets its runs),
//! `pg-throughput` (PostgreSQL's throughput alone, the same way), `io`,
//! `small-objects`, `map`, `compute`, `density`, `sql`, `peers`),
//! for profiling one of them; a name not in that list stops the suite at
//! start-up with an error that lists them. `CAISSON_BENCH_PG_SQL=FILE` runs
//! FILE's SQL on each PostgreSQL database the figures use, once it is
//! migrated and warmed up: an experiment on the schema's functions or
//! triggers (`bench/experiments/`), measured without a build.
//!
//! Results go to `target/bench/results.{md,json}`; the Markdown table is also
//! printed. `CAISSON_BENCH_QUICK=1` runs a few iterations over small data, so
//! CI can check that the suite still works without caring about its numbers.
//! Guests come from `target/guests` (`scripts/build-guests`,
//! `scripts/build-python-guests`) or `CAISSON_GUEST_DIR`. PostgreSQL and S3
//! come from the test suite's variables (`eval "$(scripts/services env)"`);
//! without them their figures are skipped, with a note saying so.
//!
//! The numeric variables (`CAISSON_BENCH_DENSITY`, `_PYTHON_SAMPLES`,
//! `_THROUGHPUT_RUNS`, `_IO_MIB`, `_SLOTS`, `_WORKER_SLOTS`: positive whole
//! numbers; `_KEEP_RESIDENT`: bytes, 0 allowed) use the default when unset
//! or empty; any other value that is not such a number stops the suite at
//! start-up with an error naming the variable.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use caisson_runtime::{Config, Runtime};

use report::{Plan, Report};

mod client;
mod env;
mod io;
mod map;
mod peers;
mod proc;
mod report;
mod runtime;
mod service;
mod small_objects;
mod sql;

/// The workspace root.
/// A key prefix no earlier run of the suite used (`KIND-<ms since the
/// epoch>`), so a section's objects never meet a previous run's leftovers
/// on a shared store.
pub fn fresh_prefix(kind: &str) -> Result<String> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    Ok(format!("{kind}-{ms}"))
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate lives in the workspace")
        .to_path_buf()
}

pub fn guest(name: &str) -> Result<Vec<u8>> {
    let dir = std::env::var_os("CAISSON_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/guests"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| {
        format!(
            "guest component {} is missing; build the guests with scripts/build-guests",
            path.display()
        )
    })
}

/// A runtime with the default engine (pooling allocator, fuel metering) and
/// a memory object store labelled `data`, caching under `dir`.
pub fn runtime(dir: &std::path::Path, fuel: bool) -> Result<Runtime> {
    let mut config = Config::parse("[objects.data]\ntype = \"memory\"\n")?;
    config.engine.cache_dir = dir.join("cache");
    config.engine.scratch_dir = dir.join("scratch");
    config.engine.fuel = fuel;
    // For `perf record`: names the tasks' functions in the profile.
    config.engine.perf_map = std::env::var_os("CAISSON_BENCH_PERF_MAP").is_some();
    if let Some(bytes) = keep_resident()? {
        config.engine.keep_resident = Some(bytes);
    }
    Ok(Runtime::new(config)?)
}

/// `CAISSON_BENCH_KEEP_RESIDENT`: `engine.keep_resident` in bytes, to compare
/// settings back to back. 0 is a setting of its own (keep nothing resident),
/// so any whole number goes.
fn keep_resident() -> Result<Option<usize>> {
    env::number("CAISSON_BENCH_KEEP_RESIDENT")
}

/// Every section `main` runs, by the name `CAISSON_BENCH_ONLY` picks it with.
const SECTIONS: &[&str] = &[
    "instantiate",
    "python",
    "service",
    "dag",
    "throughput",
    "pg-throughput",
    "io",
    "small-objects",
    "map",
    "compute",
    "density",
    "sql",
    "peers",
];

/// The sections a `CAISSON_BENCH_ONLY` value picks: `None` (all of them)
/// when it is unset or empty, else its comma-separated names. A name not in
/// [`SECTIONS`] is an error listing the valid ones: a typo would otherwise
/// run nothing and look like a quick success.
fn only_sections(value: Option<&str>) -> Result<Option<Vec<&str>>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    // Empty items (`io,,map` or a trailing comma) name nothing, as before.
    let names: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    let valid = SECTIONS.join(", ");
    let unknown: Vec<String> = names
        .iter()
        .filter(|name| !SECTIONS.contains(name))
        .map(|name| format!("{name:?}"))
        .collect();
    if !unknown.is_empty() {
        let plural = if unknown.len() == 1 { "" } else { "s" };
        bail!(
            "CAISSON_BENCH_ONLY: {value:?}: unknown section{plural} {}; the sections are: {valid}",
            unknown.join(", ")
        );
    }
    // Only commas and spaces: set, yet naming nothing, it would run nothing.
    if names.is_empty() {
        bail!("CAISSON_BENCH_ONLY: {value:?} names no section; the sections are: {valid}");
    }
    Ok(Some(names))
}

/// The suite's entry point (`benches/suite.rs`).
pub fn main() -> Result<()> {
    if let Some(config) = std::env::var_os(service::WORKER_ENV) {
        return service::worker_main(std::path::Path::new(&config));
    }
    if let Ok(load) = std::env::var(client::CLIENT_ENV) {
        return client::client_main(&load);
    }
    if let Some(spec) = std::env::var_os(peers::RUN_ENV) {
        return peers::run_main(std::path::Path::new(&spec));
    }
    let plan = Plan::from_env()?;
    let only = env::read("CAISSON_BENCH_ONLY")?;
    let only = only_sections(only.as_deref())?;
    // The settings read where they are used, read once now as well: a bad
    // value then stops the suite before it measures anything, not after the
    // sections before the one that uses it.
    keep_resident()?;
    io::object_bytes(&plan)?;
    service::embedded_slots()?;
    service::process_slots()?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let mut report = Report::default();

    println!(
        "caisson benchmark suite ({} mode)",
        if plan.quick { "quick" } else { "full" }
    );
    let started = Instant::now();
    let wanted = |section: &str| only.as_ref().is_none_or(|names| names.contains(&section));
    // `python` alone: the Python task's rows without `hello`'s, to profile it.
    if wanted("instantiate") || wanted("python") {
        let rt = runtime(dir.path(), true)?;
        let spawn = if wanted("instantiate") {
            tokio.block_on(runtime::instantiate(&plan, &rt, &mut report))?
        } else {
            None
        };
        tokio.block_on(runtime::python_task(
            &plan,
            &rt,
            dir.path(),
            spawn,
            &mut report,
        ))?;
    }
    if wanted("service") {
        tokio.block_on(service::run(&plan, dir.path(), &mut report))?;
    } else {
        // `service` measures these too.
        if wanted("dag") {
            tokio.block_on(service::dag(&plan, dir.path(), &mut report))?;
        }
        if wanted("throughput") {
            tokio.block_on(service::throughput_only(&plan, dir.path(), &mut report))?;
        }
        if wanted("pg-throughput") {
            tokio.block_on(service::postgres_throughput_only(
                &plan,
                dir.path(),
                &mut report,
            ))?;
        }
    }
    // Before compute, which holds its text in memory.
    if wanted("io") {
        tokio.block_on(io::run(&plan, &dir.path().join("io"), &mut report))?;
    }
    if wanted("small-objects") {
        tokio.block_on(small_objects::run(
            &plan,
            &dir.path().join("small-objects"),
            &mut report,
        ))?;
    }
    if wanted("map") {
        tokio.block_on(map::run(&plan, &dir.path().join("map"), &mut report))?;
    }
    if wanted("compute") {
        let rt = runtime(dir.path(), true)?;
        tokio.block_on(runtime::compute(&plan, &rt, &mut report))?;
    }
    if wanted("density") {
        tokio.block_on(runtime::density(
            &plan,
            &dir.path().join("density"),
            &mut report,
        ))?;
    }
    if wanted("sql") {
        tokio.block_on(sql::run(&plan, &dir.path().join("sql"), &mut report))?;
    }
    // Last: its ratios use the figures of the sections above.
    if wanted("peers") {
        tokio.block_on(peers::run(&plan, &dir.path().join("peers"), &mut report))?;
    }
    println!("measured in {:.1} s", started.elapsed().as_secs_f64());

    let md = report.markdown(&plan);
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report.json(&plan))? + "\n",
    )?;
    println!("\n{md}\nwritten to {}/results.{{md,json}}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_only_runs_every_section() {
        assert_eq!(only_sections(None).unwrap(), None);
        assert_eq!(only_sections(Some("")).unwrap(), None);
    }

    #[test]
    fn valid_names_are_picked_as_before() {
        assert_eq!(only_sections(Some("io")).unwrap(), Some(vec!["io"]));
        assert_eq!(
            only_sections(Some(" io , density,")).unwrap(),
            Some(vec!["io", "density"])
        );
        assert_eq!(
            only_sections(Some("service,,pg-throughput")).unwrap(),
            Some(vec!["service", "pg-throughput"])
        );
        let all = SECTIONS.join(",");
        assert_eq!(only_sections(Some(&all)).unwrap(), Some(SECTIONS.to_vec()));
    }

    #[test]
    fn an_unknown_name_is_an_error_listing_the_sections() {
        let e = only_sections(Some("io,pg-througput"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("CAISSON_BENCH_ONLY: \"io,pg-througput\""),
            "{e}"
        );
        assert!(e.contains("unknown section \"pg-througput\";"), "{e}");
        assert!(
            e.ends_with(&format!("the sections are: {}", SECTIONS.join(", "))),
            "{e}"
        );

        let e = only_sections(Some("IO,densty")).unwrap_err().to_string();
        assert!(e.contains("unknown sections \"IO\", \"densty\";"), "{e}");
    }

    #[test]
    fn a_value_naming_nothing_is_an_error() {
        for value in [" ", ",", " , "] {
            let e = only_sections(Some(value)).unwrap_err().to_string();
            assert!(e.contains("names no section"), "{e}");
        }
    }

    /// `SECTIONS` must hold every name `main` checks, or `CAISSON_BENCH_ONLY`
    /// would refuse a section that exists: read them from this file's code.
    #[test]
    fn sections_lists_every_name_main_checks() {
        let source = include_str!("lib.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        let checked: Vec<&str> = code
            .split("wanted(\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        assert!(!checked.is_empty());
        for name in &checked {
            assert!(SECTIONS.contains(name), "{name} is missing from SECTIONS");
        }
        for name in SECTIONS {
            assert!(checked.contains(name), "main never checks {name}");
        }
    }
}
