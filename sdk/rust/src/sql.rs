//! SQL databases: PostgreSQL and SQLite.
//!
//! Open a database by the label the operator configured with [`Db::open`].
//! Parameters are always bound, never spliced into the statement: use
//! `$1, $2, ...` placeholders for PostgreSQL and `?` or `?1, ?2, ...` for
//! SQLite (SQLite also accepts `$1`).
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
/// ```
///
/// Serialized with serde, a value is tagged with its WIT case name:
/// `{"int": 7}`, `{"text": "Ada"}`, `"null"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    #[serde(rename = "boolean")]
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// A JSON document, as text.
    Json(String),
}

impl Value {
    /// The WIT case name: `null`, `boolean`, `int`, `float`, `text`, `blob`,
    /// `timestamp` or `json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
            Value::Timestamp(_) => "timestamp",
            Value::Json(_) => "json",
        }
    }

    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer, if this is a [`Value::Int`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number, if this is a [`Value::Float`] or [`Value::Int`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
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

    /// The text, if this is a [`Value::Text`] or a [`Value::Json`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Json(s) => Some(s),
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
    /// | `int`       | a number                                    |
    /// | `float`     | a number (`null` for NaN and infinities)    |
    /// | `text`      | a string                                    |
    /// | `blob`      | an array of byte values, so `Vec<u8>` fields work |
    /// | `timestamp` | the integer microseconds since the epoch    |
    /// | `json`      | the parsed document (a string if it does not parse) |
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) | Value::Timestamp(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Text(s) => J::String(s.clone()),
            Value::Blob(b) => J::Array(b.iter().map(|&x| J::from(x)).collect()),
            Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone())),
        }
    }

    fn to_wit(&self) -> wit::Value {
        match self {
            Value::Null => wit::Value::Null,
            Value::Bool(b) => wit::Value::Boolean(*b),
            Value::Int(i) => wit::Value::Int(*i),
            Value::Float(f) => wit::Value::Float(*f),
            Value::Text(s) => wit::Value::Text(s.clone()),
            Value::Blob(b) => wit::Value::Blob(b.clone()),
            Value::Timestamp(t) => wit::Value::Timestamp(*t),
            Value::Json(s) => wit::Value::Json(s.clone()),
        }
    }
}

impl From<wit::Value> for Value {
    fn from(v: wit::Value) -> Self {
        match v {
            wit::Value::Null => Value::Null,
            wit::Value::Boolean(b) => Value::Bool(b),
            wit::Value::Int(i) => Value::Int(i),
            wit::Value::Float(f) => Value::Float(f),
            wit::Value::Text(s) => Value::Text(s),
            wit::Value::Blob(b) => Value::Blob(b),
            wit::Value::Timestamp(t) => Value::Timestamp(t),
            wit::Value::Json(s) => Value::Json(s),
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
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) | Value::Json(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Blob(b) => {
                f.write_str("x'")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))?;
                f.write_str("'")
            }
            Value::Timestamp(t) => write!(f, "timestamp({t}us)"),
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
    u8 => Int, u16 => Int, u32 => Int,
    f32 => Float, f64 => Float,
    String => Text, &str => Text, &String => Text,
    Vec<u8> => Blob, &[u8] => Blob,
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

/// A type [`Row::get`] can convert a [`Value`] into.
///
/// Implemented for [`Value`], `bool`, `i64`, `i32`, `u32`, `f64`, `String`,
/// `Vec<u8>`, `serde_json::Value` and `Option<T>` (`NULL` is `None`).
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
    /// Also accepts a `timestamp` (its microseconds).
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Int(i) | Value::Timestamp(i) => Ok(*i),
            v => mismatch("int", v),
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
    /// Also accepts an `int`.
    fn from_value(value: &Value) -> Result<Self> {
        value.as_f64().map_or_else(|| mismatch("float", value), Ok)
    }
}

impl FromValue for String {
    /// Accepts `text` and `json`.
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Text(s) | Value::Json(s) => Ok(s.clone()),
            v => mismatch("text", v),
        }
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
        Ok(self.conn.execute(statement, &wit_params(params))?)
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
        Ok(self.conn.begin()?)
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
        match f(self) {
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
