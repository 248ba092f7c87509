//! The `map` workflow step against real object stores: a fan-out over a
//! prefix in size-balanced splits, each a run, whose outputs the next step
//! gets in split order.

use std::time::Duration;

use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::{Value, json};

use caisson_tests::{RemoteStore, guest, hdfs_env, key, s3_env, unique_prefix};

use crate::api::{App, app, app_with};
use crate::flows::step;

/// Seeds `n` small text objects under `{prefix}/input/`, plus one beside
/// it that no map may read.
async fn seed(remote: &impl RemoteStore, prefix: &str, n: usize) {
    let client = remote.client();
    let uploads = (0..n).map(|i| {
        let body = format!(
            "alpha beta {}\ngamma {} alpha\n",
            if i % 3 == 0 { "delta" } else { "alpha" },
            "x".repeat(i % 17)
        );
        let client = client.clone();
        let path = key(&format!("{prefix}/input/part-{i:04}.txt"));
        async move { client.put(&path, PutPayload::from(body.into_bytes())).await }
    });
    futures::future::try_join_all(uploads).await.unwrap();
    client
        .put(
            &key(&format!("{prefix}/elsewhere.txt")),
            PutPayload::from_static(b"omega omega"),
        )
        .await
        .unwrap();
}

/// `keys` (JSON strings) are the `n` seeded input keys, each once.
fn assert_each_seeded_key_once(mut keys: Vec<Value>, n: usize) {
    keys.sort_by_key(|k| k.as_str().unwrap().to_string());
    let expected: Vec<Value> = (0..n)
        .map(|i| json!(format!("input/part-{i:04}.txt")))
        .collect();
    assert_eq!(keys, expected);
}

/// A server whose store `raw` holds `n` seeded objects on S3, with
/// `modules` uploaded; `None` without S3.
async fn seeded_s3_app(name: &str, n: usize, modules: &[&str]) -> Option<App> {
    let s3 = s3_env()?;
    let prefix = unique_prefix(name);
    seed(&s3, &prefix, n).await;
    let app = app(&s3.toml_table("raw", &prefix), 2).await;
    for module in modules {
        app.upload(module, guest(module), None).await;
    }
    Some(app)
}

async fn create(app: &App, body: Value) {
    let (status, created) = app.json("POST", "/v1/workflows", None, Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

async fn start(app: &App, name: &str) -> String {
    let (status, run) = app
        .json("POST", &format!("/v1/workflows/{name}/runs"), None, None)
        .await;
    assert_eq!(status, 201, "{run}");
    run["id"].as_str().unwrap().to_string()
}

async fn wait(app: &App, id: &str) -> Value {
    for _ in 0..40 {
        let (_, run) = app
            .json(
                "GET",
                &format!("/v1/workflow-runs/{id}?wait=5s"),
                None,
                None,
            )
            .await;
        if run["state"] != "running" {
            return run;
        }
    }
    panic!("workflow run {id} did not finish");
}

async fn run_of(app: &App, id: &str) -> Value {
    app.json("GET", &format!("/v1/runs/{id}"), None, None)
        .await
        .1
}

async fn output_of(app: &App, id: &str) -> Value {
    let run = run_of(app, id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    serde_json::from_str(run["output"].as_str().unwrap()).unwrap()
}

/// The input of step `join` (a `hello` run, which says hello to its
/// input): the map step's outputs, as JSON.
async fn joined(app: &App, done: &Value) -> Value {
    let join = step(done, "join")["run_id"].as_str().unwrap().to_string();
    let said = run_of(app, &join).await["output"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_str(said.strip_prefix("hello, ").unwrap()).unwrap()
}

async fn wait_run(app: &App, id: &str) -> Value {
    app.json("GET", &format!("/v1/runs/{id}?wait=30s"), None, None)
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_and_reduce_word_count_equals_one_run_on_s3() {
    let Some(s3) = s3_env() else { return };
    map_reduce_word_count(&s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_and_reduce_word_count_equals_one_run_on_hdfs() {
    let Some(hdfs) = hdfs_env() else { return };
    map_reduce_word_count(&hdfs).await;
}

/// 300 objects counted by one run, and by a map step of 2 KB splits (two
/// at a time) whose reduce merges the splits' counts: the same summary.
async fn map_reduce_word_count(remote: &impl RemoteStore) {
    let prefix = unique_prefix("map-word-count");
    seed(remote, &prefix, 300).await;
    let app = app(&remote.toml_table("raw", &prefix), 2).await;
    app.upload("word-count", guest("word-count"), None).await;

    let (status, single) = app
        .json(
            "POST",
            "/v1/runs",
            None,
            Some(json!({
                "module": "word-count",
                "params": {"store": "raw", "prefix": "input", "output": "single.json"},
                "grants": {"objects": ["raw"]},
            })),
        )
        .await;
    assert_eq!(status, 201, "{single}");
    let single_id = single["id"].as_str().unwrap().to_string();

    create(
        &app,
        json!({"name": "wc", "steps": [
            {"name": "count",
             "map": {"store": "raw", "prefix": "input/", "max_split_bytes": 2048, "parallelism": 2},
             "run": {"module": "word-count", "params": {"mode": "map"}, "grants": {"objects": ["raw"]}}},
            {"name": "total", "depends_on": ["count"],
             "run": {"module": "word-count",
                     "params": {"mode": "reduce", "store": "raw", "output": "reduced.json"},
                     "grants": {"objects": ["raw"]}}}
        ]}),
    )
    .await;
    let id = start(&app, "wc").await;
    let done = wait(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    let splits = step(&done, "count")["splits"].as_array().unwrap().clone();
    assert!(splits.len() >= 4, "{splits:?}");
    let objects: i64 = splits.iter().map(|s| s["objects"].as_i64().unwrap()).sum();
    assert_eq!(
        objects, 300,
        "every object in one split, none outside the prefix"
    );
    for (i, split) in splits.iter().enumerate() {
        assert_eq!(split["index"], i);
        assert_eq!(split["state"], "succeeded");
        assert!(split["bytes"].as_i64().unwrap() <= 2048, "{split}");
    }

    wait_run(&app, &single_id).await;
    let one = output_of(&app, &single_id).await;
    let total = step(&done, "total")["run_id"].as_str().unwrap().to_string();
    let reduced = output_of(&app, &total).await;
    assert_eq!(reduced, one, "map + reduce on {}", remote.name());
    assert_eq!(one["objects"], 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_that_fails_once_is_retried_alone_and_reduce_gets_outputs_in_order() {
    let Some(app) = seeded_s3_app("map-retry", 20, &["map-probe", "hello"]).await else {
        return;
    };
    create(
        &app,
        json!({"name": "retry", "steps": [
            {"name": "fan",
             "map": {"store": "raw", "prefix": "input", "max_split_objects": 4, "parallelism": 3},
             "run": {"module": "map-probe", "params": {"fail_once": "1"},
                     "retries": {"max": 2, "backoff": "10ms"},
                     "grants": {"objects": ["raw"]}}},
            {"name": "join", "depends_on": ["fan"], "run": {"module": "hello"}}
        ]}),
    )
    .await;
    let id = start(&app, "retry").await;
    let done = wait(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    let splits = step(&done, "fan")["splits"].as_array().unwrap().clone();
    assert_eq!(splits.len(), 5, "{splits:?}");
    let mut keys = Vec::new();
    for (i, split) in splits.iter().enumerate() {
        let run = run_of(&app, split["run_id"].as_str().unwrap()).await;
        let attempts = run["attempt_history"].as_array().unwrap();
        // The failing split ran twice; every other split once.
        assert_eq!(
            attempts.len(),
            if i == 1 { 2 } else { 1 },
            "split {i}: {run}"
        );
        assert_eq!(run["attempts"], if i == 1 { 2 } else { 1 });
        let output: Value = serde_json::from_str(run["output"].as_str().unwrap()).unwrap();
        assert_eq!(output["index"], i);
        keys.extend(output["keys"].as_array().unwrap().iter().cloned());
    }
    assert_each_seeded_key_once(keys, 20);

    // The dependant got every split's output, in split order.
    let input = joined(&app, &done).await;
    let indices: Vec<u64> = input
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_run_mid_map_cancels_every_split() {
    let Some(app) = seeded_s3_app("map-cancel", 12, &["map-probe"]).await else {
        return;
    };
    create(
        &app,
        json!({"name": "slow", "steps": [
            {"name": "fan",
             "map": {"store": "raw", "prefix": "input", "max_split_objects": 2, "parallelism": 2},
             "run": {"module": "map-probe", "params": {"spin_ms": "60000"},
                     "grants": {"objects": ["raw"]}}},
            {"name": "after", "depends_on": ["fan"], "run": {"module": "map-probe"}}
        ]}),
    )
    .await;
    let id = start(&app, "slow").await;
    // Two splits running (the parallelism), four waiting.
    let mut running = Vec::new();
    for _ in 0..200 {
        let (_, run) = app
            .json("GET", &format!("/v1/workflow-runs/{id}"), None, None)
            .await;
        running.clear();
        for split in step(&run, "fan")["splits"].as_array().unwrap() {
            if let Some(run_id) = split["run_id"].as_str()
                && run_of(&app, run_id).await["state"] == "running"
            {
                running.push(run_id.to_string());
            }
        }
        if running.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running.len(), 2, "two splits should be running");

    let (status, cancelled) = app
        .json(
            "POST",
            &format!("/v1/workflow-runs/{id}/cancel"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(step(&cancelled, "after")["state"], "skipped");
    for run_id in &running {
        let run = wait_run(&app, run_id).await;
        assert_eq!(run["state"], "cancelled", "{run}");
    }
    // No split started after the cancel, and none is left to start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, run) = app
        .json("GET", &format!("/v1/workflow-runs/{id}"), None, None)
        .await;
    let splits = step(&run, "fan")["splits"].as_array().unwrap().clone();
    assert_eq!(splits.len(), 6);
    for split in &splits {
        assert_eq!(split["state"], "cancelled", "{split}");
        if let Some(run_id) = split["run_id"].as_str() {
            assert!(
                running.iter().any(|r| r == run_id),
                "a split started after the cancel"
            );
        }
    }
    let (status, _) = app
        .json(
            "POST",
            &format!("/v1/workflow-runs/{id}/cancel"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 202, "cancelling again answers as it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_prefix_makes_no_splits_and_reduce_gets_an_empty_list() {
    let Some(app) = seeded_s3_app("map-empty", 0, &["word-count"]).await else {
        return;
    };
    create(
        &app,
        json!({"name": "empty", "steps": [
            {"name": "count", "map": {"store": "raw", "prefix": "nothing/here"},
             "run": {"module": "word-count", "params": {"mode": "map"}, "grants": {"objects": ["raw"]}}},
            {"name": "total", "depends_on": ["count"],
             "run": {"module": "word-count", "params": {"mode": "reduce", "store": "raw"},
                     "grants": {"objects": ["raw"]}}}
        ]}),
    )
    .await;
    let id = start(&app, "empty").await;
    let done = wait(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(step(&done, "count")["splits"], json!([]));
    let total = step(&done, "total")["run_id"].as_str().unwrap().to_string();
    let summary = output_of(&app, &total).await;
    assert_eq!(summary["objects"], 0);
    assert_eq!(summary["words"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_steps_are_validated_naming_the_field() {
    let app = app_with("max_map_splits = 3", "", 2).await;
    app.upload("word-count", guest("word-count"), None).await;
    let map_step = |map: Value, grants: Value| {
        json!({"name": "m", "steps": [{"name": "count", "map": map,
            "run": {"module": "word-count", "grants": {"objects": grants}}}]})
    };
    for (map, grants, status, field) in [
        (
            json!({"store": "data", "parallelism": 0}),
            json!(["data"]),
            400,
            "steps[0].map.parallelism",
        ),
        (
            json!({"store": "data", "max_split_bytes": 0}),
            json!(["data"]),
            400,
            "steps[0].map.max_split_bytes",
        ),
        (
            json!({"store": "data", "prefix": "a//b"}),
            json!(["data"]),
            400,
            "steps[0].map.prefix",
        ),
        (
            json!({"store": "data", "paralelism": 2}),
            json!(["data"]),
            400,
            "paralelism",
        ),
        (
            json!({"store": "other"}),
            json!(["data"]),
            422,
            "steps[0].map.store",
        ),
        (
            json!({"store": "nowhere"}),
            json!(["data", "nowhere"]),
            422,
            "steps[0].map.store",
        ),
    ] {
        let (got, error) = app
            .json(
                "POST",
                "/v1/workflows",
                None,
                Some(map_step(map.clone(), grants)),
            )
            .await;
        assert_eq!(got, status, "{map}: {error}");
        assert!(error.to_string().contains(field), "{map}: {error}");
    }

    // Past `[server] max_map_splits`, the step fails saying so.
    let data = app
        .state
        .services
        .runtime
        .object_stores()
        .get("data")
        .unwrap();
    for i in 0..5 {
        data.put(&key(&format!("in/{i}")), PutPayload::from_static(b"words"))
            .await
            .unwrap();
    }
    create(
        &app,
        map_step(
            json!({"store": "data", "prefix": "in", "max_split_objects": 1}),
            json!(["data"]),
        ),
    )
    .await;
    let id = start(&app, "m").await;
    let done = wait(&app, &id).await;
    assert_eq!(done["state"], "failed", "{done}");
    let count = step(&done, "count");
    assert_eq!(count["state"], "failed");
    assert!(
        count["error"]
            .as_str()
            .unwrap()
            .contains("[server] max_map_splits"),
        "{count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_map_task_reads_its_split() {
    let Some(app) = seeded_s3_app("map-python", 30, &["py-map", "hello"]).await else {
        return;
    };
    create(
        &app,
        json!({"name": "py", "steps": [
            {"name": "fan",
             "map": {"store": "raw", "prefix": "input/", "max_split_bytes": 512, "parallelism": 2},
             "run": {"module": "py-map", "grants": {"objects": ["raw"]}}},
            {"name": "join", "depends_on": ["fan"], "run": {"module": "hello"}}
        ]}),
    )
    .await;
    let id = start(&app, "py").await;
    let done = wait(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let splits = step(&done, "fan")["splits"].as_array().unwrap().clone();
    assert!(splits.len() >= 2, "{splits:?}");

    let outputs = joined(&app, &done).await;
    let outputs = outputs.as_array().unwrap();
    assert_eq!(outputs.len(), splits.len());
    let mut keys = Vec::new();
    for (i, (output, split)) in outputs.iter().zip(&splits).enumerate() {
        assert_eq!(output["index"], i);
        assert_eq!(output["bytes"], split["bytes"], "{output}");
        keys.extend(output["keys"].as_array().unwrap().iter().cloned());
    }
    assert_each_seeded_key_once(keys, 30);
}
