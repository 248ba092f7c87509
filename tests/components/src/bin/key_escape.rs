//! Tests key validation: for each hostile key, `put`s 3 bytes then `get`s it
//! back on store `data`. Output: a JSON object from key to the outcome of the
//! first of the two calls that failed, as a WIT error kind (`invalid-input`,
//! `not-found`, ...), or `ok` if both succeeded (and the bytes matched; else
//! `mismatch`). Keys: `../x`, `/etc/passwd`, `a/../../b`, `a//b`, `./a`,
//! `%2e%2e/x`, `a/./b`, `..`, `` (empty), `a/`.

use caisson_sdk::objects::Store;
use caisson_sdk::{Json, Result};
use caisson_test_components::outcome;
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "../x",
    "/etc/passwd",
    "a/../../b",
    "a//b",
    "./a",
    "%2e%2e/x",
    "a/./b",
    "..",
    "",
    "a/",
];

#[caisson_sdk::task]
fn run() -> Result<Json<Map<String, Value>>> {
    let store = Store::open("data")?;
    let mut out = Map::new();
    for &key in KEYS {
        let put = store.put(key, b"pwn");
        let get = store.get(key);
        let result = match (outcome(&put), &get) {
            ("ok", Ok(data)) if data == b"pwn" => "ok",
            ("ok", Ok(_)) => "mismatch",
            ("ok", get) => outcome(get),
            (put, _) => put,
        };
        out.insert(key.to_owned(), Value::String(result.to_owned()));
    }
    Ok(Json(out))
}

fn main() {}
