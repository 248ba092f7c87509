//! Third-party Python packages in tasks (issue 22): requirements resolved
//! for the guest's environment markers, SQLAlchemy over `caisson.dbapi`,
//! packages built from source without their optional C part, and the
//! README's compatibility table. scripts/build-python-guests builds the
//! tasks in tests/python/{sqlalchemy,jinja-old,jinja-new,yaml,pkgs-*}.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use caisson_tests::{base_config, caisson_bin, mysql_url, postgres_url, runtime, unique_prefix};

use crate::server::{Proc, cli, push_guest, text, write_embedded_config};
use crate::{json, load, run_with};

fn toolchain() -> std::path::PathBuf {
    let venv = caisson_tests::root().join("target/tools/python/bin");
    assert!(
        venv.join("componentize-py").exists(),
        "{} is missing: run scripts/install-python-toolchain (scripts/test does)",
        venv.display()
    );
    venv
}

/// `caisson build-python DIR -o OUT` with the project's toolchain.
fn build_python(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let venv = toolchain();
    Command::new(caisson_bin())
        .arg("build-python")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .args(extra)
        .env("CAISSON_COMPONENTIZE_PY", venv.join("componentize-py"))
        .env("CAISSON_PYTHON", venv.join("python"))
        .output()
        .expect("spawning caisson build-python")
}

fn grants(sql: &[&str]) -> caisson_host_api::Grants {
    caisson_host_api::Grants {
        objects: Default::default(),
        sql: sql.iter().map(|s| s.to_string()).collect(),
    }
}

async fn run_json(
    runtime: &caisson_runtime::Runtime,
    task: &caisson_runtime::LoadedTask,
    input: Value,
    sql: &[&str],
) -> Value {
    let (result, log) = run_with(runtime, task, input.to_string().as_bytes(), |r| {
        r.grants = grants(sql);
    })
    .await;
    let output = result.unwrap_or_else(|e| {
        let lines: Vec<String> = log.records().iter().map(|r| r.message.clone()).collect();
        panic!("{e}\n{}", lines.join("\n"))
    });
    json(&output)
}

/// The marker environment the build resolves with is the one a running
/// component reports, and with it SQLAlchemy's `greenlet` (wanted only on
/// x86_64, aarch64 and the like) is left out.
#[tokio::test(flavor = "multi_thread")]
async fn python_requirements_are_resolved_with_the_guests_markers() {
    let out = Command::new(toolchain().join("python"))
        .arg(caisson_tests::root().join("sdk/python/tools/guest_install.py"))
        .arg("environment")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();

    let runtime = runtime(base_config());
    let task = load(&runtime, "py-sqlalchemy").await;
    let output = run_json(&runtime, &task, json!({"op": "env"}), &[]).await;
    assert_eq!(output["environment"], resolved);
    assert_eq!(output["environment"]["sys_platform"], "wasi");
    assert_eq!(output["environment"]["platform_machine"], "wasm32");
    assert_eq!(output["greenlet"], false, "{output}");
    assert_eq!(output["sqlalchemy"], "2.0.36");
}

/// SQLAlchemy Core through `caisson.dbapi`, the same task on PostgreSQL and
/// on SQLite: DDL, a multi-row insert, an update's row count, a rolled-back
/// transaction, a unique violation as `IntegrityError`, grouped sums as
/// `Decimal`, booleans, datetimes, and one parameter used twice.
#[tokio::test(flavor = "multi_thread")]
async fn sqlalchemy_core_runs_on_postgres_and_sqlite_through_caisson_dbapi() {
    let Some(pg) = postgres_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.sql = toml::from_str(&format!(
        "[pg]\ntype = \"postgres\"\nurl = \"{pg}\"\n\
         [lite]\ntype = \"sqlite\"\nurl = \"sqlite://{}?mode=rwc\"\n",
        dir.path().join("sqla.db").display()
    ))
    .unwrap();
    let runtime = runtime(config);
    let task = load(&runtime, "py-sqlalchemy").await;
    // PostgreSQL's SQLSTATE 42P01 is a ProgrammingError; SQLite has no
    // SQLSTATE for a missing table (HY000), so only a DatabaseError.
    sqlalchemy_core_and_dbapi(
        &runtime,
        &task,
        "pg",
        "postgresql",
        "$",
        "ProgrammingError 42P01",
    )
    .await;
    sqlalchemy_core_and_dbapi(
        &runtime,
        &task,
        "lite",
        "sqlite",
        "$",
        "DatabaseError HY000",
    )
    .await;
}

/// The same task on MariaDB through `mysql+caisson://`: the dialect writes
/// `?` placeholders, reads MySQL's error numbers from the host's detail (so
/// `create_all` finds a table missing), and a duplicate key is the same
/// `IntegrityError 23505` as elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn sqlalchemy_core_runs_on_mysql_through_caisson_dbapi() {
    let Some(url) = mysql_url() else { return };
    let mut config = base_config();
    config.sql = toml::from_str(&format!("[my]\ntype = \"mysql\"\nurl = \"{url}\"\n")).unwrap();
    let runtime = runtime(config);
    let task = load(&runtime, "py-sqlalchemy").await;
    sqlalchemy_core_and_dbapi(
        &runtime,
        &task,
        "my",
        "mysql",
        "?",
        "ProgrammingError 42S02",
    )
    .await;
}

/// Runs the task's `core` and `raw` operations on the source `db` and
/// checks what each returns. `mark` is the source's placeholder (`$` for
/// `$1, $2`, `?` for MySQL's); `missing` is the PEP 249 class and SQLSTATE
/// of selecting from a table that is not there.
async fn sqlalchemy_core_and_dbapi(
    runtime: &caisson_runtime::Runtime,
    task: &caisson_runtime::LoadedTask,
    db: &str,
    dialect: &str,
    mark: &str,
    missing: &str,
) {
    let table = unique_prefix("sqla").replace(['/', '-'], "_");
    let input = json!({"op": "core", "dialect": dialect, "db": db, "table": table});
    let output = run_json(runtime, task, input, &[db]).await;
    assert_eq!(
        output,
        json!({
            "updated": 3,
            "duplicate": "IntegrityError 23505",
            "paid": 6,
            "twice": [4, 5],
            "totals": [["c0", 3, "18.75"], ["c1", 3, "12.75"], ["c2", 3, "15.75"]],
            "first": {
                "customer": "c2",
                "amount": "2.25",
                "amount_type": "Decimal",
                "paid": true,
                "placed": "2026-12-03T09:30:00"
            }
        }),
        "{dialect}"
    );

    // The DB-API module on its own: placeholders, `description`, errors by
    // PEP 249 class, and an ungranted label refused.
    let output = run_json(
        runtime,
        task,
        json!({"op": "raw", "db": db, "mark": mark}),
        &[db],
    )
    .await;
    assert_eq!(
        output,
        json!({
            "described": ["n", "s"],
            "row": [42, "x"],
            "missing": missing,
            "denied": "access-denied"
        }),
        "{db}"
    );
}

/// Jinja2 3.0 and 3.1, each with its own MarkupSafe built from source (no C
/// speedups), run at once in one worker process and each sees its own
/// versions. jinja-old uses `jinja2.Markup`, which 3.1 removed.
#[test]
fn jinja2_versions_with_markupsafe_from_source_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    write_embedded_config(dir.path(), "workers = 4");
    let server = Proc::start(&["serve"], dir.path());
    let url = server.url().to_string();
    for name in ["py-jinja-old", "py-jinja-new"] {
        push_guest(name, &url);
    }
    let submit = |name: &'static str| {
        let url = url.clone();
        std::thread::spawn(move || {
            let args = [
                "run",
                "submit",
                name,
                "--param",
                "hold_seconds=3",
                "--wait",
                "--json",
            ];
            cli(&args, &url)
        })
    };
    let (old, new) = (submit("py-jinja-old"), submit("py-jinja-new"));
    let outputs: Vec<Value> = [old, new]
        .into_iter()
        .map(|handle| {
            let out = handle.join().unwrap();
            assert!(out.status.success(), "run failed: {}", text(&out.stderr));
            let run: Value = serde_json::from_slice(&out.stdout).unwrap();
            serde_json::from_str(run["output"].as_str().unwrap()).unwrap()
        })
        .collect();
    let (old, new) = (&outputs[0], &outputs[1]);
    let rendered = "<p>&lt;b&gt;&amp; <i>ok</i></p>";
    assert_eq!(old["jinja2"], "3.0.3", "{old}");
    assert_eq!(old["markupsafe"], "2.1.5", "{old}");
    assert_eq!(new["jinja2"], "3.1.4", "{new}");
    assert_eq!(new["markupsafe"], "3.0.2", "{new}");
    assert_eq!(new["has_markup"], false, "{new}");
    for output in [old, new] {
        assert_eq!(output["rendered"], rendered, "{output}");
        assert_eq!(output["speedups"], false, "{output}");
    }
    let t = |v: &Value, k: &str| v[k].as_f64().unwrap();
    assert!(
        t(old, "started") < t(new, "finished") && t(new, "started") < t(old, "finished"),
        "the runs did not overlap: {old} {new}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pyyaml_built_from_source_parses_and_dumps() {
    let runtime = runtime(base_config());
    let task = load(&runtime, "py-yaml").await;
    let (result, _) = run_with(&runtime, &task, b"a: 1\nb: [x, y]\nc: {d: 2.5}\n", |_| {}).await;
    assert_eq!(
        json(&result.unwrap()),
        json!({
            "version": "6.0.2",
            "libyaml": false,
            "parsed": {"a": 1, "b": ["x", "y"], "c": {"d": 2.5}},
            "dumped": "a: x\nb:\n- 1\n- 2\n"
        })
    );
}

/// Writes a task whose requirements.txt is `requirements`, builds it with
/// `extra` arguments, and returns the failed build's error.
fn failed_build(requirements: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task");
    std::fs::create_dir_all(&task).unwrap();
    std::fs::write(
        task.join("app.py"),
        "from caisson import task\n\n@task\ndef run():\n    return 'x'\n",
    )
    .unwrap();
    std::fs::write(task.join("requirements.txt"), requirements).unwrap();
    let wasm = dir.path().join("task.wasm");
    let out = build_python(&task, &wasm, extra);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the build succeeded: {stderr}");
    assert!(!wasm.exists());
    stderr
}

fn hostile_source(name: &str) -> String {
    let path = caisson_tests::root()
        .join("tests/python-sources")
        .join(name);
    format!("file://{}", path.display())
}

#[test]
fn source_build_that_reaches_the_network_fails_clearly() {
    let stderr = failed_build(
        &format!(
            "caisson-reach-network @ {}  # caisson: build-from-source\n",
            hostile_source("reach-network")
        ),
        &[],
    );
    assert!(
        stderr.contains("building caisson-reach-network from source failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("It tried to reach the network."),
        "{stderr}"
    );
    assert!(stderr.contains("sandbox with no network"), "{stderr}");
}

/// The flag instead of the marker; the setup script's write to /var/tmp is
/// refused, and nothing appears there.
#[test]
fn source_build_that_writes_outside_its_directory_fails_clearly() {
    let escape = Path::new("/var/tmp/caisson-source-build-escape");
    let _ = std::fs::remove_file(escape);
    let stderr = failed_build(
        &format!(
            "caisson-write-outside @ {}\n",
            hostile_source("write-outside")
        ),
        &["--build-from-source", "caisson-write-outside"],
    );
    assert!(
        stderr.contains("building caisson-write-outside from source failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("It tried to write outside its build directory."),
        "{stderr}"
    );
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(
        !escape.exists(),
        "the source build wrote {}",
        escape.display()
    );
}

/// A name given with `--build-from-source` may be a dependency that
/// requirements.txt does not list, so it is looked up; a typo is named.
#[test]
fn build_from_source_of_an_unknown_project_is_refused() {
    let stderr = failed_build(
        "six==1.16.0\n",
        &["--build-from-source", "caisson-no-such-project"],
    );
    assert!(
        stderr.contains("caisson-no-such-project: no such project on"),
        "{stderr}"
    );
}

/// The README's "works" rows: one task imports every pure-Python package
/// and calls one function of each.
#[tokio::test(flavor = "multi_thread")]
async fn compatibility_table_pure_python_packages_work() {
    let runtime = runtime(base_config());
    let task = load(&runtime, "py-pkgs-pure").await;
    let (result, _) = run_with(&runtime, &task, b"", |_| {}).await;
    assert_eq!(
        json(&result.unwrap()),
        json!({
            "attrs": {"x": 1, "y": 2},
            "chardet": "UTF-8-SIG",
            "click": 42,
            "croniter": "2026-12-02T10:15:00",
            "fsspec": "in memory",
            "jmespath": ["y"],
            "marshmallow": "2026-12-02",
            "more_itertools": [[0, 1], [2, 3], [4]],
            "packaging": true,
            "protobuf": ["v", "python"],
            "python_dateutil": "2027-01-02T10:00:00",
            "python_dotenv": {"A": "1", "B": "12"},
            "pytz": "2026-12-02T10:00:00+01:00",
            "requests": "https://example.com/s?q=a+b",
            "six": "bytes",
            "structlog": "{\"event\": \"e\", \"n\": 1}",
            "tabulate": "|   n | s   |\n|-----|-----|\n|   1 | x   |",
            "tenacity": 3,
            "toolz": {"1": ["a"], "2": ["bb", "cc"]},
            "tzdata": "2026-07-01T12:00:00+02:00"
        })
    );
}

/// The README's "works from source" rows (MarkupSafe and PyYAML have their
/// own tests above): none of the C parts is in the component.
#[tokio::test(flavor = "multi_thread")]
async fn compatibility_table_packages_built_from_source_work() {
    let runtime = runtime(base_config());
    let task = load(&runtime, "py-pkgs-source").await;
    let (result, _) = run_with(&runtime, &task, b"", |_| {}).await;
    assert_eq!(
        json(&result.unwrap()),
        json!({
            "native": {"pvectorc": false, "msgpack._cmsgpack": false, "simplejson._speedups": false},
            "jsonschema": [true, ["'x' is not of type 'integer'"]],
            "pyrsistent": {"a": 1, "b": 2},
            "msgpack": [{"k": [1, 2]}, true],
            "simplejson": "{\"d\": 1.10}"
        })
    );
}
