//! Exercises every SQL call end to end on the database labelled by param `db`
//! (default `warehouse`), PostgreSQL, SQLite or MySQL (detected with
//! `SELECT sqlite_version()` and `SELECT @@version`, or set by param
//! `dialect` = `postgres` | `sqlite` | `mysql`). It (re)creates tables `probe_values` and `probe_seq`, then
//! checks: execute counts; a round trip of every value kind through a table;
//! typed `Row::get` and `query_as`; a cursor read in batches of 10 (sizes
//! 10, 10, 5) and by iteration; that other calls fail with `invalid-input`
//! while a cursor is open; `transaction` commit and rollback; raw
//! begin/commit/rollback; and that a bad statement is an error.
//!
//! Output: the [`Report`] JSON plus
//! `"dialect": "postgres" | "sqlite" | "mysql"`,
//! `"roundtrip": {"<kind>": {"sent": <value>, "got": <value>, "match": bool}}`
//! (values tagged as `{"int": 1}`, `"null"`, ...; `json` compares parsed
//! documents), `"column_types": {"<column>": "<type name>"}`,
//! `"batches": [10, 10, 5]` and `"bad_sql_kind": "<error kind>"`.
//! A round-trip mismatch is a failure, except for `boolean`, `timestamp` and
//! `json` on SQLite, which has no such types, and `json` on MySQL (MariaDB's
//! JSON is text): those are reported only.

use caisson_sdk::sql::{Db, Value};
use caisson_sdk::{Error, Json, Result, params};
use caisson_test_components::{Report, outcome};
use serde::Deserialize;
use serde_json::{Map, json};

#[derive(Debug, Deserialize, PartialEq)]
struct Typed {
    v_int: i64,
    v_text: String,
    v_blob: Vec<u8>,
    v_null: Option<String>,
}

fn count(db: &Db) -> Result<i64> {
    db.query("SELECT COUNT(*) AS n FROM probe_seq", &[])?[0].get("n")
}

fn same(sent: &Value, got: &Value) -> bool {
    match (sent, got) {
        (Value::Json(a), Value::Json(b)) => {
            serde_json::from_str::<serde_json::Value>(a).ok() == serde_json::from_str(b).ok()
        }
        (a, b) => a == b,
    }
}

#[caisson_sdk::task]
fn run() -> Result<Json<serde_json::Value>> {
    let db = Db::open(&params::get_or("db", "warehouse"))?;
    let dialect = match params::get("dialect") {
        Some(d) if ["sqlite", "postgres", "mysql"].contains(&d.as_str()) => d,
        Some(d) => return Err(Error::invalid_input(format!("unknown dialect {d:?}"))),
        None if db.query("SELECT sqlite_version()", &[]).is_ok() => "sqlite".into(),
        // `@@` variables are MySQL's alone.
        None if db.query("SELECT @@version", &[]).is_ok() => "mysql".into(),
        None => "postgres".into(),
    };
    let sqlite = dialect == "sqlite";
    let mysql = dialect == "mysql";
    // The placeholder for parameter `i`: MySQL has only `?`.
    let p = |i: usize| {
        if mysql {
            "?".to_string()
        } else {
            format!("${i}")
        }
    };
    let mut r = Report::default();
    r.set("dialect", dialect.as_str());

    // Setup.
    for t in ["probe_values", "probe_seq"] {
        r.ok(
            &format!("drop {t}"),
            db.execute(&format!("DROP TABLE IF EXISTS {t}"), &[]),
        );
    }
    let create = if sqlite {
        "CREATE TABLE probe_values (id INTEGER PRIMARY KEY, v_null TEXT, v_bool BOOLEAN, \
         v_int INTEGER, v_float REAL, v_text TEXT, v_blob BLOB, v_ts TIMESTAMP, v_json JSON)"
    } else if mysql {
        "CREATE TABLE probe_values (id BIGINT PRIMARY KEY, v_null TEXT, v_bool BOOLEAN, \
         v_int BIGINT, v_float DOUBLE, v_text TEXT, v_blob BLOB, v_ts TIMESTAMP(6) NULL, v_json JSON)"
    } else {
        "CREATE TABLE probe_values (id BIGINT PRIMARY KEY, v_null TEXT, v_bool BOOLEAN, \
         v_int BIGINT, v_float DOUBLE PRECISION, v_text TEXT, v_blob BYTEA, v_ts TIMESTAMPTZ, v_json JSONB)"
    };
    r.ok("create probe_values", db.execute(create, &[]));
    r.ok(
        "create probe_seq",
        db.execute("CREATE TABLE probe_seq (n BIGINT NOT NULL)", &[]),
    );

    // Round trip of every kind.
    let sent = [
        ("null", Value::Null),
        ("boolean", Value::Bool(true)),
        ("int", Value::Int(9_007_199_254_740_993)),
        ("float", Value::Float(-1.5e300)),
        ("text", Value::Text("héllo ✓ 'quoted' \"double\"".into())),
        ("blob", Value::Blob(vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff])),
        ("timestamp", Value::Timestamp(1_714_564_800_123_456)),
        (
            "json",
            Value::Json(r#"{"a": [1, 2, {"b": null}], "c": "d"}"#.into()),
        ),
    ];
    let mut insert = vec![Value::Int(1)];
    insert.extend(sent.iter().map(|(_, v)| v.clone()));
    r.eq(
        "insert values",
        db.execute(
            &format!(
                "INSERT INTO probe_values (id, v_null, v_bool, v_int, v_float, v_text, v_blob, v_ts, v_json) \
                 VALUES ({})",
                (1..=9).map(p).collect::<Vec<_>>().join(", ")
            ),
            &insert,
        )
        .map_err(|e| e.to_string()),
        Ok(1),
    );
    let select = format!(
        "SELECT v_null, v_bool, v_int, v_float, v_text, v_blob, v_ts, v_json FROM probe_values WHERE id = {}",
        p(1)
    );
    if let Some(rows) = r.ok("select values", db.query(&select, &[1.into()])) {
        r.eq("select values rows", rows.len(), 1);
        let types: Map<_, _> = rows
            .columns()
            .iter()
            .map(|c| (c.name.clone(), json!(c.type_name)))
            .collect();
        r.set("column_types", types);
        let mut roundtrip = Map::new();
        for (i, (kind, value)) in sent.iter().enumerate() {
            let got = rows.first().and_then(|row| row.values().get(i).cloned());
            let matched = got.as_ref().is_some_and(|g| same(value, g));
            let lenient = sqlite && matches!(*kind, "boolean" | "timestamp" | "json")
                || mysql && *kind == "json";
            if !lenient {
                r.check(
                    &format!("roundtrip {kind}"),
                    matched,
                    format_args!("sent {value:?}, got {got:?}"),
                );
            }
            roundtrip.insert(
                (*kind).into(),
                json!({"sent": value, "got": got, "match": matched}),
            );
        }
        r.set("roundtrip", roundtrip);
        if let Some(row) = rows.first() {
            r.eq(
                "get int",
                row.get::<i64>("v_int").ok(),
                Some(9_007_199_254_740_993),
            );
            r.eq(
                "get text by index",
                row.get::<String>(4).ok(),
                Some(sent[4].1.as_str().unwrap().to_owned()),
            );
            r.eq(
                "get null",
                row.get::<Option<i64>>("v_null").ok(),
                Some(None),
            );
            r.err_kind("get wrong type", row.get::<i64>("v_text"), "invalid-input");
            r.err_kind(
                "get missing column",
                row.get::<i64>("nope"),
                "invalid-input",
            );
        }
    }
    let typed = db.query_as::<Typed>(
        "SELECT v_int, v_text, v_blob, v_null FROM probe_values",
        &[],
    );
    r.eq(
        "query_as",
        typed.map_err(|e| e.to_string()),
        Ok(vec![Typed {
            v_int: 9_007_199_254_740_993,
            v_text: sent[4].1.as_str().unwrap().into(),
            v_blob: vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff],
            v_null: None,
        }]),
    );

    // 25 rows in a committed transaction.
    let filled = db.transaction(|tx| {
        for n in 0..25i64 {
            tx.execute(
                &format!("INSERT INTO probe_seq (n) VALUES ({})", p(1)),
                &[n.into()],
            )?;
        }
        Result::Ok(())
    });
    r.ok("transaction commit", filled);
    r.eq("count after commit", count(&db).ok(), Some(25));
    r.eq(
        "execute count",
        db.execute(
            &format!("UPDATE probe_seq SET n = n WHERE n < {}", p(1)),
            &[5.into()],
        )
        .ok(),
        Some(5),
    );

    // Cursor, batch by batch, then by iteration.
    if let Some(mut cursor) = r.ok(
        "cursor",
        db.cursor("SELECT n FROM probe_seq ORDER BY n", &[]),
    ) {
        r.eq(
            "cursor columns",
            cursor
                .columns()
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            vec!["n"],
        );
        r.err_kind(
            "call during cursor",
            db.query("SELECT 1", &[]),
            "invalid-input",
        );
        let mut batches = Vec::new();
        let mut sum = 0i64;
        loop {
            match cursor.next_batch(10) {
                Ok(b) if b.is_empty() => break,
                Ok(b) => {
                    batches.push(b.len());
                    sum += b
                        .iter()
                        .map(|row| row.get::<i64>("n").unwrap_or(-1000))
                        .sum::<i64>();
                }
                Err(e) => {
                    r.check("cursor next", false, e);
                    break;
                }
            }
        }
        r.eq("cursor batches", batches.clone(), vec![10, 10, 5]);
        r.eq("cursor sum", sum, 300);
        r.set("batches", batches);
    }
    r.eq(
        "call after cursor",
        db.query("SELECT 1 AS one", &[]).map(|rows| rows.len()).ok(),
        Some(1),
    );
    let iterated = db
        .cursor("SELECT n FROM probe_seq", &[])
        .and_then(|c| c.batch_size(7).collect::<Result<Vec<_>>>());
    r.eq(
        "cursor iterate",
        iterated.map(|rows| rows.len()).ok(),
        Some(25),
    );

    // Rollbacks.
    let failed: Result<()> = db.transaction(|tx| {
        tx.execute(
            &format!("INSERT INTO probe_seq (n) VALUES ({})", p(1)),
            &[100.into()],
        )?;
        Err(Error::msg("deliberate"))
    });
    r.eq(
        "transaction rollback error",
        failed.map_err(|e| e.to_string()),
        Err("deliberate".into()),
    );
    r.eq("count after rollback", count(&db).ok(), Some(25));
    r.ok("begin", db.begin());
    r.ok(
        "insert in tx",
        db.execute("INSERT INTO probe_seq (n) VALUES (200)", &[]),
    );
    r.eq("count inside tx", count(&db).ok(), Some(26));
    r.ok("rollback", db.rollback());
    r.eq("count after raw rollback", count(&db).ok(), Some(25));
    r.ok("begin again", db.begin());
    r.ok(
        "insert in tx again",
        db.execute("INSERT INTO probe_seq (n) VALUES (300)", &[]),
    );
    r.ok("commit", db.commit());
    r.eq("count after raw commit", count(&db).ok(), Some(26));

    // Errors.
    let bad = db.execute("SELEKT nonsense", &[]);
    r.check("bad sql fails", bad.is_err(), "a bad statement succeeded");
    r.set("bad_sql_kind", outcome(&bad));
    r.check(
        "missing table fails",
        db.query("SELECT * FROM probe_missing_table", &[]).is_err(),
        "succeeded",
    );

    Ok(Json(r.finish()))
}

fn main() {}
