//! Dumps everything a task can see, for the host test to search for
//! credentials: environment variables, arguments, every parameter, every
//! file reachable from its preopened directories (names and the first 64 KiB
//! of each), and the host's error messages from calls that fail: opening
//! each label in params `objects` and `sql` (comma-separated), reading a
//! missing key and listing, a bad SQL statement and a write (param `write`,
//! by default `CREATE TEMPORARY TABLE secret_probe (x int)`).
//!
//! Everything goes to the log, to stdout, to stderr and into the output: a
//! JSON object `{"env", "args", "params", "files", "calls"}`.

use std::io::Read;
use std::path::Path;

use caisson_sdk::objects::Store;
use caisson_sdk::sql::Db;
use caisson_sdk::{Json, Result, info, params};
use serde_json::{Map, Value, json};

fn walk(dir: &Path, files: &mut Map<String, Value>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && depth < 8 {
            files.insert(path.display().to_string(), Value::String("<dir>".into()));
            walk(&path, files, depth + 1);
        } else {
            let mut text = Vec::new();
            let read =
                std::fs::File::open(&path).and_then(|f| f.take(64 << 10).read_to_end(&mut text));
            let value = match read {
                Ok(_) => String::from_utf8_lossy(&text).into_owned(),
                Err(e) => format!("<unreadable: {e}>"),
            };
            files.insert(path.display().to_string(), Value::String(value));
        }
    }
}

fn said<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Ok(v) => format!("ok: {v:?}"),
        Err(e) => format!("error {}: {e}", e.kind()),
    }
}

#[caisson_sdk::task]
fn run(input: Vec<u8>) -> Result<Json<Value>> {
    let env: Map<String, Value> = std::env::vars()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let args: Vec<String> = std::env::args().collect();
    let params: Map<String, Value> = params::all()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut files = Map::new();
    for root in ["/", ".", "/scratch", "..", "/etc", "/proc/self"] {
        walk(Path::new(root), &mut files, 0);
    }
    let mut calls = Map::new();
    let list = |name: &str| {
        params::get(name)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for label in list("objects") {
        match Store::open(&label) {
            Ok(store) => {
                calls.insert(format!("objects {label} open"), "ok".into());
                let missing = said(store.get("no/such/key"));
                calls.insert(format!("objects {label} get missing"), missing.into());
                let listed = said(store.list_page("", None, 10));
                calls.insert(format!("objects {label} list"), listed.into());
                let put = said(store.put("secret-probe", b"x"));
                calls.insert(format!("objects {label} put"), put.into());
            }
            Err(e) => {
                let text = format!("error {}: {e}", e.kind());
                calls.insert(format!("objects {label} open"), text.into());
            }
        }
    }
    for label in list("sql") {
        match Db::open(&label) {
            Ok(db) => {
                calls.insert(format!("sql {label} open"), "ok".into());
                let bad = said(db.query("SELECT * FROM no_such_table_anywhere", &[]));
                calls.insert(format!("sql {label} bad statement"), bad.into());
                // A temporary table by default, so shared databases keep
                // nothing; param `write` overrides it.
                let statement =
                    params::get_or("write", "CREATE TEMPORARY TABLE secret_probe (x int)");
                let write = said(db.execute(&statement, &[]));
                calls.insert(format!("sql {label} write"), write.into());
                let conn = said(
                    db.query("SELECT 1 AS one", &[])
                        .map(|r| r.into_rows().len()),
                );
                calls.insert(format!("sql {label} select"), conn.into());
            }
            Err(e) => {
                let text = format!("error {}: {e}", e.kind());
                calls.insert(format!("sql {label} open"), text.into());
            }
        }
    }
    let report = json!({
        "input": String::from_utf8_lossy(&input),
        "env": env,
        "args": args,
        "params": params,
        "files": files,
        "calls": calls,
    });
    let text = report.to_string();
    info!("{text}");
    println!("{text}");
    eprintln!("{text}");
    Ok(Json(report))
}

fn main() {}
