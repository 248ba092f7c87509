//! Tries to make the host spend memory for it, up to and past the run's
//! memory limit, in the way param `mode` names:
//!
//! - `sql-text`: one query whose text is `size` MiB (default 48);
//! - `sql-params`: one query with a text parameter of `size` MiB (default 15),
//!   again and again, keeping nothing;
//! - `sql-rows`: queries of 64 rows of 64 KiB each on PostgreSQL, keeping
//!   every result, until one fails;
//! - `keys`: `put`s under keys of `size` MiB (default 5), 20 times;
//! - `puts`: opens writers on store `store` (default `data`) under `prefix`,
//!   writes 8 MiB into each and never finishes one, until a write fails;
//! - `list`: puts 1,000 objects with 100-byte keys under `prefix` (the
//!   local-disk S3 server of the tests fails on longer ones), then lists
//!   them in pages of the most a page may hold, keeping every page, until a
//!   listing fails;
//! - `log`: logs 32 MiB in 1 KiB lines;
//! - `normal`: one small query, one small object written and listed.
//!
//! Every mode but `normal` first fills `ballast` MiB (default 0) of its own
//! memory, so that the host's buffers are what crosses the limit, and ends
//! with the first error it meets. `normal` returns `ok`.

use std::io::Write;

use caisson_sdk::objects::Store;
use caisson_sdk::sql::{Db, Value};
use caisson_sdk::{Error, Result, info, params};

const MIB: usize = 1 << 20;

fn size(default: usize) -> Result<usize> {
    Ok(params::parse::<usize>("size")?.unwrap_or(default) * MIB)
}

#[caisson_sdk::task]
fn run() -> Result<String> {
    let mode = params::get_or("mode", "normal");
    let store = || Store::open(&params::get_or("store", "data"));
    let db = || Db::open(&params::get_or("db", "warehouse"));
    let prefix = params::get_or("prefix", "host-hog");
    // Touched, so that it is resident, not only reserved.
    let ballast = vec![7u8; params::parse::<usize>("ballast")?.unwrap_or(0) * MIB];
    match mode.as_str() {
        "sql-text" => {
            let mut text = String::with_capacity(size(48)? + 16);
            text.push_str("SELECT '");
            text.extend(std::iter::repeat_n('a', size(48)?));
            text.push('\'');
            db()?.query(&text, &[])?;
        }
        "sql-params" => {
            let db = db()?;
            let param = Value::Text("p".repeat(size(15)?));
            for _ in 0..20 {
                db.query("SELECT length($1) AS n", std::slice::from_ref(&param))?;
            }
        }
        "sql-rows" => {
            let db = db()?;
            let mut kept = Vec::new();
            loop {
                kept.push(db.query(
                    "SELECT repeat('r', 65536) AS r FROM generate_series(1, 64)",
                    &[],
                )?);
            }
        }
        "keys" => {
            let store = store()?;
            let key = "k".repeat(size(5)?);
            for _ in 0..20 {
                store.put(&key, b"x")?;
            }
        }
        "puts" => {
            let store = store()?;
            let chunk = vec![b'w'; MIB];
            let mut open = Vec::new();
            for i in 0.. {
                let mut writer = store.writer(&format!("{prefix}/flood-{i}"))?;
                for _ in 0..8 {
                    writer.write_all(&chunk).map_err(Error::from)?;
                }
                open.push(writer);
            }
        }
        "list" => {
            let store = store()?;
            let pad = "p".repeat(40);
            for i in 0..1000 {
                store.put(&format!("{prefix}/{pad}/{pad}-{i:04}"), b"x")?;
            }
            let mut pages = Vec::new();
            loop {
                let mut token = None;
                loop {
                    let page = store.list_page(&format!("{prefix}/"), token.as_deref(), 1000)?;
                    token = page.next_page_token.clone();
                    pages.push(page);
                    if token.is_none() {
                        break;
                    }
                }
            }
        }
        "log" => {
            // Past the log's limit a record is dropped, not refused with an
            // error the guest sees: stop at twice the default limit (16 MiB).
            let line = "l".repeat(1024);
            for n in 0..32 * 1024 {
                info!("{n} {line}");
            }
        }
        "normal" => {
            let n: i64 = db()?.query("SELECT 41 + 1 AS n", &[])?[0].get("n")?;
            let store = store()?;
            store.put(&format!("{prefix}/normal"), n.to_string())?;
            let listed = store.list_page(&format!("{prefix}/"), None, 10)?;
            if n != 42 || listed.objects.is_empty() {
                return Err(Error::msg(format!("normal run saw {n} and {listed:?}")));
            }
            return Ok("ok".into());
        }
        other => return Err(Error::invalid_input(format!("unknown mode {other:?}"))),
    }
    drop(ballast);
    Err(Error::msg(format!("mode {mode} ended without an error")))
}

fn main() {}
