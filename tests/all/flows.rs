//! Cron schedules and DAG workflows through the API. Time is injected:
//! the tests call the scheduler's `tick` with the "now" they want.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use caisson_server::scheduler::tick;
use caisson_tests::guest;

use crate::api::app;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

async fn runs_of_schedule(app: &crate::api::App, schedule_id: &str) -> Vec<Value> {
    let (_, page) = app.json("GET", "/v1/runs?limit=500", None, None).await;
    let mut runs: Vec<Value> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["schedule_id"] == schedule_id)
        .cloned()
        .collect();
    runs.sort_by_key(|r| r["logical_date"].as_str().unwrap_or_default().to_string());
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_catch_up_pause_and_backfill() {
    let app = app("", 0).await;
    app.upload("echo-params", guest("echo-params"), None).await;
    let (status, bad) = app
        .json(
            "POST",
            "/v1/schedules",
            None,
            Some(json!({"name": "x", "cron": "61 * * * *", "run": {"module": "echo-params"}})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    let (status, bad) = app
        .json("POST", "/v1/schedules", None, Some(json!({"name": "x", "cron": "@hourly", "timezone": "Mars/Olympus", "run": {"module": "echo-params"}})))
        .await;
    assert_eq!(status, 422, "{bad}");
    let (status, bad) = app
        .json(
            "POST",
            "/v1/schedules",
            None,
            Some(json!({"name": "x", "cron": "@hourly", "run": {"module": "nope"}})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");

    let (status, hourly) = app
        .json(
            "POST",
            "/v1/schedules",
            None,
            Some(json!({
                "name": "hourly",
                "cron": "0 * * * *",
                "timezone": "Europe/Berlin",
                "catch_up": "all",
                "run": {"module": "echo-params", "params": {"day": "{{ds}}"}}
            })),
        )
        .await;
    assert_eq!(status, 201, "{hourly}");
    let id = hourly["id"].as_str().unwrap().to_string();
    let first = hourly["next_fire_at"].as_i64().unwrap();
    let first_time = Utc.timestamp_millis_opt(first).unwrap();

    // Nothing is due before the first fire time.
    tick(
        &app.state.services,
        first_time - chrono::TimeDelta::seconds(1),
    )
    .await;
    assert!(runs_of_schedule(&app, &id).await.is_empty());
    // Three hours of downtime: with catch_up = all, every missed hour runs.
    tick(
        &app.state.services,
        first_time + chrono::TimeDelta::minutes(150),
    )
    .await;
    let runs = runs_of_schedule(&app, &id).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(runs[0]["params"]["logical_date"], first_time.to_rfc3339());
    let berlin_day = first_time
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(runs[0]["params"]["day"], berlin_day);
    // A second tick at the same time starts nothing more.
    tick(
        &app.state.services,
        first_time + chrono::TimeDelta::minutes(150),
    )
    .await;
    assert_eq!(runs_of_schedule(&app, &id).await.len(), 3);

    // Pause: nothing fires; resume: the paused time is not caught up.
    let (status, paused) = app
        .json("POST", "/v1/schedules/hourly/pause", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(paused["paused"], true);
    tick(
        &app.state.services,
        first_time + chrono::TimeDelta::hours(10),
    )
    .await;
    assert_eq!(runs_of_schedule(&app, &id).await.len(), 3);
    let (_, resumed) = app
        .json("POST", "/v1/schedules/hourly/resume", None, None)
        .await;
    assert_eq!(resumed["paused"], false);
    assert!(resumed["next_fire_at"].as_i64().unwrap() > Utc::now().timestamp_millis());

    // Backfill a day range: one run per hour; the times that already ran
    // are not repeated.
    let (status, backfill) = app
        .json(
            "POST",
            "/v1/schedules/hourly/backfill",
            None,
            Some(json!({"from": (first_time - chrono::TimeDelta::hours(2)).to_rfc3339(), "to": (first_time + chrono::TimeDelta::hours(1)).to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 201, "{backfill}");
    assert_eq!(backfill["runs"].as_array().unwrap().len(), 3);
    // (from, to] holds first-1h, first, first+1h; two of those ran already.
    assert_eq!(runs_of_schedule(&app, &id).await.len(), 4);

    // A skip schedule runs only the latest missed time.
    let (_, skip) = app
        .json("POST", "/v1/schedules", None, Some(json!({"name": "skipper", "cron": "*/10 * * * *", "run": {"module": "echo-params"}})))
        .await;
    let skip_first = Utc
        .timestamp_millis_opt(skip["next_fire_at"].as_i64().unwrap())
        .unwrap();
    tick(
        &app.state.services,
        skip_first + chrono::TimeDelta::minutes(55),
    )
    .await;
    let runs = runs_of_schedule(&app, skip["id"].as_str().unwrap()).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0]["params"]["logical_date"],
        (skip_first + chrono::TimeDelta::minutes(50)).to_rfc3339()
    );

    // A module in use by a schedule cannot be deleted.
    let (status, body) = app
        .json("DELETE", "/v1/modules/echo-params", None, None)
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = app.json("DELETE", "/v1/schedules/hourly", None, None).await;
    assert_eq!(status, 204);
    let _ = at("2026-01-01T00:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_validated() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let step = |name: &str, deps: &[&str]| json!({"name": name, "depends_on": deps, "run": {"module": "hello"}});
    let cases = [
        (
            json!({"name": "w", "steps": [step("a", &["b"]), step("b", &["a"])]}),
            "cycle",
        ),
        (
            json!({"name": "w", "steps": [step("a", &["ghost"])]}),
            "ghost",
        ),
        (
            json!({"name": "w", "steps": [{"name": "a", "run": {"module": "missing"}}]}),
            "unknown module",
        ),
        (json!({"name": "w", "steps": []}), "step"),
    ];
    for (body, needle) in cases {
        let (status, answer) = app
            .json("POST", "/v1/workflows", None, Some(body.clone()))
            .await;
        // No steps breaks the schema (`minItems: 1`): a 400. The rest are
        // well-formed but need the whole graph, or the store, to judge.
        let expected = if body["steps"] == json!([]) { 400 } else { 422 };
        assert_eq!(status, expected, "{body} -> {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{body} -> {answer}"
        );
    }
}

async fn wait_workflow(app: &crate::api::App, id: &str) -> Value {
    for _ in 0..600 {
        let (_, run) = app
            .json("GET", &format!("/v1/workflow-runs/{id}"), None, None)
            .await;
        if run["state"] != "running" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("workflow run {id} did not finish");
}

pub(crate) fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_passes_outputs_along_and_fails_downstream() {
    let app = app("", 2).await;
    app.upload("hello", guest("hello"), None).await;
    app.upload("fail-retryable", guest("fail-retryable"), None)
        .await;
    // a -> b -> c, and d after a; each hello prefixes "hello, " to its input.
    let (status, body) = app
        .json(
            "POST",
            "/v1/workflows",
            None,
            Some(json!({"name": "chain", "steps": [
                {"name": "a", "run": {"module": "hello", "input": "start"}},
                {"name": "b", "depends_on": ["a"], "run": {"module": "hello"}},
                {"name": "c", "depends_on": ["b"], "run": {"module": "hello"}},
                {"name": "d", "depends_on": ["a", "c"], "run": {"module": "hello"}}
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .json("POST", "/v1/workflows/chain/runs", None, None)
        .await;
    assert_eq!(status, 201, "{started}");
    let done = wait_workflow(&app, started["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let output = |name: &str| {
        let id = step(&done, name)["run_id"].as_str().unwrap().to_string();
        let app = &app;
        async move {
            app.json("GET", &format!("/v1/runs/{id}"), None, None)
                .await
                .1["output"]
                .clone()
        }
    };
    assert_eq!(output("a").await, "hello, start");
    assert_eq!(output("b").await, "hello, hello, start");
    assert_eq!(output("c").await, "hello, hello, hello, start");
    // Several dependencies: a JSON object of their outputs.
    let d: String = output("d").await.as_str().unwrap().to_string();
    let inner: Value = serde_json::from_str(d.strip_prefix("hello, ").unwrap()).unwrap();
    assert_eq!(inner["a"], "hello, start");

    // A failing step skips its dependants unless it may fail.
    app.json(
        "POST",
        "/v1/workflows",
        None,
        Some(json!({"name": "breaks", "steps": [
            {"name": "bad", "run": {"module": "fail-retryable", "params": {"retryable": "false"}}},
            {"name": "after", "depends_on": ["bad"], "run": {"module": "hello"}},
            {"name": "later", "depends_on": ["after"], "run": {"module": "hello"}},
            {"name": "tolerated", "allow_failure": true, "run": {"module": "fail-retryable", "params": {"retryable": "false"}}},
            {"name": "anyway", "depends_on": ["tolerated"], "run": {"module": "hello"}}
        ]})),
    )
    .await;
    let (_, started) = app
        .json("POST", "/v1/workflows/breaks/runs", None, None)
        .await;
    let done = wait_workflow(&app, started["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(step(&done, "bad")["state"], "failed");
    assert_eq!(step(&done, "after")["state"], "skipped");
    assert_eq!(step(&done, "later")["state"], "skipped");
    assert!(
        step(&done, "after")["run_id"].is_null(),
        "a skipped step must not run"
    );
    assert_eq!(step(&done, "tolerated")["state"], "failed");
    assert_eq!(step(&done, "anyway")["state"], "succeeded");
    let (_, view) = app.json("GET", "/v1/workflows/breaks", None, None).await;
    assert_eq!(view["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_definitions_are_read_once_and_a_changed_workflow_is_followed() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let create = |steps: Value| {
        let app = &app;
        async move {
            let (status, body) = app
                .json(
                    "POST",
                    "/v1/workflows",
                    None,
                    Some(json!({"name": "flow", "steps": steps})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    };
    create(json!([
        {"name": "a", "run": {"module": "hello", "input": "one"}},
        {"name": "b", "depends_on": ["a"], "run": {"module": "hello"}}
    ]))
    .await;
    let (_, first) = app
        .json("POST", "/v1/workflows/flow/runs", None, None)
        .await;
    let first = first["id"].as_str().unwrap().to_string();
    let defs = &app.state.services.workflow_defs;
    assert_eq!(defs.loads(), 1, "starting it read its definition");
    // No worker yet: ticks find nothing to do, and read nothing again.
    for _ in 0..5 {
        tick(&app.state.services, Utc::now()).await;
    }
    assert_eq!(defs.loads(), 1, "a tick read the definition again");
    assert_eq!(defs.len(), 1);

    // The workflow changes while its first run is open.
    let (status, _) = app.json("DELETE", "/v1/workflows/flow", None, None).await;
    assert_eq!(status, 204);
    create(json!([
        {"name": "x", "run": {"module": "hello", "input": "two"}},
        {"name": "y", "depends_on": ["x"], "run": {"module": "hello"}},
        {"name": "z", "depends_on": ["y"], "run": {"module": "hello"}}
    ]))
    .await;
    let (_, second) = app
        .json("POST", "/v1/workflows/flow/runs", None, None)
        .await;
    let second = second["id"].as_str().unwrap().to_string();
    assert_eq!(defs.loads(), 2);

    // Workers, and the scheduler's ticks, move both along: each with the
    // definition it started with.
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(caisson_server::worker::Worker::new(&app.state.services).run(2, rx));
    let mut done = [Value::Null, Value::Null];
    for _ in 0..600 {
        tick(&app.state.services, Utc::now()).await;
        for (slot, id) in done.iter_mut().zip([&first, &second]) {
            let (_, run) = app
                .json("GET", &format!("/v1/workflow-runs/{id}"), None, None)
                .await;
            *slot = run;
        }
        if done.iter().all(|r| r["state"] != "running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tx.send(true);
    let names = |run: &Value| -> Vec<String> {
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}={}",
                    s["name"].as_str().unwrap(),
                    s["state"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(done[0]["state"], "succeeded", "{}", done[0]);
    assert_eq!(names(&done[0]), ["a=succeeded", "b=succeeded"]);
    assert_eq!(done[1]["state"], "succeeded", "{}", done[1]);
    assert_eq!(
        names(&done[1]),
        ["x=succeeded", "y=succeeded", "z=succeeded"]
    );
    assert_eq!(defs.loads(), 2, "each definition was read once");
    // Finished runs are forgotten at the next tick.
    tick(&app.state.services, Utc::now()).await;
    assert!(defs.is_empty());
}

/// Creates workflow `name` as a chain of `n` `hello` steps, `s0` taking
/// "start", and starts a run of it. Returns the run's id.
async fn start_chain(app: &crate::api::App, name: &str, n: usize) -> String {
    let steps: Vec<Value> = (0..n)
        .map(|i| {
            if i == 0 {
                json!({"name": "s0", "run": {"module": "hello", "input": "start"}})
            } else {
                json!({"name": format!("s{i}"), "depends_on": [format!("s{}", i - 1)],
                       "run": {"module": "hello"}})
            }
        })
        .collect();
    let (status, body) = app
        .json(
            "POST",
            "/v1/workflows",
            None,
            Some(json!({"name": name, "steps": steps})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .json("POST", &format!("/v1/workflows/{name}/runs"), None, None)
        .await;
    assert_eq!(status, 201, "{started}");
    started["id"].as_str().unwrap().to_string()
}

async fn step_output(app: &crate::api::App, run: &Value, name: &str) -> Value {
    let id = step(run, name)["run_id"].as_str().unwrap().to_string();
    app.json("GET", &format!("/v1/runs/{id}"), None, None)
        .await
        .1["output"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_advances_without_the_periodic_pass() {
    // No scheduler runs here and no test calls `tick`: only the worker
    // that ends each step's run moves the workflow on.
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let id = start_chain(&app, "chain", 30).await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(caisson_server::worker::Worker::new(&app.state.services).run(2, rx));
    let done = wait_workflow(&app, &id).await;
    let _ = tx.send(true);
    assert_eq!(done["state"], "succeeded", "{done}");
    let states: Vec<&str> = (done["steps"].as_array().unwrap().iter())
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded"; 30]);
    // Each step got the one before's output: 30 greetings around "start".
    let expected = format!("{}start", "hello, ".repeat(30));
    assert_eq!(step_output(&app, &done, "s29").await, expected.as_str());
    assert_eq!(
        app.state.services.workflow_defs.loads(),
        1,
        "the definition was read once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_past_one_batch_starts_every_step_and_the_join_gets_every_output() {
    // More successors than one submit commit takes (100): the worker that
    // ends `root` queues them in several, and the join waits for all.
    const WIDE: usize = 130;
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let mut steps = vec![json!({"name": "root", "run": {"module": "hello", "input": "start"}})];
    let middle: Vec<String> = (0..WIDE).map(|i| format!("m{i:03}")).collect();
    for name in &middle {
        steps.push(json!({"name": name, "depends_on": ["root"], "run": {"module": "hello"}}));
    }
    steps.push(json!({"name": "join", "depends_on": middle, "run": {"module": "hello"}}));
    let (status, body) = app
        .json(
            "POST",
            "/v1/workflows",
            None,
            Some(json!({"name": "wide", "steps": steps})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .json("POST", "/v1/workflows/wide/runs", None, None)
        .await;
    assert_eq!(status, 201, "{started}");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(caisson_server::worker::Worker::new(&app.state.services).run(2, rx));
    let done = wait_workflow(&app, started["id"].as_str().unwrap()).await;
    let _ = tx.send(true);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        (done["steps"].as_array().unwrap().iter()).all(|s| s["state"] == "succeeded"),
        "{done}"
    );
    // The join's input is every middle step's output, each root's output
    // greeted once more.
    let joined = step_output(&app, &done, "join").await;
    let inner: Value =
        serde_json::from_str(joined.as_str().unwrap().strip_prefix("hello, ").unwrap()).unwrap();
    let inner = inner.as_object().unwrap();
    assert_eq!(inner.len(), WIDE, "{joined}");
    assert!(
        inner.values().all(|v| v == "hello, hello, start"),
        "{joined}"
    );
    // One run per step (this app has run nothing else): none was queued
    // twice.
    let (_, runs) = app.json("GET", "/v1/runs?limit=500", None, None).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), WIDE + 2, "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_ended_by_a_process_that_died_is_moved_on_by_the_pass() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let id = start_chain(&app, "pair", 2).await;
    // A worker claims s0 and records its end, then dies before it starts
    // s1: the step has ended in the store, and nothing else happened.
    let db = &app.state.services.db;
    let now = caisson_server::model::now_ms();
    let claim = db
        .claim_run("doomed", Duration::from_secs(30), now, i64::MAX)
        .await
        .unwrap()
        .expect("s0 is queued");
    let done = caisson_server::store::AttemptOutcome::Succeeded {
        output: b"from the dead".to_vec(),
        output_key: None,
    };
    assert!(
        db.finish_attempt(&claim.run.id, "doomed", claim.attempt, &done, now)
            .await
            .unwrap()
    );
    let (_, view) = app
        .json("GET", &format!("/v1/workflow-runs/{id}"), None, None)
        .await;
    assert_eq!(step(&view, "s0")["state"], "succeeded", "{view}");
    assert_eq!(step(&view, "s1")["state"], "pending", "{view}");
    // The periodic pass (recovery) starts s1 with s0's output, and a new
    // worker finishes the run.
    tick(&app.state.services, Utc::now()).await;
    let (_, view) = app
        .json("GET", &format!("/v1/workflow-runs/{id}"), None, None)
        .await;
    assert_eq!(step(&view, "s1")["state"], "running", "{view}");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(caisson_server::worker::Worker::new(&app.state.services).run(1, rx));
    let done = wait_workflow(&app, &id).await;
    let _ = tx.send(true);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(step_output(&app, &done, "s1").await, "hello, from the dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_get_answers_when_the_run_ends_or_its_wait_is_over() {
    let app = app("", 0).await;
    app.upload("hello", guest("hello"), None).await;
    let (status, run) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({"module": "hello", "input": "you"})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    for bad in ["1m", "30", "-1s", "1.5s", "1234567890s"] {
        let (status, body) = app
            .json("GET", &format!("/v1/runs/{id}?wait={bad}"), None, None)
            .await;
        assert_eq!(status, 400, "wait={bad}: {body}");
    }

    // No worker: the wait runs out, and the run is as it was.
    let asked = std::time::Instant::now();
    let (status, run) = app
        .json("GET", &format!("/v1/runs/{id}?wait=300ms"), None, None)
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["state"], "queued");
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "answered early"
    );

    // A workflow run waits the same way.
    let flow = start_chain(&app, "pair", 2).await;
    let (_, view) = app
        .json(
            "GET",
            &format!("/v1/workflow-runs/{flow}?wait=200ms"),
            None,
            None,
        )
        .await;
    assert_eq!(view["state"], "running", "{view}");

    // A worker starts while both GETs wait: each answers once its run
    // ended, long before its 30 s.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let worker = caisson_server::worker::Worker::new(&app.state.services);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker.run(2, rx).await;
    });
    let asked = std::time::Instant::now();
    let run_uri = format!("/v1/runs/{id}?wait=30s");
    let flow_uri = format!("/v1/workflow-runs/{flow}?wait=30s");
    let ((_, run), (_, view)) = tokio::join!(
        app.json("GET", &run_uri, None, None),
        app.json("GET", &flow_uri, None, None),
    );
    let waited = asked.elapsed();
    let _ = tx.send(true);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["output"], "hello, you");
    assert_eq!(view["state"], "succeeded", "{view}");
    assert!(
        waited >= Duration::from_millis(300),
        "answered before the worker ran"
    );
    assert!(
        waited < Duration::from_secs(20),
        "waited {waited:?}: the end was missed"
    );

    // A final run answers at once, whatever the wait.
    let asked = std::time::Instant::now();
    let (_, run) = app
        .json("GET", &format!("/v1/runs/{id}?wait=30s"), None, None)
        .await;
    assert_eq!(run["state"], "succeeded");
    assert!(asked.elapsed() < Duration::from_secs(20));
}
