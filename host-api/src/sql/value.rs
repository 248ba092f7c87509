//! Guest values, whatever the database: checking the ones a task passes in
//! (the parts every backend shares) and estimating the size of the ones it
//! gets back, for [`SqlLimits`](super::SqlLimits).

use std::fmt::{self, Write as _};

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, TimeDelta};

use crate::SqlError as WitError;
use crate::bindings::caisson::task::sql::{Interval, Value};

/// Estimated cost of one decoded value beyond its payload: the size of a
/// `value` in the guest's memory under the canonical ABI.
const VALUE_OVERHEAD: usize = 16;
/// Estimated cost of one row beyond its values (a `list` pointer and length).
const ROW_OVERHEAD: usize = 8;

pub(super) fn invalid_param(index: usize, message: impl fmt::Display) -> WitError {
    WitError::InvalidInput(format!("parameter {}: {message}", index + 1))
}

/// The last time of day PostgreSQL accepts: 24:00:00.
pub(super) const MAX_TIME_MICROS: u64 = 86_400_000_000;
/// The most decimal digits a `decimal` parameter may expand to. PostgreSQL
/// takes 131072 before the point and 16383 after; a short text with a huge
/// exponent must not make the host allocate that much first.
const MAX_DECIMAL_DIGITS: usize = 1000;

/// A decimal the guest passed, split into its digits and the position of
/// the point: `-12.50` is `{ negative, integer: "12", fraction: "50" }`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decimal {
    NaN,
    Infinity {
        negative: bool,
    },
    Finite {
        negative: bool,
        integer: String,
        fraction: String,
    },
}

/// Parses `[+-]digits[.digits][e[+-]digits]`, `NaN` or `[+-]Infinity`.
pub(super) fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let bad = || format!("{text:?} is not a decimal number");
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest.eq_ignore_ascii_case("nan") && rest.len() == text.len() {
        return Ok(Decimal::NaN);
    }
    if rest.eq_ignore_ascii_case("infinity") || rest.eq_ignore_ascii_case("inf") {
        return Ok(Decimal::Infinity { negative });
    }
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => {
            let exponent: i64 = rest[at + 1..].parse().map_err(|_| bad())?;
            (&rest[..at], exponent)
        }
        None => (rest, 0),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if integer.is_empty() && fraction.is_empty()
        || !integer
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // Shift the point by the exponent.
    let digits = format!("{integer}{fraction}");
    let point = i64::try_from(integer.len()).map_err(|_| bad())? + exponent;
    let too_long = || format!("{text:?} has more than {MAX_DECIMAL_DIGITS} digits");
    let limit = MAX_DECIMAL_DIGITS as i64;
    if point > limit || point < -limit || digits.len() > MAX_DECIMAL_DIGITS {
        return Err(too_long());
    }
    let (integer, fraction) = if point <= 0 {
        (
            String::new(),
            format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        let (i, f) = digits.split_at(point as usize);
        (i.to_owned(), f.to_owned())
    };
    let integer = integer.trim_start_matches('0').to_owned();
    Ok(Decimal::Finite {
        negative,
        integer,
        fraction,
    })
}

/// A UUID from its hyphenated (or plain 32-digit) hex form.
pub(super) fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let bad = || format!("{text:?} is not a UUID");
    let hex: String = if text.len() == 36 {
        let hyphens = [8, 13, 18, 23];
        if !hyphens.iter().all(|&i| text.as_bytes()[i] == b'-') {
            return Err(bad());
        }
        text.chars().filter(|&c| c != '-').collect()
    } else {
        text.to_owned()
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

pub(super) fn json_param(text: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| format!("not valid JSON: {e}"))
}

/// The lower-case, hyphenated form of a UUID.
pub(super) fn uuid_text(bytes: [u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

// The text forms of the kinds a database without a native type for them
// (SQLite, and MySQL for arrays and intervals) stores as text.

/// `YYYY-MM-DD`, or `infinity`/`-infinity` for the extremes.
pub(super) fn date_text(days: i32) -> Result<String, String> {
    match days {
        i32::MAX => Ok("infinity".into()),
        i32::MIN => Ok("-infinity".into()),
        days => NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|epoch| epoch.checked_add_signed(TimeDelta::days(days.into())))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .ok_or_else(|| format!("date {days} is out of range")),
    }
}

/// `HH:MM:SS.ffffff`.
pub(super) fn time_text(micros: u64) -> Result<String, String> {
    if micros == MAX_TIME_MICROS {
        return Ok("24:00:00.000000".into());
    }
    let secs = u32::try_from(micros / 1_000_000).map_err(|e| e.to_string())?;
    let nanos = (micros % 1_000_000) as u32 * 1000;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
        .map(|t| t.format("%H:%M:%S%.6f").to_string())
        .ok_or_else(|| format!("time {micros} us is past 24:00:00"))
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, SQLite's own spelling, with no zone.
pub(super) fn datetime_text(micros: i64) -> Result<String, String> {
    match micros {
        i64::MAX => Ok("infinity".into()),
        i64::MIN => Ok("-infinity".into()),
        micros => DateTime::from_timestamp_micros(micros)
            .map(|at| at.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
            .ok_or_else(|| format!("datetime {micros} us is out of range")),
    }
}

/// RFC 3339 in UTC with microseconds, fixed width.
pub(super) fn timestamp_text(micros: i64) -> Result<String, String> {
    match micros {
        i64::MAX => Ok("infinity".into()),
        i64::MIN => Ok("-infinity".into()),
        micros => DateTime::from_timestamp_micros(micros)
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Micros, true))
            .ok_or_else(|| format!("timestamp {micros} us is out of range")),
    }
}

/// An array as the JSON text SQLite stores it: numbers and booleans as
/// themselves, everything else as strings in the scalar's text form.
pub(super) fn json_array<T>(
    elements: &[Option<T>],
    mut convert: impl FnMut(&T) -> Result<serde_json::Value, String>,
) -> Result<String, String> {
    let values = elements
        .iter()
        .map(|e| e.as_ref().map_or(Ok(serde_json::Value::Null), &mut convert))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::Value::Array(values).to_string())
}

/// An interval as ISO 8601 text: `P1M2DT-3.500000S`.
pub(super) fn interval_text(i: &Interval) -> String {
    format!(
        "P{}M{}DT{}{}.{:06}S",
        i.months,
        i.days,
        if i.microseconds < 0 { "-" } else { "" },
        i.microseconds.unsigned_abs() / 1_000_000,
        i.microseconds.unsigned_abs() % 1_000_000
    )
}

fn value_size(value: &Value) -> usize {
    fn list<T>(items: &[Option<T>], each: impl Fn(&T) -> usize) -> usize {
        items
            .iter()
            .map(|item| 8 + item.as_ref().map_or(0, &each))
            .fold(0, usize::saturating_add)
    }
    VALUE_OVERHEAD
        + match value {
            Value::Text(s) | Value::Json(s) | Value::Decimal(s) | Value::Uuid(s) => s.len(),
            Value::Other(o) => o.type_name.len() + o.text.len(),
            Value::Blob(b) => b.len(),
            Value::BooleanArray(v) => list(v, |_| 1),
            Value::IntArray(v) => list(v, |_| 8),
            Value::FloatArray(v) => list(v, |_| 8),
            Value::DateArray(v) => list(v, |_| 4),
            Value::DatetimeArray(v) | Value::TimestampArray(v) => list(v, |_| 8),
            Value::DecimalArray(v) | Value::TextArray(v) | Value::UuidArray(v) => {
                list(v, |s| 8 + s.len())
            }
            _ => 0,
        }
}

pub(super) fn row_size(values: &[Value]) -> usize {
    values
        .iter()
        .map(value_size)
        .fold(ROW_OVERHEAD, usize::saturating_add)
}
