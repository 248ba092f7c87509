//! The web dashboard (`/ui/`), against a real `caisson serve`.
//!
//! - Over HTTP: every file under `ui/` is served from the binary, gzip-
//!   compressed, with the Content-Security-Policy and the other security
//!   headers; nothing else is.
//! - In a real browser: `tests/ui/dashboard.test.mjs` (Node's test runner
//!   driving Debian's headless Chromium through playwright-core) signs in,
//!   watches runs turn `succeeded` live, reads a log as it is written,
//!   cancels a run, renders hostile content, checks tenant isolation, pages
//!   the runs list, draws a 20-step workflow with a failed step and its
//!   skipped descendants, pauses a schedule and backfills it, uploads and
//!   deletes modules, mints and revokes a token as the admin, and measures
//!   the first page load. This test starts the
//!   servers, seeds them, runs the Node tests and checks each one passed.
//!
//! The browser tests need `/usr/bin/chromium` (or `$CAISSON_CHROMIUM`),
//! Node.js 20+ and playwright-core in `tests/ui/node_modules`:
//! `scripts/install-ui-tools` (which `scripts/test` runs) installs them.
//! Without them the test is skipped, unless `CAISSON_REQUIRE_SERVICES=1`.
//! `CAISSON_UI_SCREENSHOTS=docs/screenshots` saves the README's
//! screenshots; a failing browser test leaves its screenshot in
//! `target/ui-test-artifacts`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use caisson_tests::{Served, guest_path, root, test_dirs};

const ADMIN: &str = "ui-admin-token-41d7";
const TOKEN_A: &str = "ui-alpha-token-9c2e";
const TOKEN_B: &str = "ui-beta-token-03fa";
/// How long the whole browser suite may take.
const SUITE_LIMIT: Duration = Duration::from_secs(300);
/// The issue's budget for the first page load, compressed.
const FIRST_LOAD_BUDGET: u64 = 250 * 1024;

/// The browser tests, by name: each must be reported as passed.
const BROWSER_TESTS: &[&str] = &[
    "sign in with a token, then a submitted run appears and turns succeeded without a reload",
    "a run page shows log lines as the task writes them, filters them by level, downloads the output and re-runs",
    "cancel a running run from its page",
    "hostile log lines, params and outputs render as text, with no dialog and no request",
    "tenant A's token shows nothing of tenant B's, and B's run page says not found",
    "page through 1,000 runs with the cursor, then filter by state and module",
    "a 20-step workflow with a failing step shows it failed and its descendants skipped, and the step opens its log",
    "a schedule shows its next five fire times, which disappear when paused; backfill starts runs",
    "modules: upload by file input and by drop with progress, see what uses each, and a refused delete says why",
    "admin: tenants with their grants; a token created is shown once and works, and revoked it stops",
    "open mode (no tokens configured) shows the dashboard without asking for a token",
    "the first page load is small, and served with the security headers",
];

/// A `caisson serve` config on SQLite in `dir`; with tenants `alpha` and
/// `beta` (and an admin token) unless `open`.
fn config(dir: &Path, open: bool) -> PathBuf {
    let (cache, scratch) = test_dirs();
    let tenants = if open {
        String::new()
    } else {
        format!(
            "admin_token = \"{ADMIN}\"\n\n[tenants.alpha]\ntokens = [\"{TOKEN_A}\"]\nobjects = [\"data\"]\n\n\
             [tenants.beta]\ntokens = [\"{TOKEN_B}\"]\n"
        )
    };
    let path = dir.join("caisson.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[engine]
cache_dir = "{cache}"
scratch_dir = "{scratch}"
max_instances = 8

[limits]
timeout = "60s"

[objects.data]
type = "memory"

[server]
listen = "127.0.0.1:0"
database = "sqlite://{dir}/caisson.db?mode=rwc"
modules = {{ type = "local", root = "{dir}/modules" }}
workers = 3
poll = "50ms"
{tenants}"#,
            dir = dir.display(),
            cache = cache.display(),
            scratch = scratch.path().display(),
        ),
    )
    .unwrap();
    path
}

/// Uploads `names` (guest components) as modules of the same names.
async fn push_modules(base: &str, token: Option<&str>, names: &[&str]) {
    let http = reqwest::Client::new();
    for name in names {
        let mut request = http
            .post(format!("{base}/v1/modules?name={name}"))
            .header("content-type", "application/wasm")
            .body(std::fs::read(guest_path(name)).unwrap());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "uploading {name}: {status} {}",
            response.text().await.unwrap()
        );
    }
}

/// Every file under `ui/` that the server serves (by extension, as
/// `server/build.rs` picks them), as paths relative to it.
fn ui_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue;
        }
        if entry.path().is_dir() {
            ui_files(&entry.path(), &format!("{prefix}{name}/"), out);
        } else if [".html", ".js", ".css", ".svg", ".png", ".ico"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            out.push(format!("{prefix}{name}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_files_are_served_compressed_with_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Served::start(&config(dir.path(), false), dir.path(), &[]);
    // Printed right after the address `Served` waits for.
    let printed = format!("caisson: dashboard at {}/ui/", server.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.output().contains(&printed) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.output().contains(&printed),
        "the dashboard's address is printed: {}",
        server.output()
    );
    // No automatic decompression (reqwest's gzip feature is off) and no
    // redirects followed: the bytes and statuses as sent.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| {
        http.get(format!("{}{path}", server.url))
            .header("accept-encoding", "gzip")
            .send()
    };

    let redirect = get("/ui").await.unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/ui/");

    let mut files = Vec::new();
    ui_files(&root().join("ui"), "", &mut files);
    assert!(files.contains(&"index.html".to_string()), "{files:?}");
    let mut sent = BTreeMap::new();
    for file in &files {
        let path = if file == "index.html" {
            "/ui/".to_string()
        } else {
            format!("/ui/{file}")
        };
        let response = get(&path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
        let kind = headers["content-type"].to_str().unwrap().to_string();
        let expected = match file.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html",
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            _ => "",
        };
        assert!(kind.starts_with(expected), "{path}: {kind}");
        let gzip = headers.get("content-encoding").is_some_and(|v| v == "gzip");
        let body = response.bytes().await.unwrap();
        let source = std::fs::read(root().join("ui").join(file)).unwrap();
        // Small files go as they are; anything worth it is compressed.
        if source.len() > 1024 {
            assert!(gzip, "{path} ({} bytes) is gzip-compressed", source.len());
            assert!(body.len() < source.len(), "{path}");
        } else if !gzip {
            assert_eq!(
                body.as_ref(),
                source.as_slice(),
                "{path}: the file as it is"
            );
        }
        sent.insert(file.clone(), (source.len(), body.len()));
    }
    let (raw, compressed) = sent.values().fold((0, 0), |(r, c), (a, b)| (r + a, c + b));
    println!("dashboard files: {raw} bytes, {compressed} bytes sent gzip-compressed: {sent:?}");

    // Nothing but the dashboard's files, and no way out of its directory.
    // (`..` segments are resolved by the client; encoded slashes are not,
    // and reach the server as one path parameter.)
    for path in [
        "/ui/nope.js",
        "/ui/js/",
        "/ui/vendor/dagre/VENDORED",
        "/ui/vendor/dagre/LICENSE.txt",
        "/ui/js%2F..%2F..%2FCargo.toml",
        "/ui/%2E%2E%2Fserver%2Fbuild.rs",
    ] {
        let status = get(path).await.unwrap().status();
        assert_eq!(status, 404, "{path}");
    }
    drop(server);
}

/// Node, Chromium and playwright-core, or why they are missing.
fn browser_tools() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CAISSON_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("no `node` on PATH".into()),
    }
    let driver = root().join("tests/ui/node_modules/playwright-core/package.json");
    if !driver.exists() {
        return Err(format!(
            "playwright-core is not installed ({} is missing)",
            driver.display()
        ));
    }
    Ok(chromium)
}

/// `name -> passed` for the top-level tests of a TAP report.
fn tap_results(tap: &str) -> BTreeMap<String, bool> {
    let mut results = BTreeMap::new();
    for line in tap.lines() {
        // Top-level results only: subtests are indented.
        let (passed, rest) = if let Some(rest) = line.strip_prefix("not ok ") {
            (false, rest)
        } else if let Some(rest) = line.strip_prefix("ok ") {
            (true, rest)
        } else {
            continue;
        };
        let Some((_, name)) = rest.split_once(" - ") else {
            continue;
        };
        // A skipped test is no pass.
        let skipped = name.contains(" # SKIP");
        let name = name.split(" # ").next().unwrap_or(name).trim();
        results.insert(name.replace("\\#", "#"), passed && !skipped);
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium() {
    let chromium = match browser_tools() {
        Ok(chromium) => chromium,
        Err(reason) => {
            let reason = format!("{reason}: run scripts/install-ui-tools");
            if std::env::var("CAISSON_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("{reason}, but CAISSON_REQUIRE_SERVICES=1");
            }
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let secured = dir.path().join("secured");
    let open = dir.path().join("open");
    std::fs::create_dir_all(&secured).unwrap();
    std::fs::create_dir_all(&open).unwrap();
    let server = Served::start(&config(&secured, false), &secured, &[]);
    let open_server = Served::start(&config(&open, true), &open, &[]);
    let modules = ["hello", "slow-log", "busy", "trap"];
    push_modules(&server.url, Some(TOKEN_A), &modules).await;
    push_modules(&server.url, Some(TOKEN_B), &modules).await;
    push_modules(&open_server.url, None, &["hello"]).await;

    let tap = dir.path().join("results.tap");
    let results = dir.path().join("results.json");
    let artifacts = root().join("target/ui-test-artifacts");
    let mut command = tokio::process::Command::new("node");
    command
        .args(["--test", "--test-concurrency=1"])
        .args(["--test-reporter=spec", "--test-reporter-destination=stdout"])
        .arg("--test-reporter=tap")
        .arg(format!("--test-reporter-destination={}", tap.display()))
        .arg("dashboard.test.mjs")
        .current_dir(root().join("tests/ui"))
        .env("CAISSON_UI_URL", &server.url)
        .env("CAISSON_UI_OPEN_URL", &open_server.url)
        .env("CAISSON_UI_TOKEN_A", TOKEN_A)
        .env("CAISSON_UI_TOKEN_B", TOKEN_B)
        .env("CAISSON_UI_ADMIN", ADMIN)
        .env("CAISSON_UI_UPLOAD", guest_path("echo-params"))
        .env("CAISSON_UI_RESULTS", &results)
        .env("CAISSON_UI_ARTIFACTS", &artifacts)
        .env("CAISSON_CHROMIUM", &chromium)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    if let Some(shots) = std::env::var_os("CAISSON_UI_SCREENSHOTS") {
        command.env("CAISSON_UI_SCREENSHOTS", root().join(shots));
    }
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(SUITE_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("the browser tests took over {SUITE_LIMIT:?}"))
        .expect("running node");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{log}");
    let reported = tap_results(&std::fs::read_to_string(&tap).unwrap_or_default());
    for name in BROWSER_TESTS {
        match reported.get(*name) {
            Some(true) => {}
            Some(false) => panic!(
                "browser test failed or skipped: {name} (screenshot in {})\n{log}\nserver:\n{}",
                artifacts.display(),
                server.output()
            ),
            None => panic!("browser test did not run: {name}\n{log}"),
        }
    }
    assert_eq!(
        reported.len(),
        BROWSER_TESTS.len(),
        "tests this file does not list: {reported:?}"
    );
    assert!(output.status.success(), "node --test failed:\n{log}");

    let measured: Value =
        serde_json::from_str(&std::fs::read_to_string(&results).expect("the tests' results"))
            .unwrap();
    let first_load = &measured["first_load"];
    let transferred = first_load["transferred"]
        .as_u64()
        .expect("a measured first load");
    println!(
        "browser tests passed in {:.0?}; first page load {}",
        started.elapsed(),
        json!(first_load)
    );
    assert!(
        transferred <= FIRST_LOAD_BUDGET,
        "the first page load is {transferred} bytes, over the {FIRST_LOAD_BUDGET}-byte budget"
    );
    drop(open_server);
    drop(server);
}

/// Waits until run `id` has ended, and returns it.
async fn finished(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run: Value = http
            .get(format!("{base}/v1/runs/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["finished_at"].is_string() {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {id} did not end: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The endpoints the dashboard added: re-run and a schedule's next fire
/// times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_copies_the_run_and_next_fire_times_follow_pause() {
    let dir = tempfile::tempdir().unwrap();
    let server = Served::start(&config(dir.path(), false), dir.path(), &[]);
    let base = server.url.clone();
    push_modules(&base, Some(TOKEN_A), &["hello"]).await;
    push_modules(&base, Some(TOKEN_B), &["hello"]).await;
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str| http.post(format!("{base}{path}")).bearer_auth(token);

    let first: Value = post("/v1/runs", TOKEN_A)
        .json(&json!({
            "module": "hello", "input": "from the first run", "params": {"extra": "1"},
            "timeout": "7s", "memory": 64 << 20, "priority": 3,
            "retries": {"max": 2, "backoff": "250ms"}, "idempotency_key": "once"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = finished(&http, &base, TOKEN_A, first["id"].as_str().unwrap()).await;
    assert_eq!(first["output"], "hello, from the first run");

    let response = post(
        &format!("/v1/runs/{}/rerun", first["id"].as_str().unwrap()),
        TOKEN_A,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let again: Value = response.json().await.unwrap();
    assert_ne!(again["id"], first["id"]);
    for field in [
        "module",
        "digest",
        "params",
        "grants",
        "timeout_ms",
        "memory",
        "priority",
        "max_retries",
    ] {
        assert_eq!(again[field], first[field], "{field}");
    }
    assert_eq!(again["idempotency_key"], Value::Null);
    let again = finished(&http, &base, TOKEN_A, again["id"].as_str().unwrap()).await;
    assert_eq!(again["state"], "succeeded");
    // The input, which the API never shows, was copied too.
    assert_eq!(again["output"], "hello, from the first run");

    // Another tenant's run, or none, is not found.
    let response = post(
        &format!("/v1/runs/{}/rerun", first["id"].as_str().unwrap()),
        TOKEN_B,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
    let response = post("/v1/runs/no-such-run/rerun", TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Next fire times: five by default, in order, none while paused.
    let created = post("/v1/schedules", TOKEN_A)
        .json(&json!({"name": "hourly", "cron": "15 * * * *", "run": {"module": "hello"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let next = |query: &'static str| {
        let http = http.clone();
        let url = format!("{base}/v1/schedules/hourly/next{query}");
        async move {
            let response = http.get(url).bearer_auth(TOKEN_A).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        serde_json::from_value(next("").await["times"].clone()).unwrap();
    assert_eq!(times.len(), 5);
    assert!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::hours(1))
    );
    assert!(
        times
            .iter()
            .all(|t| t.format("%M:%S").to_string() == "15:00")
    );
    assert!(times[0] > chrono::Utc::now());
    assert_eq!(
        next("?count=1000").await["times"].as_array().unwrap().len(),
        100
    );
    post("/v1/schedules/hourly/pause", TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(next("").await, json!({"paused": true, "times": []}));
    let response = http
        .get(format!("{base}/v1/schedules/hourly/next"))
        .bearer_auth(TOKEN_B)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "another tenant's schedule");
    drop(server);
}
