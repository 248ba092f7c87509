//! Reads objects of store `data` with `read_many` (input `{"keys": [...]}`)
//! or `read_prefix` (input `{"prefix": "..."}`) and reports what arrived, in
//! order: `[key, size]` for an object, `[key, "<error kind>"]` for a failure.

use caisson_sdk::objects::Store;
use caisson_sdk::{Json, Result};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Input {
    keys: Option<Vec<String>>,
    prefix: Option<String>,
}

#[caisson_sdk::task]
fn run(Json(input): Json<Input>) -> Result<Json<Vec<Value>>> {
    let store = Store::open("data")?;
    let objects = match (&input.keys, &input.prefix) {
        (Some(keys), _) => store.read_many(keys)?,
        (None, Some(prefix)) => store.read_prefix(prefix)?,
        (None, None) => caisson_sdk::bail!("give `keys` or `prefix`"),
    };
    Ok(Json(
        objects
            .map(|(key, data)| match data {
                Ok(bytes) => json!([key, bytes.len()]),
                Err(e) => json!([key, e.kind()]),
            })
            .collect(),
    ))
}

fn main() {}
