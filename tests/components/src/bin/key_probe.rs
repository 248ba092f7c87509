//! Tests key validation with keys the host test chooses: the input is a JSON
//! list of keys; for each, `put`s 3 bytes then `get`s them back on store
//! `data`. Output: a JSON object from key to the outcome of the first of the
//! two calls that failed, as a WIT error kind (`invalid-input`, ...), or `ok`
//! if both succeeded and the bytes matched (else `mismatch`).

use caisson_sdk::objects::Store;
use caisson_sdk::{Json, Result};
use caisson_test_components::outcome;
use serde_json::{Map, Value};

#[caisson_sdk::task]
fn run(keys: Json<Vec<String>>) -> Result<Json<Map<String, Value>>> {
    let store = Store::open("data")?;
    let mut out = Map::new();
    for key in keys.0 {
        let put = store.put(&key, b"pwn");
        let get = store.get(&key);
        let result = match (outcome(&put), &get) {
            ("ok", Ok(data)) if data == b"pwn" => "ok",
            ("ok", Ok(_)) => "mismatch",
            ("ok", get) => outcome(get),
            (put, _) => put,
        };
        out.insert(key, Value::String(result.to_owned()));
    }
    Ok(Json(out))
}

fn main() {}
