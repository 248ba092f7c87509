//! The host memory a task can make a worker spend is charged to the task's
//! own memory limit: a `caisson serve` with 2 worker slots runs hostile
//! tasks (Rust and Python) that push SQL text, parameters, results, keys,
//! uploads, listings and logs at the host, on real PostgreSQL and S3. Each
//! fails with its named reason, a normal run beside them succeeds, and the
//! process's peak RSS stays within
//! `slots × (memory limit + ALLOWANCE) + idle baseline`.

use serde_json::{Value, json};

use caisson_tests::{ServerToml, postgres_url, s3_env, unique_prefix};

use crate::server::{Proc, push_guest};

/// The runs' memory limit.
const LIMIT: u64 = 128 << 20;
/// What one slot may use on top of its run's limit: what is not charged
/// (the instance's wasmtime structures, its stacks, a connection's and a
/// request's own buffers, the copy of a call's argument made before the
/// host can look at it, allocator slack). See SECURITY.md.
const ALLOWANCE: u64 = 64 << 20;
const SLOTS: u64 = 2;

/// `VmRSS` or `VmHWM` of process `pid`, in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.trim().trim_end_matches(" kB").trim().parse().unwrap();
    kb << 10
}

async fn submit(http: &reqwest::Client, url: &str, body: Value) -> String {
    let run = caisson_tests::submit_run(http, url, &body).await;
    run["id"].as_str().unwrap().to_string()
}

/// A run of `language`'s hostile guest in `mode`, with `size` and
/// `ballast` in MiB (0: the guest's default).
fn hostile(language: &str, mode: &str, size: u64, ballast: u64) -> Value {
    let grants = json!({"objects": ["data"], "sql": ["warehouse"]});
    // Under the store's own prefix, which is the test's.
    let prefix = format!("{language}-{mode}");
    match language {
        "rust" => json!({
            "module": "host-hog",
            "grants": grants,
            "params": {
                "mode": mode,
                "size": size.to_string(),
                "ballast": ballast.to_string(),
                "prefix": prefix,
            },
        }),
        _ => json!({
            "module": "py-probe",
            "grants": grants,
            "input": json!({
                "op": "host-hog", "mode": mode, "size": size, "ballast": ballast, "prefix": prefix,
            }).to_string(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stays_within_its_memory_bound_under_hostile_tasks() {
    let (Some(pg), Some(s3)) = (postgres_url(), s3_env()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("host-memory");
    ServerToml::sqlite_in(dir.path())
        .local_modules(&dir.path().join("modules"))
        .server("workers", SLOTS.to_string())
        .server("poll", "\"20ms\"")
        .tables(&format!(
            "[limits]\nmemory = {LIMIT}\ntimeout = \"120s\"\n\n\
             [sql.warehouse]\ntype = \"postgres\"\nurl = \"{pg}\"\nmax_connections = 4\n\n{}",
            s3.toml_table("data", &prefix)
        ))
        .write(dir.path());
    let server = Proc::start(&["serve"], dir.path());
    let pid = server.child.id();
    let url = server.url().to_string();
    push_guest("host-hog", &url);
    push_guest("py-probe", &url);
    let http = reqwest::Client::new();

    // Warm up both slots with both tasks: compiled, instantiated once, a
    // connection to each service made. What is resident then is the idle
    // baseline, and the peak is measured from there.
    let mut warm = Vec::new();
    for language in ["rust", "python", "rust", "python"] {
        let body = hostile(language, "normal", 0, 0);
        warm.push(submit(&http, &url, body).await);
    }
    for id in &warm {
        let run = caisson_tests::finished_run(&http, &url, id).await;
        assert_eq!(run["state"], "succeeded", "warm-up: {run}");
    }
    let baseline = proc_status(pid, "VmRSS");
    // Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();

    let host = "memory limit 128 MiB exceeded (host buffers)";
    let memory = "memory limit 128 MiB exceeded";
    // (mode, size MiB, ballast MiB for Rust and for Python, what the error
    // says for Rust and for Python). Where the guest's own growth is what
    // crosses the limit (Python copies each chunk it writes), the run ends
    // with the plain memory limit; either way host buffers took their share.
    type Case<'a> = (&'a str, u64, [u64; 2], [&'a str; 2]);
    let cases: &[Case] = &[
        ("sql-text", 48, [0, 0], ["max_statement_bytes"; 2]),
        ("sql-params", 15, [80, 80], [host; 2]),
        ("sql-rows", 0, [0, 0], [memory; 2]),
        ("keys", 5, [0, 0], ["max_key_bytes"; 2]),
        ("puts", 0, [0, 0], [host, memory]),
        ("list", 0, [120, 100], [memory; 2]),
        ("log", 0, [112, 100], [host; 2]),
    ];
    let mut runs = Vec::new();
    for (mode, size, ballast, expect) in cases {
        for (i, language) in ["rust", "python"].into_iter().enumerate() {
            // Python's strings are copied once more on the way out: half.
            let size = if language == "python" && *mode == "sql-text" {
                size / 2
            } else {
                *size
            };
            let body = hostile(language, mode, size, ballast[i]);
            let id = submit(&http, &url, body).await;
            runs.push((format!("{language} {mode}"), id, Some(expect[i])));
        }
        // A normal run among the hostile ones, sharing the slots with them.
        let body = hostile("rust", "normal", 0, 0);
        runs.push((
            format!("normal after {mode}"),
            submit(&http, &url, body).await,
            None,
        ));
    }
    for (what, id, expect) in &runs {
        let run = caisson_tests::finished_run(&http, &url, id).await;
        let error = run["error"].as_str().unwrap_or_default();
        eprintln!("{what}: {} {error:.300}", run["state"]);
        match expect {
            None => assert_eq!(run["state"], "succeeded", "{what}: {run}"),
            Some(expect) => {
                assert_eq!(run["state"], "failed", "{what}: {run}");
                assert!(error.contains(expect), "{what}: {error}");
            }
        }
    }

    let peak = proc_status(pid, "VmHWM");
    let bound = SLOTS * (LIMIT + ALLOWANCE) + baseline;
    eprintln!(
        "idle baseline {} MiB, peak {} MiB, bound {} MiB (peak over baseline: {} MiB)",
        baseline >> 20,
        peak >> 20,
        bound >> 20,
        peak.saturating_sub(baseline) >> 20
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} over the bound {bound} (baseline {baseline})"
    );
    // The worker lives on and runs the next task.
    let id = submit(&http, &url, hostile("python", "normal", 0, 0)).await;
    assert_eq!(
        caisson_tests::finished_run(&http, &url, &id).await["state"],
        "succeeded"
    );
}
