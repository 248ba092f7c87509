//! SQL databases: PostgreSQL, MySQL (and MariaDB) and SQLite.
//!
//! Open a database by the label the operator configured with [`Db::open`].
//! Parameters are always bound, never spliced into the statement: use
//! `$1, $2, ...` placeholders for PostgreSQL, `?` for MySQL, and `?` or
//! `?1, ?2, ...` for SQLite (SQLite also accepts `$1`).
//!
//! ```no_run
//! use caisson_sdk::sql::{Db, Value};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct User {
//!     id: i64,
//!     name: String,
//!     email: Option<String>,
//! }
//!
//! # fn f() -> caisson_sdk::Result<()> {
//! let db = Db::open("warehouse")?;
//! db.execute("INSERT INTO users (id, name) VALUES ($1, $2)", &[7.into(), "Ada".into()])?;
//! let users: Vec<User> = db.query_as("SELECT id, name, email FROM users WHERE id > $1", &[0.into()])?;
//!
//! // Large results stream through a cursor, a batch of rows per host call.
//! let mut n = 0;
//! for row in db.cursor("SELECT id FROM events", &[])?.batch_size(1000) {
//!     let id: i64 = row?.get("id")?;
//!     n += id;
//! }
//!
//! // All or nothing: commits if the closure returns Ok, else rolls back.
//! db.transaction(|tx| {
//!     tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &[1.into()])?;
//!     tx.execute("UPDATE accounts SET balance = balance + 10 WHERE id = $1", &[2.into()])?;
//!     Ok(())
//! })?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wit::caisson::task::sql as wit;
use crate::{Error, Result};

/// Rows a cursor asks for per host call unless told otherwise.
const DEFAULT_BATCH: u32 = 500;

/// A typed SQL value, used both for parameters and for results.
///
/// Parameters convert from the usual Rust types with `.into()`:
///
/// ```
/// use caisson_sdk::sql::Value;
///
/// let params: [Value; 5] = [7.into(), "Ada".into(), 2.5.into(), None::<i64>.into(), vec![1u8, 2].into()];
/// assert_eq!(params[3], Value::Null);
/// assert_eq!(Value::from(serde_json::json!({"a": 1})), Value::Json(r#"{"a":1}"#.into()));
/// assert_eq!(Value::from(vec![Some(1i64), None]), Value::IntArray(vec![Some(1), None]));
/// ```
///
/// Dates and times are counts from the Unix epoch, as the WIT has them;
/// with the `chrono` feature they convert from and to `chrono`'s types
/// (`NaiveDate`, `NaiveTime`, `NaiveDateTime`, `DateTime<Utc>`), with
/// `uuid` from and to `uuid::Uuid` and with `rust_decimal` from and to
/// `rust_decimal::Decimal`. New kinds may be added: match with a `_` arm.
///
/// Serialized with serde, a value is tagged with its WIT case name in
/// snake case: `{"int": 7}`, `{"text": "Ada"}`, `"null"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    #[serde(rename = "boolean")]
    Bool(bool),
    /// An integer.
    Int(i64),
    /// An unsigned 64-bit integer (bound as `NUMERIC` on PostgreSQL).
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// An exact decimal as text (`-123.4500`, `NaN`, `Infinity`).
    Decimal(String),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// A calendar day: days since 1970-01-01 (`i32::MAX`/`MIN` for
    /// PostgreSQL's `infinity`/`-infinity`).
    Date(i32),
    /// A time of day: microseconds since midnight.
    Time(u64),
    /// A date and time without a time zone (`TIMESTAMP`): microseconds since
    /// 1970-01-01T00:00:00 on the same wall clock (`i64::MAX`/`MIN` for
    /// `infinity`/`-infinity`).
    Datetime(i64),
    /// An instant (`TIMESTAMPTZ`): microseconds since the Unix epoch, UTC
    /// (`i64::MAX`/`MIN` for `infinity`/`-infinity`).
    Timestamp(i64),
    /// A length of time in calendar units and microseconds.
    Interval(Interval),
    /// A UUID in its hyphenated text form.
    Uuid(String),
    /// A JSON document, as text.
    Json(String),
    /// An array of booleans; `None` is a NULL element.
    #[serde(rename = "boolean_array")]
    BoolArray(Vec<Option<bool>>),
    /// An array of integers.
    IntArray(Vec<Option<i64>>),
    /// An array of floats.
    FloatArray(Vec<Option<f64>>),
    /// An array of decimals.
    DecimalArray(Vec<Option<String>>),
    /// An array of texts.
    TextArray(Vec<Option<String>>),
    /// An array of UUIDs.
    UuidArray(Vec<Option<String>>),
    /// An array of dates.
    DateArray(Vec<Option<i32>>),
    /// An array of date-times without a time zone.
    DatetimeArray(Vec<Option<i64>>),
    /// An array of instants.
    TimestampArray(Vec<Option<i64>>),
    /// A value of a type with no case here: its type name and text (see the
    /// WIT `other-value`). As a parameter it is bound as text, so cast the
    /// placeholder (`$1::inet`).
    Other {
        /// The database's name for the type.
        type_name: String,
        /// Its text form, or `\x`-prefixed hex of its binary form.
        text: String,
    },
}

/// A length of time as PostgreSQL keeps it: months and days are calendar
/// units, whose length depends on the date they are added to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    /// Months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Microseconds.
    pub microseconds: i64,
}

/// How many microseconds a day has.
const DAY_MICROS: i64 = 86_400_000_000;

/// The calendar date of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn date_string(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        days => {
            let (y, m, d) = civil_from_days(days.into());
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

fn time_string(micros: u64) -> String {
    let secs = micros / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        micros % 1_000_000
    )
}

fn datetime_string(micros: i64) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        micros => {
            let days = micros.div_euclid(DAY_MICROS);
            let (y, m, d) = civil_from_days(days);
            let time = time_string(micros.rem_euclid(DAY_MICROS) as u64);
            format!("{y:04}-{m:02}-{d:02}T{time}")
        }
    }
}

impl Value {
    /// The WIT case name: `null`, `boolean`, `int`, `uint`, `float`,
    /// `decimal`, `text`, `blob`, `date`, `time`, `datetime`, `timestamp`,
    /// `interval`, `uuid`, `json`, `boolean-array` ... `timestamp-array`, or
    /// `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Datetime(_) => "datetime",
            Value::Timestamp(_) => "timestamp",
            Value::Interval(_) => "interval",
            Value::Uuid(_) => "uuid",
            Value::Json(_) => "json",
            Value::BoolArray(_) => "boolean-array",
            Value::IntArray(_) => "int-array",
            Value::FloatArray(_) => "float-array",
            Value::DecimalArray(_) => "decimal-array",
            Value::TextArray(_) => "text-array",
            Value::UuidArray(_) => "uuid-array",
            Value::DateArray(_) => "date-array",
            Value::DatetimeArray(_) => "datetime-array",
            Value::TimestampArray(_) => "timestamp-array",
            Value::Other { .. } => "other",
        }
    }

    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer, if this is a [`Value::Int`] (or a [`Value::Uint`] that
    /// fits).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Uint(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    /// The number, if this is a [`Value::Float`], [`Value::Int`] or
    /// [`Value::Uint`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Uint(u) => Some(*u as f64),
            _ => None,
        }
    }

    /// The boolean, if this is a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The text, if this is a [`Value::Text`], [`Value::Json`],
    /// [`Value::Decimal`] or [`Value::Uuid`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Json(s) | Value::Decimal(s) | Value::Uuid(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a [`Value::Blob`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }

    /// The value as JSON, the mapping [`Row::deserialize`] and
    /// [`Db::query_as`] use:
    ///
    /// | SQL value   | JSON                                        |
    /// |-------------|---------------------------------------------|
    /// | `null`      | `null`                                      |
    /// | `boolean`   | `true` / `false`                            |
    /// | `int`, `uint` | a number                                  |
    /// | `float`     | a number (`null` for NaN and infinities)    |
    /// | `decimal`   | a string, exact                             |
    /// | `text`, `uuid` | a string                                 |
    /// | `blob`      | an array of byte values, so `Vec<u8>` fields work |
    /// | `date`      | `"YYYY-MM-DD"`                              |
    /// | `time`      | `"HH:MM:SS.ffffff"`                         |
    /// | `datetime`  | `"YYYY-MM-DDTHH:MM:SS.ffffff"` (no zone)    |
    /// | `timestamp` | the integer microseconds since the epoch    |
    /// | `interval`  | `{"months", "days", "microseconds"}`        |
    /// | `json`      | the parsed document (a string if it does not parse) |
    /// | arrays      | arrays of the above (`null` for NULL)       |
    /// | `other`     | its text                                    |
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        fn array<T>(items: &[Option<T>], each: impl Fn(&T) -> J) -> J {
            J::Array(
                items
                    .iter()
                    .map(|v| v.as_ref().map_or(J::Null, &each))
                    .collect(),
            )
        }
        let float = |f: &f64| serde_json::Number::from_f64(*f).map_or(J::Null, J::Number);
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) | Value::Timestamp(i) => J::from(*i),
            Value::Uint(u) => J::from(*u),
            Value::Float(f) => float(f),
            Value::Text(s) | Value::Decimal(s) | Value::Uuid(s) => J::String(s.clone()),
            Value::Other { text, .. } => J::String(text.clone()),
            Value::Blob(b) => J::Array(b.iter().map(|&x| J::from(x)).collect()),
            Value::Date(d) => J::String(date_string(*d)),
            Value::Time(t) => J::String(time_string(*t)),
            Value::Datetime(t) => J::String(datetime_string(*t)),
            Value::Interval(i) => serde_json::json!({
                "months": i.months,
                "days": i.days,
                "microseconds": i.microseconds,
            }),
            Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone())),
            Value::BoolArray(v) => array(v, |b| J::Bool(*b)),
            Value::IntArray(v) | Value::TimestampArray(v) => array(v, |i| J::from(*i)),
            Value::FloatArray(v) => array(v, float),
            Value::DecimalArray(v) | Value::TextArray(v) | Value::UuidArray(v) => {
                array(v, |s| J::String(s.clone()))
            }
            Value::DateArray(v) => array(v, |d| J::String(date_string(*d))),
            Value::DatetimeArray(v) => array(v, |t| J::String(datetime_string(*t))),
        }
    }

    fn to_wit(&self) -> wit::Value {
        match self {
            Value::Null => wit::Value::Null,
            Value::Bool(b) => wit::Value::Boolean(*b),
            Value::Int(i) => wit::Value::Int(*i),
            Value::Uint(u) => wit::Value::Uint(*u),
            Value::Float(f) => wit::Value::Float(*f),
            Value::Decimal(s) => wit::Value::Decimal(s.clone()),
            Value::Text(s) => wit::Value::Text(s.clone()),
            Value::Blob(b) => wit::Value::Blob(b.clone()),
            Value::Date(d) => wit::Value::Date(*d),
            Value::Time(t) => wit::Value::Time(*t),
            Value::Datetime(t) => wit::Value::Datetime(*t),
            Value::Timestamp(t) => wit::Value::Timestamp(*t),
            Value::Interval(i) => wit::Value::Interval(wit::Interval {
                months: i.months,
                days: i.days,
                microseconds: i.microseconds,
            }),
            Value::Uuid(s) => wit::Value::Uuid(s.clone()),
            Value::Json(s) => wit::Value::Json(s.clone()),
            Value::BoolArray(v) => wit::Value::BooleanArray(v.clone()),
            Value::IntArray(v) => wit::Value::IntArray(v.clone()),
            Value::FloatArray(v) => wit::Value::FloatArray(v.clone()),
            Value::DecimalArray(v) => wit::Value::DecimalArray(v.clone()),
            Value::TextArray(v) => wit::Value::TextArray(v.clone()),
            Value::UuidArray(v) => wit::Value::UuidArray(v.clone()),
            Value::DateArray(v) => wit::Value::DateArray(v.clone()),
            Value::DatetimeArray(v) => wit::Value::DatetimeArray(v.clone()),
            Value::TimestampArray(v) => wit::Value::TimestampArray(v.clone()),
            Value::Other { type_name, text } => wit::Value::Other(wit::OtherValue {
                type_name: type_name.clone(),
                text: text.clone(),
            }),
        }
    }
}

impl From<wit::Value> for Value {
    fn from(v: wit::Value) -> Self {
        match v {
            wit::Value::Null => Value::Null,
            wit::Value::Boolean(b) => Value::Bool(b),
            wit::Value::Int(i) => Value::Int(i),
            wit::Value::Uint(u) => Value::Uint(u),
            wit::Value::Float(f) => Value::Float(f),
            wit::Value::Decimal(s) => Value::Decimal(s),
            wit::Value::Text(s) => Value::Text(s),
            wit::Value::Blob(b) => Value::Blob(b),
            wit::Value::Date(d) => Value::Date(d),
            wit::Value::Time(t) => Value::Time(t),
            wit::Value::Datetime(t) => Value::Datetime(t),
            wit::Value::Timestamp(t) => Value::Timestamp(t),
            wit::Value::Interval(i) => Value::Interval(Interval {
                months: i.months,
                days: i.days,
                microseconds: i.microseconds,
            }),
            wit::Value::Uuid(s) => Value::Uuid(s),
            wit::Value::Json(s) => Value::Json(s),
            wit::Value::BooleanArray(v) => Value::BoolArray(v),
            wit::Value::IntArray(v) => Value::IntArray(v),
            wit::Value::FloatArray(v) => Value::FloatArray(v),
            wit::Value::DecimalArray(v) => Value::DecimalArray(v),
            wit::Value::TextArray(v) => Value::TextArray(v),
            wit::Value::UuidArray(v) => Value::UuidArray(v),
            wit::Value::DateArray(v) => Value::DateArray(v),
            wit::Value::DatetimeArray(v) => Value::DatetimeArray(v),
            wit::Value::TimestampArray(v) => Value::TimestampArray(v),
            wit::Value::Other(o) => Value::Other {
                type_name: o.type_name,
                text: o.text,
            },
        }
    }
}

impl fmt::Display for Value {
    /// SQL-ish text for messages: `NULL`, `42`, `'text'`, `x'0102'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Uint(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Decimal(d) => f.write_str(d),
            Value::Text(s) | Value::Json(s) | Value::Uuid(s) => {
                write!(f, "'{}'", s.replace('\'', "''"))
            }
            Value::Blob(b) => {
                f.write_str("x'")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))?;
                f.write_str("'")
            }
            Value::Date(d) => write!(f, "DATE '{}'", date_string(*d)),
            Value::Time(t) => write!(f, "TIME '{}'", time_string(*t)),
            Value::Datetime(t) => write!(f, "TIMESTAMP '{}'", datetime_string(*t)),
            Value::Timestamp(t) => write!(f, "timestamp({t}us)"),
            Value::Interval(i) => write!(
                f,
                "interval({} months {} days {}us)",
                i.months, i.days, i.microseconds
            ),
            Value::Other { type_name, text } => {
                write!(f, "'{}'::{type_name}", text.replace('\'', "''"))
            }
            array => write!(f, "{}", array.to_json()),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v.into())
            }
        }
    )*};
}

value_from! {
    bool => Bool,
    i8 => Int, i16 => Int, i32 => Int, i64 => Int,
    u8 => Int, u16 => Int, u32 => Int, u64 => Uint,
    f32 => Float, f64 => Float,
    String => Text, &str => Text, &String => Text,
    Vec<u8> => Blob, &[u8] => Blob,
    Interval => Interval,
    Vec<Option<bool>> => BoolArray,
    Vec<Option<i64>> => IntArray,
    Vec<Option<f64>> => FloatArray,
    Vec<Option<String>> => TextArray,
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<serde_json::Value> for Value {
    /// Binds a JSON document (`Value::Json`); JSON `null` is the document
    /// `null`, not SQL `NULL`.
    fn from(v: serde_json::Value) -> Self {
        Value::Json(v.to_string())
    }
}

impl From<std::time::SystemTime> for Value {
    /// A [`Value::Timestamp`], saturating outside the `i64` microsecond range.
    fn from(t: std::time::SystemTime) -> Self {
        let micros = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        Value::Timestamp(micros)
    }
}

#[cfg(feature = "chrono")]
mod chrono_values {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};

    use super::{FromValue, Value, mismatch};
    use crate::{Error, Result};

    fn epoch() -> NaiveDate {
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date")
    }

    impl From<NaiveDate> for Value {
        /// A [`Value::Date`].
        fn from(d: NaiveDate) -> Self {
            // chrono's dates span about ±262,000 years: the day count fits.
            Value::Date(d.signed_duration_since(epoch()).num_days() as i32)
        }
    }

    impl From<NaiveTime> for Value {
        /// A [`Value::Time`]; a leap second counts as the second before.
        fn from(t: NaiveTime) -> Self {
            let micros = u64::from(t.num_seconds_from_midnight()) * 1_000_000
                + u64::from(t.nanosecond().min(999_999_999) / 1000);
            Value::Time(micros)
        }
    }

    impl From<NaiveDateTime> for Value {
        /// A [`Value::Datetime`] (no time zone).
        fn from(t: NaiveDateTime) -> Self {
            Value::Datetime(t.and_utc().timestamp_micros())
        }
    }

    impl<Tz: TimeZone> From<DateTime<Tz>> for Value {
        /// A [`Value::Timestamp`] (an instant).
        fn from(t: DateTime<Tz>) -> Self {
            Value::Timestamp(t.timestamp_micros())
        }
    }

    fn out_of_range<T>(what: &str, value: &Value) -> Result<T> {
        Err(Error::InvalidInput(format!(
            "{value} is out of range for a {what} (infinity?)"
        )))
    }

    impl FromValue for NaiveDate {
        /// From a `date`.
        fn from_value(value: &Value) -> Result<Self> {
            match value {
                Value::Date(d) => epoch()
                    .checked_add_signed(chrono::TimeDelta::days((*d).into()))
                    .map_or_else(|| out_of_range("date", value), Ok),
                v => mismatch("date", v),
            }
        }
    }

    impl FromValue for NaiveTime {
        /// From a `time` (24:00:00 has no `NaiveTime` and fails).
        fn from_value(value: &Value) -> Result<Self> {
            match value {
                Value::Time(t) => NaiveTime::from_num_seconds_from_midnight_opt(
                    (t / 1_000_000) as u32,
                    (t % 1_000_000) as u32 * 1000,
                )
                .map_or_else(|| out_of_range("time", value), Ok),
                v => mismatch("time", v),
            }
        }
    }

    impl FromValue for NaiveDateTime {
        /// From a `datetime`.
        fn from_value(value: &Value) -> Result<Self> {
            match value {
                Value::Datetime(t) => DateTime::from_timestamp_micros(*t)
                    .map(|t| t.naive_utc())
                    .map_or_else(|| out_of_range("datetime", value), Ok),
                v => mismatch("datetime", v),
            }
        }
    }

    impl FromValue for DateTime<Utc> {
        /// From a `timestamp`.
        fn from_value(value: &Value) -> Result<Self> {
            match value {
                Value::Timestamp(t) => DateTime::from_timestamp_micros(*t)
                    .map_or_else(|| out_of_range("timestamp", value), Ok),
                v => mismatch("timestamp", v),
            }
        }
    }
}

#[cfg(feature = "uuid")]
mod uuid_values {
    use super::{FromValue, Value, mismatch};
    use crate::{Error, Result};

    impl From<uuid::Uuid> for Value {
        /// A [`Value::Uuid`].
        fn from(u: uuid::Uuid) -> Self {
            Value::Uuid(u.hyphenated().to_string())
        }
    }

    impl FromValue for uuid::Uuid {
        /// From a `uuid`, or `text` that spells one.
        fn from_value(value: &Value) -> Result<Self> {
            match value {
                Value::Uuid(s) | Value::Text(s) => uuid::Uuid::parse_str(s)
                    .map_err(|e| Error::InvalidInput(format!("{s:?} is not a UUID: {e}"))),
                v => mismatch("uuid", v),
            }
        }
    }
}

#[cfg(feature = "rust_decimal")]
mod decimal_values {
    use super::{FromValue, Value, mismatch};
    use crate::{Error, Result};

    impl From<rust_decimal::Decimal> for Value {
        /// A [`Value::Decimal`], exact.
        fn from(d: rust_decimal::Decimal) -> Self {
            Value::Decimal(d.to_string())
        }
    }

    impl FromValue for rust_decimal::Decimal {
        /// From a `decimal` (at most 28 significant digits: more fail rather
        /// than round), an `int` or a `uint`.
        fn from_value(value: &Value) -> Result<Self> {
            match value {
                Value::Decimal(s) => rust_decimal::Decimal::from_str_exact(s)
                    .map_err(|e| Error::InvalidInput(format!("decimal {s}: {e}"))),
                Value::Int(i) => Ok((*i).into()),
                Value::Uint(u) => Ok((*u).into()),
                v => mismatch("decimal", v),
            }
        }
    }
}

/// A type [`Row::get`] can convert a [`Value`] into.
///
/// Implemented for [`Value`], `bool`, `i64`, `i32`, `u32`, `u64`, `f64`,
/// `String`, `Vec<u8>`, [`Interval`], `serde_json::Value`, `Vec<Option<T>>`
/// of the array kinds, and `Option<T>` (`NULL` is `None`); with features,
/// for `chrono`, `uuid` and `rust_decimal` types.
pub trait FromValue: Sized {
    /// Converts the value, or fails with [`Error::InvalidInput`] if it is of
    /// another kind.
    fn from_value(value: &Value) -> Result<Self>;
}

fn mismatch<T>(want: &str, got: &Value) -> Result<T> {
    Err(Error::InvalidInput(format!(
        "expected {want}, found {}",
        got.kind()
    )))
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self> {
        Ok(value.clone())
    }
}

impl FromValue for bool {
    /// Also accepts `int` 0 and 1, how SQLite stores booleans.
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::Int(0) => Ok(false),
            Value::Int(1) => Ok(true),
            v => mismatch("boolean", v),
        }
    }
}

impl FromValue for i64 {
    /// Also accepts a `timestamp` (its microseconds) and a `uint` that fits.
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Int(i) | Value::Timestamp(i) => Ok(*i),
            Value::Uint(u) => i64::try_from(*u)
                .map_err(|_| Error::InvalidInput(format!("{u} does not fit in i64"))),
            v => mismatch("int", v),
        }
    }
}

impl FromValue for u64 {
    /// From a `uint`, or an `int` that is not negative.
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Uint(u) => Ok(*u),
            Value::Int(i) => u64::try_from(*i)
                .map_err(|_| Error::InvalidInput(format!("{i} does not fit in u64"))),
            v => mismatch("uint", v),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value) -> Result<Self> {
        let i = i64::from_value(value)?;
        i32::try_from(i).map_err(|_| Error::InvalidInput(format!("{i} does not fit in i32")))
    }
}

impl FromValue for u32 {
    fn from_value(value: &Value) -> Result<Self> {
        let i = i64::from_value(value)?;
        u32::try_from(i).map_err(|_| Error::InvalidInput(format!("{i} does not fit in u32")))
    }
}

impl FromValue for f64 {
    /// Also accepts an `int` or `uint`.
    fn from_value(value: &Value) -> Result<Self> {
        value.as_f64().map_or_else(|| mismatch("float", value), Ok)
    }
}

impl FromValue for String {
    /// Accepts `text`, `json`, `decimal` and `uuid`.
    fn from_value(value: &Value) -> Result<Self> {
        value
            .as_str()
            .map_or_else(|| mismatch("text", value), |s| Ok(s.to_owned()))
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            v => mismatch("blob", v),
        }
    }
}

impl FromValue for Interval {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Interval(i) => Ok(*i),
            v => mismatch("interval", v),
        }
    }
}

macro_rules! array_from_value {
    ($($t:ty => $($variant:ident)|+),* $(,)?) => {$(
        impl FromValue for Vec<Option<$t>> {
            fn from_value(value: &Value) -> Result<Self> {
                match value {
                    $(Value::$variant(v) => Ok(v.clone()),)+
                    v => mismatch("an array", v),
                }
            }
        }
    )*};
}

array_from_value! {
    bool => BoolArray,
    i64 => IntArray | DatetimeArray | TimestampArray,
    f64 => FloatArray,
    String => TextArray | DecimalArray | UuidArray,
    i32 => DateArray,
}

impl FromValue for serde_json::Value {
    /// Any value, mapped as in [`Value::to_json`].
    fn from_value(value: &Value) -> Result<Self> {
        Ok(value.to_json())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// The database's own name for the column type, e.g. `INT8` or `TEXT`.
    pub type_name: String,
}

impl From<wit::Column> for Column {
    fn from(c: wit::Column) -> Self {
        Column {
            name: c.name,
            type_name: c.type_name,
        }
    }
}

/// Selects a column of a [`Row`]: by position (`usize`) or by name (`&str`).
pub trait ColumnIndex: fmt::Display + sealed::Sealed {
    /// The column's position in `columns`, if it is there.
    fn index(&self, columns: &[Column]) -> Option<usize>;
}

impl ColumnIndex for usize {
    fn index(&self, columns: &[Column]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
}

impl ColumnIndex for &str {
    fn index(&self, columns: &[Column]) -> Option<usize> {
        columns.iter().position(|c| c.name == *self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for &str {}
}

/// One result row.
///
/// ```no_run
/// # fn f(db: &caisson_sdk::sql::Db) -> caisson_sdk::Result<()> {
/// let rows = db.query("SELECT id, name, note FROM users", &[])?;
/// for row in rows.iter() {
///     let id: i64 = row.get("id")?;
///     let name: String = row.get(1)?;
///     let note: Option<String> = row.get("note")?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[Column]>,
    values: Vec<Value>,
}

impl Row {
    /// The column `index` (a position or a name) converted to `T`.
    pub fn get<T: FromValue>(&self, index: impl ColumnIndex) -> Result<T> {
        let value = self
            .value(&index)
            .ok_or_else(|| Error::InvalidInput(format!("no column `{index}`")))?;
        T::from_value(value).map_err(|e| e.context(format_args!("column `{index}`")))
    }

    /// The raw value of column `index`, if there is one.
    pub fn value(&self, index: &impl ColumnIndex) -> Option<&Value> {
        index.index(&self.columns).and_then(|i| self.values.get(i))
    }

    /// The row's values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The row's values, in column order.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// The result's columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The row as a JSON object from column name to value, mapped as in
    /// [`Value::to_json`]. A later column with the same name wins.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.columns
            .iter()
            .zip(&self.values)
            .map(|(c, v)| (c.name.clone(), v.to_json()))
            .collect()
    }

    /// Decodes the row into `T` by column name, through [`Row::to_json`].
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(serde_json::Value::Object(self.to_json()))
            .map_err(|e| Error::InvalidInput(format!("could not decode row: {e}")))
    }
}

/// A complete query result, from [`Db::query`]. Dereferences to `[Row]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    columns: Arc<[Column]>,
    rows: Vec<Row>,
}

/// Another name for [`Rows`], after the WIT `row-set`.
pub type RowSet = Rows;

impl Rows {
    /// The result's columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The rows.
    pub fn into_rows(self) -> Vec<Row> {
        self.rows
    }

    /// Decodes every row into `T`, as [`Row::deserialize`].
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.rows.iter().map(Row::deserialize).collect()
    }
}

impl Deref for Rows {
    type Target = [Row];

    fn deref(&self) -> &[Row] {
        &self.rows
    }
}

impl IntoIterator for Rows {
    type Item = Row;
    type IntoIter = std::vec::IntoIter<Row>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.into_iter()
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a Row;
    type IntoIter = std::slice::Iter<'a, Row>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

fn make_rows(columns: &Arc<[Column]>, rows: Vec<Vec<wit::Value>>) -> Vec<Row> {
    rows.into_iter()
        .map(|values| Row {
            columns: columns.clone(),
            values: values.into_iter().map(Value::from).collect(),
        })
        .collect()
}

fn wit_params(params: &[Value]) -> Vec<wit::Value> {
    params.iter().map(Value::to_wit).collect()
}

/// A connection to a database, held for the life of the value.
///
/// See the [module documentation](self) for an example.
#[derive(Debug)]
pub struct Db {
    conn: wit::Connection,
}

impl Db {
    /// Opens the database the operator configured under `label`. Fails with
    /// [`Error::AccessDenied`] if the run was not granted it.
    pub fn open(label: &str) -> Result<Db> {
        Ok(Db {
            conn: wit::open(label)?,
        })
    }

    /// Runs a query and returns all its rows. Fails with [`Error::TooLarge`]
    /// above the host's row or byte limit: use [`Db::cursor`] for large
    /// results.
    pub fn query(&self, statement: &str, params: &[Value]) -> Result<Rows> {
        let set = self.conn.query(statement, &wit_params(params))?;
        let columns: Arc<[Column]> = set.columns.into_iter().map(Column::from).collect();
        let rows = make_rows(&columns, set.rows);
        Ok(Rows { columns, rows })
    }

    /// Runs a query and decodes each row into `T` by column name, as
    /// [`Row::deserialize`].
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct Sale {
    ///     region: String,
    ///     amount: f64,
    ///     note: Option<String>,
    /// }
    /// # fn f(db: &caisson_sdk::sql::Db) -> caisson_sdk::Result<()> {
    /// let sales: Vec<Sale> = db.query_as("SELECT region, amount, note FROM sales", &[])?;
    /// # Ok(()) }
    /// ```
    pub fn query_as<T: DeserializeOwned>(
        &self,
        statement: &str,
        params: &[Value],
    ) -> Result<Vec<T>> {
        self.query(statement, params)?.deserialize()
    }

    /// Runs a statement and returns the number of rows it affected.
    pub fn execute(&self, statement: &str, params: &[Value]) -> Result<u64> {
        Ok(self.execute_result(statement, params)?.rows_affected)
    }

    /// Runs a statement and returns what it did: the rows it affected and,
    /// where the database reports one, the id of the last row inserted.
    pub fn execute_result(&self, statement: &str, params: &[Value]) -> Result<ExecuteResult> {
        let done = self.conn.execute(statement, &wit_params(params))?;
        Ok(ExecuteResult {
            rows_affected: done.rows_affected,
            last_insert_id: done.last_insert_id,
        })
    }

    /// Runs a query and streams its rows. While the cursor is open, other
    /// calls on this connection fail with [`Error::InvalidInput`]; drop it
    /// (or read it to the end) first.
    pub fn cursor(&self, statement: &str, params: &[Value]) -> Result<Cursor<'_>> {
        let rows = self.conn.cursor(statement, &wit_params(params))?;
        let columns = rows.columns().into_iter().map(Column::from).collect();
        Ok(Cursor {
            rows,
            columns,
            batch: DEFAULT_BATCH,
            buffer: VecDeque::new(),
            done: false,
            _db: PhantomData,
        })
    }

    /// Starts a transaction; statements run inside it until [`Db::commit`]
    /// or [`Db::rollback`]. Dropping the `Db` rolls an open transaction back.
    pub fn begin(&self) -> Result<()> {
        Ok(self.conn.begin(None)?)
    }

    /// Starts a transaction with an isolation level or read-only.
    pub fn begin_with(&self, options: &TransactionOptions) -> Result<()> {
        let wit_options = wit::BeginOptions::new();
        if let Some(level) = options.isolation {
            wit_options.set_isolation_level(level.to_wit())?;
        }
        if options.read_only {
            wit_options.set_read_only(true)?;
        }
        Ok(self.conn.begin(Some(&wit_options))?)
    }

    /// Commits the open transaction.
    pub fn commit(&self) -> Result<()> {
        Ok(self.conn.commit()?)
    }

    /// Rolls the open transaction back.
    pub fn rollback(&self) -> Result<()> {
        Ok(self.conn.rollback()?)
    }

    /// Runs `f` inside a transaction: commits if it returns `Ok`, rolls back
    /// if it returns `Err` (keeping `f`'s error even if the rollback fails
    /// too). If the task traps instead, the host rolls back when it drops the
    /// connection.
    ///
    /// ```no_run
    /// # fn f(db: &caisson_sdk::sql::Db) -> caisson_sdk::Result<()> {
    /// let moved = db.transaction(|tx| {
    ///     let n = tx.execute("INSERT INTO archive SELECT * FROM events WHERE day < $1", &["2024-01-01".into()])?;
    ///     tx.execute("DELETE FROM events WHERE day < $1", &["2024-01-01".into()])?;
    ///     Ok(n)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn transaction<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        self.begin()?;
        self.finish_transaction(f(self))
    }

    /// Runs `f` in a transaction started with `options`, and runs it again
    /// (from `begin`) while it fails with a serialization failure or a
    /// deadlock ([`Error::is_retry_transaction`]), at most `attempts` times
    /// in all. Any other error, or the last attempt's, is returned.
    ///
    /// ```no_run
    /// use caisson_sdk::sql::{Db, IsolationLevel, TransactionOptions};
    /// # fn f(db: &Db) -> caisson_sdk::Result<()> {
    /// let options = TransactionOptions::new().isolation(IsolationLevel::Serializable);
    /// db.transaction_retrying(&options, 5, |tx| {
    ///     let n: i64 = tx.query("SELECT count(*) AS n FROM seats", &[])?[0].get("n")?;
    ///     tx.execute("INSERT INTO seats (n) VALUES ($1)", &[(n + 1).into()])?;
    ///     Ok(())
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn transaction_retrying<T>(
        &self,
        options: &TransactionOptions,
        attempts: u32,
        mut f: impl FnMut(&Db) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 1;
        loop {
            self.begin_with(options)?;
            match self.finish_transaction(f(self)) {
                Err(e) if e.is_retry_transaction() && attempt < attempts => attempt += 1,
                result => return result,
            }
        }
    }

    /// Commits after `Ok`, rolls back after `Err`.
    fn finish_transaction<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.commit()?;
                Ok(value)
            }
            Err(e) => {
                // The closure's error says what went wrong; a failed rollback
                // adds nothing, and the host rolls back on drop regardless.
                let _ = self.rollback();
                Err(e)
            }
        }
    }
}

/// What [`Db::execute_result`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecuteResult {
    /// The rows the statement inserted, updated or deleted.
    pub rows_affected: u64,
    /// The id of the last row inserted on this connection, where the
    /// database reports one (SQLite's `last_insert_rowid`); PostgreSQL has
    /// none (use `RETURNING`).
    pub last_insert_id: Option<i64>,
}

/// A transaction's isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED` (PostgreSQL treats it as `READ COMMITTED`).
    ReadUncommitted,
    /// `READ COMMITTED`, PostgreSQL's default.
    ReadCommitted,
    /// `REPEATABLE READ`.
    RepeatableRead,
    /// `SERIALIZABLE`: may fail with [`Error::is_retry_transaction`].
    Serializable,
}

impl IsolationLevel {
    fn to_wit(self) -> wit::IsolationLevel {
        match self {
            IsolationLevel::ReadUncommitted => wit::IsolationLevel::ReadUncommitted,
            IsolationLevel::ReadCommitted => wit::IsolationLevel::ReadCommitted,
            IsolationLevel::RepeatableRead => wit::IsolationLevel::RepeatableRead,
            IsolationLevel::Serializable => wit::IsolationLevel::Serializable,
        }
    }
}

/// How [`Db::begin_with`] starts a transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionOptions {
    isolation: Option<IsolationLevel>,
    read_only: bool,
}

impl TransactionOptions {
    /// The database's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the isolation level (SQLite is always serializable).
    pub fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = Some(level);
        self
    }

    /// Makes the transaction read-only: writes in it fail.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
}

/// A streamed query result, from [`Db::cursor`].
///
/// Iterating yields one row at a time, fetching [`Cursor::batch_size`] rows
/// per host call; [`Cursor::next_batch`] fetches a batch explicitly.
///
/// ```no_run
/// # fn f(db: &caisson_sdk::sql::Db) -> caisson_sdk::Result<()> {
/// let mut cursor = db.cursor("SELECT payload FROM events", &[])?;
/// loop {
///     let batch = cursor.next_batch(1000)?;
///     if batch.is_empty() {
///         break;
///     }
///     // ... handle up to 1000 rows ...
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Cursor<'db> {
    rows: wit::Rows,
    columns: Arc<[Column]>,
    batch: u32,
    buffer: VecDeque<Row>,
    done: bool,
    // The host refuses other calls on the connection while the cursor is open;
    // borrowing the `Db` also keeps the cursor from outliving it.
    _db: PhantomData<&'db Db>,
}

impl Cursor<'_> {
    /// The result's columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Sets how many rows iteration fetches per host call (the host may cap
    /// it; 0 is taken as 1).
    pub fn batch_size(mut self, rows: u32) -> Self {
        self.batch = rows.max(1);
        self
    }

    /// Returns up to `max` rows; an empty batch means the result is
    /// exhausted. Rows already buffered by iteration come first.
    pub fn next_batch(&mut self, max: u32) -> Result<Vec<Row>> {
        if !self.buffer.is_empty() {
            let n = self.buffer.len().min(max.max(1) as usize);
            return Ok(self.buffer.drain(..n).collect());
        }
        if self.done {
            return Ok(Vec::new());
        }
        let rows = self
            .rows
            .next(max.max(1))
            .inspect_err(|_| self.done = true)?;
        if rows.is_empty() {
            self.done = true;
        }
        Ok(make_rows(&self.columns, rows))
    }
}

impl Iterator for Cursor<'_> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.buffer.pop_front() {
            return Some(Ok(row));
        }
        if self.done {
            return None;
        }
        match self.next_batch(self.batch) {
            Ok(batch) => {
                self.buffer = batch.into();
                self.buffer.pop_front().map(Ok)
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl std::iter::FusedIterator for Cursor<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let columns: Arc<[Column]> = ["id", "name", "data", "note"]
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                type_name: String::new(),
            })
            .collect();
        Row {
            columns,
            values: vec![
                Value::Int(7),
                Value::Text("Ada".into()),
                Value::Blob(vec![1, 2]),
                Value::Null,
            ],
        }
    }

    #[test]
    fn get_by_name_and_index() {
        let row = row();
        assert_eq!(row.get::<i64>("id").unwrap(), 7);
        assert_eq!(row.get::<String>(1).unwrap(), "Ada");
        assert_eq!(row.get::<Option<String>>("note").unwrap(), None);
        assert_eq!(
            row.get::<i64>("name").unwrap_err().to_string(),
            "invalid input: column `name`: expected int, found text"
        );
        assert!(row.get::<i64>("missing").is_err());
        assert!(row.get::<i64>(9).is_err());
    }

    #[test]
    fn deserialize_row() {
        #[derive(Deserialize)]
        struct R {
            id: i64,
            name: String,
            data: Vec<u8>,
            note: Option<String>,
        }
        let r: R = row().deserialize().unwrap();
        assert_eq!(
            (r.id, r.name.as_str(), r.data, r.note),
            (7, "Ada", vec![1, 2], None)
        );
    }

    #[test]
    fn dates_and_times_as_json() {
        assert_eq!(Value::Date(0).to_json(), "1970-01-01");
        assert_eq!(Value::Date(-165).to_json(), "1969-07-20");
        assert_eq!(Value::Date(19_782).to_json(), "2024-02-29");
        assert_eq!(Value::Date(i32::MAX).to_json(), "infinity");
        assert_eq!(Value::Time(45_296_000_001).to_json(), "12:34:56.000001");
        assert_eq!(
            Value::Datetime(-2_208_943_503_210_988).to_json(),
            "1900-01-01T12:34:56.789012"
        );
        assert_eq!(Value::Timestamp(7).to_json(), 7);
        assert_eq!(
            Value::DecimalArray(vec![Some("1.50".into()), None]).to_json(),
            serde_json::json!(["1.50", null])
        );
    }

    #[test]
    fn new_kinds_convert() {
        assert_eq!(Value::from(u64::MAX), Value::Uint(u64::MAX));
        assert_eq!(u64::from_value(&Value::Int(3)).unwrap(), 3);
        assert!(u64::from_value(&Value::Int(-3)).is_err());
        assert!(i64::from_value(&Value::Uint(u64::MAX)).is_err());
        assert_eq!(
            String::from_value(&Value::Decimal("1.5".into())).unwrap(),
            "1.5"
        );
        assert_eq!(
            Vec::<Option<i64>>::from_value(&Value::IntArray(vec![None])).unwrap(),
            vec![None]
        );
        assert_eq!(Value::Uint(1).kind(), "uint");
        assert_eq!(Value::TimestampArray(vec![]).kind(), "timestamp-array");
    }

    #[cfg(feature = "chrono")]
    #[test]
    fn chrono_round_trips() {
        use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
        let day = NaiveDate::from_ymd_opt(1969, 7, 20).unwrap();
        assert_eq!(Value::from(day), Value::Date(-165));
        assert_eq!(NaiveDate::from_value(&Value::Date(-165)).unwrap(), day);
        let time = NaiveTime::from_hms_micro_opt(12, 34, 56, 1).unwrap();
        assert_eq!(Value::from(time), Value::Time(45_296_000_001));
        assert_eq!(
            NaiveTime::from_value(&Value::Time(45_296_000_001)).unwrap(),
            time
        );
        let wall = day.and_time(time);
        assert!(matches!(Value::from(wall), Value::Datetime(_)));
        assert_eq!(NaiveDateTime::from_value(&Value::from(wall)).unwrap(), wall);
        let instant = wall.and_utc();
        assert!(matches!(Value::from(instant), Value::Timestamp(_)));
        assert_eq!(
            DateTime::<Utc>::from_value(&Value::from(instant)).unwrap(),
            instant
        );
        // Infinity has no chrono value: an error, not a panic.
        assert!(NaiveDate::from_value(&Value::Date(i32::MAX)).is_err());
        assert!(DateTime::<Utc>::from_value(&Value::Timestamp(i64::MAX)).is_err());
        // A datetime is not an instant.
        assert!(DateTime::<Utc>::from_value(&Value::Datetime(0)).is_err());
    }

    #[cfg(feature = "uuid")]
    #[test]
    fn uuid_round_trips() {
        let id = uuid::Uuid::from_u128(0xa0ee_bc99_9c0b_4ef8_bb6d_6bb9_bd38_0a11);
        let value = Value::from(id);
        assert_eq!(
            value,
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
        );
        assert_eq!(uuid::Uuid::from_value(&value).unwrap(), id);
        assert!(uuid::Uuid::from_value(&Value::Text("nope".into())).is_err());
    }

    #[cfg(feature = "rust_decimal")]
    #[test]
    fn decimal_round_trips() {
        let d: rust_decimal::Decimal = "-123.4500".parse().unwrap();
        let value = Value::from(d);
        assert_eq!(value, Value::Decimal("-123.4500".into()));
        assert_eq!(rust_decimal::Decimal::from_value(&value).unwrap(), d);
        // 38 digits do not fit: an error rather than a rounded number.
        let wide = Value::Decimal("-12345678901234567890.123456789012345678".into());
        assert!(rust_decimal::Decimal::from_value(&wide).is_err());
    }

    #[test]
    fn conversions() {
        assert_eq!(Value::from(Some(3u8)), Value::Int(3));
        assert_eq!(Value::from(None::<&str>), Value::Null);
        assert_eq!(Value::from("x"), Value::Text("x".into()));
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
        assert_eq!(
            serde_json::to_string(&Value::Bool(true)).unwrap(),
            r#"{"boolean":true}"#
        );
        assert_eq!(Value::Text("it's".into()).to_string(), "'it''s'");
    }
}
