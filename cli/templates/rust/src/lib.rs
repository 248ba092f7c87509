//! {{name}}: sums the `amount` column of every CSV object under a prefix,
//! by region, and writes the totals back to the store as JSON.
//!
//! Parameters: `store` (default `data`), `prefix` (default `sales/`) and
//! `output` (default `summary.json`).

use std::collections::BTreeMap;

use caisson_sdk::objects::Store;
use caisson_sdk::{Context, Json, Result, info, log, params};
use serde::Serialize;

/// What the task returns, and writes to `output`.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub files: u64,
    pub rows: u64,
    pub totals: BTreeMap<String, i64>,
}

impl Summary {
    /// Adds one CSV line (`region,amount`). The header and blank lines are
    /// skipped. This is plain Rust, so `cargo test` checks it natively.
    pub fn add_line(&mut self, line: &str) -> Result<()> {
        let line = line.trim();
        if line.is_empty() || line == "region,amount" {
            return Ok(());
        }
        let (region, amount) = line
            .split_once(',')
            .with_context(|| format!("expected `region,amount`, got {line:?}"))?;
        let amount: i64 = amount
            .trim()
            .parse()
            .with_context(|| format!("bad amount in {line:?}"))?;
        *self.totals.entry(region.trim().to_string()).or_default() += amount;
        self.rows += 1;
        Ok(())
    }
}

#[caisson_sdk::task]
fn run() -> Result<Json<Summary>> {
    let store = Store::open(&params::get_or("store", "data"))?;
    let prefix = params::get_or("prefix", "sales/");
    let output = params::get_or("output", "summary.json");

    // List first, so that progress has a total.
    let keys = store
        .list(&prefix)
        .map(|meta| meta.map(|m| m.key))
        .collect::<Result<Vec<_>>>()?;
    info!("summing {} objects under {prefix:?}", keys.len());

    let mut summary = Summary::default();
    for (i, key) in keys.iter().enumerate() {
        // Streamed: an object of any size is read a line at a time.
        for line in store.lines(key)? {
            summary
                .add_line(&line?)
                .with_context(|| format!("in {key}"))?;
        }
        summary.files += 1;
        log::progress(i as u64 + 1, keys.len() as u64);
    }

    store.put(&output, serde_json::to_vec_pretty(&summary)?)?;
    info!("{} rows from {} files; totals in {output}", summary.rows, summary.files);
    Ok(Json(summary))
}

// The task's logic is tested natively, apart from the host calls: those
// exist only inside a component (on the host they are stubs that panic).
// Keep the work in plain functions like `Summary::add_line` and test those.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_amounts_by_region() {
        let mut summary = Summary::default();
        for line in ["region,amount", "north,120", "south,80", "", "north,45"] {
            summary.add_line(line).unwrap();
        }
        assert_eq!(summary.rows, 3);
        assert_eq!(summary.totals["north"], 165);
        assert_eq!(summary.totals["south"], 80);
    }

    #[test]
    fn a_bad_amount_is_an_error() {
        let error = Summary::default().add_line("north,lots").unwrap_err();
        assert!(error.to_string().contains("bad amount"), "{error}");
    }
}
