//! Tests parameter passing. Output: every parameter as a JSON object
//! `{"<name>": "<value>", ...}` (from `params::all`, so in name order).

use caisson_sdk::{Json, Result, params};
use serde_json::{Map, Value};

#[caisson_sdk::task]
fn run() -> Result<Json<Map<String, Value>>> {
    Ok(Json(
        params::all()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    ))
}

fn main() {}
