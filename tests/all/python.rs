//! Python tasks built with `caisson build-python` (scripts/build-python-guests
//! builds tests/python/* and examples/python-*): dependency isolation, the
//! SDK against real services, and failures that stay inside their run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use caisson_host_api::Grants;
use caisson_host_api::log::MemorySink;
use caisson_host_api::test_support::mariadb_cli;
use caisson_runtime::{RunError, RunLimits};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{Value, json};
use sqlx::Row;

use caisson_tests::{RemoteStore, unique_prefix};
use caisson_tests::{base_config, caisson_bin, key, mysql_url, postgres_url, runtime, s3_env};

use crate::server::{Proc, cli, push_guest, text, write_embedded_config};
use crate::{json, load, run_with};

/// The two tasks pin packaging 21.3 and 24.2. Each relies on an API the
/// other version lacks (see `python_tasks_do_not_build_against_the_other_version`),
/// yet both run at once in one worker process, each seeing its own version.
#[test]
fn python_tasks_with_conflicting_dependencies_run_side_by_side_in_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    write_embedded_config(dir.path(), "workers = 4");
    let server = Proc::start(&["serve"], dir.path());
    let url = server.url().to_string();
    for name in ["py-packaging-old", "py-packaging-new"] {
        push_guest(name, &url);
    }

    // Both submitted at once; each holds its instance for 3 s, so they can
    // only both finish in time by running concurrently.
    let submit = |name: &'static str| {
        let url = url.clone();
        std::thread::spawn(move || {
            cli(
                &[
                    "run",
                    "submit",
                    name,
                    "--param",
                    "hold_seconds=3",
                    "--wait",
                    "--json",
                ],
                &url,
            )
        })
    };
    let (old, new) = (submit("py-packaging-old"), submit("py-packaging-new"));
    let runs: Vec<Value> = [old, new]
        .into_iter()
        .map(|handle| {
            let out = handle.join().unwrap();
            assert!(out.status.success(), "run failed: {}", text(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let outputs: Vec<Value> = runs
        .iter()
        .map(|run| serde_json::from_str(run["output"].as_str().unwrap()).unwrap())
        .collect();
    let (old, new) = (&outputs[0], &outputs[1]);
    assert_eq!(old["packaging"], "21.3", "{old}");
    assert_eq!(old["parsed"], "2024-banana", "{old}");
    assert_eq!(new["packaging"], "24.2", "{new}");
    assert_eq!(new["license"], "MIT OR Apache-2.0", "{new}");
    assert_eq!(new["strict"], true, "{new}");

    // The guests' own clocks: each started before the other finished.
    let t = |v: &Value, k: &str| v[k].as_f64().unwrap();
    assert!(
        t(old, "started") < t(new, "finished") && t(new, "started") < t(old, "finished"),
        "the runs did not overlap: {old} {new}"
    );
    // One worker process ran both (this serve is the only one), and the
    // server's records agree they overlapped.
    let workers: Vec<String> = runs
        .iter()
        .map(|run| {
            let id = run["id"].as_str().unwrap();
            let out = cli(&["run", "get", id, "--json"], &url);
            let record: Value = serde_json::from_slice(&out.stdout).unwrap();
            record["attempt_history"][0]["worker_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(workers[0], workers[1]);
}

/// Builds `app.py` of one task with the `requirements.txt` of another.
fn build_mixed(app_from: &str, requirements_from: &str, out: &Path) -> std::process::Output {
    let python = caisson_tests::root().join("tests/python");
    let dir = out.parent().unwrap().join("task");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(python.join(app_from).join("app.py"), dir.join("app.py")).unwrap();
    std::fs::copy(
        python.join(requirements_from).join("requirements.txt"),
        dir.join("requirements.txt"),
    )
    .unwrap();
    build_python(&dir, out)
}

fn build_python(dir: &Path, out: &Path) -> std::process::Output {
    let venv = caisson_tests::root().join("target/tools/python/bin");
    let componentize_py = venv.join("componentize-py");
    if !componentize_py.exists() {
        panic!(
            "{} is missing: run scripts/install-python-toolchain (scripts/test does)",
            componentize_py.display()
        );
    }
    Command::new(caisson_bin())
        .arg("build-python")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .env("CAISSON_COMPONENTIZE_PY", componentize_py)
        .env("CAISSON_PYTHON", venv.join("python"))
        .output()
        .expect("spawning caisson build-python")
}

#[test]
fn python_tasks_do_not_build_against_the_other_version() {
    for (app, requirements, missing) in [
        ("packaging-old", "packaging-new", "LegacyVersion"),
        ("packaging-new", "packaging-old", "packaging.licenses"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = build_mixed(app, requirements, &dir.path().join("task.wasm"));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{app} built against {requirements}");
        assert!(stderr.contains(missing), "{app}: {stderr}");
        assert!(!dir.path().join("task.wasm").exists());
    }
}

#[test]
fn python_build_names_a_requirement_with_native_code() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task");
    std::fs::create_dir_all(&task).unwrap();
    std::fs::write(
        task.join("app.py"),
        "from caisson import task\n\n@task\ndef run():\n    return 'x'\n",
    )
    .unwrap();
    std::fs::write(task.join("requirements.txt"), "numpy==2.1.3\n").unwrap();
    let out = build_python(&task, &dir.path().join("task.wasm"));
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`numpy` has no pure-Python wheel"),
        "{stderr}"
    );
    assert!(stderr.contains("native extensions"), "{stderr}");
    assert!(!dir.path().join("task.wasm").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn python_task_loads_csv_from_s3_into_postgres() {
    let Some(s3) = s3_env() else { return };
    let Some(pg) = postgres_url() else { return };
    python_etl_into(&s3, "postgres", &pg).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_task_loads_csv_from_s3_into_mysql() {
    let Some(s3) = s3_env() else { return };
    let Some(my) = mysql_url() else { return };
    python_etl_into(&s3, "mysql", &my).await;
}

/// `python-etl` loads three CSV files from S3 into the database `kind`
/// (`postgres` or `mysql`) at `url`, checked with a client of that
/// database's own (sqlx for PostgreSQL, the `mariadb` client for MySQL).
async fn python_etl_into(s3: &caisson_tests::S3Env, kind: &str, url: &str) {
    let prefix = unique_prefix("python-etl");
    let client = s3.client();
    let mut expected = 0i64;
    for (i, rows) in [3usize, 5, 4].into_iter().enumerate() {
        let mut csv = String::from("name,amount\n");
        for r in 0..rows {
            csv.push_str(&format!("item-{i}-{r},{}\n", 10 * i + r));
            expected += (10 * i + r) as i64;
        }
        client
            .put(
                &key(&format!("{prefix}/incoming/day-{i}.csv")),
                PutPayload::from(csv.into_bytes()),
            )
            .await
            .unwrap();
    }
    client
        .put(
            &key(&format!("{prefix}/incoming/notes.txt")),
            PutPayload::from_static(b"not,a,csv"),
        )
        .await
        .unwrap();

    let table = format!("py_events_{}", prefix.replace(['-', '/'], "_"));
    let create = format!(
        "CREATE TABLE {table} (source VARCHAR(200) NOT NULL, name VARCHAR(100) NOT NULL, \
         amount BIGINT NOT NULL)"
    );
    // (count, sum of amount, distinct sources), as the database says.
    let check = format!(
        "SELECT COUNT(*), CAST(SUM(amount) AS {}), COUNT(DISTINCT source) FROM {table}",
        if kind == "mysql" { "SIGNED" } else { "BIGINT" }
    );
    let pool = match kind {
        "postgres" => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(create.as_str()))
                .execute(&pool)
                .await
                .unwrap();
            Some(pool)
        }
        _ => {
            mariadb_cli(url, &create);
            None
        }
    };

    let mut config = base_config();
    config
        .objects
        .insert("raw".into(), s3.store_config(&prefix));
    config.sql = toml::from_str(&format!(
        "[warehouse]\ntype = \"{kind}\"\nurl = \"{url}\"\nmax_connections = 2\n"
    ))
    .unwrap();
    let runtime = runtime(config);
    let task = load(&runtime, "python-etl").await;
    let input = json!({"prefix": "incoming/", "table": table, "dialect": kind}).to_string();
    let (result, log) = run_with(&runtime, &task, input.as_bytes(), |r| {
        r.grants = grants(&["raw"], &["warehouse"]);
    })
    .await;
    let output = result.unwrap_or_else(|e| panic!("{e}\n{}", log_text(&log)));
    assert_eq!(json(&output), json!({"files": 3, "rows": 12}));

    let seen: (i64, i64, i64) = match &pool {
        Some(pool) => {
            let row = sqlx::query(sqlx::AssertSqlSafe(check.as_str()))
                .fetch_one(pool)
                .await
                .unwrap();
            (row.get(0), row.get(1), row.get(2))
        }
        None => {
            let out = mariadb_cli(url, &check);
            let fields: Vec<i64> = out
                .trim_end()
                .split('\t')
                .map(|f| f.parse().unwrap())
                .collect();
            (fields[0], fields[1], fields[2])
        }
    };
    assert_eq!(seen, (12, expected, 3));
    assert!(
        log_text(&log).contains("loaded 12 rows from 3 files"),
        "{}",
        log_text(&log)
    );
    assert_eq!(log.last_progress(), Some((3, 3)));
    let drop = format!("DROP TABLE {table}");
    match &pool {
        Some(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(drop.as_str()))
                .execute(pool)
                .await
                .unwrap();
        }
        None => {
            mariadb_cli(url, &drop);
        }
    }
}

fn log_text(log: &MemorySink) -> String {
    log.records()
        .iter()
        .map(|r| r.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn grants(objects: &[&str], sql: &[&str]) -> Grants {
    Grants {
        objects: objects.iter().map(|s| s.to_string()).collect(),
        sql: sql.iter().map(|s| s.to_string()).collect(),
    }
}

/// A runtime with a writable SQLite source `db` and a store `data` on
/// `remote` (S3 or HDFS).
fn probe_runtime(remote: &impl RemoteStore, prefix: &str, db: &Path) -> caisson_runtime::Runtime {
    let mut config = base_config();
    config
        .objects
        .insert("data".into(), remote.store_config(prefix));
    config.sql = toml::from_str(&format!(
        "[db]\ntype = \"sqlite\"\nurl = \"sqlite://{}?mode=rwc\"\n",
        db.display()
    ))
    .unwrap();
    runtime(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_streams_objects_and_types_sql_values() {
    let Some(s3) = s3_env() else { return };
    python_roundtrip_on(&s3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_task_reads_and_writes_hdfs() {
    let Some(hdfs) = caisson_tests::hdfs_env() else {
        return;
    };
    python_roundtrip_on(&hdfs).await;
}

/// The Python probe's round trip with its store on `remote`: objects
/// streamed up, read back, listed; SQL values typed both ways.
async fn python_roundtrip_on(remote: &impl RemoteStore) {
    let prefix = unique_prefix("python-sdk");
    let dir = tempfile::tempdir().unwrap();
    let runtime = probe_runtime(remote, &prefix, &dir.path().join("probe.db"));
    let task = load(&runtime, "py-probe").await;
    let input =
        json!({"op": "roundtrip", "store": "data", "prefix": "rt", "db": "db", "lines": 20000});
    let (result, log) = run_with(&runtime, &task, input.to_string().as_bytes(), |r| {
        r.grants = grants(&["data"], &["db"]);
        r.params.insert("region".into(), "eu".into());
    })
    .await;
    let output = json(&result.unwrap_or_else(|e| panic!("{e}\n{}", log_text(&log))));
    assert_eq!(output["lines"], 20000);
    assert_eq!(output["first_line"], "line 0");
    assert_eq!(output["last_line"], "line 19999");
    assert_eq!(output["head"], json!([0, 1, 2, 3]));
    assert_eq!(
        output["listed"],
        json!(["rt/a.bin", "rt/b.txt", "rt/lines.txt"])
    );
    assert_eq!(
        output["many"],
        json!([
            ["rt/b.txt", 4],
            ["rt/missing", "not-found"],
            ["rt/a.bin", 256]
        ])
    );
    assert_eq!(output["under"], output["listed"]);
    assert_eq!(
        output["row"],
        json!({"id": 1, "flag": true, "ratio": 0.5, "name": "ünï", "data": [0, 1], "doc": null})
    );
    // The second transaction raised inside its block and was rolled back.
    assert_eq!(output["count"], 1);
    assert_eq!(output["streamed"], json!([2500, 2500 * 2501 / 2]));
    assert_eq!(output["params"], json!({"region": "eu"}));

    // What the task streamed up is really in the store.
    let stored = remote
        .client()
        .get(&key(&format!("{prefix}/rt/lines.txt")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let expected: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(stored, expected.as_bytes());
}

/// The Python SDK's idiomatic types both ways: `date`, `time`, naive and
/// aware `datetime` (TIMESTAMP and TIMESTAMPTZ), infinity as
/// `datetime.max`, big ints, and on PostgreSQL `Decimal` with 38 digits,
/// `UUID` and `timedelta`.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_maps_sql_values_to_python_types() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    let mut sql = format!(
        "[db]\ntype = \"sqlite\"\nurl = \"sqlite://{}?mode=rwc\"\n",
        dir.path().join("types.db").display()
    );
    let pg = postgres_url();
    if let Some(url) = &pg {
        sql.push_str(&format!("[pg]\ntype = \"postgres\"\nurl = \"{url}\"\n"));
    }
    config.sql = toml::from_str(&sql).unwrap();
    let runtime = runtime(config);
    let task = load(&runtime, "py-probe").await;
    let mut targets = vec![("db", false)];
    if pg.is_some() {
        targets.push(("pg", true));
    }
    for (db, postgres) in targets {
        let table = unique_prefix("pytypes").replace(['/', '-'], "_");
        let input = json!({"op": "types", "db": db, "postgres": postgres, "table": table});
        let (result, log) = run_with(&runtime, &task, input.to_string().as_bytes(), |r| {
            r.grants = grants(&[], &[db]);
        })
        .await;
        let output = json(&result.unwrap_or_else(|e| panic!("{e}\n{}", log_text(&log))));
        let expected_types = [
            ("d", "date"),
            ("t", "time"),
            ("naive", "datetime"),
            ("aware", "datetime"),
            ("forever", "datetime"),
            ("big", if postgres { "Decimal" } else { "int" }),
            ("num", "Decimal"),
            ("id", "UUID"),
            ("span", "timedelta"),
        ];
        for (name, ty) in expected_types {
            if !postgres && matches!(name, "num" | "id" | "span") {
                continue;
            }
            assert_eq!(output[name]["type"], ty, "{db} {name}: {output}");
            assert_eq!(output[name]["same"], true, "{db} {name}: {output}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_raises_host_errors_by_kind() {
    let Some(s3) = s3_env() else { return };
    let prefix = unique_prefix("python-errors");
    let dir = tempfile::tempdir().unwrap();
    let runtime = probe_runtime(&s3, &prefix, &dir.path().join("probe.db"));
    let task = load(&runtime, "py-probe").await;
    let input = json!({"op": "errors", "store": "data"}).to_string();
    let (result, _) = run_with(&runtime, &task, input.as_bytes(), |r| {
        r.grants = grants(&["data"], &[]);
    })
    .await;
    assert_eq!(
        json(&result.unwrap()),
        json!({"store": "access-denied", "db": "access-denied", "missing": "not-found"})
    );

    let (result, _) = run_with(&runtime, &task, br#"{"op": "retryable"}"#, |_| {}).await;
    assert_eq!(
        result.unwrap_err(),
        RunError::Failed {
            message: "upstream busy".into(),
            retryable: true
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_exception_fails_the_run_with_its_traceback_in_the_log() {
    let runtime = runtime(base_config());
    let task = load(&runtime, "py-probe").await;
    let (result, log) = run_with(
        &runtime,
        &task,
        br#"{"op": "raise", "amount": "12x"}"#,
        |_| {},
    )
    .await;
    match result {
        Err(RunError::Failed { message, retryable }) => {
            assert_eq!(
                message,
                "ValueError: invalid literal for int() with base 10: '12x'"
            );
            assert!(!retryable);
        }
        other => panic!("expected a failed run, got {other:?}"),
    }
    let log = log_text(&log);
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    assert!(log.contains("in parse_amount"), "{log}");
    assert!(log.contains("about to parse '12x'"), "{log}");

    // The same loaded task runs fine afterwards: the failure was the run's.
    let (result, _) = run_with(&runtime, &task, br#"{"op": "hello"}"#, |_| {}).await;
    assert_eq!(result.unwrap(), b"hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_task_that_loops_forever_is_stopped_by_its_timeout() {
    let runtime = runtime(base_config());
    let task = load(&runtime, "py-probe").await;
    let limits = RunLimits {
        timeout: Duration::from_secs(2),
        ..RunLimits::default()
    };
    let (result, _) = run_with(&runtime, &task, br#"{"op": "loop"}"#, |r| {
        r.limits = Some(limits);
    })
    .await;
    assert_eq!(
        result.unwrap_err(),
        RunError::Timeout(Duration::from_secs(2))
    );
    let (result, _) = run_with(&runtime, &task, br#"{"op": "hello"}"#, |_| {}).await;
    assert_eq!(result.unwrap(), b"hello");
}
