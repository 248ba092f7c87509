//! `/metrics` against the real tools: Debian's Prometheus scrapes a real
//! `caisson serve` through a workload and is asked, through its own query
//! API, what it saw; `promtool` checks the exposition and the shipped
//! alert rules.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caisson_tests::{PrometheusEnv, Served, ServerToml, guest_path, prometheus_env, root, tool};
use serde_json::{Value, json};

const TOKEN: &str = "metrics-tenant-token";

/// A scrape target file in Prometheus's `targets` directory, removed on
/// drop so that Prometheus stops scraping a server that is gone.
struct Target(PathBuf);

impl Target {
    /// Lists `address` (`127.0.0.1:PORT`) with the label `caisson_test`
    /// = `id`, so this test's queries see only its own server.
    fn add(env: &PrometheusEnv, address: &str, id: &str) -> Target {
        let body = json!([{"targets": [address], "labels": {"caisson_test": id}}]);
        // Written under another name and renamed, so Prometheus never
        // reads half a file.
        let tmp = env.targets.join(format!("{id}.tmp"));
        let path = env.targets.join(format!("{id}.json"));
        std::fs::write(&tmp, body.to_string()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        Target(path)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One instant query: `[(labels, value)]`.
async fn query(http: &reqwest::Client, env: &PrometheusEnv, q: &str) -> Vec<(Value, f64)> {
    let answer: Value = http
        .get(format!("{}/api/v1/query", env.url))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "success", "{q}: {answer}");
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// `q`'s single value, or `None` while Prometheus has none.
async fn scalar(http: &reqwest::Client, env: &PrometheusEnv, q: &str) -> Option<f64> {
    query(http, env, q).await.first().map(|(_, v)| *v)
}

/// Runs `promtool check ARGS` with `stdin`, and returns its output; fails
/// the test if promtool does.
fn promtool(promtool: &Path, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn promtool_accepts_the_shipped_alert_rules() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let rules = root().join("deploy/prometheus/alerts.yml");
    let said = promtool(
        &promtool_bin,
        &["check", "rules", rules.to_str().unwrap()],
        b"",
    );
    assert!(said.contains("SUCCESS"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_runs_by_state_from_a_real_server() {
    let (Some(env), Some(promtool_bin)) = (prometheus_env(), tool("promtool")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("caisson.toml");
    ServerToml::sqlite_in(dir.path())
        .local_modules(&dir.path().join("modules"))
        .server("workers", "2")
        .server("poll", "\"50ms\"")
        .engine("max_memory", "1073741824")
        .tables(&format!(
            "[tenants.acme]\ntokens = [\"{TOKEN}\"]\n\n[limits]\ntimeout = \"30s\"\n"
        ))
        .write(dir.path());
    let server = Served::start(&config, dir.path(), &[("CAISSON_LOG", "warn")]);
    let base = server.url.clone();
    let http = reqwest::Client::new();

    // Scraped from before the workload, so counters are seen rising from
    // nothing, as in production.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let _target = Target::add(&env, base.trim_start_matches("http://"), &id);

    for (name, guest) in [("hello", "hello"), ("trap", "trap")] {
        let response = http
            .post(format!("{base}/v1/modules?name={name}"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(std::fs::read(guest_path(guest)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
    // Three runs that succeed and two that fail.
    let mut runs = Vec::new();
    for module in ["hello", "trap", "hello", "trap", "hello"] {
        let run: Value = http
            .post(format!("{base}/v1/runs"))
            .bearer_auth(TOKEN)
            .json(&json!({"module": module, "input": "metrics"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        runs.push(run["id"].as_str().unwrap().to_string());
    }
    for run in &runs {
        let mut state = Value::Null;
        for _ in 0..10 {
            let done: Value = http
                .get(format!("{base}/v1/runs/{run}?wait=30s"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            state = done["state"].clone();
            if state != "queued" && state != "running" {
                break;
            }
        }
        assert!(state == "succeeded" || state == "failed", "{run}: {state}");
    }

    // The exposition as scrapers other than Prometheus get it, and as
    // Prometheus asks for it.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool(&promtool_bin, &["check", "metrics"], text.as_bytes());
    let open = http
        .get(format!("{base}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        open.headers()
    );
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));

    // What Prometheus scraped, through its own query API. Scrapes are 1 s
    // apart; the first may take a few seconds to happen (file discovery).
    let only = format!("caisson_test=\"{id}\"");
    let by_state = format!("sum by (state) (caisson_runs_finished_total{{{only}}})");
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen = loop {
        let seen = query(&http, &env, &by_state).await;
        let state = |s: &str| seen.iter().find(|(m, _)| m["state"] == s).map(|(_, v)| *v);
        if state("succeeded") == Some(3.0) && state("failed") == Some(2.0) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not see 3 succeeded and 2 failed runs: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(seen.len(), 2, "{seen:?}");
    let q = |q: String| {
        let (http, env) = (&http, &env);
        async move { scalar(http, env, &q).await }
    };
    // The histogram counted every attempt: one per run.
    assert_eq!(
        q(format!("sum(caisson_run_duration_seconds_count{{{only}}})")).await,
        Some(5.0)
    );
    assert_eq!(
        q(format!(
            "sum(caisson_trigger_to_start_seconds_count{{{only}, tenant=\"acme\"}})"
        ))
        .await,
        Some(5.0)
    );
    // By tenant and module name.
    assert_eq!(
        q(format!(
            "sum(caisson_runs_submitted_total{{{only}, tenant=\"acme\", module=\"trap\"}})"
        ))
        .await,
        Some(2.0)
    );
    // The database's view, read at scrape time.
    assert_eq!(
        q(format!("caisson_runs{{{only}, state=\"succeeded\"}}")).await,
        Some(3.0)
    );
    assert_eq!(q(format!("caisson_queue_depth{{{only}}}")).await, Some(0.0));
    // Requests by route template, not by raw path (five run ids, one route).
    assert_eq!(
        q(format!(
            "sum(caisson_http_requests_total{{{only}, route=\"/v1/runs\", method=\"POST\", status=\"201\"}})"
        ))
        .await,
        Some(5.0)
    );
    assert!(
        q(format!(
            "sum(caisson_http_requests_total{{{only}, route=\"/v1/runs/{{id}}\", status=\"200\"}})"
        ))
        .await
        .is_some_and(|n| n >= 5.0)
    );
    let raw = query(
        &http,
        &env,
        &format!(
            "caisson_http_requests_total{{{only}, route=~\".*{}.*\"}}",
            runs[0]
        ),
    )
    .await;
    assert!(raw.is_empty(), "a raw path became a label: {raw:?}");
    assert_eq!(
        q(format!("caisson_worker_slots{{{only}}}")).await,
        Some(2.0)
    );
    // The first load of each module compiled it (or found it in the shared
    // compile cache); the later ones found it in memory.
    assert!(
        q(format!(
            "sum(caisson_module_loads_total{{{only}, source=\"memory\"}})"
        ))
        .await
        .is_some_and(|n| n >= 1.0)
    );
    // Prometheus loaded the shipped rules too (scripts/services points it
    // at them), so they evaluate against real series.
    let rules: Value = http
        .get(format!("{}/api/v1/rules", env.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert!(
        groups.iter().any(|g| g["name"] == "caisson"),
        "the shipped rules are not loaded: {rules}"
    );
    // Every query of the shipped dashboard is one Prometheus accepts
    // (Grafana's variables filled in), and the dashboard and the rules name
    // only metrics the server exposes.
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(root().join("deploy/grafana/caisson.json")).unwrap())
            .unwrap();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$tenant", ".*");
            query(&http, &env, &expr).await;
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "{exprs} queries in the dashboard");
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    for name in metric_names(&dashboard.to_string())
        .into_iter()
        .chain(metric_names(&alerts))
    {
        // Host-call families show from a process's first host call; this
        // workload makes none (`traces::a_run_is_one_trace_...` reads them
        // from a worker's exposition after its calls).
        if [
            "caisson_host_calls",
            "caisson_object_bytes",
            "caisson_sql_statement",
        ]
        .iter()
        .any(|family| name.starts_with(family))
        {
            continue;
        }
        assert!(
            text.contains(&format!("{name} ")) || text.contains(&format!("{name}{{")),
            "{name} is not in the exposition:\n{text}"
        );
    }
}

/// The `caisson_*` names in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("caisson_") && w.len() > "caisson_".len())
        .map(str::to_string)
        .collect()
}
