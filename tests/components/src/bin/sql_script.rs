//! Runs a list of SQL statements, in order, on one connection to the source
//! labelled `db`, and reports what each returned. The session-isolation tests
//! use it to play both the run that leaves state behind and the run after it.
//!
//! Input: `{"db": "<label>", "steps": [{"sql": "...", "params": [<json>],
//! "execute": false}]}`, where each JSON parameter binds as `null`, `boolean`,
//! `int`, `float` or `text`. A failing step does not stop the script.
//!
//! Output: `{"results": [<result>, ...]}`, one per step: `{"rows": [{<column>:
//! <json>}, ...]}` for a query, `{"affected": n}` for an execute, or
//! `{"error": "<kind>", "message": "..."}`.

use caisson_sdk::sql::{Db, Value};
use caisson_sdk::{Json, Result};
use serde::Deserialize;
use serde_json::{Value as J, json};

#[derive(Deserialize)]
struct Script {
    db: String,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    sql: String,
    #[serde(default)]
    params: Vec<J>,
    #[serde(default)]
    execute: bool,
}

fn param(value: &J) -> Value {
    match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => n.as_i64().map_or_else(|| n.as_f64().into(), Value::Int),
        J::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

#[caisson_sdk::task]
fn run(Json(script): Json<Script>) -> Result<Json<J>> {
    let db = Db::open(&script.db)?;
    let results: Vec<J> = script
        .steps
        .iter()
        .map(|step| {
            let params: Vec<Value> = step.params.iter().map(param).collect();
            let result = if step.execute {
                db.execute(&step.sql, &params)
                    .map(|n| json!({ "affected": n }))
            } else {
                db.query(&step.sql, &params).map(|rows| {
                    let rows: Vec<J> = rows
                        .into_rows()
                        .iter()
                        .map(|row| J::Object(row.to_json()))
                        .collect();
                    json!({ "rows": rows })
                })
            };
            result.unwrap_or_else(|e| json!({ "error": e.kind(), "message": e.to_string() }))
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

fn main() {}
