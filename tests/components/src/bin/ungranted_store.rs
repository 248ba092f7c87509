//! Tests that opening an ungranted label is an error, not a trap. Opens the
//! store (or, with param `kind=sql`, the database) labelled by param `label`
//! (default `ungranted`). Output: `denied` on `access-denied`, `opened` on
//! success; any other error fails the run with that error.

use caisson_sdk::objects::Store;
use caisson_sdk::sql::Db;
use caisson_sdk::{Error, Result, params};

#[caisson_sdk::task]
fn run() -> Result<&'static str> {
    let label = params::get_or("label", "ungranted");
    let opened = match params::get("kind").as_deref() {
        Some("sql") => Db::open(&label).map(drop),
        None | Some("objects") => Store::open(&label).map(drop),
        Some(k) => return Err(Error::invalid_input(format!("unknown kind {k:?}"))),
    };
    match opened {
        Ok(()) => Ok("opened"),
        Err(Error::AccessDenied) => Ok("denied"),
        Err(e) => Err(e),
    }
}

fn main() {}
