//! Traces over OTLP/HTTP, as an OpenTelemetry collector receives them: a
//! receiver in the test decodes each export with the official
//! `opentelemetry-proto` messages, and the spans of a run submitted to an
//! API process and run by a worker process (on PostgreSQL) are checked to
//! be one trace, parented submit → queue/claim/run → load/instantiate/
//! execute → host calls, with the run view's `trace_id`. A workflow run is
//! one trace with its steps' runs as children. Both processes log JSON
//! lines (`--log-format json`), whose run lines carry the run, tenant and
//! trace id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use caisson_tests::{Served, ServerToml, guest_path, postgres_url};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

/// A secret that a task passes as a SQL parameter: no span may carry it.
const PARAM_SECRET: &str = "param-secret-5c1e";

/// An OTLP/HTTP traces receiver on 127.0.0.1, keeping every span it is sent.
pub(crate) struct Receiver {
    pub(crate) url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Every export body, raw, for the secrets test.
    pub(crate) bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (kept, raw) = (spans.clone(), bodies.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let (kept, raw) = (kept.clone(), raw.clone());
                async move {
                    let request = ExportTraceServiceRequest::decode(body.as_ref())
                        .expect("an OTLP/HTTP protobuf export");
                    raw.lock().unwrap().push(body.to_vec());
                    let mut kept = kept.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            kept.extend(scope.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, spans, bodies }
    }

    /// Every span received so far.
    pub(crate) fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id` (hex) once `done` holds for them, or
    /// a panic naming what was received after 30 s.
    pub(crate) async fn trace(&self, trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        for _ in 0..300 {
            let spans: Vec<Span> = (self.spans.lock().unwrap().iter())
                .filter(|s| hex(&s.trace_id) == trace_id)
                .cloned()
                .collect();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let names: Vec<String> = (self.spans.lock().unwrap().iter())
            .map(|s| format!("{} {}", hex(&s.trace_id), s.name))
            .collect();
        panic!("trace {trace_id} never completed; received: {names:#?}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attribute as text.
fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match value.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

/// The one span named `name` in `spans`.
fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one `{name}` span expected: {:#?}",
        names(spans)
    );
    found[0]
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn is_child(child: &Span, parent: &Span) -> bool {
    child.parent_span_id == parent.span_id
}

/// Runs `module` with `body` through the API at `url` and waits for it.
async fn run(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let queued = caisson_tests::submit_run(http, url, &body).await;
    let view = caisson_tests::finished_run(http, url, queued["id"].as_str().unwrap()).await;
    // The submit answer already named the trace.
    assert_eq!(view["trace_id"], queued["trace_id"], "{view}");
    view
}

async fn upload(http: &reqwest::Client, url: &str, name: &str) {
    let response = http
        .post(format!("{url}/v1/modules?name={name}"))
        .header("content-type", "application/wasm")
        .body(std::fs::read(guest_path(name)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// The parsed JSON log lines of `output` whose spans include the `run`
/// span of run `id`; fails on any stderr line that is not JSON.
fn run_lines(output: &str, id: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    for line in output.lines() {
        if line.starts_with("caisson: ") {
            continue; // the start-up lines on standard output
        }
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let spans = parsed["spans"].as_array().cloned().unwrap_or_default();
        if spans
            .iter()
            .any(|s| s["name"] == "run" && s["run_id"] == id)
        {
            lines.push(parsed);
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_one_trace_from_its_submit_in_one_process_to_its_host_calls_in_another() {
    let Some(admin) = postgres_url() else { return };
    let database = crate::server::fresh_database(&admin).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    ServerToml::new(&database)
        .local_modules(&dir.path().join("modules"))
        .server("poll", "\"100ms\"")
        .tables(&format!(
            "[objects.data]\ntype = \"local\"\nroot = \"{}\"\n\n\
             [sql.db]\ntype = \"sqlite\"\nurl = \"sqlite://{}/t.db?mode=rwc\"\n\n\
             [telemetry]\notlp_endpoint = \"{}\"\nsampling = 1.0\n",
            data.display(),
            dir.path().display(),
            receiver.url
        ))
        .write(dir.path());
    let config = dir.path().join("caisson.toml");
    let config = config.to_str().unwrap();
    // Spans leave in batches; a short delay keeps the test short.
    let envs = [("OTEL_BSP_SCHEDULE_DELAY", "100"), ("CAISSON_LOG", "info")];
    let api = Served::start_args(
        &[
            "serve",
            "--no-worker",
            "--config",
            config,
            "--log-format",
            "json",
        ],
        dir.path(),
        &envs,
    );
    let worker = Served::start_args(
        &[
            "worker",
            "--config",
            config,
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        dir.path(),
        &envs,
    );
    let http = reqwest::Client::new();
    upload(&http, &api.url, "sql-script").await;
    upload(&http, &api.url, "objects-probe").await;

    // SQL: a statement the database refuses among ones it takes, and a
    // parameter that must stay in the task.
    let script = json!({"db": "db", "steps": [
        {"sql": "CREATE TABLE t (x TEXT)", "execute": true},
        {"sql": "INSERT INTO t VALUES ($1)", "params": [PARAM_SECRET], "execute": true},
        {"sql": "SELECT x FROM t"},
        {"sql": "SELECT * FROM missing_table"}
    ]});
    let view = run(
        &http,
        &api.url,
        json!({"module": "sql-script", "input": script, "grants": {"sql": ["db"]}}),
    )
    .await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let trace_id = view["trace_id"].as_str().expect("a trace id").to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    // The run's own log names its trace too.
    let log = http
        .get(format!(
            "{}/v1/runs/{}/logs",
            api.url,
            view["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains(&format!("; trace {trace_id}")), "{log}");
    let spans = receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.name == "finish") && spans.iter().any(|s| s.name == "submit")
        })
        .await;

    // The shape: submit is the root; queue, claim and the attempt hang
    // off it; the attempt's steps off the attempt; host calls off execute.
    let submit = one(&spans, "submit");
    assert!(submit.parent_span_id.is_empty(), "submit is the root");
    assert_eq!(attr(submit, "run_id").as_deref(), view["id"].as_str());
    for name in ["queue", "claim", "run"] {
        assert!(is_child(one(&spans, name), submit), "{name} under submit");
    }
    let attempt = one(&spans, "run");
    assert_eq!(attr(attempt, "run_id").as_deref(), view["id"].as_str());
    assert_eq!(
        attr(attempt, "trace_id").as_deref(),
        Some(trace_id.as_str())
    );
    for name in ["load", "instantiate", "execute", "finish"] {
        assert!(is_child(one(&spans, name), attempt), "{name} under run");
    }
    // The test's compile cache is shared: a hit or a compile.
    let source = attr(one(&spans, "load"), "source");
    assert!(
        matches!(source.as_deref(), Some("disk" | "compiled")),
        "{source:?}"
    );
    let execute = one(&spans, "execute");
    let calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("sql."))
        .collect();
    assert!(
        calls.iter().all(|s| is_child(s, execute)),
        "{:#?}",
        names(&spans)
    );
    assert!(is_child(one(&spans, "sql.open"), execute));
    let statements: Vec<(String, Option<String>)> = (calls.iter())
        .filter(|s| s.name != "sql.open")
        .map(|s| {
            assert_eq!(attr(s, "caisson.label").as_deref(), Some("db"));
            (
                attr(s, "caisson.statement").unwrap(),
                attr(s, "caisson.error"),
            )
        })
        .collect();
    assert_eq!(
        statements,
        [
            ("CREATE".to_string(), None),
            ("INSERT".to_string(), None),
            ("SELECT".to_string(), None),
            ("SELECT".to_string(), Some("database".to_string())),
        ],
        "{:#?}",
        names(&spans)
    );
    let refused = calls.last().unwrap();
    assert_eq!(
        refused.status.as_ref().map(|s| s.code),
        Some(2),
        "an error status"
    );
    // Neither a parameter nor a statement's text leaves the worker.
    let bodies = receiver.bodies.lock().unwrap().concat();
    for never in [PARAM_SECRET, "missing_table", "INSERT INTO"] {
        assert!(
            !bodies.windows(never.len()).any(|w| w == never.as_bytes()),
            "{never} was exported"
        );
    }

    // Objects: keys, bytes and error cases.
    let view = run(
        &http,
        &api.url,
        json!({"module": "objects-probe", "grants": {"objects": ["data"]}}),
    )
    .await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let objects_trace = view["trace_id"].as_str().unwrap().to_string();
    assert_ne!(objects_trace, trace_id, "one trace per run");
    let spans = receiver
        .trace(&objects_trace, |spans| {
            spans.iter().any(|s| s.name == "finish")
        })
        .await;
    let execute = one(&spans, "execute");
    let put = (spans.iter())
        .find(|s| {
            s.name == "objects.store.put" && attr(s, "caisson.key").as_deref() == Some("probe/a")
        })
        .expect("the put of probe/a");
    assert!(is_child(put, execute));
    assert_eq!(attr(put, "caisson.label").as_deref(), Some("data"));
    assert_eq!(attr(put, "caisson.bytes_written").as_deref(), Some("5"));
    let get = (spans.iter())
        .find(|s| s.name == "objects.store.get" && attr(s, "caisson.bytes_read").is_some())
        .expect("a get that read bytes");
    assert!(attr(get, "caisson.key").is_some());
    assert!(
        (spans.iter()).any(|s| attr(s, "caisson.error").as_deref() == Some("not-found")),
        "the probe's not-found calls"
    );

    // JSON log lines: the worker's lines of the run carry the run, its
    // tenant and its trace.
    let lines = run_lines(&worker.output(), view["id"].as_str().unwrap());
    assert!(!lines.is_empty(), "{}", worker.output());
    for line in &lines {
        let run_span = (line["spans"].as_array().unwrap().iter())
            .find(|s| s["name"] == "run")
            .unwrap();
        assert_eq!(run_span["trace_id"], objects_trace.as_str(), "{line}");
        assert!(run_span["tenant"].is_string(), "{line}");
    }
    // Every line of the API process is JSON too.
    run_lines(&api.output(), "none");

    // The worker's `/metrics` counts the calls by interface and error
    // case, and bytes and statements by label.
    let metrics = reqwest::get(format!("{}/metrics", worker.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "caisson_host_calls_total{interface=\"sql\",function=\"connection.query\",error=\"database\"} 1",
        "caisson_sql_statements_total{source=\"db\",statement=\"INSERT\"} 1",
        "caisson_sql_statement_duration_seconds_count{source=\"db\"} 4",
        "caisson_object_bytes_written_total{store=\"data\"}",
        "caisson_object_bytes_read_total{store=\"data\"}",
        "caisson_host_calls_total{interface=\"objects\",function=\"store.get\",error=\"not-found\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_run_is_one_trace_with_its_steps_as_children() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    ServerToml::sqlite_in(dir.path())
        .local_modules(&dir.path().join("modules"))
        .server("poll", "\"100ms\"")
        .tables(&format!(
            "[telemetry]\notlp_endpoint = \"{}\"\n",
            receiver.url
        ))
        .write(dir.path());
    let server = Served::start(
        &dir.path().join("caisson.toml"),
        dir.path(),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let url = server.url.clone();
    let http = reqwest::Client::new();
    upload(&http, &url, "hello").await;
    let response = http
        .post(format!("{url}/v1/workflows"))
        .json(&json!({"name": "chain", "steps": [
            {"name": "a", "run": {"module": "hello", "input": "start"}},
            {"name": "b", "depends_on": ["a"], "run": {"module": "hello"}}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let started: Value = http
        .post(format!("{url}/v1/workflows/chain/runs"))
        .header("x-caisson-client", "test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let mut done = Value::Null;
    for _ in 0..600 {
        done = http
            .get(format!("{url}/v1/workflow-runs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["state"], "succeeded", "{done}");
    let trace_id = done["trace_id"].as_str().expect("a trace id").to_string();
    let spans = receiver
        .trace(&trace_id, |spans| {
            spans.iter().filter(|s| s.name == "finish").count() == 2
        })
        .await;

    let root = one(&spans, "workflow");
    assert!(root.parent_span_id.is_empty(), "the workflow is the root");
    assert_eq!(attr(root, "workflow_run_id").as_deref(), Some(id.as_str()));
    // Each step's run: its submit under the workflow, its attempt under
    // its submit, with the trace id its run view shows.
    let mut attempts: HashMap<String, String> = HashMap::new();
    for step in done["steps"].as_array().unwrap() {
        let run_id = step["run_id"].as_str().unwrap();
        let view: Value = http
            .get(format!("{url}/v1/runs/{run_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["trace_id"], trace_id.as_str(), "{view}");
        let submit = (spans.iter())
            .find(|s| s.name == "submit" && attr(s, "run_id").as_deref() == Some(run_id))
            .unwrap_or_else(|| panic!("the submit of {run_id}: {:#?}", names(&spans)));
        assert!(
            is_child(submit, root),
            "step {} under the workflow",
            step["name"]
        );
        let attempt = (spans.iter())
            .find(|s| s.name == "run" && attr(s, "run_id").as_deref() == Some(run_id))
            .unwrap();
        assert!(is_child(attempt, submit));
        attempts.insert(step["name"].as_str().unwrap().to_string(), run_id.into());
    }
    assert_eq!(attempts.len(), 2);
}
