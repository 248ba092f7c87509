//! Exports the result of a SQL query to an object as JSON Lines.
//!
//! Parameters:
//!
//! | name     | default     | meaning                                     |
//! |----------|-------------|---------------------------------------------|
//! | `db`     | `warehouse` | label of the database                       |
//! | `query`  | (required)  | the query to run (no parameters)            |
//! | `store`  | `data`      | label of the store to write to              |
//! | `output` | (required)  | key of the object to write                  |
//! | `batch`  | `500`       | rows fetched per host call                  |
//!
//! Rows stream from a cursor into a streamed upload, so a result of any size
//! uses bounded memory. Each row becomes one line holding a JSON object from
//! column name to value ([`row_to_json`]):
//!
//! | SQL value   | JSON                                                     |
//! |-------------|----------------------------------------------------------|
//! | `null`      | `null`                                                   |
//! | `boolean`   | `true` / `false`                                         |
//! | `int`       | a number                                                 |
//! | `float`     | a number; `null` for NaN and infinities                  |
//! | `text`      | a string                                                 |
//! | `blob`      | a string: standard base64 with padding (RFC 4648 §4)     |
//! | `timestamp` | a string: RFC 3339 in UTC with microseconds, `2024-05-01T12:00:00.000000Z` |
//! | `json`      | the document itself, embedded                            |
//!
//! The object appears only once the whole export succeeded. The output is
//! `{"rows": N, "key": "<output>"}`.

use std::io::{BufWriter, Write};

use caisson_sdk::objects::Store;
use caisson_sdk::sql::{Db, Row, Value};
use caisson_sdk::{Error, Json, Result, info, log, params};
use serde::Serialize;

/// The run's output.
#[derive(Debug, Serialize)]
pub struct Exported {
    /// Rows written.
    pub rows: u64,
    /// The key written to.
    pub key: String,
}

/// A value as export JSON (see the crate documentation for the mapping).
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Blob(b) => serde_json::Value::String(base64(b)),
        Value::Timestamp(t) => serde_json::Value::String(rfc3339_micros(*t)),
        v => v.to_json(),
    }
}

/// A row as an export JSON object from column name to value.
pub fn row_to_json(row: &Row) -> serde_json::Map<String, serde_json::Value> {
    row.columns()
        .iter()
        .zip(row.values())
        .map(|(c, v)| (c.name.clone(), value_to_json(v)))
        .collect()
}

/// Standard base64 with padding.
///
/// ```
/// assert_eq!(sql_export::base64(b"hi!?"), "aGkhPw==");
/// ```
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC, with six fractional
/// digits.
///
/// ```
/// assert_eq!(sql_export::rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
/// assert_eq!(sql_export::rfc3339_micros(1_714_564_800_000_001), "2024-05-01T12:00:00.000001Z");
/// assert_eq!(sql_export::rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
/// ```
pub fn rfc3339_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[caisson_sdk::task]
fn run() -> Result<Json<Exported>> {
    let db_label = params::get_or("db", "warehouse");
    let query = params::require("query")?;
    let label = params::get_or("store", "data");
    let key = params::require("output")?;
    let batch_size: u32 = params::parse("batch")?.unwrap_or(500);
    if batch_size == 0 {
        return Err(Error::invalid_input("parameter `batch` must be at least 1"));
    }

    let db = Db::open(&db_label)?;
    let store = Store::open(&label)?;
    let mut cursor = db.cursor(&query, &[])?;
    // Buffer so that each small line does not cost a host call.
    let mut out = BufWriter::with_capacity(64 * 1024, store.writer(&key)?);
    let mut rows = 0u64;
    loop {
        let batch = cursor.next_batch(batch_size)?;
        if batch.is_empty() {
            break;
        }
        for row in &batch {
            serde_json::to_writer(&mut out, &row_to_json(row))?;
            out.write_all(b"\n")?;
        }
        rows += batch.len() as u64;
        log::progress(rows, 0);
    }
    drop(cursor);
    let meta = out
        .into_inner()
        .map_err(|e| Error::from(e.into_error()))?
        .finish()?;
    info!("exported {rows} rows ({} bytes) to {key}", meta.size);
    Ok(Json(Exported { rows, key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lengths() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0xfc]), "//79/A==");
    }

    #[test]
    fn dates() {
        assert_eq!(
            rfc3339_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_micros(-62_135_596_800_000_000),
            "0001-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_micros(253_402_300_799_999_999),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn values() {
        assert_eq!(value_to_json(&Value::Blob(vec![1, 2, 3])), "AQID");
        assert_eq!(
            value_to_json(&Value::Json(r#"{"a":[1]}"#.into())),
            serde_json::json!({"a": [1]})
        );
        assert_eq!(value_to_json(&Value::Int(5)), 5);
    }
}
