//! Loads a CSV object into an existing SQL table, all or nothing.
//!
//! Parameters:
//!
//! | name    | default     | meaning                                        |
//! |---------|-------------|------------------------------------------------|
//! | `store` | `data`      | label of the store holding the CSV             |
//! | `key`   | (required)  | key of the CSV object                          |
//! | `db`    | `warehouse` | label of the database                          |
//! | `table` | (required)  | table to insert into; it must already exist    |
//! | `dialect` | `standard` | `mysql` for MySQL and MariaDB, else `standard` |
//!
//! The first record is the header: the column names to insert into. Table
//! and column names are identifiers spliced into the statement (values never
//! are: they are bound), so each must match `[A-Za-z_][A-Za-z0-9_]*`; they
//! are quoted, so they are case-sensitive. Statements use `"name"` quoting
//! and `$1, $2, ...` placeholders, which PostgreSQL and SQLite both accept;
//! with `dialect=mysql`, MySQL's `` `name` `` quoting and `?` placeholders.
//!
//! The CSV is streamed line by line (RFC 4180: `,` separators, `"` quoting
//! with `""` for a quote, quoted fields may span lines, `\n` or `\r\n` line
//! ends, a leading UTF-8 BOM is skipped, blank lines are skipped). Every
//! record must have as many fields as the header. An unquoted empty field is
//! `NULL` and a quoted one (`""`) the empty string, as in PostgreSQL's
//! `COPY ... CSV`. Other unquoted fields are bound as integers when they are
//! written as one (`-12`, not `007` or `+1`), else as text; quoted fields are
//! always text.
//!
//! All rows are inserted in one transaction. If any record is bad (wrong
//! field count, malformed quoting, not UTF-8, or refused by the database) the
//! transaction is rolled back, nothing is written, and the run fails with an
//! `invalid-input` error listing the bad records by line number and reason
//! (the first [`MAX_REPORTED`]). On success the output is
//! `{"rows_inserted": N}`.

use std::io::BufRead;

use caisson_sdk::objects::Store;
use caisson_sdk::sql::{Db, Value};
use caisson_sdk::{Context, Error, Json, Result, info, log, params};
use serde::Serialize;

/// How many bad records the error message lists.
pub const MAX_REPORTED: usize = 20;

/// The run's output.
#[derive(Debug, Serialize)]
pub struct Loaded {
    /// Rows inserted.
    pub rows_inserted: u64,
}

/// Whether `name` is a plain SQL identifier: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One CSV field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's text, unquoted.
    pub text: String,
    /// Whether it was quoted (so an empty field is `""`, not `NULL`).
    pub quoted: bool,
}

impl Field {
    /// The SQL value to bind: `NULL` for an unquoted empty field, an integer
    /// for a canonical integer, else text.
    pub fn to_value(&self) -> Value {
        if self.text.is_empty() && !self.quoted {
            return Value::Null;
        }
        if !self.quoted {
            // Only canonical integers: `007` or `+1` stay text so that
            // nothing is lost when the column is text.
            if let Ok(i) = self.text.parse::<i64>()
                && i.to_string() == self.text
            {
                return Value::Int(i);
            }
        }
        Value::Text(self.text.clone())
    }
}

/// A parsed record, or why it is bad; `line` is where it starts (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The line the record starts on.
    pub line: u64,
    /// Its fields, or the reason it could not be parsed.
    pub fields: std::result::Result<Vec<Field>, String>,
}

/// Streams the records of a CSV document from a reader.
#[derive(Debug)]
pub struct Records<R> {
    reader: R,
    line: u64,
    done: bool,
}

impl<R: BufRead> Records<R> {
    /// Reads records from `reader`.
    pub fn new(reader: R) -> Self {
        Records {
            reader,
            line: 0,
            done: false,
        }
    }

    /// Reads one physical line without its line end; `None` at the end.
    fn read_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        if self.reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        self.line += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if self.line == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
            buf.drain(..3);
        }
        Ok(Some(buf))
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = std::io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut first = match self.read_line() {
            Ok(Some(l)) => l,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        while first.is_empty() {
            match self.read_line() {
                Ok(Some(l)) => first = l,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let start = self.line;
        let mut parser = Parser::default();
        let mut not_utf8 = None;
        let mut line = first;
        loop {
            // Feed even a line that is not UTF-8 (lossily) so that the quote
            // state, and so the end of the record, stay right.
            let text = String::from_utf8_lossy(&line);
            if matches!(text, std::borrow::Cow::Owned(_)) && not_utf8.is_none() {
                not_utf8 = Some(self.line);
            }
            parser.feed(&text);
            if !parser.in_quotes {
                break;
            }
            match self.read_line() {
                Ok(Some(l)) => {
                    parser.current.push('\n');
                    line = l;
                }
                Ok(None) => {
                    self.done = true;
                    return Some(Ok(Record {
                        line: start,
                        fields: Err("quoted field is not closed".into()),
                    }));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        if let Some(n) = not_utf8 {
            return Some(Ok(Record {
                line: start,
                fields: Err(format!("line {n} is not UTF-8")),
            }));
        }
        Some(Ok(Record {
            line: start,
            fields: parser.finish(),
        }))
    }
}

/// An RFC 4180 record parser fed one physical line at a time.
#[derive(Debug, Default)]
struct Parser {
    fields: Vec<Field>,
    current: String,
    quoted: bool,
    in_quotes: bool,
    /// Set after a closing quote: only `,` or the line end may follow.
    after_quote: bool,
    error: Option<String>,
}

impl Parser {
    fn feed(&mut self, line: &str) {
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if self.in_quotes {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        self.current.push('"');
                    } else {
                        self.in_quotes = false;
                        self.after_quote = true;
                    }
                } else {
                    self.current.push(c);
                }
            } else if c == ',' {
                self.end_field();
            } else if self.after_quote {
                if self.error.is_none() {
                    self.error = Some(format!(
                        "field {}: unexpected {c:?} after closing quote",
                        self.fields.len() + 1
                    ));
                }
            } else if c == '"' && self.current.is_empty() && !self.quoted {
                self.quoted = true;
                self.in_quotes = true;
            } else {
                // A quote inside an unquoted field is taken literally.
                self.current.push(c);
            }
        }
    }

    fn end_field(&mut self) {
        self.fields.push(Field {
            text: std::mem::take(&mut self.current),
            quoted: self.quoted,
        });
        self.quoted = false;
        self.after_quote = false;
    }

    fn finish(mut self) -> std::result::Result<Vec<Field>, String> {
        self.end_field();
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.fields),
        }
    }
}

/// Collects bad records for the error message.
#[derive(Debug, Default)]
struct BadRows {
    count: u64,
    listed: Vec<String>,
}

impl BadRows {
    fn add(&mut self, line: u64, reason: impl std::fmt::Display) {
        self.count += 1;
        if self.listed.len() < MAX_REPORTED {
            self.listed.push(format!("line {line}: {reason}"));
        }
    }

    fn into_error(self) -> Error {
        let more = self.count - self.listed.len() as u64;
        let mut msg = format!(
            "{} bad record(s), nothing was inserted: {}",
            self.count,
            self.listed.join("; ")
        );
        if more > 0 {
            msg.push_str(&format!("; and {more} more"));
        }
        Error::InvalidInput(msg)
    }
}

/// How the database spells quoted identifiers and placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `"name"` and `$1, $2, ...`: PostgreSQL and SQLite.
    Standard,
    /// `` `name` `` and `?`: MySQL and MariaDB.
    Mysql,
}

impl Dialect {
    /// The `dialect` parameter: `mysql` or `standard` (the default).
    pub fn from_param(param: Option<&str>) -> Result<Self> {
        match param {
            None | Some("standard") | Some("postgres") | Some("sqlite") => Ok(Self::Standard),
            Some("mysql") | Some("mariadb") => Ok(Self::Mysql),
            Some(other) => Err(Error::invalid_input(format!(
                "dialect {other:?} is not `standard` or `mysql`"
            ))),
        }
    }

    fn quote(self, name: &str) -> String {
        match self {
            Self::Standard => format!("\"{name}\""),
            Self::Mysql => format!("`{name}`"),
        }
    }

    fn placeholder(self, i: usize) -> String {
        match self {
            Self::Standard => format!("${i}"),
            Self::Mysql => "?".into(),
        }
    }
}

/// The `INSERT` statement for `table` and `columns`, which must already be
/// checked with [`is_identifier`].
pub fn insert_statement(table: &str, columns: &[String], dialect: Dialect) -> String {
    let names: Vec<String> = columns.iter().map(|c| dialect.quote(c)).collect();
    let marks: Vec<String> = (1..=columns.len())
        .map(|i| dialect.placeholder(i))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        dialect.quote(table),
        names.join(", "),
        marks.join(", ")
    )
}

#[caisson_sdk::task]
fn run() -> Result<Json<Loaded>> {
    let label = params::get_or("store", "data");
    let key = params::require("key")?;
    let db_label = params::get_or("db", "warehouse");
    let table = params::require("table")?;
    let dialect = Dialect::from_param(params::get("dialect").as_deref())?;
    if !is_identifier(&table) {
        return Err(Error::invalid_input(format!(
            "table name {table:?} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )));
    }

    let store = Store::open(&label)?;
    let mut records = Records::new(
        store
            .reader(&key)
            .with_context(|| format!("reading {key}"))?,
    );
    let header = match records.next().transpose()? {
        Some(Record { fields: Ok(f), .. }) => f,
        Some(Record {
            line,
            fields: Err(e),
        }) => {
            return Err(Error::invalid_input(format!("header (line {line}): {e}")));
        }
        None => return Err(Error::invalid_input(format!("{key} is empty: no header"))),
    };
    let columns: Vec<String> = header.into_iter().map(|f| f.text).collect();
    for (i, c) in columns.iter().enumerate() {
        if !is_identifier(c) {
            return Err(Error::invalid_input(format!(
                "header column {} ({c:?}) is not a plain identifier",
                i + 1
            )));
        }
        if columns[..i].contains(c) {
            return Err(Error::invalid_input(format!(
                "header column {c:?} appears twice"
            )));
        }
    }
    let insert = insert_statement(&table, &columns, dialect);

    let db = Db::open(&db_label)?;
    let rows_inserted = db.transaction(|tx| {
        let mut bad = BadRows::default();
        let mut inserted = 0u64;
        let mut values = Vec::with_capacity(columns.len());
        for record in records.by_ref() {
            let record = record?;
            let fields = match record.fields {
                Ok(f) if f.len() == columns.len() => f,
                Ok(f) => {
                    bad.add(
                        record.line,
                        format_args!("expected {} fields, found {}", columns.len(), f.len()),
                    );
                    continue;
                }
                Err(e) => {
                    bad.add(record.line, e);
                    continue;
                }
            };
            // After the first bad record nothing will be committed, so only
            // validate the rest (and PostgreSQL refuses every statement in a
            // transaction after a failed one anyway).
            if bad.count > 0 {
                continue;
            }
            values.clear();
            values.extend(fields.iter().map(Field::to_value));
            match tx.execute(&insert, &values) {
                Ok(_) => inserted += 1,
                Err(e @ Error::Backend(_)) => return Err(e),
                Err(e) => bad.add(record.line, format_args!("refused by the database: {e}")),
            }
            if inserted.is_multiple_of(1000) {
                log::progress(inserted, 0);
            }
        }
        if bad.count > 0 {
            return Err(bad.into_error());
        }
        Ok(inserted)
    })?;
    info!("inserted {rows_inserted} rows from {key} into {table}");
    Ok(Json(Loaded { rows_inserted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(csv: &str) -> Vec<(u64, std::result::Result<Vec<String>, String>)> {
        Records::new(csv.as_bytes())
            .map(|r| {
                let r = r.unwrap();
                (
                    r.line,
                    r.fields.map(|f| f.into_iter().map(|f| f.text).collect()),
                )
            })
            .collect()
    }

    #[test]
    fn records() {
        let csv = "\u{feff}a,b\r\n1,\"x, \"\"y\"\"\"\n\n2,\"multi\nline\"\n3,\"bad\"x\n4,\"open";
        assert_eq!(
            parse(csv),
            vec![
                (1, Ok(vec!["a".into(), "b".into()])),
                (2, Ok(vec!["1".into(), "x, \"y\"".into()])),
                (4, Ok(vec!["2".into(), "multi\nline".into()])),
                (6, Err("field 2: unexpected 'x' after closing quote".into())),
                (7, Err("quoted field is not closed".into())),
            ]
        );
        let bad = Records::new(&b"a\n\"x\xff\ny\"\nz\n"[..])
            .map(|r| r.unwrap())
            .collect::<Vec<_>>();
        assert_eq!(bad[1].line, 2);
        assert_eq!(bad[1].fields, Err("line 2 is not UTF-8".into()));
        assert_eq!(bad[2].line, 4);
    }

    #[test]
    fn values() {
        let f = |text: &str, quoted| {
            Field {
                text: text.into(),
                quoted,
            }
            .to_value()
        };
        assert_eq!(f("", false), Value::Null);
        assert_eq!(f("", true), Value::Text(String::new()));
        assert_eq!(f("-12", false), Value::Int(-12));
        assert_eq!(f("007", false), Value::Text("007".into()));
        assert_eq!(f("12", true), Value::Text("12".into()));
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("_a1"));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier("a; DROP TABLE x"));
        assert!(!is_identifier(""));
        let columns = ["a".to_string(), "b".into()];
        assert_eq!(
            insert_statement("t", &columns, Dialect::Standard),
            r#"INSERT INTO "t" ("a", "b") VALUES ($1, $2)"#
        );
        assert_eq!(
            insert_statement("t", &columns, Dialect::Mysql),
            "INSERT INTO `t` (`a`, `b`) VALUES (?, ?)"
        );
        assert!(Dialect::from_param(Some("oracle")).is_err());
    }
}
