//! The suite's numeric `CAISSON_BENCH_*` settings, read strictly.
//!
//! A mistyped value (`CAISSON_BENCH_THROUGHPUT_RUNS=5k`) stops the suite
//! with an error that names the variable and the value: quietly using the
//! default instead yields figures that look right but measured something
//! else. Unset or empty means "use the default", as before.
//!
//! Each reader is a thin wrapper over a function of the value itself, so the
//! tests check the parsing without setting process-wide variables, which
//! would race between test threads.

use std::env::VarError;
use std::num::ParseIntError;
use std::str::FromStr;

use anyhow::{Result, bail};

/// `var` as a whole number: `None` when it is unset or empty (the caller's
/// default applies), an error naming `var` and its value when it is set to
/// anything that does not parse as a `T`.
pub fn number<T>(var: &str) -> Result<Option<T>>
where
    T: FromStr<Err = ParseIntError>,
{
    parse_number(var, read(var)?.as_deref())
}

/// As [`number`], but 0 (or less) is an error too: for counts of samples,
/// runs, slots or bytes, where 0 would measure nothing or divide by zero.
pub fn positive<T>(var: &str) -> Result<Option<T>>
where
    T: FromStr<Err = ParseIntError> + PartialOrd + Default,
{
    parse_positive(var, read(var)?.as_deref())
}

/// `var`'s value, `None` when it is unset. A value that is not UTF-8 is an
/// error rather than "unset", since someone did set it.
pub fn read(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(value) => Ok(Some(value)),
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(value)) => bail!("{var}: {value:?} is not valid UTF-8"),
    }
}

/// [`number`] on a value already read: `var` only names it in the error.
/// Surrounding whitespace is ignored, as it always was, so a value that is
/// only whitespace counts as empty.
pub fn parse_number<T>(var: &str, value: Option<&str>) -> Result<Option<T>>
where
    T: FromStr<Err = ParseIntError>,
{
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match value.trim().parse() {
        Ok(n) => Ok(Some(n)),
        Err(e) => bail!("{var}: {value:?} is not a whole number ({e})"),
    }
}

/// [`positive`] on a value already read.
pub fn parse_positive<T>(var: &str, value: Option<&str>) -> Result<Option<T>>
where
    T: FromStr<Err = ParseIntError> + PartialOrd + Default,
{
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match value.trim().parse::<T>() {
        // `Default` is 0 for every integer type.
        Ok(n) if n > T::default() => Ok(Some(n)),
        Ok(_) => bail!("{var}: {value:?} is not a positive whole number"),
        Err(e) => bail!("{var}: {value:?} is not a positive whole number ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAR: &str = "CAISSON_BENCH_TEST_VALUE";

    #[test]
    fn unset_and_empty_mean_the_default() {
        for value in [None, Some(""), Some("  ")] {
            assert_eq!(parse_number::<usize>(VAR, value).unwrap(), None);
            assert_eq!(parse_positive::<usize>(VAR, value).unwrap(), None);
        }
    }

    #[test]
    fn a_number_is_read() {
        assert_eq!(
            parse_number::<usize>(VAR, Some("5000")).unwrap(),
            Some(5000)
        );
        assert_eq!(parse_number::<u64>(VAR, Some(" 7\n")).unwrap(), Some(7));
        assert_eq!(parse_number::<usize>(VAR, Some("0")).unwrap(), Some(0));
        assert_eq!(parse_positive::<usize>(VAR, Some("1")).unwrap(), Some(1));
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        for bad in ["5k", "-1", "1.5", "ten", "99999999999999999999999"] {
            let e = parse_number::<usize>(VAR, Some(bad))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{VAR}: {bad:?} is not a whole number (")),
                "{e}"
            );
            let e = parse_positive::<usize>(VAR, Some(bad))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{VAR}: {bad:?} is not a positive whole number")),
                "{e}"
            );
        }
    }

    #[test]
    fn zero_is_not_positive() {
        let e = parse_positive::<u64>(VAR, Some("0"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("{VAR}: \"0\" is not a positive whole number"));
        let e = parse_positive::<i32>(VAR, Some("-3"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("{VAR}: \"-3\" is not a positive whole number"));
    }

    #[test]
    fn the_readers_see_an_unset_variable_as_none() {
        // Only reads the environment, and nothing sets this name, so it
        // cannot race with another test.
        const UNSET: &str = "CAISSON_BENCH_TEST_NEVER_SET";
        assert_eq!(number::<usize>(UNSET).unwrap(), None);
        assert_eq!(positive::<usize>(UNSET).unwrap(), None);
    }
}
