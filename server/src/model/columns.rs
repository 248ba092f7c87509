//! How model values sit in the coordination database's columns. sqlx's
//! `Any` driver knows integers, floats, text and bytes only, so JSON is
//! stored as text and flags as 0 or 1. Each adapter here decodes the plain
//! column and converts it, so that row types derive `sqlx::FromRow` with
//! `#[sqlx(try_from = "...")]` instead of being mapped by hand.

use std::collections::BTreeMap;

use caisson_host_api::Grants;
use caisson_host_api::log::Level;
use sqlx::any::{Any, AnyTypeInfo, AnyValueRef};
use sqlx::error::BoxDynError;
use sqlx::{Decode, Type};

/// An adapter's `Type<Any>`: that of the plain column type it decodes.
macro_rules! stored_as {
    ($adapter:ident<$g:ident> => $plain:ty) => {
        stored_as!(@impl [$g] $adapter<$g> => $plain);
    };
    ($adapter:ident => $plain:ty) => {
        stored_as!(@impl [] $adapter => $plain);
    };
    (@impl [$($g:ident)?] $adapter:ty => $plain:ty) => {
        impl$(<$g>)? Type<Any> for $adapter {
            fn type_info() -> AnyTypeInfo {
                <$plain as Type<Any>>::type_info()
            }

            fn compatible(ty: &AnyTypeInfo) -> bool {
                <$plain as Type<Any>>::compatible(ty)
            }
        }
    };
}

/// A JSON value stored as text.
pub struct JsonText<T>(pub T);

stored_as!(JsonText<T> => String);

impl<'r, T: serde::de::DeserializeOwned> Decode<'r, Any> for JsonText<T> {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<Any>>::decode(value)?;
        Ok(JsonText(serde_json::from_str(&text)?))
    }
}

/// `From<JsonText<T>> for T` for each stored JSON type (a blanket impl
/// over every `T` is not allowed for a foreign trait).
macro_rules! from_json_text {
    ($($t:ty),*) => {
        $(impl From<JsonText<$t>> for $t {
            fn from(json: JsonText<$t>) -> Self {
                json.0
            }
        })*
    };
}

from_json_text!(BTreeMap<String, String>, Grants, serde_json::Value);

/// A flag stored as 0 or 1.
pub struct Flag(bool);

stored_as!(Flag => i64);

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Flag(<i64 as Decode<Any>>::decode(value)? != 0))
    }
}

impl From<Flag> for bool {
    fn from(flag: Flag) -> Self {
        flag.0
    }
}

/// A flag stored as 0 or 1, or NULL for "not known".
pub struct MaybeFlag(Option<bool>);

stored_as!(MaybeFlag => i64);

impl<'r> Decode<'r, Any> for MaybeFlag {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        let n = <Option<i64> as Decode<Any>>::decode(value)?;
        Ok(MaybeFlag(n.map(|n| n != 0)))
    }
}

impl From<MaybeFlag> for Option<bool> {
    fn from(flag: MaybeFlag) -> Self {
        flag.0
    }
}

/// A log level stored by its name (`info`).
pub struct LevelName(Level);

stored_as!(LevelName => String);

impl<'r> Decode<'r, Any> for LevelName {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(LevelName(<String as Decode<Any>>::decode(value)?.parse()?))
    }
}

impl From<LevelName> for Level {
    fn from(name: LevelName) -> Self {
        name.0
    }
}
