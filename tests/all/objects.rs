//! The objects and sql capabilities end to end: a real component calls every
//! operation on every kind of backend and reports what it saw.

use caisson_host_api::Grants;
use caisson_runtime::Config;
use caisson_tests::{base_config, postgres_url, runtime, s3_env, unique_prefix};

use crate::{json, load, run_with};

async fn probe(
    config: Config,
    task: &str,
    grants: Grants,
    params: &[(&str, &str)],
) -> serde_json::Value {
    let rt = runtime(config);
    let task = load(&rt, task).await;
    let (result, log) = run_with(&rt, &task, b"", |r| {
        r.grants = grants;
        for (k, v) in params {
            r.params.insert(k.to_string(), v.to_string());
        }
    })
    .await;
    let output = result.unwrap_or_else(|e| panic!("probe failed: {e}; log: {:?}", log.records()));
    json(&output)
}

fn assert_all_ok(report: &serde_json::Value) {
    assert_eq!(
        report["ok"], true,
        "failed checks: {:#}",
        report["failures"]
    );
    let checks = report["checks"].as_object().expect("a checks map");
    assert!(checks.len() >= 10, "suspiciously few checks: {checks:?}");
}

#[tokio::test]
async fn objects_on_a_memory_store() {
    let mut config = base_config();
    config.objects = toml::from_str("[data]\ntype = \"memory\"").unwrap();
    let report = probe(
        config,
        "objects-probe",
        Grants::default().with_object_store("data"),
        &[],
    )
    .await;
    assert_all_ok(&report);
    assert_eq!(report["pages"][0].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn objects_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.objects = toml::from_str(&format!(
        "[data]\ntype = \"local\"\nroot = \"{}\"\nprefix = \"tenant\"",
        dir.path().display()
    ))
    .unwrap();
    let report = probe(
        config,
        "objects-probe",
        Grants::default().with_object_store("data"),
        &[],
    )
    .await;
    assert_all_ok(&report);
    // What the task wrote is under the prefix on disk.
    for key in report["final_keys"].as_array().unwrap() {
        let path = dir.path().join("tenant").join(key.as_str().unwrap());
        assert!(path.exists(), "{} is not on disk", path.display());
    }
}

#[tokio::test]
async fn objects_on_s3() {
    let Some(s3) = s3_env() else { return };
    let prefix = unique_prefix("probe");
    let mut config = base_config();
    config
        .objects
        .insert("data".into(), s3.store_config(&prefix));
    let report = probe(
        config,
        "objects-probe",
        Grants::default().with_object_store("data"),
        &[],
    )
    .await;
    assert_all_ok(&report);
    // Check one of the task's objects with an independent client, at the
    // prefixed key the operator configured.
    let client = s3.client();
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let listed: Vec<_> = client
        .list(Some(&caisson_tests::key(&prefix)))
        .try_collect()
        .await
        .unwrap();
    let final_keys = report["final_keys"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        final_keys.len(),
        "{listed:?} vs {final_keys:?}"
    );
}

#[tokio::test]
async fn hostile_key_spellings_on_s3_stay_in_the_prefix() {
    let Some(s3) = s3_env() else { return };
    let prefix = unique_prefix("keys");
    let mut config = base_config();
    config
        .objects
        .insert("data".into(), s3.store_config(&prefix));
    let report = probe(
        config,
        "key-escape",
        Grants::default().with_object_store("data"),
        &[],
    )
    .await;
    for key in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a/./b",
        "..",
        "",
        "a/",
    ] {
        assert_eq!(report[key], "invalid-input", "{key:?}: {report}");
    }
    // Percent signs are literal: `%2e%2e/x` is an ordinary key inside the prefix.
    assert_eq!(report["%2e%2e/x"], "ok", "{report}");
    use object_store::ObjectStore;
    let client = s3.client();
    // It landed inside the prefix, literally named...
    client
        .head(&caisson_tests::key(&format!("{prefix}/%2e%2e/x")))
        .await
        .unwrap();
    // ...and nothing appeared where a decoded `..` would have put it.
    for escaped in ["x", "tests/x"] {
        let found = client.head(&caisson_tests::key(escaped)).await;
        assert!(
            matches!(found, Err(object_store::Error::NotFound { .. })),
            "an object escaped the prefix to {escaped}: {found:?}"
        );
    }
}

#[tokio::test]
async fn sql_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.sql = toml::from_str(&format!(
        "[warehouse]\ntype = \"sqlite\"\nurl = \"sqlite://{}/probe.db?mode=rwc\"",
        dir.path().display()
    ))
    .unwrap();
    let report = probe(
        config,
        "sql-probe",
        Grants::default().with_sql("warehouse"),
        &[("db", "warehouse")],
    )
    .await;
    assert_all_ok(&report);
    assert_eq!(report["dialect"], "sqlite");
    assert_eq!(report["batches"], serde_json::json!([10, 10, 5]));
}

#[tokio::test]
async fn sql_on_postgres() {
    let Some(url) = postgres_url() else { return };
    let mut config = base_config();
    config.sql = toml::from_str(&format!(
        "[warehouse]\ntype = \"postgres\"\nurl = \"{url}\""
    ))
    .unwrap();
    let report = probe(
        config,
        "sql-probe",
        Grants::default().with_sql("warehouse"),
        &[("db", "warehouse")],
    )
    .await;
    assert_all_ok(&report);
    assert_eq!(report["dialect"], "postgres");
    for (kind, outcome) in report["roundtrip"].as_object().unwrap() {
        assert_eq!(
            outcome["match"], true,
            "{kind} did not round-trip on PostgreSQL: {outcome}"
        );
    }
}

/// The benchmark suite's task (`bench-probe`) does what the suite times:
/// streams exactly the bytes it reports, both ways, and reads the clock.
#[tokio::test]
async fn the_benchmark_task_streams_what_it_reports() {
    let mut config = base_config();
    config.objects = toml::from_str("[data]\ntype = \"memory\"").unwrap();
    let rt = runtime(config);
    let task = load(&rt, "bench-probe").await;
    let call = |params: Vec<(&'static str, String)>| {
        let (rt, task) = (&rt, &task);
        async move {
            let (result, log) = run_with(rt, task, b"", |r| {
                r.grants = Grants::default().with_object_store("data");
                for (k, v) in params {
                    r.params.insert(k.to_string(), v);
                }
            })
            .await;
            let output = result.unwrap_or_else(|e| panic!("{e}: {:?}", log.records()));
            String::from_utf8(output).unwrap()
        }
    };
    let size = (3 << 20) + 12_345;
    let written = call(vec![
        ("op", "write".into()),
        ("key", "blob".into()),
        ("bytes", size.to_string()),
    ])
    .await;
    assert_eq!(written, size.to_string());
    let stored = rt
        .object_stores()
        .get("data")
        .unwrap()
        .get(&caisson_tests::key("blob"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored.len(), size);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % (256 * 1024)) as u8)
    );
    let read = call(vec![("op", "read".into()), ("key", "blob".into())]).await;
    assert_eq!(read, size.to_string());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let clock: u128 = call(vec![]).await.parse().unwrap();
    assert!(
        clock >= before,
        "the guest's clock read {clock}, before {before}"
    );
}
