//! Guest values bound as PostgreSQL parameters, in the binary format (see
//! the value mapping in the `sql` module docs).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgTypeInfo};
use sqlx::{Arguments as _, Encode, Postgres, Type};

use super::{PG_EPOCH_DAYS, PG_EPOCH_MICROS};
use crate::SqlError as WitError;
use crate::bindings::caisson::task::sql::Value;
use crate::sql::value::{
    Decimal, MAX_TIME_MICROS, invalid_param, json_param, parse_decimal, parse_uuid,
};

/// PostgreSQL's limit on bound parameters per statement (the protocol's
/// count is a `u16`). Checked up front so the guest gets `invalid-input`
/// rather than a protocol error.
const PG_MAX_PARAMS: usize = u16::MAX as usize;

/// PostgreSQL's binary `NUMERIC`: base-10000 digits, the weight of the
/// first, a sign and the display scale (the fraction's length).
fn pg_numeric_bytes(decimal: &Decimal) -> Result<Vec<u8>, String> {
    let header = |ndigits: u16, weight: i16, sign: u16, scale: u16| {
        let mut out = Vec::with_capacity(8 + 2 * usize::from(ndigits));
        for part in [ndigits, weight as u16, sign, scale] {
            out.extend_from_slice(&part.to_be_bytes());
        }
        out
    };
    let (negative, integer, fraction) = match decimal {
        Decimal::NaN => return Ok(header(0, 0, 0xC000, 0)),
        Decimal::Infinity { negative: false } => return Ok(header(0, 0, 0xD000, 0)),
        Decimal::Infinity { negative: true } => return Ok(header(0, 0, 0xF000, 0)),
        Decimal::Finite {
            negative,
            integer,
            fraction,
        } => (*negative, integer, fraction),
    };
    let scale = u16::try_from(fraction.len()).map_err(|_| "too many fraction digits")?;
    // Pad the integer part on the left and the fraction on the right to
    // whole groups of four digits.
    let int_pad = (4 - integer.len() % 4) % 4;
    let frac_pad = (4 - fraction.len() % 4) % 4;
    let padded = format!(
        "{}{integer}{fraction}{}",
        "0".repeat(int_pad),
        "0".repeat(frac_pad)
    );
    let mut groups: Vec<u16> = padded
        .as_bytes()
        .chunks(4)
        .map(|chunk| chunk.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
        .collect();
    let mut weight = ((integer.len() + int_pad) / 4) as i64 - 1;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= leading as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        return Ok(header(0, 0, 0, scale));
    }
    let ndigits = u16::try_from(groups.len()).map_err(|_| "too many digits")?;
    let weight = i16::try_from(weight).map_err(|_| "out of range")?;
    let mut out = header(ndigits, weight, if negative { 0x4000 } else { 0 }, scale);
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Ok(out)
}

/// A guest value encoded for PostgreSQL: the type it is bound as and its
/// binary form (`None` for NULL). Each value names its own type through
/// [`Encode::produces`], so one Rust type carries every kind.
struct PgParam {
    oid: u32,
    bytes: Option<Vec<u8>>,
}

impl Type<Postgres> for PgParam {
    fn type_info() -> PgTypeInfo {
        // Never used: `produces` always answers.
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for PgParam {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.bytes {
            Some(bytes) => {
                buf.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(PgTypeInfo::with_oid(Oid(self.oid)))
    }
}

/// The PostgreSQL type a guest value is bound as, by OID and name (the name
/// keys sqlx's statement cache, see [`PgSession::statement_text`]).
pub(super) fn param_type(value: &Value) -> (u32, &'static str) {
    match value {
        // A NULL of unspecified type (OID 0): the server infers its type
        // from context, as for a literal `NULL`, so it fits any column.
        Value::Null => (0, "unknown"),
        Value::Boolean(_) => (16, "bool"),
        Value::Int(_) => (20, "int8"),
        // PostgreSQL has no unsigned integers; NUMERIC holds any u64.
        Value::Uint(_) | Value::Decimal(_) => (1700, "numeric"),
        Value::Float(_) => (701, "float8"),
        // `other` is text: the statement casts it (`$1::inet`).
        Value::Text(_) | Value::Other(_) => (25, "text"),
        Value::Blob(_) => (17, "bytea"),
        Value::Date(_) => (1082, "date"),
        Value::Time(_) => (1083, "time"),
        Value::Datetime(_) => (1114, "timestamp"),
        Value::Timestamp(_) => (1184, "timestamptz"),
        Value::Interval(_) => (1186, "interval"),
        Value::Uuid(_) => (2950, "uuid"),
        Value::Json(_) => (3802, "jsonb"),
        Value::BooleanArray(_) => (1000, "bool[]"),
        Value::IntArray(_) => (1016, "int8[]"),
        Value::FloatArray(_) => (1022, "float8[]"),
        Value::DecimalArray(_) => (1231, "numeric[]"),
        Value::TextArray(_) => (1009, "text[]"),
        Value::UuidArray(_) => (2951, "uuid[]"),
        Value::DateArray(_) => (1182, "date[]"),
        Value::DatetimeArray(_) => (1115, "timestamp[]"),
        Value::TimestampArray(_) => (1185, "timestamptz[]"),
    }
}

fn pg_date_bytes(days: i32) -> Vec<u8> {
    let pg = match days {
        i32::MAX | i32::MIN => days,
        // Cannot overflow: MIN + 10957 is in range, MAX was handled.
        days => days.saturating_sub(PG_EPOCH_DAYS),
    };
    pg.to_be_bytes().to_vec()
}

fn pg_micros_bytes(micros: i64) -> Vec<u8> {
    let pg = match micros {
        i64::MAX | i64::MIN => micros,
        // Out of PostgreSQL's range either way; the server says so.
        micros => micros.saturating_sub(PG_EPOCH_MICROS),
    };
    pg.to_be_bytes().to_vec()
}

fn pg_time_bytes(micros: u64) -> Result<Vec<u8>, String> {
    if micros > MAX_TIME_MICROS {
        return Err(format!("time {micros} us is past 24:00:00"));
    }
    Ok((micros as i64).to_be_bytes().to_vec())
}

fn pg_decimal_bytes(text: &str) -> Result<Vec<u8>, String> {
    pg_numeric_bytes(&parse_decimal(text)?)
}

/// A one-dimensional PostgreSQL array of `element_oid` in binary form.
fn pg_array_bytes<T>(
    element_oid: u32,
    elements: &[Option<T>],
    mut encode: impl FnMut(&T) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let len = i32::try_from(elements.len()).map_err(|_| "array too long")?;
    let mut out = Vec::new();
    let has_null = elements.iter().any(Option::is_none);
    out.extend_from_slice(&i32::from(len > 0).to_be_bytes()); // dimensions
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&element_oid.to_be_bytes());
    if len > 0 {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    }
    for element in elements {
        match element {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(value) => {
                let bytes = encode(value)?;
                let n = i32::try_from(bytes.len()).map_err(|_| "array element too long")?;
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }
    Ok(out)
}

/// Encodes one guest value as PostgreSQL binds it (see the module docs).
fn pg_param(value: &Value) -> Result<PgParam, String> {
    let (oid, _) = param_type(value);
    let ok = |bytes: Vec<u8>| Ok(Some(bytes));
    let bytes: Result<Option<Vec<u8>>, String> = match value {
        Value::Null => Ok(None),
        Value::Boolean(b) => ok(vec![u8::from(*b)]),
        Value::Int(i) => ok(i.to_be_bytes().to_vec()),
        Value::Uint(u) => pg_decimal_bytes(&u.to_string()).map(Some),
        Value::Float(f) => ok(f.to_be_bytes().to_vec()),
        Value::Decimal(d) => pg_decimal_bytes(d).map(Some),
        Value::Text(s) => ok(s.as_bytes().to_vec()),
        Value::Other(other) => ok(other.text.as_bytes().to_vec()),
        Value::Blob(b) => ok(b.clone()),
        Value::Date(days) => ok(pg_date_bytes(*days)),
        Value::Time(micros) => pg_time_bytes(*micros).map(Some),
        Value::Datetime(micros) | Value::Timestamp(micros) => ok(pg_micros_bytes(*micros)),
        Value::Interval(interval) => {
            let mut out = interval.microseconds.to_be_bytes().to_vec();
            out.extend_from_slice(&interval.days.to_be_bytes());
            out.extend_from_slice(&interval.months.to_be_bytes());
            ok(out)
        }
        Value::Uuid(text) => parse_uuid(text).map(|u| Some(u.to_vec())),
        Value::Json(text) => {
            // Sent as is, not parsed into a `serde_json::Value` first: that
            // would reorder keys and round numbers beyond `f64` precision.
            // The binary `JSONB` format is a version byte (1), then the text.
            json_param(text)?;
            let mut out = vec![1];
            out.extend_from_slice(text.as_bytes());
            ok(out)
        }
        Value::BooleanArray(v) => pg_array_bytes(16, v, |b| Ok(vec![u8::from(*b)])).map(Some),
        Value::IntArray(v) => pg_array_bytes(20, v, |i| Ok(i.to_be_bytes().to_vec())).map(Some),
        Value::FloatArray(v) => pg_array_bytes(701, v, |f| Ok(f.to_be_bytes().to_vec())).map(Some),
        Value::DecimalArray(v) => pg_array_bytes(1700, v, |d| pg_decimal_bytes(d)).map(Some),
        Value::TextArray(v) => pg_array_bytes(25, v, |s| Ok(s.as_bytes().to_vec())).map(Some),
        Value::UuidArray(v) => {
            pg_array_bytes(2950, v, |s| parse_uuid(s).map(|u| u.to_vec())).map(Some)
        }
        Value::DateArray(v) => pg_array_bytes(1082, v, |d| Ok(pg_date_bytes(*d))).map(Some),
        Value::DatetimeArray(v) => pg_array_bytes(1114, v, |m| Ok(pg_micros_bytes(*m))).map(Some),
        Value::TimestampArray(v) => pg_array_bytes(1184, v, |m| Ok(pg_micros_bytes(*m))).map(Some),
    };
    Ok(PgParam { oid, bytes: bytes? })
}

pub(super) fn arguments(params: Vec<Value>) -> Result<PgArguments, WitError> {
    if params.len() > PG_MAX_PARAMS {
        return Err(WitError::InvalidInput(format!(
            "{} parameters; PostgreSQL takes at most {PG_MAX_PARAMS}",
            params.len()
        )));
    }
    let mut arguments = PgArguments::default();
    for (index, param) in params.iter().enumerate() {
        let param = pg_param(param).map_err(|e| invalid_param(index, e))?;
        arguments.add(param).map_err(|e| invalid_param(index, e))?;
    }
    Ok(arguments)
}
