//! `caisson run` as a user runs it: a real process, a config file, grants.

use std::path::Path;
use std::process::{Command, Output};

use caisson_tests::{ServerToml, caisson_bin, guest_path};

/// Runs `caisson run` with `args` after the task path, `config` as the
/// config file's text.
pub fn caisson_run(dir: &Path, task: &str, config: &str, args: &[&str]) -> Output {
    let config_path = dir.join("caisson.toml");
    ServerToml::engine_only().tables(config).write(dir);
    Command::new(caisson_bin())
        .arg("run")
        .arg(guest_path(task))
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .output()
        .expect("spawning caisson")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_prints_output_and_live_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = caisson_run(dir.path(), "hello", "", &["--input", "cli"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, cli");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("INFO"), "log not printed: {stderr}");
}

#[test]
fn run_reads_input_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "from a file").unwrap();
    let arg = format!("@{}", input.display());
    let out = caisson_run(dir.path(), "hello", "", &["--input", &arg]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, from a file");
}

#[test]
fn a_failed_run_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = caisson_run(dir.path(), "infinite-loop", "", &["--timeout", "300ms"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("timeout after 300ms"), "{stderr}");

    let out = caisson_run(dir.path(), "memory-bomb", "", &["--memory", "32MiB"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("memory limit 32 MiB exceeded"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn granting_an_unconfigured_label_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = caisson_run(dir.path(), "hello", "", &["--grant", "objects=nowhere"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown object store label `nowhere`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn inspect_accepts_tasks_and_rejects_modules() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(caisson_bin())
        .args(["inspect"])
        .arg(guest_path("hello"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("a valid Caisson task"));

    let module = dir.path().join("module.wasm");
    std::fs::write(&module, wat::parse_str("(module)").unwrap()).unwrap();
    let out = Command::new(caisson_bin())
        .arg("inspect")
        .arg(&module)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("core WebAssembly module"),
        "{}",
        text(&out.stderr)
    );
}

/// `caisson run`, `serve` and `worker` all check the store tables when
/// they load the configuration: a bad one stops them at once with its
/// table and key named, instead of panicking on a task's first request
/// (as an S3 `endpoint = ""` once did).
#[test]
fn every_command_refuses_a_bad_store_table_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "[objects.raw]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"\"\n";
    let check = |what: &str, out: Output, expected: &str| {
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{what} accepted the bad table");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    };
    let out = caisson_run(dir.path(), "hello", bad, &["--grant", "objects=raw"]);
    check("run", out, "objects.raw.endpoint: not a URL");

    let config = dir.path().join("bad.toml");
    for (table, expected) in [
        (bad, "objects.raw.endpoint: not a URL"),
        (
            "[server]\nmodules = { type = \"hdfs\", url = \"namenode:8020\" }\n",
            "server.modules.url: unsupported scheme `namenode`",
        ),
    ] {
        std::fs::write(&config, table).unwrap();
        for command in ["serve", "worker"] {
            let out = Command::new(caisson_bin())
                .arg(command)
                .arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .env_remove("CAISSON_DATABASE")
                .env_remove("CAISSON_MODULES")
                .output()
                .unwrap();
            check(command, out, expected);
        }
    }
}
