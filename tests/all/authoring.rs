//! A task author's first ten minutes, in a temporary directory outside the
//! repository: `caisson new`, the generated test, `caisson build`, `caisson
//! run DIR` (rebuilding only when the sources changed), and the build's
//! errors for what is not a task.
//!
//! The Rust project builds into the target directory `scripts/build-guests`
//! uses (`target/wasm`), so the std that the Debian toolchain route builds
//! from source is reused; its native `cargo test` shares `target/authoring`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use caisson_tests::{caisson_bin, guest_path, root};
use serde_json::Value;

use crate::server::text;

/// Runs `caisson ARGS` in `dir`.
fn caisson(dir: &Path, args: &[&str]) -> Output {
    Command::new(caisson_bin())
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .output()
        .expect("spawning caisson")
}

fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn failed(what: &str, out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded\nstdout: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// What the template's task must return for the sample data `caisson new`
/// wrote: the CSV rows under `data/sales/`, summed by region here.
fn expected_summary(project: &Path) -> Value {
    let mut totals = BTreeMap::<String, i64>::new();
    let (mut files, mut rows) = (0, 0);
    for entry in std::fs::read_dir(project.join("data/sales")).unwrap() {
        files += 1;
        let csv = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in csv.lines().skip(1).filter(|l| !l.is_empty()) {
            let (region, amount) = line.split_once(',').unwrap();
            *totals.entry(region.into()).or_default() += amount.parse::<i64>().unwrap();
            rows += 1;
        }
    }
    assert!(rows > 0 && totals.len() > 1, "the sample data is too thin");
    serde_json::json!({"files": files, "rows": rows, "totals": totals})
}

/// `caisson new`, then build and run; returns the project directory.
fn new_project(parent: &Path, name: &str, lang: &str) -> PathBuf {
    let out = succeeded(
        "caisson new",
        &caisson(parent, &["new", name, "--lang", lang]),
    );
    assert!(
        out.contains("caisson build") && out.contains("caisson run ."),
        "`caisson new` does not say what to do next: {out}"
    );
    parent.join(name)
}

/// `caisson build` checks the component and lists its imports; `caisson
/// run .` prints the summary and writes it to the store; a second run does
/// not rebuild, and one after an edit does.
fn build_and_run(project: &Path, source: &str) {
    let expected = expected_summary(project);
    let built = caisson(project, &["build"]);
    let stdout = succeeded("caisson build", &built);
    assert!(stdout.contains("a valid Caisson task"), "{stdout}");
    assert!(stdout.contains("size:"), "{stdout}");
    assert!(
        stdout.contains("imports: caisson:task/objects"),
        "the imports are not listed: {stdout}"
    );

    let run = caisson(project, &["run", "."]);
    let stdout = succeeded("caisson run .", &run);
    let output: Value = serde_json::from_str(&stdout).expect("the run's output is JSON");
    assert_eq!(output, expected);
    let stderr = text(&run.stderr);
    assert!(
        !stderr.contains("building"),
        "ran after a fresh build but rebuilt: {stderr}"
    );
    assert!(stderr.contains("progress: 2/2"), "no progress: {stderr}");
    let written: Value = serde_json::from_slice(
        &std::fs::read(project.join("data/summary.json")).expect("summary.json written"),
    )
    .unwrap();
    assert_eq!(written, expected);

    // An edit: the summary goes to another key by default.
    let path = project.join(source);
    let code = std::fs::read_to_string(&path).unwrap();
    let edited = code.replace("\"summary.json\"", "\"edited.json\"");
    assert_ne!(code, edited, "{source} names no summary.json");
    std::fs::write(&path, edited).unwrap();
    let run = caisson(project, &["run", ".", "--quiet"]);
    succeeded("caisson run . after an edit", &run);
    let stderr = text(&run.stderr);
    assert!(stderr.contains("sources changed; building"), "{stderr}");
    assert!(
        project.join("data/edited.json").exists(),
        "the edit did not take"
    );
}

#[test]
fn a_rust_task_from_caisson_new_to_its_first_run() {
    let parent = tempfile::tempdir().unwrap();
    let project = new_project(parent.path(), "sales-report", "rust");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    let sdk = std::fs::canonicalize(root().join("sdk/rust")).unwrap();
    assert!(
        manifest.contains(&format!("path = \"{}\"", sdk.display())),
        "the SDK dependency is not this checkout's SDK: {manifest}"
    );

    let cargo = std::env::var_os("CARGO").unwrap_or("cargo".into());
    let test = Command::new(cargo)
        .args(["test", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", root().join("target/authoring"))
        .output()
        .unwrap();
    let stdout = succeeded("cargo test", &test);
    assert!(stdout.contains("2 passed"), "{stdout}");

    build_and_run(&project, "src/lib.rs");
    let component = std::fs::read(project.join("target/caisson/sales-report.wasm")).unwrap();
    assert_eq!(
        initial_memory_pages(&component),
        vec![INITIAL_PAGES],
        "`caisson new`'s .cargo/config.toml did not set the initial memory"
    );
}

/// The initial memory the guest profile gives a Rust task (4 MiB, in 64 KiB
/// pages): `caisson new`'s `.cargo/config.toml` and `scripts/build-guests`.
const INITIAL_PAGES: u64 = 64;

/// The initial sizes, in 64 KiB pages, of the memories the component's
/// core modules define.
fn initial_memory_pages(component: &[u8]) -> Vec<u64> {
    let mut pages = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::MemorySection(memories) = payload.unwrap() {
            pages.extend(memories.into_iter().map(|m| m.unwrap().initial));
        }
    }
    pages
}

/// A run that never grows its memory spares the next run in its pooled
/// slot an `mprotect` and a TLB shootdown: this repository's guests start
/// with the memory a small task needs.
#[test]
fn the_repositorys_rust_guests_start_with_the_guest_profiles_memory() {
    for guest in ["hello", "bench-probe", "word-count"] {
        let component = std::fs::read(guest_path(guest)).unwrap();
        assert_eq!(
            initial_memory_pages(&component),
            vec![INITIAL_PAGES],
            "{guest}"
        );
    }
}

/// The Python toolchain's interpreter (`scripts/install-python-toolchain`),
/// which also has pytest.
fn toolchain_python() -> PathBuf {
    let python = root().join("target/tools/python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-toolchain",
        python.display()
    );
    python
}

#[test]
fn a_python_task_from_caisson_new_to_its_first_run() {
    let parent = tempfile::tempdir().unwrap();
    let project = new_project(parent.path(), "sales_report", "python");

    // The generated test, as its author runs it: the SDK is importable
    // outside a component, and caisson.testing runs the task in-process.
    let test = Command::new(toolchain_python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&project)
        .output()
        .unwrap();
    let stdout = succeeded("pytest", &test);
    assert!(stdout.contains("3 passed"), "{stdout}");

    build_and_run(&project, "app.py");
}

/// The Python SDK's own tests of `caisson.testing` (sdk/python/tests): a
/// task against a directory and SQLite, transactions, grants and keys.
#[test]
fn the_python_sdk_works_outside_a_component_under_caisson_testing() {
    let test = Command::new(toolchain_python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root().join("sdk/python/tests"))
        .output()
        .unwrap();
    let stdout = succeeded("pytest sdk/python/tests", &test);
    // Every test of the directory ran and passed (pytest's summary line,
    // e.g. "5 passed in 0.05s"): at least the five written so far.
    let passed: u32 = stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "passed")
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0);
    assert!(passed >= 5 && !stdout.contains("failed"), "{stdout}");
}

#[test]
fn caisson_build_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let stderr = failed("building an empty directory", &caisson(&empty, &["build"]));
    assert!(
        stderr.contains("neither a Cargo.toml (a Rust task) nor an app.py (a Python task)")
            && stderr.contains("caisson new"),
        "{stderr}"
    );

    let rlib = dir.path().join("rlib");
    std::fs::create_dir_all(rlib.join("src")).unwrap();
    std::fs::write(
        rlib.join("Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    )
    .unwrap();
    std::fs::write(rlib.join("src/lib.rs"), "").unwrap();
    let stderr = failed(
        "building a crate that is not a cdylib",
        &caisson(&rlib, &["build"]),
    );
    assert!(
        stderr.contains("`plain` is not a cdylib") && stderr.contains("crate-type = [\"cdylib\"]"),
        "{stderr}"
    );

    let native = dir.path().join("native");
    std::fs::create_dir(&native).unwrap();
    std::fs::write(
        native.join("app.py"),
        "import numpy\nfrom caisson import task\n\n@task\ndef run():\n    return 1\n",
    )
    .unwrap();
    std::fs::write(native.join("requirements.txt"), "numpy==2.1.0\n").unwrap();
    let stderr = failed(
        "building a Python task with a native dependency",
        &caisson(&native, &["build"]),
    );
    assert!(
        stderr.contains("`numpy` has no pure-Python wheel") && stderr.contains("native"),
        "{stderr}"
    );

    // `caisson new` does not write over a project.
    let stderr = failed(
        "caisson new over a non-empty directory",
        &caisson(dir.path(), &["new", "native", "--lang", "python"]),
    );
    assert!(stderr.contains("already exists"), "{stderr}");
}
