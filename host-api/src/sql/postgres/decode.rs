//! PostgreSQL results decoded into guest values. sqlx prepares every
//! statement, so results come in the binary format.

use std::fmt::Write as _;

use sqlx::postgres::{PgRow, PgTypeInfo, PgTypeKind, PgValueFormat, PgValueRef};
use sqlx::{Column as _, Postgres, Row as _, Type, TypeInfo as _, ValueRef as _};

use super::{PG_EPOCH_DAYS, PG_EPOCH_MICROS, map_error};
use crate::SqlError as WitError;
use crate::bindings::caisson::task::sql::{self as wit_sql, Value};
use crate::sql::value::uuid_text;

pub(super) fn row_values(row: &PgRow) -> Result<Vec<Value>, WitError> {
    row.columns()
        .iter()
        .map(|column| {
            let raw = row.try_get_raw(column.ordinal()).map_err(map_error)?;
            pg_value(column.name(), raw)
        })
        .collect()
}

/// Decodes one PostgreSQL value from its binary format (sqlx prepares every
/// statement, so results are binary). Done by hand rather than through
/// sqlx's chrono decoders, which panic on `infinity` timestamps and dates.
fn pg_value(column: &str, raw: PgValueRef<'_>) -> Result<Value, WitError> {
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let mut ty = raw.type_info().into_owned();
    while let PgTypeKind::Domain(base) = ty.kind() {
        ty = base.clone();
    }
    let name = ty.name().to_owned();
    let fail = |message: String| {
        WitError::InvalidInput(format!(
            "could not decode column `{column}` of type `{name}`: {message}"
        ))
    };
    if raw.format() == PgValueFormat::Text {
        return raw
            .as_str()
            .map(|s| Value::Text(s.to_owned()))
            .map_err(|e| fail(e.to_string()));
    }
    let bytes = raw.as_bytes().map_err(|e| fail(e.to_string()))?;
    pg_binary(&ty, bytes).map_err(fail)
}

/// Decodes a value of type `ty` from its binary form.
fn pg_binary(ty: &PgTypeInfo, bytes: &[u8]) -> Result<Value, String> {
    let text = || {
        std::str::from_utf8(bytes)
            .map(|s| s.to_owned())
            .map_err(|e| e.to_string())
    };
    Ok(match ty.name() {
        "BOOL" => Value::Boolean(fixed::<1>(bytes)?[0] != 0),
        "INT2" => Value::Int(i16::from_be_bytes(fixed(bytes)?).into()),
        "INT4" => Value::Int(i32::from_be_bytes(fixed(bytes)?).into()),
        "INT8" => Value::Int(i64::from_be_bytes(fixed(bytes)?)),
        "OID" => Value::Int(u32::from_be_bytes(fixed(bytes)?).into()),
        "FLOAT4" => Value::Float(f32::from_be_bytes(fixed(bytes)?).into()),
        "FLOAT8" => Value::Float(f64::from_be_bytes(fixed(bytes)?)),
        "NUMERIC" => Value::Decimal(pg_numeric(bytes)?),
        "UUID" => Value::Uuid(uuid_text(fixed(bytes)?)),
        "BYTEA" => Value::Blob(bytes.to_vec()),
        "TIMESTAMPTZ" => Value::Timestamp(pg_micros(bytes)?),
        "TIMESTAMP" => Value::Datetime(pg_micros(bytes)?),
        "DATE" => Value::Date(match i32::from_be_bytes(fixed(bytes)?) {
            days @ (i32::MAX | i32::MIN) => days,
            days => days
                .checked_add(PG_EPOCH_DAYS)
                .ok_or_else(|| "out of range".to_owned())?,
        }),
        "TIME" => {
            let micros = i64::from_be_bytes(fixed(bytes)?);
            Value::Time(u64::try_from(micros).map_err(|e| e.to_string())?)
        }
        "INTERVAL" => {
            let (micros, rest) = bytes.split_at_checked(8).ok_or("truncated INTERVAL")?;
            let (days, months) = rest.split_at_checked(4).ok_or("truncated INTERVAL")?;
            Value::Interval(wit_sql::Interval {
                microseconds: i64::from_be_bytes(fixed(micros)?),
                days: i32::from_be_bytes(fixed(days)?),
                months: i32::from_be_bytes(fixed(months)?),
            })
        }
        "JSON" => Value::Json(text()?),
        "JSONB" => match bytes.split_first() {
            Some((1, json)) => Value::Json(
                std::str::from_utf8(json)
                    .map_err(|e| e.to_string())?
                    .to_owned(),
            ),
            _ => return Err("unknown JSONB format version".into()),
        },
        "VOID" => Value::Null,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "\"CHAR\"" | "UNKNOWN" => Value::Text(text()?),
        _ => match ty.kind() {
            PgTypeKind::Array(element) => pg_array(ty, element, bytes)?,
            // Enums and text-like extension types (`citext`) are sent as
            // text even in binary format.
            PgTypeKind::Enum(_) => Value::Text(text()?),
            _ if <String as Type<Postgres>>::compatible(ty) => Value::Text(text()?),
            // Any other type degrades to its name and wire form rather than
            // failing the whole query.
            _ => other_value(ty, bytes),
        },
    })
}

/// The fallback for a type with no case: its name and its binary form as
/// `\x`-prefixed hex (its text form needs a cast in the statement).
fn other_value(ty: &PgTypeInfo, bytes: &[u8]) -> Value {
    let mut text = String::with_capacity(2 + 2 * bytes.len());
    text.push_str("\\x");
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    Value::Other(wit_sql::OtherValue {
        type_name: ty.name().to_owned(),
        text,
    })
}

/// A TIMESTAMP or TIMESTAMPTZ: microseconds since 2000-01-01 to since
/// 1970-01-01, keeping the `infinity` sentinels.
fn pg_micros(bytes: &[u8]) -> Result<i64, String> {
    match i64::from_be_bytes(fixed(bytes)?) {
        micros @ (i64::MAX | i64::MIN) => Ok(micros),
        micros => micros
            .checked_add(PG_EPOCH_MICROS)
            .ok_or_else(|| "out of range".into()),
    }
}

/// The next `n` bytes of `rest`, which moves past them.
fn take_bytes<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    let (head, tail) = rest
        .split_at_checked(n)
        .ok_or_else(|| "truncated array".to_owned())?;
    *rest = tail;
    Ok(head)
}

/// Decodes a binary array. One-dimensional arrays of the element types
/// `value` has an array case for become that case; anything else (more
/// dimensions, other element types) is an `other`.
fn pg_array(ty: &PgTypeInfo, element: &PgTypeInfo, bytes: &[u8]) -> Result<Value, String> {
    let mut rest = bytes;
    let mut take = |n: usize| take_bytes(&mut rest, n);
    let dimensions = i32::from_be_bytes(fixed(take(4)?)?);
    let _has_nulls = take(4)?;
    let _element_oid = take(4)?;
    let len = match dimensions {
        0 => 0,
        1 => {
            let len = i32::from_be_bytes(fixed(take(4)?)?);
            let _lower_bound = take(4)?;
            usize::try_from(len).map_err(|e| e.to_string())?
        }
        _ => return Ok(other_value(ty, bytes)),
    };
    // Each element takes at least its 4-byte length: a bogus count cannot
    // make us reserve more than the bytes can hold.
    let mut elements = Vec::with_capacity(len.min(bytes.len() / 4));
    for _ in 0..len {
        let n = i32::from_be_bytes(fixed(take(4)?)?);
        if n < 0 {
            elements.push(None);
        } else {
            let body = take(n as usize)?;
            elements.push(Some(pg_binary(element, body)?));
        }
    }
    macro_rules! pack {
        ($case:ident, $variant:ident) => {
            Value::$case(
                elements
                    .into_iter()
                    .map(|e| match e {
                        None => Ok(None),
                        Some(Value::$variant(v)) => Ok(Some(v)),
                        Some(_) => Err("mixed array".to_owned()),
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    Ok(match element.name() {
        "BOOL" => pack!(BooleanArray, Boolean),
        "INT2" | "INT4" | "INT8" | "OID" => pack!(IntArray, Int),
        "FLOAT4" | "FLOAT8" => pack!(FloatArray, Float),
        "NUMERIC" => pack!(DecimalArray, Decimal),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => pack!(TextArray, Text),
        "UUID" => pack!(UuidArray, Uuid),
        "DATE" => pack!(DateArray, Date),
        "TIMESTAMP" => pack!(DatetimeArray, Datetime),
        "TIMESTAMPTZ" => pack!(TimestampArray, Timestamp),
        _ => other_value(ty, bytes),
    })
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", bytes.len()))
}

/// Formats PostgreSQL's binary `NUMERIC` exactly: base-10000 digits, the
/// weight (position) of the first one, a sign and the display scale.
fn pg_numeric(bytes: &[u8]) -> Result<String, String> {
    let header = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    if bytes.len() < 8 {
        return Err("truncated NUMERIC".into());
    }
    let ndigits = usize::from(header(0));
    let weight = i32::from(header(2) as i16);
    let sign = header(4);
    let scale = usize::from(header(6));
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => return Err(format!("unknown NUMERIC sign {sign:#x}")),
    };
    if bytes.len() != 8 + 2 * ndigits {
        return Err("truncated NUMERIC".into());
    }
    let digits: Vec<u16> = bytes[8..]
        .chunks_exact(2)
        .map(|d| u16::from_be_bytes([d[0], d[1]]))
        .collect();
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let _ = if i == 0 {
                write!(out, "{}", digit(i))
            } else {
                write!(out, "{:04}", digit(i))
            };
        }
    }
    if scale > 0 {
        let mut fraction = String::with_capacity(scale + 4);
        let mut i = weight + 1;
        while fraction.len() < scale {
            let _ = write!(fraction, "{:04}", digit(i));
            i += 1;
        }
        fraction.truncate(scale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_formats_exactly() {
        fn numeric(ndigits: u16, weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
            let mut out = Vec::new();
            for part in [ndigits, weight as u16, sign, scale] {
                out.extend_from_slice(&part.to_be_bytes());
            }
            for d in digits {
                out.extend_from_slice(&d.to_be_bytes());
            }
            out
        }
        let cases: [(Vec<u8>, &str); 7] = [
            (numeric(2, 0, 0, 2, &[123, 4500]), "123.45"),
            (numeric(1, -1, 0, 3, &[10]), "0.001"),
            (numeric(1, 1, 0, 0, &[1]), "10000"),
            (numeric(0, 0, 0, 0, &[]), "0"),
            (numeric(0, 0, 0, 2, &[]), "0.00"),
            (numeric(3, 1, 0x4000, 1, &[12, 3456, 7000]), "-123456.7"),
            (numeric(0, 0, 0xC000, 0, &[]), "NaN"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(pg_numeric(&bytes).unwrap(), expected);
        }
        assert!(pg_numeric(&[0, 1]).is_err());
    }
}
