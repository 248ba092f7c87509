//! The run's parameters, set by whoever submitted the run.
//!
//! ```no_run
//! use caisson_sdk::{Result, params};
//!
//! # fn f() -> Result<()> {
//! let table = params::require("table")?;
//! let store = params::get_or("store", "data");
//! let batch: u32 = params::parse("batch")?.unwrap_or(500);
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::str::FromStr;

use crate::wit::caisson::task::params as wit;
use crate::{Error, Result};

/// The value of parameter `name`, if it was set.
pub fn get(name: &str) -> Option<String> {
    wit::get(name)
}

/// Every parameter as `(name, value)`, in name order.
pub fn all() -> Vec<(String, String)> {
    wit::all()
}

/// The value of parameter `name`, or `default` if it was not set.
pub fn get_or(name: &str, default: &str) -> String {
    get(name).unwrap_or_else(|| default.to_owned())
}

/// The value of parameter `name`, or [`Error::InvalidInput`] if it was not
/// set.
pub fn require(name: &str) -> Result<String> {
    get(name).ok_or_else(|| Error::InvalidInput(format!("missing parameter `{name}`")))
}

/// Parameter `name` parsed with `FromStr`: `None` if it was not set,
/// [`Error::InvalidInput`] if it does not parse.
pub fn parse<T>(name: &str) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    get(name)
        .map(|v| {
            v.parse().map_err(|e| {
                Error::InvalidInput(format!("parameter `{name}` ({v:?}) is invalid: {e}"))
            })
        })
        .transpose()
}
