//! Guest programs for Caisson's host tests: hostile tasks (infinite loops,
//! memory bombs, escapes) and probes that exercise every host call and report
//! what they saw. Each scenario is one binary in `src/bin/`, built into
//! `target/guests/<name>.wasm` by `scripts/build-guests`.
//!
//! This library holds what the probes share: [`Report`], the JSON report
//! they return, and [`outcome`].
//!
//! ```
//! use caisson_test_components::Report;
//!
//! let mut r = Report::default();
//! r.eq("sum", 1 + 1, 2);
//! r.check("positive", -1 > 0, "was negative");
//! let json = r.finish();
//! assert_eq!(json["ok"], false);
//! assert_eq!(json["checks"]["sum"], "ok");
//! assert_eq!(json["failures"][0], "positive: was negative");
//! ```

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};

use caisson_sdk::Result;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// `"ok"` if `result` succeeded, else the error's kind (`"not-found"`,
/// `"access-denied"`, `"too-large"`, `"invalid-input"`, `"backend"`,
/// `"other"`).
pub fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

/// A probe's report: named checks, each `"ok"` or `"FAIL: <detail>"`, plus
/// free-form extra fields.
///
/// [`Report::finish`] returns
/// `{"ok": bool, "failures": ["<check>: <detail>", ...], "checks": {"<check>": "ok" | "FAIL: <detail>"}, ...extra}`,
/// where `ok` is true when no check failed.
#[derive(Debug, Default)]
pub struct Report {
    checks: BTreeMap<String, String>,
    failures: Vec<String>,
    extra: Map<String, Value>,
}

impl Report {
    /// Records check `name`: passed if `ok`, else failed with `detail`.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Display) {
        if ok {
            self.checks.insert(name.to_owned(), "ok".to_owned());
        } else {
            self.checks
                .insert(name.to_owned(), format!("FAIL: {detail}"));
            self.failures.push(format!("{name}: {detail}"));
        }
    }

    /// Records check `name`: passed if `got == want`.
    pub fn eq<T: PartialEq + Debug>(&mut self, name: &str, got: T, want: T) {
        let detail = format!("got {got:?}, want {want:?}");
        self.check(name, got == want, detail);
    }

    /// Records check `name`: passed if `result` is `Ok`, whose value is
    /// returned.
    pub fn ok<T>(&mut self, name: &str, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => {
                self.check(name, true, "");
                Some(v)
            }
            Err(e) => {
                self.check(name, false, format_args!("{} ({e})", e.kind()));
                None
            }
        }
    }

    /// Records check `name`: passed if `result` failed with kind `kind`.
    pub fn err_kind<T: Debug>(&mut self, name: &str, result: Result<T>, kind: &str) {
        let detail = match &result {
            Ok(v) => format!("succeeded with {v:?}, want {kind}"),
            Err(e) => format!("got {} ({e}), want {kind}", e.kind()),
        };
        self.check(
            name,
            result.as_ref().is_err_and(|e| e.kind() == kind),
            detail,
        );
    }

    /// Sets an extra top-level field of the report.
    pub fn set(&mut self, name: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or_else(|e| json!(e.to_string()));
        self.extra.insert(name.to_owned(), value);
    }

    /// Whether no check has failed so far.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as JSON.
    pub fn finish(self) -> Value {
        let mut out = Map::new();
        out.insert("ok".into(), json!(self.failures.is_empty()));
        out.insert("failures".into(), json!(self.failures));
        out.insert("checks".into(), json!(self.checks));
        for (k, v) in self.extra {
            out.entry(k).or_insert(v);
        }
        Value::Object(out)
    }
}
