//! Tasks that misbehave fail their own run, with the named reason, and
//! leave the runtime able to run the next task.

use std::time::{Duration, Instant};

use caisson_runtime::{RunError, RunLimits};
use caisson_tests::{base_config, runtime};

use crate::{json, load, run_with};

fn limits() -> RunLimits {
    RunLimits {
        timeout: Duration::from_secs(20),
        memory: 64 << 20,
        ..RunLimits::default()
    }
}

/// The runtime still runs a well-behaved task after a hostile one.
async fn assert_still_healthy(runtime: &caisson_runtime::Runtime) {
    let hello = load(runtime, "hello").await;
    let (result, _) = run_with(runtime, &hello, b"after", |r| r.limits = Some(limits())).await;
    assert_eq!(result.unwrap(), b"hello, after");
}

#[tokio::test]
async fn hello_runs_and_its_log_is_captured() {
    let rt = runtime(base_config());
    let task = load(&rt, "hello").await;
    let (result, log) = run_with(&rt, &task, b"world", |r| r.limits = Some(limits())).await;
    assert_eq!(result.unwrap(), b"hello, world");
    let records = log.records();
    use caisson_host_api::log::Source;
    assert!(
        records.iter().any(|r| r.source == Source::Task),
        "no log-interface record: {records:?}"
    );
    assert!(
        records.iter().any(|r| r.source == Source::Stdout),
        "stdout not captured: {records:?}"
    );
    assert!(
        records.iter().any(|r| r.source == Source::Stderr),
        "stderr not captured: {records:?}"
    );
}

#[tokio::test]
async fn params_reach_the_task() {
    let rt = runtime(base_config());
    let task = load(&rt, "echo-params").await;
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.params.insert("day".into(), "2026-11-24".into());
        r.params.insert("mode".into(), "full".into());
    })
    .await;
    let out = json(&result.unwrap());
    assert_eq!(out["day"], "2026-11-24");
    assert_eq!(out["mode"], "full");
}

#[tokio::test]
async fn infinite_loop_times_out() {
    let rt = runtime(base_config());
    let task = load(&rt, "infinite-loop").await;
    let started = Instant::now();
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.limits = Some(RunLimits {
            timeout: Duration::from_millis(500),
            ..limits()
        })
    })
    .await;
    assert_eq!(
        result.unwrap_err(),
        RunError::Timeout(Duration::from_millis(500))
    );
    assert_eq!(
        RunError::Timeout(Duration::from_millis(500)).to_string(),
        "timeout after 500ms"
    );
    // Epoch interruption stops the loop promptly, not at some later host call.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let rt = runtime(base_config());
    let task = load(&rt, "memory-bomb").await;
    let (result, _) = run_with(&rt, &task, b"", |r| r.limits = Some(limits())).await;
    let err = result.unwrap_err();
    assert_eq!(err, RunError::MemoryLimit(64 << 20));
    assert_eq!(err.to_string(), "memory limit 64 MiB exceeded");
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn deep_recursion_traps_with_stack_overflow() {
    let rt = runtime(base_config());
    let task = load(&rt, "deep-recursion").await;
    let (result, _) = run_with(&rt, &task, b"", |r| r.limits = Some(limits())).await;
    match result.unwrap_err() {
        RunError::Trap(message) => {
            assert!(message.contains("overflowed its stack"), "{message}");
            assert!(
                message.contains("recurse"),
                "the recursing function is not named: {message}"
            );
            assert!(
                message.lines().count() < 40,
                "the backtrace is not capped: {message}"
            );
        }
        other => panic!("expected a stack overflow trap, got {other:?}"),
    }
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn panic_traps_with_its_message_and_backtrace() {
    let rt = runtime(base_config());
    let task = load(&rt, "trap").await;
    let (result, log) = run_with(&rt, &task, b"", |r| r.limits = Some(limits())).await;
    match result.unwrap_err() {
        RunError::Trap(message) => {
            assert!(
                message.contains("wasm backtrace"),
                "no backtrace in: {message}"
            );
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The panic message goes to stderr, which is the run's log.
    let logged: String = log
        .records()
        .iter()
        .map(|r| r.message.clone() + "\n")
        .collect();
    assert!(
        logged.contains("boom: deliberate trap"),
        "panic message not in log: {logged}"
    );
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn huge_log_hits_the_log_limit() {
    let rt = runtime(base_config());
    let task = load(&rt, "huge-log").await;
    let (result, log) = run_with(&rt, &task, b"", |r| {
        r.limits = Some(RunLimits {
            max_log_bytes: 1 << 20,
            ..limits()
        })
    })
    .await;
    assert_eq!(result.unwrap_err(), RunError::LogLimit(1 << 20));
    let kept: usize = log.records().iter().map(|r| r.message.len()).sum();
    assert!(kept <= 1 << 20, "kept {kept} bytes of log past the limit");
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn huge_output_hits_the_output_limit() {
    let rt = runtime(base_config());
    let task = load(&rt, "huge-output").await;
    let (result, _) = run_with(&rt, &task, b"8388608", |r| {
        r.limits = Some(RunLimits {
            max_output_bytes: 1 << 20,
            ..limits()
        })
    })
    .await;
    assert_eq!(
        result.unwrap_err(),
        RunError::OutputLimit {
            size: 8 << 20,
            limit: 1 << 20
        }
    );
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn fuel_budget_stops_a_busy_task() {
    let rt = runtime(base_config());
    let task = load(&rt, "infinite-loop").await;
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.limits = Some(RunLimits {
            fuel: Some(10_000_000),
            ..limits()
        })
    })
    .await;
    assert_eq!(result.unwrap_err(), RunError::FuelExhausted(10_000_000));
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_timeout_with_or_without_a_fuel_budget() {
    let rt = runtime(base_config());
    let task = load(&rt, "infinite-loop").await;
    // No budget runs on the unmetered engine, a budget on the metered one;
    // the epoch deadline stops both.
    for fuel in [None, Some(u64::MAX / 2)] {
        let started = Instant::now();
        let (result, _) = run_with(&rt, &task, b"", |r| {
            r.limits = Some(RunLimits {
                timeout: Duration::from_millis(400),
                fuel,
                ..limits()
            })
        })
        .await;
        assert_eq!(
            result.unwrap_err(),
            RunError::Timeout(Duration::from_millis(400)),
            "fuel {fuel:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "fuel {fuel:?}");
    }
    assert_still_healthy(&rt).await;
}

/// A budget is the exact number of units a run may spend: found by
/// bisection, the smallest budget that lets `hello` finish does so every
/// time, and one unit less runs out every time.
#[tokio::test]
async fn a_fuel_budget_is_exact() {
    let rt = runtime(base_config());
    let task = load(&rt, "hello").await;
    let run = async |fuel: u64| {
        let (result, _) = run_with(&rt, &task, b"fuel", |r| {
            r.limits = Some(RunLimits {
                fuel: Some(fuel),
                ..limits()
            })
        })
        .await;
        result
    };
    let (mut low, mut high) = (0u64, 1u64 << 40);
    assert_eq!(run(high).await.unwrap(), b"hello, fuel");
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        match run(mid).await {
            Ok(_) => high = mid,
            Err(RunError::FuelExhausted(n)) => {
                assert_eq!(n, mid);
                low = mid;
            }
            Err(e) => panic!("budget {mid}: {e}"),
        }
    }
    println!("fuel: `hello` needs exactly {high} units");
    assert!(high > 1000, "{high} units is too few to have run anything");
    for _ in 0..3 {
        assert_eq!(run(high).await.unwrap(), b"hello, fuel");
        assert_eq!(run(low).await.unwrap_err(), RunError::FuelExhausted(low));
    }
    // A run without a budget, on the unmetered engine, is not limited.
    let (result, _) = run_with(&rt, &task, b"free", |r| r.limits = Some(limits())).await;
    assert_eq!(result.unwrap(), b"hello, free");
}

/// The metered engine compiles from the bytes kept beside the compiled
/// code, so a budgeted run works on a runtime that loaded the task from the
/// disk cache, and a worker with fuel turned off refuses budgets plainly.
#[tokio::test]
async fn a_budgeted_run_works_after_a_restart_and_is_refused_without_fuel() {
    let task_bytes = caisson_tests::guest("hello");
    {
        let rt = runtime(base_config());
        rt.load(&task_bytes).await.unwrap();
    }
    let rt = runtime(base_config());
    let task = rt.load(&task_bytes).await.unwrap();
    let (result, _) = run_with(&rt, &task, b"again", |r| {
        r.limits = Some(RunLimits {
            fuel: Some(1 << 40),
            ..limits()
        })
    })
    .await;
    assert_eq!(result.unwrap(), b"hello, again");

    let mut config = base_config();
    config.engine.fuel = false;
    let rt = runtime(config);
    let task = rt.load(&task_bytes).await.unwrap();
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.limits = Some(RunLimits {
            fuel: Some(1 << 40),
            ..limits()
        })
    })
    .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("does not meter fuel"), "{error}");
}

/// A run's cancel switch, flipped after `delay`. The task hands the sender
/// back so it outlives the run (a dropped sender is not a cancel).
fn cancel_after(
    delay: Duration,
) -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<tokio::sync::watch::Sender<bool>>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        tx.send(true).unwrap();
        tx
    });
    (rx, canceller)
}

#[tokio::test]
async fn cancel_stops_a_running_task() {
    let rt = runtime(base_config());
    let task = load(&rt, "infinite-loop").await;
    let (rx, canceller) = cancel_after(Duration::from_millis(300));
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.limits = Some(limits());
        r.cancel = Some(rx);
    })
    .await;
    assert_eq!(result.unwrap_err(), RunError::Cancelled);
    canceller.await.unwrap();
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn a_runaway_task_does_not_stall_its_neighbours() {
    let rt = runtime(base_config());
    let looping = load(&rt, "infinite-loop").await;
    let hello = load(&rt, "hello").await;
    let runaway = run_with(&rt, &looping, b"", |r| {
        r.limits = Some(RunLimits {
            timeout: Duration::from_secs(3),
            ..limits()
        })
    });
    let neighbours = async {
        let mut outputs = Vec::new();
        for i in 0..5 {
            let input = format!("n{i}");
            let (result, _) =
                run_with(&rt, &hello, input.as_bytes(), |r| r.limits = Some(limits())).await;
            outputs.push(result.unwrap());
        }
        outputs
    };
    let ((runaway, _), outputs) = tokio::join!(runaway, neighbours);
    assert!(matches!(runaway, Err(RunError::Timeout(_))));
    assert_eq!(outputs[4], b"hello, n4");
}

#[tokio::test]
async fn ungranted_labels_are_access_denied_not_traps() {
    let mut config = base_config();
    config.objects = toml::from_str("[data]\ntype = \"memory\"").unwrap();
    let rt = runtime(config);
    let task = load(&rt, "ungranted-store").await;
    // Configured but not granted.
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.params.insert("label".into(), "data".into());
    })
    .await;
    assert_eq!(result.unwrap(), b"denied");
    // Not configured at all: the same answer, so a task cannot probe.
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.params.insert("label".into(), "secret-store".into());
    })
    .await;
    assert_eq!(result.unwrap(), b"denied");
    // A database label, likewise.
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.params.insert("label".into(), "warehouse".into());
        r.params.insert("kind".into(), "sql".into());
    })
    .await;
    assert_eq!(result.unwrap(), b"denied");
    // Granted: it opens.
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.params.insert("label".into(), "data".into());
        r.grants = caisson_host_api::Grants::default().with_object_store("data");
    })
    .await;
    assert_eq!(result.unwrap(), b"opened");
}

#[tokio::test]
async fn scratch_is_private_and_cannot_reach_the_host() {
    let rt = runtime(base_config());
    let task = load(&rt, "scratch-escape").await;
    let (result, _) = run_with(&rt, &task, b"", |r| r.limits = Some(limits())).await;
    let report = json(&result.unwrap());
    let text = report.to_string();
    assert!(
        !text.contains("root:x:0:0"),
        "host /etc/passwd leaked into the guest: {text}"
    );
    for path in [
        "/etc/passwd",
        "../../etc/passwd",
        "/scratch/../etc/passwd",
        "/scratch/../../etc/passwd",
    ] {
        let outcome = report[path]
            .as_str()
            .unwrap_or_else(|| panic!("no outcome for {path}: {text}"));
        assert!(outcome.starts_with("error"), "{path} was readable: {text}");
    }
    // The scratch directory itself works, by absolute and relative path.
    assert_eq!(report["/scratch/probe.txt"], "ok", "{text}");
    assert_eq!(report["./probe.txt"], "ok", "{text}");
    assert_eq!(report["scratch_was_empty"], true, "{text}");
    // The run left a file behind; the next run still starts empty.
    let (result, _) = run_with(&rt, &task, b"", |r| r.limits = Some(limits())).await;
    assert_eq!(json(&result.unwrap())["scratch_was_empty"], true);
}

/// Scratch directories are cleaned off the run's critical path, but they
/// are cleaned, whether the run succeeded or failed: one a run wrote to is
/// removed, an empty one may be used again, and none is left once the
/// runtime is dropped.
#[tokio::test]
async fn scratch_directories_are_removed_after_their_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let runs = scratch.path().join("runs");
    let mut config = base_config();
    config.engine.scratch_dir = runs.clone();
    let rt = runtime(config);
    let escape = load(&rt, "scratch-escape").await;
    let trap = load(&rt, "trap").await;
    for _ in 0..5 {
        // Each scratch-escape run leaves a file behind.
        let (result, _) = run_with(&rt, &escape, b"", |r| r.limits = Some(limits())).await;
        assert_eq!(json(&result.unwrap())["scratch_was_empty"], true);
        let (result, _) = run_with(&rt, &trap, b"", |r| r.limits = Some(limits())).await;
        result.unwrap_err();
    }
    let entries = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count();
    // The janitor may remove a run's directory between the listing and the
    // look inside it: gone, it holds no files.
    let files = |dir: &std::path::Path| match std::fs::read_dir(dir) {
        Ok(dir) => dir.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    let written = || {
        std::fs::read_dir(&runs)
            .unwrap()
            .filter(|d| files(&d.as_ref().unwrap().path()) > 0)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while written() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} scratch directories with files left 10 s after their runs",
            written()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Empty ones are kept for the next runs, a bounded number of them.
    assert!(
        entries(&runs) <= 64,
        "{} scratch directories",
        entries(&runs)
    );
    drop(rt);
    assert_eq!(
        entries(&runs),
        0,
        "scratch directories left after the runtime"
    );
}

/// Many runs one after another, alternating a task that writes to its
/// scratch directory and leaves a file there with tasks that do not: every
/// run starts with an empty directory, although empty ones are reused.
#[tokio::test]
async fn reused_scratch_directories_start_empty() {
    let scratch = tempfile::tempdir().unwrap();
    let runs = scratch.path().join("runs");
    let mut config = base_config();
    config.engine.scratch_dir = runs.clone();
    let rt = runtime(config);
    let escape = load(&rt, "scratch-escape").await;
    let hello = load(&rt, "hello").await;
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let (result, _) = run_with(&rt, &escape, b"", |r| r.limits = Some(limits())).await;
        let report = json(&result.unwrap());
        assert_eq!(report["scratch_was_empty"], true, "run {i}: {report}");
        for _ in 0..3 {
            let (result, _) = run_with(&rt, &hello, b"x", |r| r.limits = Some(limits())).await;
            result.unwrap();
        }
        seen.extend(std::fs::read_dir(&runs).unwrap().map(|d| d.unwrap().path()));
    }
    // 160 runs, and far fewer directories: the empty ones were reused.
    assert!(seen.len() < 120, "{} directories for 160 runs", seen.len());
}

/// A run stopped by its timeout, or cancelled, may leave a filesystem call
/// finishing on a blocking thread after it ends, which could write into
/// its directory after the pool checked it empty: such a directory is
/// removed, even when empty, and no later run is given it.
#[tokio::test]
async fn scratch_directories_of_stopped_runs_are_not_reused() {
    let scratch = tempfile::tempdir().unwrap();
    let runs = scratch.path().join("runs");
    let mut config = base_config();
    config.engine.scratch_dir = runs.clone();
    let rt = runtime(config);
    let hello = load(&rt, "hello").await;
    let endless = load(&rt, "infinite-loop").await;
    let dirs = || -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir(&runs)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    // The janitor works on its own thread, which a busy machine may not
    // run for a while: each step first waits for what it expects to see
    // (`gone_from`), then for the directories to stay the same twice,
    // 100 ms apart. Stability alone was read too early under load.
    let settled = || async {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = dirs();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = dirs();
            if now == last && !now.is_empty() {
                return now;
            }
            assert!(Instant::now() < deadline, "the scratch pool never settled");
            last = now;
        }
    };
    // Waits until one of `earlier` is removed, then for the pool to settle;
    // returns what was removed.
    let gone_from = |earlier: std::collections::BTreeSet<std::path::PathBuf>| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while dirs().is_superset(&earlier) {
            assert!(
                Instant::now() < deadline,
                "no directory was removed after a stopped run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = settled().await;
        let gone: Vec<_> = earlier.difference(&now).cloned().collect();
        (now, gone)
    };
    let hello_runs = || async {
        for _ in 0..3 {
            let (result, _) = run_with(&rt, &hello, b"x", |r| r.limits = Some(limits())).await;
            result.unwrap();
        }
    };
    hello_runs().await;
    let before = settled().await;
    // Runs that end on their own give their (empty) directories back.
    hello_runs().await;
    // A subset, not equal: under load the janitor may still be filling the
    // pool when `before` was read.
    let after_clean = settled().await;
    assert!(
        after_clean.is_superset(&before),
        "runs that ended cleanly lost their directories: {:?}",
        before.difference(&after_clean).collect::<Vec<_>>()
    );

    let timeout = Duration::from_millis(300);
    let (result, _) = run_with(&rt, &endless, b"", |r| {
        r.limits = Some(RunLimits {
            timeout,
            ..limits()
        })
    })
    .await;
    assert_eq!(result.unwrap_err(), RunError::Timeout(timeout));
    let (after_timeout, gone) = gone_from(after_clean).await;
    assert_eq!(
        gone.len(),
        1,
        "only the timed-out run's directory should be removed: {gone:?}"
    );

    let (rx, canceller) = cancel_after(Duration::from_millis(300));
    let (result, _) = run_with(&rt, &endless, b"", |r| {
        r.limits = Some(limits());
        r.cancel = Some(rx);
    })
    .await;
    assert_eq!(result.unwrap_err(), RunError::Cancelled);
    canceller.await.unwrap();
    let (_, gone_too) = gone_from(after_timeout).await;
    assert_eq!(
        gone_too.len(),
        1,
        "only the cancelled run's directory should be removed: {gone_too:?}"
    );

    // Neither comes back to a later run.
    hello_runs().await;
    let later = settled().await;
    assert!(
        !later.contains(&gone[0]) && !later.contains(&gone_too[0]),
        "a stopped run's directory was handed out again"
    );
}

#[tokio::test]
async fn hostile_keys_cannot_escape_the_store_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store-root");
    let mut config = base_config();
    config.objects = toml::from_str(&format!(
        "[data]\ntype = \"local\"\nroot = \"{}\"\nprefix = \"tenant-a\"",
        root.display()
    ))
    .unwrap();
    let rt = runtime(config);
    let task = load(&rt, "key-escape").await;
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.grants = caisson_host_api::Grants::default().with_object_store("data");
    })
    .await;
    let report = json(&result.unwrap());
    for key in ["../x", "/etc/passwd", "a/../../b", "a//b", "./a"] {
        let outcome = report[key]
            .as_str()
            .unwrap_or_else(|| panic!("no outcome for {key}: {report}"));
        assert!(
            outcome.starts_with("invalid-input"),
            "{key} was not rejected: {outcome}"
        );
    }
    // Nothing was written outside the prefix's directory.
    let mut outside = Vec::new();
    for entry in walk(dir.path()) {
        let relative = entry.strip_prefix(dir.path()).unwrap().to_path_buf();
        if entry.is_file() && !relative.starts_with("store-root/tenant-a") {
            outside.push(relative);
        }
    }
    assert!(
        outside.is_empty(),
        "files written outside the store prefix: {outside:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn retryable_task_errors_are_reported_as_such() {
    let rt = runtime(base_config());
    let task = load(&rt, "fail-retryable").await;
    let (result, _) = run_with(&rt, &task, b"", |_| {}).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Failed {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_running_work_is_not_cut_short_by_epoch_yields() {
    let rt = runtime(base_config());
    let task = load(&rt, "busy").await;
    // Two busy tasks side by side: epoch yields let them share the
    // executor, and neither is interrupted before its own deadline.
    let run = |ms: &'static str| {
        let rt = &rt;
        let task = task.clone();
        async move {
            run_with(rt, &task, b"", |r| {
                r.limits = Some(limits());
                r.params.insert("ms".into(), ms.into());
            })
            .await
        }
    };
    let ((a, _), (b, _)) = tokio::join!(run("300"), run("200"));
    let (a, b) = (json(&a.unwrap()), json(&b.unwrap()));
    assert!(a["elapsed_ms"].as_u64().unwrap() >= 300, "{a}");
    assert!(b["elapsed_ms"].as_u64().unwrap() >= 200, "{b}");
    assert!(a["iterations"].as_u64().unwrap() > 0);
}

/// Tasks that compute without calling the host leave their process its
/// sockets: two endless loops on a tokio runtime of two worker threads,
/// every thread it has, while the same runtime answers TCP pings. Each
/// answer comes within a few epoch ticks (10-13 ms here, 250 ms allowed
/// for a loaded machine). Before, a guest yielded by
/// waking itself, straight back into its worker's queue, and tokio polls
/// its I/O driver only every 61 tasks: about 300 ms of 5 ms slices
/// between polls, so a worker process running two such tasks answered
/// no socket for seconds and its heartbeats timed out on the pool (this
/// test saw a ping wait 615 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computing_tasks_leave_their_process_its_sockets() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rt = std::sync::Arc::new(runtime(base_config()));
    let task = load(&rt, "infinite-loop").await;
    let timeout = Duration::from_secs(3);
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (rt, task) = (rt.clone(), task.clone());
            tokio::spawn(async move {
                let limits = RunLimits {
                    timeout,
                    ..limits()
                };
                run_with(&rt, &task, b"", |r| r.limits = Some(limits))
                    .await
                    .0
            })
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut byte = [0u8; 1];
        while socket.read_exact(&mut byte).await.is_ok() {
            if socket.write_all(&byte).await.is_err() {
                break;
            }
        }
    });
    // The loops hold both threads before the first ping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let sent = Instant::now();
        client.write_all(b"p").await.unwrap();
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.unwrap();
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_millis(250),
        "a ping waited {slowest:?} behind the computing tasks"
    );
    for running in loops {
        assert_eq!(
            running.await.unwrap().unwrap_err(),
            RunError::Timeout(timeout)
        );
    }
}
