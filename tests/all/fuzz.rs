//! REST fuzzing: schemathesis, driven by the served `/openapi.json`,
//! against a real `caisson serve` (embedded SQLite, one worker).
//!
//! Two passes, one with a tenant's token and one with the admin token, each
//! generating cases for every operation (examples, coverage, fuzzing and
//! stateful phases). The server must answer no request with a 5xx, and every
//! response must be what the document says: a listed status code, the listed
//! content type, a body and headers that match the schema, a 401 without a
//! token, a 405 for a method a path does not have.
//!
//! The full check set runs, `positive_data_acceptance` included: the
//! document states every syntactic rule the server enforces, so a request it
//! allows is never a 400. What no JSON Schema can judge (an unknown module,
//! a cron expression or duration that does not parse, a cycle in a workflow)
//! is a 422, documented on each operation and accepted by that check.
//!
//! Schemathesis comes from `scripts/install-fuzz-tools` (which `scripts/test`
//! runs), at `target/tools/fuzz-venv/bin/schemathesis` or
//! `$CAISSON_SCHEMATHESIS`. `CAISSON_FUZZ_EXAMPLES` (cases per operation and
//! phase, default 100) and `CAISSON_FUZZ_SEED` tune a run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use caisson_tests::{Served, ServerToml, guest_path, root};

const ADMIN: &str = "fuzz-admin-token-5b0e";
const TENANT: &str = "fuzz-tenant-token-77c1";
/// How long one schemathesis pass may take before the test gives up.
const PASS_LIMIT: Duration = Duration::from_secs(240);

fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("CAISSON_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/tools/fuzz-venv/bin/schemathesis"));
    if path.exists() {
        return Some(path);
    }
    let reason = format!(
        "schemathesis is not installed at {} (run scripts/install-fuzz-tools)",
        path.display()
    );
    if std::env::var("CAISSON_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{reason}, but CAISSON_REQUIRE_SERVICES=1");
    }
    eprintln!("skipping: {reason}");
    None
}

/// What one schemathesis pass saw, from its NDJSON event report.
#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    by_status: BTreeMap<u16, usize>,
    /// `check name: operation`, with the first message seen.
    failures: BTreeMap<String, String>,
}

fn tally(ndjson: &str) -> Tally {
    let mut tally = Tally::default();
    for line in ndjson.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).expect("an NDJSON event");
        let Some(finished) = event.get("ScenarioFinished") else {
            continue;
        };
        let recorder = &finished["recorder"];
        let label = recorder["label"].as_str().unwrap_or("?");
        if let Some(interactions) = recorder["interactions"].as_object() {
            for interaction in interactions.values() {
                tally.cases += 1;
                if let Some(status) = interaction["response"]["status_code"].as_u64() {
                    *tally.by_status.entry(status as u16).or_default() += 1;
                }
            }
        }
        if let Some(checks) = recorder["checks"].as_object() {
            for check in checks
                .values()
                .flat_map(|c| c.as_array().cloned().unwrap_or_default())
            {
                if check["status"] == "failure" {
                    let name = check["name"].as_str().unwrap_or("?");
                    let info = &check["failure_info"]["failure"];
                    let message = format!(
                        "{}: {}",
                        info["title"].as_str().unwrap_or(""),
                        info["message"].as_str().unwrap_or("")
                    );
                    tally
                        .failures
                        .entry(format!("{name}: {label}"))
                        .or_insert(message);
                }
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_schema_violations() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("caisson.toml");
    ServerToml::sqlite_in(dir.path())
        .server(
            "database",
            format!("\"sqlite://{}/caisson.db?mode=rwc\"", dir.path().display()),
        )
        .local_modules(&dir.path().join("modules"))
        .server("workers", "1")
        .server("poll", "\"50ms\"")
        .server("admin_token", format!("\"{ADMIN}\""))
        .engine("max_memory", "1073741824")
        .tables(&format!(
            "[tenants.fuzz]\ntokens = [\"{TENANT}\"]\nobjects = [\"data\"]\n\n\
             [limits]\ntimeout = \"10s\"\n\n\
             [objects.data]\ntype = \"memory\""
        ))
        .write(dir.path());
    let server = Served::start(&config, dir.path(), &[("CAISSON_LOG", "warn")]);
    let base = server.url.clone();

    // Something to find: the fuzzer's path parameters and module names are
    // drawn from these half the time, so it gets past the 404s.
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(token)
    };
    let ok = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "seeding: {status} {body}");
        body
    };
    ok(
        call(reqwest::Method::POST, "/v1/modules?name=hello", TENANT)
            .header("content-type", "application/wasm")
            .body(std::fs::read(guest_path("hello")).unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let run = ok(call(reqwest::Method::POST, "/v1/runs", TENANT)
        .json(&json!({"module": "hello", "input": "fuzz"}))
        .send()
        .await
        .unwrap())
    .await;
    ok(call(reqwest::Method::POST, "/v1/schedules", TENANT)
        .json(&json!({"name": "nightly", "cron": "0 2 * * *", "run": {"module": "hello"}}))
        .send()
        .await
        .unwrap())
    .await;
    ok(call(reqwest::Method::POST, "/v1/workflows", TENANT)
        .json(&json!({"name": "pipeline", "steps": [
            {"name": "a", "run": {"module": "hello"}},
            {"name": "b", "depends_on": ["a"], "run": {"module": "hello"}}
        ]}))
        .send()
        .await
        .unwrap())
    .await;
    let workflow_run = ok(
        call(reqwest::Method::POST, "/v1/workflows/pipeline/runs", TENANT)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let token = ok(
        call(reqwest::Method::POST, "/v1/tenants/fuzz/tokens", ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let st_config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &st_config,
        format!(
            r#"
# A schema-valid request may still name a module that does not exist, or
# carry a cron expression or duration that does not parse: the server
# answers those 422 (documented on each operation), never 400. The rest
# are schemathesis's defaults.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[dictionaries.names]
values = ["hello", "nightly", "pipeline", "fuzz"]
[dictionaries.ids]
values = ["{run}", "{workflow_run}", "{token}"]
[dictionaries.modules]
values = ["hello"]

[parameters]
"path.name" = {{ dictionary = "names", probability = 0.5 }}
"path.id" = {{ dictionary = "ids", probability = 0.5 }}
"body.module" = {{ dictionary = "modules", probability = 0.5 }}
"body.run.module" = {{ dictionary = "modules", probability = 0.5 }}
"body.runs[*].module" = {{ dictionary = "modules", probability = 0.5 }}
"body.steps[*].run.module" = {{ dictionary = "modules", probability = 0.5 }}
"#,
            run = run["id"].as_str().unwrap(),
            workflow_run = workflow_run["id"].as_str().unwrap(),
            token = token["id"].as_str().unwrap(),
        ),
    )
    .unwrap();

    let examples = std::env::var("CAISSON_FUZZ_EXAMPLES").unwrap_or_else(|_| "100".into());
    let seed = std::env::var("CAISSON_FUZZ_SEED").unwrap_or_else(|_| "20261124".into());
    let hooks = root().join("tests/fuzz/hooks.py");
    let mut total = Tally::default();
    // The tenant first: the admin pass may revoke tokens.
    for (who, token) in [("tenant", TENANT), ("admin", ADMIN)] {
        let report = dir.path().join(format!("{who}.ndjson"));
        let junit = dir.path().join(format!("{who}.xml"));
        let mut command = tokio::process::Command::new(&schemathesis);
        command
            .arg("--config-file")
            .arg(&st_config)
            .args(["run", &format!("{base}/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--max-examples", &examples, "--seed", &seed])
            // One worker: Python 3.11's `ast` is not thread-safe (the
            // "AST constructor recursion depth mismatch" error), and
            // hypothesis parses source while generating.
            .args(["--workers", "1", "--no-shrink", "--request-timeout", "30"])
            .args(["--checks", "all"])
            .args(["--report", "ndjson,junit", "--report-ndjson-path"])
            .arg(&report)
            .arg("--report-junit-path")
            .arg(&junit)
            .args(["--output-truncate", "false"])
            .env("SCHEMATHESIS_HOOKS", &hooks)
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .kill_on_drop(true);
        let started = std::time::Instant::now();
        let output = tokio::time::timeout(PASS_LIMIT, command.output())
            .await
            .unwrap_or_else(|_| panic!("the {who} pass took over {PASS_LIMIT:?}"))
            .expect("running schemathesis");
        let log = String::from_utf8_lossy(&output.stdout);
        let ndjson = std::fs::read_to_string(&report).unwrap_or_else(|e| {
            panic!(
                "no report from the {who} pass ({e}):\n{log}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let pass = tally(&ndjson);
        println!(
            "fuzz {who}: {} cases in {:.0?}, by status {:?}, {} failed checks",
            pass.cases,
            started.elapsed(),
            pass.by_status,
            pass.failures.len()
        );
        assert!(
            output.status.success() && pass.failures.is_empty(),
            "schemathesis ({who} token) found problems: {:#?}\n{log}",
            pass.failures
        );
        total.cases += pass.cases;
        for (status, n) in pass.by_status {
            *total.by_status.entry(status).or_default() += n;
        }
    }
    let server_errors: usize = total
        .by_status
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    println!(
        "fuzz total: {} cases, {server_errors} 5xx, 0 schema violations",
        total.cases
    );
    assert!(total.cases >= 1000, "too few cases ran: {}", total.cases);
    assert_eq!(server_errors, 0, "5xx answers: {:?}", total.by_status);
    drop(server);
}
