//! The runtime on its own: instantiate, a Python task, compute, density.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use caisson_host_api::Grants;
use caisson_host_api::log::MemorySink;
use caisson_runtime::{LoadedTask, RunRequest, Runtime};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::Value;

use crate::report::{Dist, Plan, Report};
use crate::{guest, runtime};

/// 1. Instantiate + call `hello` from the compiled cache, against a fresh
///    compile and against spawning a process.
///
/// Returns the index of the process-spawn distribution, if measured.
pub async fn instantiate(plan: &Plan, rt: &Runtime, report: &mut Report) -> Result<Option<usize>> {
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
    // The part wasmtime does: a store with no grants, `instantiate_async`
    // alone. The difference from the row above is Caisson's own setup.
    let mut samples = Vec::with_capacity(plan.instantiate_samples);
    for i in 0..warmup + plan.instantiate_samples {
        let elapsed = rt.time_instantiate(&task).await?;
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    let bare = report.dist(Dist::new(
        "instantiate `hello` alone (`instantiate_async`, pooling)",
        samples,
    ));
    report.ratio("whole run / instantiate alone, p50", inst, 50.0, bare, 50.0);

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
pub async fn python_task(
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
    // wasmtime's part of it: `instantiate_async` alone, no call.
    let mut samples = Vec::with_capacity(plan.python_samples);
    for i in 0..plan.python_samples + 3 {
        let elapsed = rt.time_instantiate(&task).await?;
        if i >= 3 {
            samples.push(elapsed);
        }
    }
    let bare = report.dist(Dist::new(
        "instantiate the Python task alone (`instantiate_async`, pooling)",
        samples,
    ));
    report.ratio(
        "Python task instantiate + run / instantiate alone, p50",
        run,
        50.0,
        bare,
        50.0,
    );
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
pub async fn compute(plan: &Plan, rt: &Runtime, report: &mut Report) -> Result<()> {
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
    seed(rt, &objects).await?;
    let task = rt.load(&bytes).await?;
    // Without a budget a run uses the unmetered engine; with one, the
    // fuel-metered engine (a budget too large to run out).
    for fuel in [false, true] {
        let budget = fuel.then_some(u64::MAX / 2);
        let mut samples = Vec::with_capacity(plan.compute_samples);
        for i in 0..plan.compute_samples + 1 {
            let start = Instant::now();
            let output = word_count(rt, &task, budget).await?;
            let elapsed = start.elapsed();
            if i == 0 {
                check_summary(&output, &expected)?;
            } else {
                samples.push(elapsed);
            }
        }
        let mode = if fuel {
            "with a fuel budget"
        } else {
            "no budget, the default"
        };
        let name = format!("word-count {mb:.0} MiB, wasm task over a memory store ({mode})");
        let wasm = report.dist(Dist::new(name, samples));
        report.ratio(
            &format!("wasm / native word count ({mode}), p50"),
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
pub(crate) fn text(total: usize, n: usize) -> Vec<Vec<u8>> {
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

async fn word_count(rt: &Runtime, task: &LoadedTask, fuel: Option<u64>) -> Result<Vec<u8>> {
    let sink = Arc::new(MemorySink::default());
    let mut request = RunRequest::new(Vec::new(), sink);
    if fuel.is_some() {
        request.limits = Some(caisson_runtime::RunLimits {
            fuel,
            ..rt.config().limits
        });
    }
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
pub(crate) fn check_summary(output: &[u8], expected: &word_count::Summary) -> Result<()> {
    let got: Value = serde_json::from_slice(output).context("word-count's output")?;
    let want = serde_json::to_value(expected)?;
    if got != want {
        bail!(
            "word-count in wasm disagrees with the native count:\n wasm:   {got}\n native: {want}"
        );
    }
    Ok(())
}

/// Counts log lines: how many idle instances have started.
#[derive(Default)]
struct Started(std::sync::atomic::AtomicUsize);

impl caisson_host_api::log::LogSink for Started {
    fn record(&self, _record: caisson_host_api::log::LogRecord) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn progress(&self, _done: u64, _total: u64) {}
}

/// 7. Many idle instances at once, and the worker's RSS per instance,
///    against the RSS of one sleeping `python3` process.
pub async fn density(plan: &Plan, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    println!("density:");
    let python_rss = match python() {
        Some(python) => {
            let mut child = Command::new(&python)
                .args(["-c", "import time; time.sleep(60)"])
                .stdin(Stdio::null())
                .spawn()?;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let rss = crate::report::rss_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            rss
        }
        None => None,
    };
    if let Some(rss) = python_rss {
        report.value(
            "RSS of one idle `python3` process, KiB",
            (rss >> 10) as f64,
            1,
        );
    }

    let density = plan.density_instances;
    for (guest_name, input, params, n) in [
        ("bench-probe", Vec::new(), true, density),
        (
            "py-probe",
            br#"{"op": "sleep", "ms": 600000}"#.to_vec(),
            false,
            plan.python_density_instances,
        ),
    ] {
        let bytes = match guest(guest_name) {
            Ok(bytes) => bytes,
            Err(e) => {
                report
                    .notes
                    .push(format!("density of {guest_name} skipped: {e:#}"));
                continue;
            }
        };
        let mut config = caisson_runtime::Config::default();
        config.engine.cache_dir = dir.join("cache");
        config.engine.scratch_dir = dir.join("scratch");
        config.engine.max_instances = n as u32 + 8;
        config.engine.max_memory = 256 << 20;
        config.limits.memory = 256 << 20;
        let rt = Runtime::new(config)?;
        let task = rt.load(&bytes).await?;
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let started = Arc::new(Started::default());
        let before = crate::report::memory_now().context("reading /proc/self memory")?;
        let maps_before = mappings();
        let fds_before = open_fds();
        let rt = Arc::new(rt);
        let mut handles: Vec<tokio::task::JoinHandle<_>> = Vec::with_capacity(n);
        for _ in 0..n {
            let mut request = RunRequest::new(input.clone(), started.clone());
            if params {
                request.params = [("op", "sleep"), ("ms", "600000")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            }
            request.cancel = Some(cancelled.clone());
            let (rt, task) = (rt.clone(), task.clone());
            handles.push(tokio::spawn(async move { rt.run(&task, request).await }));
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(300);
        while started.0.load(std::sync::atomic::Ordering::Relaxed) < n {
            ensure!(
                Instant::now() < deadline,
                "only {} of {n} {guest_name} instances started",
                started.0.load(std::sync::atomic::Ordering::Relaxed)
            );
            // An idle instance never ends on its own: one that did failed.
            if let Some(i) = handles.iter().position(|h| h.is_finished()) {
                let outcome = handles.swap_remove(i).await?;
                bail!(
                    "a {guest_name} instance ended while {} of {n} had started: {outcome:?} \
                     ({} memory mappings; vm.max_map_count is {})",
                    started.0.load(std::sync::atomic::Ordering::Relaxed),
                    mappings(),
                    max_map_count()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let during = crate::report::memory_now().context("reading /proc/self memory")?;
        let maps = mappings();
        let fds = open_fds();
        cancel.send(true)?;
        for handle in handles {
            let outcome = handle.await?;
            ensure!(
                matches!(outcome, Err(caisson_runtime::RunError::Cancelled)),
                "an idle instance ended with {outcome:?}"
            );
        }
        report.notes.push(format!(
            "{n} idle {guest_name} instances: {:.1} memory mappings each (the kernel allows \
             {} per process, vm.max_map_count), {:.2} open file descriptors each",
            maps.saturating_sub(maps_before) as f64 / n as f64,
            max_map_count(),
            fds.saturating_sub(fds_before) as f64 / n as f64,
        ));
        let per = |during: u64, before: u64| during.saturating_sub(before) as f64 / n as f64;
        let per_instance = per(during.0, before.0);
        let name = format!("worker RSS per idle `{guest_name}` instance ({n} at once), KiB");
        report.value(&name, per_instance / 1024.0, n);
        // RSS counts a shared copy-on-write page once per instance mapping
        // it; PSS once in all, and the private part is what each instance
        // wrote (and its stack and host-side state).
        report.value(
            &format!("worker PSS per idle `{guest_name}` instance ({n} at once), KiB"),
            per(during.2, before.2) / 1024.0,
            n,
        );
        report.value(
            &format!(
                "worker private (anonymous) RSS per idle `{guest_name}` instance ({n} at once), KiB"
            ),
            per(during.1, before.1) / 1024.0,
            n,
        );
        if let Some(rss) = python_rss {
            report.plain_ratio(
                &format!("idle `python3` process RSS / idle `{guest_name}` instance RSS"),
                rss as f64 / per_instance,
                "RSS of one idle python3 process",
                &name,
            );
        }
    }
    Ok(())
}

/// How many memory mappings this process has.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count())
}

/// The most memory mappings a process may have.
fn max_map_count() -> String {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map_or_else(|_| "unknown".into(), |n| n.trim().to_string())
}

/// How many files this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count())
}
