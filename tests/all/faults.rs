//! Faults in the services Caisson depends on: the coordination database
//! restarting under load, the S3 server dying mid-read, an HDFS DataNode or
//! NameNode stopping, full disks. Each
//! test starts private services (or a private tmpfs), never touching the
//! shared ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use caisson_tests::{PrivatePostgres, ServerToml, guest_path};

use crate::server::Proc;

/// One `POST /v1/runs` as the client saw it.
#[derive(Debug)]
struct Submission {
    sent: Instant,
    status: u16,
    retry_after: Option<String>,
    id: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_submissions_loses_no_run() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    ServerToml::new(pg.url())
        .local_modules(&dir.path().join("modules"))
        .server("workers", "2")
        .server("poll", "\"50ms\"")
        .server("lease", "\"10s\"")
        .server("heartbeat", "\"500ms\"")
        .server("tick", "\"200ms\"")
        .write(dir.path());
    let server = Proc::start(&["serve"], dir.path());
    let url = server.url().to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let response = http
        .post(format!("{url}/v1/modules?name=hello"))
        .header("content-type", "application/wasm")
        .body(std::fs::read(guest_path("hello")).unwrap())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());

    // One client submits every 20 ms, bounded in count and time, until
    // runs submitted after the restart have been accepted.
    let restarted: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let client = tokio::spawn({
        let (http, url, restarted) = (http.clone(), url.clone(), restarted.clone());
        async move {
            let mut seen = Vec::new();
            let started = Instant::now();
            for i in 0..5000 {
                if started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let sent = Instant::now();
                let response = http
                    .post(format!("{url}/v1/runs"))
                    .json(&json!({"module": "hello", "input": format!("r{i}")}))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("submission {i} got no answer: {e}"));
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                seen.push(Submission {
                    sent,
                    status,
                    retry_after,
                    id: body["id"].as_str().map(str::to_string),
                });
                // Enough accepted since the restart: done.
                let after = restarted.lock().unwrap().map_or(0, |up| {
                    seen.iter()
                        .filter(|s| s.sent > up && s.status < 300)
                        .count()
                });
                if after >= 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }
    });

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg = Arc::new(pg);
    tokio::task::spawn_blocking({
        let pg = pg.clone();
        move || pg.pause()
    })
    .await
    .unwrap();
    let down = Duration::from_secs(6);
    tokio::time::sleep(down).await;
    tokio::task::spawn_blocking({
        let pg = pg.clone();
        move || pg.resume()
    })
    .await
    .unwrap();
    *restarted.lock().unwrap() = Some(Instant::now());
    let seen = tokio::time::timeout(Duration::from_secs(180), client)
        .await
        .expect("the client did not finish")
        .unwrap();

    let up = restarted.lock().unwrap().unwrap();
    let accepted: Vec<&str> = seen
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .map(|s| s.id.as_deref().expect("a 2xx without a run id"))
        .collect();
    let unavailable: Vec<&Submission> = seen.iter().filter(|s| s.status == 503).collect();
    let other_errors: Vec<&Submission> = seen
        .iter()
        .filter(|s| !(200..300).contains(&s.status) && s.status != 503)
        .collect();
    let after_restart = seen
        .iter()
        .filter(|s| s.sent > up && (200..300).contains(&s.status))
        .count();
    assert!(
        other_errors.is_empty(),
        "answers other than 2xx and 503: {other_errors:?}"
    );
    assert!(
        !unavailable.is_empty(),
        "no 503 while the database was down for {down:?}: {} submissions",
        seen.len()
    );
    for s in &unavailable {
        assert_eq!(s.retry_after.as_deref(), Some("2"), "{s:?}");
    }
    assert!(
        after_restart >= 20,
        "{after_restart} accepted after the restart"
    );

    // Every accepted run exists and ends, once, in success.
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .unwrap();
    caisson_tests::wait_until_idle(&db, Duration::from_secs(120)).await;
    let stored: std::collections::HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT id, state FROM runs")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let lost: Vec<&&str> = accepted
        .iter()
        .filter(|id| !stored.contains_key(**id))
        .collect();
    assert!(
        lost.is_empty(),
        "accepted runs missing afterwards: {lost:?}"
    );
    let failed: Vec<(&String, &String)> = stored
        .iter()
        .filter(|(_, state)| state.as_str() != "succeeded")
        .collect();
    assert!(failed.is_empty(), "runs that did not succeed: {failed:?}");
    let doubles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT run_id FROM run_attempts WHERE state = 'succeeded' \
         GROUP BY run_id HAVING count(*) <> 1) d",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(doubles, 0, "runs with other than one successful attempt");
    eprintln!(
        "{} submissions: {} accepted ({} after the restart), {} answered 503 with Retry-After, \
         0 other errors; database down {down:?}; {} runs stored, all succeeded once, 0 lost",
        seen.len(),
        accepted.len(),
        after_restart,
        unavailable.len(),
        stored.len()
    );
    db.close().await;
    drop(server);
}

/// Polls `id` until `done` says so, for at most a minute.
async fn wait_until(app: &crate::api::App, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, run) = app.json("GET", &format!("/v1/runs/{id}"), None, None).await;
        if done(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} stuck: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the run's task has logged that it is reading.
async fn wait_reading(app: &crate::api::App, id: &str) {
    wait_until(app, id, |_| true).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, logs) = app
            .json("GET", &format!("/v1/runs/{id}/logs"), None, None)
            .await;
        if logs["lines"].to_string().contains("reading started") {
            return;
        }
        assert!(Instant::now() < deadline, "run {id} never started reading");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_server_dying_mid_read_fails_the_run_as_retryable() {
    let Some(s3) = caisson_tests::PrivateS3::start() else {
        return;
    };
    let env = s3.env();
    let size = 32usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let sum = data.iter().fold(0u64, |s, &b| s.wrapping_add(u64::from(b)));
    env.client()
        .put(&caisson_tests::key("faults/big"), data.into())
        .await
        .unwrap();
    // object_store retries a broken read for 3 minutes by default; fail
    // within seconds instead, so the run's own retries take over.
    let table = format!(
        "{}max_retries = 1\nretry_timeout = \"2s\"\n",
        env.toml_table("s3", "faults")
    );
    let app = crate::api::app(&table, 1).await;
    let (status, body) = app
        .upload("slow-read", caisson_tests::guest("slow-read"), None)
        .await;
    assert!(status.is_success(), "{body}");
    let submit = |retries: u8| {
        json!({
            "module": "slow-read",
            "params": {"store": "s3", "key": "big", "pause_ms": "5"},
            "grants": {"objects": ["s3"]},
            "retries": {"max": retries, "backoff": "500ms"},
        })
    };

    // No retries: the run fails, marked retryable, naming the backend.
    let (_, run) = app.json("POST", "/v1/runs", None, Some(submit(0))).await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_reading(&app, &id).await;
    s3.kill();
    let failed = wait_until(&app, &id, |r| {
        r["state"] != "queued" && r["state"] != "running"
    })
    .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["retryable"], true, "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("backend error") && error.contains("object stream failed"),
        "{error}"
    );

    // With retries: the attempt cut off fails, and a later one succeeds
    // once the server is back, on the same port and data.
    s3.resume();
    let (_, run) = app.json("POST", "/v1/runs", None, Some(submit(5))).await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_reading(&app, &id).await;
    s3.kill();
    let retrying = wait_until(&app, &id, |r| {
        r["attempt_history"]
            .as_array()
            .is_some_and(|h| h.first().is_some_and(|a| a["state"] == "failed"))
    })
    .await;
    let first = &retrying["attempt_history"][0];
    assert!(
        first["error"].as_str().unwrap().contains("backend error"),
        "{first}"
    );
    s3.resume();
    let done = wait_until(&app, &id, |r| {
        r["state"] != "queued" && r["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let output: Value = serde_json::from_str(done["output"].as_str().unwrap()).unwrap();
    assert_eq!(output, json!({"bytes": size, "sum": sum}), "{done}");
    eprintln!(
        "S3 killed mid-read twice: no retries -> failed, retryable ({error}); \
         with retries -> succeeded after {} attempts",
        done["attempts"]
    );
}

/// A private MiniDFS holding `faults/big` (32 MiB in 1 MiB blocks, each on
/// 2 of the 3 DataNodes), and an API with one worker whose store `hdfs`
/// is rooted at `faults` (`store_extra` appended to its table), with
/// `slow-read` uploaded. Returns the byte sum `slow-read` must report.
async fn hdfs_reading_app(
    store_extra: &str,
) -> Option<(caisson_tests::PrivateHdfs, crate::api::App, u64)> {
    use caisson_tests::RemoteStore;
    let hdfs = tokio::task::spawn_blocking(caisson_tests::PrivateHdfs::start)
        .await
        .unwrap();
    let hdfs = hdfs?;
    let data: Vec<u8> = (0..HDFS_FILE).map(|i| (i % 251) as u8).collect();
    let sum = data.iter().fold(0u64, |s, &b| s.wrapping_add(u64::from(b)));
    hdfs.env
        .client()
        .put(&caisson_tests::key("faults/big"), data.into())
        .await
        .unwrap();
    let table = format!("{}{store_extra}", hdfs.env.toml_table("hdfs", "faults"));
    let app = crate::api::app(&table, 1).await;
    let (status, body) = app
        .upload("slow-read", caisson_tests::guest("slow-read"), None)
        .await;
    assert!(status.is_success(), "{body}");
    Some((hdfs, app, sum))
}

const HDFS_FILE: usize = 32 << 20;

fn slow_read(retries: u8, timeout: &str) -> Value {
    json!({
        "module": "slow-read",
        "params": {"store": "hdfs", "key": "big", "pause_ms": "5"},
        "grants": {"objects": ["hdfs"]},
        "retries": {"max": retries, "backoff": "500ms"},
        "timeout": timeout,
    })
}

fn finished(run: &Value) -> bool {
    run["state"] != "queued" && run["state"] != "running"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hdfs_datanode_stopped_mid_read_costs_at_most_a_retry() {
    let Some((hdfs, app, sum)) = hdfs_reading_app("").await else {
        return;
    };
    // A DataNode that holds blocks of the file: with replication 2 every
    // block it holds has one more replica elsewhere.
    let holders = hdfs.env.control("locations /faults/big").await;
    let victim = holders.split(',').next().unwrap().to_string();
    let (_, run) = app
        .json("POST", "/v1/runs", None, Some(slow_read(3, "120s")))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_reading(&app, &id).await;
    hdfs.env.control(&format!("stop-datanode {victim}")).await;
    let done = wait_until(&app, &id, finished).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let output: Value = serde_json::from_str(done["output"].as_str().unwrap()).unwrap();
    assert_eq!(output, json!({"bytes": HDFS_FILE, "sum": sum}), "{done}");
    eprintln!(
        "HDFS DataNode {victim} (of {holders}) stopped mid-read: succeeded after {} attempt(s)",
        done["attempts"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hdfs_namenode_down_fails_runs_retryable_until_it_returns() {
    // Two failovers with short sleeps instead of Hadoop's 15 with up to
    // 15 s each (about 3 minutes): fail fast, retry at the run level.
    let Some((hdfs, app, sum)) = hdfs_reading_app(
        "config = { \"dfs.client.failover.max.attempts\" = \"2\", \"dfs.client.failover.sleep.base.millis\" = \"100\" }\n",
    )
    .await
    else {
        return;
    };
    hdfs.env.control("stop-namenode").await;

    // No retries: failed, retryable, a backend error.
    let (_, run) = app
        .json("POST", "/v1/runs", None, Some(slow_read(0, "120s")))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let failed = wait_until(&app, &id, finished).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["retryable"], true, "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("backend"), "{error}");

    // With retries: attempts fail while the NameNode is down, and one
    // succeeds once it is back.
    let (_, run) = app
        .json("POST", "/v1/runs", None, Some(slow_read(20, "120s")))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_until(&app, &id, |r| {
        r["attempt_history"]
            .as_array()
            .is_some_and(|h| h.first().is_some_and(|a| a["state"] == "failed"))
    })
    .await;
    hdfs.env.control("start-namenode").await;
    let done = wait_until(&app, &id, finished).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let output: Value = serde_json::from_str(done["output"].as_str().unwrap()).unwrap();
    assert_eq!(output, json!({"bytes": HDFS_FILE, "sum": sum}), "{done}");
    eprintln!(
        "HDFS NameNode down: no retries -> failed, retryable ({error}); \
         with retries -> succeeded after {} attempts",
        done["attempts"]
    );
}

/// With Hadoop's own failover settings a call waits minutes for a
/// NameNode that is down; the run's timeout still ends the run on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hdfs_namenode_down_cannot_hold_a_run_past_its_timeout() {
    let Some((hdfs, app, _)) = hdfs_reading_app("").await else {
        return;
    };
    hdfs.env.control("stop-namenode").await;
    let (_, run) = app
        .json("POST", "/v1/runs", None, Some(slow_read(0, "3s")))
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let done = wait_until(&app, &id, finished).await;
    assert_eq!(done["state"], "timed_out", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("timeout after 3s"), "{error}");
}

/// Fills the filesystem under `path` until a write fails, then frees
/// `leave` bytes: what is left is too little for a module.
fn fill_disk(path: &std::path::Path, leave: u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    file.set_len(written.saturating_sub(leave)).unwrap();
}

/// Every file under `dir`, for checking that nothing was left behind.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_module_store_or_scratch_disk_fails_cleanly() {
    use axum::http::StatusCode;
    use caisson_tests::{Tmpfs, guest};
    let (Some(modules), Some(scratch)) = (Tmpfs::mount(8 << 20), Tmpfs::mount(8 << 20)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = ServerToml::new(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("caisson.db").display()
    ))
    .no_listen()
    .local_modules(modules.path())
    .server("poll", "\"20ms\"")
    .server("heartbeat", "\"100ms\"")
    .server("lease", "\"3s\"")
    .engine("scratch_dir", format!("\"{}\"", scratch.path().display()))
    .engine("max_memory", "1073741824")
    .tables("[limits]\ntimeout = \"30s\"\nmemory = 67108864")
    .render();
    let app = crate::api::app_from(&text, dir, 1).await;

    // The module store is full: 507 saying so, and no trace of the module.
    let filler = modules.path().join("filler");
    fill_disk(&filler, 16 << 10);
    let (status, body) = app.upload("hello", guest("hello"), None).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("module store is full"), "{message}");
    let (_, list) = app.json("GET", "/v1/modules", None, None).await;
    assert_eq!(list, json!([]));
    let (status, _) = app.json("GET", "/v1/modules/hello", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        files(modules.path()),
        vec![filler.clone()],
        "partial files left"
    );

    // Space freed: the same upload works, and the module runs.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = app.upload("hello", guest("hello"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "hello", "input": "disk"})),
        )
        .await;
    let done = app.wait(run["id"].as_str().unwrap(), None).await;
    assert_eq!(done["output"], "hello, disk", "{done}");

    // The scratch disk fills up: that run fails, saying why; the worker
    // goes on, and the space comes back with the run's scratch directory.
    let (status, body) = app
        .upload("scratch-fill", guest("scratch-fill"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "scratch-fill"})),
        )
        .await;
    let failed = app.wait(run["id"].as_str().unwrap(), None).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("could not write to /scratch after")
            && error.to_lowercase().contains("space"),
        "{error}"
    );
    for (module, params, expect) in [
        ("hello", json!({}), "hello, "),
        ("scratch-fill", json!({"mib": "4"}), "4"),
    ] {
        let (_, run) = app
            .json(
                "POST",
                "/v1/runs",
                None,
                Some(json!({"module": module, "params": params})),
            )
            .await;
        let done = app.wait(run["id"].as_str().unwrap(), None).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["output"], expect, "{done}");
    }
    assert_eq!(files(scratch.path()), Vec::<std::path::PathBuf>::new());
    eprintln!("module store full: 507 ({message}); scratch full: {error}");
    drop(app);
}
