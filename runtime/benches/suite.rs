//! Caisson's benchmark suite (issue 5): `cargo bench -p caisson-runtime`.
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
//! 2. **Compute.** The word-count task over a memory object store, against
//!    the same counting code compiled natively over the same bytes.
//!
//! Results go to `target/bench/results.{md,json}`; the Markdown table is also
//! printed. `CAISSON_BENCH_QUICK=1` runs a few iterations over small data, so
//! CI can check that the suite still works without caring about its numbers.
//! Guests come from `target/guests` (`scripts/build-guests`) or
//! `CAISSON_GUEST_DIR`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use caisson_host_api::Grants;
use caisson_host_api::log::MemorySink;
use caisson_runtime::{Config, LoadedTask, RunRequest, Runtime};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};

/// How much work each measurement does.
struct Plan {
    quick: bool,
    instantiate_samples: usize,
    compile_samples: usize,
    spawn_samples: usize,
    compute_bytes: usize,
    compute_objects: usize,
    compute_samples: usize,
    python_samples: usize,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("CAISSON_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Plan {
                quick,
                instantiate_samples: 500,
                compile_samples: 5,
                spawn_samples: 20,
                compute_bytes: 1 << 20,
                compute_objects: 4,
                compute_samples: 3,
                python_samples: 20,
            }
        } else {
            Plan {
                quick,
                instantiate_samples: 5000,
                compile_samples: 30,
                spawn_samples: 300,
                compute_bytes: 20 << 20,
                compute_objects: 20,
                compute_samples: 15,
                python_samples: 500,
            }
        }
    }
}

/// Many timings of one thing.
struct Dist {
    name: String,
    samples: Vec<Duration>,
}

impl Dist {
    fn new(name: impl Into<String>, mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty());
        samples.sort();
        Dist {
            name: name.into(),
            samples,
        }
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    fn pct(&self, p: f64) -> Duration {
        let n = self.samples.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.samples[rank.clamp(1, n) - 1]
    }

    fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    fn p99(&self) -> Duration {
        self.pct(99.0)
    }
}

/// `numerator / denominator`, both from this run.
struct Ratio {
    name: String,
    value: f64,
    numerator: String,
    denominator: String,
}

#[derive(Default)]
struct Report {
    dists: Vec<Dist>,
    ratios: Vec<Ratio>,
    notes: Vec<String>,
}

impl Report {
    fn dist(&mut self, d: Dist) -> usize {
        println!(
            "  {}: n={} p50={} p99={}",
            d.name,
            d.samples.len(),
            fmt_duration(d.p50()),
            fmt_duration(d.p99())
        );
        self.dists.push(d);
        self.dists.len() - 1
    }

    /// Records `dists[a].pa / dists[b].pb`.
    fn ratio(&mut self, name: &str, a: usize, pa: f64, b: usize, pb: f64) {
        let (da, db) = (&self.dists[a], &self.dists[b]);
        let value = da.pct(pa).as_secs_f64() / db.pct(pb).as_secs_f64();
        self.ratios.push(Ratio {
            name: name.into(),
            value,
            numerator: format!("{} p{pa}", da.name),
            denominator: format!("{} p{pb}", db.name),
        });
    }

    fn markdown(&self, plan: &Plan) -> String {
        let mut md = String::new();
        md.push_str(&format!(
            "Mode: {}; {} CPUs; {} {}.\n\n",
            if plan.quick { "quick (smoke)" } else { "full" },
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::env::consts::OS,
            std::env::consts::ARCH,
        ));
        md.push_str("| Measurement | Samples | p50 | p99 |\n|---|---:|---:|---:|\n");
        for d in &self.dists {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                d.name,
                d.samples.len(),
                fmt_duration(d.p50()),
                fmt_duration(d.p99())
            ));
        }
        md.push_str("\n| Ratio | Value | Numerator | Denominator |\n|---|---:|---|---|\n");
        for r in &self.ratios {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.name,
                fmt_ratio(r.value),
                r.numerator,
                r.denominator
            ));
        }
        if !self.notes.is_empty() {
            md.push('\n');
            for n in &self.notes {
                md.push_str(&format!("- {n}\n"));
            }
        }
        md
    }

    fn json(&self, plan: &Plan) -> Value {
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "suite": "caisson-runtime/suite",
            "mode": if plan.quick { "quick" } else { "full" },
            "unix_time": unix_time,
            "machine": {
                "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
            },
            "distributions": self.dists.iter().map(|d| json!({
                "name": d.name,
                "samples": d.samples.len(),
                "p50_ns": d.p50().as_nanos() as u64,
                "p99_ns": d.p99().as_nanos() as u64,
                "min_ns": d.samples[0].as_nanos() as u64,
                "max_ns": d.samples[d.samples.len() - 1].as_nanos() as u64,
            })).collect::<Vec<_>>(),
            "ratios": self.ratios.iter().map(|r| json!({
                "name": r.name,
                "value": r.value,
                "numerator": r.numerator,
                "denominator": r.denominator,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn fmt_ratio(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}×")
    } else {
        format!("{v:.2}×")
    }
}

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime crate lives in the workspace")
        .to_path_buf()
}

fn guest(name: &str) -> Result<Vec<u8>> {
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
fn runtime(dir: &std::path::Path, fuel: bool) -> Result<Runtime> {
    let mut config = Config::parse("[objects.data]\ntype = \"memory\"\n")?;
    config.engine.cache_dir = dir.join("cache");
    config.engine.scratch_dir = dir.join("scratch");
    config.engine.fuel = fuel;
    Ok(Runtime::new(config)?)
}

fn main() -> Result<()> {
    let plan = Plan::from_env();
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
    let rt = runtime(dir.path(), true)?;
    let spawn = tokio.block_on(instantiate(&plan, &rt, &mut report))?;
    tokio.block_on(python_task(&plan, &rt, dir.path(), spawn, &mut report))?;
    tokio.block_on(compute(&plan, &rt, dir.path(), &mut report))?;
    drop(rt);
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

/// 1. Instantiate + call `hello` from the compiled cache, against a fresh
///    compile and against spawning a process.
///
/// Returns the index of the process-spawn distribution, if measured.
async fn instantiate(plan: &Plan, rt: &Runtime, report: &mut Report) -> Result<Option<usize>> {
    println!("instantiate:");
    let bytes = guest("hello")?;
    // The first load compiles and writes the disk cache; after that the
    // task's `InstancePre` is in memory, as on a warm worker.
    let task = rt.load(&bytes).await?;
    let warmup = (plan.instantiate_samples / 10).max(10);
    let mut samples = Vec::with_capacity(plan.instantiate_samples);
    for i in 0..warmup + plan.instantiate_samples {
        let start = Instant::now();
        let output = hello(rt, &task).await?;
        let elapsed = start.elapsed();
        ensure!(output == b"hello, bench", "unexpected output {output:?}");
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    let inst = report.dist(Dist::new(
        "instantiate + run `hello` (cached, pooling)",
        samples,
    ));

    let mut samples = Vec::with_capacity(plan.compile_samples);
    for _ in 0..plan.compile_samples {
        let start = Instant::now();
        let component = wasmtime::component::Component::new(rt.engine(), &bytes)?;
        samples.push(start.elapsed());
        drop(component);
    }
    let compile = report.dist(Dist::new("compile `hello` (`Component::new`)", samples));
    report.ratio(
        "compile / instantiate + run, p50",
        compile,
        50.0,
        inst,
        50.0,
    );

    match python() {
        Some(python) => {
            let mut samples = Vec::with_capacity(plan.spawn_samples);
            for _ in 0..plan.spawn_samples + 2 {
                let start = Instant::now();
                let status = Command::new(&python)
                    .args(["-c", "pass"])
                    .stdin(Stdio::null())
                    .status()?;
                samples.push(start.elapsed());
                ensure!(status.success(), "{} -c pass: {status}", python.display());
            }
            samples.drain(..2); // warm the page cache
            let spawn = report.dist(Dist::new("spawn `python3 -c pass`", samples));
            report.ratio(
                "process spawn / instantiate + run, p50",
                spawn,
                50.0,
                inst,
                50.0,
            );
            report.ratio(
                "process spawn / instantiate + run, p99",
                spawn,
                99.0,
                inst,
                99.0,
            );
            report
                .notes
                .push(format!("Python interpreter spawned: {}", python.display()));
            Ok(Some(spawn))
        }
        None => {
            report
                .notes
                .push("python3 not found: the process-spawn baseline was skipped".into());
            Ok(None)
        }
    }
}

/// 1b. A trivial Python task (componentize-py, CPython inside the
///     component): its first compile, loading it from the disk cache, and
///     instantiate + run, against spawning `python3 -c pass`.
async fn python_task(
    plan: &Plan,
    rt: &Runtime,
    dir: &std::path::Path,
    spawn: Option<usize>,
    report: &mut Report,
) -> Result<()> {
    println!("python task:");
    let bytes = match guest("py-probe") {
        Ok(bytes) => bytes,
        Err(e) => {
            report.notes.push(format!(
                "Python task skipped ({e:#}); build it with scripts/build-python-guests"
            ));
            return Ok(());
        }
    };
    report.notes.push(format!(
        "Python task component (py-probe): {:.1} MB",
        bytes.len() as f64 / 1e6
    ));
    let start = Instant::now();
    let task = rt.load(&bytes).await?;
    report.dist(Dist::new(
        "compile the Python task (first load, 1 sample)",
        vec![start.elapsed()],
    ));

    // A fresh runtime over the same cache directory: what a restarted
    // worker pays to get a compiled task back.
    let mut samples = Vec::new();
    for _ in 0..if plan.quick { 2 } else { 5 } {
        let fresh = runtime(dir, true)?;
        let start = Instant::now();
        fresh.load(&bytes).await?;
        samples.push(start.elapsed());
    }
    report.dist(Dist::new(
        "load the Python task from the disk cache",
        samples,
    ));

    let input = br#"{"op": "hello"}"#;
    let mut samples = Vec::with_capacity(plan.python_samples);
    for i in 0..plan.python_samples + 3 {
        let sink = Arc::new(MemorySink::default());
        let start = Instant::now();
        let output = rt.run(&task, RunRequest::new(input.to_vec(), sink)).await?;
        let elapsed = start.elapsed();
        ensure!(output == b"hello", "unexpected output {output:?}");
        if i >= 3 {
            samples.push(elapsed);
        }
    }
    let run = report.dist(Dist::new(
        "instantiate + run a trivial Python task (cached, pooling)",
        samples,
    ));
    if let Some(spawn) = spawn {
        report.ratio(
            "`python3 -c pass` spawn / Python task instantiate + run, p50",
            spawn,
            50.0,
            run,
            50.0,
        );
        report.ratio(
            "`python3 -c pass` spawn / Python task instantiate + run, p99",
            spawn,
            99.0,
            run,
            99.0,
        );
    }
    Ok(())
}

async fn hello(rt: &Runtime, task: &LoadedTask) -> Result<Vec<u8>> {
    let sink = Arc::new(MemorySink::default());
    Ok(rt
        .run(task, RunRequest::new(b"bench".to_vec(), sink))
        .await?)
}

/// The real interpreter behind `python3`: version managers such as pyenv
/// put a shell-script shim first on PATH, which a scheduler configured with
/// an interpreter path would not pay for.
fn python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    let path = path.trim();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// 2. The word-count task over a memory store, against the same counting
///    code compiled natively over the same bytes.
async fn compute(
    plan: &Plan,
    rt: &Runtime,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    println!("compute:");
    let objects = text(plan.compute_bytes, plan.compute_objects);
    let total: usize = objects.iter().map(Vec::len).sum();
    let mb = total as f64 / (1 << 20) as f64;

    let mut samples = Vec::with_capacity(plan.compute_samples);
    let mut expected = None;
    for _ in 0..plan.compute_samples + 1 {
        let start = Instant::now();
        let mut counter = word_count::Counter::new();
        for object in &objects {
            counter.feed(std::hint::black_box(object));
            counter.end_object();
        }
        let summary = counter.summary(word_count::TOP);
        samples.push(start.elapsed());
        expected = Some(summary);
    }
    samples.remove(0); // warm-up
    let expected = expected.expect("at least one sample");
    let native = report.dist(Dist::new(
        format!("word-count {mb:.0} MiB, native `Counter`"),
        samples,
    ));

    let bytes = guest("word-count")?;
    for (fuel, rt) in [
        (true, Some(rt)),
        (false, None), // built below: a second engine, without fuel metering
    ] {
        let owned;
        let rt = match rt {
            Some(rt) => rt,
            None => {
                owned = runtime(&dir.join("nofuel"), false)?;
                &owned
            }
        };
        seed(rt, &objects).await?;
        let task = rt.load(&bytes).await?;
        let mut samples = Vec::with_capacity(plan.compute_samples);
        for i in 0..plan.compute_samples + 1 {
            let start = Instant::now();
            let output = word_count(rt, &task).await?;
            let elapsed = start.elapsed();
            if i == 0 {
                check_summary(&output, &expected)?;
            } else {
                samples.push(elapsed);
            }
        }
        let name = format!(
            "word-count {mb:.0} MiB, wasm task over a memory store (fuel {})",
            if fuel { "on" } else { "off" }
        );
        let wasm = report.dist(Dist::new(name, samples));
        report.ratio(
            &format!(
                "wasm / native word count (fuel {}), p50",
                if fuel { "on" } else { "off" }
            ),
            wasm,
            50.0,
            native,
            50.0,
        );
    }
    let d = &report.dists[native];
    report.notes.push(format!(
        "Native word count: {:.0} MiB/s at p50. The wasm side also lists and streams the \
         objects through the host's object-store calls and writes the summary back.",
        mb / d.p50().as_secs_f64()
    ));
    Ok(())
}

/// `total` bytes of text in `n` objects: words drawn from a skewed
/// vocabulary (so the frequency table has a few hot words and a long tail),
/// lines of 4 to 19 words. Deterministic, so every run counts the same.
fn text(total: usize, n: usize) -> Vec<Vec<u8>> {
    let vocabulary: Vec<String> = (0..5000u32)
        .map(|i| {
            let len = 2 + (i % 9) as usize;
            (0..len)
                .map(|j| (b'a' + ((i * 7 + j as u32 * 13) % 26) as u8) as char)
                .collect::<String>()
                + &i.to_string()
        })
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let per_object = total / n;
    (0..n)
        .map(|_| {
            let mut object = Vec::with_capacity(per_object + 64);
            while object.len() < per_object {
                let words = 4 + next() % 16;
                for w in 0..words {
                    // Square a uniform draw: small indices are much likelier.
                    let u = (next() % 1000) as usize;
                    let word = &vocabulary[u * u * vocabulary.len() / 1_000_000];
                    if w > 0 {
                        object.push(b' ');
                    }
                    object.extend_from_slice(word.as_bytes());
                }
                object.push(b'\n');
            }
            object
        })
        .collect()
}

async fn seed(rt: &Runtime, objects: &[Vec<u8>]) -> Result<()> {
    let store = rt
        .object_stores()
        .get("data")
        .context("no store labelled data")?;
    for (i, object) in objects.iter().enumerate() {
        let key = ObjectPath::from(format!("input/part-{i:04}.txt"));
        store.put(&key, object.clone().into()).await?;
    }
    Ok(())
}

async fn word_count(rt: &Runtime, task: &LoadedTask) -> Result<Vec<u8>> {
    let sink = Arc::new(MemorySink::default());
    let mut request = RunRequest::new(Vec::new(), sink);
    request.grants = Grants::default().with_object_store("data");
    request.params = BTreeMap::from([
        ("store".to_string(), "data".to_string()),
        ("prefix".to_string(), "input".to_string()),
        ("output".to_string(), "out/summary.json".to_string()),
    ]);
    Ok(rt.run(task, request).await?)
}

/// The task must have counted exactly what the native counter did, or the
/// comparison means nothing.
fn check_summary(output: &[u8], expected: &word_count::Summary) -> Result<()> {
    let got: Value = serde_json::from_slice(output).context("word-count's output")?;
    let want = serde_json::to_value(expected)?;
    if got != want {
        bail!(
            "word-count in wasm disagrees with the native count:\n wasm:   {got}\n native: {want}"
        );
    }
    Ok(())
}
