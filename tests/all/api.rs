//! The REST API through the router (no socket), with a real SQLite
//! database, a real module directory and an in-process worker.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use caisson_server::ServerConfig;
use caisson_server::api::AppState;
use caisson_server::worker::Worker;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use caisson_tests::{ServerToml, guest};

pub struct App {
    pub state: Arc<AppState>,
    router: axum::Router,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// A server on a fresh SQLite database, with `extra` appended to its
/// configuration and `workers` in-process worker slots.
pub async fn app(extra: &str, workers: usize) -> App {
    app_with("", extra, workers).await
}

/// Like [`app`], with `server_extra` added to the `[server]` table.
pub async fn app_with(server_extra: &str, extra: &str, workers: usize) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = ServerToml::new(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("caisson.db").display()
    ))
    .no_listen();
    // A test may bring its own module store in `server_extra`.
    if !server_extra.contains("modules =") {
        toml = toml.local_modules(&dir.path().join("modules"));
    }
    let text = toml
        .server("poll", "\"20ms\"")
        .server("heartbeat", "\"100ms\"")
        .server("lease", "\"3s\"")
        .server("tick", "\"100ms\"")
        .server("shutdown_grace", "\"1s\"")
        .server_lines(server_extra)
        .engine("max_instances", "16")
        .engine("max_memory", "1073741824")
        .tables(&format!(
            "[limits]\ntimeout = \"30s\"\nmemory = 67108864\n\n\
             [objects.data]\ntype = \"memory\"\n\n\
             [objects.other]\ntype = \"memory\"\n{extra}"
        ))
        .render();
    app_from(&text, dir, workers).await
}

/// A server on configuration `text`, owning `dir`.
pub async fn app_from(text: &str, dir: tempfile::TempDir, workers: usize) -> App {
    let config = ServerConfig::parse(text).unwrap();
    let state = caisson_server::serve::build_state(config).await.unwrap();
    let mut stop = None;
    if workers > 0 {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(Worker::new(&state.services).run(workers, rx));
        tokio::spawn(caisson_server::scheduler::run(
            state.services.clone(),
            tx.subscribe(),
        ));
        stop = Some(tx);
    }
    let router = caisson_server::api::router(state.clone());
    App {
        state,
        router,
        _dir: dir,
        stop,
    }
}

impl App {
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Body,
        content_type: &str,
    ) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(body).unwrap()).await
    }

    /// Sends `request` as it is, and reads the whole response.
    pub async fn send(
        &self,
        request: Request<Body>,
    ) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let response = self.stream(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes, headers)
    }

    /// Sends `request` and returns the response with its body unread
    /// (a followed log, say).
    pub async fn stream(&self, request: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(request).await.unwrap()
    }

    pub async fn json(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let (status, bytes, _) = self
            .call(method, uri, token, body, "application/json")
            .await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    pub async fn upload(
        &self,
        name: &str,
        bytes: Vec<u8>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, body, _) = self
            .call(
                "POST",
                &format!("/v1/modules?name={name}"),
                token,
                Body::from(bytes),
                "application/wasm",
            )
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Polls a run until a worker has started it.
    pub async fn wait_running(&self, id: &str) {
        for _ in 0..400 {
            let (_, run) = self
                .json("GET", &format!("/v1/runs/{id}"), None, None)
                .await;
            if run["state"] == "running" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {id} never started");
    }

    /// Polls a run until it is final.
    pub async fn wait(&self, id: &str, token: Option<&str>) -> Value {
        for _ in 0..600 {
            let (status, run) = self
                .json("GET", &format!("/v1/runs/{id}"), token, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{run}");
            if !matches!(run["state"].as_str(), Some("queued") | Some("running")) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} did not finish in 30s");
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_validated_stored_and_idempotent() {
    let app = app("", 0).await;
    let (status, module) = app.upload("hello", guest("hello"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    assert_eq!(module["name"], "hello");
    assert_eq!(module["digest"].as_str().unwrap().len(), 64);
    // The same bytes again: 200, same record.
    let (status, again) = app.upload("hello", guest("hello"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["digest"], module["digest"]);
    // Other bytes under the same version: 409.
    let (status, body, _) = app
        .call(
            "POST",
            &format!(
                "/v1/modules?name=hello&version={}",
                module["version"].as_str().unwrap()
            ),
            None,
            Body::from(guest("echo-params")),
            "application/wasm",
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );

    for (bytes, expect) in [
        (b"garbage".to_vec(), "not a WebAssembly binary"),
        (
            wat::parse_str("(module)").unwrap(),
            "core WebAssembly module",
        ),
        (
            guest("hello")[..1000].to_vec(),
            "not a valid task component",
        ),
    ] {
        // Any bytes fit the document's binary body: not a component is a
        // 422, well-formed but unusable.
        let (status, body) = app.upload("bad", bytes, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(expect),
            "{body}"
        );
    }
    let (status, body) = app.upload("Bad%20Name", guest("hello"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, list) = app.json("GET", "/v1/modules", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (status, _) = app.json("GET", "/v1/modules/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_is_cut_off() {
    let app = app_with("max_module_bytes = 4194304", "", 0).await;
    let limit = app.state.services.config.server.max_module_bytes as usize;
    // A streamed body that would be far over the limit: the server stops
    // reading at the limit.
    let chunks = futures::stream::iter(
        (0..(limit / (1 << 20)) + 8)
            .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 1 << 20]))),
    );
    let (status, body, _) = app
        .call(
            "POST",
            "/v1/modules?name=big",
            None,
            Body::from_stream(chunks),
            "application/wasm",
        )
        .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// JSON bodies have their own, smaller cap than module uploads: a tenant
/// cannot make the server buffer `max_module_bytes` of JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_json_body_is_refused_but_a_large_input_fits() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let big = caisson_server::api::MAX_JSON_BODY + (1 << 20);
    let body = format!(r#"{{"module": "hello", "input": "{}"}}"#, "x".repeat(big));
    let (status, body, _) = app
        .call(
            "POST",
            "/v1/runs",
            None,
            Body::from(body),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "too_large", "{body}");

    // The largest input a run may have still fits, base64 and all.
    let input = vec![0xffu8; 16 << 20];
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&input);
    let (status, body) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "hello", "input_base64": encoded})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_queued_executed_and_reported() {
    let app = app("", 2).await;
    app.upload("hello", guest("hello"), None).await;
    let (status, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "hello", "input": "api"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let done = app.wait(&id, None).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["output"], "hello, api");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["attempt_history"][0]["state"], "succeeded");

    // Its log is stored: the task's own line and its stdout.
    let (status, logs) = app
        .json("GET", &format!("/v1/runs/{id}/logs"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = logs["lines"].to_string();
    assert!(text.contains("saying hello to api"), "{text}");
    assert!(text.contains("hello on stdout"), "{text}");

    // A followed log of a finished run replays it and ends.
    let (status, body, headers) = app
        .call(
            "GET",
            &format!("/v1/runs/{id}/logs?follow=true"),
            None,
            Body::empty(),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let sse = String::from_utf8_lossy(&body);
    assert!(
        sse.contains("event: log") && sse.contains("saying hello to api"),
        "{sse}"
    );
    assert!(
        sse.contains("event: end") && sse.contains("succeeded"),
        "{sse}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_runs_log_is_stored_while_it_runs() {
    let app = app("", 1).await;
    app.upload("slow-log", guest("slow-log"), None).await;
    // Line 0 at once, line 1 three seconds later: line 0 must be readable
    // in between, from the worker's periodic write, not only at the end.
    let (status, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "slow-log", "params": {"lines": "2", "interval_ms": "3000"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, logs) = app
            .json("GET", &format!("/v1/runs/{id}/logs"), None, None)
            .await;
        let text = logs["lines"].to_string();
        if text.contains("line 0") {
            assert!(!text.contains("line 1"), "read too late to tell: {text}");
            let (_, now) = app.json("GET", &format!("/v1/runs/{id}"), None, None).await;
            assert_eq!(now["state"], "running", "{now}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "line 0 was never stored while the run ran: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = app.wait(&id, None).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, logs) = app
        .json("GET", &format!("/v1/runs/{id}/logs"), None, None)
        .await;
    let lines: Vec<String> = (logs["lines"].as_array().unwrap().iter())
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let at = |m: &str| lines.iter().position(|l| l == m);
    assert!(
        at("line 0").is_some() && at("line 0") < at("line 1"),
        "every line, once, in order: {lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "line 0").count(),
        1,
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_4xx_with_reasons() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let cases = [
        (
            json!({"module": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown module",
        ),
        (
            json!({"module": "hello", "version": "9.9"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown module",
        ),
        (
            json!({"module": "Not A Name"}),
            StatusCode::BAD_REQUEST,
            "invalid module name",
        ),
        (
            json!({"module": "hello", "timeout": "soon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "timeout",
        ),
        (
            json!({"module": "hello", "memory": 1u64 << 40}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "memory",
        ),
        (
            json!({"module": "hello", "fuel": 1.5}),
            StatusCode::BAD_REQUEST,
            "integer",
        ),
        (
            json!({"module": "hello", "memory": 1}),
            StatusCode::BAD_REQUEST,
            "memory",
        ),
        (
            json!({"module": "hello", "retries": {"max": 1000}}),
            StatusCode::BAD_REQUEST,
            "retries",
        ),
        (
            json!({"module": "hello", "grants": {"objects": ["secret"]}}),
            StatusCode::FORBIDDEN,
            "secret",
        ),
        (
            json!({"module": "hello", "input": "a", "input_base64": "YQ=="}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not both",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = app.json("POST", "/v1/runs", None, Some(body.clone())).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body} -> {answer}");
    }
    // Malformed JSON and unknown fields are the client's mistake too.
    let (status, _, _) = app
        .call(
            "POST",
            "/v1/runs",
            None,
            Body::from("{not json"),
            "application/json",
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    let (status, _) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "hello", "colour": "red"})),
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    let (status, _) = app.json("GET", "/v1/runs/does-not-exist", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.json("GET", "/v1/runs?state=sleeping", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_return_the_first_run() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let body = json!({"module": "hello", "idempotency_key": "nightly-2026-11-24"});
    let (status, first) = app.json("POST", "/v1/runs", None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, second) = app.json("POST", "/v1/runs", None, Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["id"], second["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_with_filters_and_pages() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    app.upload("echo-params", guest("echo-params"), None).await;
    for i in 0..5 {
        let module = if i % 2 == 0 { "hello" } else { "echo-params" };
        let (status, _) = app
            .json("POST", "/v1/runs", None, Some(json!({"module": module})))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, page) = app.json("GET", "/v1/runs?limit=2", None, None).await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    let cursor = page["next"].as_str().unwrap().to_string();
    let (_, page2) = app
        .json(
            "GET",
            &format!("/v1/runs?limit=2&cursor={cursor}"),
            None,
            None,
        )
        .await;
    assert_eq!(page2["runs"].as_array().unwrap().len(), 2);
    assert_ne!(page["runs"][0]["id"], page2["runs"][0]["id"]);
    let (_, page3) = app
        .json(
            "GET",
            &format!(
                "/v1/runs?limit=2&cursor={}",
                page2["next"].as_str().unwrap()
            ),
            None,
            None,
        )
        .await;
    assert_eq!(page3["runs"].as_array().unwrap().len(), 1);
    assert!(page3["next"].is_null());
    let (_, hello) = app
        .json("GET", "/v1/runs?module=hello&state=queued", None, None)
        .await;
    assert_eq!(hello["runs"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_queued_and_running_runs() {
    let app = app("", 1).await;
    app.upload("infinite-loop", guest("infinite-loop"), None)
        .await;
    let (_, running) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "infinite-loop", "timeout": "60s"})),
        )
        .await;
    let running_id = running["id"].as_str().unwrap().to_string();
    app.wait_running(&running_id).await;
    // With the one slot busy, a second run stays queued.
    let (_, queued) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "infinite-loop", "timeout": "60s"})),
        )
        .await;
    let queued_id = queued["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .json("POST", &format!("/v1/runs/{queued_id}/cancel"), None, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["state"], "cancelled");
    let (status, _) = app
        .json("POST", &format!("/v1/runs/{running_id}/cancel"), None, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = app.wait(&running_id, None).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    // Really stopped, not just marked: the attempt ended.
    assert_eq!(done["attempt_history"][0]["state"], "cancelled", "{done}");
}

/// With a heartbeat of an hour, the only way the in-process worker can
/// learn of the cancel within the test's wait is the direct signal the
/// cancel API sends it. The slot it frees takes the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_an_in_process_worker_without_waiting_for_a_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let text = ServerToml::new(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("caisson.db").display()
    ))
    .no_listen()
    .local_modules(&dir.path().join("modules"))
    .server("poll", "\"20ms\"")
    .server("heartbeat", "\"1h\"")
    .server("lease", "\"2h\"")
    .tables("[limits]\ntimeout = \"10m\"\nmemory = 67108864")
    .render();
    let app = app_from(&text, dir, 1).await;
    app.upload("infinite-loop", guest("infinite-loop"), None)
        .await;
    app.upload("hello", guest("hello"), None).await;
    let (_, running) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "infinite-loop"})),
        )
        .await;
    let id = running["id"].as_str().unwrap().to_string();
    app.wait_running(&id).await;
    let (status, _) = app
        .json("POST", &format!("/v1/runs/{id}/cancel"), None, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = app.wait(&id, None).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(done["attempt_history"][0]["state"], "cancelled", "{done}");
    // The one slot is free again.
    let (_, next) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "hello", "input": "again"})),
        )
        .await;
    let next = app.wait(next["id"].as_str().unwrap(), None).await;
    assert_eq!(next["state"], "succeeded", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_retries_record_every_attempt() {
    let app = app("", 2).await;
    app.upload("fail-retryable", guest("fail-retryable"), None)
        .await;
    app.upload("infinite-loop", guest("infinite-loop"), None)
        .await;
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "fail-retryable", "retries": {"max": 2, "backoff": "10ms"}})),
        )
        .await;
    let done = app.wait(run["id"].as_str().unwrap(), None).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"], 3, "{done}");
    let history = done["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    for attempt in history {
        assert_eq!(attempt["state"], "failed");
        assert!(
            attempt["error"]
                .as_str()
                .unwrap()
                .contains("transient failure"),
            "{attempt}"
        );
    }

    // A non-retryable failure is not retried, whatever the policy.
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "fail-retryable", "params": {"retryable": "false"}, "retries": {"max": 3, "backoff": "10ms"}})),
        )
        .await;
    let done = app.wait(run["id"].as_str().unwrap(), None).await;
    assert_eq!(done["attempts"], 1, "{done}");

    // Timeouts: retried only when asked.
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "infinite-loop", "timeout": "200ms", "retries": {"max": 1, "backoff": "10ms", "on_timeout": true}})),
        )
        .await;
    let done = app.wait(run["id"].as_str().unwrap(), None).await;
    assert_eq!(done["state"], "timed_out", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("timeout after 200ms"),
        "{done}"
    );
    assert_eq!(done["attempt_history"][0]["state"], "timed_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_answer() {
    let app = app("", 0).await;
    let (status, body, _) = app
        .call("GET", "/healthz", None, Body::empty(), "text/plain")
        .await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    let (status, _, _) = app
        .call("GET", "/readyz", None, Body::empty(), "text/plain")
        .await;
    assert_eq!(status, StatusCode::OK);
    app.upload("hello", guest("hello"), None).await;
    app.json("POST", "/v1/runs", None, Some(json!({"module": "hello"})))
        .await;
    let (status, body, _) = app
        .call("GET", "/metrics", None, Body::empty(), "text/plain")
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("caisson_queue_depth 1"), "{text}");
    // Labelled by the tenant's name and the module's, never by an id.
    assert!(
        text.contains("caisson_runs_submitted_total{tenant=\"default\",module=\"hello\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "caisson_http_requests_total{method=\"POST\",route=\"/v1/runs\",status=\"201\"} 1"
        ),
        "{text}"
    );
    let (status, spec) = app.json("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/modules",
        "/v1/runs",
        "/v1/runs/batch",
        "/v1/runs/{id}",
        "/v1/runs/{id}/cancel",
        "/v1/runs/{id}/logs",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}

const TENANTS: &str = r#"
[tenants.alpha]
tokens = ["alpha-token"]
objects = ["data"]

[tenants.beta]
tokens = ["beta-token"]
objects = ["other"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_things() {
    let app = app(TENANTS, 0).await;
    let (a, b) = (Some("alpha-token"), Some("beta-token"));
    // No token, or a wrong one: 401.
    let (status, body) = app.json("GET", "/v1/runs", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = app.json("GET", "/v1/runs", Some("guess"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = app.upload("hello", guest("hello"), a).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            a,
            Some(json!({"module": "hello", "grants": {"objects": ["data"]}})),
        )
        .await;
    let id = run["id"].as_str().unwrap();

    // Beta sees none of it...
    let (_, modules) = app.json("GET", "/v1/modules", b, None).await;
    assert_eq!(modules, json!([]));
    let (status, _) = app.json("GET", &format!("/v1/runs/{id}"), b, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, runs) = app.json("GET", "/v1/runs", b, None).await;
    assert_eq!(runs["runs"], json!([]));
    let (status, _) = app
        .json("POST", &format!("/v1/runs/{id}/cancel"), b, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .json("GET", &format!("/v1/runs/{id}/logs"), b, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // ...cannot run alpha's module...
    let (status, _) = app
        .json("POST", "/v1/runs", b, Some(json!({"module": "hello"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // ...nor grant alpha's store, while alpha cannot grant beta's.
    app.upload("hello", guest("hello"), b).await;
    let (status, _) = app
        .json(
            "POST",
            "/v1/runs",
            b,
            Some(json!({"module": "hello", "grants": {"objects": ["data"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .json(
            "POST",
            "/v1/runs",
            a,
            Some(json!({"module": "hello", "grants": {"objects": ["other"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Alpha still sees its run.
    let (status, _) = app.json("GET", &format!("/v1/runs/{id}"), a, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_manages_tenants_and_revocation_is_immediate() {
    let app = app_with("admin_token = \"root-token\"", TENANTS, 0).await;
    let admin = Some("root-token");
    let body = json!({"name": "gamma", "objects": ["data"]});
    // Only the admin may.
    let (status, _) = app
        .json(
            "POST",
            "/v1/tenants",
            Some("alpha-token"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = app
        .json(
            "POST",
            "/v1/tenants",
            admin,
            Some(json!({"name": "delta", "objects": ["not-configured"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, _) = app.json("POST", "/v1/tenants", admin, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, tenants) = app.json("GET", "/v1/tenants", admin, None).await;
    assert!(
        tenants
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "gamma" && t["objects"] == json!(["data"]))
    );

    let (status, minted) = app
        .json("POST", "/v1/tenants/gamma/tokens", admin, None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = minted["token"].as_str().unwrap().to_string();
    let gamma = Some(token.as_str());
    app.upload("hello", guest("hello"), gamma).await;
    let (status, run) = app
        .json(
            "POST",
            "/v1/runs",
            gamma,
            Some(json!({"module": "hello", "grants": {"objects": ["data"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    // Gamma's runs are gamma's alone.
    let (status, _) = app
        .json(
            "GET",
            &format!("/v1/runs/{}", run["id"].as_str().unwrap()),
            Some("alpha-token"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = app
        .json(
            "DELETE",
            &format!("/v1/tokens/{}", minted["id"].as_str().unwrap()),
            admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.json("GET", "/v1/runs", gamma, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_hands_unfinished_runs_back() {
    let mut app = app("", 1).await;
    app.upload("infinite-loop", guest("infinite-loop"), None)
        .await;
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "infinite-loop", "timeout": "60s"})),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    app.wait_running(&id).await;
    // SIGTERM's effect: stop claiming, wait `shutdown_grace` (1s here),
    // then interrupt the run and hand it back, uncounted.
    app.stop.take().unwrap().send(true).unwrap();
    let mut handed_back = None;
    for _ in 0..200 {
        let (_, run) = app.json("GET", &format!("/v1/runs/{id}"), None, None).await;
        if run["state"] == "queued" {
            handed_back = Some(run);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let run = handed_back.expect("the run was not handed back to the queue");
    assert_eq!(run["attempts"], 0, "{run}");
    let (_, logs) = app
        .json("GET", &format!("/v1/runs/{id}/logs"), None, None)
        .await;
    assert!(logs["lines"].to_string().contains("handed back"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_outputs_live_in_the_artifact_store() {
    large_outputs_live_in(&app("", 1).await).await;
}

/// The module store on HDFS: modules are uploaded to it and run from it,
/// and large outputs are kept in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_and_outputs_on_hdfs() {
    let Some(hdfs) = caisson_tests::hdfs_env() else {
        return;
    };
    let prefix = caisson_tests::unique_prefix("modules");
    let app = app_with(
        &format!(
            "modules = {{ type = \"hdfs\", url = \"{}\", prefix = \"{prefix}\", user = \"{}\" }}",
            hdfs.url,
            caisson_tests::HDFS_USER
        ),
        "",
        1,
    )
    .await;
    large_outputs_live_in(&app).await;
    use caisson_tests::RemoteStore;
    let stored = caisson_tests::keys_under(hdfs.client().as_ref(), &prefix).await;
    assert!(
        stored.iter().any(|k| k.ends_with(".wasm")),
        "no module in HDFS: {stored:?}"
    );
    assert_eq!(
        stored.iter().filter(|k| k.starts_with("outputs/")).count(),
        1,
        "{stored:?}"
    );
}

/// Runs `huge-output` on `app` with a 3 MB and a 10-byte output: the large
/// one is kept in the module store and served from there.
async fn large_outputs_live_in(app: &App) {
    app.upload("huge-output", guest("huge-output"), None).await;
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "huge-output", "input": "3000000"})),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let done = app.wait(&id, None).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["output"].is_null(), "a 3 MB output was inlined");
    assert_eq!(done["output_url"], format!("/v1/runs/{id}/output"));
    let (status, body, _) = app
        .call(
            "GET",
            &format!("/v1/runs/{id}/output"),
            None,
            Body::empty(),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 3_000_000);
    assert!(body.iter().all(|&b| b == b'x'));

    // A small output is inline, and served by the same endpoint.
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "huge-output", "input": "10"})),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let done = app.wait(&id, None).await;
    assert_eq!(done["output"], "xxxxxxxxxx");
    assert!(done["output_url"].is_null());
    let (_, body, _) = app
        .call(
            "GET",
            &format!("/v1/runs/{id}/output"),
            None,
            Body::empty(),
            "application/json",
        )
        .await;
    assert_eq!(body, b"xxxxxxxxxx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lists_carry_no_inputs_or_outputs() {
    let app = app("", 1).await;
    app.upload("hello", guest("hello"), None).await;
    let marker = "list-input-marker-5e1c";
    let (status, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "hello", "input": marker})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let done = app.wait(&id, None).await;
    assert_eq!(done["output"], format!("hello, {marker}"), "{done}");

    // The list: no input, no output, but where the output is.
    let (status, bytes, _) = app
        .call(
            "GET",
            "/v1/runs?limit=500",
            None,
            Body::empty(),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        !text.contains(marker),
        "a list carried a run's data: {text}"
    );
    let page: Value = serde_json::from_str(&text).unwrap();
    let listed = &page["runs"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["state"], "succeeded");
    assert!(listed["output"].is_null() && listed["output_base64"].is_null());
    let url = listed["output_url"].as_str().unwrap();
    assert_eq!(url, format!("/v1/runs/{id}/output"));
    let (status, output, _) = app
        .call("GET", url, None, Body::empty(), "application/json")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(output, format!("hello, {marker}").into_bytes());
    // A run read alone still carries its output inline.
    let (_, one) = app.json("GET", &format!("/v1/runs/{id}"), None, None).await;
    assert_eq!(one["output"], format!("hello, {marker}"));
    assert!(one["output_url"].is_null(), "{one}");
}

/// `POST /v1/runs/batch`: every run queued in order, an idempotency key
/// naming an earlier entry of the same batch, and a batch with one bad run
/// (an unknown module, one run past the quota, too many runs) queuing
/// nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_queues_every_run_or_none() {
    const TOKEN: &str = "tok-batch-0123456789abcdef";
    let app = app_with(
        "admin_token = \"adm-batch-0123456789abcdef\"",
        &format!("[tenants.batch]\ntokens = [\"{TOKEN}\"]\nmax_queued_runs = 5\n"),
        0,
    )
    .await;
    let (status, body) = app.upload("hello", guest("hello"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let queued = || async {
        let (status, page) = app
            .json("GET", "/v1/runs?state=queued&limit=100", Some(TOKEN), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids: Vec<String> = page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["id"].as_str().unwrap().to_string())
            .collect();
        ids
    };
    let batch = |runs: Value| Some(json!({ "runs": runs }));

    let (status, body) = app
        .json(
            "POST",
            "/v1/runs/batch",
            Some(TOKEN),
            batch(json!([
                {"module": "hello", "input": "a", "idempotency_key": "k1"},
                {"module": "hello", "input": "b"},
                {"module": "hello", "input": "c", "idempotency_key": "k1"}
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let runs = body["runs"].as_array().unwrap();
    let created: Vec<bool> = runs
        .iter()
        .map(|r| r["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, [true, true, false], "{body}");
    assert_eq!(runs[2]["id"], runs[0]["id"], "{body}");
    let mut expected: Vec<String> = runs[..2]
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    let mut now = queued().await;
    now.sort();
    assert_eq!(now, expected);
    for (i, key) in [(0, json!("k1")), (1, Value::Null)] {
        let id = runs[i]["id"].as_str().unwrap();
        let (_, run) = app
            .json("GET", &format!("/v1/runs/{id}"), Some(TOKEN), None)
            .await;
        assert_eq!(run["state"], "queued", "{run}");
        assert_eq!(run["idempotency_key"], key, "{run}");
    }

    // Only a repeated key: nothing new, a 200.
    let (status, body) = app
        .json(
            "POST",
            "/v1/runs/batch",
            Some(TOKEN),
            batch(json!([{"module": "hello", "idempotency_key": "k1"}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runs"][0]["id"], runs[0]["id"], "{body}");

    // One unknown module: a 422 naming its place, and nothing queued.
    let (status, body) = app
        .json(
            "POST",
            "/v1/runs/batch",
            Some(TOKEN),
            batch(json!([{"module": "hello"}, {"module": "no-such-module"}])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("runs[1]: "), "{message}");
    assert_eq!(queued().await.len(), 2);

    // Two queued, a quota of 5: four more are refused whole, although the
    // first three would fit.
    let four =
        json!([{"module": "hello"}, {"module": "hello"}, {"module": "hello"}, {"module": "hello"}]);
    let (status, body) = app
        .json("POST", "/v1/runs/batch", Some(TOKEN), batch(four))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(queued().await.len(), 2);

    // No runs, and more than 1,000, are outside the schema.
    for n in [0, 1001] {
        let runs: Vec<Value> = (0..n).map(|_| json!({"module": "hello"})).collect();
        let (status, body) = app
            .json("POST", "/v1/runs/batch", Some(TOKEN), batch(json!(runs)))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{n}: {body}");
        assert_eq!(queued().await.len(), 2);
    }

    // Three more fit exactly.
    let three = json!([{"module": "hello"}, {"module": "hello"}, {"module": "hello"}]);
    let (status, body) = app
        .json("POST", "/v1/runs/batch", Some(TOKEN), batch(three))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(queued().await.len(), 5);
}

/// A backlog on a worker whose memory holds two runs: its slots finish
/// each run and claim the next in one commit (`Db::finish_and_claim`),
/// releasing the finished run's memory there. Every run's memory comes
/// back (a leak would stall the queue once two had leaked), and no more
/// runs run at once than the memory holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_gives_back_each_runs_memory_and_never_over_admits() {
    // Runs take 64 MiB each (`[limits] memory`); the worker has 128 MiB
    // and three slots, so memory, not slots, is the bound.
    let app = app_with("worker_memory = 134217728", "", 3).await;
    app.upload("slow-log", guest("slow-log"), None).await;
    let run = json!({"module": "slow-log", "params": {"lines": "2", "interval_ms": "40"}});
    let (status, body) = app
        .json(
            "POST",
            "/v1/runs/batch",
            None,
            Some(json!({"runs": vec![run; 12]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut spans = Vec::new();
    for queued in body["runs"].as_array().unwrap() {
        let done = app.wait(queued["id"].as_str().unwrap(), None).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let at = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(done[field].as_str().unwrap())
                .unwrap()
                .timestamp_micros()
        };
        spans.push((at("started_at"), at("finished_at")));
    }
    // The most runs running at any one start.
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 2, "{most} runs of 64 MiB ran at once in 128 MiB");
}

/// Runs submitted in a batch run like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_runs_are_executed() {
    let app = app("", 2).await;
    app.upload("hello", guest("hello"), None).await;
    let (status, body) = app
        .json(
            "POST",
            "/v1/runs/batch",
            None,
            Some(json!({"runs": [{"module": "hello", "input": "one"}, {"module": "hello", "input": "two"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (run, input) in body["runs"].as_array().unwrap().iter().zip(["one", "two"]) {
        let done = app.wait(run["id"].as_str().unwrap(), None).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["output"], format!("hello, {input}"));
    }
}
