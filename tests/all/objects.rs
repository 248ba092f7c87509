//! The objects and sql capabilities end to end: a real component calls every
//! operation on every kind of backend and reports what it saw.

use caisson_host_api::objects::{
    ObjectStores, ObjectsCtx, ObjectsView, StoreConfig, StoreHandle, Upload,
};
use caisson_host_api::test_support::mariadb_cli;
use caisson_host_api::wit::objects::{Host, HostStore, HostWriter};
use caisson_host_api::{Grants, ObjectsError as WitError};
use caisson_runtime::Config;
use caisson_tests::{
    RemoteStore, base_config, hdfs_env, keys_under, mysql_url, postgres_url, runtime, s3_env,
    unique_prefix,
};
use object_store::ObjectStoreExt;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::DynOutputStream;

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

/// The objects probe on `remote`, under a fresh prefix; then an
/// independent client finds exactly the task's objects there, and nothing
/// else (no leftover of a file being written).
async fn objects_probe_on(remote: &impl RemoteStore) {
    let prefix = unique_prefix("probe");
    let mut config = base_config();
    config
        .objects
        .insert("data".into(), remote.store_config(&prefix));
    let report = probe(
        config,
        "objects-probe",
        Grants::default().with_object_store("data"),
        &[],
    )
    .await;
    assert_all_ok(&report);
    assert_eq!(report["pages"][0].as_array().unwrap().len(), 2);
    let listed = keys_under(remote.client().as_ref(), &prefix).await;
    let mut final_keys: Vec<String> = report["final_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    final_keys.sort();
    assert_eq!(listed, final_keys, "on {}", remote.name());
}

#[tokio::test]
async fn objects_on_s3() {
    let Some(s3) = s3_env() else { return };
    objects_probe_on(&s3).await;
}

#[tokio::test]
async fn objects_on_hdfs() {
    let Some(hdfs) = hdfs_env() else { return };
    objects_probe_on(&hdfs).await;
}

/// The key-escape task on `remote`: every hostile spelling is refused,
/// and the one legal odd key lands literally inside the prefix.
async fn key_escapes_on(remote: &impl RemoteStore) {
    let prefix = unique_prefix("keys");
    let mut config = base_config();
    config
        .objects
        .insert("data".into(), remote.store_config(&prefix));
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
    let client = remote.client();
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
            "an object escaped the prefix to {escaped} on {}: {found:?}",
            remote.name()
        );
    }
}

#[tokio::test]
async fn hostile_key_spellings_on_s3_stay_in_the_prefix() {
    let Some(s3) = s3_env() else { return };
    key_escapes_on(&s3).await;
}

#[tokio::test]
async fn hostile_key_spellings_on_hdfs_stay_in_the_prefix() {
    let Some(hdfs) = hdfs_env() else { return };
    key_escapes_on(&hdfs).await;
}

/// The objects capability called directly through its host traits, as a
/// guest would call it, so a test can look at the store between calls.
pub(crate) struct Direct {
    ctx: ObjectsCtx,
    table: ResourceTable,
}

impl Direct {
    pub(crate) fn new(store: StoreConfig) -> Self {
        let stores = ObjectStores::from_config(&[("data".to_string(), store)].into()).unwrap();
        let ctx = stores
            .ctx_for(
                &Grants::default().with_object_store("data"),
                Default::default(),
            )
            .unwrap();
        Direct {
            ctx,
            table: ResourceTable::new(),
        }
    }

    pub(crate) fn view(&mut self) -> ObjectsView<'_> {
        ObjectsView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }

    pub(crate) async fn open(&mut self) -> Resource<StoreHandle> {
        Host::open(&mut self.view(), "data".into())
            .await
            .unwrap()
            .unwrap()
    }

    /// Starts a writer on `key` and writes `bytes` into its body in
    /// 1 MiB pieces, as fast as the body takes them.
    async fn write(
        &mut self,
        store: &Resource<StoreHandle>,
        key: &str,
        bytes: usize,
    ) -> (Resource<Upload>, Resource<DynOutputStream>) {
        let store = Resource::new_borrow(store.rep());
        let writer = HostStore::writer(&mut self.view(), store, key.into(), None)
            .await
            .unwrap()
            .unwrap();
        let body = HostWriter::body(&mut self.view(), Resource::new_borrow(writer.rep()))
            .await
            .unwrap()
            .unwrap();
        let stream = self.table.get_mut(&body).unwrap();
        let mut left = bytes;
        while left > 0 {
            stream.ready().await;
            let n = stream.check_write().unwrap().min(left);
            if n > 0 {
                stream.write(bytes::Bytes::from(vec![b'x'; n])).unwrap();
                left -= n;
            }
        }
        (writer, body)
    }

    async fn list(&mut self, store: &Resource<StoreHandle>) -> Vec<String> {
        let store = Resource::new_borrow(store.rep());
        let page = HostStore::list(&mut self.view(), store, String::new(), None, None, 1000)
            .await
            .unwrap()
            .unwrap();
        page.objects.into_iter().map(|o| o.key).collect()
    }

    async fn head(&mut self, store: &Resource<StoreHandle>, key: &str) -> Result<u64, WitError> {
        let store = Resource::new_borrow(store.rep());
        HostStore::head(&mut self.view(), store, key.into())
            .await
            .unwrap()
            .map(|m| m.size)
    }
}

/// What every store promises a writer: nothing is visible under the key
/// (nor in a listing) until `finish`, and an abandoned writer leaves
/// nothing behind, not even a temporary file the raw client could see.
/// 10 MiB is over the upload buffer, so the multipart (HDFS: temporary
/// file) path is the one taken.
async fn write_semantics_on(remote: &impl RemoteStore) {
    const SIZE: usize = 10 << 20;
    let prefix = unique_prefix("writes");
    let raw = remote.client();
    let mut direct = Direct::new(remote.store_config(&prefix));
    let store = direct.open().await;

    let (writer, body) = direct.write(&store, "dir/done.bin", SIZE).await;
    assert!(
        matches!(
            direct.head(&store, "dir/done.bin").await,
            Err(WitError::NotFound)
        ),
        "visible before finish on {}",
        remote.name()
    );
    assert_eq!(direct.list(&store).await, Vec::<String>::new());
    direct.table.delete(body).unwrap();
    let meta = HostWriter::finish(&mut direct.view(), writer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.size, SIZE as u64);
    assert_eq!(direct.list(&store).await, vec!["dir/done.bin".to_string()]);

    // Abandoned: the run drops the writer without `finish`.
    let (writer, body) = direct.write(&store, "dir/dropped.bin", SIZE).await;
    direct.table.delete(body).unwrap();
    HostWriter::drop(&mut direct.view(), writer).await.unwrap();
    // The abort runs in the background: wait for the store to settle.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let keys = keys_under(raw.as_ref(), &prefix).await;
        if keys == ["dir/done.bin"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an abandoned writer left {keys:?} on {}",
            remote.name()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(matches!(
        direct.head(&store, "dir/dropped.bin").await,
        Err(WitError::NotFound)
    ));
}

#[tokio::test]
async fn writes_on_s3_appear_only_when_finished() {
    let Some(s3) = s3_env() else { return };
    write_semantics_on(&s3).await;
}

#[tokio::test]
async fn writes_on_hdfs_appear_only_when_finished() {
    let Some(hdfs) = hdfs_env() else { return };
    write_semantics_on(&hdfs).await;
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
    sql_probe_on("postgres", &url).await;
}

#[tokio::test]
async fn sql_on_mysql() {
    let Some(url) = mysql_url() else { return };
    sql_probe_on("mysql", &url).await;
    // What the probe left behind, through the `mariadb` client: its
    // committed rows, and none of the rolled-back ones (100 and 200).
    let seen = mariadb_cli(&url, "SELECT count(*), sum(n), max(n) FROM probe_seq");
    assert_eq!(seen.trim_end(), "26\t600\t300");
    let values = mariadb_cli(
        &url,
        "SET time_zone = '+00:00'; \
         SELECT v_bool, v_int, HEX(v_blob), v_ts FROM probe_values WHERE id = 1",
    );
    assert_eq!(
        values.trim_end(),
        "1\t9007199254740993\t0001027F80FEFF\t2024-05-01 12:00:00.123456"
    );
}

/// `sql-probe` on the server database `kind` (`postgres`, `mysql`) at
/// `url`: every call passes and every value kind round-trips.
async fn sql_probe_on(kind: &str, url: &str) {
    let mut config = base_config();
    config.sql =
        toml::from_str(&format!("[warehouse]\ntype = \"{kind}\"\nurl = \"{url}\"")).unwrap();
    let report = probe(
        config,
        "sql-probe",
        Grants::default().with_sql("warehouse"),
        &[("db", "warehouse")],
    )
    .await;
    assert_all_ok(&report);
    assert_eq!(report["dialect"], kind);
    assert_eq!(report["batches"], serde_json::json!([10, 10, 5]));
    for (value_kind, outcome) in report["roundtrip"].as_object().unwrap() {
        // MariaDB's JSON is text: the probe reports it without failing.
        if kind == "mysql" && value_kind == "json" {
            continue;
        }
        assert_eq!(
            outcome["match"], true,
            "{value_kind} did not round-trip on {kind}: {outcome}"
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

/// The limits of `text`, a `caisson.toml` with only `[limits.*]` tables,
/// read by the runtime's own parser.
fn limits_from(text: &str) -> caisson_runtime::RunLimits {
    Config::parse(text).expect("valid limits").limits
}

/// `[limits.objects] max_object_bytes` reaches the runs: `key-probe` puts
/// 3 bytes, which a 2-byte limit refuses and a 3-byte one lets through.
#[tokio::test]
async fn a_configured_object_size_limit_refuses_a_larger_put() {
    for (limit, expected) in [(2, "too-large"), (3, "ok")] {
        let mut config = base_config();
        config.objects = toml::from_str("[data]\ntype = \"memory\"").unwrap();
        config.limits = limits_from(&format!("[limits.objects]\nmax_object_bytes = {limit}"));
        let rt = runtime(config);
        let task = load(&rt, "key-probe").await;
        let (result, log) = run_with(&rt, &task, br#"["k"]"#, |r| {
            r.grants = Grants::default().with_object_store("data");
        })
        .await;
        let output = result.unwrap_or_else(|e| panic!("{e}; log: {:?}", log.records()));
        assert_eq!(json(&output)["k"], expected, "with a {limit}-byte limit");
    }
}

/// `[limits.sql] max_rows` reaches the runs: a query of one row more than
/// the limit is `too-large`, one of exactly the limit returns its rows.
#[tokio::test]
async fn a_configured_sql_row_limit_refuses_a_larger_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.sql = toml::from_str(&format!(
        "[db]\ntype = \"sqlite\"\nurl = \"sqlite://{}/limits.db?mode=rwc\"",
        dir.path().display()
    ))
    .unwrap();
    config.limits = limits_from("[limits.sql]\nmax_rows = 2");
    let rt = runtime(config);
    let task = load(&rt, "sql-script").await;
    let input = serde_json::json!({ "db": "db", "steps": [
        { "sql": "SELECT 1 AS n UNION ALL SELECT 2" },
        { "sql": "SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3" },
    ]});
    let (result, log) = run_with(&rt, &task, input.to_string().as_bytes(), |r| {
        r.grants = Grants::default().with_sql("db");
    })
    .await;
    let output = result.unwrap_or_else(|e| panic!("{e}; log: {:?}", log.records()));
    let results = json(&output)["results"].clone();
    assert_eq!(
        results[0]["rows"].as_array().map(Vec::len),
        Some(2),
        "{results}"
    );
    assert_eq!(results[1]["error"], "too-large", "{results}");
}

/// A guest's `invalid-input` message for `key` on a real S3 `put`.
async fn put_error(direct: &mut Direct, store: &Resource<StoreHandle>, key: String) -> WitError {
    let store = Resource::new_borrow(store.rep());
    HostStore::put(&mut direct.view(), store, key, b"x".to_vec(), None)
        .await
        .unwrap()
        .expect_err("refused")
}

/// Keys over `max_key_bytes` are refused without being quoted back: a
/// 5,000,000-byte key used to come back whole in the error. A shorter bad
/// key is quoted, cut to `max_error_bytes` and marked with `…`.
#[tokio::test]
async fn huge_keys_on_s3_are_refused_without_being_echoed() {
    let Some(s3) = s3_env() else { return };
    let mut direct = Direct::new(s3.store_config(&unique_prefix("keys")));
    let store = direct.open().await;
    match put_error(&mut direct, &store, "k".repeat(5_000_000)).await {
        WitError::InvalidInput(message) => {
            assert!(
                message.contains("1024-byte limit (max_key_bytes)"),
                "{message}"
            );
            assert!(message.len() < 200, "{} bytes", message.len());
        }
        other => panic!("expected invalid-input, got {other:?}"),
    }
    assert!(matches!(
        put_error(&mut direct, &store, "k".repeat(1025)).await,
        WitError::InvalidInput(_)
    ));
    match put_error(&mut direct, &store, format!("{}/../x", "d".repeat(900))).await {
        WitError::InvalidInput(message) => {
            assert!(
                message.len() <= 256 + '…'.len_utf8(),
                "{} bytes",
                message.len()
            );
            assert!(message.ends_with('…'), "{message}");
        }
        other => panic!("expected invalid-input, got {other:?}"),
    }
}

/// The SQL caps through a real guest on SQLite and PostgreSQL: a 5 MB
/// statement is `too-large` naming the cap (and the run goes on), a bad
/// statement quoted by the database comes back cut to 256 bytes.
#[tokio::test]
async fn a_guests_giant_statement_is_refused_with_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut tables = vec![format!(
        "[db]\ntype = \"sqlite\"\nurl = \"sqlite://{}/caps.db?mode=rwc\"",
        dir.path().display()
    )];
    if let Some(url) = postgres_url() {
        tables.push(format!("[db]\ntype = \"postgres\"\nurl = \"{url}\""));
    }
    for table in tables {
        let mut config = base_config();
        config.sql = toml::from_str(&table).unwrap();
        let rt = runtime(config);
        let task = load(&rt, "sql-script").await;
        let giant = format!("SELECT '{}'", "a".repeat(5_000_000));
        let bad = format!("SELECT '{}", "q".repeat(100_000));
        let input = serde_json::json!({ "db": "db", "steps": [
            { "sql": giant },
            { "sql": bad },
            { "sql": "SELECT 1 AS n" },
        ]});
        let (result, log) = run_with(&rt, &task, input.to_string().as_bytes(), |r| {
            r.grants = Grants::default().with_sql("db");
        })
        .await;
        let output = result.unwrap_or_else(|e| panic!("{e}; log: {:?}", log.records()));
        let results = json(&output)["results"].clone();
        assert_eq!(results[0]["error"], "too-large", "{table}: {results:.300}");
        let message = results[0]["message"].as_str().unwrap();
        assert!(message.contains("max_statement_bytes"), "{message}");
        assert_eq!(results[1]["error"], "database", "{table}");
        let message = results[1]["message"].as_str().unwrap();
        // The SDK's text adds the kind and SQLSTATE around the database's.
        assert!(message.len() < 400, "{table}: {} bytes", message.len());
        assert!(message.contains('…'), "{message}");
        assert_eq!(results[2]["rows"][0]["n"], 1, "{table}");
    }
}
