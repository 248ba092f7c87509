//! The throughput figures' client, in a process of its own: the suite
//! re-executed, as worker processes are, so that it is built like the
//! rest and the server's process holds only the server.
//!
//! It submits no-op runs (`bench-probe`, `clock`) through REST, one per
//! request from 8 concurrent clients or in batches from one, and stops
//! the clock when none of them is queued or running any more. It reads
//! each client's last run by id until those have ended, then lists the
//! runs (`GET /v1/runs?state=queued` and `running`) until none is
//! unfinished; each every 2 ms or every 0.5 % of the time so far,
//! whichever is longer. Then, off the clock, it pages through the runs
//! and requires every one of them to have succeeded.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Set in the client process: its [`Load`], as JSON.
pub const CLIENT_ENV: &str = "CAISSON_BENCH_CLIENT";

/// The module the client submits.
const MODULE: &str = "bench-probe";

/// How often the client looks for unfinished runs, at least: its
/// listings are work the server and its database do as well, so they
/// are kept to what the clock's precision needs ([`POLL_SHARE`]).
const POLL: Duration = Duration::from_millis(2);

/// The client's pause between listings, at most, as a share of the time
/// so far, and so the clock's error at most: 0.5 %. A listing of the
/// queued runs reads them all, unless the database plans it for a long
/// queue (a database's statistics seldom say so during a burst); every
/// 2 ms, those listings took a quarter of PostgreSQL's CPU in its figures.
const POLL_SHARE: u32 = 200;

/// What the client process is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Load {
    /// The API's base URL.
    pub(crate) url: String,
    pub(crate) runs: usize,
    /// Runs per request (`POST /v1/runs/batch`) from one client; without
    /// it, one run per request from 8 clients.
    pub(crate) batch: Option<usize>,
}

/// What the client process measured.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Driven {
    /// From the first submission until no run was unfinished.
    pub(crate) seconds: f64,
    /// The client process's own CPU time over that stretch, µs.
    pub(crate) cpu_us: f64,
}

/// The client process's entry point: runs `load` (JSON) and prints what it
/// measured as one JSON line.
pub fn client_main(load: &str) -> Result<()> {
    let load: Load = serde_json::from_str(load).context("the client's load")?;
    let tokio = tokio::runtime::Runtime::new()?;
    let driven = tokio.block_on(run(&load))?;
    println!("{}", serde_json::to_string(&driven)?);
    Ok(())
}

/// Runs `load` in a client process and returns what it measured.
pub(crate) async fn drive(load: &Load) -> Result<Driven> {
    let load = serde_json::to_string(load)?;
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .env(CLIENT_ENV, load)
        .kill_on_drop(true)
        .output()
        .await
        .context("running the client process")?;
    ensure!(
        output.status.success(),
        "the client process failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("the client's answer: {line}"))
}

async fn run(load: &Load) -> Result<Driven> {
    let http = reqwest::Client::new();
    // Runs created from now on are this load's: the section's earlier
    // runs have all ended.
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let pid = std::process::id();
    let cpu_before = crate::proc::cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let last = match load.batch {
        Some(batch) => submit_batched(&http, &load.url, load.runs, batch).await?,
        None => submit_one_by_one(&http, &load.url, load.runs, 8).await?,
    };
    until_ended(&http, &load.url, &last, started).await?;
    until_none_unfinished(&http, &load.url, &since, started).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = crate::proc::cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let succeeded = count(&http, &load.url, &since, "succeeded").await?;
    ensure!(
        succeeded == load.runs,
        "{succeeded} of {} runs succeeded",
        load.runs
    );
    Ok(Driven {
        seconds,
        cpu_us: cpu.as_secs_f64() * 1e6,
    })
}

/// Submits `runs` runs, one per request from `clients` clients; returns
/// each client's last run.
async fn submit_one_by_one(
    http: &reqwest::Client,
    url: &str,
    runs: usize,
    clients: usize,
) -> Result<Vec<String>> {
    let mut handles = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let url = format!("{url}/v1/runs");
        let count = runs / clients + usize::from(c < runs % clients);
        handles.push(tokio::spawn(async move {
            let run = json!({"module": MODULE, "params": {"op": "clock"}});
            let mut last = None;
            for _ in 0..count {
                last = Some(run_id(&post_admitted(&http, &url, &run).await?)?);
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = Vec::with_capacity(clients);
    for handle in handles {
        last.extend(handle.await??);
    }
    Ok(last)
}

/// Submits `runs` runs in batches of `batch`; returns the last run.
async fn submit_batched(
    http: &reqwest::Client,
    url: &str,
    runs: usize,
    batch: usize,
) -> Result<Vec<String>> {
    let run = json!({"module": MODULE, "params": {"op": "clock"}});
    let mut submitted = 0;
    let mut last = Vec::new();
    while submitted < runs {
        let k = (runs - submitted).min(batch);
        let body = json!({ "runs": vec![run.clone(); k] });
        let answer = post_admitted(http, &format!("{url}/v1/runs/batch"), &body).await?;
        let ids = answer["runs"]
            .as_array()
            .context("a batch's answer has no runs")?;
        last = vec![run_id(ids.last().context("a batch's answer is empty")?)?];
        submitted += k;
    }
    Ok(last)
}

/// A submitted run's id, from its answer.
fn run_id(answer: &Value) -> Result<String> {
    answer["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("a submission's answer has no id: {answer}"))
}

/// Waits until each of `runs` ended, reading each by id, at the pace of
/// [`until_none_unfinished`]: a read by primary key, where a listing by
/// state costs the database more the longer the backlog (a listing of the
/// queued runs took about 5 ms with 2,000 queued, BENCHMARKS.md). The runs
/// are each client's last: runs are claimed in the order they were
/// submitted, so when these have ended, the others have ended or are about
/// to, and the listings that then confirm it are few.
async fn until_ended(
    http: &reqwest::Client,
    url: &str,
    runs: &[String],
    started: Instant,
) -> Result<()> {
    let deadline = Instant::now() + WAIT_AT_MOST;
    let mut waiting = runs.to_vec();
    loop {
        let mut still = Vec::with_capacity(waiting.len());
        for id in waiting {
            let run: Value = http
                .get(format!("{url}/v1/runs/{id}"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if matches!(run["state"].as_str(), Some("queued" | "running")) {
                still.push(id);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        waiting = still;
        pause(started, deadline).await?;
    }
}

/// How long a load's runs may take to end, from its last submission.
const WAIT_AT_MOST: Duration = Duration::from_secs(600);

/// Waits before a client looks at its runs again: [`POLL`], or a
/// [`POLL_SHARE`] of the time since the load `started` if that is
/// longer. An error once `deadline` has passed.
async fn pause(started: Instant, deadline: Instant) -> Result<()> {
    ensure!(Instant::now() < deadline, "the runs did not finish");
    tokio::time::sleep(POLL.max(started.elapsed() / POLL_SHARE)).await;
    Ok(())
}

/// How long a client waits before it submits again what its tenant's
/// queue quota refused.
const QUOTA_PAUSE: Duration = Duration::from_millis(10);

/// Posts `body` to `url` until it is admitted, as a client that fills its
/// tenant's queue faster than the workers drain it must: a `429` (the
/// queue's quota, `max_queued_runs`) stored nothing, batches included,
/// so the same body is sent again after a pause. Any other failure ends
/// the load. Returns the answer.
async fn post_admitted(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    loop {
        let response = http.post(url).json(body).send().await?;
        if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Ok(response.error_for_status()?.json().await?);
        }
        tokio::time::sleep(QUOTA_PAUSE).await;
    }
}

/// Waits until no run created since `since` (the load's `started`) is
/// queued or running.
async fn until_none_unfinished(
    http: &reqwest::Client,
    url: &str,
    since: &str,
    started: Instant,
) -> Result<()> {
    let deadline = Instant::now() + WAIT_AT_MOST;
    loop {
        let mut unfinished = false;
        for state in ["queued", "running"] {
            let page = list(http, url, since, state, 1, None).await?;
            unfinished |= !page["runs"].as_array().is_none_or(Vec::is_empty);
            if unfinished {
                break;
            }
        }
        if !unfinished {
            return Ok(());
        }
        pause(started, deadline).await?;
    }
}

/// How many runs created since `since` are in `state`, page by page.
async fn count(http: &reqwest::Client, url: &str, since: &str, state: &str) -> Result<usize> {
    let mut total = 0;
    let mut cursor = None;
    loop {
        let page = list(http, url, since, state, 500, cursor.as_deref()).await?;
        total += page["runs"].as_array().map_or(0, Vec::len);
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(total),
        }
    }
}

async fn list(
    http: &reqwest::Client,
    url: &str,
    since: &str,
    state: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Value> {
    let limit = limit.to_string();
    let mut query = vec![
        ("module", MODULE),
        ("since", since),
        ("state", state),
        ("limit", &limit),
    ];
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor));
    }
    Ok(http
        .get(format!("{url}/v1/runs"))
        .query(&query)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
