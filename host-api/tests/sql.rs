//! The SQL capability, called directly through its host traits (no wasm).
//!
//! SQLite tests use a temporary file. PostgreSQL and MySQL tests need a
//! server: set `CAISSON_TEST_POSTGRES_URL` (for example
//! `postgres://caisson:caisson@127.0.0.1:55432/caisson`) and
//! `CAISSON_TEST_MYSQL_URL` (a MariaDB, for example
//! `mysql://caisson:caisson@127.0.0.1:33060/caisson`). Without them they
//! print a note and pass, unless `CAISSON_REQUIRE_SERVICES=1`. Each
//! PostgreSQL test works in its own schema and each MySQL test in its own
//! database, so tests run in parallel.

use std::sync::atomic::{AtomicU32, Ordering};

use caisson_host_api::sql::{
    Connection, SqlConfig, SqlCtx, SqlKind, SqlLimits, SqlSources, SqlView,
};
use caisson_host_api::test_support::{
    SqlHarness as Harness, borrow, mariadb_cli, mysql_url, postgres_url, source,
};
use caisson_host_api::wit::sql::{DatabaseError, Host, HostRows, IsolationLevel, Value};
use caisson_host_api::{ConfigError, Grants, SqlError as WitError};
use wasmtime::component::{Resource, ResourceTable};

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[track_caller]
fn assert_access_denied<T: std::fmt::Debug>(result: Result<T, WitError>) {
    match result {
        Err(WitError::AccessDenied) => {}
        other => panic!("expected access-denied, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid_input<T: std::fmt::Debug>(result: Result<T, WitError>, contains: &str) -> String {
    match result {
        Err(WitError::InvalidInput(message)) if message.contains(contains) => message,
        other => panic!("expected invalid-input containing {contains:?}, got {other:?}"),
    }
}

/// A database refusal with a SQLSTATE starting with `sqlstate` and a
/// message containing `contains`.
#[track_caller]
fn assert_database<T: std::fmt::Debug>(
    result: Result<T, WitError>,
    sqlstate: &str,
    contains: &str,
) {
    match result {
        Err(WitError::Database(DatabaseError {
            sqlstate: state,
            message,
            ..
        })) if state.starts_with(sqlstate) && message.contains(contains) => {}
        other => {
            panic!("expected database error {sqlstate}* containing {contains:?}, got {other:?}")
        }
    }
}

/// A unique violation: `conflict` with SQLSTATE 23505.
#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, WitError>, contains: &str) {
    match result {
        Err(WitError::Conflict(DatabaseError {
            sqlstate, message, ..
        })) if sqlstate == "23505" && message.contains(contains) => {}
        other => panic!("expected a conflict (23505) containing {contains:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_too_large<T: std::fmt::Debug>(result: Result<T, WitError>, contains: &str) {
    match result {
        Err(WitError::TooLarge(message)) if message.contains(contains) => {}
        other => panic!("expected too-large containing {contains:?}, got {other:?}"),
    }
}

/// A unique name for this process and call.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// 2024-05-06T07:08:09.123456Z
const SOME_TIME: i64 = 1_714_979_289_123_456;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn config_parses_with_defaults_and_redacts_passwords() {
    let config: SqlConfig = toml::from_str(
        r#"
        [warehouse]
        type = "postgres"
        url = "postgres://reader:hunter2@db.internal:5432/warehouse?sslmode=require"
        read_only = true

        [scratch]
        type = "sqlite"
        url = "sqlite:///tmp/scratch.db"
        max_connections = 2
        "#,
    )
    .unwrap();
    let warehouse = &config["warehouse"];
    assert_eq!(warehouse.kind, SqlKind::Postgres);
    assert!(warehouse.read_only);
    assert_eq!(warehouse.max_connections, 5);
    assert_eq!(config["scratch"].kind, SqlKind::Sqlite);
    assert!(!config["scratch"].read_only);
    assert_eq!(config["scratch"].max_connections, 2);

    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("db.internal"), "{debug}");
}

#[test]
fn config_rejects_unknown_fields_and_types() {
    let unknown_field = toml::from_str::<SqlConfig>(
        r#"
        [a]
        type = "sqlite"
        url = "sqlite://x.db"
        readonly = true
        "#,
    );
    assert!(unknown_field.is_err());
    let unknown_type = toml::from_str::<SqlConfig>(
        r#"
        [a]
        type = "oracle"
        url = "oracle://x"
        "#,
    );
    assert!(unknown_type.is_err());
}

#[tokio::test]
async fn bad_urls_and_unknown_labels_are_config_errors() {
    let config = SqlConfig::from([(
        "db".to_owned(),
        source(SqlKind::Postgres, "sqlite:///tmp/x.db", false, 5),
    )]);
    assert!(matches!(
        SqlSources::from_config(&config),
        Err(ConfigError::Invalid { kind: "sql", .. })
    ));
    let config = SqlConfig::from([(
        "db".to_owned(),
        source(SqlKind::Sqlite, "sqlite::memory:", false, 0),
    )]);
    assert!(matches!(
        SqlSources::from_config(&config),
        Err(ConfigError::Invalid { kind: "sql", .. })
    ));

    let config = SqlConfig::from([(
        "db".to_owned(),
        source(SqlKind::Sqlite, "sqlite::memory:", false, 1),
    )]);
    let sources = SqlSources::from_config(&config).unwrap();
    assert_eq!(sources.labels().collect::<Vec<_>>(), ["db"]);
    match sources.ctx_for(&Grants::default().with_sql("nope"), SqlLimits::default()) {
        Err(ConfigError::UnknownLabel { kind: "sql", label }) => assert_eq!(label, "nope"),
        other => panic!("expected an unknown label, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

/// A temporary SQLite database with a writable source `rw`, a read-only
/// source `ro` on the same file, and a source `other` that is never granted.
struct Sqlite {
    _dir: tempfile::TempDir,
    config: SqlConfig,
    path: std::path::PathBuf,
}

impl Sqlite {
    fn new() -> Self {
        Self::with_max_connections(5)
    }

    fn with_max_connections(max_connections: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let config = SqlConfig::from([
            (
                "rw".to_owned(),
                source(SqlKind::Sqlite, &url, false, max_connections),
            ),
            (
                "ro".to_owned(),
                source(SqlKind::Sqlite, &url, true, max_connections),
            ),
            ("other".to_owned(), source(SqlKind::Sqlite, &url, false, 1)),
        ]);
        Self {
            _dir: dir,
            config,
            path,
        }
    }

    fn harness(&self, limits: SqlLimits) -> Harness {
        Harness::new(&self.config, &["rw", "ro"], limits)
    }
}

#[tokio::test]
async fn sqlite_round_trips_every_value_kind() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    h.execute(
        &conn,
        "CREATE TABLE t (n TEXT, b BOOLEAN, i INTEGER, f REAL, s TEXT, bl BLOB, ts DATETIME, j TEXT)",
        vec![],
    )
    .await
    .unwrap();
    let inserted = h
        .execute(
            &conn,
            "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Value::Null,
                Value::Boolean(true),
                Value::Int(i64::MIN),
                Value::Float(-1.5),
                text("héllo ✓"),
                Value::Blob(vec![0, 1, 254, 255]),
                Value::Timestamp(SOME_TIME),
                Value::Json(r#"{"b":1,"a":[true,null]}"#.into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);

    let result = h.query(&conn, "SELECT * FROM t", vec![]).await.unwrap();
    let names: Vec<_> = result.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["n", "b", "i", "f", "s", "bl", "ts", "j"]);
    let types: Vec<_> = result
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "TEXT", "BOOLEAN", "INTEGER", "REAL", "TEXT", "BLOB", "DATETIME", "TEXT"
        ]
    );
    let [row] = &result.rows[..] else {
        panic!("one row expected: {:?}", result.rows)
    };
    assert!(matches!(row[0], Value::Null));
    assert!(matches!(row[1], Value::Boolean(true)));
    assert!(matches!(row[2], Value::Int(i64::MIN)));
    assert!(matches!(row[3], Value::Float(f) if f == -1.5));
    assert!(matches!(&row[4], Value::Text(s) if s == "héllo ✓"));
    assert!(matches!(&row[5], Value::Blob(b) if b == &[0, 1, 254, 255]));
    assert!(
        matches!(row[6], Value::Timestamp(SOME_TIME)),
        "{:?}",
        row[6]
    );
    // SQLite has no JSON type: the text comes back unchanged, as text.
    assert!(matches!(&row[7], Value::Text(s) if s == r#"{"b":1,"a":[true,null]}"#));

    // The timestamp is stored as fixed-width RFC 3339 text SQLite understands.
    let stored = h
        .query(
            &conn,
            "SELECT ts, typeof(ts), unixepoch(ts, 'subsec') FROM t",
            vec![],
        )
        .await
        .unwrap();
    assert!(matches!(&stored.rows[0][0], Value::Timestamp(SOME_TIME)));
    assert!(matches!(&stored.rows[0][1], Value::Text(s) if s == "text"));
    assert!(matches!(&stored.rows[0][2], Value::Float(f) if (f - 1_714_979_289.123).abs() < 1e-3));
    let raw = h
        .query(&conn, "SELECT CAST(ts AS TEXT) AS raw FROM t", vec![])
        .await
        .unwrap();
    assert!(matches!(&raw.rows[0][0], Value::Text(s) if s == "2024-05-06T07:08:09.123456Z"));

    // Expressions have no declared type: the column shows the value's.
    let exprs = h
        .query(
            &conn,
            "SELECT 1 AS one, 2.5 AS two, 'x' AS three, NULL AS four",
            vec![],
        )
        .await
        .unwrap();
    let types: Vec<_> = exprs.columns.iter().map(|c| c.type_name.as_str()).collect();
    assert_eq!(types, ["INTEGER", "REAL", "TEXT", "NULL"]);
}

#[tokio::test]
async fn sqlite_binds_parameters_verbatim() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    h.execute(&conn, "CREATE TABLE students (name TEXT)", vec![])
        .await
        .unwrap();
    let nasty = [
        "Robert'); DROP TABLE students;--",
        "' OR '1'='1",
        "\"; DELETE FROM students; --",
        "?1 $1 :name @x",
        "\0nul",
    ];
    let stored = insert_and_read_back(
        &mut h,
        &conn,
        "INSERT INTO students (name) VALUES (?1)",
        "SELECT name FROM students ORDER BY rowid",
        &nasty,
    )
    .await;
    assert_eq!(stored, nasty);
    let rows = h
        .query(
            &conn,
            "SELECT name FROM students WHERE name = ?",
            vec![text(nasty[1])],
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn sqlite_read_only_source_refuses_writes() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let rw = h.open("rw").await;
    h.execute(&rw, "CREATE TABLE t (x INTEGER)", vec![])
        .await
        .unwrap();
    h.execute(&rw, "INSERT INTO t VALUES (1)", vec![])
        .await
        .unwrap();
    h.drop_connection(rw).await;

    let ro = h.open("ro").await;
    let rows = h.query(&ro, "SELECT x FROM t", vec![]).await.unwrap().rows;
    assert_eq!(rows.len(), 1);
    assert_access_denied(h.execute(&ro, "INSERT INTO t VALUES (2)", vec![]).await);
    assert_access_denied(h.query(&ro, "DELETE FROM t RETURNING x", vec![]).await);
    assert_access_denied(h.execute(&ro, "CREATE TABLE u (y)", vec![]).await);
    // A transaction does not help either.
    h.begin(&ro).await.unwrap();
    assert_access_denied(h.execute(&ro, "UPDATE t SET x = 3", vec![]).await);
    h.rollback(&ro).await.unwrap();
    // Nor does a pragma: the file was opened read-only.
    let _ = h.execute(&ro, "PRAGMA query_only = OFF", vec![]).await;
    assert_access_denied(h.execute(&ro, "INSERT INTO t VALUES (4)", vec![]).await);
    h.drop_connection(ro).await;

    let rows = h.rows("rw", "SELECT x FROM t", vec![]).await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn sqlite_cannot_reach_other_files() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let outside = db.path.with_file_name("outside.db");
    for label in ["rw", "ro"] {
        let conn = h.open(label).await;
        let attach = h
            .execute(
                &conn,
                "ATTACH DATABASE ?1 AS other",
                vec![text(&outside.display().to_string())],
            )
            .await;
        assert_database(attach, "HY000", "too many attached databases");
        let vacuum = h
            .execute(
                &conn,
                "VACUUM INTO ?1",
                vec![text(&outside.display().to_string())],
            )
            .await;
        assert_database(vacuum, "HY000", "too many attached databases");
        h.drop_connection(conn).await;
    }
    assert!(!outside.exists());
}

#[tokio::test]
async fn labels_not_granted_are_access_denied() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    // Configured but not granted, and not configured at all: the same.
    assert_access_denied(h.try_open("other").await);
    assert_access_denied(h.try_open("nonexistent").await);
    assert_access_denied(h.try_open("").await);
    // A run with no SQL context at all.
    let mut ctx = SqlCtx::default();
    let mut table = ResourceTable::new();
    let mut view = SqlView {
        ctx: &mut ctx,
        table: &mut table,
    };
    assert_access_denied(Host::open(&mut view, "rw".into()).await.unwrap());
}

#[tokio::test]
async fn unreachable_database_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/dir/db.sqlite", dir.path().display());
    let config = SqlConfig::from([("gone".to_owned(), source(SqlKind::Sqlite, &url, true, 1))]);
    // The worker starts: pools are lazy.
    let mut h = Harness::new(&config, &["gone"], SqlLimits::default());
    match h.try_open("gone").await {
        Err(WitError::Backend(message)) => {
            assert!(!message.contains(&url), "the url leaked: {message}");
            assert!(
                !message.contains("missing/dir"),
                "the path leaked: {message}"
            );
            assert!(message.contains("database file not found"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

/// A SQLite path that exists but is no database file SQLite can open (here
/// a directory) is told apart from a missing one, still without the path.
#[tokio::test]
async fn sqlite_file_that_cannot_be_opened_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().display());
    let config = SqlConfig::from([("dir".to_owned(), source(SqlKind::Sqlite, &url, false, 1))]);
    let mut h = Harness::new(&config, &["dir"], SqlLimits::default());
    match h.try_open("dir").await {
        Err(WitError::Backend(message)) => {
            let path = dir.path().display().to_string();
            assert!(!message.contains(&path), "the path leaked: {message}");
            assert!(message.contains("cannot be opened"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_bad_input_is_invalid_input() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    assert_database(h.query(&conn, "SELEC 1", vec![]).await, "HY000", "syntax");
    assert_database(
        h.query(&conn, "SELECT * FROM nowhere", vec![]).await,
        "HY000",
        "nowhere",
    );
    assert_invalid_input(
        h.query(&conn, "SELECT ?", vec![Value::Json("{not json".into())])
            .await,
        "parameter 1",
    );
    h.execute(&conn, "CREATE TABLE u (id INTEGER PRIMARY KEY)", vec![])
        .await
        .unwrap();
    h.execute(&conn, "INSERT INTO u VALUES (1)", vec![])
        .await
        .unwrap();
    assert_conflict(
        h.execute(&conn, "INSERT INTO u VALUES (1)", vec![]).await,
        "UNIQUE",
    );
    // Empty results still describe their columns.
    let empty = h
        .query(&conn, "SELECT id FROM u WHERE id < 0", vec![])
        .await
        .unwrap();
    assert!(empty.rows.is_empty());
    assert_eq!(empty.columns.len(), 1);
    assert_eq!(empty.columns[0].name, "id");
    assert_eq!(empty.columns[0].type_name, "INTEGER");
}

#[tokio::test]
async fn sqlite_query_enforces_row_and_byte_limits() {
    let db = Sqlite::new();
    let limits = SqlLimits {
        max_rows: 100,
        max_bytes: 64 * 1024,
        ..SqlLimits::default()
    };
    let mut h = db.harness(limits);
    let conn = h.open("rw").await;
    let series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) SELECT n FROM s";
    let ok = h.query(&conn, series, vec![Value::Int(100)]).await.unwrap();
    assert_eq!(ok.rows.len(), 100);
    assert_too_large(
        h.query(&conn, series, vec![Value::Int(101)]).await,
        "more than 100 rows; use `cursor`",
    );
    // Stops early: a result of a billion rows fails as fast as 101.
    let started = std::time::Instant::now();
    assert_too_large(
        h.query(&conn, series, vec![Value::Int(1_000_000_000)])
            .await,
        "more than 100 rows",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Ten rows of 10 KiB each pass the row limit but not the byte limit.
    assert_too_large(
        h.query(
            &conn,
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 10) \
             SELECT zeroblob(10240) FROM s",
            vec![],
        )
        .await,
        "bytes",
    );
    // The connection is still usable after a refused result.
    assert_eq!(
        h.query(&conn, "SELECT 1", vec![]).await.unwrap().rows.len(),
        1
    );
}

/// Small caps on everything the guest sizes, so that the tests stay fast.
fn small_input_caps() -> SqlLimits {
    SqlLimits {
        max_statement_bytes: 4096,
        max_params: 10,
        max_param_bytes: 1024,
        ..SqlLimits::default()
    }
}

/// The statement, parameter and error-text caps, the same on every backend:
/// what is over a cap is `too-large` naming the cap, before the database
/// sees it, and a database message quoting a large statement comes back cut
/// to `max_error_bytes` and marked with `…`.
async fn statement_caps_hold(h: &mut Harness, placeholder: &str) {
    let conn = h.open("rw").await;
    let long = format!("SELECT '{}'", "a".repeat(5000));
    assert_too_large(h.query(&conn, &long, vec![]).await, "max_statement_bytes");
    assert_too_large(h.execute(&conn, &long, vec![]).await, "max_statement_bytes");
    assert_too_large(h.cursor(&conn, &long, vec![]).await, "max_statement_bytes");
    let many = vec![Value::Int(1); 11];
    assert_too_large(
        h.query(&conn, &format!("SELECT {placeholder}"), many).await,
        "max_params",
    );
    let big = vec![text(&"b".repeat(2000))];
    assert_too_large(
        h.query(&conn, &format!("SELECT {placeholder}"), big).await,
        "max_param_bytes",
    );
    // At the caps, the statement runs.
    let fits = vec![text(&"c".repeat(900))];
    let ok = h
        .query(&conn, &format!("SELECT {placeholder}"), fits)
        .await
        .unwrap();
    assert_eq!(ok.rows.len(), 1);
    // An unterminated string: the database quotes it in its message.
    let quoted = format!("SELECT '{}", "q".repeat(3000));
    match h.query(&conn, &quoted, vec![]).await {
        Err(WitError::Database(DatabaseError { message, .. })) => {
            assert!(
                message.len() <= 256 + '…'.len_utf8(),
                "{} bytes",
                message.len()
            );
            assert!(message.ends_with('…'), "{message}");
        }
        other => panic!("expected a database error, got {other:?}"),
    }
    // The connection is still usable.
    assert_eq!(
        h.query(&conn, "SELECT 1", vec![]).await.unwrap().rows.len(),
        1
    );
    h.drop_connection(conn).await;
}

#[tokio::test]
async fn sqlite_statement_and_parameter_caps_hold() {
    let db = Sqlite::new();
    let mut h = db.harness(small_input_caps());
    statement_caps_hold(&mut h, "?").await;
}

#[tokio::test]
async fn postgres_statement_and_parameter_caps_hold() {
    let Some(mut pg) = Pg::new("postgres_input_caps", 2, small_input_caps()).await else {
        return;
    };
    statement_caps_hold(&mut pg.h, "$1::text").await;
    pg.cleanup().await;
}

#[test]
fn zero_input_caps_are_config_errors() {
    for key in [
        "max_statement_bytes",
        "max_params",
        "max_param_bytes",
        "max_error_bytes",
    ] {
        let limits: SqlLimits = toml::from_str(&format!("{key} = 0")).unwrap();
        let error = limits.validate("limits.sql").unwrap_err().to_string();
        assert_eq!(error, format!("limits.sql.{key}: must be at least 1"));
    }
}

#[tokio::test]
async fn sqlite_cursor_streams_in_clamped_batches() {
    let db = Sqlite::new();
    let limits = SqlLimits {
        max_rows: 100,
        max_batch: 1000,
        ..SqlLimits::default()
    };
    let mut h = db.harness(limits);
    let conn = h.open("rw").await;
    let rows = h
        .cursor(
            &conn,
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) \
             SELECT n, 'row ' || n AS label FROM s",
            vec![Value::Int(10_000)],
        )
        .await
        .unwrap();
    let columns = HostRows::columns(&mut h.view(), borrow(&rows))
        .await
        .unwrap();
    let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["n", "label"]);

    let mut seen = 0i64;
    let mut batches = 0;
    loop {
        // The guest asks for more than the host's batch cap.
        let batch = h.next(&rows, 5000).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 1000, "batch of {}", batch.len());
        for row in batch {
            seen += 1;
            assert!(matches!(row[0], Value::Int(n) if n == seen));
        }
        batches += 1;
    }
    assert_eq!(seen, 10_000);
    assert_eq!(batches, 10);
    // Exhausted stays exhausted; `max = 0` still asks for one row.
    assert!(h.next(&rows, 0).await.unwrap().is_empty());
    h.drop_cursor(rows).await;

    // Small batches work too.
    let rows = h
        .cursor(&conn, "SELECT 1 UNION ALL SELECT 2", vec![])
        .await
        .unwrap();
    assert_eq!(h.next(&rows, 0).await.unwrap().len(), 1);
    assert_eq!(h.next(&rows, 1).await.unwrap().len(), 1);
    assert!(h.next(&rows, 1).await.unwrap().is_empty());
    h.drop_cursor(rows).await;

    // An empty result still has columns.
    let rows = h
        .cursor(&conn, "SELECT 1 AS one WHERE 0", vec![])
        .await
        .unwrap();
    let columns = HostRows::columns(&mut h.view(), borrow(&rows))
        .await
        .unwrap();
    assert_eq!(columns.len(), 1);
    assert_eq!(columns[0].name, "one");
    assert!(h.next(&rows, 10).await.unwrap().is_empty());
    // An exhausted (empty) cursor does not block the connection.
    assert!(h.query(&conn, "SELECT 1", vec![]).await.is_ok());
    h.drop_cursor(rows).await;
}

#[tokio::test]
async fn sqlite_cursor_batches_respect_the_byte_limit() {
    let db = Sqlite::new();
    let limits = SqlLimits {
        max_bytes: 100 * 1024,
        ..SqlLimits::default()
    };
    let mut h = db.harness(limits);
    let conn = h.open("rw").await;
    // 50 rows of 10 KiB: at most ~9 fit in 100 KiB.
    let rows = h
        .cursor(
            &conn,
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 50) \
             SELECT zeroblob(10240) FROM s",
            vec![],
        )
        .await
        .unwrap();
    let mut total = 0;
    loop {
        let batch = h.next(&rows, 1000).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() < 10, "batch of {}", batch.len());
        total += batch.len();
    }
    assert_eq!(total, 50);
    h.drop_cursor(rows).await;

    // A single row above the limit is refused.
    let rows = h.cursor(&conn, "SELECT zeroblob(200 * 1024)", vec![]).await;
    match rows {
        Err(WitError::TooLarge(_)) => {}
        Ok(rows) => {
            assert_too_large(h.next(&rows, 1).await, "larger than");
            h.drop_cursor(rows).await;
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sqlite_calls_during_an_open_cursor_are_invalid_input() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    let series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100000) \
                  SELECT n FROM s";
    let rows = h.cursor(&conn, series, vec![]).await.unwrap();
    assert_eq!(h.next(&rows, 10).await.unwrap().len(), 10);
    let busy = "a cursor is open on this connection; drop it first";
    assert_invalid_input(h.query(&conn, "SELECT 1", vec![]).await, busy);
    assert_invalid_input(h.execute(&conn, "SELECT 1", vec![]).await, busy);
    assert_invalid_input(h.cursor(&conn, "SELECT 1", vec![]).await, busy);
    assert_invalid_input(h.begin(&conn).await, busy);
    assert_invalid_input(h.commit(&conn).await, busy);
    assert_invalid_input(h.rollback(&conn).await, busy);
    // Dropping the cursor mid-result frees the connection.
    h.drop_cursor(rows).await;
    let one = h.query(&conn, "SELECT 1", vec![]).await.unwrap();
    assert_eq!(one.rows.len(), 1);
    // Dropping the connection while a cursor streams is fine too: the
    // session lasts until the cursor is gone, and it reads to the end.
    let rows = h.cursor(&conn, series, vec![]).await.unwrap();
    h.drop_connection(conn).await;
    assert_eq!(h.next(&rows, 5).await.unwrap().len(), 5);
    let mut read = 5;
    loop {
        let batch = h.next(&rows, 1000).await.unwrap();
        if batch.is_empty() {
            break;
        }
        read += batch.len();
    }
    assert_eq!(read, 100_000);
    h.drop_cursor(rows).await;
}

#[tokio::test]
async fn sqlite_transactions_commit_and_roll_back() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    h.execute(&conn, "CREATE TABLE t (x INTEGER)", vec![])
        .await
        .unwrap();

    assert_invalid_input(h.commit(&conn).await, "begin");
    assert_invalid_input(h.rollback(&conn).await, "begin");

    h.begin(&conn).await.unwrap();
    assert_invalid_input(h.begin(&conn).await, "already open");
    h.execute(&conn, "INSERT INTO t VALUES (1)", vec![])
        .await
        .unwrap();
    h.rollback(&conn).await.unwrap();
    assert!(h.rows("rw", "SELECT x FROM t", vec![]).await.is_empty());

    h.begin(&conn).await.unwrap();
    h.execute(&conn, "INSERT INTO t VALUES (2)", vec![])
        .await
        .unwrap();
    // Seen inside the transaction...
    assert_eq!(
        h.query(&conn, "SELECT x FROM t", vec![])
            .await
            .unwrap()
            .rows
            .len(),
        1
    );
    h.commit(&conn).await.unwrap();
    // ...and from another connection once committed.
    let rows = h.rows("ro", "SELECT x FROM t", vec![]).await;
    assert!(matches!(rows[..], [ref row] if matches!(row[0], Value::Int(2))));
}

#[tokio::test]
async fn sqlite_dropping_a_connection_rolls_back() {
    // One connection in the pool: the next `open` gets the same one, after
    // the dropped connection's task has cleaned it up.
    let db = Sqlite::with_max_connections(1);
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    h.execute(&conn, "CREATE TABLE t (x INTEGER)", vec![])
        .await
        .unwrap();
    h.begin(&conn).await.unwrap();
    h.execute(&conn, "INSERT INTO t VALUES (1)", vec![])
        .await
        .unwrap();
    h.drop_connection(conn).await;

    let conn = h.open("rw").await;
    assert!(
        h.query(&conn, "SELECT x FROM t", vec![])
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    // A transaction the guest opened with a `BEGIN` statement is rolled back too.
    h.execute(&conn, "BEGIN", vec![]).await.unwrap();
    h.execute(&conn, "INSERT INTO t VALUES (2)", vec![])
        .await
        .unwrap();
    h.drop_connection(conn).await;
    assert!(h.rows("rw", "SELECT x FROM t", vec![]).await.is_empty());
    // The pooled connection is healthy: a new transaction works.
    let conn = h.open("rw").await;
    h.begin(&conn).await.unwrap();
    h.execute(&conn, "INSERT INTO t VALUES (3)", vec![])
        .await
        .unwrap();
    h.commit(&conn).await.unwrap();
    h.drop_connection(conn).await;
    assert_eq!(h.rows("rw", "SELECT x FROM t", vec![]).await.len(), 1);
    h.sources.close().await;
}

#[tokio::test]
async fn sqlite_temporary_objects_do_not_outlive_the_connection() {
    let db = Sqlite::with_max_connections(1);
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    h.execute(&conn, "CREATE TABLE t (x INTEGER)", vec![])
        .await
        .unwrap();
    h.execute(&conn, "INSERT INTO t VALUES (1)", vec![])
        .await
        .unwrap();
    // A temporary table shadows `t` for this connection only.
    h.execute(&conn, "CREATE TEMP TABLE t (x INTEGER)", vec![])
        .await
        .unwrap();
    h.execute(&conn, "INSERT INTO t VALUES (666)", vec![])
        .await
        .unwrap();
    h.drop_connection(conn).await;
    let rows = h.rows("rw", "SELECT x FROM t", vec![]).await;
    assert!(
        matches!(rows[..], [ref row] if matches!(row[0], Value::Int(1))),
        "{rows:?}"
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// Inserts each of `names` with `insert` (one text parameter) and returns
/// what `select` reads back, in its order: the binds-verbatim tests compare
/// it with what went in.
async fn insert_and_read_back(
    h: &mut Harness,
    conn: &Resource<Connection>,
    insert: &str,
    select: &str,
    names: &[&str],
) -> Vec<String> {
    for name in names {
        h.execute(conn, insert, vec![text(name)]).await.unwrap();
    }
    h.query(conn, select, vec![])
        .await
        .unwrap()
        .rows
        .iter()
        .map(|row| match &row[0] {
            Value::Text(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The server process behind a connection, to tell whether the pool reused it.
async fn backend_pid(h: &mut Harness, conn: &Resource<Connection>) -> i64 {
    let result = h
        .query(conn, "SELECT pg_backend_pid()::int8", vec![])
        .await
        .unwrap();
    match result.rows[0][0] {
        Value::Int(pid) => pid,
        ref other => panic!("{other:?}"),
    }
}

/// A PostgreSQL schema of its own, with a writable source `rw` and a
/// read-only source `ro`. Tables are named `{schema}.name`.
struct Pg {
    h: Harness,
    schema: String,
}

impl Pg {
    async fn new(test: &str, max_connections: u32, limits: SqlLimits) -> Option<Self> {
        let url = postgres_url(test)?;
        let config = SqlConfig::from([
            (
                "rw".to_owned(),
                source(SqlKind::Postgres, &url, false, max_connections),
            ),
            (
                "ro".to_owned(),
                source(SqlKind::Postgres, &url, true, max_connections),
            ),
        ]);
        let mut h = Harness::new(&config, &["rw", "ro"], limits);
        let schema = unique("caisson_test");
        let conn = h.open("rw").await;
        h.execute(&conn, &format!("CREATE SCHEMA {schema}"), vec![])
            .await
            .expect("create schema");
        h.drop_connection(conn).await;
        Some(Self { h, schema })
    }

    fn t(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    async fn cleanup(mut self) {
        let conn = self.h.open("rw").await;
        let _ = self
            .h
            .execute(
                &conn,
                &format!("DROP SCHEMA {} CASCADE", self.schema),
                vec![],
            )
            .await;
        self.h.drop_connection(conn).await;
        self.h.sources.close().await;
    }
}

#[tokio::test]
async fn postgres_round_trips_every_value_kind() {
    let Some(mut pg) = Pg::new(
        "postgres_round_trips_every_value_kind",
        2,
        SqlLimits::default(),
    )
    .await
    else {
        return;
    };
    let t = pg.t("t");
    let h = &mut pg.h;
    let conn = h.open("rw").await;
    h.execute(
        &conn,
        &format!(
            "CREATE TABLE {t} (n INT4, b BOOL, i INT8, f FLOAT8, s TEXT, bl BYTEA, \
             ts TIMESTAMPTZ, j JSONB, jt JSON)"
        ),
        vec![],
    )
    .await
    .unwrap();
    let json = r#"{"b": 1, "a": [true, null], "big": 123456789012345678901234567890}"#;
    h.execute(
        &conn,
        &format!("INSERT INTO {t} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
        vec![
            Value::Null,
            Value::Boolean(true),
            Value::Int(i64::MIN),
            Value::Float(-1.5),
            text("héllo ✓"),
            Value::Blob(vec![0, 1, 254, 255]),
            Value::Timestamp(SOME_TIME),
            Value::Json(json.into()),
            Value::Json(json.into()),
        ],
    )
    .await
    .unwrap();
    let result = h
        .query(&conn, &format!("SELECT * FROM {t}"), vec![])
        .await
        .unwrap();
    let types: Vec<_> = result
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "INT4",
            "BOOL",
            "INT8",
            "FLOAT8",
            "TEXT",
            "BYTEA",
            "TIMESTAMPTZ",
            "JSONB",
            "JSON"
        ]
    );
    let row = &result.rows[0];
    assert!(matches!(row[0], Value::Null));
    assert!(matches!(row[1], Value::Boolean(true)));
    assert!(matches!(row[2], Value::Int(i64::MIN)));
    assert!(matches!(row[3], Value::Float(f) if f == -1.5));
    assert!(matches!(&row[4], Value::Text(s) if s == "héllo ✓"));
    assert!(matches!(&row[5], Value::Blob(b) if b == &[0, 1, 254, 255]));
    assert!(
        matches!(row[6], Value::Timestamp(SOME_TIME)),
        "{:?}",
        row[6]
    );
    // JSONB normalises (key order, spaces); the big number survives exactly.
    let Value::Json(row7) = &row[7] else {
        panic!("{:?}", row[7])
    };
    assert_eq!(
        row7,
        r#"{"a": [true, null], "b": 1, "big": 123456789012345678901234567890}"#
    );
    // A `json` parameter is bound as JSONB, so a JSON column stores the
    // normalised text (PostgreSQL casts it on assignment).
    assert!(
        matches!(&row[8], Value::Json(s) if s == row7),
        "{:?}",
        row[8]
    );

    // Untyped NULLs fit any column.
    h.execute(
        &conn,
        &format!("INSERT INTO {t} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
        vec![Value::Null; 9],
    )
    .await
    .unwrap();
    let nulls = h
        .query(&conn, &format!("SELECT * FROM {t} WHERE b IS NULL"), vec![])
        .await
        .unwrap();
    assert!(nulls.rows[0].iter().all(|v| matches!(v, Value::Null)));

    // Every other kind, and the fallback for a type with no case.
    let result = h
        .query(
            &conn,
            "SELECT 12345678901234567890.000123::numeric AS num, 'NaN'::numeric AS nan, \
             '00010203-0405-0607-0809-0a0b0c0d0e0f'::uuid AS id, '2024-02-29'::date AS day, \
             'infinity'::date AS forever, '13:14:15.5'::time AS at, \
             '2024-05-06 07:08:09.123456'::timestamp AS naive, 'infinity'::timestamptz AS never, \
             42::int2 AS small, 7::int4 AS mid, 1.25::float4 AS f4, 'x'::varchar AS v, \
             'abc'::char(5) AS c, 'pg_class'::name AS nm, 1259::oid AS o",
            vec![],
        )
        .await
        .unwrap();
    let row = &result.rows[0];
    let expect_text = [(11, "x"), (12, "abc  "), (13, "pg_class")];
    for (i, expected) in expect_text {
        assert!(
            matches!(&row[i], Value::Text(s) if s == expected),
            "column {}: {:?}",
            result.columns[i].name,
            row[i]
        );
    }
    assert!(matches!(&row[0], Value::Decimal(s) if s == "12345678901234567890.000123"));
    assert!(matches!(&row[1], Value::Decimal(s) if s == "NaN"));
    assert!(matches!(&row[2], Value::Uuid(s) if s == "00010203-0405-0607-0809-0a0b0c0d0e0f"));
    // 2024-02-29 is day 19782 of the Unix epoch.
    assert!(matches!(row[3], Value::Date(19_782)), "{:?}", row[3]);
    assert!(matches!(row[4], Value::Date(i32::MAX)), "{:?}", row[4]);
    assert!(
        matches!(row[5], Value::Time(47_655_500_000)),
        "{:?}",
        row[5]
    );
    // TIMESTAMP is a wall-clock time, TIMESTAMPTZ an instant: kept apart.
    assert!(matches!(row[6], Value::Datetime(SOME_TIME)), "{:?}", row[6]);
    assert!(matches!(row[7], Value::Timestamp(i64::MAX)), "{:?}", row[7]);
    assert!(matches!(row[8], Value::Int(42)));
    assert!(matches!(row[9], Value::Int(7)));
    assert!(matches!(row[10], Value::Float(f) if f == 1.25));
    assert!(matches!(row[14], Value::Int(1259)));

    let span = h
        .query(
            &conn,
            "SELECT interval '1 mon 2 days 3.5 seconds' AS span",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &span.rows[0][0],
            Value::Interval(i) if (i.months, i.days, i.microseconds) == (1, 2, 3_500_000)
        ),
        "{:?}",
        span.rows[0][0]
    );
    // A type with no case degrades to its name and wire form.
    let inet = h
        .query(&conn, "SELECT '10.1.2.3'::inet AS addr", vec![])
        .await
        .unwrap();
    assert!(
        matches!(&inet.rows[0][0], Value::Other(o) if o.type_name == "INET" && o.text.starts_with("\\x")),
        "{:?}",
        inet.rows[0][0]
    );
    let cast = h
        .query(&conn, "SELECT (interval '1 day')::text AS span", vec![])
        .await
        .unwrap();
    assert!(matches!(&cast.rows[0][0], Value::Text(s) if s == "1 day"));

    // Enums and domains.
    let mood = pg.t("mood");
    let h = &mut pg.h;
    h.execute(
        &conn,
        &format!("CREATE TYPE {mood} AS ENUM ('sad', 'happy')"),
        vec![],
    )
    .await
    .unwrap();
    let positive = pg.t("positive");
    let h = &mut pg.h;
    h.execute(
        &conn,
        &format!("CREATE DOMAIN {positive} AS int8 CHECK (VALUE > 0)"),
        vec![],
    )
    .await
    .unwrap();
    let result = h
        .query(
            &conn,
            &format!("SELECT 'happy'::{mood} AS m, 5::{positive} AS p"),
            vec![],
        )
        .await
        .unwrap();
    assert!(matches!(&result.rows[0][0], Value::Text(s) if s == "happy"));
    assert!(matches!(result.rows[0][1], Value::Int(5)));
    h.drop_connection(conn).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_parameter_types_do_not_leak_between_calls() {
    let Some(mut pg) = Pg::new("postgres_parameter_types", 1, SqlLimits::default()).await else {
        return;
    };
    let h = &mut pg.h;
    let conn = h.open("rw").await;
    // The same statement text bound with different kinds in turn: each must
    // be read as its own type, not as the first call's.
    let statement = "SELECT $1::text AS v";
    let cases = [
        (Value::Int(42), "42"),
        (Value::Float(2.5), "2.5"),
        (text("hello"), "hello"),
        (Value::Timestamp(0), "1970-01-01 00:00:00+00"),
        (Value::Boolean(false), "false"),
        (Value::Null, ""),
    ];
    h.execute(&conn, "SET TIME ZONE 'UTC'", vec![])
        .await
        .unwrap();
    for (param, expected) in cases {
        let result = h
            .query(&conn, statement, vec![param.clone()])
            .await
            .unwrap();
        match &result.rows[0][0] {
            Value::Text(s) => assert_eq!(s, expected),
            Value::Null => assert_eq!(expected, "", "{param:?}"),
            other => panic!("{param:?} -> {other:?}"),
        }
    }
    // Bad parameters are the guest's error.
    assert_invalid_input(
        h.query(&conn, "SELECT $1::jsonb", vec![Value::Json("{nope".into())])
            .await,
        "not valid JSON",
    );
    assert_database(
        h.query(&conn, "SELECT $1::int4", vec![text("x")]).await,
        "22",
        "",
    );
    h.drop_connection(conn).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_binds_parameters_verbatim() {
    let Some(mut pg) = Pg::new(
        "postgres_binds_parameters_verbatim",
        2,
        SqlLimits::default(),
    )
    .await
    else {
        return;
    };
    let t = pg.t("students");
    let h = &mut pg.h;
    let conn = h.open("rw").await;
    h.execute(
        &conn,
        &format!("CREATE TABLE {t} (id serial, name TEXT)"),
        vec![],
    )
    .await
    .unwrap();
    let nasty = [
        "Robert'); DROP TABLE students;--",
        "' OR '1'='1",
        "$1 $$ $tag$ \\x",
        "'; COMMIT; DROP SCHEMA public CASCADE; --",
    ];
    let stored = insert_and_read_back(
        h,
        &conn,
        &format!("INSERT INTO {t} (name) VALUES ($1)"),
        &format!("SELECT name FROM {t} ORDER BY id"),
        &nasty,
    )
    .await;
    assert_eq!(stored, nasty);
    // Several statements in one call are refused outright.
    assert!(
        h.execute(&conn, &format!("SELECT 1; DROP TABLE {t}"), vec![])
            .await
            .is_err()
    );
    let count = h
        .query(&conn, &format!("SELECT count(*) FROM {t}"), vec![])
        .await
        .unwrap();
    assert!(matches!(count.rows[0][0], Value::Int(4)));
    // `COPY FROM STDIN` needs a sub-protocol the host does not speak: the
    // server drops the connection. The guest gets errors, not a hang, and
    // the broken connection is not returned to the pool.
    let copy = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        h.execute(&conn, &format!("COPY {t} (name) FROM STDIN"), vec![]),
    )
    .await
    .expect("COPY must not hang");
    assert!(copy.is_err(), "{copy:?}");
    h.drop_connection(conn).await;
    let rows = h
        .rows("rw", &format!("SELECT count(*) FROM {t}"), vec![])
        .await;
    assert!(matches!(rows[0][0], Value::Int(4)));
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_read_only_source_refuses_writes_and_bypasses() {
    let Some(mut pg) = Pg::new("postgres_read_only", 1, SqlLimits::default()).await else {
        return;
    };
    let t = pg.t("t");
    let h = &mut pg.h;
    let rw = h.open("rw").await;
    h.execute(&rw, &format!("CREATE TABLE {t} (x INT8)"), vec![])
        .await
        .unwrap();
    h.execute(&rw, &format!("INSERT INTO {t} VALUES (0)"), vec![])
        .await
        .unwrap();
    h.drop_connection(rw).await;

    let ro = h.open("ro").await;
    let first_pid = backend_pid(h, &ro).await;
    let insert = format!("INSERT INTO {t} VALUES ($1)");
    assert_eq!(
        h.query(&ro, &format!("SELECT x FROM {t}"), vec![])
            .await
            .unwrap()
            .rows
            .len(),
        1
    );
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(1)]).await);

    // Bypass 1: turn the session default off, then write.
    let _ = h
        .execute(&ro, "SET default_transaction_read_only = off", vec![])
        .await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(2)]).await);
    let _ = h
        .execute(
            &ro,
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            vec![],
        )
        .await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(3)]).await);

    // Bypass 2: end the host's transaction with a guest `COMMIT`, then write.
    let _ = h.execute(&ro, "COMMIT", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(4)]).await);
    let _ = h.execute(&ro, "ROLLBACK", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(5)]).await);

    // Bypass 3: make the transaction read-write. As the first command of the
    // host's transaction this is allowed, but that transaction ends with the
    // statement; inside a statement that could also write it is refused.
    let _ = h.execute(&ro, "SET TRANSACTION READ WRITE", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(6)]).await);
    let _ = h.execute(&ro, "START TRANSACTION READ WRITE", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(6)]).await);
    let procedure = h
        .execute(
            &ro,
            &format!("DO $$ BEGIN SET TRANSACTION READ WRITE; INSERT INTO {t} VALUES (6); END $$"),
            vec![],
        )
        .await;
    assert!(procedure.is_err(), "{procedure:?}");
    let function = h
        .query(
            &ro,
            "SELECT set_config('transaction_read_only', 'off', false)",
            vec![],
        )
        .await;
    assert!(function.is_err(), "{function:?}");

    // Bypass 4: the guest's own transaction; begin/commit are accepted but
    // every statement still runs read-only.
    h.begin(&ro).await.unwrap();
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(7)]).await);
    let _ = h.execute(&ro, "COMMIT", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(8)]).await);
    h.commit(&ro).await.unwrap();

    // Writes hidden in a query, a CTE, a function call or DDL.
    assert_access_denied(
        h.query(
            &ro,
            &format!("WITH w AS (INSERT INTO {t} VALUES (9) RETURNING x) SELECT * FROM w"),
            vec![],
        )
        .await,
    );
    assert_access_denied(h.execute(&ro, &format!("DROP TABLE {t}"), vec![]).await);
    assert_access_denied(
        h.execute(&ro, "CREATE TEMP TABLE tmp (x int)", vec![])
            .await,
    );
    // ("invalid transaction termination": a procedure cannot end the
    // host's transaction either.)
    let procedure = h
        .execute(
            &ro,
            &format!("DO $$ BEGIN COMMIT; INSERT INTO {t} VALUES (10); END $$"),
            vec![],
        )
        .await;
    assert!(procedure.is_err(), "{procedure:?}");
    // A cursor on a read-only source is read-only too.
    assert_access_denied(
        h.cursor(
            &ro,
            &format!("INSERT INTO {t} VALUES (11) RETURNING x"),
            vec![],
        )
        .await,
    );
    h.drop_connection(ro).await;

    // The next user of the pooled connection (max_connections = 1) gets a
    // clean, still read-only session.
    let ro = h.open("ro").await;
    assert_eq!(
        backend_pid(h, &ro).await,
        first_pid,
        "the session was reset and reused"
    );
    let setting = h
        .query(
            &ro,
            "SELECT current_setting('default_transaction_read_only')",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        matches!(&setting.rows[0][0], Value::Text(s) if s == "on"),
        "{setting:?}"
    );
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(12)]).await);
    h.drop_connection(ro).await;

    // Nothing was written: checked through the writable source.
    let rows = h.rows("rw", &format!("SELECT x FROM {t}"), vec![]).await;
    assert!(
        matches!(rows[..], [ref row] if matches!(row[0], Value::Int(0))),
        "{rows:?}"
    );
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_query_enforces_row_limit_and_cursor_streams() {
    let limits = SqlLimits {
        max_rows: 100,
        max_batch: 1000,
        ..SqlLimits::default()
    };
    let Some(mut pg) = Pg::new("postgres_limits_and_cursor", 2, limits).await else {
        return;
    };
    let h = &mut pg.h;
    let conn = h.open("ro").await;
    let series = "SELECT n, repeat('x', 10) AS pad FROM generate_series(1, $1) AS n";
    assert_eq!(
        h.query(&conn, series, vec![Value::Int(100)])
            .await
            .unwrap()
            .rows
            .len(),
        100
    );
    assert_too_large(
        h.query(&conn, series, vec![Value::Int(101)]).await,
        "more than 100 rows; use `cursor` to stream large results",
    );
    assert_too_large(
        h.query(&conn, series, vec![Value::Int(1_000_000)]).await,
        "more than 100 rows",
    );

    let rows = h
        .cursor(&conn, series, vec![Value::Int(10_000)])
        .await
        .unwrap();
    let columns = HostRows::columns(&mut h.view(), borrow(&rows))
        .await
        .unwrap();
    let types: Vec<_> = columns.iter().map(|c| c.type_name.as_str()).collect();
    assert_eq!(types, ["INT8", "TEXT"]);
    let busy = "a cursor is open on this connection; drop it first";
    assert_invalid_input(h.query(&conn, "SELECT 1", vec![]).await, busy);
    assert_invalid_input(h.begin(&conn).await, busy);
    let mut seen = 0i64;
    loop {
        let batch = h.next(&rows, u32::MAX).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 1000);
        for row in batch {
            seen += 1;
            assert!(matches!(row[0], Value::Int(n) if n == seen));
        }
    }
    assert_eq!(seen, 10_000);
    h.drop_cursor(rows).await;

    // Dropped half-way: the connection works again.
    let rows = h
        .cursor(&conn, series, vec![Value::Int(1_000_000)])
        .await
        .unwrap();
    assert_eq!(h.next(&rows, 10).await.unwrap().len(), 10);
    h.drop_cursor(rows).await;
    let one = h.query(&conn, "SELECT 1 AS one", vec![]).await.unwrap();
    assert!(matches!(one.rows[0][0], Value::Int(1)));
    // Empty results have columns.
    let empty = h
        .query(
            &conn,
            "SELECT n FROM generate_series(1, $1) AS n",
            vec![Value::Int(0)],
        )
        .await
        .unwrap();
    assert_eq!(empty.columns.len(), 1);
    assert_eq!(empty.columns[0].type_name, "INT8");
    h.drop_connection(conn).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_transactions_commit_roll_back_and_drop() {
    let Some(mut pg) = Pg::new("postgres_transactions", 1, SqlLimits::default()).await else {
        return;
    };
    let t = pg.t("t");
    let h = &mut pg.h;
    let conn = h.open("rw").await;
    h.execute(
        &conn,
        &format!("CREATE TABLE {t} (x INT8 PRIMARY KEY)"),
        vec![],
    )
    .await
    .unwrap();
    let insert = format!("INSERT INTO {t} VALUES ($1)");
    let count = format!("SELECT count(*) FROM {t}");

    assert_invalid_input(h.commit(&conn).await, "begin");
    h.begin(&conn).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(1)])
        .await
        .unwrap();
    h.rollback(&conn).await.unwrap();
    let rows = h.query(&conn, &count, vec![]).await.unwrap().rows;
    assert!(matches!(rows[0][0], Value::Int(0)));

    h.begin(&conn).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(2)])
        .await
        .unwrap();
    h.commit(&conn).await.unwrap();
    let rows = h.query(&conn, &count, vec![]).await.unwrap().rows;
    assert!(matches!(rows[0][0], Value::Int(1)));

    // A failed statement aborts the transaction: commit says so.
    h.begin(&conn).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(3)])
        .await
        .unwrap();
    assert_conflict(
        h.execute(&conn, &insert, vec![Value::Int(2)]).await,
        "duplicate key",
    );
    assert_database(h.query(&conn, "SELECT 1", vec![]).await, "25P02", "aborted");
    assert_invalid_input(h.commit(&conn).await, "nothing was committed");
    let rows = h.query(&conn, &count, vec![]).await.unwrap().rows;
    assert!(matches!(rows[0][0], Value::Int(1)));

    // Dropping the connection mid-transaction rolls back.
    h.begin(&conn).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(4)])
        .await
        .unwrap();
    h.execute(&conn, "SET search_path = pg_catalog", vec![])
        .await
        .unwrap();
    let first_pid = backend_pid(h, &conn).await;
    h.drop_connection(conn).await;
    // (max_connections = 1: this is the same, cleaned-up connection.)
    let conn = h.open("rw").await;
    assert_eq!(
        backend_pid(h, &conn).await,
        first_pid,
        "the session was reset and reused"
    );
    let rows = h.query(&conn, &count, vec![]).await.unwrap().rows;
    assert!(matches!(rows[0][0], Value::Int(1)));
    // ...and the session was reset.
    let path = h.query(&conn, "SHOW search_path", vec![]).await.unwrap();
    assert!(
        matches!(&path.rows[0][0], Value::Text(s) if s.contains("public")),
        "{path:?}"
    );

    // A guest `BEGIN` statement is rolled back too.
    h.execute(&conn, "BEGIN", vec![]).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(5)])
        .await
        .unwrap();
    h.drop_connection(conn).await;
    let rows = h.rows("rw", &count, vec![]).await;
    assert!(matches!(rows[0][0], Value::Int(1)));
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_unreachable_server_is_a_backend_error() {
    let Some(url) = postgres_url("postgres_unreachable_server") else {
        return;
    };
    // The same credentials against a database that does not exist.
    let mut parsed = url::Url::parse(&url).unwrap();
    parsed.set_path("caisson_no_such_database");
    let config = SqlConfig::from([(
        "gone".to_owned(),
        source(SqlKind::Postgres, parsed.as_str(), false, 1),
    )]);
    let mut h = Harness::new(&config, &["gone"], SqlLimits::default());
    match h.try_open("gone").await {
        Err(WitError::Backend(message)) => {
            let password = parsed.password().unwrap_or("\u{0}");
            assert!(!message.contains(password), "{message}");
            assert!(!message.contains("caisson_no_such_database"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn read_only_transactions_refuse_writes() {
    let db = Sqlite::new();
    let mut h = db.harness(SqlLimits::default());
    let conn = h.open("rw").await;
    h.execute(&conn, "CREATE TABLE t (x INTEGER)", vec![])
        .await
        .unwrap();
    h.begin_with(&conn, Some(IsolationLevel::Serializable), true)
        .await
        .unwrap();
    assert_access_denied(h.execute(&conn, "INSERT INTO t VALUES (1)", vec![]).await);
    h.commit(&conn).await.unwrap();
    // Over with the transaction: writes work again.
    assert_eq!(
        h.execute(&conn, "INSERT INTO t VALUES (2)", vec![])
            .await
            .unwrap(),
        1
    );
    h.drop_connection(conn).await;

    let Some(mut pg) = Pg::new("read_only_transactions", 1, SqlLimits::default()).await else {
        return;
    };
    let t = pg.t("t");
    let h = &mut pg.h;
    let conn = h.open("rw").await;
    h.execute(&conn, &format!("CREATE TABLE {t} (x INT8)"), vec![])
        .await
        .unwrap();
    h.begin_with(&conn, Some(IsolationLevel::RepeatableRead), true)
        .await
        .unwrap();
    let level = h
        .query(
            &conn,
            "SELECT current_setting('transaction_isolation')",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        matches!(&level.rows[0][0], Value::Text(s) if s == "repeatable read"),
        "{:?}",
        level.rows
    );
    assert_access_denied(
        h.execute(&conn, &format!("INSERT INTO {t} VALUES (1)"), vec![])
            .await,
    );
    h.rollback(&conn).await.unwrap();
    h.drop_connection(conn).await;
    pg.cleanup().await;
}

// ---------------------------------------------------------------------------
// MySQL (MariaDB)
// ---------------------------------------------------------------------------

/// A MariaDB database of its own, with a writable source `rw` and a
/// read-only source `ro`. Tables are named `{database}.name`.
struct My {
    h: Harness,
    url: String,
    database: String,
}

impl My {
    async fn new(test: &str, max_connections: u32, limits: SqlLimits) -> Option<Self> {
        let url = mysql_url(test)?;
        let config = SqlConfig::from([
            (
                "rw".to_owned(),
                source(SqlKind::Mysql, &url, false, max_connections),
            ),
            (
                "ro".to_owned(),
                source(SqlKind::Mysql, &url, true, max_connections),
            ),
        ]);
        let mut h = Harness::new(&config, &["rw", "ro"], limits);
        let database = unique("caisson_test");
        let conn = h.open("rw").await;
        h.execute(&conn, &format!("CREATE DATABASE {database}"), vec![])
            .await
            .expect("create database");
        h.drop_connection(conn).await;
        Some(Self { h, url, database })
    }

    fn t(&self, name: &str) -> String {
        format!("{}.{name}", self.database)
    }

    /// `sql` through the `mariadb` client: what the server holds.
    fn cli(&self, sql: &str) -> String {
        mariadb_cli(&self.url, sql)
    }

    async fn cleanup(mut self) {
        let conn = self.h.open("rw").await;
        let _ = self
            .h
            .execute(&conn, &format!("DROP DATABASE {}", self.database), vec![])
            .await;
        self.h.drop_connection(conn).await;
        self.h.sources.close().await;
    }
}

/// `n` rows numbered 1..=n (up to 100 000), from no table: a cross join of
/// digits, which MySQL and MariaDB both run without a recursion limit.
fn mysql_numbers(n: u32) -> String {
    let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    format!(
        "SELECT n FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 1 AS n \
         FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f) s \
         WHERE n <= {n} ORDER BY n"
    )
}

#[tokio::test]
async fn mysql_round_trips_every_value_kind() {
    let Some(mut my) = My::new("mysql_round_trips", 2, SqlLimits::default()).await else {
        return;
    };
    let t = my.t("t");
    let h = &mut my.h;
    let conn = h.open("rw").await;
    // Every width of integer, signed and not, and the other types a MySQL
    // table holds, each with a value at an edge.
    let cases: Vec<(&str, &str, Value, Value)> = vec![
        (
            "v_bool",
            "BOOLEAN",
            Value::Boolean(true),
            Value::Boolean(true),
        ),
        ("v_tiny", "TINYINT", Value::Int(-128), Value::Int(-128)),
        (
            "v_utiny",
            "TINYINT UNSIGNED",
            Value::Int(255),
            Value::Int(255),
        ),
        (
            "v_small",
            "SMALLINT",
            Value::Int(-32768),
            Value::Int(-32768),
        ),
        (
            "v_usmall",
            "SMALLINT UNSIGNED",
            Value::Int(65535),
            Value::Int(65535),
        ),
        (
            "v_medium",
            "MEDIUMINT",
            Value::Int(-8388608),
            Value::Int(-8388608),
        ),
        (
            "v_umedium",
            "MEDIUMINT UNSIGNED",
            Value::Int(16777215),
            Value::Int(16777215),
        ),
        (
            "v_int",
            "INT",
            Value::Int(i32::MIN.into()),
            Value::Int(i32::MIN.into()),
        ),
        (
            "v_uint32",
            "INT UNSIGNED",
            Value::Int(u32::MAX.into()),
            Value::Int(u32::MAX.into()),
        ),
        (
            "v_big",
            "BIGINT",
            Value::Int(i64::MIN),
            Value::Int(i64::MIN),
        ),
        (
            "v_ubig",
            "BIGINT UNSIGNED",
            Value::Uint(u64::MAX),
            Value::Uint(u64::MAX),
        ),
        ("v_float", "FLOAT", Value::Float(1.25), Value::Float(1.25)),
        (
            "v_double",
            "DOUBLE",
            Value::Float(-1.5e300),
            Value::Float(-1.5e300),
        ),
        (
            "v_decimal",
            "DECIMAL(38, 18)",
            Value::Decimal("-12345678901234567890.123456789012345678".into()),
            Value::Decimal("-12345678901234567890.123456789012345678".into()),
        ),
        (
            "v_varchar",
            "VARCHAR(40)",
            text("héllo ✓ 'x'"),
            text("héllo ✓ 'x'"),
        ),
        ("v_text", "TEXT", text("long text"), text("long text")),
        ("v_char", "CHAR(3)", text("ab"), text("ab")),
        (
            "v_enum",
            "ENUM('sad', 'happy')",
            text("happy"),
            text("happy"),
        ),
        (
            "v_blob",
            "BLOB",
            Value::Blob(vec![0, 1, 254, 255]),
            Value::Blob(vec![0, 1, 254, 255]),
        ),
        (
            "v_binary",
            "VARBINARY(8)",
            Value::Blob(vec![0xde, 0xad]),
            Value::Blob(vec![0xde, 0xad]),
        ),
        ("v_date", "DATE", Value::Date(-165), Value::Date(-165)),
        (
            "v_time",
            "TIME(6)",
            Value::Time(45_296_000_001),
            Value::Time(45_296_000_001),
        ),
        (
            "v_datetime",
            "DATETIME(6)",
            Value::Datetime(SOME_TIME),
            Value::Datetime(SOME_TIME),
        ),
        (
            "v_timestamp",
            "TIMESTAMP(6) NULL",
            Value::Timestamp(SOME_TIME),
            Value::Timestamp(SOME_TIME),
        ),
        ("v_year", "YEAR", Value::Int(2024), Value::Int(2024)),
        // MariaDB's JSON is LONGTEXT with a binary collation and a validity
        // check: text, not bytes (MySQL's own JSON type comes back as
        // `json`). A binary collation is still text; only BINARY, VARBINARY
        // and the BLOBs (the `binary` collation) are bytes.
        (
            "v_json",
            "JSON",
            Value::Json(r#"{"b": 1, "a": [true, null]}"#.into()),
            text(r#"{"b": 1, "a": [true, null]}"#),
        ),
        (
            "v_bin_text",
            "VARCHAR(10) COLLATE utf8mb4_bin",
            text("Bin"),
            text("Bin"),
        ),
        (
            "v_varbinary",
            "VARBINARY(10)",
            Value::Blob(b"\x00\xffraw".to_vec()),
            Value::Blob(b"\x00\xffraw".to_vec()),
        ),
        // Kinds MySQL has no type for are stored as text.
        (
            "v_uuid",
            "CHAR(36)",
            Value::Uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into()),
            text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (
            "v_ints",
            "TEXT",
            Value::IntArray(vec![Some(1), None]),
            text("[1,null]"),
        ),
    ];
    let defs: Vec<String> = cases
        .iter()
        .map(|(name, ty, _, _)| format!("{name} {ty}"))
        .collect();
    h.execute(
        &conn,
        &format!(
            "CREATE TABLE {t} (id BIGINT AUTO_INCREMENT PRIMARY KEY, {})",
            defs.join(", ")
        ),
        vec![],
    )
    .await
    .unwrap();
    let names: Vec<&str> = cases.iter().map(|(name, ..)| *name).collect();
    let insert = format!(
        "INSERT INTO {t} ({}) VALUES ({})",
        names.join(", "),
        vec!["?"; names.len()].join(", ")
    );
    let done = h
        .execute_result(&conn, &insert, cases.iter().map(|c| c.2.clone()).collect())
        .await
        .unwrap();
    assert_eq!(done.rows_affected, 1);
    assert_eq!(done.last_insert_id, Some(1), "LAST_INSERT_ID()");
    let done = h
        .execute_result(&conn, &insert, cases.iter().map(|_| Value::Null).collect())
        .await
        .unwrap();
    assert_eq!(done.last_insert_id, Some(2));

    let select = format!("SELECT {} FROM {t} ORDER BY id", names.join(", "));
    let result = h.query(&conn, &select, vec![]).await.unwrap();
    for (i, (name, _, sent, expected)) in cases.iter().enumerate() {
        let got = &result.rows[0][i];
        assert_eq!(
            format!("{expected:?}"),
            format!("{got:?}"),
            "{name}: sent {sent:?}"
        );
        assert!(
            matches!(result.rows[1][i], Value::Null),
            "{name}: {:?}",
            result.rows[1][i]
        );
    }
    let types: Vec<_> = result
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        &types[..12],
        [
            "BOOLEAN",
            "TINYINT",
            "TINYINT UNSIGNED",
            "SMALLINT",
            "SMALLINT UNSIGNED",
            "MEDIUMINT",
            "MEDIUMINT UNSIGNED",
            "INT",
            "INT UNSIGNED",
            "BIGINT",
            "BIGINT UNSIGNED",
            "FLOAT"
        ]
    );

    // What the server stored, seen through the `mariadb` client: the
    // parameters were bound as their real types.
    let stored = my.cli(&format!(
        "SET time_zone = '+00:00'; \
         SELECT v_bool, v_ubig, v_decimal, v_date, v_time, v_datetime, v_timestamp, \
         HEX(v_blob), v_json FROM {t} WHERE id = 1"
    ));
    assert_eq!(
        stored.trim_end().split('\t').collect::<Vec<_>>(),
        [
            "1",
            "18446744073709551615",
            "-12345678901234567890.123456789012345678",
            "1969-07-20",
            "12:34:56.000001",
            "2024-05-06 07:08:09.123456",
            "2024-05-06 07:08:09.123456",
            "0001FEFF",
            r#"{"b": 1, "a": [true, null]}"#,
        ]
    );

    // Expressions, a TIME beyond a day (an interval), a zero date (no
    // date at all) and a type with no case.
    let h = &mut my.h;
    let result = h
        .query(
            &conn,
            "SELECT 1 + 1 AS two, 2.5 AS dec_lit, 'x' AS s, NULL AS nothing, \
             CAST('-100:00:00' AS TIME) AS span, CAST(18446744073709551615 AS UNSIGNED) AS umax, \
             ST_GeomFromText('POINT(1 1)') AS geo",
            vec![],
        )
        .await
        .unwrap();
    let row = &result.rows[0];
    assert!(matches!(row[0], Value::Int(2)), "{:?}", row[0]);
    assert!(
        matches!(&row[1], Value::Decimal(d) if d == "2.5"),
        "{:?}",
        row[1]
    );
    assert!(matches!(&row[2], Value::Text(s) if s == "x"));
    assert!(matches!(row[3], Value::Null));
    assert!(
        matches!(&row[4], Value::Interval(i) if i.microseconds == -360_000_000_000),
        "{:?}",
        row[4]
    );
    assert!(matches!(row[5], Value::Uint(u64::MAX)), "{:?}", row[5]);
    assert!(
        matches!(&row[6], Value::Other(o) if o.type_name == "GEOMETRY" && o.text.starts_with("\\x")),
        "{:?}",
        row[6]
    );

    // What MySQL cannot store is `unsupported`; a malformed value is the
    // guest's error.
    for value in [
        Value::Date(i32::MAX),
        Value::Timestamp(i64::MIN),
        Value::Decimal("NaN".into()),
    ] {
        match h.query(&conn, "SELECT ?", vec![value.clone()]).await {
            Err(WitError::Unsupported(_)) => {}
            other => panic!("{value:?}: expected unsupported, got {other:?}"),
        }
    }
    assert_invalid_input(
        h.query(&conn, "SELECT ?", vec![Value::Json("{nope".into())])
            .await,
        "not valid JSON",
    );
    h.drop_connection(conn).await;
    my.cleanup().await;
}

#[tokio::test]
async fn mysql_binds_parameters_verbatim() {
    let Some(mut my) = My::new("mysql_binds_verbatim", 2, SqlLimits::default()).await else {
        return;
    };
    let t = my.t("students");
    let h = &mut my.h;
    let conn = h.open("rw").await;
    h.execute(
        &conn,
        &format!("CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, name TEXT)"),
        vec![],
    )
    .await
    .unwrap();
    let nasty = [
        "Robert'); DROP TABLE students;--",
        "' OR '1'='1",
        "\\'; DROP DATABASE caisson; --",
        "? $1 :name @x",
    ];
    let stored = insert_and_read_back(
        h,
        &conn,
        &format!("INSERT INTO {t} (name) VALUES (?)"),
        &format!("SELECT name FROM {t} ORDER BY id"),
        &nasty,
    )
    .await;
    assert_eq!(stored, nasty);
    // Several statements in one call are refused: guest statements are
    // prepared, and a prepared statement is one statement.
    assert!(
        h.execute(&conn, &format!("SELECT 1; DROP TABLE {t}"), vec![])
            .await
            .is_err()
    );
    h.drop_connection(conn).await;
    assert_eq!(my.cli(&format!("SELECT count(*) FROM {t}")).trim(), "4");
    my.cleanup().await;
}

#[tokio::test]
async fn mysql_read_only_source_refuses_writes_and_bypasses() {
    let Some(mut my) = My::new("mysql_read_only", 1, SqlLimits::default()).await else {
        return;
    };
    let t = my.t("t");
    let h = &mut my.h;
    let rw = h.open("rw").await;
    h.execute(&rw, &format!("CREATE TABLE {t} (x BIGINT)"), vec![])
        .await
        .unwrap();
    h.execute(&rw, &format!("INSERT INTO {t} VALUES (0)"), vec![])
        .await
        .unwrap();
    h.drop_connection(rw).await;

    let ro = h.open("ro").await;
    let insert = format!("INSERT INTO {t} VALUES (?)");
    assert_eq!(
        h.query(&ro, &format!("SELECT x FROM {t}"), vec![])
            .await
            .unwrap()
            .rows
            .len(),
        1
    );
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(1)]).await);
    // Turn the session default off, then write.
    let _ = h
        .execute(&ro, "SET SESSION TRANSACTION READ WRITE", vec![])
        .await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(2)]).await);
    let _ = h.execute(&ro, "SET SESSION tx_read_only = 0", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(3)]).await);
    // End the host's transaction, or start one of the guest's own.
    let _ = h.execute(&ro, "COMMIT", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(4)]).await);
    let _ = h.execute(&ro, "START TRANSACTION READ WRITE", vec![]).await;
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(5)]).await);
    // DDL commits implicitly in MySQL; in a read-only transaction it is
    // refused before it does.
    assert_access_denied(h.execute(&ro, &format!("DROP TABLE {t}"), vec![]).await);
    assert_access_denied(h.execute(&ro, &format!("TRUNCATE TABLE {t}"), vec![]).await);
    assert_access_denied(
        h.execute(&ro, &format!("CREATE TABLE {t}_new (y INT)"), vec![])
            .await,
    );
    assert_access_denied(
        h.execute(&ro, "CREATE TEMPORARY TABLE tmp (x INT)", vec![])
            .await,
    );
    // The guest's transaction is bookkeeping: statements stay read-only.
    h.begin(&ro).await.unwrap();
    assert_access_denied(h.execute(&ro, &insert, vec![Value::Int(6)]).await);
    h.commit(&ro).await.unwrap();
    // A cursor on a read-only source is read-only too.
    assert_access_denied(
        h.cursor(&ro, &format!("DELETE FROM {t}"), vec![])
            .await
            .map(|_| ()),
    );
    h.drop_connection(ro).await;

    // Nothing was written, as the server itself says.
    assert_eq!(my.cli(&format!("SELECT x FROM {t}")).trim(), "0");
    my.cleanup().await;
}

#[tokio::test]
async fn mysql_query_enforces_row_limit_and_cursor_streams_100k_rows() {
    let limits = SqlLimits {
        max_rows: 100,
        max_batch: 1000,
        ..SqlLimits::default()
    };
    let Some(mut my) = My::new("mysql_limits_and_cursor", 2, limits).await else {
        return;
    };
    let h = &mut my.h;
    let conn = h.open("ro").await;
    assert_eq!(
        h.query(&conn, &mysql_numbers(100), vec![])
            .await
            .unwrap()
            .rows
            .len(),
        100
    );
    assert_too_large(
        h.query(&conn, &mysql_numbers(101), vec![]).await,
        "more than 100 rows; use `cursor` to stream large results",
    );

    let rows = h
        .cursor(&conn, &mysql_numbers(100_000), vec![])
        .await
        .unwrap();
    let columns = HostRows::columns(&mut h.view(), borrow(&rows))
        .await
        .unwrap();
    assert_eq!(columns.len(), 1);
    assert_eq!(columns[0].name, "n");
    let busy = "a cursor is open on this connection; drop it first";
    assert_invalid_input(h.query(&conn, "SELECT 1", vec![]).await, busy);
    assert_invalid_input(h.begin(&conn).await, busy);
    let mut seen = 0i64;
    let mut batches = 0;
    loop {
        let batch = h.next(&rows, u32::MAX).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 1000);
        for row in batch {
            seen += 1;
            assert!(matches!(row[0], Value::Int(n) if n == seen), "{:?}", row[0]);
        }
        batches += 1;
    }
    assert_eq!(seen, 100_000);
    assert_eq!(batches, 100);
    h.drop_cursor(rows).await;

    // Dropped half-way: the connection works again.
    let rows = h
        .cursor(&conn, &mysql_numbers(100_000), vec![])
        .await
        .unwrap();
    assert_eq!(h.next(&rows, 10).await.unwrap().len(), 10);
    h.drop_cursor(rows).await;
    let one = h.query(&conn, "SELECT 1 AS one", vec![]).await.unwrap();
    assert!(matches!(one.rows[0][0], Value::Int(1)));
    // Empty results have columns.
    let empty = h
        .query(&conn, "SELECT 1 AS one FROM DUAL WHERE 1 = 0", vec![])
        .await
        .unwrap();
    assert!(empty.rows.is_empty());
    assert_eq!(empty.columns.len(), 1);
    assert_eq!(empty.columns[0].name, "one");
    h.drop_connection(conn).await;
    my.cleanup().await;
}

#[tokio::test]
async fn mysql_transactions_commit_roll_back_and_drop() {
    let Some(mut my) = My::new("mysql_transactions", 1, SqlLimits::default()).await else {
        return;
    };
    let t = my.t("t");
    let h = &mut my.h;
    let conn = h.open("rw").await;
    h.execute(
        &conn,
        &format!("CREATE TABLE {t} (x BIGINT PRIMARY KEY) ENGINE = InnoDB"),
        vec![],
    )
    .await
    .unwrap();
    let insert = format!("INSERT INTO {t} VALUES (?)");
    let count = format!("SELECT count(*) FROM {t}");

    assert_invalid_input(h.commit(&conn).await, "begin");
    h.begin(&conn).await.unwrap();
    assert_invalid_input(h.begin(&conn).await, "already open");
    h.execute(&conn, &insert, vec![Value::Int(1)])
        .await
        .unwrap();
    h.rollback(&conn).await.unwrap();
    assert_eq!(my.cli(&count).trim(), "0");

    let h = &mut my.h;
    h.begin_with(&conn, Some(IsolationLevel::Serializable), false)
        .await
        .unwrap();
    h.execute(&conn, &insert, vec![Value::Int(2)])
        .await
        .unwrap();
    // Not visible outside the transaction until it commits.
    assert_eq!(my.cli(&count).trim(), "0");
    let h = &mut my.h;
    h.commit(&conn).await.unwrap();
    assert_eq!(my.cli(&count).trim(), "1");

    // A failed statement does not end a MySQL transaction: the rest of it
    // commits (MySQL's rule, unlike PostgreSQL's).
    let h = &mut my.h;
    h.begin(&conn).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(3)])
        .await
        .unwrap();
    assert_conflict(
        h.execute(&conn, &insert, vec![Value::Int(2)]).await,
        "Duplicate entry",
    );
    h.commit(&conn).await.unwrap();
    assert_eq!(my.cli(&count).trim(), "2");

    // A read-only transaction refuses writes.
    let h = &mut my.h;
    h.begin_with(&conn, Some(IsolationLevel::RepeatableRead), true)
        .await
        .unwrap();
    assert_access_denied(h.execute(&conn, &insert, vec![Value::Int(9)]).await);
    h.rollback(&conn).await.unwrap();

    // Dropping the connection mid-transaction rolls back, and so does a
    // transaction the guest opened with a statement.
    h.begin(&conn).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(4)])
        .await
        .unwrap();
    h.execute(&conn, "SET @left_behind = 42", vec![])
        .await
        .unwrap();
    h.drop_connection(conn).await;
    let conn = h.open("rw").await;
    h.execute(&conn, "START TRANSACTION", vec![]).await.unwrap();
    h.execute(&conn, &insert, vec![Value::Int(5)])
        .await
        .unwrap();
    h.drop_connection(conn).await;
    assert_eq!(my.cli(&count).trim(), "2");
    // The next run's session starts clean.
    let h = &mut my.h;
    let conn = h.open("rw").await;
    let left = h.query(&conn, "SELECT @left_behind", vec![]).await.unwrap();
    assert!(matches!(left.rows[0][0], Value::Null), "{:?}", left.rows);
    h.drop_connection(conn).await;
    my.cleanup().await;
}

#[tokio::test]
async fn mysql_errors_come_by_kind() {
    let Some(mut my) = My::new("mysql_errors", 1, SqlLimits::default()).await else {
        return;
    };
    let t = my.t("t");
    let h = &mut my.h;
    let conn = h.open("rw").await;
    assert_database(h.query(&conn, "SELEC 1", vec![]).await, "42000", "syntax");
    assert_database(
        h.query(&conn, &format!("SELECT * FROM {t}"), vec![]).await,
        "42S02",
        "doesn't exist",
    );
    h.execute(
        &conn,
        &format!("CREATE TABLE {t} (id INT PRIMARY KEY, n INT NOT NULL)"),
        vec![],
    )
    .await
    .unwrap();
    h.execute(&conn, &format!("INSERT INTO {t} VALUES (1, 1)"), vec![])
        .await
        .unwrap();
    assert_conflict(
        h.execute(&conn, &format!("INSERT INTO {t} VALUES (1, 2)"), vec![])
            .await,
        "Duplicate entry",
    );
    assert_database(
        h.execute(&conn, &format!("INSERT INTO {t} VALUES (2, NULL)"), vec![])
            .await,
        "23000",
        "cannot be null",
    );
    // The statement's own timeout (MariaDB's `max_statement_time`): the
    // server stopped it, so it is `backend`.
    h.execute(&conn, "SET SESSION max_statement_time = 0.2", vec![])
        .await
        .unwrap();
    match h.query(&conn, "SELECT SLEEP(5) FROM DUAL", vec![]).await {
        // MariaDB ends SLEEP early and returns 1 when interrupted.
        Ok(rows) => assert!(matches!(rows.rows[0][0], Value::Int(1)), "{rows:?}"),
        Err(WitError::Backend(_)) => {}
        other => panic!("expected the statement stopped, got {other:?}"),
    }
    h.drop_connection(conn).await;
    my.cleanup().await;
}

#[tokio::test]
async fn mysql_unreachable_server_is_a_backend_error() {
    let Some(url) = mysql_url("mysql_unreachable_server") else {
        return;
    };
    // The same credentials against a database that does not exist, and a
    // wrong password.
    let mut missing = url::Url::parse(&url).unwrap();
    missing.set_path("caisson_no_such_database");
    let mut wrong = url::Url::parse(&url).unwrap();
    wrong.set_password(Some("not-the-password")).unwrap();
    for parsed in [missing, wrong] {
        let config = SqlConfig::from([(
            "gone".to_owned(),
            source(SqlKind::Mysql, parsed.as_str(), false, 1),
        )]);
        let mut h = Harness::new(&config, &["gone"], SqlLimits::default());
        match h.try_open("gone").await {
            Err(WitError::Backend(message)) => {
                let password = parsed.password().unwrap_or("\u{0}");
                assert!(!message.contains(password), "{message}");
                assert!(!message.contains("caisson_no_such_database"), "{message}");
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
    }
    // Not a MySQL URL at all: refused when the config loads.
    let config = SqlConfig::from([(
        "db".to_owned(),
        source(SqlKind::Mysql, "postgres://x@y/z", false, 1),
    )]);
    assert!(matches!(
        SqlSources::from_config(&config),
        Err(ConfigError::Invalid { kind: "sql", .. })
    ));
}

/// A statement still running when its run lets go of the connection is
/// stopped on the server (`KILL CONNECTION`), not left sleeping.
#[tokio::test]
async fn mysql_statement_still_running_when_its_run_ends_is_killed() {
    let Some(mut my) = My::new("mysql_kill", 1, SqlLimits::default()).await else {
        return;
    };
    let marker = unique("sleeper");
    let h = &mut my.h;
    let conn = h.open("rw").await;
    // The guest stops waiting (its run ends) while the statement runs.
    let sleep = format!("SELECT SLEEP(100000) AS {marker}");
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        h.query(&conn, &sleep, vec![]),
    )
    .await;
    assert!(waited.is_err(), "SLEEP returned early: {waited:?}");
    h.drop_connection(conn).await;
    let running = format!(
        "SELECT count(*) FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE '%{marker}%' AND ID <> CONNECTION_ID()"
    );
    let mut left = String::new();
    for _ in 0..100 {
        left = my.cli(&running);
        if left.trim() == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left.trim(), "0", "SLEEP still runs after its run ended");
    // The source's only connection slot is free for the next run.
    let rows = my.h.rows("rw", "SELECT 1 AS one", vec![]).await;
    assert!(matches!(rows[0][0], Value::Int(1)), "{rows:?}");
    my.cleanup().await;
}
