//! Exercises every object-store call end to end on store `data`, under the
//! prefix `probe/` (emptied first): put, get, read_to_string, get-range
//! (inside and past the end), head, list with page size 2 (by pages and by
//! object), copy, delete (present and missing), not-found errors, a streamed
//! writer (200,000 bytes, invisible until `finish`), an aborted writer, a
//! streamed reader, lines and an empty object.
//!
//! Output: the [`Report`] JSON
//! `{"ok": bool, "failures": [...], "checks": {"<name>": "ok" | "FAIL: ..."},
//!   "pages": [["probe/a", "probe/b"], ["probe/c", "probe/d/e"]],
//!   "range_past_end": "<outcome of get-range at offset 10 of a 5-byte object>",
//!   "final_keys": ["probe/...", ...]}`.

use std::io::{Read, Write};

use caisson_sdk::objects::Store;
use caisson_sdk::{Json, Result};
use caisson_test_components::{Report, outcome};
use serde_json::Value;

fn keys(store: &Store, prefix: &str) -> Result<Vec<String>> {
    store.list(prefix).map(|m| m.map(|m| m.key)).collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[caisson_sdk::task]
fn run() -> Result<Json<Value>> {
    let store = Store::open("data")?;
    let mut r = Report::default();

    for key in keys(&store, "probe/")? {
        store.delete(&key)?;
    }

    // Whole-object calls.
    for (key, data) in [
        ("probe/a", "alpha"),
        ("probe/b", "bravo"),
        ("probe/c", "charlie"),
        ("probe/d/e", "delta echo"),
    ] {
        if let Some(meta) = r.ok(&format!("put {key}"), store.put(key, data)) {
            r.eq(
                &format!("put {key} meta"),
                (meta.key.as_str(), meta.size),
                (key, data.len() as u64),
            );
        }
    }
    r.eq("get", store.get("probe/a").ok(), Some(b"alpha".to_vec()));
    r.eq(
        "read_to_string",
        store.read_to_string("probe/c").ok(),
        Some("charlie".into()),
    );
    r.eq(
        "get_range",
        store.get_range("probe/c", 2, 3).ok(),
        Some(b"arl".to_vec()),
    );
    r.eq(
        "get_range short",
        store.get_range("probe/a", 3, 100).ok(),
        Some(b"ha".to_vec()),
    );
    r.set(
        "range_past_end",
        outcome(&store.get_range("probe/a", 10, 5)),
    );
    if let Some(meta) = r.ok("head", store.head("probe/b")) {
        r.eq("head size", meta.size, 5);
        r.check(
            "head last_modified",
            meta.last_modified > 0,
            meta.last_modified,
        );
    }

    // Listing, two per page.
    let pages: Result<Vec<Vec<String>>> = store
        .list_pages("probe/")
        .page_size(2)
        .map(|p| p.map(|p| p.objects.into_iter().map(|m| m.key).collect()))
        .collect();
    if let Some(pages) = r.ok("list_pages", pages) {
        r.check(
            "list_pages size",
            pages.iter().all(|p| p.len() <= 2),
            format_args!("{pages:?}"),
        );
        r.eq(
            "list_pages keys",
            pages.concat(),
            vec!["probe/a", "probe/b", "probe/c", "probe/d/e"]
                .into_iter()
                .map(String::from)
                .collect(),
        );
        r.set("pages", pages);
    }
    let listed: Result<Vec<String>> = store
        .list("probe/")
        .page_size(2)
        .map(|m| m.map(|m| m.key))
        .collect();
    r.eq(
        "list",
        listed.ok(),
        Some(
            ["probe/a", "probe/b", "probe/c", "probe/d/e"]
                .map(String::from)
                .to_vec(),
        ),
    );
    r.eq(
        "list nested",
        keys(&store, "probe/d/").ok(),
        Some(vec!["probe/d/e".to_string()]),
    );
    r.eq(
        "list empty prefix",
        keys(&store, "probe/nothing/").ok(),
        Some(vec![]),
    );

    // Copy and delete.
    r.ok("copy", store.copy("probe/a", "probe/copy"));
    r.eq(
        "copy content",
        store.get("probe/copy").ok(),
        Some(b"alpha".to_vec()),
    );
    r.ok("delete", store.delete("probe/b"));
    r.err_kind("head deleted", store.head("probe/b"), "not-found");
    r.err_kind("get deleted", store.get("probe/b"), "not-found");
    r.ok("delete missing", store.delete("probe/b"));
    r.err_kind("get missing", store.get("probe/missing"), "not-found");
    r.err_kind(
        "reader missing",
        store.reader("probe/missing").map(drop),
        "not-found",
    );
    r.eq(
        "exists",
        (store.exists("probe/a").ok(), store.exists("probe/b").ok()),
        (Some(true), Some(false)),
    );

    // Streamed upload: invisible until finish.
    let data = pattern(200_000);
    if let Some(mut w) = r.ok("writer", store.writer("probe/big")) {
        r.ok("writer write", w.write_all(&data).map_err(Into::into));
        r.err_kind(
            "writer invisible before finish",
            store.head("probe/big"),
            "not-found",
        );
        r.eq("writer bytes_written", w.bytes_written(), data.len() as u64);
        if let Some(meta) = r.ok("writer finish", w.finish()) {
            r.eq("writer meta size", meta.size, data.len() as u64);
        }
        r.eq(
            "writer head size",
            store.head("probe/big").ok().map(|m| m.size),
            Some(data.len() as u64),
        );
        r.eq(
            "writer get_range",
            store.get_range("probe/big", 100_000, 10).ok(),
            Some(data[100_000..100_010].to_vec()),
        );
    }
    // Streamed download.
    if let Some(mut reader) = r.ok("reader", store.reader("probe/big")) {
        let mut back = Vec::new();
        let read = reader.read_to_end(&mut back);
        r.check("reader read", read.is_ok(), format_args!("{read:?}"));
        r.check(
            "reader content",
            back == data,
            format_args!(
                "{} bytes, first difference at {:?}",
                back.len(),
                back.iter().zip(&data).position(|(a, b)| a != b)
            ),
        );
        r.eq("reader bytes_read", reader.bytes_read(), data.len() as u64);
    }
    // Aborted upload: dropping the writer leaves nothing behind.
    if let Some(mut w) = r.ok("aborted writer", store.writer("probe/aborted")) {
        r.ok(
            "aborted writer write",
            w.write_all(b"never visible").map_err(Into::into),
        );
        drop(w);
        r.err_kind(
            "aborted writer invisible",
            store.head("probe/aborted"),
            "not-found",
        );
    }

    // Lines and an empty object.
    r.ok("put lines", store.put("probe/lines", "one\ntwo\r\nthree"));
    let lines: Result<Vec<String>> = store.lines("probe/lines").and_then(|l| l.collect());
    r.eq(
        "lines",
        lines.ok(),
        Some(vec!["one".to_string(), "two".into(), "three".into()]),
    );
    r.ok("put empty", store.put("probe/empty", b""));
    r.eq("get empty", store.get("probe/empty").ok(), Some(vec![]));
    let mut empty = Vec::new();
    let read = store
        .reader("probe/empty")
        .and_then(|mut rd| Ok(rd.read_to_end(&mut empty)?));
    r.eq("reader empty", read.ok(), Some(0));

    r.set("final_keys", keys(&store, "probe/").unwrap_or_default());
    Ok(Json(r.finish()))
}

fn main() {}
