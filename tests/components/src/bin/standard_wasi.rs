//! A task written against the standard WIT rather than Caisson's own: it
//! reads its configuration through `wasi:config/store` and logs through
//! `wasi:logging/logging`, bindings generated from those packages alone.
//! Output: `{"greeting": get("greeting"), "missing": get("nope"), "all": get-all()}`.
//! With parameter `flood`, it logs that many 1 KiB records first.

use caisson_sdk::{Json, Result};
use serde_json::{Value, json};

mod standard {
    wit_bindgen::generate!({
        inline: "
            package caisson:standard-test;
            world imports {
                import wasi:config/store@0.2.0-draft;
                import wasi:logging/logging@0.1.0-draft;
            }
        ",
        path: ["../../wit/deps/config.wit", "../../wit/deps/logging.wit"],
        world: "caisson:standard-test/imports",
        generate_all,
    });
}

use standard::wasi::config::store;
use standard::wasi::logging::logging::{self, Level};

#[caisson_sdk::task]
fn run() -> Result<Json<Value>> {
    let get = |key: &str| store::get(key).map_err(|e| format!("{e:?}"));
    let flood: u64 = get("flood")?.map_or(Ok(0), |n| n.parse())?;
    let filler = "x".repeat(1024);
    for i in 0..flood {
        logging::log(Level::Info, "flood", &format!("{i} {filler}"));
    }
    logging::log(Level::Critical, "standard", "read the configuration");
    let all: serde_json::Map<String, Value> = store::get_all()
        .map_err(|e| format!("{e:?}"))?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(Json(json!({
        "greeting": get("greeting")?,
        "missing": get("nope")?,
        "all": all,
    })))
}

fn main() {}
