//! Decoding a task's input and encoding its output.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// A type a task can take as its input.
///
/// Implemented for `Vec<u8>` (the raw bytes), `String` (UTF-8, else
/// [`Error::InvalidInput`]), `()` (input ignored) and [`Json<T>`].
pub trait FromInput: Sized {
    /// Decodes the run's input bytes.
    fn from_input(input: Vec<u8>) -> Result<Self>;
}

/// A type a task can return as its output.
///
/// Implemented for `Vec<u8>`, `String`, `&'static str`, `()` (empty output)
/// and [`Json<T>`].
pub trait IntoOutput {
    /// Encodes the run's output bytes.
    fn into_output(self) -> Result<Vec<u8>>;
}

impl FromInput for Vec<u8> {
    fn from_input(input: Vec<u8>) -> Result<Self> {
        Ok(input)
    }
}

impl FromInput for String {
    fn from_input(input: Vec<u8>) -> Result<Self> {
        String::from_utf8(input)
            .map_err(|e| Error::InvalidInput(format!("input is not UTF-8: {e}")))
    }
}

impl FromInput for () {
    fn from_input(_: Vec<u8>) -> Result<Self> {
        Ok(())
    }
}

impl IntoOutput for Vec<u8> {
    fn into_output(self) -> Result<Vec<u8>> {
        Ok(self)
    }
}

impl IntoOutput for String {
    fn into_output(self) -> Result<Vec<u8>> {
        Ok(self.into_bytes())
    }
}

impl IntoOutput for &'static str {
    fn into_output(self) -> Result<Vec<u8>> {
        Ok(self.as_bytes().to_vec())
    }
}

impl IntoOutput for () {
    fn into_output(self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// JSON input or output.
///
/// As an input, the run's bytes are parsed as JSON into `T`; an empty (or
/// all-whitespace) input parses as `null`, so `Json<Option<T>>` accepts it.
/// As an output, `T` is serialized to compact JSON.
///
/// ```no_run
/// use caisson_sdk::{Json, Result};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Args {
///     name: String,
/// }
///
/// #[derive(Serialize)]
/// struct Greeting {
///     text: String,
/// }
///
/// #[caisson_sdk::task]
/// fn greet(Json(args): Json<Args>) -> Result<Json<Greeting>> {
///     Ok(Json(Greeting { text: format!("hello, {}", args.name) }))
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// Returns the wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned> FromInput for Json<T> {
    fn from_input(input: Vec<u8>) -> Result<Self> {
        let value = if input.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_value(serde_json::Value::Null)
        } else {
            serde_json::from_slice(&input)
        };
        value
            .map(Json)
            .map_err(|e| Error::InvalidInput(format!("input is not the expected JSON: {e}")))
    }
}

impl<T: Serialize> IntoOutput for Json<T> {
    fn into_output(self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.0)
            .map_err(|e| Error::Other(format!("could not encode output: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_input() {
        let Json(v): Json<Vec<u32>> = FromInput::from_input(b"[1, 2]".to_vec()).unwrap();
        assert_eq!(v, [1, 2]);
        let Json(v): Json<Option<u32>> = FromInput::from_input(b" \n".to_vec()).unwrap();
        assert_eq!(v, None);
        let e = <Json<u32>>::from_input(b"x".to_vec()).unwrap_err();
        assert_eq!(e.kind(), "invalid-input");
    }

    #[test]
    fn string_input() {
        assert!(String::from_input(vec![0xff]).is_err());
        assert_eq!(String::from_input(b"hi".to_vec()).unwrap(), "hi");
    }
}
