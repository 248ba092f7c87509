//! The `caisson:task@0.2.0` contract on real services, called through the
//! host traits as a guest calls them: every SQL value kind both ways on
//! PostgreSQL and SQLite, the error cases a task acts on (conflict,
//! retry-transaction), conditional writes and delimiter listings on S3 and
//! on a local directory, and a log that does not trap.

use caisson_host_api::log::{LogCtx, MemorySink};
use caisson_host_api::objects::{StoreConfig, StoreHandle};
use caisson_host_api::sql::{Connection, SqlConfig, SqlKind, SqlLimits, SqlSources};
use caisson_host_api::test_support::{SqlHarness, borrow, source};
use caisson_host_api::wit::objects::{HostStore, HostWriteOptions, ListPage, ObjectMeta};
use caisson_host_api::wit::sql::{DatabaseError, Interval, IsolationLevel, OtherValue, Value};
use caisson_host_api::{ObjectsError, SqlError};
use caisson_tests::{RemoteStore, mysql_url, postgres_url, s3_env, unique_prefix};
use wasmtime::component::Resource;

use crate::objects::Direct;

// ---------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------

/// One run's SQL context over `sources`, granted the source `db`.
fn run_on(sources: &SqlSources) -> SqlHarness {
    SqlHarness::with_sources(sources, &["db"], SqlLimits::default())
}

async fn begin_serializable(
    sql: &mut SqlHarness,
    conn: &Resource<Connection>,
) -> Result<(), SqlError> {
    sql.begin_with(conn, Some(IsolationLevel::Serializable), false)
        .await
}

fn postgres_sources() -> Option<SqlSources> {
    let url = postgres_url()?;
    let config: SqlConfig = [("db".to_string(), source(SqlKind::Postgres, &url, false, 4))].into();
    Some(SqlSources::from_config(&config).unwrap())
}

fn mysql_sources() -> Option<SqlSources> {
    let url = mysql_url()?;
    let config: SqlConfig = [("db".to_string(), source(SqlKind::Mysql, &url, false, 4))].into();
    Some(SqlSources::from_config(&config).unwrap())
}

fn sqlite_sources(dir: &tempfile::TempDir) -> SqlSources {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    let config: SqlConfig = [("db".to_string(), source(SqlKind::Sqlite, &url, false, 4))].into();
    SqlSources::from_config(&config).unwrap()
}

/// A table name no other test uses.
fn table_name(what: &str) -> String {
    unique_prefix(what).replace(['/', '-'], "_")
}

const NUMERIC_38: &str = "-12345678901234567890.123456789012345678";
/// 1969-07-20, before the Unix epoch.
const MOON_DAY: i32 = -165;
/// 1900-01-01 12:34:56.789012 (as a wall clock, and as an instant in UTC).
const OLD_TIME: i64 = -2_208_943_503_210_988;

/// Every kind with a PostgreSQL column type, and a value at an edge.
fn pg_columns() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("v_bool", "BOOLEAN", Value::Boolean(false)),
        ("v_int", "BIGINT", Value::Int(i64::MIN)),
        ("v_uint", "NUMERIC(20, 0)", Value::Uint(u64::MAX)),
        ("v_float", "DOUBLE PRECISION", Value::Float(-1.5e300)),
        (
            "v_decimal",
            "NUMERIC(38, 18)",
            Value::Decimal(NUMERIC_38.into()),
        ),
        ("v_text", "TEXT", Value::Text("héllo ✓ 'x'".into())),
        ("v_blob", "BYTEA", Value::Blob(vec![0, 1, 0xfe, 0xff])),
        ("v_date", "DATE", Value::Date(MOON_DAY)),
        ("v_date_inf", "DATE", Value::Date(i32::MIN)),
        ("v_time", "TIME", Value::Time(86_399_999_999)),
        ("v_datetime", "TIMESTAMP", Value::Datetime(OLD_TIME)),
        ("v_datetime_inf", "TIMESTAMP", Value::Datetime(i64::MIN)),
        ("v_timestamp", "TIMESTAMPTZ", Value::Timestamp(OLD_TIME)),
        ("v_timestamp_inf", "TIMESTAMPTZ", Value::Timestamp(i64::MAX)),
        (
            "v_interval",
            "INTERVAL",
            Value::Interval(Interval {
                months: -14,
                days: 3,
                microseconds: -4_000_001,
            }),
        ),
        (
            "v_uuid",
            "UUID",
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ),
        ("v_json", "JSONB", Value::Json(r#"{"a": [1, null]}"#.into())),
        (
            "v_bools",
            "BOOLEAN[]",
            Value::BooleanArray(vec![Some(true), None, Some(false)]),
        ),
        (
            "v_ints",
            "BIGINT[]",
            Value::IntArray(vec![Some(i64::MAX), None, Some(-1)]),
        ),
        ("v_floats", "DOUBLE PRECISION[]", Value::FloatArray(vec![])),
        (
            "v_decimals",
            "NUMERIC[]",
            Value::DecimalArray(vec![Some(NUMERIC_38.into()), None, Some("NaN".into())]),
        ),
        (
            "v_texts",
            "TEXT[]",
            Value::TextArray(vec![Some("a,b".into()), None, Some("\"q\"".into())]),
        ),
        (
            "v_uuids",
            "UUID[]",
            Value::UuidArray(vec![Some("00000000-0000-0000-0000-000000000001".into())]),
        ),
        (
            "v_dates",
            "DATE[]",
            Value::DateArray(vec![Some(MOON_DAY), Some(i32::MAX), None]),
        ),
        (
            "v_datetimes",
            "TIMESTAMP[]",
            Value::DatetimeArray(vec![Some(OLD_TIME), None]),
        ),
        (
            "v_timestamps",
            "TIMESTAMPTZ[]",
            Value::TimestampArray(vec![Some(0), Some(i64::MIN)]),
        ),
    ]
}

fn same(sent: &Value, got: &Value) -> bool {
    format!("{sent:?}") == format!("{got:?}")
}

#[tokio::test]
async fn every_value_kind_round_trips_on_postgres() {
    let Some(sources) = postgres_sources() else {
        return;
    };
    let mut sql = run_on(&sources);
    let conn = sql.open("db").await;
    let t = table_name("pg_values");
    let columns = pg_columns();
    let defs: Vec<String> = columns
        .iter()
        .map(|(name, ty, _)| format!("{name} {ty}"))
        .collect();
    sql.execute_result(
        &conn,
        &format!("CREATE TABLE {t} (id INT PRIMARY KEY, {})", defs.join(", ")),
        vec![],
    )
    .await
    .unwrap();
    let names: Vec<&str> = columns.iter().map(|(name, _, _)| *name).collect();
    let placeholders: Vec<String> = (2..=columns.len() + 1).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {t} (id, {}) VALUES ($1, {})",
        names.join(", "),
        placeholders.join(", ")
    );

    // Bound with their real types: each lands in its typed column as is.
    let mut params = vec![Value::Int(1)];
    params.extend(columns.iter().map(|(_, _, v)| v.clone()));
    let done = sql.execute_result(&conn, &insert, params).await.unwrap();
    assert_eq!(done.rows_affected, 1);
    assert_eq!(done.last_insert_id, None, "PostgreSQL reports no row id");
    // And NULLs of every kind.
    let mut nulls = vec![Value::Int(2)];
    nulls.extend(columns.iter().map(|_| Value::Null));
    sql.execute_result(&conn, &insert, nulls).await.unwrap();

    let select = format!("SELECT {} FROM {t} ORDER BY id", names.join(", "));
    let rows = sql.query(&conn, &select, vec![]).await.unwrap().rows;
    for (i, (name, _, sent)) in columns.iter().enumerate() {
        // PostgreSQL has no unsigned type: a `uint` is stored as NUMERIC and
        // read back as the exact `decimal`.
        let expected = match sent {
            Value::Uint(u) => Value::Decimal(u.to_string()),
            other => other.clone(),
        };
        assert!(
            same(&expected, &rows[0][i]),
            "{name}: sent {sent:?}, got {:?}",
            rows[0][i]
        );
        assert!(
            matches!(rows[1][i], Value::Null),
            "{name}: {:?}",
            rows[1][i]
        );
    }

    // What the server stored, in its own words: the parameters were bound as
    // the real types, not as text it had to guess from.
    let text = sql
        .query(
            &conn,
            &format!(
                "SELECT v_decimal::text, v_date::text, v_datetime::text, v_timestamp_inf::text, \
                 v_uint::text, v_interval::text, v_ints::text FROM {t} WHERE id = 1"
            ),
            vec![],
        )
        .await
        .unwrap()
        .rows;
    let texts: Vec<String> = text[0]
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            NUMERIC_38,
            "1969-07-20",
            "1900-01-01 12:34:56.789012",
            "infinity",
            "18446744073709551615",
            "-1 years -2 mons +3 days -00:00:04.000001",
            "{9223372036854775807,NULL,-1}",
        ]
    );
    // TIMESTAMP and TIMESTAMPTZ stay apart whatever the session's zone: a
    // `datetime` is a wall clock, a `timestamp` an instant.
    sql.execute_result(&conn, "SET TIME ZONE 'America/New_York'", vec![])
        .await
        .unwrap();
    let zoned = sql
        .query(
            &conn,
            &format!("SELECT v_datetime, v_timestamp FROM {t} WHERE id = 1"),
            vec![],
        )
        .await
        .unwrap()
        .rows;
    assert!(
        matches!(zoned[0][0], Value::Datetime(OLD_TIME)),
        "{:?}",
        zoned[0][0]
    );
    assert!(
        matches!(zoned[0][1], Value::Timestamp(OLD_TIME)),
        "{:?}",
        zoned[0][1]
    );

    // A type with no case comes back as `other`, and binds as text.
    let other = sql
        .query(
            &conn,
            "SELECT $1::inet AS addr, '10.0.0.1'::inet AS lit",
            vec![Value::Other(OtherValue {
                type_name: "inet".into(),
                text: "192.168.0.1/24".into(),
            })],
        )
        .await
        .unwrap()
        .rows;
    assert!(
        matches!(&other[0][0], Value::Other(o) if o.type_name == "INET"),
        "{:?}",
        other[0][0]
    );
    // A decimal that is not one is the guest's error, not the server's.
    assert!(matches!(
        sql.query(
            &conn,
            "SELECT $1::numeric",
            vec![Value::Decimal("1.2.3".into())]
        )
        .await,
        Err(SqlError::InvalidInput(_))
    ));

    sql.execute_result(&conn, &format!("DROP TABLE {t}"), vec![])
        .await
        .unwrap();
}

#[tokio::test]
async fn every_value_kind_round_trips_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sources = sqlite_sources(&dir);
    let mut sql = run_on(&sources);
    let conn = sql.open("db").await;
    // SQLite keeps five storage classes. The host binds the other kinds as
    // text (arrays as JSON) and reads dates and times back by the column's
    // declared type; decimals, UUIDs, intervals and arrays come back as text.
    let cases: Vec<(&str, &str, Value, Value)> = vec![
        (
            "v_bool",
            "BOOLEAN",
            Value::Boolean(true),
            Value::Boolean(true),
        ),
        (
            "v_int",
            "INTEGER",
            Value::Int(i64::MIN),
            Value::Int(i64::MIN),
        ),
        (
            "v_uint",
            "INTEGER",
            Value::Uint(i64::MAX as u64),
            Value::Int(i64::MAX),
        ),
        (
            "v_float",
            "REAL",
            Value::Float(-1.5e300),
            Value::Float(-1.5e300),
        ),
        (
            "v_decimal",
            "TEXT",
            Value::Decimal(NUMERIC_38.into()),
            Value::Text(NUMERIC_38.into()),
        ),
        (
            "v_text",
            "TEXT",
            Value::Text("é".into()),
            Value::Text("é".into()),
        ),
        (
            "v_blob",
            "BLOB",
            Value::Blob(vec![0, 255]),
            Value::Blob(vec![0, 255]),
        ),
        (
            "v_date",
            "DATE",
            Value::Date(MOON_DAY),
            Value::Date(MOON_DAY),
        ),
        (
            "v_date_inf",
            "DATE",
            Value::Date(i32::MAX),
            Value::Date(i32::MAX),
        ),
        (
            "v_time",
            "TIME",
            Value::Time(45_296_000_001),
            Value::Time(45_296_000_001),
        ),
        (
            "v_datetime",
            "DATETIME",
            Value::Datetime(OLD_TIME),
            Value::Datetime(OLD_TIME),
        ),
        (
            "v_timestamp",
            "DATETIME",
            Value::Timestamp(OLD_TIME),
            Value::Timestamp(OLD_TIME),
        ),
        (
            "v_timestamp_inf",
            "DATETIME",
            Value::Timestamp(i64::MIN),
            Value::Timestamp(i64::MIN),
        ),
        (
            "v_interval",
            "TEXT",
            Value::Interval(Interval {
                months: 1,
                days: 2,
                microseconds: -3_500_000,
            }),
            Value::Text("P1M2DT-3.500000S".into()),
        ),
        (
            "v_uuid",
            "TEXT",
            Value::Uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into()),
            Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ),
        (
            "v_ints",
            "TEXT",
            Value::IntArray(vec![Some(1), None]),
            Value::Text("[1,null]".into()),
        ),
        (
            "v_dates",
            "TEXT",
            Value::DateArray(vec![Some(MOON_DAY)]),
            Value::Text(r#"["1969-07-20"]"#.into()),
        ),
    ];
    let defs: Vec<String> = cases
        .iter()
        .map(|(name, ty, _, _)| format!("{name} {ty}"))
        .collect();
    sql.execute_result(
        &conn,
        &format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, {})",
            defs.join(", ")
        ),
        vec![],
    )
    .await
    .unwrap();
    let names: Vec<&str> = cases.iter().map(|(name, ..)| *name).collect();
    let insert = format!(
        "INSERT INTO t ({}) VALUES ({})",
        names.join(", "),
        vec!["?"; names.len()].join(", ")
    );
    let done = sql
        .execute_result(&conn, &insert, cases.iter().map(|c| c.2.clone()).collect())
        .await
        .unwrap();
    assert_eq!(done.rows_affected, 1);
    assert_eq!(done.last_insert_id, Some(1));
    let done = sql
        .execute_result(&conn, &insert, cases.iter().map(|_| Value::Null).collect())
        .await
        .unwrap();
    assert_eq!(done.last_insert_id, Some(2));

    let select = format!("SELECT {} FROM t ORDER BY id", names.join(", "));
    let rows = sql.query(&conn, &select, vec![]).await.unwrap().rows;
    for (i, (name, _, sent, expected)) in cases.iter().enumerate() {
        assert!(
            same(expected, &rows[0][i]),
            "{name}: sent {sent:?}, expected {expected:?}, got {:?}",
            rows[0][i]
        );
        assert!(
            matches!(rows[1][i], Value::Null),
            "{name}: {:?}",
            rows[1][i]
        );
    }
    // SQLite's own date functions read what the host stored.
    let julian = sql
        .query(
            &conn,
            "SELECT date(v_date) AS d FROM t WHERE id = 1",
            vec![],
        )
        .await
        .unwrap()
        .rows;
    assert!(matches!(&julian[0][0], Value::Text(s) if s == "1969-07-20"));
    // Past SQLite's integers: refused, not wrapped.
    assert!(matches!(
        sql.query(&conn, "SELECT ?", vec![Value::Uint(u64::MAX)])
            .await,
        Err(SqlError::InvalidInput(_))
    ));
}

#[track_caller]
fn assert_unique_conflict<T: std::fmt::Debug>(result: Result<T, SqlError>) {
    match result {
        Err(SqlError::Conflict(DatabaseError { sqlstate, .. })) if sqlstate == "23505" => {}
        other => panic!("expected conflict with SQLSTATE 23505, got {other:?}"),
    }
}

#[tokio::test]
async fn a_unique_violation_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    // The placeholder is the database's own: MySQL has only `?`.
    let mut sources = vec![("sqlite", sqlite_sources(&dir), "$1")];
    if let Some(pg) = postgres_sources() {
        sources.push(("postgres", pg, "$1"));
    }
    if let Some(my) = mysql_sources() {
        sources.push(("mysql", my, "?"));
    }
    for (name, sources, placeholder) in sources {
        let mut sql = run_on(&sources);
        let conn = sql.open("db").await;
        let t = table_name("unique");
        sql.execute_result(
            &conn,
            &format!("CREATE TABLE {t} (k VARCHAR(10) PRIMARY KEY)"),
            vec![],
        )
        .await
        .unwrap();
        let insert = format!("INSERT INTO {t} VALUES ({placeholder})");
        sql.execute_result(&conn, &insert, vec![Value::Text("a".into())])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_unique_conflict(
            sql.execute_result(&conn, &insert, vec![Value::Text("a".into())])
                .await,
        );
        // Any other refusal is `database`, with its SQLSTATE.
        match sql.query(&conn, "SELEC 1", vec![]).await {
            Err(SqlError::Database(e)) => assert!(!e.sqlstate.is_empty(), "{name}: {e:?}"),
            other => panic!("{name}: expected a database error, got {other:?}"),
        }
        sql.execute_result(&conn, &format!("DROP TABLE {t}"), vec![])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_serialization_failure_says_retry_the_transaction() {
    let Some(sources) = postgres_sources() else {
        return;
    };
    let (mut a, mut b) = (run_on(&sources), run_on(&sources));
    let (conn_a, conn_b) = (a.open("db").await, b.open("db").await);
    let t = table_name("skew");
    a.execute_result(&conn_a, &format!("CREATE TABLE {t} (n INT)"), vec![])
        .await
        .unwrap();
    // Write skew: each transaction reads what the other writes. Under
    // SERIALIZABLE one of them must fail, with SQLSTATE 40001.
    let count = format!("SELECT count(*) AS n FROM {t}");
    let insert = format!("INSERT INTO {t} VALUES (1)");
    begin_serializable(&mut a, &conn_a).await.unwrap();
    begin_serializable(&mut b, &conn_b).await.unwrap();
    a.query(&conn_a, &count, vec![]).await.unwrap();
    b.query(&conn_b, &count, vec![]).await.unwrap();
    a.execute_result(&conn_a, &insert, vec![]).await.unwrap();
    let b_insert = b.execute_result(&conn_b, &insert, vec![]).await;
    a.commit(&conn_a).await.unwrap();
    let b_result = match b_insert {
        Ok(_) => b.commit(&conn_b).await,
        Err(e) => Err(e),
    };
    match b_result {
        Err(SqlError::RetryTransaction(DatabaseError { sqlstate, .. })) => {
            assert_eq!(sqlstate, "40001")
        }
        other => panic!("expected retry-transaction (40001), got {other:?}"),
    }
    // The retried transaction goes through.
    if let Err(e) = b.commit(&conn_b).await {
        // Already over after the failure: `commit` says there is none.
        assert!(matches!(e, SqlError::InvalidInput(_)), "{e:?}");
    }
    begin_serializable(&mut b, &conn_b).await.unwrap();
    b.query(&conn_b, &count, vec![]).await.unwrap();
    b.execute_result(&conn_b, &insert, vec![]).await.unwrap();
    b.commit(&conn_b).await.unwrap();
    a.execute_result(&conn_a, &format!("DROP TABLE {t}"), vec![])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deadlock_says_retry_the_transaction() {
    // PostgreSQL's SQLSTATE for a deadlock is its own 40P01; MySQL's is
    // 40001, as for any transaction InnoDB rolled back.
    let mut sources = Vec::new();
    if let Some(pg) = postgres_sources() {
        sources.push((pg, "$1", "40P01"));
    }
    if let Some(my) = mysql_sources() {
        sources.push((my, "?", "40001"));
    }
    for (sources, placeholder, sqlstate) in sources {
        deadlock_on(&sources, placeholder, sqlstate).await;
    }
}

async fn deadlock_on(sources: &SqlSources, placeholder: &str, deadlock_sqlstate: &str) {
    let (mut a, mut b) = (run_on(sources), run_on(sources));
    let (conn_a, conn_b) = (a.open("db").await, b.open("db").await);
    let t = table_name("deadlock");
    a.execute_result(
        &conn_a,
        &format!("CREATE TABLE {t} (id INT PRIMARY KEY, n INT)"),
        vec![],
    )
    .await
    .unwrap();
    a.execute_result(
        &conn_a,
        &format!("INSERT INTO {t} VALUES (1, 0), (2, 0)"),
        vec![],
    )
    .await
    .unwrap();
    let update = |id: i64| {
        (
            format!("UPDATE {t} SET n = n + 1 WHERE id = {placeholder}"),
            id,
        )
    };
    for (sql, conn) in [(&mut a, &conn_a), (&mut b, &conn_b)] {
        sql.begin(conn).await.unwrap();
    }
    let (one, two) = (update(1), update(2));
    a.execute_result(&conn_a, &one.0, vec![Value::Int(one.1)])
        .await
        .unwrap();
    b.execute_result(&conn_b, &two.0, vec![Value::Int(two.1)])
        .await
        .unwrap();
    // Each now waits for the other's row: PostgreSQL picks a victim.
    let (from_a, from_b) = tokio::join!(
        a.execute_result(&conn_a, &two.0, vec![Value::Int(two.1)]),
        b.execute_result(&conn_b, &one.0, vec![Value::Int(one.1)]),
    );
    let victims: Vec<_> = [&from_a, &from_b]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(
        matches!(
            victims[..],
            [SqlError::RetryTransaction(DatabaseError { sqlstate, .. })] if sqlstate == deadlock_sqlstate
        ),
        "a: {from_a:?}, b: {from_b:?}"
    );
    for (sql, conn) in [(&mut a, &conn_a), (&mut b, &conn_b)] {
        let _ = sql.rollback(conn).await;
    }
    a.execute_result(&conn_a, &format!("DROP TABLE {t}"), vec![])
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

/// The objects capability through its host traits, as in `objects.rs`,
/// with the 0.2.0 calls this file exercises.
impl Direct {
    /// `put` with `if-none-match` and `if-match` as given, and a content type.
    async fn put(
        &mut self,
        store: &Resource<StoreHandle>,
        key: &str,
        if_none_match: Option<&str>,
        if_match: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, ObjectsError> {
        let options = HostWriteOptions::new(&mut self.view()).await.unwrap();
        HostWriteOptions::set_if_none_match(
            &mut self.view(),
            borrow(&options),
            if_none_match.map(Into::into),
        )
        .await
        .unwrap()?;
        HostWriteOptions::set_if_match(
            &mut self.view(),
            borrow(&options),
            if_match.map(Into::into),
        )
        .await
        .unwrap()?;
        HostWriteOptions::set_content_type(
            &mut self.view(),
            borrow(&options),
            content_type.map(Into::into),
        )
        .await
        .unwrap()?;
        let put = HostStore::put(
            &mut self.view(),
            borrow(store),
            key.into(),
            key.as_bytes().to_vec(),
            Some(borrow(&options)),
        )
        .await
        .unwrap();
        HostWriteOptions::drop(&mut self.view(), options)
            .await
            .unwrap();
        put
    }

    /// One level of a delimiter listing.
    async fn list_level(
        &mut self,
        store: &Resource<StoreHandle>,
        prefix: &str,
        token: Option<String>,
        page_size: u32,
    ) -> ListPage {
        HostStore::list(
            &mut self.view(),
            borrow(store),
            prefix.into(),
            Some("/".into()),
            token,
            page_size,
        )
        .await
        .unwrap()
        .unwrap()
    }
}

fn local_store(dir: &tempfile::TempDir) -> StoreConfig {
    toml::from_str(&format!(
        "type = \"local\"\nroot = \"{}\"\n",
        dir.path().display()
    ))
    .unwrap()
}

/// `if-none-match: *` writes once: the second write is a `conflict`.
async fn if_none_match_conflicts(config: StoreConfig, name: &str) -> Direct {
    let mut objects = Direct::new(config);
    let store = objects.open().await;
    let first = objects
        .put(&store, "lock/daily", Some("*"), None, None)
        .await;
    assert!(first.is_ok(), "{name}: {first:?}");
    let second = objects
        .put(&store, "lock/daily", Some("*"), None, None)
        .await;
    assert!(
        matches!(second, Err(ObjectsError::Conflict(_))),
        "{name}: expected a conflict, got {second:?}"
    );
    objects
}

#[tokio::test]
async fn if_none_match_is_a_conflict_on_s3() {
    let Some(s3) = s3_env() else { return };
    let prefix = unique_prefix("conditional");
    let mut objects = if_none_match_conflicts(s3.store_config(&prefix), "s3").await;
    let store = objects.open().await;
    // if-match: the current tag writes, a stale one conflicts.
    let meta = objects
        .put(&store, "cas", None, None, Some("text/csv"))
        .await
        .unwrap();
    let etag = meta.etag.expect("S3 returns an ETag");
    let head = HostStore::head(&mut objects.view(), borrow(&store), "cas".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.content_type.as_deref(), Some("text/csv"));
    objects
        .put(&store, "cas", None, Some(&etag), None)
        .await
        .unwrap();
    let stale = objects
        .put(&store, "cas", None, Some("\"0000\""), None)
        .await;
    assert!(matches!(stale, Err(ObjectsError::Conflict(_))), "{stale:?}");
}

#[tokio::test]
async fn if_none_match_is_a_conflict_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut objects = if_none_match_conflicts(local_store(&dir), "local").await;
    let store = objects.open().await;
    // What a local directory cannot do is said, not ignored.
    let content_type = objects
        .put(&store, "typed", None, None, Some("text/csv"))
        .await;
    assert!(
        matches!(content_type, Err(ObjectsError::Unsupported(_))),
        "{content_type:?}"
    );
    let if_match = objects
        .put(&store, "lock/daily", None, Some("x"), None)
        .await;
    assert!(
        matches!(if_match, Err(ObjectsError::Unsupported(_))),
        "{if_match:?}"
    );
}

/// A delimiter listing returns one level: objects and common prefixes, in
/// key order, paged.
async fn delimiter_listing(config: StoreConfig, name: &str) {
    let mut objects = Direct::new(config);
    let store = objects.open().await;
    for key in ["a.txt", "b/1", "b/2", "c/d/3", "e.txt"] {
        objects.put(&store, key, None, None, None).await.unwrap();
    }
    let level = objects.list_level(&store, "", None, 100).await;
    let keys: Vec<&str> = level.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a.txt", "e.txt"], "{name}");
    assert_eq!(level.prefixes, ["b/", "c/"], "{name}");
    assert_eq!(level.next_page_token, None, "{name}");

    // Descend into a prefix.
    let below = objects.list_level(&store, "b/", None, 100).await;
    let keys: Vec<&str> = below.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["b/1", "b/2"], "{name}");
    assert!(below.prefixes.is_empty(), "{name}");

    // Pages of two entries, objects and prefixes counted together.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = objects.list_level(&store, "", token, 2).await;
        assert!(page.objects.len() + page.prefixes.len() <= 2, "{name}");
        seen.extend(page.objects.into_iter().map(|o| o.key));
        seen.extend(page.prefixes);
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["a.txt", "b/", "c/", "e.txt"], "{name}");

    let bad = HostStore::list(
        &mut objects.view(),
        borrow(&store),
        String::new(),
        Some("|".into()),
        None,
        10,
    )
    .await
    .unwrap();
    assert!(
        matches!(bad, Err(ObjectsError::Unsupported(_))),
        "{name}: {bad:?}"
    );
}

#[tokio::test]
async fn a_delimiter_listing_returns_common_prefixes_on_s3() {
    let Some(s3) = s3_env() else { return };
    delimiter_listing(s3.store_config(&unique_prefix("delimiter")), "s3").await;
}

#[tokio::test]
async fn a_delimiter_listing_returns_common_prefixes_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    delimiter_listing(local_store(&dir), "local").await;
}

// ---------------------------------------------------------------------------
// Log
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_spent_log_budget_is_an_error_not_a_trap() {
    use caisson_host_api::wit::log::{Host as _, Level, LogError};
    let sink = std::sync::Arc::new(MemorySink::default());
    let mut log = LogCtx::new(sink.clone(), 10);
    assert!(matches!(
        log.log(Level::Info, "12345".into()).await,
        Ok(Ok(()))
    ));
    let over = log.log(Level::Info, "1234567890".into()).await;
    assert!(
        matches!(over, Ok(Err(LogError::BudgetExceeded))),
        "{over:?}"
    );
    assert!(log.exceeded());
    assert_eq!(
        sink.records().len(),
        1,
        "the record past the budget is dropped"
    );
}

// ---------------------------------------------------------------------------
// The standard interfaces
// ---------------------------------------------------------------------------

/// A component built against `wasi:config` and `wasi:logging` alone (not
/// Caisson's `params` and `log`) runs: its configuration is the run's
/// parameters and its records go to the run's log.
#[tokio::test]
async fn wasi_config_and_wasi_logging_serve_a_standard_component() {
    let rt = caisson_tests::runtime(caisson_tests::base_config());
    let task = crate::load(&rt, "standard-wasi").await;
    let (result, log) = crate::run_with(&rt, &task, b"", |r| {
        r.params.insert("greeting".into(), "hello".into());
    })
    .await;
    let output = crate::json(&result.unwrap());
    assert_eq!(output["greeting"], "hello");
    assert_eq!(output["missing"], serde_json::Value::Null);
    assert_eq!(output["all"], serde_json::json!({"greeting": "hello"}));
    let records = log.records();
    assert!(
        records
            .iter()
            .any(|r| r.message == "standard: read the configuration"
                && r.level == caisson_host_api::log::Level::Error),
        "{records:?}"
    );
}

/// `wasi:logging` shares the run's log budget: past it records are dropped
/// (its `log` cannot fail), the task goes on to return, and the run fails
/// with the log-limit error.
#[tokio::test]
async fn wasi_logging_shares_the_log_budget() {
    let rt = caisson_tests::runtime(caisson_tests::base_config());
    let task = crate::load(&rt, "standard-wasi").await;
    let (result, log) = crate::run_with(&rt, &task, b"", |r| {
        r.params.insert("flood".into(), "100".into());
        r.limits = Some(caisson_runtime::RunLimits {
            max_log_bytes: 10 * 1024,
            ..caisson_runtime::RunLimits::default()
        });
    })
    .await;
    assert_eq!(
        result.unwrap_err(),
        caisson_runtime::RunError::LogLimit(10 * 1024)
    );
    let kept: usize = log.records().iter().map(|r| r.message.len()).sum();
    assert!(kept <= 10 * 1024, "kept {kept} bytes past the budget");
}
