//! The service: trigger-to-start latency, cancel-to-stopped latency,
//! throughput through REST, and workflow (DAG) wall time, on the embedded
//! SQLite default and on PostgreSQL with worker processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use caisson_server::{Roles, ServerConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::proc::cpu_time;
use crate::report::{Dist, Plan, Report};
use crate::{client, env, guest};

/// Set in a worker process the suite starts: the path of its config file.
pub const WORKER_ENV: &str = "CAISSON_BENCH_WORKER_CONFIG";

/// Each worker process's slots: 2, unless `CAISSON_BENCH_WORKER_SLOTS`
/// asks for more (a production worker has more than 2, and how many runs
/// a worker claims at once follows its free slots).
pub(crate) fn process_slots() -> Result<usize> {
    Ok(env::positive("CAISSON_BENCH_WORKER_SLOTS")?.unwrap_or(2))
}

/// The embedded service's in-process slots in `throughput_only`: 2, the
/// default, unless `CAISSON_BENCH_SLOTS` asks for others (to see how the
/// figure scales with them).
pub(crate) fn embedded_slots() -> Result<usize> {
    Ok(env::positive("CAISSON_BENCH_SLOTS")?.unwrap_or(2))
}

/// Runs as a `caisson worker` would, until killed. The suite re-executes
/// itself for this, so workers are optimised exactly like the rest.
pub fn worker_main(config: &Path) -> Result<()> {
    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(async {
        let config = ServerConfig::from_file(config)?;
        let roles = Roles {
            api: false,
            workers: config.server.workers,
            scheduler: true,
        };
        caisson_server::serve(config, roles, std::future::pending()).await
    })
}

/// An in-process API (and maybe workers) plus worker processes.
pub(crate) struct Service {
    url: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    workers: Vec<Child>,
    /// The database URL, for finding its PostgreSQL backends.
    database: String,
}

impl Service {
    /// Starts the API with `in_process` worker slots, then `processes`
    /// worker processes (2 slots each) on the same config.
    pub(crate) async fn start(
        dir: &Path,
        database: &str,
        in_process: usize,
        processes: usize,
    ) -> Result<Service> {
        Self::start_with(dir, database, in_process, processes, "").await
    }

    /// [`Service::start`] with `tables` (`[objects.NAME]` and such)
    /// appended to the configuration.
    pub(crate) async fn start_with(
        dir: &Path,
        database: &str,
        in_process: usize,
        processes: usize,
        tables: &str,
    ) -> Result<Service> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let path = dir.join("caisson.toml");
        let process_slots = process_slots()?;
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\n\
                 modules = {{ type = \"local\", root = \"{dir}/modules\" }}\nworkers = {process_slots}\n\n\
                 [engine]\ncache_dir = \"{dir}/cache\"\nscratch_dir = \"{dir}/scratch\"\n{tables}",
                dir = dir.display()
            ),
        )?;
        let mut config = ServerConfig::from_file(&path)?;
        let roles = Roles {
            api: true,
            workers: in_process,
            scheduler: true,
        };
        config.server.workers = in_process;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(caisson_server::serve(config, roles, async move {
            let _ = stopped.await;
        }));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.get(format!("{url}/healthz")).send().await.is_err() {
            ensure!(Instant::now() < deadline, "the API did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut workers = Vec::new();
        for _ in 0..processes {
            workers.push(
                Command::new(std::env::current_exe()?)
                    .env(WORKER_ENV, &path)
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting a worker process")?,
            );
        }
        let service = Service {
            url,
            http,
            stop: Some(stop),
            task: Some(task),
            workers,
            database: database.to_owned(),
        };
        service.push("bench-probe").await?;
        Ok(service)
    }

    pub(crate) async fn push(&self, name: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/modules?name={name}&version=1", self.url))
            .header("content-type", "application/wasm")
            .body(guest(name)?)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "upload {name}: {}",
            response.text().await?
        );
        Ok(())
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(status.is_success(), "POST {path}: {status} {body}");
        Ok(body)
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        let response = self.http.get(format!("{}{path}", self.url)).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok(body)
    }

    async fn submit(&self, params: Value) -> Result<String> {
        let run = self
            .post(
                "/v1/runs",
                &json!({"module": "bench-probe", "params": params}),
            )
            .await?;
        Ok(run["id"].as_str().context("no run id")?.to_string())
    }

    /// Waits for a run to be final, its output on success: one
    /// `GET /v1/runs/{id}?wait=30s`, which answers when the run ends
    /// (again only if a run takes longer than that).
    async fn wait(&self, id: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let run = self.get(&format!("/v1/runs/{id}?wait=30s")).await?;
            match run["state"].as_str() {
                Some("succeeded") => return Ok(run["output"].as_str().unwrap_or("").to_string()),
                Some("failed" | "cancelled" | "timed_out") => bail!("run {id} ended: {run}"),
                _ => {}
            }
            ensure!(Instant::now() < deadline, "run {id} did not finish");
        }
    }

    pub(crate) async fn stop(mut self) -> Result<()> {
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

/// A database of its own on the benchmark PostgreSQL.
pub(crate) async fn fresh_postgres(admin_url: &str, tag: &str) -> Result<String> {
    use sqlx::Connection;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let name = format!("caisson_bench_{tag}_{nanos}");
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .context("a PostgreSQL URL ends with /database")?;
    Ok(format!("{base}/{name}"))
}

/// Runs served before a PostgreSQL figure, off the clock.
const WARM_UP_RUNS: usize = 500;

/// Makes a fresh database (`url`, which `service` uses) look like one in
/// service: it serves [`WARM_UP_RUNS`] runs, then is analysed, as
/// autovacuum analyses a table that has grown. A new database's planner
/// statistics say its tables are empty, and until autovacuum's next pass
/// (up to a minute, longer than a figure takes) the claim is planned for
/// that: it read every queued run, by the queue's time index, to find the
/// next one (BENCHMARKS.md). Whether that pass came during a figure made
/// runs of one binary differ by 3×.
///
/// Given `CAISSON_BENCH_PG_SQL`, the SQL in that file then runs on it
/// (after the warm-up, before `ANALYZE`), for experiments such as
/// `bench/experiments/pg-no-tenant-row.sql`.
async fn in_service(service: &Service, url: &str) -> Result<()> {
    use sqlx::Connection;
    throughput(service, WARM_UP_RUNS, None).await?;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // An experiment's SQL (`CAISSON_BENCH_PG_SQL`), applied to the
    // migrated database before its figures, to measure what a change to
    // the schema's functions or triggers would buy without a build.
    if let Some(file) = std::env::var_os("CAISSON_BENCH_PG_SQL") {
        let sql = std::fs::read_to_string(&file)
            .with_context(|| format!("CAISSON_BENCH_PG_SQL: reading {}", file.display()))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CAISSON_BENCH_PG_SQL: running {}", file.display()))?;
    }
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    Ok(())
}

/// Drops a database [`fresh_postgres`] made, once nothing uses it, so
/// that repeated runs leave nothing for autovacuum to visit.
async fn drop_postgres(admin_url: &str, url: &str) -> Result<()> {
    use sqlx::Connection;
    let name = url.rsplit_once('/').map_or(url, |(_, name)| name);
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}

pub(crate) fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/caisson.db?mode=rwc", dir.display())
}

/// Sequential runs, each timed from just before its `POST /v1/runs` to the
/// guest's first instruction (its wall clock, returned as its output).
async fn trigger_to_start(service: &Service, samples: usize, name: &str) -> Result<Dist> {
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples + 2 {
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let id = service.submit(json!({"op": "clock"})).await?;
        let started: u128 = service
            .wait(&id)
            .await?
            .trim()
            .parse()
            .context("the clock task's output")?;
        ensure!(
            started >= sent,
            "the guest started before the request was sent"
        );
        if i >= 2 {
            latencies.push(Duration::from_nanos((started - sent) as u64));
        }
    }
    Ok(Dist::new(name, latencies))
}

/// Sequential runs of a sleeping task, each cancelled once it is running:
/// from just before its `POST /v1/runs/{id}/cancel` until a `GET`, repeated
/// every 2 ms, sees it cancelled (so the figure includes up to one poll,
/// but not the poll's 500 ms recheck a `?wait=` has on PostgreSQL). The
/// worker records the state only once the guest has stopped.
async fn cancel_to_stopped(service: &Service, samples: usize, name: &str) -> Result<Dist> {
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let id = service
            .submit(json!({"op": "sleep", "ms": "600000"}))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while service.get(&format!("/v1/runs/{id}")).await?["state"] != "running" {
            ensure!(Instant::now() < deadline, "run {id} never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Into the guest's sleep, past its instantiation.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        service
            .post(&format!("/v1/runs/{id}/cancel"), &json!({}))
            .await?;
        let run = loop {
            let run = service.get(&format!("/v1/runs/{id}")).await?;
            if run["state"] != "running" {
                break run;
            }
            ensure!(Instant::now() < deadline, "run {id} was not stopped");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(sent.elapsed());
        ensure!(run["state"] == "cancelled", "run {id} ended: {run}");
    }
    Ok(Dist::new(name, latencies))
}

/// The PostgreSQL backends connected to the service's database, by pid.
async fn postgres_backends(database: &str) -> Vec<u32> {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(database).await else {
        return Vec::new();
    };
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let _ = conn.close().await;
    pids.into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .collect()
}

/// CPU time per process over a stretch of work, so that each process's
/// cost per run shows even when they all share the same cores.
struct CpuMeter {
    /// A name per process, and its CPU time when the meter started.
    before: Vec<(String, u32, Duration)>,
    database: Option<String>,
}

impl CpuMeter {
    async fn start(service: &Service) -> CpuMeter {
        let mut before = vec![(
            "bench process (API, any in-process slots)".to_string(),
            std::process::id(),
            cpu_time(std::process::id()).unwrap_or_default(),
        )];
        for (i, worker) in service.workers.iter().enumerate() {
            let pid = worker.id();
            before.push((
                format!("worker process {}", i + 1),
                pid,
                cpu_time(pid).unwrap_or_default(),
            ));
        }
        let database = service
            .database
            .starts_with("postgres")
            .then(|| service.database.clone());
        if let Some(database) = &database {
            for pid in postgres_backends(database).await {
                before.push((
                    "PostgreSQL backends".into(),
                    pid,
                    cpu_time(pid).unwrap_or_default(),
                ));
            }
        }
        CpuMeter { before, database }
    }

    /// Microseconds of CPU per run for each process (PostgreSQL's backends
    /// summed), in the order they were named. A backend that connected
    /// meanwhile counts from zero; one that closed meanwhile is missed.
    async fn per_run(self, runs: usize) -> Vec<(String, f64)> {
        let mut seen: Vec<(String, u32, Duration)> = self.before;
        if let Some(database) = &self.database {
            for pid in postgres_backends(database).await {
                if !seen.iter().any(|(_, p, _)| *p == pid) {
                    seen.push(("PostgreSQL backends".into(), pid, Duration::ZERO));
                }
            }
        }
        let mut totals: Vec<(String, Duration)> = Vec::new();
        for (name, pid, before) in seen {
            let used = cpu_time(pid).map_or(Duration::ZERO, |now| now.saturating_sub(before));
            match totals.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += used,
                None => totals.push((name, used)),
            }
        }
        totals
            .into_iter()
            .map(|(name, used)| (name, used.as_secs_f64() * 1e6 / runs.max(1) as f64))
            .collect()
    }
}

/// [`throughput`], and the CPU each process spent per run meanwhile,
/// reported under `label`. Returns the rate and the total CPU per run.
async fn throughput_with_cpu(
    service: &Service,
    n: usize,
    batch: Option<usize>,
    label: &str,
    report: &mut Report,
) -> Result<(f64, f64)> {
    let meter = CpuMeter::start(service).await;
    let (rate, client_us) = throughput(service, n, batch).await?;
    let mut total = 0.0;
    let mut processes = meter.per_run(n).await;
    let client = match batch {
        Some(_) => "client process (1 client)",
        None => "client process (8 clients)",
    };
    processes.push((client.into(), client_us / n as f64));
    for (process, micros) in processes {
        total += micros;
        report.value(&format!("CPU per run, {label}: {process}, µs"), micros, n);
    }
    report.value(
        &format!("CPU per run, {label}: all processes, µs"),
        total,
        n,
    );
    Ok((rate, total))
}

/// `n` no-op runs submitted by the client process ([`crate::client`]),
/// one per request from 8 concurrent clients, or in batches of `batch`
/// from one; runs per second from the first submission until none is
/// unfinished, and the client process's CPU time.
async fn throughput(service: &Service, n: usize, batch: Option<usize>) -> Result<(f64, f64)> {
    let driven = client::drive(&client::Load {
        url: service.url.clone(),
        runs: n,
        batch,
    })
    .await?;
    Ok((n as f64 / driven.seconds, driven.cpu_us))
}

/// Wall times of `samples` runs, one after another, of a workflow of
/// `steps` no-op steps: each from its `POST /v1/workflows/{name}/runs`
/// until `GET /v1/workflow-runs/{id}?wait=30s` answers that it ended.
pub(crate) async fn workflow(
    service: &Service,
    name: &str,
    steps: Vec<Value>,
    samples: usize,
) -> Result<Vec<Duration>> {
    service
        .post("/v1/workflows", &json!({"name": name, "steps": steps}))
        .await?;
    let mut walls = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let run = service
            .post(&format!("/v1/workflows/{name}/runs"), &json!({}))
            .await?;
        let id = run["id"].as_str().context("no workflow run id")?;
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let run = service
                .get(&format!("/v1/workflow-runs/{id}?wait=30s"))
                .await?;
            match run["state"].as_str() {
                Some("succeeded") => break,
                Some("running") => {}
                _ => bail!("workflow {name} ended: {}", run["state"]),
            }
            ensure!(Instant::now() < deadline, "workflow {name} did not finish");
        }
        walls.push(started.elapsed());
    }
    Ok(walls)
}

pub(crate) fn step(name: String, depends_on: Vec<String>) -> Value {
    json!({
        "name": name,
        "depends_on": depends_on,
        "run": {"module": "bench-probe", "params": {"op": "clock"}},
    })
}

/// The embedded default (one process, SQLite, two worker slots) in a
/// fresh directory `name`, and its trigger to start, measured first: the
/// baseline a chain's hop is held to. Returns the service and the
/// distribution's index in `report`.
async fn embedded_with_trigger(
    plan: &Plan,
    dir: &Path,
    name: &str,
    report: &mut Report,
) -> Result<(Service, usize)> {
    let sqlite_dir = fresh_dir(dir, name)?;
    let service = Service::start(&sqlite_dir, &sqlite_url(&sqlite_dir), 2, 0).await?;
    let trigger = report.dist(
        trigger_to_start(
            &service,
            plan.trigger_samples,
            "trigger to start, embedded SQLite (API + 2 in-process slots)",
        )
        .await?,
    );
    Ok((service, trigger))
}

/// 2-4. Trigger to start, throughput and DAGs.
pub async fn run(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    println!("service:");
    let (service, sqlite_trigger) = embedded_with_trigger(plan, dir, "sqlite", report).await?;
    report.dist(
        cancel_to_stopped(
            &service,
            plan.trigger_samples,
            "cancel to stopped, embedded SQLite (goal: p50 ≤ 50 ms)",
        )
        .await?,
    );
    let sqlite_rate = embedded_throughput(plan, &service, report).await?;

    workflows(plan, &service, report, sqlite_trigger, Some(sqlite_rate)).await?;
    service.stop().await?;

    let Some(pg) = std::env::var("CAISSON_TEST_POSTGRES_URL").ok() else {
        report.notes.push(
            "PostgreSQL not configured (CAISSON_TEST_POSTGRES_URL): its figures were skipped"
                .into(),
        );
        return Ok(());
    };
    postgres(plan, dir, report, Some(sqlite_trigger), &pg).await
}

/// PostgreSQL's throughput figures alone (`CAISSON_BENCH_ONLY=pg-throughput`),
/// for profiling them: 1, then 2, worker processes at
/// `CAISSON_BENCH_THROUGHPUT_RUNS` runs each, without the latency rows.
pub async fn postgres_throughput_only(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    println!("PostgreSQL throughput:");
    let pg = std::env::var("CAISSON_TEST_POSTGRES_URL")
        .context("pg-throughput needs CAISSON_TEST_POSTGRES_URL")?;
    postgres(plan, dir, report, None, &pg).await
}

/// The embedded default's throughput, one run per request from 8
/// clients and in batches of 100; returns the first.
async fn embedded_throughput(plan: &Plan, service: &Service, report: &mut Report) -> Result<f64> {
    let (rate, _) = throughput_with_cpu(
        service,
        plan.throughput_runs,
        None,
        "embedded SQLite",
        report,
    )
    .await?;
    report.value(
        "throughput, embedded SQLite, runs/s",
        rate,
        plan.throughput_runs,
    );
    let (batched_rate, _) = throughput_with_cpu(
        service,
        plan.throughput_runs,
        Some(100),
        "embedded SQLite, batches of 100",
        report,
    )
    .await?;
    report.value(
        "throughput, embedded SQLite, batches of 100 from one client, runs/s",
        batched_rate,
        plan.throughput_runs,
    );
    report.plain_ratio(
        "throughput, embedded SQLite, batched / one run per request",
        batched_rate / rate,
        "runs/s in batches of 100 (POST /v1/runs/batch)",
        "runs/s one per request (8 clients)",
    );
    Ok(rate)
}

/// The embedded default's throughput figures alone
/// (`CAISSON_BENCH_ONLY=throughput`), for profiling them: each at
/// `CAISSON_BENCH_THROUGHPUT_RUNS` runs (default: the plan's).
pub async fn throughput_only(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    println!("throughput:");
    let sqlite_dir = fresh_dir(dir, "throughput")?;
    let slots = embedded_slots()?;
    let service = Service::start(&sqlite_dir, &sqlite_url(&sqlite_dir), slots, 0).await?;
    embedded_throughput(plan, &service, report).await?;
    service.stop().await
}

/// The DAG figures alone (`CAISSON_BENCH_ONLY=dag`), for profiling a
/// workflow's hop: the embedded default, its trigger to start (the chain's
/// baseline), then the two workflows. The fan-out's baseline needs the
/// throughput section, so it is left out here.
pub async fn dag(plan: &Plan, dir: &Path, report: &mut Report) -> Result<()> {
    println!("dag:");
    let (service, sqlite_trigger) = embedded_with_trigger(plan, dir, "dag", report).await?;
    workflows(plan, &service, report, sqlite_trigger, None).await?;
    service.stop().await
}

/// The 1,000-step chain and fan-out/fan-in on `service`, against a chain
/// of `trigger` (a distribution's index in `report`) and, given the
/// throughput, the same runs submitted at once.
async fn workflows(
    plan: &Plan,
    service: &Service,
    report: &mut Report,
    trigger: usize,
    sqlite_rate: Option<f64>,
) -> Result<()> {
    let n = plan.dag_steps;
    let linear: Vec<Value> = (0..n)
        .map(|i| {
            let deps = if i == 0 {
                vec![]
            } else {
                vec![format!("s{}", i - 1)]
            };
            step(format!("s{i}"), deps)
        })
        .collect();
    let samples = plan.dag_samples;
    let linear_walls = workflow(service, "linear", linear, samples).await?;
    let middle: Vec<String> = (1..n - 1).map(|i| format!("s{i}")).collect();
    let mut fan = vec![step("s0".into(), vec![])];
    fan.extend(middle.iter().map(|m| step(m.clone(), vec!["s0".into()])));
    fan.push(step(format!("s{}", n - 1), middle.clone()));
    let fan_walls = workflow(service, "fan", fan, samples).await?;
    let linear = report.dist(Dist::new(
        format!("workflow, {n}-step linear chain, wall time"),
        linear_walls,
    ));
    let fan = report.dist(Dist::new(
        format!("workflow, {n}-step fan-out/fan-in, wall time"),
        fan_walls,
    ));
    // Baselines from this run: a chain can go no faster than one trigger
    // after another, a fan-out no faster than the same runs submitted at once.
    let chain_floor = report.dists[trigger].p50() * n as u32;
    let chain_floor = report.dist(Dist::new(
        format!("{n} × trigger-to-start p50, SQLite (chain baseline)"),
        vec![chain_floor],
    ));
    report.ratio(
        "linear workflow / chain baseline",
        linear,
        50.0,
        chain_floor,
        50.0,
    );
    if let Some(rate) = sqlite_rate {
        let fan_floor = report.dist(Dist::new(
            format!("{n} runs at the SQLite throughput (fan-out baseline)"),
            vec![Duration::from_secs_f64(n as f64 / rate)],
        ));
        report.ratio(
            "fan-out workflow / fan-out baseline",
            fan,
            50.0,
            fan_floor,
            50.0,
        );
    }
    Ok(())
}

/// Many machines' shape on PostgreSQL at `pg`: trigger to start, cancel
/// and throughput with an API process and 1, then 2, worker processes.
/// Without `sqlite_trigger` (the embedded trigger's index in `report`, to
/// compare with), throughput only.
async fn postgres(
    plan: &Plan,
    dir: &Path,
    report: &mut Report,
    sqlite_trigger: Option<usize>,
    pg: &str,
) -> Result<()> {
    // Many machines' shape: an API process and worker processes sharing
    // PostgreSQL (here on one machine, so they also share its 2 cores).
    let mut rates = Vec::new();
    let mut cpus = Vec::new();
    for processes in [1, 2] {
        let pg_dir = fresh_dir(dir, &format!("pg{processes}"))?;
        let url = fresh_postgres(pg, &format!("w{processes}")).await?;
        let service = Service::start(&pg_dir, &url, 0, processes).await?;
        in_service(&service, &url).await?;
        if let (1, Some(sqlite_trigger)) = (processes, sqlite_trigger) {
            let pg_trigger = report.dist(
                trigger_to_start(
                    &service,
                    plan.trigger_samples,
                    "trigger to start, PostgreSQL (API process + 1 worker process)",
                )
                .await?,
            );
            report.ratio(
                "trigger to start, PostgreSQL / SQLite, p50",
                pg_trigger,
                50.0,
                sqlite_trigger,
                50.0,
            );
            report.dist(
                cancel_to_stopped(
                    &service,
                    plan.trigger_samples,
                    "cancel to stopped, PostgreSQL (API process + 1 worker process; goal: p50 ≤ 200 ms)",
                )
                .await?,
            );
        }
        let (rate, cpu) = throughput_with_cpu(
            &service,
            plan.throughput_runs,
            None,
            &format!("PostgreSQL, {processes} worker process(es)"),
            report,
        )
        .await?;
        cpus.push(cpu);
        report.value(
            &format!("throughput, PostgreSQL, {processes} worker process(es), runs/s"),
            rate,
            plan.throughput_runs,
        );
        rates.push(rate);
        // The same workers with submissions that cost the API and the
        // database one request and one insert a hundred runs: what the
        // scheduling core itself (claims, runs, finishes) sustains.
        let (batched, _) = throughput_with_cpu(
            &service,
            plan.throughput_runs,
            Some(100),
            &format!("PostgreSQL, {processes} worker process(es), batches of 100"),
            report,
        )
        .await?;
        report.value(
            &format!(
                "throughput, PostgreSQL, {processes} worker process(es), batches of 100 from one client, runs/s"
            ),
            batched,
            plan.throughput_runs,
        );
        report.plain_ratio(
            &format!("throughput, PostgreSQL, {processes} worker process(es), batched / one run per request"),
            batched / rate,
            "runs/s in batches of 100 (POST /v1/runs/batch)",
            "runs/s one per request (8 clients)",
        );
        service.stop().await?;
        drop_postgres(pg, &url).await?;
    }
    report.plain_ratio(
        "throughput, 2 worker processes / 1 (PostgreSQL)",
        rates[1] / rates[0],
        "runs/s with 2 worker processes",
        "runs/s with 1 worker process",
    );
    report.plain_ratio(
        "CPU per run, all processes, 2 worker processes / 1 (PostgreSQL)",
        cpus[1] / cpus[0],
        "CPU µs per run with 2 worker processes",
        "CPU µs per run with 1 worker process",
    );
    Ok(())
}

fn fresh_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::create_dir_all(&path)?;
    Ok(path)
}
