//! Write [Caisson](https://github.com/caisson-rs/caisson) tasks in Rust.
//!
//! A task is a WebAssembly component that exports one function, `run`, from
//! bytes to bytes. It reaches the outside world only through the capabilities
//! the operator granted the run, each by a *label*: object stores
//! ([`objects::Store`]), SQL databases ([`sql::Db`]), the run's log
//! ([`log`]) and its parameters ([`params`]).
//!
//! Mark the task's entry point with [`#[caisson_sdk::task]`](macro@task). Its
//! argument is any [`FromInput`] (`Vec<u8>`, `String`, [`Json<T>`] or
//! nothing) and it returns a [`Result`] of any [`IntoOutput`] (`Vec<u8>`,
//! `String`, `&'static str`, [`Json<T>`] or `()`).
//!
//! # Example
//!
//! A task that sums a column of a table and stores the result as an object:
//!
//! ```no_run
//! use caisson_sdk::objects::Store;
//! use caisson_sdk::sql::Db;
//! use caisson_sdk::{Json, Result, info, params};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Request {
//!     region: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Total {
//!     region: String,
//!     total: i64,
//! }
//!
//! #[caisson_sdk::task]
//! fn run(Json(req): Json<Request>) -> Result<Json<Total>> {
//!     let db = Db::open("warehouse")?;
//!     let rows = db.query(
//!         "SELECT COALESCE(SUM(amount), 0) AS total FROM sales WHERE region = $1",
//!         &[req.region.as_str().into()],
//!     )?;
//!     let total: i64 = rows.first().map(|row| row.get("total")).transpose()?.unwrap_or(0);
//!     info!("{} sold {total}", req.region);
//!
//!     let out = Total { region: req.region, total };
//!     let label = params::get_or("store", "reports");
//!     Store::open(&label)?.put(&format!("totals/{}.json", out.region), serde_json::to_vec(&out)?)?;
//!     Ok(Json(out))
//! }
//! ```
//!
//! # Errors
//!
//! Every host call returns [`Result`]; its [`Error`] mirrors the cases of the
//! WIT interfaces' `error` variants (database errors carry their SQLSTATE in
//! a [`DatabaseError`]) and converts from `std::io::Error`,
//! `serde_json::Error` and strings, so `?` works throughout. An error
//! returned from the task becomes the run's `task-error`: [`Error::Backend`],
//! transactions to retry ([`Error::is_retry_transaction`]) and
//! [`Error::retryable`] errors are marked retryable, all others are not. A
//! panic traps the instance.
//!
//! # Building
//!
//! ```sh
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! A task crate is a `cdylib` (or a binary with an empty `fn main() {}`); the
//! `.wasm` it builds is the component to submit.

#![warn(missing_docs)]

mod error;
mod io;
pub mod log;
pub mod map;
pub mod objects;
pub mod params;
pub mod sql;

/// The code `wit-bindgen` generates from the WIT world. Task authors should
/// not need it: everything in it is wrapped by this crate's types.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "caisson:task/task",
        pub_export_macro: true,
        default_bindings_module: "caisson_sdk::wit",
        export_macro_name: "export",
        generate_all,
    });
}

pub use caisson_sdk_macros::task;
pub use error::{Context, DatabaseError, DatabaseErrorKind, Error, Result, TaskError};
pub use io::{FromInput, IntoOutput, Json};

/// Support code for [`macro@task`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use crate::{Error, FromInput, IntoOutput};

    pub use crate::wit;

    /// What a task function may return.
    pub trait TaskReturn {
        fn into_task_result(self) -> Result<Vec<u8>, Error>;
    }

    impl<O: IntoOutput, E: Into<Error>> TaskReturn for Result<O, E> {
        fn into_task_result(self) -> Result<Vec<u8>, Error> {
            self.map_err(Into::into)?.into_output()
        }
    }

    /// Decodes the input, runs the task and encodes its output or error.
    pub fn run<I, R>(input: Vec<u8>, task: impl FnOnce(I) -> R) -> Result<Vec<u8>, wit::TaskError>
    where
        I: FromInput,
        R: TaskReturn,
    {
        I::from_input(input)
            .and_then(|input| task(input).into_task_result())
            .map_err(|e| {
                let e = crate::TaskError::from(e);
                wit::TaskError {
                    message: e.message,
                    retryable: e.retryable,
                }
            })
    }

    /// Runs a task that takes no input.
    pub fn run_no_input<R: TaskReturn>(
        _input: Vec<u8>,
        task: impl FnOnce() -> R,
    ) -> Result<Vec<u8>, wit::TaskError> {
        run(Vec::new(), |()| task())
    }
}

/// Returns early from a task with an [`Error::Other`] built like `format!`.
///
/// ```
/// fn check(n: u32) -> caisson_sdk::Result<()> {
///     if n > 10 {
///         caisson_sdk::bail!("{n} is more than 10");
///     }
///     Ok(())
/// }
/// assert_eq!(check(11).unwrap_err().to_string(), "11 is more than 10");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)+)).into())
    };
}
