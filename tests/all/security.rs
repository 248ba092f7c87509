//! Security: tenant isolation on every endpoint, grants at submit and run
//! time, object keys that try to leave their store's prefix, secrets that
//! must never leave the host, and how tokens are stored.
//!
//! Read-only SQL sources are enforced by the database itself; the host-level
//! tests are `sqlite_read_only_source_refuses_writes` and
//! `postgres_read_only_source_refuses_writes_and_bypasses` in
//! host-api/tests/sql.rs. Here a task tries a write through the server.

use axum::body::Body;
use axum::http::StatusCode;
use caisson_server::worker::Worker;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use crate::api::{App, app_with};
use caisson_tests::guest;

const ADMIN: &str = "security-admin-token";
const ALPHA: &str = "alpha-token";
const BETA: &str = "beta-token";

fn tenants(extra: &str) -> String {
    format!(
        r#"
[tenants.alpha]
tokens = ["{ALPHA}"]
objects = ["data"]

[tenants.beta]
tokens = ["{BETA}"]
objects = ["other"]
{extra}
"#
    )
}

async fn app_with_tenants(extra: &str, workers: usize) -> App {
    app_with(
        &format!("admin_token = \"{ADMIN}\""),
        &tenants(extra),
        workers,
    )
    .await
}

/// Every way `token` could reach a thing it does not own answers exactly as
/// if the thing did not exist: 404 with the same error code.
async fn assert_absent(app: &App, method: &str, uri: &str, token: &str, body: Option<Value>) {
    let (status, answer) = app.json(method, uri, Some(token), body).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{method} {uri} as {token}: {answer}"
    );
    assert_eq!(answer["error"]["code"], "not_found", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_anything_of_another_tenant() {
    let app = app_with_tenants("", 1).await;
    let (a, b) = (Some(ALPHA), Some(BETA));

    // Alpha's things: a module, a finished run (with logs and an output),
    // a schedule, a workflow and a workflow run.
    let (status, module) = app.upload("alpha-mod", guest("hello"), a).await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    let digest = module["digest"].as_str().unwrap().to_string();
    let (status, run) = app
        .json(
            "POST",
            "/v1/runs",
            a,
            Some(json!({"module": "alpha-mod", "input": "alpha"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    assert_eq!(app.wait(&run_id, a).await["state"], "succeeded");
    let schedule =
        json!({"name": "alpha-sched", "cron": "0 2 * * *", "run": {"module": "alpha-mod"}});
    let (status, answer) = app.json("POST", "/v1/schedules", a, Some(schedule)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let workflow =
        json!({"name": "alpha-flow", "steps": [{"name": "one", "run": {"module": "alpha-mod"}}]});
    let (status, answer) = app.json("POST", "/v1/workflows", a, Some(workflow)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, wrun) = app
        .json("POST", "/v1/workflows/alpha-flow/runs", a, None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wrun}");
    let wrun_id = wrun["id"].as_str().unwrap().to_string();

    // Beta, and the admin token (which acts as the default tenant), reach
    // none of it, through any endpoint: 404, as for things that never were.
    for token in [BETA, ADMIN] {
        let backfill = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-03T00:00:00Z"});
        for (method, uri, body) in [
            ("GET", "/v1/modules/alpha-mod".to_string(), None),
            ("DELETE", "/v1/modules/alpha-mod".to_string(), None),
            (
                "DELETE",
                format!(
                    "/v1/modules/alpha-mod?version={}",
                    module["version"].as_str().unwrap()
                ),
                None,
            ),
            ("GET", format!("/v1/runs/{run_id}"), None),
            ("POST", format!("/v1/runs/{run_id}/cancel"), None),
            ("POST", format!("/v1/runs/{run_id}/rerun"), None),
            ("GET", format!("/v1/runs/{run_id}/logs"), None),
            ("GET", format!("/v1/runs/{run_id}/logs?after=0"), None),
            ("GET", format!("/v1/runs/{run_id}/logs?follow=true"), None),
            ("GET", format!("/v1/runs/{run_id}/output"), None),
            ("GET", "/v1/schedules/alpha-sched".to_string(), None),
            ("GET", "/v1/schedules/alpha-sched/next".to_string(), None),
            ("POST", "/v1/schedules/alpha-sched/pause".to_string(), None),
            ("POST", "/v1/schedules/alpha-sched/resume".to_string(), None),
            (
                "POST",
                "/v1/schedules/alpha-sched/backfill".to_string(),
                Some(backfill),
            ),
            ("DELETE", "/v1/schedules/alpha-sched".to_string(), None),
            ("GET", "/v1/workflows/alpha-flow".to_string(), None),
            ("POST", "/v1/workflows/alpha-flow/runs".to_string(), None),
            ("DELETE", "/v1/workflows/alpha-flow".to_string(), None),
            ("GET", format!("/v1/workflow-runs/{wrun_id}"), None),
        ] {
            assert_absent(&app, method, &uri, token, body).await;
        }
        // The same answers for an id that never existed.
        assert_absent(
            &app,
            "GET",
            "/v1/runs/00000000-0000-0000-0000-000000000000",
            token,
            None,
        )
        .await;

        // Lists hold nothing of alpha's.
        let t = Some(token);
        for uri in [
            "/v1/modules",
            "/v1/runs",
            "/v1/runs?module=alpha-mod",
            "/v1/schedules",
            "/v1/workflows",
        ] {
            let (status, list) = app.json("GET", uri, t, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {list}");
            let text = list.to_string();
            for name in ["alpha-mod", "alpha-sched", "alpha-flow", run_id.as_str()] {
                assert!(
                    !text.contains(name),
                    "{uri} as {token} shows {name}: {text}"
                );
            }
        }

        // Alpha's module cannot be run, by name or by digest, nor be the
        // target of a schedule or a workflow step: the same 422 as a
        // module that does not exist.
        let (_, unknown) = app
            .json(
                "POST",
                "/v1/runs",
                t,
                Some(json!({"module": "no-such-mod"})),
            )
            .await;
        for submit in [
            json!({"module": "alpha-mod"}),
            json!({"module": "alpha-mod", "digest": digest}),
            json!({"module": "alpha-mod", "version": module["version"]}),
        ] {
            let (status, answer) = app.json("POST", "/v1/runs", t, Some(submit)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            assert_eq!(answer["error"]["code"], unknown["error"]["code"]);
        }
        let schedule =
            json!({"name": "stolen", "cron": "0 3 * * *", "run": {"module": "alpha-mod"}});
        let (status, answer) = app.json("POST", "/v1/schedules", t, Some(schedule)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        let workflow =
            json!({"name": "stolen", "steps": [{"name": "s", "run": {"module": "alpha-mod"}}]});
        let (status, answer) = app.json("POST", "/v1/workflows", t, Some(workflow)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    }

    // Names are per tenant: beta may use alpha's names (a 409 would tell
    // beta they exist), and its things stay apart from alpha's.
    let (status, answer) = app.upload("alpha-mod", guest("hello"), b).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let schedule =
        json!({"name": "alpha-sched", "cron": "0 4 * * *", "run": {"module": "alpha-mod"}});
    let (status, answer) = app.json("POST", "/v1/schedules", b, Some(schedule)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let workflow =
        json!({"name": "alpha-flow", "steps": [{"name": "b", "run": {"module": "alpha-mod"}}]});
    let (status, answer) = app.json("POST", "/v1/workflows", b, Some(workflow)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // Beta pauses and deletes its own; alpha's are untouched.
    let (status, _) = app
        .json("POST", "/v1/schedules/alpha-sched/pause", b, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for uri in ["/v1/schedules/alpha-sched", "/v1/workflows/alpha-flow"] {
        let (status, _) = app.json("DELETE", uri, b, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{uri}");
    }
    // Deleting beta's module (the same bytes as alpha's) leaves alpha's
    // module runnable: the stored component is shared by digest.
    let (status, _) = app.json("DELETE", "/v1/modules/alpha-mod", b, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, sched) = app.json("GET", "/v1/schedules/alpha-sched", a, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sched["paused"], false, "{sched}");
    assert_eq!(sched["cron"], "0 2 * * *");
    let (status, flow) = app.json("GET", "/v1/workflows/alpha-flow", a, None).await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    let (_, run) = app
        .json("GET", &format!("/v1/runs/{run_id}"), a, None)
        .await;
    assert_eq!(
        run["state"], "succeeded",
        "beta's cancel reached alpha's run: {run}"
    );
    let (status, again) = app
        .json(
            "POST",
            "/v1/runs",
            a,
            Some(json!({"module": "alpha-mod", "input": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let done = app.wait(again["id"].as_str().unwrap(), a).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (status, wrun) = app
        .json("GET", &format!("/v1/workflow-runs/{wrun_id}"), a, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{wrun}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_checked_at_submit_and_again_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("rw.db");
    let ro = dir.path().join("ro.db");
    // The read-only database must exist to be opened read-only.
    std::fs::write(&ro, b"").unwrap();
    let sql = format!(
        r#"
[sql.db]
type = "sqlite"
url = "sqlite://{rw}?mode=rwc"

[sql.ro]
type = "sqlite"
url = "sqlite://{ro}"
read_only = true

[sql.otherdb]
type = "sqlite"
url = "sqlite://{other}?mode=rwc"

[tenants.gamma]
tokens = ["gamma-token"]
objects = ["data"]
sql = ["db", "ro"]
"#,
        rw = rw.display(),
        ro = ro.display(),
        other = dir.path().join("other.db").display(),
    );
    let app = app_with_tenants(&sql, 1).await;
    let g = Some("gamma-token");
    app.upload("ungranted-store", guest("ungranted-store"), g)
        .await;
    app.upload("secret-probe", guest("secret-probe"), g).await;

    // At submit time: a label the tenant may not grant is 403, configured
    // or not, for runs, schedule templates and workflow steps alike.
    for grants in [
        json!({"objects": ["other"]}),
        json!({"objects": ["nowhere"]}),
        json!({"sql": ["otherdb"]}),
        json!({"sql": ["nowhere"]}),
        json!({"objects": ["data"], "sql": ["db", "otherdb"]}),
    ] {
        let run = json!({"module": "ungranted-store", "grants": grants});
        let (status, answer) = app.json("POST", "/v1/runs", g, Some(run.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{grants}: {answer}");
        let schedule = json!({"name": "s", "cron": "@daily", "run": run});
        let (status, answer) = app.json("POST", "/v1/schedules", g, Some(schedule)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{grants}: {answer}");
        let workflow = json!({"name": "w", "steps": [{"name": "s", "run": run}]});
        let (status, answer) = app.json("POST", "/v1/workflows", g, Some(workflow)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{grants}: {answer}");
    }

    // At run time: a label the run was not granted is `access-denied`,
    // even one the tenant could have granted.
    let probe = |label: &str, kind: &str, grants: Value| json!({"module": "ungranted-store", "params": {"label": label, "kind": kind}, "grants": grants});
    for (submit, expected) in [
        (probe("data", "objects", json!({})), "denied"),
        (
            probe("data", "objects", json!({"objects": ["data"]})),
            "opened",
        ),
        (
            probe("other", "objects", json!({"objects": ["data"]})),
            "denied",
        ),
        (probe("db", "sql", json!({})), "denied"),
        (probe("db", "sql", json!({"sql": ["db"]})), "opened"),
        (probe("otherdb", "sql", json!({"sql": ["db"]})), "denied"),
    ] {
        let (status, run) = app.json("POST", "/v1/runs", g, Some(submit.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        let done = app.wait(run["id"].as_str().unwrap(), g).await;
        assert_eq!(done["output"], expected, "{submit}: {done}");
    }

    // A read-only source refuses writes at the database level.
    let (_, run) = app
        .json(
            "POST",
            "/v1/runs",
            g,
            Some(json!({
                "module": "secret-probe",
                "params": {"sql": "ro,db", "write": "CREATE TABLE secret_probe (x int)"},
                "grants": {"sql": ["ro", "db"]}
            })),
        )
        .await;
    let done = app.wait(run["id"].as_str().unwrap(), g).await;
    let report: Value = serde_json::from_str(done["output"].as_str().unwrap()).unwrap();
    let write = report["calls"]["sql ro write"].as_str().unwrap();
    assert!(
        write.starts_with("error"),
        "a read-only source took a write: {write}"
    );
    assert_eq!(report["calls"]["sql db write"], "ok: 0", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_taken_away_while_a_run_waits_are_withheld() {
    let app = app_with_tenants("", 0).await;
    let a = Some(ALPHA);
    app.upload("ungranted-store", guest("ungranted-store"), a)
        .await;
    let submit = json!({"module": "ungranted-store", "params": {"label": "data"}, "grants": {"objects": ["data"]}});
    let (status, queued) = app.json("POST", "/v1/runs", a, Some(submit)).await;
    assert_eq!(status, StatusCode::CREATED, "{queued}");
    let id = queued["id"].as_str().unwrap();
    // The admin takes `data` away from alpha while the run is queued.
    let (status, answer) = app
        .json(
            "POST",
            "/v1/tenants",
            Some(ADMIN),
            Some(json!({"name": "alpha", "objects": []})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(Worker::new(&app.state.services).run(1, rx));
    let done = app.wait(id, a).await;
    let _ = tx.send(true);
    assert_eq!(done["output"], "denied", "{done}");
    let (_, logs) = app
        .json("GET", &format!("/v1/runs/{id}/logs"), a, None)
        .await;
    assert!(
        logs.to_string().contains("grants withheld"),
        "the log does not say why: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_hashed_and_revocation_is_immediate() {
    let app = app_with_tenants("", 0).await;
    let (status, minted) = app
        .json("POST", "/v1/tenants/alpha/tokens", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let token = minted["token"].as_str().unwrap().to_string();
    let (status, _) = app.json("GET", "/v1/runs", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);

    // No plaintext token anywhere in the database file, only its SHA-256.
    let db = app.state.services.config.sqlite_path().unwrap();
    // Let SQLite write its WAL back, then read every byte it keeps.
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        bytes.extend(std::fs::read(&path).unwrap_or_default());
    }
    let haystack = String::from_utf8_lossy(&bytes);
    for plain in [ALPHA, BETA, ADMIN, token.as_str()] {
        assert!(
            !haystack.contains(plain),
            "the database holds the plaintext token {plain}"
        );
    }
    assert!(
        haystack.contains(&caisson_server::api::hash_token(&token)),
        "the minted token's hash is not stored"
    );

    // Revocation is immediate (the_admin_token_manages_tenants_and_revocation_is_immediate
    // in api.rs tests it too); the revoked token is then a plain 401.
    let (status, _) = app
        .json(
            "DELETE",
            &format!("/v1/tokens/{}", minted["id"].as_str().unwrap()),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = app.json("GET", "/v1/runs", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    // Tokens are compared whole: a prefix, a suffix, another case, or the
    // admin token with a byte changed is refused.
    let mut near = ADMIN.to_string();
    near.pop();
    near.push('X');
    for wrong in [
        &token[..token.len() - 1],
        &format!("{token}x"),
        &token.to_uppercase(),
        &near,
        &ADMIN[..ADMIN.len() - 1],
    ] {
        let (status, _) = app.json("GET", "/v1/runs", Some(wrong), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let (status, _, _) = app
        .call("GET", "/v1/runs", None, Body::empty(), "application/json")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Keys that try to leave the store's prefix: `..` in every spelling,
/// absolute paths, backslashes, NUL and other control characters. Each is
/// either refused (`invalid-input`) or, for percent-encoded spellings, kept
/// as a literal name inside the prefix.
const HOSTILE_KEYS: &[&str] = &[
    "../x",
    "a/../../x",
    "a/b/../../../x",
    "..",
    "a/..",
    "/abs",
    "//abs",
    "/etc/passwd",
    "..\\x",
    "a\\..\\..\\x",
    "\\abs",
    "C:\\x",
    "a\0b",
    "\0",
    "a/\0/b",
    "a\nb",
    "a\rb",
    "a\u{7f}b",
    "file:///etc/passwd",
];

/// Percent-encoded and look-alike spellings: never decoded, so they are
/// ordinary names (or refused), never a way out.
const ENCODED_KEYS: &[&str] = &[
    "%2e%2e/x",
    "%2E%2E/x",
    ".%2e/x",
    "%2e%2e%2fx",
    "..%2fx",
    "..%2f..%2fx",
    "a/%2e%2e/%2e%2e/x",
    "..%5cx",
    "%5c..%5cx",
    "%252e%252e/x",
    "%00",
    "a%00b",
    "\u{ff0e}\u{ff0e}/x",
    "..\u{2215}x",
    "...",
];

async fn probe_keys(store: &str, label_table: &str) -> Value {
    let mut config = caisson_tests::base_config();
    config.objects = toml::from_str(&format!("[data]\n{label_table}")).unwrap();
    let rt = caisson_tests::runtime(config);
    let task = crate::load(&rt, "key-probe").await;
    let keys: Vec<&str> = HOSTILE_KEYS.iter().chain(ENCODED_KEYS).copied().collect();
    let input = serde_json::to_vec(&keys).unwrap();
    let (result, _) = crate::run_with(&rt, &task, &input, |r| {
        r.grants = caisson_host_api::Grants::default().with_object_store("data");
    })
    .await;
    let report = crate::json(&result.unwrap_or_else(|e| panic!("{store}: {e}")));
    for key in HOSTILE_KEYS {
        assert_eq!(
            report[*key], "invalid-input",
            "{store}: hostile key {key:?} was not refused: {report}"
        );
    }
    println!("{store}: {report}");
    for key in ENCODED_KEYS {
        let outcome = report[*key].as_str().unwrap_or("missing");
        assert!(
            outcome == "ok" || outcome == "invalid-input",
            "{store}: {key:?}: {outcome}"
        );
    }
    report
}

#[tokio::test]
async fn store_keys_cannot_escape_the_prefix_in_any_spelling() {
    // A local store rooted at a prefix: nothing may land outside it.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let local = format!(
        "type = \"local\"\nroot = \"{}\"\nprefix = \"tenant/inner\"",
        root.display()
    );
    probe_keys("local", &local).await;
    let mut outside = Vec::new();
    for entry in walk(dir.path()) {
        let relative = entry.strip_prefix(dir.path()).unwrap().to_path_buf();
        if entry.is_file() && !relative.starts_with("root/tenant/inner") {
            outside.push(relative);
        }
    }
    assert!(
        outside.is_empty(),
        "written outside the prefix: {outside:?}"
    );

    // A memory store, the same answers.
    probe_keys("memory", "type = \"memory\"\nprefix = \"tenant/inner\"").await;

    // S3: every object the probe wrote is under the prefix.
    let Some(s3) = caisson_tests::s3_env() else {
        return;
    };
    let base = caisson_tests::unique_prefix("key-escape");
    let prefix = format!("{base}/inner");
    let table: toml::Table = toml::from_str(&s3.toml_table("data", &prefix)).unwrap();
    let table = toml::to_string(&table["objects"]["data"]).unwrap();
    let client = s3.client();
    use futures::TryStreamExt;
    let before: std::collections::BTreeSet<String> = client
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    probe_keys("s3", &table).await;
    let after: Vec<object_store::path::Path> = client
        .list(None)
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    // Other tests write under tests/<their prefix>; anything new that is
    // outside `tests/` or under our base but outside the prefix escaped.
    let inside = format!("{prefix}/");
    let escaped: Vec<String> = after
        .iter()
        .map(|k| k.to_string())
        .filter(|k| !before.contains(k))
        .filter(|k| !k.starts_with("tests/") || (k.starts_with(&base) && !k.starts_with(&inside)))
        .collect();
    let ours = after
        .iter()
        .filter(|k| k.to_string().starts_with(&inside))
        .count();
    for key in after.iter().filter(|k| k.to_string().starts_with(&base)) {
        client.delete(key).await.ok();
    }
    assert!(
        escaped.is_empty(),
        "written outside the prefix: {escaped:?}"
    );
    assert!(ours > 0, "the probe wrote nothing under {prefix}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Distinctive secrets, so a search for them finds only leaks.
const ADMIN_SECRET: &str = "ADMIN-SECRET-7d1f0c2e9b";
const TENANT_SECRET: &str = "TENANT-SECRET-4a8e61f3d0";
const S3_ACCESS_SECRET: &str = "S3ACCESSSECRET5c2b9e";
const S3_SECRET: &str = "S3-SECRET-KEY-0f6d3a8c71";
const PG_SECRET: &str = "PG-SECRET-PASSWORD-9e2c5b";
const PG_SECRET_UNREACHABLE: &str = "PG-SECRET-UNREACHABLE-3b7a";
/// Addresses a task must not learn either: buckets that do not exist or
/// cannot be reached, and a local store's root.
const DEAD_BUCKET: &str = "caisson-dead-bucket-2b7e91";
const GONE_ROOT: &str = "gone-root-8f3b1c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_responses_logs_or_the_guest() {
    // A bucket name no earlier run used: s3s-fs makes a bucket on a put to
    // it, so a fixed name would exist from the second run on.
    let no_bucket = format!("caisson-no-such-bucket-{}", uuid::Uuid::new_v4().simple());
    let no_bucket = no_bucket.as_str();
    let (Some(s3), Some(pg)) = (caisson_tests::s3_env(), caisson_tests::postgres_url()) else {
        return;
    };
    let pg_url = url::Url::parse(&pg).unwrap();
    let pg_password = pg_url.password().unwrap_or_default().to_string();
    // Spans are exported too, and searched like everything else.
    let receiver = crate::traces::Receiver::start().await;
    let mut bad_pg = pg_url.clone();
    bad_pg.set_password(Some(PG_SECRET)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = caisson_tests::unique_prefix("secrets");
    let config = dir.path().join("caisson.toml");
    caisson_tests::ServerToml::new(format!(
        "sqlite://{}/caisson.db?mode=rwc",
        dir.path().display()
    ))
    .local_modules(&dir.path().join("modules"))
    .server("workers", "1")
    .server("poll", "\"50ms\"")
    .server("admin_token", format!("\"{ADMIN_SECRET}\""))
    .engine("max_memory", "1073741824")
    .tables(&format!(
        r#"
[tenants.acme]
tokens = ["{TENANT_SECRET}"]
objects = ["lake", "badlake", "deadlake", "nobucket", "gone"]
sql = ["pg", "badpg", "deadpg"]

[limits]
timeout = "60s"
{lake}
[objects.badlake]
type = "s3"
bucket = "{bucket}"
prefix = "{prefix}/bad"
endpoint = "{endpoint}"
region = "{region}"
access_key_id = "{S3_ACCESS_SECRET}"
secret_access_key = "{S3_SECRET}"
path_style = true
allow_http = true

[objects.deadlake]
type = "s3"
bucket = "{DEAD_BUCKET}"
endpoint = "http://127.0.0.1:1"
access_key_id = "{S3_ACCESS_SECRET}"
secret_access_key = "{S3_SECRET}"
path_style = true
allow_http = true

[objects.nobucket]
type = "s3"
bucket = "{no_bucket}"
prefix = "{prefix}/none"
endpoint = "{endpoint}"
region = "{region}"
access_key_id = "{access}"
secret_access_key = "{secret}"
path_style = true
allow_http = true
max_retries = 0

[objects.gone]
type = "local"
root = "{dir}/{GONE_ROOT}"

[sql.pg]
type = "postgres"
url = "{pg}"

[sql.badpg]
type = "postgres"
url = "{bad_pg}"

[sql.deadpg]
type = "postgres"
url = "postgres://caisson:{PG_SECRET_UNREACHABLE}@127.0.0.1:1/caisson"

[telemetry]
otlp_endpoint = "{otlp}"
"#,
        otlp = receiver.url,
        dir = dir.path().display(),
        lake = s3.toml_table("lake", &format!("{prefix}/lake")),
        bucket = s3.bucket,
        endpoint = s3.endpoint,
        region = s3.region,
        access = s3.access_key_id,
        secret = s3.secret_access_key,
    ))
    .write(dir.path());
    let server = caisson_tests::Served::start(
        &config,
        dir.path(),
        &[
            ("CAISSON_LOG", "debug"),
            ("RUST_LOG", "debug"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let base = server.url.clone();
    // The local store's root, made at start-up, goes; a file takes its
    // place, so that reads, listings and writes all fail.
    let gone_root = dir.path().join(GONE_ROOT);
    std::fs::remove_dir_all(&gone_root).unwrap();
    std::fs::write(&gone_root, "not a directory").unwrap();
    let http = reqwest::Client::new();
    // Every response, status line, headers and body, as one text to search.
    let mut seen = String::new();
    let mut call = async |method: &str,
                          path: &str,
                          token: Option<&str>,
                          body: Option<reqwest::Body>,
                          content_type: &str|
           -> (u16, Value) {
        let mut request = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("content-type", content_type);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        seen.push_str(&format!(
            "{method} {path} -> {status}\n{:?}\n",
            response.headers()
        ));
        let text = response.text().await.unwrap();
        seen.push_str(&text);
        seen.push('\n');
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    };
    let json_body = |v: Value| Some(reqwest::Body::from(v.to_string()));
    let j = "application/json";
    let t = Some(TENANT_SECRET);
    let admin = Some(ADMIN_SECRET);

    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        call("GET", path, None, None, j).await;
    }
    // Errors: no token, a wrong one, bad bodies, unknown things.
    call("GET", "/v1/runs", None, None, j).await;
    call("GET", "/v1/runs", Some("not-a-token"), None, j).await;
    call("POST", "/v1/runs", t, Some("{not json".into()), j).await;
    call(
        "POST",
        "/v1/runs",
        t,
        json_body(json!({"module": "x", "bogus": 1})),
        j,
    )
    .await;
    call(
        "POST",
        "/v1/runs",
        t,
        json_body(json!({"module": "x"})),
        "text/plain",
    )
    .await;
    call("GET", "/v1/runs/nope", t, None, j).await;
    call(
        "POST",
        "/v1/modules?name=bad",
        t,
        Some(b"\0asm junk".to_vec().into()),
        "application/wasm",
    )
    .await;
    call("GET", "/v1/tenants", t, None, j).await;

    let wasm = std::fs::read(caisson_tests::guest_path("secret-probe")).unwrap();
    let (status, answer) = call(
        "POST",
        "/v1/modules?name=probe",
        t,
        Some(wasm.into()),
        "application/wasm",
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    call("GET", "/v1/modules", t, None, j).await;
    call("GET", "/v1/modules/probe", t, None, j).await;
    let submit = json!({
        "module": "probe",
        "input": "hello",
        "params": {"objects": "lake,badlake,deadlake,nobucket,gone,unlisted", "sql": "pg,badpg,deadpg,unlisted"},
        "grants": {"objects": ["lake", "badlake", "deadlake", "nobucket", "gone"], "sql": ["pg", "badpg", "deadpg"]},
    });
    let (status, run) = call("POST", "/v1/runs", t, json_body(submit.clone()), j).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let mut done = Value::Null;
    for _ in 0..600 {
        let (_, run) = call("GET", &format!("/v1/runs/{id}"), t, None, j).await;
        if !matches!(run["state"].as_str(), Some("queued" | "running")) {
            done = run;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, output) = call("GET", &format!("/v1/runs/{id}/output"), t, None, j).await;
    call("GET", &format!("/v1/runs/{id}/logs"), t, None, j).await;
    call(
        "GET",
        &format!("/v1/runs/{id}/logs?follow=true"),
        t,
        None,
        j,
    )
    .await;
    call("GET", "/v1/runs?limit=5", t, None, j).await;
    call("POST", &format!("/v1/runs/{id}/cancel"), t, None, j).await;
    let forbidden = json!({"module": "probe", "grants": {"objects": ["secret-store"]}});
    call("POST", "/v1/runs", t, json_body(forbidden), j).await;

    // Schedules and workflows carry the same template.
    let schedule = json!({"name": "nightly", "cron": "0 2 * * *", "run": submit});
    call("POST", "/v1/schedules", t, json_body(schedule), j).await;
    call("GET", "/v1/schedules", t, None, j).await;
    call("GET", "/v1/schedules/nightly", t, None, j).await;
    call("POST", "/v1/schedules/nightly/pause", t, None, j).await;
    call("POST", "/v1/schedules/nightly/resume", t, None, j).await;
    let backfill = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T12:00:00Z"});
    call(
        "POST",
        "/v1/schedules/nightly/backfill",
        t,
        json_body(backfill),
        j,
    )
    .await;
    let workflow = json!({"name": "flow", "steps": [{"name": "one", "run": submit}]});
    call("POST", "/v1/workflows", t, json_body(workflow), j).await;
    call("GET", "/v1/workflows", t, None, j).await;
    let (_, wrun) = call("POST", "/v1/workflows/flow/runs", t, None, j).await;
    call("GET", "/v1/workflows/flow", t, None, j).await;
    if let Some(wid) = wrun["id"].as_str() {
        call("GET", &format!("/v1/workflow-runs/{wid}"), t, None, j).await;
    }

    // The admin API.
    call("GET", "/v1/tenants", admin, None, j).await;
    let tenant = json!({"name": "other", "objects": ["lake"], "sql": ["pg"]});
    call("POST", "/v1/tenants", admin, json_body(tenant), j).await;
    let (_, minted) = call("POST", "/v1/tenants/acme/tokens", admin, None, j).await;
    if let Some(token_id) = minted["id"].as_str() {
        call("DELETE", &format!("/v1/tokens/{token_id}"), admin, None, j).await;
    }
    for path in ["/metrics", "/readyz"] {
        call("GET", path, t, None, j).await;
    }

    // The guest saw something (so the search below means something), and
    // the calls that had to fail did.
    let report = match &output {
        Value::Object(_) => output.clone(),
        other => panic!("the probe's output is not JSON: {other}"),
    };
    let calls = &report["calls"];
    for failing in [
        "objects badlake get missing",
        "objects deadlake get missing",
        "objects deadlake list",
        "objects deadlake put",
        // Only the listing: s3s-fs, the test's S3 server, accepts a put to a
        // bucket that does not exist.
        "objects nobucket list",
        "objects gone put",
        "sql badpg open",
        "sql deadpg open",
        "objects unlisted open",
        "sql unlisted open",
    ] {
        let said = calls[failing].as_str().unwrap_or_default();
        assert!(said.starts_with("error"), "{failing}: {said} in {calls}");
    }
    assert_eq!(calls["sql pg select"], "ok: 1", "{calls}");
    assert_eq!(calls["sql pg write"], "ok: 0", "{calls}");
    println!("secrets: the guest saw {}", report);

    // Let the server write out what it logs about the last requests.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let logs = server.output();
    // The run's whole trace, host calls and all, as exported.
    let trace_id = done["trace_id"].as_str().expect("the run's trace id");
    let spans = receiver
        .trace(trace_id, |spans| spans.iter().any(|s| s.name == "finish"))
        .await;
    assert!(
        spans.iter().any(|s| s.name == "objects.store.get"),
        "the host calls were not exported"
    );
    let exported = format!("{:?}", receiver.spans());
    let places = [
        ("API responses", seen.as_str()),
        ("server stdout/stderr", logs.as_str()),
        ("the guest's view", &report.to_string()),
        ("exported spans", exported.as_str()),
    ];
    let mut secrets = vec![
        ADMIN_SECRET.to_string(),
        TENANT_SECRET.to_string(),
        S3_ACCESS_SECRET.to_string(),
        S3_SECRET.to_string(),
        PG_SECRET.to_string(),
        PG_SECRET_UNREACHABLE.to_string(),
        s3.secret_access_key.clone(),
        // The real PostgreSQL's password, as it sits
        // in the URL, since the password alone may be a common word.
        format!(":{pg_password}@"),
        pg.clone(),
    ];
    secrets.dedup();
    // Controls: the search reads what it should. A freshly minted token is
    // shown once, in its response; the debug log names the run.
    let minted_token = minted["token"].as_str().unwrap_or("no token minted");
    assert!(seen.contains(minted_token), "responses were not captured");
    // The metrics exposition is searched too, labels and all.
    assert!(
        seen.contains(
            "caisson_runs_finished_total{tenant=\"acme\",module=\"probe\",state=\"succeeded\"}"
        ),
        "the metrics exposition was not captured"
    );
    assert!(
        logs.contains(&id),
        "the server's debug log was not captured"
    );
    // Host calls are counted by store label, which is configuration.
    assert!(
        seen.contains("caisson_host_calls_total{interface=\"objects\""),
        "the host-call metrics were not captured"
    );
    assert!(
        report["calls"].as_object().is_some_and(|c| c.len() >= 20),
        "{report}"
    );
    // Backend addresses may be in the server's log (with the store's
    // label and the run), never where a task or a tenant can read them.
    let endpoint = s3.endpoint.trim_start_matches("http://").to_string();
    let gone_path = gone_root.display().to_string();
    let addresses = [
        no_bucket,
        DEAD_BUCKET,
        gone_path.as_str(),
        endpoint.as_str(),
        s3.bucket.as_str(),
    ];
    for (label, detail) in [("nobucket", no_bucket), ("gone", gone_path.as_str())] {
        assert!(
            logs.lines()
                .any(|l| l.contains(&id) && l.contains(label) && l.contains(detail)),
            "the server's log has no line naming the run, store `{label}` and {detail}"
        );
    }
    let mut leaks = Vec::new();
    for address in addresses {
        for (place, text) in [&places[0], &places[3]] {
            if text.contains(address) {
                leaks.push(format!("address {address} in {place}"));
            }
        }
        if places[2].1.contains(address) {
            leaks.push(format!("address {address} in {}", places[2].0));
        }
    }
    for secret in &secrets {
        for (place, text) in &places {
            if let Some(at) = text.find(secret.as_str()) {
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(200)
                    .map_or(0, |(i, _)| i);
                let end = (at + secret.len() + 200).min(text.len());
                let end = (end..=text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap();
                leaks.push(format!("{secret} in {place}: ...{}...", &text[start..end]));
            }
        }
    }
    println!(
        "secrets: searched {} secrets in {} bytes of responses, {} bytes of server log, {} bytes of guest view",
        secrets.len(),
        seen.len(),
        logs.len(),
        report.to_string().len()
    );
    // Clean up what the probe wrote to S3.
    let client = s3.client();
    use futures::TryStreamExt;
    let written: Vec<_> = client
        .list(Some(&object_store::path::Path::from(prefix.as_str())))
        .try_collect()
        .await
        .unwrap_or_default();
    for meta in written {
        client.delete(&meta.location).await.ok();
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n\n"));
}

/// Runs of `token`'s tenant, every page, as the list shows them.
async fn all_runs(app: &App, token: &str) -> Vec<Value> {
    let mut runs = Vec::new();
    let mut uri = "/v1/runs?limit=500".to_string();
    loop {
        let (status, page) = app.json("GET", &uri, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        runs.extend(page["runs"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => uri = format!("/v1/runs?limit=500&cursor={next}"),
            None => return runs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_does_not_hold_back_another() {
    let app = app_with(
        &format!("admin_token = \"{ADMIN}\""),
        &format!(
            r#"
[tenants.alpha]
tokens = ["{ALPHA}"]
max_queued_runs = 100
max_running_runs = 2

[tenants.beta]
tokens = ["{BETA}"]
"#
        ),
        0,
    )
    .await;
    for token in [ALPHA, BETA] {
        let (status, body) = app.upload("busy", guest("busy"), Some(token)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Alpha floods its queue with the highest priority there is... Runs
    // last 100 ms, so an overlap beyond the quota would be far longer than
    // the few milliseconds by which recorded start and end times can
    // differ from the claims' commit order.
    let submit =
        |priority: i32| json!({"module": "busy", "params": {"ms": "100"}, "priority": priority});
    for _ in 0..100 {
        let (status, body) = app
            .json("POST", "/v1/runs", Some(ALPHA), Some(submit(i32::MAX)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // ... up to its quota, which the refusal names.
    let (status, body) = app
        .json("POST", "/v1/runs", Some(ALPHA), Some(submit(i32::MAX)))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`max_queued_runs` quota of 100"),
        "{message}"
    );
    // Beta, later and at the lowest priority, is not behind all of that.
    let mut beta = Vec::new();
    for _ in 0..3 {
        let (status, body) = app
            .json("POST", "/v1/runs", Some(BETA), Some(submit(i32::MIN)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        beta.push(body["id"].as_str().unwrap().to_string());
    }

    // Four worker slots from here on. Meanwhile, how many of alpha's runs
    // the database holds as running, sampled: that is what the quota caps.
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(Worker::new(&app.state.services).run(4, rx));
    let sampling = std::sync::atomic::AtomicBool::new(true);
    let sampler = async {
        let mut most = 0;
        while sampling.load(std::sync::atomic::Ordering::Relaxed) {
            let (_, page) = app
                .json("GET", "/v1/runs?state=running&limit=500", Some(ALPHA), None)
                .await;
            most = most.max(page["runs"].as_array().map_or(0, Vec::len));
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        most
    };
    let work = async {
        for id in &beta {
            assert_eq!(app.wait(id, Some(BETA)).await["state"], "succeeded");
        }
        let mut alpha = Vec::new();
        for _ in 0..600 {
            alpha = all_runs(&app, ALPHA).await;
            if alpha.iter().all(|r| r["state"] == "succeeded") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        alpha
    };
    let (most, alpha) = tokio::join!(sampler, work);
    let _ = stop.send(true);
    assert_eq!(alpha.len(), 100);
    assert!(alpha.iter().all(|r| r["state"] == "succeeded"));

    let ms = |run: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(run[field].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    // Where beta's runs started among alpha's: the claims alternate
    // between the tenants (fewest running first), so beta's first run
    // was the second to start and its second the fourth; its third waits
    // at most for the runs alpha starts while beta's first two run.
    let mut beta_starts: Vec<i64> = Vec::new();
    for id in &beta {
        let (_, run) = app
            .json("GET", &format!("/v1/runs/{id}"), Some(BETA), None)
            .await;
        beta_starts.push(ms(&run, "started_at"));
    }
    beta_starts.sort();
    let alpha_before: Vec<usize> = beta_starts
        .iter()
        .map(|start| {
            alpha
                .iter()
                .filter(|r| ms(r, "started_at") < *start)
                .count()
        })
        .collect();
    println!("fairness: alpha runs started before each of beta's: {alpha_before:?} (of 100)");
    // Start stamps are read just before the claims commit, so two slots
    // claiming at once may stamp in either order: one place of slack.
    assert!(alpha_before[0] <= 2, "{alpha_before:?}");
    assert!(alpha_before[1] <= 4, "{alpha_before:?}");
    assert!(alpha_before[2] <= 10, "{alpha_before:?}");
    // Alpha never ran more than its two at once, with four slots free,
    // and did reach two (else the check proves nothing).
    println!("fairness: at most {most} of alpha's runs were running at once (quota 2)");
    assert!(most <= 2, "alpha ran {most} at once");
    assert_eq!(most, 2, "alpha never ran two at once");
}

#[test]
fn the_scratch_directory_is_private_or_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    // By default, under the state directory (`.caisson`), made private.
    let out = Command::new(caisson_tests::caisson_bin())
        .arg("run")
        .arg(caisson_tests::guest_path("hello"))
        .args(["--input", "x"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made = std::fs::metadata(dir.path().join(".caisson/scratch")).unwrap();
    assert!(made.is_dir());
    assert_eq!(made.mode() & 0o777, 0o700);
    // `caisson serve` without a configuration: under its data directory.
    let state = dir.path().join("state");
    let embedded = caisson_server::ServerConfig::embedded(&state);
    assert_eq!(embedded.runtime.engine.scratch_dir, state.join("scratch"));

    // Refused at start-up, naming the key: a directory others may write,
    // and one another user owns.
    let refused = |scratch: &std::path::Path| {
        let config = dir.path().join("caisson.toml");
        caisson_tests::ServerToml::engine_only()
            .engine("scratch_dir", format!("\"{}\"", scratch.display()))
            .write(dir.path());
        let out = Command::new(caisson_tests::caisson_bin())
            .arg("run")
            .arg(caisson_tests::guest_path("hello"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{} was accepted", scratch.display());
        let stderr = text(&out.stderr);
        assert!(stderr.contains("`engine.scratch_dir`"), "{stderr}");
        stderr
    };
    for mode in [0o777, 0o1777, 0o770] {
        let open = dir.path().join(format!("open-{mode:o}"));
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
        let stderr = refused(&open);
        assert!(
            stderr.contains("writable by its group or by others"),
            "{stderr}"
        );
    }
    // SAFETY: geteuid has no preconditions.
    let theirs = if unsafe { libc::geteuid() } == 0 {
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        theirs
    } else {
        // Not root: a directory root owns.
        std::path::PathBuf::from("/usr")
    };
    let stderr = refused(&theirs);
    assert!(stderr.contains("owned by another user"), "{stderr}");
    // Serving refuses too: the runtime is built before anything listens.
    let runtime = caisson_runtime::Runtime::new({
        let mut config = caisson_tests::base_config();
        config.engine.scratch_dir = theirs.clone();
        config
    });
    assert!(runtime.is_err());
}
