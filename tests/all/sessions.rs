//! No SQL session state survives a run, and no SQL work outlives it.
//!
//! Each test plays two runs of the `sql-script` component in sequence on one
//! runtime whose source has a single pooled connection, so the second run
//! gets the very connection the first one used (the tests check that with
//! the backend's process id where it matters). The first run leaves some
//! kind of session state behind; the second must neither see it nor be
//! steered by it.

use std::time::Duration;

use caisson_host_api::Grants;
use caisson_host_api::sql::{SqlKind, SqlSourceConfig};
use caisson_host_api::test_support::{mariadb_cli, source};
use caisson_runtime::{RunError, RunLimits, Runtime};
use caisson_tests::{base_config, mysql_url, postgres_url, runtime};
use serde_json::{Value, json};

use crate::{json, load, run_with};

const LABEL: &str = "db";

/// A runtime with one source, `db`, of one pooled connection.
fn runtime_with(source: SqlSourceConfig) -> Runtime {
    let mut config = base_config();
    config.sql.insert(LABEL.into(), source);
    runtime(config)
}

fn postgres_runtime() -> Option<Runtime> {
    Some(runtime_with(source(
        SqlKind::Postgres,
        &postgres_url()?,
        false,
        1,
    )))
}

/// One step of a script: a query, or (with `execute`) a statement whose
/// affected-row count is reported.
fn step(sql: &str, params: Value) -> Value {
    json!({ "sql": sql, "params": params })
}

fn exec(sql: &str) -> Value {
    json!({ "sql": sql, "execute": true })
}

fn limits(timeout: Duration) -> RunLimits {
    RunLimits {
        timeout,
        ..RunLimits::default()
    }
}

/// Runs `steps` as one run granted `db`, and returns each step's result.
async fn script_with(
    rt: &Runtime,
    steps: Vec<Value>,
    timeout: Duration,
) -> Result<Vec<Value>, RunError> {
    let task = load(rt, "sql-script").await;
    let input = json!({ "db": LABEL, "steps": steps }).to_string();
    let (result, _) = run_with(rt, &task, input.as_bytes(), |r| {
        r.grants = Grants::default().with_sql(LABEL);
        r.limits = Some(limits(timeout));
    })
    .await;
    result.map(|out| json(&out)["results"].as_array().expect("results").clone())
}

async fn script(rt: &Runtime, steps: Vec<Value>) -> Vec<Value> {
    script_with(rt, steps, Duration::from_secs(60))
        .await
        .expect("the script runs")
}

/// The rows of a query step, failing the test on an error.
fn rows(result: &Value) -> &Vec<Value> {
    result["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("expected rows, got {result}"))
}

/// The single value of a one-row, one-column query step.
fn scalar(result: &Value) -> &Value {
    let rows = rows(result);
    assert_eq!(rows.len(), 1, "{result}");
    let row = rows[0].as_object().expect("a row");
    assert_eq!(row.len(), 1, "{result}");
    row.values().next().expect("a column")
}

/// A SQL identifier no other test uses.
fn ident(name: &str) -> String {
    format!("{name}_{}", uuid::Uuid::new_v4().simple())
}

const PID: &str = "SELECT pg_backend_pid() AS pid";

/// The attack: a run re-prepares a statement under the name sqlx
/// gave the victim's query, and the victim's next run executes it.
#[tokio::test]
async fn a_run_cannot_hijack_the_next_runs_prepared_statements() {
    let Some(rt) = postgres_runtime() else { return };
    let victim = || {
        vec![
            step(PID, json!([])),
            step("SELECT $1::text || ' ok' AS v", json!(["victim"])),
        ]
    };
    let first = script(&rt, victim()).await;
    assert_eq!(scalar(&first[1]), "victim ok");
    let pid = scalar(&first[0]).clone();

    // The spy and hijacker, on the same connection.
    let attack = script(
        &rt,
        vec![
            step(PID, json!([])),
            step(
                "SELECT name, statement FROM pg_prepared_statements ORDER BY name",
                json!([]),
            ),
        ],
    )
    .await;
    assert_eq!(
        scalar(&attack[0]),
        &pid,
        "the runs must share one connection"
    );
    let seen = rows(&attack[1]);
    assert!(
        !seen
            .iter()
            .any(|r| r["statement"].as_str().is_some_and(|s| s.contains("' ok'"))),
        "the victim's statement is visible to the next run: {seen:?}"
    );

    // Prepare an attacker's statement under every name sqlx might use next,
    // as the hijack did for `sqlx_s_1`.
    let mut hijack = vec![step(PID, json!([]))];
    for n in 1..=20 {
        hijack.push(exec(&format!("DEALLOCATE sqlx_s_{n}")));
        hijack.push(exec(&format!(
            "PREPARE sqlx_s_{n} (text) AS SELECT 'HIJACKED:' || $1 AS v"
        )));
    }
    let hijacked = script(&rt, hijack).await;
    assert_eq!(scalar(&hijacked[0]), &pid);
    assert!(
        hijacked.iter().any(|r| r["affected"].is_number()),
        "the attacker could not even prepare: {hijacked:?}"
    );

    let again = script(&rt, victim()).await;
    assert_eq!(scalar(&again[0]), &pid);
    assert_eq!(scalar(&again[1]), "victim ok", "{again:?}");
    // The pattern is a parameter, so this statement's own text (which is
    // prepared too) does not match it.
    let prepared = script(
        &rt,
        vec![step(
            "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%' || $1 || '%'",
            json!(["HIJACKED:"]),
        )],
    )
    .await;
    assert_eq!(scalar(&prepared[0]), 0);
}

#[tokio::test]
async fn a_search_path_set_by_one_run_does_not_steer_the_next() {
    let Some(rt) = postgres_runtime() else { return };
    let schema = ident("shadow");
    // The attacker's schema has a table named like one the victim reads
    // unqualified (a catalog view, so the victim needs no setup).
    let first = script(
        &rt,
        vec![
            step(PID, json!([])),
            exec(&format!("CREATE SCHEMA {schema}")),
            exec(&format!(
                "CREATE TABLE {schema}.pg_settings AS SELECT 'forged'::text AS setting"
            )),
            exec(&format!("SET search_path = {schema}, pg_catalog")),
            step("SHOW search_path", json!([])),
        ],
    )
    .await;
    assert!(
        scalar(&first[4]).as_str().unwrap().contains(&schema),
        "{first:?}"
    );

    let second = script(
        &rt,
        vec![
            step(PID, json!([])),
            step("SHOW search_path", json!([])),
            step("SELECT current_setting('search_path') AS p", json!([])),
        ],
    )
    .await;
    assert_eq!(scalar(&second[0]), scalar(&first[0]));
    assert_eq!(scalar(&second[1]), "\"$user\", public", "{second:?}");
    assert!(!scalar(&second[2]).as_str().unwrap().contains(&schema));
    script(&rt, vec![exec(&format!("DROP SCHEMA {schema} CASCADE"))]).await;
}

#[tokio::test]
async fn a_temporary_table_does_not_outlive_its_run() {
    let Some(rt) = postgres_runtime() else { return };
    let first = script(
        &rt,
        vec![
            step(PID, json!([])),
            exec("CREATE TEMP TABLE left_behind (secret text)"),
            exec("INSERT INTO left_behind VALUES ('from run 1')"),
        ],
    )
    .await;
    assert_eq!(first[2]["affected"], 1, "{first:?}");
    let second = script(
        &rt,
        vec![
            step(PID, json!([])),
            step("SELECT secret FROM left_behind", json!([])),
            step(
                "SELECT count(*) AS n FROM pg_class WHERE relpersistence = 't' AND relname = 'left_behind'",
                json!([]),
            ),
        ],
    )
    .await;
    assert_eq!(scalar(&second[0]), scalar(&first[0]));
    // The table is gone: the database says so, with SQLSTATE 42P01.
    assert_eq!(second[1]["error"], "database", "{second:?}");
    assert!(
        second[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("42P01")),
        "{second:?}"
    );
    assert_eq!(scalar(&second[2]), 0);
}

#[tokio::test]
async fn an_advisory_lock_is_released_when_its_run_ends() {
    let Some(rt) = postgres_runtime() else { return };
    let key = i64::from(std::process::id()) * 1000 + 7;
    let first = script(
        &rt,
        vec![
            step(PID, json!([])),
            step("SELECT pg_advisory_lock($1)", json!([key])),
        ],
    )
    .await;
    assert!(first[1]["rows"].is_array(), "{first:?}");
    // Another session can take the lock only if the first run's session let
    // go of it. The session is reset by its connection's actor once the run
    // has dropped it, just after the run returns, so the lock is let go
    // within moments, not necessarily before `script` returns.
    let other = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_url().unwrap())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let taken = loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&other)
            .await
            .unwrap();
        if taken || std::time::Instant::now() > deadline {
            break taken;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    other.close().await;
    assert!(taken, "the first run's advisory lock is still held");
    let second = script(
        &rt,
        vec![
            step(PID, json!([])),
            step(
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
                json!([]),
            ),
        ],
    )
    .await;
    assert_eq!(scalar(&second[0]), scalar(&first[0]));
    assert_eq!(scalar(&second[1]), 0);
}

#[tokio::test]
async fn a_listen_does_not_outlive_its_run() {
    let Some(rt) = postgres_runtime() else { return };
    let channel = ident("spy");
    let first = script(
        &rt,
        vec![
            step(PID, json!([])),
            exec(&format!("LISTEN {channel}")),
            step(
                "SELECT count(*) AS n FROM pg_listening_channels()",
                json!([]),
            ),
        ],
    )
    .await;
    assert_eq!(scalar(&first[2]), 1, "{first:?}");
    let second = script(
        &rt,
        vec![
            step(PID, json!([])),
            step(
                "SELECT count(*) AS n FROM pg_listening_channels()",
                json!([]),
            ),
        ],
    )
    .await;
    assert_eq!(scalar(&second[0]), scalar(&first[0]));
    assert_eq!(scalar(&second[1]), 0, "{second:?}");
}

#[tokio::test]
async fn a_postgres_connection_gets_the_runs_time_left_as_statement_timeout() {
    let Some(rt) = postgres_runtime() else { return };
    let results = script_with(
        &rt,
        vec![step(
            "SELECT current_setting('statement_timeout') AS t",
            json!([]),
        )],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = scalar(&results[0]).as_str().unwrap().to_owned();
    let millis: u64 = text
        .strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .or_else(|| {
            text.strip_suffix('s')
                .and_then(|n| n.parse::<u64>().ok())
                .map(|s| s * 1000)
        })
        .unwrap_or_else(|| panic!("statement_timeout is {text:?}"));
    assert!(
        (1..=30_000).contains(&millis),
        "statement_timeout {text} is not within the run's 30 s"
    );
}

/// How many backends run `marker`'s statement, seen from another session.
async fn running(url: &str, marker: &str) -> i64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
    )
    .bind(marker)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn a_postgres_statement_still_running_when_its_run_times_out_is_stopped() {
    let Some(rt) = postgres_runtime() else { return };
    let url = postgres_url().unwrap();
    let marker = ident("sleeper");
    // The task lifts its own statement timeout first: stopping the statement
    // must not depend on a setting the task controls.
    let result = script_with(
        &rt,
        vec![
            exec("SET statement_timeout = 0"),
            step(&format!("SELECT pg_sleep(1e9) AS {marker}"), json!([])),
        ],
        Duration::from_secs(2),
    )
    .await;
    assert!(matches!(result, Err(RunError::Timeout(_))), "{result:?}");
    // The backend is terminated as the run ends; allow the kill a moment to
    // land, but never as long as the statement would have run.
    let mut left = 1;
    for _ in 0..100 {
        left = running(&url, &marker).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "pg_sleep still runs after its run timed out");
    // The source's only pooled connection is usable by the next run.
    let next = script(&rt, vec![step("SELECT 1 AS one", json!([]))]).await;
    assert_eq!(scalar(&next[0]), 1);
}

/// MySQL's 1-or-0 answers, which sqlx types `BOOLEAN` when the column is
/// one digit wide.
fn truthy(value: &Value) -> bool {
    value == &json!(1) || value == &json!(true)
}

fn mysql_runtime() -> Option<Runtime> {
    Some(runtime_with(source(
        SqlKind::Mysql,
        &mysql_url()?,
        false,
        1,
    )))
}

/// A MySQL run's session state (a user variable, a temporary table, a
/// named lock, a setting) does not reach the next run: each run gets a
/// connection of its own.
#[tokio::test]
async fn a_mysql_session_does_not_outlive_its_run() {
    let Some(rt) = mysql_runtime() else { return };
    let lock = ident("lock");
    let first = script(
        &rt,
        vec![
            step("SELECT CONNECTION_ID() AS id", json!([])),
            exec("SET @left_behind = 42"),
            exec("CREATE TEMPORARY TABLE left_behind (x INT)"),
            exec("SET SESSION sql_mode = 'ANSI_QUOTES'"),
            step("SELECT GET_LOCK(?, 0) AS got", json!([lock])),
        ],
    )
    .await;
    assert!(truthy(scalar(&first[4])), "{first:?}");
    let second = script(
        &rt,
        vec![
            step("SELECT CONNECTION_ID() AS id", json!([])),
            step("SELECT @left_behind AS v", json!([])),
            step("SELECT count(*) AS n FROM left_behind", json!([])),
            step(
                "SELECT @@session.sql_mode LIKE '%ANSI_QUOTES%' AS ansi",
                json!([]),
            ),
            step("SELECT IS_FREE_LOCK(?) AS free", json!([lock])),
        ],
    )
    .await;
    assert_ne!(
        scalar(&second[0]),
        scalar(&first[0]),
        "a connection was reused"
    );
    assert_eq!(scalar(&second[1]), &Value::Null, "{second:?}");
    assert!(second[2]["error"].is_string(), "{second:?}");
    assert!(!truthy(scalar(&second[3])), "{second:?}");
    assert!(truthy(scalar(&second[4])), "{second:?}");
}

#[tokio::test]
async fn a_mariadb_connection_gets_the_runs_time_left_as_max_statement_time() {
    let Some(rt) = mysql_runtime() else { return };
    let results = script_with(
        &rt,
        vec![step("SELECT @@session.max_statement_time AS t", json!([]))],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let seconds = scalar(&results[0])
        .as_f64()
        .or_else(|| scalar(&results[0]).as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("max_statement_time is {:?}", results[0]));
    assert!(
        seconds > 0.0 && seconds <= 30.0,
        "max_statement_time {seconds} is not within the run's 30 s"
    );
}

#[tokio::test]
async fn a_mysql_statement_still_running_when_its_run_times_out_is_killed() {
    let Some(rt) = mysql_runtime() else { return };
    let url = mysql_url().unwrap();
    let marker = ident("sleeper");
    // The task lifts its own statement timeout first: stopping the statement
    // must not depend on a setting the task controls.
    let result = script_with(
        &rt,
        vec![
            exec("SET SESSION max_statement_time = 0"),
            step(&format!("SELECT SLEEP(100000) AS {marker}"), json!([])),
        ],
        Duration::from_secs(2),
    )
    .await;
    assert!(matches!(result, Err(RunError::Timeout(_))), "{result:?}");
    // Seen by the `mariadb` client: the statement is gone soon after.
    let running = || {
        mariadb_cli(
            &url,
            &format!(
                "SELECT count(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE '%{marker}%' AND ID <> CONNECTION_ID()"
            ),
        )
    };
    let mut left = String::new();
    for _ in 0..100 {
        left = running();
        if left.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left.trim(), "0", "SLEEP still runs after its run timed out");
    let next = script(&rt, vec![step("SELECT 1 AS one", json!([]))]).await;
    assert_eq!(scalar(&next[0]), 1);
}

fn sqlite_runtime() -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
    (runtime_with(source(SqlKind::Sqlite, &url, false, 1)), dir)
}

#[tokio::test]
async fn a_sqlite_pragma_does_not_outlive_its_run() {
    let (rt, _dir) = sqlite_runtime();
    let pragmas = [
        // sqlx turns foreign keys on for every connection.
        ("foreign_keys", "0", "1"),
        ("query_only", "1", "0"),
        ("recursive_triggers", "1", "0"),
        ("cache_size", "7", "-2000"),
    ];
    // The temporary table first: `query_only` would refuse it.
    let mut first = vec![exec("CREATE TEMP TABLE shadow (x)")];
    for (name, set, _) in pragmas {
        first.push(exec(&format!("PRAGMA {name} = {set}")));
        first.push(step(&format!("PRAGMA {name}"), json!([])));
    }
    let first = script(&rt, first).await;
    assert_eq!(first[0]["affected"], 0, "{first:?}");
    for (i, (name, set, _)) in pragmas.iter().enumerate() {
        assert_eq!(
            scalar(&first[2 * i + 2]).to_string(),
            *set,
            "PRAGMA {name} did not take in the first run: {first:?}"
        );
    }

    let mut second: Vec<Value> = pragmas
        .iter()
        .map(|(name, _, _)| step(&format!("PRAGMA {name}"), json!([])))
        .collect();
    second.push(step(
        "SELECT count(*) AS n FROM temp.sqlite_schema",
        json!([]),
    ));
    second.push(exec("CREATE TABLE written (x)"));
    let second = script(&rt, second).await;
    for (i, (name, _, default)) in pragmas.iter().enumerate() {
        assert_eq!(
            scalar(&second[i]).to_string(),
            *default,
            "PRAGMA {name} survived into the next run: {second:?}"
        );
    }
    assert_eq!(scalar(&second[pragmas.len()]), 0);
    // `query_only` from the first run would have refused this write.
    assert!(
        second[pragmas.len() + 1]["affected"].is_number(),
        "{second:?}"
    );
}

#[tokio::test]
async fn a_sqlite_connection_is_defensive_and_caps_value_sizes() {
    let (rt, _dir) = sqlite_runtime();
    let results = script(
        &rt,
        vec![
            exec("CREATE TABLE t (x)"),
            // Defensive mode: the schema table cannot be written, even with
            // writable_schema.
            exec("PRAGMA writable_schema = ON"),
            exec("UPDATE sqlite_schema SET sql = 'CREATE TABLE t (y)' WHERE name = 't'"),
            // A 100 MB string is over the length cap.
            step("SELECT length(zeroblob(100000000)) AS n", json!([])),
            // ATTACH stays forbidden.
            exec("ATTACH DATABASE ':memory:' AS other"),
        ],
    )
    .await;
    assert_eq!(results[0]["affected"], 0, "{results:?}");
    assert!(
        results[2]["error"].is_string(),
        "the schema table was written: {results:?}"
    );
    assert!(
        results[3]["error"].is_string(),
        "a 100 MB value was made: {results:?}"
    );
    assert!(
        results[4]["error"].is_string(),
        "ATTACH worked: {results:?}"
    );
}

#[tokio::test]
async fn a_sqlite_statement_still_running_when_its_run_times_out_is_interrupted() {
    let (rt, _dir) = sqlite_runtime();
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                   SELECT count(*) AS n FROM c";
    let result = script_with(&rt, vec![step(endless, json!([]))], Duration::from_secs(2)).await;
    assert!(matches!(result, Err(RunError::Timeout(_))), "{result:?}");
    // The source has one connection. Had the endless query kept it, this run
    // would wait out the pool's 10 s acquire timeout and fail with `backend`
    // well inside its own 60 s.
    let next = script(&rt, vec![step("SELECT 1 AS one", json!([]))]).await;
    assert_eq!(scalar(&next[0]), 1, "{next:?}");
}
