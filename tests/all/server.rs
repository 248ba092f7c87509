//! `caisson serve` and `caisson worker` as real processes, driven through
//! the CLI and the REST API.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use caisson_tests::{ServerToml, caisson_bin, guest_path, postgres_url, s3_env, unique_prefix};

/// A `caisson` process, killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    url: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `caisson ARGS` and waits for its start-up line.
    // The child is waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub(crate) fn start(args: &[&str], dir: &Path) -> Proc {
        let mut child = Command::new(caisson_bin())
            .args(args)
            .current_dir(dir)
            .env("CAISSON_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning caisson");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("caisson did not start in time");
            if let Some(url) = line.strip_prefix("caisson: listening on ") {
                return Proc {
                    child,
                    url: Some(url.trim().to_string()),
                };
            }
            if let Some(rest) = line.strip_prefix("caisson: worker started") {
                // A worker with `--metrics-listen` says where `/metrics` is.
                let url = rest
                    .strip_prefix("; metrics at ")
                    .and_then(|m| m.trim().strip_suffix("/metrics"))
                    .map(str::to_string);
                return Proc { child, url };
            }
        }
    }

    pub(crate) fn url(&self) -> &str {
        self.url.as_deref().unwrap()
    }

    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

pub(crate) fn cli(args: &[&str], server: &str) -> Output {
    Command::new(caisson_bin())
        .args(args)
        .args(["--server", server])
        .output()
        .expect("spawning caisson")
}

/// Uploads the guest component `name` through the CLI, and fails the test
/// if the server refuses it.
pub(crate) fn push_guest(name: &str, server: &str) -> Output {
    let out = cli(
        &["module", "push", guest_path(name).to_str().unwrap()],
        server,
    );
    assert!(out.status.success(), "push {name}: {}", text(&out.stderr));
    out
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a `caisson.toml` for an embedded `serve` in `dir` (SQLite and
/// local modules there, the shared compile cache), with `server_extra`
/// lines added to its `[server]` table.
pub(crate) fn write_embedded_config(dir: &Path, server_extra: &str) {
    ServerToml::sqlite_in(dir)
        .local_modules(&dir.join("modules"))
        .server("poll", "\"50ms\"")
        .server_lines(server_extra)
        .write(dir);
}

#[test]
fn embedded_serve_runs_what_the_cli_submits() {
    let dir = tempfile::tempdir().unwrap();
    write_embedded_config(dir.path(), "");
    let server = Proc::start(&["serve"], dir.path());
    let url = server.url().to_string();

    let out = cli(
        &["module", "push", guest_path("hello").to_str().unwrap()],
        &url,
    );
    assert!(out.status.success(), "push failed: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("hello sha-"),
        "{}",
        text(&out.stdout)
    );

    let out = cli(
        &["run", "submit", "hello", "--input", "e2e", "--wait"],
        &url,
    );
    assert!(out.status.success(), "submit failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "hello, e2e");

    let out = cli(&["run", "list", "--json"], &url);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = page["runs"][0]["id"].as_str().unwrap().to_string();
    let out = cli(&["run", "logs", &id], &url);
    assert!(
        text(&out.stdout).contains("saying hello to e2e"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&["run", "logs", "-f", &id], &url);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("hello on stdout"),
        "{}",
        text(&out.stdout)
    );

    // Workflows and schedules from the CLI.
    let workflow = dir.path().join("wf.json");
    std::fs::write(
        &workflow,
        json!({"name": "pair", "steps": [
            {"name": "first", "run": {"module": "hello", "input": "wf"}},
            {"name": "second", "depends_on": ["first"], "run": {"module": "hello"}}
        ]})
        .to_string(),
    )
    .unwrap();
    let out = cli(&["workflow", "create", workflow.to_str().unwrap()], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&["workflow", "run", "pair", "--wait", "--json"], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "succeeded", "{run}");
    // Cancelling a workflow run that is over shows it as it is.
    let out = cli(&["workflow", "cancel", run["id"].as_str().unwrap()], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": succeeded"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(
        &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "0 2 * * *",
            "--module",
            "hello",
        ],
        &url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&["schedule", "pause", "nightly", "--json"], &url);
    let paused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paused[0]["paused"], true, "{paused}");
    let out = cli(&["schedule", "list"], &url);
    assert!(
        text(&out.stdout).contains("nightly"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&["schedule", "delete", "nightly"], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A failing run: --wait exits non-zero with the reason.
    cli(
        &["module", "push", guest_path("trap").to_str().unwrap()],
        &url,
    );
    let out = cli(&["run", "submit", "trap", "--wait"], &url);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("task trapped"),
        "{}",
        text(&out.stderr)
    );

    // SIGTERM: a graceful stop.
    server.signal(libc::SIGTERM);
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "serve did not exit cleanly on SIGTERM: {status:?}"
    );
}

/// A database of its own on the test PostgreSQL.
pub(crate) async fn fresh_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("caisson_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// The state of run `id`, through the API at `url`.
async fn run_state(http: &reqwest::Client, url: &str, id: &str) -> Value {
    http.get(format!("{url}/v1/runs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls run `id` until `done` holds of it, for up to a minute.
async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = run_state(http, url, id).await;
        if done(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} stuck: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An API process and a separate worker process on PostgreSQL, with a
/// heartbeat of an hour: the worker can only learn of the cancel through
/// the database's `NOTIFY`. The run ends cancelled, and the worker's one
/// slot then runs the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_a_worker_process_through_postgres_notify() {
    let Some(pg) = postgres_url() else { return };
    let database = fresh_database(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    ServerToml::new(&database)
        .local_modules(&dir.path().join("modules"))
        .server("workers", "1")
        .server("poll", "\"20ms\"")
        .server("heartbeat", "\"1h\"")
        .server("lease", "\"2h\"")
        .tables("[limits]\ntimeout = \"10m\"")
        .write(dir.path());
    let api = Proc::start(&["serve", "--no-worker"], dir.path());
    let url = api.url().to_string();
    let _worker = Proc::start(&["worker"], dir.path());
    push_guest("infinite-loop", &url);
    push_guest("hello", &url);

    let http = reqwest::Client::new();
    let submit = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let run: Value = http
                .post(format!("{url}/v1/runs"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            run["id"].as_str().unwrap().to_string()
        }
    };
    let id = submit(json!({"module": "infinite-loop"})).await;
    wait_for(&http, &url, &id, |run| run["state"] == "running").await;
    let response = http
        .post(format!("{url}/v1/runs/{id}/cancel"))
        .header("x-caisson-client", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let done = wait_for(&http, &url, &id, |run| run["state"] != "running").await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let next = submit(json!({"module": "hello", "input": "again"})).await;
    let next = wait_for(&http, &url, &next, |run| {
        !matches!(run["state"].as_str(), Some("queued" | "running"))
    })
    .await;
    assert_eq!(next["state"], "succeeded", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_postgres_survive_a_sigkill_without_losing_or_repeating_runs() {
    let (Some(pg), Some(s3)) = (postgres_url(), s3_env()) else {
        return;
    };
    let database = fresh_database(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("modules");
    // Shared state lives in PostgreSQL and S3 only, as across machines.
    ServerToml::new(&database)
        .server(
            "modules",
            format!(
                "{{ type = \"s3\", bucket = \"{bucket}\", prefix = \"{prefix}\", endpoint = \"{endpoint}\", region = \"{region}\", access_key_id = \"{key}\", secret_access_key = \"{secret}\", path_style = true, allow_http = true }}",
                bucket = s3.bucket,
                endpoint = s3.endpoint,
                region = s3.region,
                key = s3.access_key_id,
                secret = s3.secret_access_key,
            ),
        )
        .server("workers", "2")
        .server("poll", "\"20ms\"")
        .server("lease", "\"2s\"")
        .server("heartbeat", "\"300ms\"")
        .server("tick", "\"200ms\"")
        .write(dir.path());
    let api = Proc::start(&["serve", "--no-worker"], dir.path());
    let url = api.url().to_string();
    // The victim starts alone, so the long runs it claims are known to be
    // its own; the survivor joins once the victim holds them.
    let victim = Proc::start(&["worker"], dir.path());

    let http = reqwest::Client::new();
    for module in ["busy", "hello"] {
        let bytes = std::fs::read(guest_path(module)).unwrap();
        let response = http
            .post(format!("{url}/v1/modules?name={module}"))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&database)
        .await
        .unwrap();
    // Long runs first, so the victim is busy when it is killed.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let run: Value = http
            .post(format!("{url}/v1/runs"))
            .json(&json!({"module": "busy", "params": {"ms": "6000"}, "priority": 10}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    let victim_id: String = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held: Option<String> =
                sqlx::query_scalar("SELECT worker_id FROM runs WHERE state = 'running' LIMIT 1")
                    .fetch_optional(&db)
                    .await
                    .unwrap()
                    .flatten();
            if let Some(id) = held {
                break id;
            }
            assert!(Instant::now() < deadline, "the victim claimed no long run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let survivor = Proc::start(&["worker"], dir.path());
    // Then 1,000 short runs, from 8 concurrent clients; the victim is killed
    // while they arrive, and while it still holds a long run (claimed before
    // the submissions began, lasting 6 s).
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE state = 'running' AND worker_id = $1",
        )
        .bind(&victim_id)
        .fetch_one(&db)
        .await
        .unwrap();
        victim.signal(libc::SIGKILL);
        held
    };
    let submit = futures::future::join_all((0..8).map(|client| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..125 {
                let run: Value = http
                    .post(format!("{url}/v1/runs"))
                    .json(&json!({"module": "hello", "input": format!("{client}-{i}")}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                ids.push(run["id"].as_str().unwrap().to_string());
            }
            ids
        }
    }));
    let (submitted, held): (Vec<Vec<String>>, i64) = tokio::join!(submit, kill);
    ids.extend(submitted.into_iter().flatten());
    assert_eq!(ids.len(), 1004);
    assert!(
        held >= 1,
        "the victim finished its long runs before it could be killed"
    );

    // Every run finishes, within the lease expiry plus the work.
    caisson_tests::wait_until_idle(&db, Duration::from_secs(300)).await;
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM runs GROUP BY state")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        states,
        vec![("succeeded".to_string(), 1004)],
        "runs lost or failed"
    );
    // Exactly one successful attempt per run: no run completed twice.
    let doubles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT run_id FROM run_attempts WHERE state = 'succeeded' GROUP BY run_id HAVING count(*) <> 1) d",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(doubles, 0, "runs with other than one successful attempt");
    let successes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run_attempts WHERE state = 'succeeded'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(successes, 1004);
    // The killed worker's runs were re-leased: their first attempt is lost.
    let lost: i64 = sqlx::query_scalar("SELECT count(*) FROM run_attempts WHERE state = 'lost'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(
        lost >= 1,
        "the killed worker held no run, so the test proved nothing"
    );
    // Each attempt lost with the killed worker was re-leased only after its
    // lease (2s) expired, and completed by another worker. Only the victim's
    // losses are counted: on a loaded machine the survivor may also miss a
    // heartbeat and lose a lease of its own, which it may then win back; the
    // checks above already prove that no such run was lost or repeated.
    let re_leased: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT l.run_id) FROM run_attempts l JOIN run_attempts s \
         ON s.run_id = l.run_id AND s.attempt > l.attempt AND s.state = 'succeeded' \
         WHERE l.state = 'lost' AND l.worker_id = $1 AND s.worker_id <> l.worker_id \
         AND s.started_at >= l.started_at + 2000",
    )
    .bind(&victim_id)
    .fetch_one(&db)
    .await
    .unwrap();
    let lost_runs: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT run_id) FROM run_attempts WHERE state = 'lost' AND worker_id = $1",
    )
    .bind(&victim_id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(lost_runs >= 1, "the killed worker lost no attempt");
    assert_eq!(
        re_leased, lost_runs,
        "the killed worker's runs were not re-leased after expiry to another worker"
    );
    eprintln!(
        "1004 runs, 1 worker killed, {lost} attempts lost and re-run, 0 lost runs, 0 duplicates"
    );
    drop((survivor, api));
    db.close().await;
}

/// A worker process on PostgreSQL hears about new runs from the database
/// (LISTEN/NOTIFY) instead of waiting for its next poll: with a poll far
/// longer than the wait below, the run could not finish in time otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn a_remote_worker_is_woken_by_postgres_not_by_its_poll() {
    let Some(admin) = postgres_url() else { return };
    let database = fresh_database(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    ServerToml::new(&database)
        .local_modules(&dir.path().join("modules"))
        .server("poll", "\"10m\"")
        .write(dir.path());
    let api = Proc::start(&["serve", "--no-worker"], dir.path());
    let url = api.url().to_string();
    let worker = Proc::start(&["worker", "--metrics-listen", "127.0.0.1:0"], dir.path());
    let out = cli(
        &["module", "push", guest_path("hello").to_str().unwrap()],
        &url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Let the worker's first claim find nothing and go idle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let submitted = Instant::now();
    let url2 = url.clone();
    let waited = tokio::task::spawn_blocking(move || {
        cli(
            &["run", "submit", "hello", "--input", "ping", "--wait"],
            &url2,
        )
    });
    let out = tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("the idle worker was not woken: it waited for its 10-minute poll")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "hello, ping");
    println!("woken and finished in {:?}", submitted.elapsed());

    // The worker process serves no API, but its own `/metrics`: the
    // attempt it ran is counted there, not in the API process's.
    // (The worker counts the attempt just after the database says it ended.)
    let counted = "caisson_attempts_finished_total{tenant=\"default\",module=\"hello\",state=\"succeeded\"} 1";
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = reqwest::get(format!("{}/metrics", worker.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(counted), "{metrics}");
    assert!(
        metrics.contains("caisson_worker_slots{worker="),
        "{metrics}"
    );
}

/// `caisson run submit --batch FILE`: a file with a bad line is refused
/// before anything is queued; 1,001 lines go in two requests and print one
/// id per line, in order, and every run runs with its own input.
#[test]
fn run_submit_batch_queues_every_line_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    write_embedded_config(dir.path(), "");
    let server = Proc::start(&["serve"], dir.path());
    let url = server.url().to_string();
    push_guest("hello", &url);

    let file = dir.path().join("runs.jsonl");
    std::fs::write(
        &file,
        "{\"module\": \"hello\"}\n\n{\"module\": \"hello\", \"nope\": 1}\n",
    )
    .unwrap();
    let out = cli(&["run", "submit", "--batch", file.to_str().unwrap()], &url);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("line 3"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["run", "list", "--json"], &url);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["runs"], json!([]), "{page}");

    let lines: Vec<String> = (0..1001)
        .map(|i| json!({"module": "hello", "input": format!("n{i}")}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = cli(&["run", "submit", "--batch", file.to_str().unwrap()], &url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ids: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(ids.len(), 1001);
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 1001);
    // The first, the last of the first request, the first of the second
    // and the last: each ran with its own line's input.
    for i in [0, 500, 999, 1000] {
        let out = cli(&["run", "get", &ids[i], "--json"], &url);
        let mut run: Value = serde_json::from_slice(&out.stdout).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while run["state"] != "succeeded" && Instant::now() < deadline {
            assert!(
                matches!(run["state"].as_str(), Some("queued" | "running")),
                "{run}"
            );
            std::thread::sleep(Duration::from_millis(200));
            let out = cli(&["run", "get", &ids[i], "--json"], &url);
            run = serde_json::from_slice(&out.stdout).unwrap();
        }
        assert_eq!(run["output"], format!("hello, n{i}"), "{run}");
    }
}

/// The embedded server killed with SIGKILL while 8 clients submit 5,000
/// runs, then started again on the same directory: every submission it
/// answered with a 2xx is there, under the id it answered with (none
/// lost), no idempotency key has two runs (none doubled), and every run,
/// the ones it held when it died included, ends `succeeded` exactly once.
/// Clients retry what got no answer with the same key, as a client
/// should. What a 2xx promises under SQLite's `synchronous = NORMAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_killed_during_5000_submissions_loses_and_doubles_nothing() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const RUNS: usize = 5000;
    const CLIENTS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    write_embedded_config(
        dir.path(),
        "workers = 2\nlease = \"2s\"\nheartbeat = \"300ms\"\ntick = \"200ms\"",
    );
    let first = Proc::start(&["serve"], dir.path());
    let url = first.url().to_string();
    push_guest("hello", &url);

    // Each client's keys, and what the server answered for each (the run
    // id of a 2xx), shared with the task that kills the server.
    let answered = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let submit = |url: String, keys: Vec<String>, answered: Arc<AtomicUsize>| {
        let http = http.clone();
        async move {
            let mut acked = BTreeMap::new();
            let mut unanswered = Vec::new();
            for key in keys {
                let response = http
                    .post(format!("{url}/v1/runs"))
                    .json(&json!({"module": "hello", "input": key, "idempotency_key": key}))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let run: Value = r.json().await.unwrap();
                        acked.insert(key, run["id"].as_str().unwrap().to_string());
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // Killed mid-request, or refused once dead.
                    Err(_) => unanswered.push(key),
                    Ok(r) => panic!("{key}: {} {}", r.status(), r.text().await.unwrap()),
                }
            }
            (acked, unanswered)
        }
    };
    let keys: Vec<Vec<String>> = (0..CLIENTS)
        .map(|c| {
            (c..RUNS)
                .step_by(CLIENTS)
                .map(|i| format!("k{i:05}"))
                .collect()
        })
        .collect();
    let kill = {
        let answered = answered.clone();
        async move {
            while answered.load(Ordering::Relaxed) < RUNS / 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            first.signal(libc::SIGKILL);
            first
        }
    };
    let clients = futures::future::join_all(
        keys.into_iter()
            .map(|k| submit(url.clone(), k, answered.clone())),
    );
    let (results, killed) = tokio::join!(clients, kill);
    drop(killed);
    let mut acked = BTreeMap::new();
    let mut unanswered = Vec::new();
    for (a, u) in results {
        acked.extend(a);
        unanswered.extend(u);
    }
    assert!(
        !unanswered.is_empty(),
        "the server was killed after every submission had its answer"
    );

    // Restarted on the same directory: the clients retry, same keys.
    let second = Proc::start(&["serve"], dir.path());
    let url = second.url().to_string();
    let (retried, still) = submit(url.clone(), unanswered, answered.clone()).await;
    assert!(
        still.is_empty(),
        "{} submissions failed after the restart",
        still.len()
    );

    // Every run, read through the API once none is queued or running.
    let deadline = Instant::now() + Duration::from_secs(300);
    let runs = loop {
        let mut runs: Vec<Value> = Vec::new();
        let mut uri = format!("{url}/v1/runs?limit=500");
        loop {
            let page: Value = http.get(&uri).send().await.unwrap().json().await.unwrap();
            runs.extend(page["runs"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => uri = format!("{url}/v1/runs?limit=500&cursor={next}"),
                None => break,
            }
        }
        if runs
            .iter()
            .all(|r| r["state"] != "queued" && r["state"] != "running")
        {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "runs still unfinished after the restart"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for run in &runs {
        let key = run["idempotency_key"].as_str().unwrap().to_string();
        by_key.entry(key).or_default().push(run);
    }
    let doubled: Vec<&String> = by_key
        .iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        doubled.is_empty(),
        "keys with more than one run: {doubled:?}"
    );
    let lost: Vec<&String> = acked
        .iter()
        .filter(|(key, id)| by_key.get(*key).is_none_or(|r| r[0]["id"] != id.as_str()))
        .map(|(key, _)| key)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged before the kill, then lost: {lost:?}"
    );
    for (key, id) in &retried {
        assert_eq!(by_key[key][0]["id"], id.as_str(), "{key}");
    }
    assert_eq!(runs.len(), RUNS);
    let unfinished: Vec<&Value> = runs.iter().filter(|r| r["state"] != "succeeded").collect();
    assert!(unfinished.is_empty(), "{unfinished:?}");
}

/// A worker process on PostgreSQL whose runs are short claims ahead: a
/// slot that finishes a run while runs wait claims one for each of the
/// worker's slots in one statement, its next and the rest for the slots
/// as they finish. So, with both slots busy, the worker holds more runs
/// than it has slots, which one-run claims never do; and every run still
/// runs once and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_on_postgres_claims_ahead_for_its_slots() {
    use sqlx::Connection;
    let Some(admin) = postgres_url() else { return };
    let database = fresh_database(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    ServerToml::new(&database)
        .local_modules(&dir.path().join("modules"))
        .server("workers", "2")
        .server("poll", "\"20ms\"")
        .write(dir.path());
    let api = Proc::start(&["serve", "--no-worker"], dir.path());
    let url = api.url().to_string();
    push_guest("busy", &url);
    let http = reqwest::Client::new();
    // Submitted before the worker starts, so that runs wait from its
    // first claim on. Of different lengths, so that the slots fall out of
    // step: one finishes, and claims ahead, while the other is running.
    let runs: Vec<Value> = (0..40)
        .map(|i| json!({"module": "busy", "params": {"ms": (20 + i % 3 * 15).to_string()}}))
        .collect();
    let response = http
        .post(format!("{url}/v1/runs/batch"))
        .json(&json!({ "runs": runs }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let ids: Vec<String> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 40);

    let mut conn = sqlx::PgConnection::connect(&database).await.unwrap();
    let _worker = Proc::start(&["worker"], dir.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most_held = 0i64;
    loop {
        let (held, unfinished): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE state = 'running'), \
             COUNT(*) FILTER (WHERE state IN ('queued', 'running')) FROM runs",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        most_held = most_held.max(held);
        if unfinished == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{unfinished} runs unfinished");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        most_held > 2,
        "a worker with 2 slots never held more than {most_held} runs: it did not claim ahead"
    );
    for id in &ids {
        let run = run_state(&http, &url, id).await;
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(run["attempts"], 1, "{run}");
    }
    conn.close().await.unwrap();
}
