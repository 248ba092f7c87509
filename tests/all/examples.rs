//! The examples, run end to end with `caisson run` against the real S3
//! server and PostgreSQL; results are checked in the services themselves.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sqlx::Row;

use caisson_host_api::test_support::mariadb_cli;
use caisson_tests::{RemoteStore, hdfs_env, key, mysql_url, postgres_url, s3_env, unique_prefix};

use crate::cli::caisson_run;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn word_count_counts_every_small_object_under_a_prefix() {
    let Some(s3) = s3_env() else { return };
    word_count_on(&s3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn word_count_over_hdfs() {
    let Some(hdfs) = hdfs_env() else { return };
    word_count_on(&hdfs).await;
}

/// `word-count` over 300 small objects on `remote`; the summary it prints
/// and stores back is checked against what was uploaded.
async fn word_count_on(remote: &impl RemoteStore) {
    let prefix = unique_prefix("word-count");
    let client = remote.client();

    // 300 small objects with known words, plus one outside the prefix that
    // must not be counted.
    let mut expected_words = 0u64;
    let mut expected_bytes = 0u64;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let uploads = (0..300).map(|i| {
        let body = format!(
            "alpha beta {}\ngamma alpha\n",
            if i % 3 == 0 { "delta" } else { "alpha" }
        );
        for w in body.split_whitespace() {
            *counts.entry(w.to_string()).or_default() += 1;
        }
        expected_words += body.split_whitespace().count() as u64;
        expected_bytes += body.len() as u64;
        let client = client.clone();
        let path = key(&format!("{prefix}/input/part-{i:04}.txt"));
        async move { client.put(&path, PutPayload::from(body.into_bytes())).await }
    });
    futures::future::try_join_all(uploads).await.unwrap();
    client
        .put(
            &key(&format!("{prefix}/elsewhere.txt")),
            PutPayload::from_static(b"omega omega omega"),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = caisson_run(
        dir.path(),
        "word-count",
        &remote.toml_table("data", &prefix),
        &[
            "--grant",
            "objects=data",
            "--param",
            "store=data",
            "--param",
            "prefix=input",
            "--param",
            "output=out/summary.json",
        ],
    );
    assert!(
        out.status.success(),
        "word-count on {} failed: {}",
        remote.name(),
        text(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The summary object written back to the store is the same JSON.
    let stored = client
        .get(&key(&format!("{prefix}/out/summary.json")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored, printed);
    assert_eq!(stored["objects"], 300);
    assert_eq!(stored["words"], expected_words);
    assert_eq!(stored["bytes"], expected_bytes);
    assert_eq!(stored["lines"], 600);
    let top = stored["top"].as_array().unwrap();
    assert_eq!(top[0][0], "alpha");
    assert_eq!(top[0][1], counts["alpha"]);
    assert!(
        !stored.to_string().contains("omega"),
        "counted an object outside the prefix"
    );
}

async fn pg_pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

fn pg_table(url: &str) -> String {
    format!("[sql.warehouse]\ntype = \"postgres\"\nurl = \"{url}\"\nmax_connections = 2\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_to_sql_loads_a_csv_in_one_transaction() {
    let (Some(s3), Some(pg)) = (s3_env(), postgres_url()) else {
        return;
    };
    csv_to_sql_on(&s3, &Target::Postgres(pg_pool(&pg).await, pg)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_to_sql_reads_from_hdfs() {
    let (Some(hdfs), Some(pg)) = (hdfs_env(), postgres_url()) else {
        return;
    };
    csv_to_sql_on(&hdfs, &Target::Postgres(pg_pool(&pg).await, pg)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_to_sql_loads_into_mysql() {
    let (Some(s3), Some(my)) = (s3_env(), mysql_url()) else {
        return;
    };
    csv_to_sql_on(&s3, &Target::Mysql(my)).await;
}

/// The database `csv-to-sql` loads into, and a view of it that does not go
/// through Caisson: sqlx for PostgreSQL, the `mariadb` client for MySQL.
enum Target {
    Postgres(sqlx::PgPool, String),
    Mysql(String),
}

impl Target {
    /// The `[sql.warehouse]` table and the task's `dialect` parameter.
    fn config(&self) -> (String, &'static str) {
        match self {
            Target::Postgres(_, url) => (pg_table(url), "standard"),
            Target::Mysql(url) => (
                format!(
                    "[sql.warehouse]\ntype = \"mysql\"\nurl = \"{url}\"\nmax_connections = 2\n"
                ),
                "mysql",
            ),
        }
    }

    async fn execute(&self, sql: &str) {
        match self {
            Target::Postgres(pool, _) => {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Target::Mysql(url) => {
                mariadb_cli(url, sql);
            }
        }
    }

    /// The row count and the sum of `age` in `table`.
    async fn count_and_ages(&self, table: &str) -> (i64, i64) {
        let sql = format!("SELECT count(*), CAST(coalesce(sum(age), 0) AS SIGNED) FROM {table}");
        match self {
            Target::Postgres(pool, _) => {
                let sql = format!("SELECT count(*), coalesce(sum(age), 0)::BIGINT FROM {table}");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .fetch_one(pool)
                    .await
                    .unwrap();
                (row.get(0), row.get(1))
            }
            Target::Mysql(url) => {
                let out = mariadb_cli(url, &sql);
                let (n, ages) = out.trim_end().split_once('\t').unwrap();
                (n.parse().unwrap(), ages.parse().unwrap())
            }
        }
    }
}

/// `csv-to-sql` reading its CSV from `remote` into `target`: a good file
/// loads in full, a file with bad rows loads nothing.
async fn csv_to_sql_on(remote: &impl RemoteStore, target: &Target) {
    let prefix = unique_prefix("csv");
    let client = remote.client();
    let table = format!("people_{}", uuid::Uuid::new_v4().simple());
    target
        .execute(&format!(
            "CREATE TABLE {table} (name VARCHAR(100) NOT NULL, city TEXT, age BIGINT)"
        ))
        .await;

    let mut csv = String::from("name,city,age\n");
    for i in 0..250 {
        csv.push_str(&format!("person {i},city {},{}\n", i % 7, 20 + i % 50));
    }
    client
        .put(
            &key(&format!("{prefix}/people.csv")),
            PutPayload::from(csv.into_bytes()),
        )
        .await
        .unwrap();

    let (sql_table, dialect) = target.config();
    let config = format!("{}{sql_table}", remote.toml_table("data", &prefix));
    let dir = tempfile::tempdir().unwrap();
    let args = |k: &'static str| {
        vec![
            "--grant".to_string(),
            "objects=data".into(),
            "--grant".into(),
            "sql=warehouse".into(),
            "--param".into(),
            "store=data".into(),
            "--param".into(),
            format!("key={k}"),
            "--param".into(),
            "db=warehouse".into(),
            "--param".into(),
            format!("table={table}"),
            "--param".into(),
            format!("dialect={dialect}"),
        ]
    };
    let good = args("people.csv");
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let out = caisson_run(dir.path(), "csv-to-sql", &config, &good);
    assert!(
        out.status.success(),
        "csv-to-sql failed: {}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows_inserted"], 250);
    let ages: i64 = (0..250).map(|i| 20 + i % 50).sum();
    assert_eq!(target.count_and_ages(&table).await, (250, ages));

    // A CSV with bad rows: nothing from it is written, and the error names
    // the bad lines.
    let bad = "name,city,age\nok one,x,30\nmissing a field,40\nok two,y,31\ntoo,many,fields,here\n";
    client
        .put(
            &key(&format!("{prefix}/bad.csv")),
            PutPayload::from_static(bad.as_bytes()),
        )
        .await
        .unwrap();
    let bad_args = args("bad.csv");
    let bad_args: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let out = caisson_run(dir.path(), "csv-to-sql", &config, &bad_args);
    assert!(!out.status.success(), "a CSV with bad rows was accepted");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 3"),
        "bad line 3 not reported: {stderr}"
    );
    assert!(
        stderr.contains("line 5"),
        "bad line 5 not reported: {stderr}"
    );
    assert_eq!(
        target.count_and_ages(&table).await,
        (250, ages),
        "a failed load left rows behind"
    );
    target.execute(&format!("DROP TABLE {table}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_export_streams_a_query_to_ndjson() {
    let (Some(s3), Some(pg)) = (s3_env(), postgres_url()) else {
        return;
    };
    let prefix = unique_prefix("export");
    let pool = pg_pool(&pg).await;
    let table = format!("events_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, kind TEXT, score DOUBLE PRECISION, ok BOOLEAN, at TIMESTAMPTZ, meta JSONB)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} SELECT g, 'kind-' || (g % 3), g / 2.0, g % 2 = 0, \
         TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 minute', jsonb_build_object('g', g) \
         FROM generate_series(1, 2500) AS g"
    )))
    .execute(&pool)
    .await
    .unwrap();

    let config = format!("{}{}", s3.toml_table("data", &prefix), pg_table(&pg));
    let dir = tempfile::tempdir().unwrap();
    let query = format!("query=SELECT id, kind, score, ok, at, meta FROM {table} ORDER BY id");
    let out = caisson_run(
        dir.path(),
        "sql-export",
        &config,
        &[
            "--grant",
            "objects=data",
            "--grant",
            "sql=warehouse",
            "--param",
            "db=warehouse",
            "--param",
            "store=data",
            "--param",
            &query,
            "--param",
            "output=export/events.ndjson",
            "--param",
            "batch=300",
        ],
    );
    assert!(
        out.status.success(),
        "sql-export failed: {}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 2500);

    let body = s3
        .client()
        .get(&key(&format!("{prefix}/export/events.ndjson")))
        .await
        .unwrap()
        .into_stream()
        .try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = text(&body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2500);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[0]["kind"], "kind-1");
    assert_eq!(lines[0]["score"], 0.5);
    assert_eq!(lines[0]["ok"], false);
    assert_eq!(lines[0]["meta"]["g"], 1);
    assert_eq!(lines[2499]["id"], 2500);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .unwrap();
}
