//! The coordination database, tested directly against both backends.
//!
//! Every test runs on a fresh SQLite file and, when
//! `CAISSON_TEST_POSTGRES_URL` is set, on PostgreSQL in a fresh schema of
//! that database (dropped afterwards), so tests never see each other's
//! rows. With `CAISSON_REQUIRE_SERVICES=1` a missing PostgreSQL URL fails
//! the tests instead of skipping that backend.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use caisson_host_api::Grants;
use caisson_host_api::log::Level;
use caisson_server::model::{LogSource, NewLogLine, RunSpec, RunState};
use caisson_server::store::{
    AttemptOutcome, ClaimAsk, Db, DbError, DbKind, ModuleRecord, NewSplit, NewStep, RunFilter,
    ScheduleRecord, Settled, TenantQuotas,
};
use caisson_tests::postgres_url;
use sqlx::Connection;

const NOW: i64 = 1_700_000_000_000;
const GIB: i64 = 1 << 30;
const LEASE: Duration = Duration::from_secs(30);

// ---- backends

/// Drops a PostgreSQL test schema, also when the test panicked.
struct SchemaGuard {
    admin_url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let schema = self.schema.clone();
        // Drop may run while a panicking test's runtime is still on this
        // thread, so the cleanup gets its own thread and runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&url).await?;
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut admin)
                    .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("note: could not drop test schema {}", self.schema);
        }
    }
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] SchemaGuard),
}

struct Backend {
    db: Db,
    /// Connects another `Db` to the same database.
    url: String,
    _cleanup: Cleanup,
}

async fn sqlite(max_connections: u32) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("caisson.db").display());
    let db = Db::connect(&url, max_connections).await.unwrap();
    assert_eq!(db.kind(), DbKind::Sqlite);
    Backend {
        db,
        url,
        _cleanup: Cleanup::Sqlite(dir),
    }
}

async fn postgres(admin_url: &str, max_connections: u32) -> Backend {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let guard = SchemaGuard {
        admin_url: admin_url.to_owned(),
        schema: schema.clone(),
    };
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
    let db = Db::connect(&url, max_connections).await.unwrap();
    assert_eq!(db.kind(), DbKind::Postgres);
    Backend {
        db,
        url,
        _cleanup: Cleanup::Postgres(guard),
    }
}

/// An empty PostgreSQL database, for a test of what only PostgreSQL
/// does; `None` when none is configured (`postgres_url` fails instead
/// when services are required).
async fn postgres_only() -> Option<Backend> {
    Some(postgres(&postgres_url()?, 5).await)
}

/// [`postgres_only`], with tenant "acme" under `quotas`: its id.
async fn postgres_acme(quotas: TenantQuotas) -> Option<(Backend, String)> {
    let backend = postgres_only().await?;
    let t = acme(&backend.db, quotas).await;
    Some((backend, t))
}

/// Runs `test` on each backend, each time on an empty database.
async fn each_backend<F, Fut>(max_connections: u32, test: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = Backend>,
{
    let backend = sqlite(max_connections).await;
    eprintln!("-- sqlite");
    let backend = test(backend).await;
    backend.db.close().await;
    if let Some(url) = postgres_url() {
        let backend = postgres(&url, max_connections).await;
        eprintln!("-- postgres");
        let backend = test(backend).await;
        backend.db.close().await;
    }
}

/// Runs `test` with a `Db` on each backend.
async fn each_db<F, Fut>(test: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()>,
{
    each_backend(5, |backend| {
        let run = test(backend.db.clone());
        async move {
            run.await;
            backend
        }
    })
    .await;
}

// ---- fixtures

fn new_run(tenant: &str) -> RunSpec {
    RunSpec {
        tenant_id: tenant.to_owned(),
        module_name: "hello".into(),
        module_version: "1.0.0".into(),
        digest: "ab".repeat(32),
        input: b"{\"x\":1}".to_vec(),
        params: BTreeMap::from([("greeting".to_owned(), "hi".to_owned())]),
        grants: Grants::default()
            .with_object_store("reports")
            .with_sql("main"),
        timeout_ms: 30_000,
        memory_bytes: 64 << 20,
        fuel: None,
        max_retries: 2,
        backoff_ms: 1_000,
        retry_timeouts: false,
        priority: 0,
        idempotency_key: None,
        not_before: NOW,
        schedule_id: None,
        workflow_run_id: None,
        step_name: None,
        logical_date: None,
        trace_parent: None,
    }
}

/// Tenant "acme", with `quotas`: its id.
async fn acme(db: &Db, quotas: TenantQuotas) -> String {
    let t = db.ensure_tenant("acme").await.unwrap();
    db.set_tenant_quotas(&t, &quotas).await.unwrap();
    t
}

async fn submit(db: &Db, tenant: &str, now: i64, edit: impl FnOnce(&mut RunSpec)) -> String {
    let mut run = new_run(tenant);
    edit(&mut run);
    let (id, created) = db.submit_run(&run, now).await.unwrap();
    assert!(created);
    id
}

fn module(name: &str, version: &str, digest: &str, created_at: i64) -> ModuleRecord {
    ModuleRecord {
        name: name.into(),
        version: version.into(),
        digest: digest.into(),
        size: 1234,
        created_at,
    }
}

fn lines(messages: &[&str]) -> Vec<NewLogLine> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| NewLogLine {
            time: NOW + i as i64,
            level: Level::Info,
            source: LogSource::Task,
            message: (*m).to_owned(),
        })
        .collect()
}

// ---- connection, errors

#[tokio::test]
async fn connect_migrates_and_pings() {
    each_backend(2, |backend| async move {
        backend.db.ping().await.unwrap();
        // Connecting again to a migrated database is fine and sees the data.
        let tenant = backend.db.ensure_tenant("acme").await.unwrap();
        let again = Db::connect(&backend.url, 2).await.unwrap();
        assert_eq!(again.ensure_tenant("acme").await.unwrap(), tenant);
        again.close().await;
        backend
    })
    .await;
}

#[tokio::test]
async fn sqlite_creates_the_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let db = Db::connect(&format!("sqlite://{}", path.display()), 2)
        .await
        .unwrap();
    db.ensure_tenant("acme").await.unwrap();
    assert!(path.exists());
    // The write-ahead log sits beside the database while it is open.
    assert!(dir.path().join("new.db-wal").exists());
    db.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let db = Db::connect("sqlite::memory:", 4).await.unwrap();
    let tenant = db.ensure_tenant("acme").await.unwrap();
    let id = submit(&db, &tenant, NOW, |_| {}).await;
    assert!(db.get_run(&tenant, &id).await.unwrap().is_some());
}

#[tokio::test]
async fn unreachable_database_is_unavailable_and_hides_the_password() {
    let err = Db::connect("postgres://caisson:s3cret-pw@127.0.0.1:1/caisson", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(!text.contains("127.0.0.1:1"), "{text}");
}

#[tokio::test]
async fn unknown_scheme_is_rejected() {
    let err = Db::connect("mysql://root:pw@localhost/db", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Other(_)), "{err:?}");
    assert!(!err.to_string().contains("pw@"));
}

#[tokio::test]
async fn closed_pool_is_unavailable() {
    each_db(|db| async move {
        db.close().await;
        let err = db.ping().await.unwrap_err();
        assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn wrong_password_hides_the_password() {
    let Some(url) = postgres_url() else { return };
    let mut parsed = url::Url::parse(&url).unwrap();
    parsed.set_password(Some("not-the-password-xyz")).unwrap();
    let err = Db::connect(parsed.as_str(), 1).await.unwrap_err();
    assert!(
        !format!("{err} {err:?}").contains("not-the-password-xyz"),
        "{err:?}"
    );
}

/// A pooled PostgreSQL connection is handed out without a ping while it
/// was in use a moment ago (sqlx pinged it on its way back to the pool),
/// and with one once it has sat idle for a second: so the connections of
/// a pool whose backends were killed while idle (a restart, an operator's
/// `pg_terminate_backend`) are replaced on their next use, not used.
#[tokio::test]
async fn on_postgresql_connections_that_died_idle_are_replaced_not_used() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let app = format!("caisson_idle_{}", uuid::Uuid::new_v4().simple());
    let db = Db::connect(&format!("{}&application_name={app}", backend.url), 2)
        .await
        .unwrap();
    // Two connections in the pool, both used and now idle.
    let (a, b) = tokio::join!(db.ensure_tenant("acme"), db.ensure_tenant("acme"));
    let tenant = a.unwrap();
    assert_eq!(b.unwrap(), tenant);

    let mut admin = sqlx::PgConnection::connect(&postgres_url().unwrap())
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
         FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 1, "no backend of the pool was found to kill");
    let gone = std::time::Instant::now();
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&app)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "{left} backends survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the idle time after which a connection is pinged (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for _ in 0..4 {
        assert_eq!(db.ensure_tenant("acme").await.unwrap(), tenant);
    }
    let (a, b) = tokio::join!(db.ensure_tenant("acme"), db.ping());
    assert_eq!(a.unwrap(), tenant);
    b.unwrap();
    db.close().await;
    admin.close().await.unwrap();
    backend.db.close().await;
}

// ---- tenants and tokens

#[tokio::test]
async fn tenants_and_tokens() {
    each_db(|db| async move {
        let a = db.ensure_tenant("acme").await.unwrap();
        assert_eq!(db.ensure_tenant("acme").await.unwrap(), a);
        let b = db.ensure_tenant("bravo").await.unwrap();
        assert_ne!(a, b);
        let tenants = db.list_tenants().await.unwrap();
        assert_eq!(
            tenants,
            vec![
                (a.clone(), "acme".to_owned()),
                (b.clone(), "bravo".to_owned())
            ]
        );

        let t1 = db.add_token(&a, "hash-1", false).await.unwrap();
        assert_eq!(
            db.add_token(&a, "hash-1", false).await.unwrap(),
            t1,
            "idempotent on the hash"
        );
        let t2 = db.add_token(&b, "hash-2", true).await.unwrap();
        assert_eq!(db.token("hash-1").await.unwrap(), Some((a.clone(), false)));
        assert_eq!(db.token("hash-2").await.unwrap(), Some((b.clone(), true)));
        assert_eq!(db.token("nope").await.unwrap(), None);
        // A hash can't move to another tenant.
        let err = db.add_token(&b, "hash-1", false).await.unwrap_err();
        assert!(matches!(err, DbError::Conflict(_)), "{err:?}");

        assert!(db.revoke_token(&t1).await.unwrap());
        assert!(!db.revoke_token(&t1).await.unwrap(), "already revoked");
        assert!(!db.revoke_token("no-such-token").await.unwrap());
        assert_eq!(db.token("hash-1").await.unwrap(), None);
        // Re-adding a revoked hash does not bring it back.
        assert_eq!(db.add_token(&a, "hash-1", false).await.unwrap(), t1);
        assert_eq!(db.token("hash-1").await.unwrap(), None);
        assert_eq!(db.token("hash-2").await.unwrap(), Some((b, true)));
        let _ = t2;
    })
    .await;
}

// ---- modules

#[tokio::test]
async fn modules_insert_resolve_delete() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let other = db.ensure_tenant("bravo").await.unwrap();
        let v1 = module("hello", "1.0.0", "d1", 100);
        let v2 = module("hello", "2.0.0", "d2", 200);
        // Same creation time as v2: the version breaks the tie.
        let v3 = module("hello", "3.0.0", "d2", 200);
        let w = module("world", "0.1.0", "d9", 50);
        for m in [&v1, &v2, &v3, &w] {
            assert!(db.insert_module(&t, m).await.unwrap());
        }
        assert!(
            !db.insert_module(&t, &v1).await.unwrap(),
            "same digest: no-op"
        );
        let err = db
            .insert_module(&t, &module("hello", "1.0.0", "other", 300))
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::Conflict(_)), "{err:?}");
        assert_eq!(
            db.resolve_module(&t, "hello", Some("1.0.0"), None)
                .await
                .unwrap(),
            Some(v1.clone())
        );

        assert_eq!(
            db.list_modules(&t).await.unwrap(),
            vec![v1.clone(), v2.clone(), v3.clone(), w.clone()]
        );
        assert_eq!(
            db.module_versions(&t, "hello").await.unwrap(),
            vec![v3.clone(), v2.clone(), v1.clone()]
        );
        assert_eq!(db.module_versions(&t, "nope").await.unwrap(), vec![]);

        let resolve = |v: Option<&'static str>, d: Option<&'static str>| {
            let db = db.clone();
            let t = t.clone();
            async move { db.resolve_module(&t, "hello", v, d).await.unwrap() }
        };
        assert_eq!(resolve(None, None).await, Some(v3.clone()), "newest");
        assert_eq!(resolve(Some("2.0.0"), None).await, Some(v2.clone()));
        assert_eq!(resolve(None, Some("d1")).await, Some(v1.clone()));
        assert_eq!(
            resolve(None, Some("d2")).await,
            Some(v3.clone()),
            "newest with that digest"
        );
        assert_eq!(resolve(Some("2.0.0"), Some("d2")).await, Some(v2.clone()));
        assert_eq!(
            resolve(Some("2.0.0"), Some("d1")).await,
            None,
            "version and digest disagree"
        );
        assert_eq!(resolve(Some("9.9.9"), None).await, None);
        assert_eq!(resolve(None, Some("zz")).await, None);

        // The same module name in another tenant is another module.
        assert!(
            db.insert_module(&other, &module("hello", "1.0.0", "other", 300))
                .await
                .unwrap()
        );
        assert!(db.digest_in_use("d1").await.unwrap());
        assert!(db.digest_in_use("other").await.unwrap());
        assert!(!db.digest_in_use("zz").await.unwrap());

        assert_eq!(
            db.delete_module(&t, "hello", Some("1.0.0")).await.unwrap(),
            1
        );
        assert_eq!(
            db.delete_module(&t, "hello", Some("1.0.0")).await.unwrap(),
            0
        );
        assert!(!db.digest_in_use("d1").await.unwrap());
        assert_eq!(
            db.resolve_module(&t, "hello", Some("1.0.0"), None)
                .await
                .unwrap(),
            None
        );
        assert_eq!(db.delete_module(&t, "hello", None).await.unwrap(), 2);
        assert!(!db.digest_in_use("d2").await.unwrap());
        assert_eq!(db.list_modules(&t).await.unwrap(), vec![w]);
        // The other tenant's module is untouched.
        assert_eq!(db.list_modules(&other).await.unwrap().len(), 1);
        // A deleted version can be recorded again, with any digest.
        assert!(
            db.insert_module(&t, &module("hello", "1.0.0", "new", 400))
                .await
                .unwrap()
        );
    })
    .await;
}

/// On PostgreSQL, admission reads that arrive while one is in flight wait
/// in the process and then go together, and each caller gets its own
/// answer: the module its reference resolves to, with its tenant's grants,
/// or none.
#[tokio::test]
async fn on_postgresql_admission_reads_go_together_and_answer_each_its_own() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let db = backend.db.clone();
    let a = db.ensure_tenant("acme").await.unwrap();
    let b = db.ensure_tenant("bravo").await.unwrap();
    let lake = Grants {
        objects: ["lake".to_string()].into(),
        ..Grants::default()
    };
    db.set_tenant_grants(&b, &lake).await.unwrap();
    let (v1, v2) = (
        module("hello", "1.0.0", "d1", 100),
        module("hello", "2.0.0", "d2", 200),
    );
    let theirs = module("hello", "1.0.0", "d3", 300);
    for (t, m) in [(&a, &v1), (&a, &v2), (&b, &theirs)] {
        assert!(db.insert_module(t, m).await.unwrap());
    }
    type Reference = (
        String,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: Vec<(Reference, Option<(ModuleRecord, Grants)>)> = vec![
        (
            (a.clone(), "hello", None, None),
            Some((v2.clone(), Grants::default())),
        ),
        (
            (a.clone(), "hello", Some("1.0.0"), None),
            Some((v1.clone(), Grants::default())),
        ),
        (
            (a.clone(), "hello", None, Some("d1")),
            Some((v1.clone(), Grants::default())),
        ),
        ((a.clone(), "hello", Some("2.0.0"), Some("d1")), None),
        ((a.clone(), "world", None, None), None),
        (
            (b.clone(), "hello", None, None),
            Some((theirs.clone(), lake.clone())),
        ),
        ((b.clone(), "hello", Some("2.0.0"), None), None),
    ];
    let read = |(t, name, version, digest): Reference| {
        let db = db.clone();
        tokio::spawn(async move {
            db.resolve_module_and_grants(&t, name, version, digest)
                .await
                .unwrap()
        })
    };

    // Reads of the modules wait while another transaction holds the table.
    let (mut lock, locker) = holding(
        &backend,
        "LOCK TABLE modules IN ACCESS EXCLUSIVE MODE",
        None,
    )
    .await;
    let mut watch = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    let first = read(cases[0].0.clone());
    for _ in 0..200 {
        if blocked_by(&mut watch, locker).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        blocked_by(&mut watch, locker).await,
        1,
        "the first read waits on the lock"
    );
    let waiting: Vec<_> = (cases.iter())
        .map(|(reference, _)| read(reference.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        blocked_by(&mut watch, locker).await,
        1,
        "the reads that came after wait for the one in flight, not on connections of their own"
    );
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    assert_eq!(first.await.unwrap(), cases[0].1);
    for (answer, (reference, expected)) in waiting.into_iter().zip(&cases) {
        assert_eq!(&answer.await.unwrap(), expected, "{reference:?}");
    }
    watch.close().await.unwrap();
    lock.close().await.unwrap();
    backend.db.close().await;
}

// ---- runs

#[tokio::test]
async fn submit_and_get_round_trip_every_field() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let mut run = new_run(&t);
        run.input = Vec::new();
        run.fuel = Some(1_000_000);
        run.retry_timeouts = true;
        run.priority = -3;
        run.idempotency_key = Some("key-1".into());
        run.not_before = NOW + 5;
        run.schedule_id = Some("sched".into());
        run.workflow_run_id = Some("wf".into());
        run.step_name = Some("step".into());
        run.logical_date = Some(NOW - 86_400_000);
        run.params.insert("empty".into(), String::new());
        let (id, created) = db.submit_run(&run, NOW).await.unwrap();
        assert!(created);
        let got = db.get_run(&t, &id).await.unwrap().unwrap();
        assert_eq!(got.id, id);
        assert_eq!(got.spec.tenant_id, t);
        assert_eq!(got.spec.module_name, run.module_name);
        assert_eq!(got.spec.module_version, run.module_version);
        assert_eq!(got.spec.digest, run.digest);
        assert_eq!(got.spec.input, Vec::<u8>::new());
        assert_eq!(got.spec.params, run.params);
        assert_eq!(got.spec.grants, run.grants);
        assert_eq!(got.spec.timeout_ms, run.timeout_ms);
        assert_eq!(got.spec.memory_bytes, run.memory_bytes);
        assert_eq!(got.spec.fuel, Some(1_000_000));
        assert_eq!(got.spec.max_retries, run.max_retries);
        assert_eq!(got.spec.backoff_ms, run.backoff_ms);
        assert!(got.spec.retry_timeouts);
        assert_eq!(got.spec.priority, -3);
        assert_eq!(got.spec.idempotency_key.as_deref(), Some("key-1"));
        assert_eq!(got.state, RunState::Queued);
        assert_eq!(got.attempts, 0);
        assert_eq!(got.spec.not_before, NOW + 5);
        assert_eq!(got.created_at, NOW);
        assert_eq!(got.started_at, None);
        assert_eq!(got.finished_at, None);
        assert_eq!(got.worker_id, None);
        assert_eq!(got.lease_until, None);
        assert!(!got.cancel_requested);
        assert_eq!(got.output, None);
        assert_eq!(got.error, None);
        assert_eq!(got.retryable, None);
        assert_eq!(got.spec.schedule_id.as_deref(), Some("sched"));
        assert_eq!(got.spec.workflow_run_id.as_deref(), Some("wf"));
        assert_eq!(got.spec.step_name.as_deref(), Some("step"));
        assert_eq!(got.spec.logical_date, Some(NOW - 86_400_000));
        assert_eq!(db.get_run_any(&id).await.unwrap(), Some(got));
        assert_eq!(db.get_run_any("nope").await.unwrap(), None);

        // Binary input survives as is.
        let bytes: Vec<u8> = (0..=255u8).collect();
        let id = submit(&db, &t, NOW, |r| r.input = bytes.clone()).await;
        assert_eq!(
            db.get_run(&t, &id).await.unwrap().unwrap().spec.input,
            bytes
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_idempotent_per_tenant_and_key() {
    each_db(|db| async move {
        let a = db.ensure_tenant("acme").await.unwrap();
        let b = db.ensure_tenant("bravo").await.unwrap();
        let mut run = new_run(&a);
        run.idempotency_key = Some("k".into());
        let (first, created) = db.submit_run(&run, NOW).await.unwrap();
        assert!(created);
        let (again, created) = db.submit_run(&run, NOW + 1).await.unwrap();
        assert_eq!((again.as_str(), created), (first.as_str(), false));

        // The same key in another tenant is another run.
        let mut other = run.clone();
        other.tenant_id = b.clone();
        let (theirs, created) = db.submit_run(&other, NOW).await.unwrap();
        assert!(created);
        assert_ne!(theirs, first);

        // Without a key every submit is new.
        let x = submit(&db, &a, NOW, |_| {}).await;
        let y = submit(&db, &a, NOW, |_| {}).await;
        assert_ne!(x, y);

        // Concurrent submits with one fresh key: exactly one creates.
        let mut racing = new_run(&a);
        racing.idempotency_key = Some("race".into());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let db = db.clone();
                let racing = racing.clone();
                tokio::spawn(async move { db.submit_run(&racing, NOW).await.unwrap() })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(
            results.iter().filter(|(_, created)| *created).count(),
            1,
            "{results:?}"
        );
        let ids: HashSet<_> = results.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids.len(), 1, "{results:?}");
        let filter = RunFilter {
            limit: 100,
            ..RunFilter::default()
        };
        assert_eq!(db.list_runs(&a, &filter).await.unwrap().len(), 4);
    })
    .await;
}

/// A batch of 150 runs, more than one multi-row insert takes on
/// PostgreSQL (64): every answer in the batch's order, a key an earlier
/// run holds naming that run, a key used twice (in different statements
/// of the batch) naming the first of the two, and each new run stored
/// with its own values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_insert_answers_each_run_in_order() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let earlier = submit(&db, &t, NOW, |run| {
            run.idempotency_key = Some("held".into())
        })
        .await;
        let batch: Vec<RunSpec> = (0..150_usize)
            .map(|i| {
                let mut run = new_run(&t);
                run.priority = i as i64;
                run.idempotency_key = match i {
                    7 => Some("held".into()),
                    10 | 100 => Some("twice".into()),
                    _ if i % 3 == 0 => Some(format!("k{i}")),
                    _ => None,
                };
                run
            })
            .collect();
        let answers = db.submit_runs(&batch, NOW + 1).await.unwrap();
        assert_eq!(answers.len(), 150);
        assert_eq!(answers[7], (earlier, false));
        assert_eq!(answers[100], (answers[10].0.clone(), false));
        assert!(answers[10].1);
        let new: Vec<usize> = (0..150).filter(|&i| answers[i].1).collect();
        assert_eq!(new.len(), 148, "{answers:?}");
        let ids: HashSet<&String> = new.iter().map(|&i| &answers[i].0).collect();
        assert_eq!(ids.len(), 148, "each new run its own id");
        for &i in &new {
            let stored = db.get_run(&t, &answers[i].0).await.unwrap().unwrap();
            assert_eq!(stored.spec.priority, i as i64, "run {i}");
            assert_eq!(
                stored.spec.idempotency_key, batch[i].idempotency_key,
                "run {i}"
            );
        }
        let filter = RunFilter {
            limit: 1000,
            ..RunFilter::default()
        };
        assert_eq!(db.list_runs(&t, &filter).await.unwrap().len(), 149);
    })
    .await;
}

#[tokio::test]
async fn list_runs_filters_and_pages() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let mut ids = Vec::new();
        for i in 0..7i64 {
            // Two runs share each creation time, to exercise the id tie-break.
            let id = submit(&db, &t, NOW + i / 2, |r| {
                if i % 2 == 1 {
                    r.module_name = "other".into();
                }
                if i >= 5 {
                    r.workflow_run_id = Some("wf-1".into());
                }
            })
            .await;
            ids.push((NOW + i / 2, id));
        }
        // Newest first: created_at DESC, id DESC.
        let mut expected = ids.clone();
        expected.sort_by(|x, y| y.cmp(x));
        let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

        let all = RunFilter {
            limit: 100,
            ..RunFilter::default()
        };
        let got: Vec<String> = db
            .list_runs(&t, &all)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, expected);

        // Keyset pages of 3 walk the same order without gaps or repeats.
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let filter = RunFilter {
                limit: 3,
                before: before.clone(),
                ..RunFilter::default()
            };
            let page = db.list_runs(&t, &filter).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            let last = page.last().unwrap();
            before = Some((last.created_at, last.id.clone()));
            paged.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(paged, expected);

        let by_module = RunFilter {
            module: Some("other".into()),
            ..all.clone()
        };
        let runs = db.list_runs(&t, &by_module).await.unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.spec.module_name == "other"));

        let since = RunFilter {
            since: Some(NOW + 2),
            ..all.clone()
        };
        assert_eq!(db.list_runs(&t, &since).await.unwrap().len(), 3);

        let wf = RunFilter {
            workflow_run_id: Some("wf-1".into()),
            ..all.clone()
        };
        assert_eq!(db.list_runs(&t, &wf).await.unwrap().len(), 2);

        db.request_cancel(&t, &expected[0], NOW).await.unwrap();
        let cancelled = RunFilter {
            state: Some(RunState::Cancelled),
            ..all.clone()
        };
        let runs = db.list_runs(&t, &cancelled).await.unwrap();
        assert_eq!(
            runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec![expected[0].as_str()]
        );
        let queued = RunFilter {
            state: Some(RunState::Queued),
            module: Some("hello".into()),
            ..all
        };
        assert_eq!(db.list_runs(&t, &queued).await.unwrap().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn claim_respects_priority_age_not_before_and_memory() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let old = submit(&db, &t, NOW, |_| {}).await;
        let young = submit(&db, &t, NOW + 1, |_| {}).await;
        let urgent = submit(&db, &t, NOW + 2, |r| r.priority = 5).await;
        let later = submit(&db, &t, NOW + 3, |r| {
            r.priority = 10;
            r.not_before = NOW + 60_000;
        })
        .await;
        let big = submit(&db, &t, NOW + 4, |r| {
            r.priority = 10;
            r.memory_bytes = 4 * GIB;
        })
        .await;

        let claim = |db: Db| async move { db.claim_run("w1", LEASE, NOW + 10, GIB).await.unwrap() };
        let first = claim(db.clone()).await.unwrap();
        assert_eq!(
            first.run.id, urgent,
            "highest priority that fits and is due"
        );
        assert_eq!(first.attempt, 1);
        assert_eq!(first.run.state, RunState::Running);
        assert_eq!(first.run.attempts, 1);
        assert_eq!(first.run.worker_id.as_deref(), Some("w1"));
        assert_eq!(first.run.lease_until, Some(NOW + 10 + 30_000));
        assert_eq!(first.run.started_at, Some(NOW + 10));
        assert_eq!(
            first.run.spec.params,
            new_run(&t).params,
            "the claim returns the whole run"
        );
        let attempts = db.attempts(&urgent).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].attempt, 1);
        assert_eq!(attempts[0].worker_id, "w1");
        assert_eq!(attempts[0].started_at, NOW + 10);
        assert_eq!(attempts[0].finished_at, None);
        assert_eq!(attempts[0].state, "running");

        assert_eq!(
            claim(db.clone()).await.unwrap().run.id,
            old,
            "then the oldest"
        );
        assert_eq!(claim(db.clone()).await.unwrap().run.id, young);
        assert!(
            claim(db.clone()).await.is_none(),
            "`later` is not due, `big` does not fit"
        );

        let due = db
            .claim_run("w2", LEASE, NOW + 60_000, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(due.run.id, later);
        let roomy = db
            .claim_run("w3", LEASE, NOW, 8 * GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(roomy.run.id, big);
        assert!(
            db.claim_run("w3", LEASE, NOW + 1_000_000, 8 * GIB)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_run() {
    each_backend(10, |backend| async move {
        let db = backend.db.clone();
        let t = db.ensure_tenant("acme").await.unwrap();
        let mut submitted = HashSet::new();
        for i in 0..200 {
            submitted.insert(submit(&db, &t, NOW + i % 7, |r| r.priority = i % 3).await);
        }
        let claimers: Vec<_> = (0..8)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    let worker = format!("worker-{w}");
                    let mut claimed = Vec::new();
                    while let Some(claim) =
                        db.claim_run(&worker, LEASE, NOW + 100, GIB).await.unwrap()
                    {
                        assert_eq!(claim.run.worker_id.as_deref(), Some(worker.as_str()));
                        assert_eq!(claim.attempt, 1);
                        claimed.push(claim.run.id);
                        tokio::task::yield_now().await;
                    }
                    (worker, claimed)
                })
            })
            .collect();
        let mut owner: HashMap<String, String> = HashMap::new();
        let mut busy_workers = 0;
        for task in claimers {
            let (worker, claimed) = task.await.unwrap();
            busy_workers += usize::from(!claimed.is_empty());
            for id in claimed {
                if let Some(previous) = owner.insert(id.clone(), worker.clone()) {
                    panic!("run {id} claimed by {previous} and {worker}");
                }
            }
        }
        assert_eq!(owner.keys().cloned().collect::<HashSet<_>>(), submitted);
        assert!(busy_workers > 1, "the claimers did not overlap");
        // Each run has exactly one attempt row, by the worker that claimed it.
        for (id, worker) in &owner {
            let attempts = db.attempts(id).await.unwrap();
            assert_eq!(attempts.len(), 1);
            assert_eq!(&attempts[0].worker_id, worker);
            let run = db.get_run(&t, id).await.unwrap().unwrap();
            assert_eq!((run.state, run.attempts), (RunState::Running, 1));
            assert_eq!(run.worker_id.as_ref(), Some(worker));
        }
        backend
    })
    .await;
}

#[tokio::test]
async fn finish_succeeded_applies_once() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |_| {}).await;
        let claim = db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
        let done = AttemptOutcome::Succeeded {
            output: b"result".to_vec(),
            output_key: None,
        };

        assert!(
            !db.finish_attempt(&id, "w2", 1, &done, NOW + 5)
                .await
                .unwrap(),
            "not w2's run"
        );
        assert!(
            !db.finish_attempt(&id, "w1", 2, &done, NOW + 5)
                .await
                .unwrap(),
            "not this attempt"
        );
        assert!(
            db.finish_attempt(&id, "w1", claim.attempt, &done, NOW + 5)
                .await
                .unwrap()
        );
        let run = db.get_run(&t, &id).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded);
        assert_eq!(run.output.as_deref(), Some(&b"result"[..]));
        assert_eq!(run.finished_at, Some(NOW + 5));
        assert_eq!(run.lease_until, None);
        assert_eq!(run.error, None);
        let attempts = db.attempts(&id).await.unwrap();
        assert_eq!(attempts[0].state, "succeeded");
        assert_eq!(attempts[0].finished_at, Some(NOW + 5));
        assert_eq!(attempts[0].error, None);

        // A second report, by anyone, changes nothing.
        let failed = AttemptOutcome::Finished {
            state: RunState::Failed,
            error: "late".into(),
            retryable: false,
        };
        assert!(
            !db.finish_attempt(&id, "w1", 1, &failed, NOW + 9)
                .await
                .unwrap()
        );
        assert!(
            !db.finish_attempt(&id, "w1", 1, &done, NOW + 9)
                .await
                .unwrap()
        );
        assert!(
            !db.finish_attempt(&id, "w2", 1, &failed, NOW + 9)
                .await
                .unwrap()
        );
        assert_eq!(db.get_run(&t, &id).await.unwrap().unwrap(), run);
        assert_eq!(db.attempts(&id).await.unwrap(), attempts);
    })
    .await;
}

#[tokio::test]
async fn a_finish_claims_the_next_run_in_its_commit() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let first = submit(&db, &t, NOW, |_| {}).await;
        let second = submit(&db, &t, NOW + 1, |_| {}).await;
        let big = submit(&db, &t, NOW + 2, |r| r.memory_bytes = 4 * GIB).await;
        let claim = db
            .claim_run("w1", LEASE, NOW + 5, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.run.id, first);
        let done = AttemptOutcome::Succeeded {
            output: b"ok".to_vec(),
            output_key: None,
        };
        let ask = |max_memory| ClaimAsk {
            worker_id: "w1",
            lease: LEASE,
            max_memory,
            max_runs: 1,
        };

        // Not this worker's run to finish: nothing finished, nothing claimed.
        let refused = db
            .finish_and_claim(&first, "w2", 1, &done, &[], NOW + 9, true, Some(ask(GIB)))
            .await
            .unwrap();
        assert!(refused.is_none(), "w2 finished w1's run");
        assert_eq!(
            db.get_run(&t, &second).await.unwrap().unwrap().state,
            RunState::Queued,
            "a refused finish claimed"
        );

        // The finish and the next claim, as one claim would take it: the
        // oldest that fits the memory asked.
        let finished = db
            .finish_and_claim(&first, "w1", 1, &done, &[], NOW + 10, true, Some(ask(GIB)))
            .await
            .unwrap()
            .expect("w1's run");
        assert!(finished.settled.is_none(), "not a workflow step");
        let claims = finished.claims.expect("it looked");
        let ids: Vec<&str> = claims.iter().map(|c| c.run.id.as_str()).collect();
        assert_eq!(ids, [second.as_str()]);
        let next = &claims[0];
        assert_eq!((next.attempt, next.run.state), (1, RunState::Running));
        assert_eq!(next.run.lease_until, Some(NOW + 10 + 30_000));
        let run = db.get_run(&t, &first).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded);
        let attempts = db.attempts(&second).await.unwrap();
        assert_eq!((attempts.len(), attempts[0].worker_id.as_str()), (1, "w1"));

        // Nothing left that fits: the finish commits on its own.
        let finished = db
            .finish_and_claim(&second, "w1", 1, &done, &[], NOW + 11, true, Some(ask(GIB)))
            .await
            .unwrap()
            .expect("w1's run");
        assert_eq!(finished.claims.expect("it looked").len(), 0);
        assert_eq!(
            db.get_run(&t, &second).await.unwrap().unwrap().state,
            RunState::Succeeded
        );
        assert_eq!(
            db.get_run(&t, &big).await.unwrap().unwrap().state,
            RunState::Queued,
            "claimed over the memory asked"
        );
    })
    .await;
}

#[tokio::test]
async fn finish_with_a_final_state() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        for (state, retryable) in [
            (RunState::Failed, true),
            (RunState::TimedOut, false),
            (RunState::Cancelled, false),
        ] {
            let id = submit(&db, &t, NOW, |_| {}).await;
            let claim = db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
            assert_eq!(claim.run.id, id);
            let outcome = AttemptOutcome::Finished {
                state,
                error: format!("boom {}", state.as_str()),
                retryable,
            };
            assert!(
                db.finish_attempt(&id, "w1", 1, &outcome, NOW + 7)
                    .await
                    .unwrap()
            );
            let run = db.get_run(&t, &id).await.unwrap().unwrap();
            assert_eq!(run.state, state);
            assert_eq!(run.error, Some(format!("boom {}", state.as_str())));
            assert_eq!(run.retryable, Some(retryable));
            assert_eq!(run.finished_at, Some(NOW + 7));
            assert_eq!(run.output, None);
            let attempts = db.attempts(&id).await.unwrap();
            assert_eq!(attempts[0].state, state.as_str());
            assert_eq!(attempts[0].error, run.error);
            assert_eq!(attempts[0].finished_at, Some(NOW + 7));
            assert!(
                !db.finish_attempt(&id, "w1", 1, &outcome, NOW + 8)
                    .await
                    .unwrap()
            );
        }

        // A non-final state is refused and changes nothing.
        let id = submit(&db, &t, NOW, |_| {}).await;
        db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
        let bogus = AttemptOutcome::Finished {
            state: RunState::Queued,
            error: "x".into(),
            retryable: false,
        };
        assert!(db.finish_attempt(&id, "w1", 1, &bogus, NOW).await.is_err());
        assert_eq!(
            db.get_run(&t, &id).await.unwrap().unwrap().state,
            RunState::Running
        );
    })
    .await;
}

#[tokio::test]
async fn retry_requeues_with_backoff_then_next_attempt() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |_| {}).await;
        db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
        let retry = AttemptOutcome::Retry {
            error: "flaky".into(),
            not_before: NOW + 1_000,
            timed_out: false,
        };
        assert!(
            db.finish_attempt(&id, "w1", 1, &retry, NOW + 10)
                .await
                .unwrap()
        );
        assert!(
            !db.finish_attempt(&id, "w1", 1, &retry, NOW + 10)
                .await
                .unwrap(),
            "applies once"
        );
        let run = db.get_run(&t, &id).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Queued);
        assert_eq!(run.spec.not_before, NOW + 1_000);
        assert_eq!(run.worker_id, None);
        assert_eq!(run.lease_until, None);
        assert_eq!(run.error.as_deref(), Some("flaky"));
        assert_eq!(run.retryable, Some(true));
        assert_eq!(run.finished_at, None);
        assert_eq!(run.attempts, 1);

        assert!(
            db.claim_run("w2", LEASE, NOW + 999, GIB)
                .await
                .unwrap()
                .is_none(),
            "backing off"
        );
        let second = db
            .claim_run("w2", LEASE, NOW + 1_000, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.attempt, 2);
        assert_eq!(
            second.run.started_at,
            Some(NOW),
            "started_at is the first attempt's"
        );
        // The first worker cannot touch the second attempt.
        let done = AttemptOutcome::Succeeded {
            output: vec![],
            output_key: None,
        };
        assert!(
            !db.finish_attempt(&id, "w1", 1, &done, NOW + 1_001)
                .await
                .unwrap()
        );
        let timeout = AttemptOutcome::Retry {
            error: "too slow".into(),
            not_before: NOW + 3_000,
            timed_out: true,
        };
        assert!(
            db.finish_attempt(&id, "w2", 2, &timeout, NOW + 2_000)
                .await
                .unwrap()
        );

        let attempts = db.attempts(&id).await.unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            (attempts[0].attempt, attempts[0].state.as_str()),
            (1, "failed")
        );
        assert_eq!(attempts[0].error.as_deref(), Some("flaky"));
        assert_eq!(attempts[0].finished_at, Some(NOW + 10));
        assert_eq!(
            (attempts[1].attempt, attempts[1].state.as_str()),
            (2, "timed_out")
        );
        assert_eq!(attempts[1].worker_id, "w2");
        assert_eq!(attempts[1].error.as_deref(), Some("too slow"));

        let third = db
            .claim_run("w3", LEASE, NOW + 3_000, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(third.attempt, 3);
        assert!(
            db.finish_attempt(&id, "w3", 3, &done, NOW + 3_100)
                .await
                .unwrap()
        );
        let run = db.get_run(&t, &id).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded);
        assert_eq!(run.output, Some(vec![]));
        assert_eq!(run.attempts, 3);
    })
    .await;
}

#[tokio::test]
async fn heartbeat_extends_the_lease_and_reports_cancel() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |_| {}).await;
        assert_eq!(
            db.heartbeat(&id, "w1", NOW).await.unwrap(),
            None,
            "queued: nobody holds it"
        );
        db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
        assert_eq!(
            db.heartbeat(&id, "w1", NOW + 60_000).await.unwrap(),
            Some(false)
        );
        assert_eq!(
            db.get_run(&t, &id).await.unwrap().unwrap().lease_until,
            Some(NOW + 60_000)
        );
        assert_eq!(db.heartbeat(&id, "w2", NOW + 90_000).await.unwrap(), None);
        assert_eq!(
            db.get_run(&t, &id).await.unwrap().unwrap().lease_until,
            Some(NOW + 60_000)
        );
        assert_eq!(db.heartbeat("nope", "w1", NOW).await.unwrap(), None);

        assert_eq!(
            db.request_cancel(&t, &id, NOW + 1).await.unwrap(),
            Some(RunState::Running)
        );
        assert_eq!(
            db.heartbeat(&id, "w1", NOW + 70_000).await.unwrap(),
            Some(true)
        );

        let cancelled = AttemptOutcome::Finished {
            state: RunState::Cancelled,
            error: "cancelled".into(),
            retryable: false,
        };
        assert!(
            db.finish_attempt(&id, "w1", 1, &cancelled, NOW + 2)
                .await
                .unwrap()
        );
        assert_eq!(
            db.heartbeat(&id, "w1", NOW + 80_000).await.unwrap(),
            None,
            "finished"
        );
    })
    .await;
}

#[tokio::test]
async fn expired_leases_are_requeued_and_the_lost_worker_is_ignored() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let dead = submit(&db, &t, NOW, |_| {}).await;
        let alive = submit(&db, &t, NOW + 1, |_| {}).await;
        let cancelled = submit(&db, &t, NOW + 2, |_| {}).await;
        for worker in ["dead", "alive", "doomed"] {
            db.claim_run(worker, LEASE, NOW, GIB)
                .await
                .unwrap()
                .unwrap();
        }
        db.heartbeat(&alive, "alive", NOW + 100_000)
            .await
            .unwrap()
            .unwrap();
        db.request_cancel(&t, &cancelled, NOW + 1).await.unwrap();

        assert_eq!(
            db.requeue_expired(NOW + 30_000).await.unwrap(),
            0,
            "the lease ends at, not before, now"
        );
        assert_eq!(db.requeue_expired(NOW + 30_001).await.unwrap(), 2);
        assert_eq!(
            db.requeue_expired(NOW + 30_002).await.unwrap(),
            0,
            "idempotent"
        );

        let run = db.get_run(&t, &dead).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Queued);
        assert_eq!(run.worker_id, None);
        assert_eq!(run.lease_until, None);
        assert_eq!(run.attempts, 1);
        assert!(run.spec.not_before <= NOW + 30_001, "re-queued for now");
        let attempts = db.attempts(&dead).await.unwrap();
        assert_eq!(attempts[0].state, "lost");
        assert_eq!(attempts[0].finished_at, Some(NOW + 30_001));

        // A run whose cancel was requested ends cancelled instead of running again.
        let run = db.get_run(&t, &cancelled).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Cancelled);
        assert_eq!(run.finished_at, Some(NOW + 30_001));
        assert_eq!(db.attempts(&cancelled).await.unwrap()[0].state, "lost");

        assert_eq!(
            db.get_run(&t, &alive).await.unwrap().unwrap().state,
            RunState::Running
        );

        // The lost worker comes back: everything it says is ignored.
        let done = AttemptOutcome::Succeeded {
            output: b"late".to_vec(),
            output_key: None,
        };
        assert_eq!(
            db.heartbeat(&dead, "dead", NOW + 40_000).await.unwrap(),
            None
        );
        assert!(
            !db.finish_attempt(&dead, "dead", 1, &done, NOW + 40_000)
                .await
                .unwrap()
        );
        assert!(!db.release_run(&dead, "dead", 1, &[]).await.unwrap());

        let again = db
            .claim_run("new", LEASE, NOW + 40_000, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.run.id.as_str(), again.attempt), (dead.as_str(), 2));
        // Even if the same worker claims the run again, its old attempt stays dead.
        let retry = AttemptOutcome::Retry {
            error: "x".into(),
            not_before: NOW,
            timed_out: false,
        };
        assert!(
            !db.finish_attempt(&dead, "dead", 1, &retry, NOW + 40_001)
                .await
                .unwrap()
        );
        assert!(
            db.finish_attempt(&dead, "new", 2, &done, NOW + 40_002)
                .await
                .unwrap()
        );
        let attempts = db.attempts(&dead).await.unwrap();
        assert_eq!(
            attempts
                .iter()
                .map(|a| a.state.as_str())
                .collect::<Vec<_>>(),
            vec!["lost", "succeeded"]
        );
    })
    .await;
}

#[tokio::test]
async fn cancel_queued_running_and_final_runs() {
    each_db(|db| async move {
        let a = db.ensure_tenant("acme").await.unwrap();
        let b = db.ensure_tenant("bravo").await.unwrap();
        let queued = submit(&db, &a, NOW, |r| r.not_before = NOW + 1_000_000).await;
        let running = submit(&db, &a, NOW, |_| {}).await;
        db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();

        assert_eq!(
            db.request_cancel(&b, &queued, NOW).await.unwrap(),
            None,
            "another tenant's run"
        );
        assert_eq!(db.request_cancel(&b, &running, NOW).await.unwrap(), None);
        assert_eq!(db.request_cancel(&a, "nope", NOW).await.unwrap(), None);
        assert_eq!(
            db.get_run(&a, &queued).await.unwrap().unwrap().state,
            RunState::Queued
        );
        assert!(
            !db.get_run(&a, &running)
                .await
                .unwrap()
                .unwrap()
                .cancel_requested
        );

        assert_eq!(
            db.request_cancel(&a, &queued, NOW + 5).await.unwrap(),
            Some(RunState::Cancelled)
        );
        let run = db.get_run(&a, &queued).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Cancelled);
        assert_eq!(run.finished_at, Some(NOW + 5));
        assert!(
            db.claim_run("w2", LEASE, NOW + 2_000_000, GIB)
                .await
                .unwrap()
                .is_none(),
            "never runs"
        );

        assert_eq!(
            db.request_cancel(&a, &running, NOW + 6).await.unwrap(),
            Some(RunState::Running)
        );
        let run = db.get_run(&a, &running).await.unwrap().unwrap();
        assert!(run.cancel_requested);
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.finished_at, None);

        // Final runs stay as they are.
        assert_eq!(
            db.request_cancel(&a, &queued, NOW + 7).await.unwrap(),
            Some(RunState::Cancelled)
        );
        assert_eq!(
            db.get_run(&a, &queued).await.unwrap().unwrap().finished_at,
            Some(NOW + 5)
        );
        let done = AttemptOutcome::Succeeded {
            output: vec![1],
            output_key: None,
        };
        assert!(
            db.finish_attempt(&running, "w1", 1, &done, NOW + 8)
                .await
                .unwrap()
        );
        let before = db.get_run(&a, &running).await.unwrap().unwrap();
        assert_eq!(
            db.request_cancel(&a, &running, NOW + 9).await.unwrap(),
            Some(RunState::Succeeded)
        );
        assert_eq!(db.get_run(&a, &running).await.unwrap().unwrap(), before);
    })
    .await;
}

#[tokio::test]
async fn release_hands_the_run_back_uncounted() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |_| {}).await;
        let before = db.get_run(&t, &id).await.unwrap().unwrap();
        db.claim_run("w1", LEASE, NOW + 1, GIB)
            .await
            .unwrap()
            .unwrap();

        // The lines saying why go with the release, and only with it.
        let why = |by: &str| [NewLogLine::system(format!("handed back by {by}"))];
        assert!(
            !db.release_run(&id, "w2", 1, &why("w2")).await.unwrap(),
            "not w2's"
        );
        assert!(
            !db.release_run(&id, "w1", 2, &why("w1, attempt 2"))
                .await
                .unwrap(),
            "not that attempt"
        );
        assert!(db.release_run(&id, "w1", 1, &why("w1")).await.unwrap());
        assert!(
            !db.release_run(&id, "w1", 1, &why("w1 again"))
                .await
                .unwrap(),
            "already released"
        );
        assert_eq!(
            db.get_run(&t, &id).await.unwrap().unwrap(),
            before,
            "as if never claimed"
        );
        assert_eq!(db.attempts(&id).await.unwrap(), vec![]);
        let logged: Vec<String> = db
            .logs(&t, &id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|line| line.message)
            .collect();
        assert_eq!(logged, ["handed back by w1"]);

        // A later attempt handed back keeps the earlier ones.
        let claim = db
            .claim_run("w1", LEASE, NOW + 2, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.attempt, 1);
        let retry = AttemptOutcome::Retry {
            error: "e".into(),
            not_before: NOW + 3,
            timed_out: false,
        };
        assert!(
            db.finish_attempt(&id, "w1", 1, &retry, NOW + 3)
                .await
                .unwrap()
        );
        let claim = db
            .claim_run("w2", LEASE, NOW + 4, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.attempt, 2);
        assert!(db.release_run(&id, "w2", 2, &[]).await.unwrap());
        let run = db.get_run(&t, &id).await.unwrap().unwrap();
        assert_eq!(
            (run.state, run.attempts, run.started_at),
            (RunState::Queued, 1, Some(NOW + 2))
        );
        assert_eq!(run.worker_id, None);
        assert_eq!(run.lease_until, None);
        assert_eq!(db.attempts(&id).await.unwrap().len(), 1);
        let claim = db
            .claim_run("w3", LEASE, NOW + 5, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.attempt, 2);
        assert_eq!(db.attempts(&id).await.unwrap()[1].worker_id, "w3");
    })
    .await;
}

/// A tenant's stored `queued_runs` and `running_runs`, where its backend
/// keeps them (SQLite both, migration 0010; PostgreSQL the queued ones,
/// migration 0012), and the same counted from its runs: read on a
/// connection of its own.
async fn run_counts(url: &str, tenant: &str) -> ((Option<i64>, Option<i64>), (i64, i64)) {
    use sqlx::Row;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let stored = if url.starts_with("sqlite:") {
        let row = sqlx::query("SELECT queued_runs, running_runs FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (Some(row.get("queued_runs")), Some(row.get("running_runs")))
    } else {
        let row = sqlx::query("SELECT queued_runs FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (Some(row.get("queued_runs")), None)
    };
    let counted = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), 0) AS BIGINT) AS q, \
         CAST(COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) AS BIGINT) AS r \
         FROM runs WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    (stored, (counted.get("q"), counted.get("r")))
}

/// `result` is a submission refused because its tenant's queue is full
/// (`max_queued_runs` = `limit`).
fn assert_queue_full<T: std::fmt::Debug>(result: &Result<T, DbError>, limit: i64) {
    assert!(
        matches!(
            result,
            Err(DbError::QuotaExceeded { quota: "max_queued_runs", limit: l }) if *l == limit
        ),
        "{result:?}"
    );
}

/// The counts a backend stores (see [`run_counts`]) are the counted ones.
fn assert_stored(stored: (Option<i64>, Option<i64>), counted: (i64, i64), step: &str) {
    if let Some(queued) = stored.0 {
        assert_eq!(queued, counted.0, "{step}: the tenant's queued_runs");
    }
    if let Some(running) = stored.1 {
        assert_eq!(running, counted.1, "{step}: the tenant's running_runs");
    }
}

#[tokio::test]
async fn tenant_run_counts_follow_every_move_of_a_run_and_hold_both_quotas() {
    each_backend(5, |backend| async move {
        let db = backend.db.clone();
        let url = backend.url.clone();
        let t = acme(
            &db,
            TenantQuotas {
                max_queued_runs: 3,
                max_running_runs: 1,
                max_schedules: 1,
            },
        )
        .await;
        let expect = |queued: i64, running: i64, step: &'static str| {
            let url = url.clone();
            let t = t.clone();
            async move {
                let (stored, counted) = run_counts(&url, &t).await;
                assert_eq!(counted, (queued, running), "{step}: the runs");
                assert_stored(stored, counted, step);
            }
        };
        expect(0, 0, "new tenant").await;
        let a = submit(&db, &t, NOW, |_| {}).await;
        let b = submit(&db, &t, NOW + 1, |_| {}).await;
        let c = submit(&db, &t, NOW + 2, |_| {}).await;
        expect(3, 0, "three submitted").await;
        assert_queue_full(&db.submit_run(&new_run(&t), NOW).await, 3);
        expect(3, 0, "a fourth refused").await;

        // Claimed: one running, and the tenant's one running slot taken.
        let claim = db
            .claim_run("w", LEASE, NOW + 3, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.run.id, a);
        expect(2, 1, "claimed").await;
        assert!(
            db.claim_run("w", LEASE, NOW + 3, GIB)
                .await
                .unwrap()
                .is_none()
        );
        // A retry queues it again; a success ends it.
        let retry = AttemptOutcome::Retry {
            error: "e".into(),
            not_before: NOW + 4,
            timed_out: false,
        };
        assert!(
            db.finish_attempt(&a, "w", 1, &retry, NOW + 4)
                .await
                .unwrap()
        );
        expect(3, 0, "retried").await;
        let claim = db
            .claim_run("w", LEASE, NOW + 5, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.run.id, a);
        let done = AttemptOutcome::Succeeded {
            output: b"ok".to_vec(),
            output_key: None,
        };
        assert!(db.finish_attempt(&a, "w", 2, &done, NOW + 6).await.unwrap());
        expect(2, 0, "succeeded").await;
        // Handed back, then lost with its lease.
        let claim = db
            .claim_run("w", LEASE, NOW + 7, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.run.id, b);
        assert!(db.release_run(&b, "w", 1, &[]).await.unwrap());
        expect(2, 0, "handed back").await;
        db.claim_run("w", LEASE, NOW + 8, GIB)
            .await
            .unwrap()
            .unwrap();
        expect(1, 1, "claimed again").await;
        let lease_ms = LEASE.as_millis() as i64;
        assert_eq!(db.requeue_expired(NOW + 9 + lease_ms).await.unwrap(), 1);
        expect(2, 0, "lease expired").await;
        // Cancelled while queued.
        db.request_cancel(&t, &c, NOW + 10).await.unwrap();
        expect(1, 0, "cancelled").await;
        submit(&db, &t, NOW + 11, |_| {}).await;
        submit(&db, &t, NOW + 12, |_| {}).await;
        expect(3, 0, "room again").await;

        // Stored, so a restart (a new pool) starts from them, exact.
        db.close().await;
        let again = Db::connect(&backend.url, 2).await.unwrap();
        again
            .claim_run("w", LEASE, NOW + 13, GIB)
            .await
            .unwrap()
            .unwrap();
        expect(2, 1, "reconnected").await;
        again.close().await;
        backend
    })
    .await;
}

/// On PostgreSQL the queued count is kept once a statement (migration
/// 0017): an insert of several runs counts them once a tenant, and a
/// batch claim counts its runs out in its update of each tenant's row.
/// Both stay exact for runs of two tenants inserted together and claimed
/// together. A count that drifted above the queue (as a server of an
/// older version leaves it when it claims a run it has just submitted)
/// refuses runs until the scheduler's pass counts the full queues again
/// (migration 0018), which mends it and leaves right counts alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_queued_count_is_kept_once_a_statement_and_mended_by_a_recount() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let db = backend.db.clone();
    let tenants = [
        db.ensure_tenant("acme").await.unwrap(),
        db.ensure_tenant("globex").await.unwrap(),
    ];
    let quotas = TenantQuotas {
        max_queued_runs: 30,
        max_running_runs: 100,
        max_schedules: 1,
    };
    for t in &tenants {
        db.set_tenant_quotas(t, &quotas).await.unwrap();
    }
    let expect = |queued: [i64; 2], step: &'static str| {
        let (url, tenants) = (backend.url.clone(), tenants.clone());
        async move {
            for (t, queued) in tenants.iter().zip(queued) {
                let (stored, counted) = run_counts(&url, t).await;
                assert_eq!(counted.0, queued, "{step}: {t}'s queued runs");
                assert_stored(stored, counted, step);
            }
        }
    };

    // 40 submissions at once, 20 a tenant: inserted in groups.
    let submissions: Vec<_> = (0..40)
        .map(|i| {
            let (db, t) = (db.clone(), tenants[i % 2].clone());
            tokio::spawn(async move { submit(&db, &t, NOW + i as i64, |_| {}).await })
        })
        .collect();
    for submission in submissions {
        submission.await.unwrap();
    }
    expect([20, 20], "submitted together").await;
    let mut claimed = 0;
    for (i, left) in [[16, 16], [12, 12], [8, 8]].into_iter().enumerate() {
        let claims = db
            .claim_runs("w", LEASE, NOW + 100 + i as i64, GIB, 8)
            .await
            .unwrap();
        assert_eq!(claims.len(), 8);
        claimed += claims.len();
        expect(left, "claimed in a batch").await;
    }
    assert_eq!(claimed, 24);

    // Drifted up by 25: acme's stored count says 33 queued against a
    // quota of 30, where 8 are.
    let mut admin = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    sqlx::query("UPDATE tenants SET queued_runs = queued_runs + 25 WHERE id = $1")
        .bind(&tenants[0])
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    // The insert trusts the count: refused, and the count left as it was.
    let refused = db.submit_run(&new_run(&tenants[0]), NOW + 200).await;
    assert_queue_full(&refused, 30);
    assert_eq!(run_counts(&backend.url, &tenants[0]).await.0.0, Some(33));
    // The recount mends acme's count alone: globex's is right, and under
    // its quota.
    assert_eq!(db.recount_queued().await.unwrap(), 1);
    assert_eq!(
        db.recount_queued().await.unwrap(),
        0,
        "nothing left to mend"
    );
    expect([8, 8], "counted again").await;
    submit(&db, &tenants[0], NOW + 200, |_| {}).await;
    expect([9, 8], "a submission once the count is mended").await;
    // Room for 21 more: 22 are refused, 21 taken.
    let batch: Vec<RunSpec> = (0..22).map(|_| new_run(&tenants[0])).collect();
    assert_queue_full(&db.submit_runs(&batch, NOW + 201).await, 30);
    expect([9, 8], "a batch past the queue's room, refused whole").await;
    db.submit_runs(&batch[..21], NOW + 202).await.unwrap();
    expect([30, 8], "a batch that fits").await;
    backend.db.close().await;
}

/// On PostgreSQL a batch without idempotency keys that its tenant's
/// stored count has no room for is refused before it is inserted: the
/// refusal does not wait for the tenant's row, which the insert's trigger
/// would lock. A keyed batch whose runs all exist takes no room, so the
/// same keys sent again are answered by their runs with the queue full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_batch_with_no_room_is_refused_before_its_insert() {
    let Some((backend, t)) = postgres_acme(TenantQuotas {
        max_queued_runs: 3,
        ..TenantQuotas::default()
    })
    .await
    else {
        return;
    };
    let db = backend.db.clone();
    let keyed: Vec<RunSpec> = (0..3)
        .map(|i| RunSpec {
            idempotency_key: Some(format!("k{i}")),
            ..new_run(&t)
        })
        .collect();
    let first = db.submit_runs(&keyed, NOW).await.unwrap();
    assert!(first.iter().all(|(_, created)| *created));

    // Another transaction holds the tenant's row.
    let mut admin = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    let mut holder = admin.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(&t)
        .execute(&mut *holder)
        .await
        .unwrap();
    let batch: Vec<RunSpec> = (0..2).map(|_| new_run(&t)).collect();
    let refused = tokio::time::timeout(Duration::from_secs(10), db.submit_runs(&batch, NOW + 1))
        .await
        .expect("the refusal waited for the tenant's row: it went to the insert");
    assert_queue_full(&refused, 3);
    holder.rollback().await.unwrap();
    admin.close().await.unwrap();

    let again = db.submit_runs(&keyed, NOW + 2).await.unwrap();
    let answered: Vec<(String, bool)> = first.into_iter().map(|(id, _)| (id, false)).collect();
    assert_eq!(again, answered, "the keys' runs, with the queue full");
    let (stored, counted) = run_counts(&backend.url, &t).await;
    assert_eq!(counted.0, 3);
    assert_stored(stored, counted, "after the refusal");
    backend.db.close().await;
}

/// On PostgreSQL a queue count that drifted up refuses the tenant's
/// submissions through the API, with a 429 that says when to try again,
/// until the scheduler's pass counts the queue again (migration 0018);
/// then the same submission is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_schedulers_pass_mends_a_drifted_queue_count() {
    const TOKEN: &str = "tok-drift-0123456789abcdef";
    let Some(backend) = postgres_only().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = caisson_tests::ServerToml::new(backend.url.clone())
        .no_listen()
        .local_modules(&dir.path().join("modules"))
        .tables(&format!(
            "[tenants.drift]\ntokens = [\"{TOKEN}\"]\nmax_queued_runs = 3\n"
        ))
        .render();
    // No worker slots: the queue only grows.
    let app = crate::api::app_from(&text, dir, 0).await;
    let (status, body) = app
        .upload("hello", caisson_tests::guest("hello"), Some(TOKEN))
        .await;
    assert_eq!(status, axum::http::StatusCode::CREATED, "{body}");
    let submit = || {
        app.call(
            "POST",
            "/v1/runs",
            Some(TOKEN),
            axum::body::Body::from(r#"{"module": "hello"}"#),
            "application/json",
        )
    };
    for _ in 0..2 {
        let (status, body, _) = submit().await;
        assert_eq!(status, axum::http::StatusCode::CREATED, "{body:?}");
    }
    let tenant = backend.db.ensure_tenant("drift").await.unwrap();
    // Two queued, counted three: the quota's last place taken by nothing.
    let mut admin = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    sqlx::query("UPDATE tenants SET queued_runs = queued_runs + 1 WHERE id = $1")
        .bind(&tenant)
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (status, body, headers) = submit().await;
    assert_eq!(
        status,
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "{body:?}"
    );
    assert_eq!(
        headers.get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    caisson_server::scheduler::tick(&app.state.services, chrono::Utc::now()).await;
    let (status, body, _) = submit().await;
    assert_eq!(status, axum::http::StatusCode::CREATED, "{body:?}");
    let (stored, counted) = run_counts(&backend.url, &tenant).await;
    assert_eq!(counted.0, 3);
    assert_stored(stored, counted, "after the pass and a submission");
    // Now the queue is full in truth: refused, and the pass changes nothing.
    let (status, _, _) = submit().await;
    assert_eq!(status, axum::http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(backend.db.recount_queued().await.unwrap(), 0);
    backend.db.close().await;
}

/// On PostgreSQL a worker of a version before batch claims checks each
/// claim with `caisson_claim_held` (migration 0014), which migration 0017
/// makes the batch check of one run: its claim counts the run out of the
/// queue and writes the attempt's row, and one past the tenant's
/// `max_running_runs` is undone and stays counted as queued.
#[tokio::test]
async fn on_postgresql_an_older_workers_one_run_claim_counts_its_run_out() {
    let Some((backend, t)) = postgres_acme(TenantQuotas {
        max_running_runs: 1,
        ..TenantQuotas::default()
    })
    .await
    else {
        return;
    };
    let db = backend.db.clone();
    let runs = [
        submit(&db, &t, NOW, |_| {}).await,
        submit(&db, &t, NOW + 1, |_| {}).await,
    ];
    // The older worker's claim: its update of the run, then the check.
    let mut old = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    let mut held = Vec::new();
    for run in &runs {
        sqlx::query(
            "UPDATE runs SET state = 'running', worker_id = 'old', attempts = attempts + 1 \
             WHERE id = $1",
        )
        .bind(run)
        .execute(&mut old)
        .await
        .unwrap();
        let stands: bool = sqlx::query_scalar("SELECT caisson_claim_held($1, $2, 'old', $3)")
            .bind(run)
            .bind(&t)
            .bind(NOW + 2)
            .fetch_one(&mut old)
            .await
            .unwrap();
        held.push(stands);
    }
    assert_eq!(held, [true, false], "the second is past max_running_runs");
    let attempts: Vec<String> =
        sqlx::query_scalar("SELECT run_id FROM run_attempts WHERE worker_id = 'old'")
            .fetch_all(&mut old)
            .await
            .unwrap();
    assert_eq!(attempts, [runs[0].clone()]);
    old.close().await.unwrap();
    let (stored, counted) = run_counts(&backend.url, &t).await;
    assert_eq!(counted, (1, 1), "the undone run is queued again");
    assert_stored(stored, counted, "an older worker's claims");
    backend.db.close().await;
}

#[tokio::test]
async fn a_run_submitted_claimed_is_claimed_only_where_a_claim_would_take_it() {
    each_backend(5, |backend| async move {
        let db = backend.db.clone();
        let url = backend.url.clone();
        let t = db.ensure_tenant("acme").await.unwrap();
        let quotas = TenantQuotas {
            max_queued_runs: 10,
            max_running_runs: 1,
            max_schedules: 1,
        };
        db.set_tenant_quotas(&t, &quotas).await.unwrap();
        let counts = |step: &'static str| {
            let (url, t) = (url.clone(), t.clone());
            async move {
                let (stored, counted) = run_counts(&url, &t).await;
                assert_stored(stored, counted, step);
                counted
            }
        };
        let done = AttemptOutcome::Succeeded {
            output: Vec::new(),
            output_key: None,
        };

        // Nothing else waits: claimed in the submit's commit, as a claim
        // would have: leased, counted, with its attempt's row.
        let (a, created, claim) = (db.submit_claimed(&new_run(&t), "w", LEASE, NOW, GIB))
            .await
            .unwrap();
        assert!(created);
        let claim = claim.expect("nothing else waits: claimed");
        assert_eq!((claim.run.id.as_str(), claim.attempt), (a.as_str(), 1));
        assert_eq!(claim.run.state, RunState::Running);
        assert_eq!(claim.run.worker_id.as_deref(), Some("w"));
        assert_eq!(claim.run.lease_until, Some(NOW + LEASE.as_millis() as i64));
        assert_eq!(claim.run.started_at, Some(NOW));
        let attempts = db.attempts(&a).await.unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(
            (attempts[0].state.as_str(), attempts[0].worker_id.as_str()),
            ("running", "w")
        );
        assert_eq!(counts("claimed at submit").await, (0, 1));

        // The tenant at its `max_running_runs`: queued.
        let (b, created, claim) = (db.submit_claimed(&new_run(&t), "w", LEASE, NOW + 1, GIB))
            .await
            .unwrap();
        assert!(created && claim.is_none(), "{claim:?}");
        assert_eq!(counts("over max_running_runs").await, (1, 1));

        // Room again, but `b` waits: a new run does not pass it.
        assert!(db.finish_attempt(&a, "w", 1, &done, NOW + 2).await.unwrap());
        let (c, _, claim) = (db.submit_claimed(&new_run(&t), "w", LEASE, NOW + 3, GIB))
            .await
            .unwrap();
        assert!(claim.is_none(), "passed over a waiting run: {claim:?}");
        for (id, at) in [(&b, NOW + 4), (&c, NOW + 6)] {
            let next = db.claim_run("w", LEASE, at, GIB).await.unwrap().unwrap();
            assert_eq!(&next.run.id, id, "claimed in submission order");
            assert!(db.finish_attempt(id, "w", 1, &done, at + 1).await.unwrap());
        }

        // Over the memory it may take, or not due yet: queued.
        let (d, _, claim) = (db.submit_claimed(&new_run(&t), "w", LEASE, NOW + 8, 1))
            .await
            .unwrap();
        assert!(claim.is_none(), "over its memory: {claim:?}");
        db.request_cancel(&t, &d, NOW + 9).await.unwrap();
        let later = RunSpec {
            not_before: NOW + 60_000,
            ..new_run(&t)
        };
        let (e, _, claim) = (db.submit_claimed(&later, "w", LEASE, NOW + 10, GIB))
            .await
            .unwrap();
        assert!(claim.is_none(), "not due: {claim:?}");
        db.request_cancel(&t, &e, NOW + 11).await.unwrap();
        assert_eq!(counts("all ended").await, (0, 0));

        // Submitted again under its key: the first run, not claimed twice.
        let keyed = RunSpec {
            idempotency_key: Some("k".into()),
            ..new_run(&t)
        };
        let (f, created, claim) = (db.submit_claimed(&keyed, "w", LEASE, NOW + 12, GIB))
            .await
            .unwrap();
        assert!(created && claim.is_some());
        let (again, created, claim) = (db.submit_claimed(&keyed, "v", LEASE, NOW + 13, GIB))
            .await
            .unwrap();
        assert_eq!(again, f);
        assert!(!created && claim.is_none(), "{claim:?}");
        let run = db.get_run_any(&f).await.unwrap().unwrap();
        assert_eq!((run.worker_id.as_deref(), run.attempts), (Some("w"), 1));
        assert_eq!(counts("the key again").await, (0, 1));

        // The tenant's queue full: refused, naming the quota, and nothing
        // of it written; its key's run still answers under the key.
        let full = TenantQuotas {
            max_queued_runs: 0,
            ..quotas
        };
        db.set_tenant_quotas(&t, &full).await.unwrap();
        let refused = db
            .submit_claimed(&new_run(&t), "w", LEASE, NOW + 14, GIB)
            .await;
        assert_queue_full(&refused, 0);
        assert_eq!(counts("refused").await, (0, 1));
        let (again, created, claim) = (db.submit_claimed(&keyed, "v", LEASE, NOW + 15, GIB))
            .await
            .unwrap();
        assert_eq!(again, f);
        assert!(!created && claim.is_none(), "{claim:?}");
        backend
    })
    .await;
}

/// A run waiting out a backoff is not due, so no claim would pass over it
/// by taking a new run first. PostgreSQL claims the new run in its
/// submit's commit; SQLite asks only whether anything else is queued
/// (the tenants' counts) and leaves the new run to the ordinary claim,
/// which takes it and leaves the waiting one waiting. Either way, the new
/// run is the one that starts.
#[tokio::test]
async fn a_run_waiting_out_its_backoff_never_holds_back_a_new_run() {
    each_backend(5, |backend| async move {
        let db = backend.db.clone();
        let t = db.ensure_tenant("acme").await.unwrap();
        let later = RunSpec {
            not_before: NOW + 60_000,
            ..new_run(&t)
        };
        let (waiting, _, claim) = db
            .submit_claimed(&later, "w", LEASE, NOW, GIB)
            .await
            .unwrap();
        assert!(claim.is_none(), "not due: {claim:?}");

        let (new, _, claim) = db
            .submit_claimed(&new_run(&t), "w", LEASE, NOW + 1, GIB)
            .await
            .unwrap();
        let started = match db.kind() {
            DbKind::Postgres => claim.expect("PostgreSQL: claimed in the submit's commit"),
            DbKind::Sqlite => {
                assert!(
                    claim.is_none(),
                    "SQLite: something else is queued: {claim:?}"
                );
                db.claim_run("w", LEASE, NOW + 2, GIB)
                    .await
                    .unwrap()
                    .expect("the ordinary claim takes the due run")
            }
        };
        assert_eq!(started.run.id, new);
        assert!(
            db.claim_run("w", LEASE, NOW + 3, GIB)
                .await
                .unwrap()
                .is_none()
        );
        let waiting = db.get_run_any(&waiting).await.unwrap().unwrap();
        assert_eq!(waiting.state, RunState::Queued);
        backend
    })
    .await;
}

#[tokio::test]
async fn a_run_and_its_attempts_read_together_are_what_each_read_gives() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let other = db.ensure_tenant("other").await.unwrap();
        let id = submit(&db, &t, NOW, |_| {}).await;
        let together = |db: Db, t: String, id: String| async move {
            let (run, attempts) = db.get_run_and_attempts(&t, &id).await.unwrap().unwrap();
            assert_eq!(run, db.get_run(&t, &id).await.unwrap().unwrap());
            assert_eq!(attempts, db.attempts(&id).await.unwrap());
            attempts.len()
        };
        assert_eq!(together(db.clone(), t.clone(), id.clone()).await, 0);
        db.claim_run("w1", LEASE, NOW + 1, GIB)
            .await
            .unwrap()
            .unwrap();
        let retry = AttemptOutcome::Retry {
            error: "first \"try\"".into(),
            not_before: NOW + 2,
            timed_out: false,
        };
        assert!(
            db.finish_attempt(&id, "w1", 1, &retry, NOW + 2)
                .await
                .unwrap()
        );
        db.claim_run("w2", LEASE, NOW + 3, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(together(db.clone(), t.clone(), id.clone()).await, 2);
        let done = AttemptOutcome::Succeeded {
            output: b"ok".to_vec(),
            output_key: None,
        };
        assert!(
            db.finish_attempt(&id, "w2", 2, &done, NOW + 4)
                .await
                .unwrap()
        );
        assert_eq!(together(db.clone(), t.clone(), id.clone()).await, 2);
        // Another tenant's run, and no run, read as nothing.
        assert!(
            db.get_run_and_attempts(&other, &id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.get_run_and_attempts(&t, "nope").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    each_db(|db| async move {
        let a = db.ensure_tenant("acme").await.unwrap();
        let b = db.ensure_tenant("bravo").await.unwrap();
        let id = submit(&db, &a, NOW, |_| {}).await;
        db.append_logs(&id, 1, &lines(&["secret"])).await.unwrap();
        db.insert_module(&a, &module("hello", "1.0.0", "d1", 1))
            .await
            .unwrap();

        assert!(db.get_run(&a, &id).await.unwrap().is_some());
        assert_eq!(db.get_run(&b, &id).await.unwrap(), None);
        let all = RunFilter {
            limit: 100,
            ..RunFilter::default()
        };
        assert_eq!(db.list_runs(&b, &all).await.unwrap(), vec![]);
        assert_eq!(db.list_runs(&a, &all).await.unwrap().len(), 1);
        assert_eq!(db.request_cancel(&b, &id, NOW).await.unwrap(), None);
        assert_eq!(
            db.get_run(&a, &id).await.unwrap().unwrap().state,
            RunState::Queued
        );
        assert_eq!(db.logs(&b, &id, 0, 100).await.unwrap(), vec![]);
        assert_eq!(db.logs(&a, &id, 0, 100).await.unwrap().len(), 1);

        assert_eq!(db.list_modules(&b).await.unwrap(), vec![]);
        assert_eq!(db.module_versions(&b, "hello").await.unwrap(), vec![]);
        assert_eq!(
            db.resolve_module(&b, "hello", None, None).await.unwrap(),
            None
        );
        assert_eq!(
            db.resolve_module(&b, "hello", None, Some("d1"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(db.delete_module(&b, "hello", None).await.unwrap(), 0);
        assert_eq!(db.list_modules(&a).await.unwrap().len(), 1);

        // B using A's idempotency key gets its own run, not A's.
        let mut mine = new_run(&a);
        mine.idempotency_key = Some("k".into());
        let (a_run, _) = db.submit_run(&mine, NOW).await.unwrap();
        mine.tenant_id = b.clone();
        let (b_run, created) = db.submit_run(&mine, NOW).await.unwrap();
        assert!(created);
        assert_ne!(a_run, b_run);
    })
    .await;
}

// ---- logs

#[tokio::test]
async fn an_attempts_last_log_lines_are_stored_with_its_outcome_or_not_at_all() {
    each_db(|db| async move {
        // Both ways a finish is written: in a transaction, and (`plain`, on
        // PostgreSQL) as one statement that commits itself.
        for plain in [false, true] {
            let t = db.ensure_tenant(&format!("acme-{plain}")).await.unwrap();
            let id = submit(&db, &t, NOW, |_| {}).await;
            let claim = db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
            // What the shipper stored while the task ran, then the last lines.
            db.append_logs(&id, 1, &lines(&["a", "b"])).await.unwrap();
            let done = AttemptOutcome::Succeeded {
                output: Vec::new(),
                output_key: None,
            };
            // Refused (not w2's to finish): the lines are not stored either.
            assert!(
                db.finish_and_claim(&id, "w2", 1, &done, &lines(&["late"]), NOW + 1, plain, None)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                db.finish_and_claim(
                    &id,
                    "w1",
                    claim.attempt,
                    &done,
                    &lines(&["c", "d"]),
                    NOW + 1,
                    plain,
                    None
                )
                .await
                .unwrap()
                .is_some()
            );
            let stored = db.logs(&t, &id, 0, 100).await.unwrap();
            assert_eq!(
                stored
                    .iter()
                    .map(|l| (l.seq, l.message.as_str()))
                    .collect::<Vec<_>>(),
                vec![(1, "a"), (2, "b"), (3, "c"), (4, "d")],
                "the last lines follow the shipped ones, in order"
            );
            let run = db.get_run(&t, &id).await.unwrap().unwrap();
            assert_eq!(run.state, RunState::Succeeded);
            // The attempt's row ended in the same write, once: w2's refused
            // finish did not touch it.
            let attempts = db.attempts(&id).await.unwrap();
            assert_eq!(attempts.len(), 1);
            assert_eq!(
                (attempts[0].state.as_str(), attempts[0].finished_at),
                ("succeeded", Some(NOW + 1))
            );
            assert_eq!(attempts[0].worker_id, "w1");
        }
    })
    .await;
}

/// PostgreSQL only: there a plain run's finish and each claim statement
/// commit alone (`WriteTx::alone`), so a claim that fails must not take
/// back what already committed, and a batch's statement that fails must
/// leave none of its runs leased to a worker that got an error instead.
/// A trigger the test installs refuses the claim of one run, as a
/// database error would.
#[tokio::test]
async fn on_postgresql_a_failed_claim_leases_nothing_and_keeps_the_finish() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let db = backend.db.clone();
    let t = db.ensure_tenant("acme").await.unwrap();
    let done = submit(&db, &t, NOW, |_| {}).await;
    let held = db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
    assert_eq!(held.run.id, done);
    let first = submit(&db, &t, NOW + 1, |_| {}).await;
    let refused = submit(&db, &t, NOW + 2, |_| {}).await;

    let mut conn = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse_claim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.id = '{refused}' AND NEW.state = 'running' THEN \
             RAISE EXCEPTION 'claim refused by the test'; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_claim BEFORE UPDATE ON runs \
           FOR EACH ROW EXECUTE FUNCTION refuse_claim();"
    )))
    .execute(&mut conn)
    .await
    .unwrap();

    // Two asked for, in one statement, which the refusal fails whole:
    // the error is returned and neither run is claimed.
    let err = db
        .claim_runs("w2", LEASE, NOW + 10, GIB, 2)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("claim refused by the test"),
        "{err}"
    );
    for id in [&first, &refused] {
        let run = db.get_run(&t, id).await.unwrap().unwrap();
        assert_eq!((run.state, run.attempts), (RunState::Queued, 0), "{id}");
        assert!(db.attempts(id).await.unwrap().is_empty(), "{id}");
    }
    // One asked for: the first, which the trigger lets through.
    let claims = db.claim_runs("w2", LEASE, NOW + 10, GIB, 1).await.unwrap();
    let claimed: Vec<&str> = claims.iter().map(|c| c.run.id.as_str()).collect();
    assert_eq!(claimed, vec![first.as_str()]);
    let run = db.get_run(&t, &first).await.unwrap().unwrap();
    assert_eq!(
        (run.state, run.worker_id.as_deref()),
        (RunState::Running, Some("w2"))
    );

    // A plain run's finish commits by itself; the claim after it is
    // refused: the finish stands, and nothing is claimed.
    let outcome = AttemptOutcome::Succeeded {
        output: b"ok".to_vec(),
        output_key: None,
    };
    let ask = ClaimAsk {
        worker_id: "w1",
        lease: LEASE,
        max_memory: GIB,
        max_runs: 1,
    };
    let finished = db
        .finish_and_claim(
            &done,
            "w1",
            held.attempt,
            &outcome,
            &lines(&["last"]),
            NOW + 20,
            true,
            Some(ask),
        )
        .await
        .unwrap()
        .expect("the finish applied");
    assert!(finished.claims.is_none(), "{:?}", finished.claims);
    let run = db.get_run(&t, &done).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.output.as_deref(), Some(&b"ok"[..]));
    let attempts = db.attempts(&done).await.unwrap();
    assert_eq!(
        (attempts[0].state.as_str(), attempts[0].finished_at),
        ("succeeded", Some(NOW + 20))
    );
    let logged = db.logs(&t, &done, 0, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].message, "last");
    let run = db.get_run(&t, &refused).await.unwrap().unwrap();
    assert_eq!((run.state, run.attempts), (RunState::Queued, 0));

    // With the fault gone, the refused run is claimed as usual.
    sqlx::raw_sql("DROP TRIGGER refuse_claim ON runs")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let claimed = db.claim_run("w1", LEASE, NOW + 30, GIB).await.unwrap();
    assert_eq!(claimed.map(|c| c.run.id), Some(refused));
    db.close().await;
}

#[tokio::test]
async fn logs_append_and_page_by_seq() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |_| {}).await;
        let other = submit(&db, &t, NOW, |_| {}).await;
        assert_eq!(db.logs(&t, &id, 0, 10).await.unwrap(), vec![]);
        db.append_logs(&id, 1, &[]).await.unwrap();
        db.append_logs(&id, 1, &lines(&["a", "b", "c"]))
            .await
            .unwrap();
        db.append_logs(&other, 1, &lines(&["x"])).await.unwrap();
        db.append_logs(&id, 2, &lines(&["d", "e"])).await.unwrap();

        let all = db.logs(&t, &id, 0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(
            all.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            vec!["a", "b", "c", "d", "e"]
        );
        assert_eq!(all[3].attempt, 2);
        assert_eq!(all[3].time, NOW);
        assert_eq!(
            (all[0].level, all[0].source),
            (Level::Info, LogSource::Task)
        );
        assert_eq!(
            db.logs(&t, &other, 0, 100).await.unwrap()[0].seq,
            1,
            "seq is per run"
        );

        let page = db.logs(&t, &id, 1, 2).await.unwrap();
        assert_eq!(page.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![2, 3]);
        let page = db.logs(&t, &id, 3, 2).await.unwrap();
        assert_eq!(page.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(db.logs(&t, &id, 5, 2).await.unwrap(), vec![]);

        // Big batches span several inserts.
        let many: Vec<String> = (0..250).map(|i| format!("line {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        db.append_logs(&id, 2, &lines(&many)).await.unwrap();
        let all = db.logs(&t, &id, 0, 1_000).await.unwrap();
        assert_eq!(all.len(), 255);
        assert!(all.iter().enumerate().all(|(i, l)| l.seq == i as i64 + 1));
        assert_eq!(all[254].message, "line 249");

        assert!(db.append_logs("nope", 1, &lines(&["x"])).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_log_appends_get_distinct_seqs() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |_| {}).await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let db = db.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    for batch in 0..10 {
                        let text = format!("{w}-{batch}");
                        db.append_logs(&id, 1, &lines(&[text.as_str(), text.as_str()]))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let all = db.logs(&t, &id, 0, 1_000).await.unwrap();
        assert_eq!(all.len(), 80);
        assert!(all.iter().enumerate().all(|(i, l)| l.seq == i as i64 + 1));
        // Each batch is contiguous.
        for pair in all.chunks(2) {
            assert_eq!(pair[0].message, pair[1].message);
        }
    })
    .await;
}

/// Writers that arrive together (on SQLite, queued for the writer's turn;
/// a group commit would put them in one transaction). 40 submissions at
/// once against a quota of 25: exactly 25 are taken, each seen by another
/// connection the moment its submission answers (an answer means
/// committed, not only written), and the 15 refused undo their own work
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_are_committed_when_answered_and_refused_alone() {
    each_backend(5, |backend| async move {
        let t = backend.db.ensure_tenant("acme").await.unwrap();
        let quotas = TenantQuotas {
            max_queued_runs: 25,
            max_running_runs: 100,
            max_schedules: 1,
        };
        backend.db.set_tenant_quotas(&t, &quotas).await.unwrap();
        let reader = Db::connect(&backend.url, 2).await.unwrap();
        let submissions: Vec<_> = (0..40)
            .map(|i| {
                let db = backend.db.clone();
                let reader = reader.clone();
                let t = t.clone();
                tokio::spawn(async move {
                    let mut run = new_run(&t);
                    run.idempotency_key = Some(format!("k{i}"));
                    match db.submit_run(&run, NOW).await {
                        Ok((id, created)) => {
                            assert!(created);
                            let seen = reader.get_run(&t, &id).await.unwrap();
                            assert!(seen.is_some(), "run {id} answered, not committed");
                            true
                        }
                        Err(DbError::QuotaExceeded { .. }) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        let mut taken = 0;
        for submission in submissions {
            taken += usize::from(submission.await.unwrap());
        }
        assert_eq!(taken, 25);
        let filter = RunFilter {
            limit: 100,
            ..RunFilter::default()
        };
        assert_eq!(reader.list_runs(&t, &filter).await.unwrap().len(), 25);
        reader.close().await;
        backend
    })
    .await;
}

/// On PostgreSQL, a batch claim that a concurrent claim took past its
/// tenant's `max_running_runs` undoes exactly the excess, from the end of
/// the tenant's order: the runs it undoes are queued again as they were,
/// with no attempt row, and the rest stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_batch_claim_raced_past_its_quota_undoes_the_tenants_last_runs() {
    let Some((backend, t)) = postgres_acme(TenantQuotas {
        max_running_runs: 2,
        ..TenantQuotas::default()
    })
    .await
    else {
        return;
    };
    let db = backend.db.clone();
    let other = submit(&db, &t, NOW, |_| {}).await;
    let mut runs = Vec::new();
    for i in 1..=3 {
        runs.push(submit(&db, &t, NOW + i, |_| {}).await);
    }

    // Another worker's claim of `other`, not yet committed: it holds the
    // run's row (so the batch passes over it) and the tenant's.
    let mut racer = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; \
         UPDATE runs SET state = 'running', worker_id = 'racer', attempts = 1 WHERE id = '{other}'; \
         UPDATE tenants SET last_claim_at = {NOW} WHERE id = '{t}';"
    )))
    .execute(&mut racer)
    .await
    .unwrap();
    let claiming = tokio::spawn({
        let db = db.clone();
        async move { db.claim_runs("w", LEASE, NOW + 10, GIB, 2).await.unwrap() }
    });
    // The batch has picked two runs and waits for the tenant's row.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !claiming.is_finished(),
        "the check waits for the tenant's lock"
    );
    sqlx::raw_sql("COMMIT").execute(&mut racer).await.unwrap();
    racer.close().await.unwrap();
    let claimed = claiming.await.unwrap();

    let ids: Vec<&str> = claimed.iter().map(|c| c.run.id.as_str()).collect();
    assert_eq!(
        ids,
        [runs[0].as_str()],
        "the first in the tenant's order stands"
    );
    assert_eq!(db.attempts(&runs[0]).await.unwrap().len(), 1);
    let undone = db.get_run_any(&runs[1]).await.unwrap().unwrap();
    assert_eq!(undone.state, RunState::Queued, "the excess is queued again");
    assert_eq!((undone.attempts, undone.started_at), (0, None));
    assert_eq!(undone.worker_id, None);
    assert!(db.attempts(&runs[1]).await.unwrap().is_empty());
    assert_eq!(running_of(&db, &t).await, 2, "the quota holds");
    backend.db.close().await;
}

/// On PostgreSQL, submissions that arrive while one is being inserted go
/// in together: fewer transactions than runs, each answer still a run that
/// is stored, and a key repeated among them still one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_concurrent_submissions_are_inserted_together() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let t = backend.db.ensure_tenant("acme").await.unwrap();
    let submissions: Vec<_> = (0..60)
        .map(|i| {
            let db = backend.db.clone();
            let t = t.clone();
            tokio::spawn(async move {
                let mut run = new_run(&t);
                // Every sixth run repeats one key; the rest have their own
                // or none.
                run.idempotency_key = match i % 6 {
                    0 => Some("shared".to_owned()),
                    1 => None,
                    _ => Some(format!("k{i}")),
                };
                run.priority = i;
                (i, db.submit_run(&run, NOW + i).await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for submission in submissions {
        answers.push(submission.await.unwrap());
    }

    let shared: HashSet<&str> = answers
        .iter()
        .filter(|(i, _)| i % 6 == 0)
        .map(|(_, (id, _))| id.as_str())
        .collect();
    assert_eq!(shared.len(), 1, "one run holds the shared key: {shared:?}");
    let created = answers.iter().filter(|(_, (_, new))| *new).count();
    assert_eq!(created, 60 - 10 + 1, "each other submission is a new run");
    for (i, (id, _)) in &answers {
        let run = backend.db.get_run(&t, id).await.unwrap().unwrap();
        if i % 6 != 0 {
            assert_eq!(run.spec.priority, *i, "run {id} is submission {i}'s");
        }
    }

    let mut conn = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    let (runs, transactions): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT xmin::text) FROM runs WHERE tenant_id = $1",
    )
    .bind(&t)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(runs, 51);
    assert!(
        transactions < runs,
        "{runs} runs were inserted in {transactions} transactions"
    );
    backend.db.close().await;
}

/// Every way an attempt ends, the second of each pair with a cancel
/// requested while it ran.
fn every_outcome() -> Vec<(AttemptOutcome, bool)> {
    let finished = |state, retryable| AttemptOutcome::Finished {
        state,
        error: format!("{state:?}"),
        retryable,
    };
    let retry = |timed_out| AttemptOutcome::Retry {
        error: "again".into(),
        not_before: NOW + 500,
        timed_out,
    };
    let outcomes = [
        AttemptOutcome::Succeeded {
            output: b"out".to_vec(),
            output_key: None,
        },
        AttemptOutcome::Succeeded {
            output: Vec::new(),
            output_key: Some("outputs/run".into()),
        },
        finished(RunState::Failed, true),
        finished(RunState::TimedOut, false),
        finished(RunState::Cancelled, false),
        retry(false),
        retry(true),
    ];
    (outcomes.into_iter())
        .flat_map(|o| [(o.clone(), false), (o, true)])
        .collect()
}

/// A run submitted and claimed by `w1` at `NOW + 1`, its cancel requested
/// if `cancel`, for its finish to be tested.
async fn held_run(db: &Db, t: &str, cancel: bool) -> String {
    let id = submit(db, t, NOW, |_| {}).await;
    let claim = db.claim_run("w1", LEASE, NOW + 1, GIB).await.unwrap();
    assert_eq!(claim.unwrap().run.id, id);
    if cancel {
        db.request_cancel(t, &id, NOW + 2).await.unwrap();
    }
    id
}

/// The finish `w1` recorded for `id` at `NOW + 4` with `outcome` and two
/// lines, checked against what the outcome says, as text to compare
/// with another run's (it names neither run).
async fn recorded_finish(
    db: &Db,
    t: &str,
    id: &str,
    outcome: &AttemptOutcome,
    cancel: bool,
) -> String {
    let run = db.get_run(t, id).await.unwrap().unwrap();
    let attempts = db.attempts(id).await.unwrap();
    let logs = db.logs(t, id, 0, 100).await.unwrap();
    let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages, ["first", "second"], "{id}");
    let expected = match outcome {
        AttemptOutcome::Succeeded { .. } => RunState::Succeeded,
        AttemptOutcome::Finished { state, .. } => *state,
        AttemptOutcome::Retry { .. } if cancel => RunState::Cancelled,
        AttemptOutcome::Retry { .. } => RunState::Queued,
    };
    assert_eq!(run.state, expected, "{outcome:?}, cancel {cancel}");
    assert_eq!(run.lease_until, None);
    if run.state == RunState::Queued {
        assert_eq!((run.finished_at, run.worker_id.as_deref()), (None, None));
        assert_eq!(run.spec.not_before, NOW + 500);
    } else {
        assert_eq!(run.finished_at, Some(NOW + 4));
    }
    format!(
        "{:?}",
        (
            (run.state, run.attempts, run.finished_at, run.worker_id),
            (run.lease_until, run.output, run.output_key),
            (run.error, run.retryable, run.spec.not_before),
            (attempts, logs)
        )
    )
}

/// A plain run's finish (on PostgreSQL, a statement that commits itself)
/// records each outcome, its attempt's end and its lines as a workflow
/// step's finish (a transaction of its own) does, and a finish that is
/// not the worker's writes nothing.
#[tokio::test]
async fn a_plain_runs_finish_records_each_outcome_as_a_steps_finish_does() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let said = lines(&["first", "second"]);
        for (outcome, cancel) in every_outcome() {
            let mut recorded = Vec::new();
            for plain in [true, false] {
                let id = held_run(&db, &t, cancel).await;
                let not_held = db
                    .finish_and_claim(&id, "w2", 1, &outcome, &said, NOW + 3, plain, None)
                    .await
                    .unwrap();
                assert!(not_held.is_none(), "w2 finished w1's run");
                assert!(db.logs(&t, &id, 0, 100).await.unwrap().is_empty());
                db.finish_and_claim(&id, "w1", 1, &outcome, &said, NOW + 4, plain, None)
                    .await
                    .unwrap()
                    .expect("w1's run");
                recorded.push(recorded_finish(&db, &t, &id, &outcome, cancel).await);
            }
            assert_eq!(recorded[0], recorded[1], "{outcome:?}, cancel {cancel}");
        }
    })
    .await;
}

/// On PostgreSQL, finishes that wait while two are in flight go together,
/// one statement for all of them: that statement records each outcome as
/// a step's finish does, and leaves out a run that is not the worker's.
#[tokio::test]
async fn on_postgresql_finishes_written_together_record_each_outcome_as_a_steps_finish_does() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let db = backend.db.clone();
    let t = db.ensure_tenant("acme").await.unwrap();
    let said = lines(&["first", "second"]);
    let cases = every_outcome();
    let mut twins = Vec::new();
    for (_, cancel) in &cases {
        twins.push((
            held_run(&db, &t, *cancel).await,
            held_run(&db, &t, *cancel).await,
        ));
    }
    let stranger = held_run(&db, &t, false).await;
    let blockers = [
        held_run(&db, &t, false).await,
        held_run(&db, &t, false).await,
    ];
    let (mut lock, in_flight) = finishes_held_in_flight(&backend, &blockers).await;
    // These wait for them, and go together.
    let waiting: Vec<_> = (cases.iter().zip(&twins))
        .map(|((outcome, _), (grouped, _))| spawn_finish(&db, grouped, "w1", outcome))
        .collect();
    let not_held = spawn_finish(&db, &stranger, "w2", &SUCCEEDED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    for finish in in_flight.into_iter().chain(waiting) {
        assert!(finish.await.unwrap(), "w1's run");
    }
    assert!(!not_held.await.unwrap(), "w2 finished w1's run");
    let stranger_run = db.get_run(&t, &stranger).await.unwrap().unwrap();
    assert_eq!(stranger_run.state, RunState::Running);
    assert!(db.logs(&t, &stranger, 0, 100).await.unwrap().is_empty());

    let grouped: Vec<&String> = twins.iter().map(|(grouped, _)| grouped).collect();
    let transactions: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT xmin::text) FROM runs WHERE id = ANY($1)")
            .bind(&grouped)
            .fetch_one(&mut lock)
            .await
            .unwrap();
    assert_eq!(transactions, 1, "the waiting finishes went together");
    for ((outcome, cancel), (grouped, step)) in cases.iter().zip(&twins) {
        db.finish_and_claim(step, "w1", 1, outcome, &said, NOW + 4, false, None)
            .await
            .unwrap()
            .expect("w1's run");
        assert_eq!(
            recorded_finish(&db, &t, grouped, outcome, *cancel).await,
            recorded_finish(&db, &t, step, outcome, *cancel).await,
            "{outcome:?}, cancel {cancel}: in a group, then a step's"
        );
    }
    lock.close().await.unwrap();
    backend.db.close().await;
}

/// A plain finish's outcome in these tests: succeeded, with no output.
const SUCCEEDED: AttemptOutcome = AttemptOutcome::Succeeded {
    output: Vec::new(),
    output_key: None,
};

/// `worker`'s plain finish of `id` with `outcome` and two lines at
/// `NOW + 4`, on a task of its own: whether it was the worker's to finish.
fn spawn_finish(
    db: &Db,
    id: &str,
    worker: &'static str,
    outcome: &AttemptOutcome,
) -> tokio::task::JoinHandle<bool> {
    let (db, id, outcome) = (db.clone(), id.to_owned(), outcome.clone());
    tokio::spawn(async move {
        let said = lines(&["first", "second"]);
        db.finish_and_claim(&id, worker, 1, &outcome, &said, NOW + 4, true, None)
            .await
            .unwrap()
            .is_some()
    })
}

/// `w1`'s plain finishes of `ids`, started while another transaction
/// (returned, open) holds their rows: when this returns, all of them are
/// in flight, waiting on its locks until it ends (`COMMIT`).
async fn finishes_held_in_flight(
    backend: &Backend,
    ids: &[String],
) -> (sqlx::PgConnection, Vec<tokio::task::JoinHandle<bool>>) {
    let (lock, locker) = holding(
        backend,
        "SELECT 1 FROM runs WHERE id = ANY($1) FOR UPDATE",
        Some(ids),
    )
    .await;
    let finishes = (ids.iter())
        .map(|id| spawn_finish(&backend.db, id, "w1", &SUCCEEDED))
        .collect();
    let mut watch = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    let mut blocked: i64 = 0;
    for _ in 0..200 {
        blocked = blocked_by(&mut watch, locker).await;
        if blocked == ids.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.close().await.unwrap();
    assert_eq!(blocked, ids.len() as i64, "every finish waits on the lock");
    (lock, finishes)
}

/// A connection of its own to `backend`'s database, in a transaction that
/// has run `sql` (with `ids` bound, if given) and holds the locks it
/// took, and its backend's pid.
async fn holding(
    backend: &Backend,
    sql: &'static str,
    ids: Option<&[String]>,
) -> (sqlx::PgConnection, i32) {
    let mut lock = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    let locker: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut lock)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    let mut query = sqlx::query(sql);
    if let Some(ids) = ids {
        query = query.bind(ids);
    }
    query.execute(&mut lock).await.unwrap();
    (lock, locker)
}

/// How many backends wait on a lock `locker` (a backend's pid) holds.
async fn blocked_by(watch: &mut sqlx::PgConnection, locker: i32) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))",
    )
    .bind(locker)
    .fetch_one(watch)
    .await
    .unwrap()
}

/// On PostgreSQL, a process whose worker has more than two slots lets one
/// finish be in flight, and the next waits for it (to go with others);
/// with two slots, a second finish goes at once.
#[tokio::test]
async fn on_postgresql_the_finishes_in_flight_follow_the_slots() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let db = backend.db.clone();
    let t = db.ensure_tenant("acme").await.unwrap();
    for (slots, waits) in [(8, true), (2, false)] {
        db.finishing_slots(slots);
        let blocker = held_run(&db, &t, false).await;
        let next = held_run(&db, &t, false).await;
        let (mut lock, in_flight) = finishes_held_in_flight(&backend, &[blocker]).await;
        let mut finish = spawn_finish(&db, &next, "w1", &SUCCEEDED);
        let alone = tokio::time::timeout(Duration::from_millis(500), &mut finish).await;
        match alone {
            Ok(finished) => {
                assert!(!waits, "{slots} slots: the finish did not wait");
                assert!(finished.unwrap(), "w1's run");
            }
            Err(_) => assert!(waits, "{slots} slots: the finish waited"),
        }
        sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
        for blocked in in_flight {
            assert!(blocked.await.unwrap(), "w1's run");
        }
        if waits {
            assert!(finish.await.unwrap(), "w1's run");
        }
        let run = db.get_run(&t, &next).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded, "{slots} slots");
        lock.close().await.unwrap();
    }
    backend.db.close().await;
}

/// On PostgreSQL, a worker's slots finishing at once share statements: 40
/// finishes of runs that are no workflow step's, each with its line, are
/// all recorded, in fewer transactions than runs.
#[tokio::test]
async fn on_postgresql_concurrent_finishes_are_written_together() {
    let Some(backend) = postgres_only().await else {
        return;
    };
    let t = backend.db.ensure_tenant("acme").await.unwrap();
    for i in 0..40 {
        submit(&backend.db, &t, NOW + i, |_| {}).await;
    }
    let claims = backend
        .db
        .claim_runs("w1", LEASE, NOW + 50, 40 * GIB, 40)
        .await
        .unwrap();
    assert_eq!(claims.len(), 40);
    let finishes: Vec<_> = claims
        .into_iter()
        .map(|claim| {
            let db = backend.db.clone();
            tokio::spawn(async move {
                let id = claim.run.id;
                let outcome = AttemptOutcome::Succeeded {
                    output: id.as_bytes().to_vec(),
                    output_key: None,
                };
                let said = lines(&[&id]);
                let finished = db
                    .finish_and_claim(&id, "w1", 1, &outcome, &said, NOW + 60, true, None)
                    .await
                    .unwrap();
                (id, finished.is_some())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for finish in finishes {
        let (id, applied) = finish.await.unwrap();
        assert!(applied, "{id} was w1's to finish");
        ids.push(id);
    }
    for id in &ids {
        let run = backend.db.get_run(&t, id).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded, "{id}");
        assert_eq!(
            run.output.as_deref(),
            Some(id.as_bytes()),
            "{id}'s own output"
        );
        let logs = backend.db.logs(&t, id, 0, 10).await.unwrap();
        let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, [id.as_str()], "{id}'s own line");
        let attempts = backend.db.attempts(id).await.unwrap();
        assert_eq!(
            (attempts[0].state.as_str(), attempts[0].finished_at),
            ("succeeded", Some(NOW + 60))
        );
    }

    let mut conn = sqlx::PgConnection::connect(&backend.url).await.unwrap();
    let transactions: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT xmin::text) FROM runs WHERE tenant_id = $1")
            .bind(&t)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    assert!(
        transactions < 40,
        "40 runs were finished in {transactions} transactions"
    );
    backend.db.close().await;
}

// ---- metrics

#[tokio::test]
async fn count_by_state_covers_all_tenants() {
    each_db(|db| async move {
        let a = db.ensure_tenant("acme").await.unwrap();
        let b = db.ensure_tenant("bravo").await.unwrap();
        assert_eq!(db.count_by_state().await.unwrap(), vec![]);
        for t in [&a, &a, &b] {
            submit(&db, t, NOW, |_| {}).await;
        }
        let cancelled = submit(&db, &b, NOW + 1, |_| {}).await;
        db.request_cancel(&b, &cancelled, NOW).await.unwrap();
        db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
        let counts: HashMap<RunState, i64> =
            db.count_by_state().await.unwrap().into_iter().collect();
        assert_eq!(
            counts,
            HashMap::from([
                (RunState::Queued, 2),
                (RunState::Running, 1),
                (RunState::Cancelled, 1)
            ])
        );
    })
    .await;
}

#[tokio::test]
async fn a_cancel_requested_during_a_failing_attempt_is_not_retried() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |r| r.max_retries = 3).await;
        db.claim_run("w", LEASE, NOW, GIB).await.unwrap().unwrap();
        db.request_cancel(&t, &id, NOW + 1).await.unwrap();
        let retry = AttemptOutcome::Retry {
            error: "boom".into(),
            not_before: NOW + 10,
            timed_out: false,
        };
        assert!(
            db.finish_attempt(&id, "w", 1, &retry, NOW + 2)
                .await
                .unwrap()
        );
        let run = db.get_run(&t, &id).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Cancelled);
        assert_eq!(run.finished_at, Some(NOW + 2));
        assert!(
            db.claim_run("w", LEASE, NOW + 20, GIB)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn a_run_that_keeps_losing_its_worker_fails() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let id = submit(&db, &t, NOW, |r| r.max_retries = 1).await;
        let mut now = NOW;
        // Retries (1) plus three lost attempts: the fourth loss is final.
        for round in 1..=4 {
            let claim = db.claim_run("w", LEASE, now, GIB).await.unwrap().unwrap();
            assert_eq!(claim.attempt, round);
            now += 31_000;
            assert_eq!(db.requeue_expired(now).await.unwrap(), 1);
            let run = db.get_run(&t, &id).await.unwrap().unwrap();
            if round < 4 {
                assert_eq!(run.state, RunState::Queued, "round {round}");
            } else {
                assert_eq!(run.state, RunState::Failed, "round {round}");
                assert!(run.error.unwrap().contains("crashing its workers"));
            }
        }
        assert!(db.claim_run("w", LEASE, now, GIB).await.unwrap().is_none());
    })
    .await;
}

// ---- quotas and fairness between tenants

/// `tenant`'s runs in state `running`.
async fn running_of(db: &Db, tenant: &str) -> usize {
    let filter = RunFilter {
        state: Some(RunState::Running),
        limit: 10_000,
        ..RunFilter::default()
    };
    db.list_runs(tenant, &filter).await.unwrap().len()
}

#[tokio::test]
async fn claims_are_fair_between_tenants_and_priority_orders_a_tenant_only() {
    each_db(|db| async move {
        let flood = db.ensure_tenant("flood").await.unwrap();
        let calm = db.ensure_tenant("calm").await.unwrap();
        assert_eq!(
            db.tenant_quotas(&calm).await.unwrap(),
            TenantQuotas::default(),
            "a tenant the configuration does not name gets the defaults"
        );
        let quotas = TenantQuotas {
            max_running_runs: 3,
            ..TenantQuotas::default()
        };
        db.set_tenant_quotas(&flood, &quotas).await.unwrap();
        assert_eq!(db.tenant_quotas(&flood).await.unwrap(), quotas);
        // The flood comes first and asks for the highest priorities, in a
        // pattern, so that its own order can be checked too.
        let mut flood_runs = HashMap::new();
        for i in 0..300 {
            let priority = 100 + i % 5;
            let id = submit(&db, &flood, NOW + i, |r| r.priority = priority).await;
            flood_runs.insert(id, (priority, NOW + i));
        }
        let calm_runs: Vec<String> = {
            let mut ids = Vec::new();
            for i in 0..3 {
                ids.push(submit(&db, &calm, NOW + 1_000 + i, |r| r.priority = -5).await);
            }
            ids
        };

        // Worker slots claiming, nothing finishing: who gets each slot.
        let mut order = Vec::new();
        let started = std::time::Instant::now();
        for i in 0..10 {
            let now = NOW + 10_000 + i;
            let Some(claim) = db.claim_run("w", LEASE, now, GIB).await.unwrap() else {
                break;
            };
            order.push(claim.run.id);
            assert!(
                running_of(&db, &flood).await <= 3,
                "the flood went past its running quota"
            );
        }
        let elapsed = started.elapsed();
        eprintln!(
            "fairness: {} claims with 300 runs queued took {elapsed:?} ({:?} each, running counts included)",
            order.len(),
            elapsed / order.len().max(1) as u32
        );
        // The flood's running quota (3) and the calm tenant's three runs:
        // six claims, then nothing, although 297 runs are queued.
        assert_eq!(order.len(), 6, "{order:?}");
        let positions: Vec<usize> = calm_runs
            .iter()
            .map(|id| order.iter().position(|o| o == id).expect("calm run started"))
            .collect();
        // Fewest running first, ties to the tenant served longest ago: the
        // calm runs take every other slot, whatever the priorities say.
        assert_eq!(positions, vec![1, 3, 5], "{order:?}");
        assert_eq!(running_of(&db, &flood).await, 3);

        // Within the flood, priority then age decide.
        let flood_order: Vec<&(i64, i64)> =
            order.iter().filter_map(|id| flood_runs.get(id)).collect();
        let mut sorted = flood_order.clone();
        sorted.sort_by_key(|(priority, created)| (-priority, *created));
        assert_eq!(flood_order, sorted);
        assert_eq!(flood_order[0].0, 104);

        // A slot of the flood's frees: the flood's next run takes it.
        let first = db
            .get_run(&flood, &order[0])
            .await
            .unwrap()
            .expect("the first claim was the flood's");
        let done = AttemptOutcome::Succeeded {
            output: Vec::new(),
            output_key: None,
        };
        assert!(
            db.finish_attempt(&first.id, "w", 1, &done, NOW + 20_000)
                .await
                .unwrap()
        );
        let next = db
            .claim_run("w", LEASE, NOW + 20_001, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.run.spec.tenant_id, flood);
        assert!(db.claim_run("w", LEASE, NOW + 20_002, GIB).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_batch_claim_takes_what_single_claims_would_in_one_go() {
    each_db(|db| async move {
        let flood = db.ensure_tenant("flood").await.unwrap();
        let calm = db.ensure_tenant("calm").await.unwrap();
        let quotas = TenantQuotas {
            max_running_runs: 2,
            ..TenantQuotas::default()
        };
        db.set_tenant_quotas(&flood, &quotas).await.unwrap();
        let mut flood_runs = Vec::new();
        for i in 0..5 {
            flood_runs.push(submit(&db, &flood, NOW + i, |r| r.priority = i).await);
        }
        let calm_runs = [
            submit(&db, &calm, NOW + 10, |_| {}).await,
            submit(&db, &calm, NOW + 11, |_| {}).await,
        ];
        let not_due = submit(&db, &calm, NOW + 12, |r| r.not_before = NOW + 60_000).await;

        // Memory for three runs of 64 MiB: three claims, although more
        // are due and the batch asks for ten.
        let batch = db
            .claim_runs("w", LEASE, NOW + 100, 3 * (64 << 20), 10)
            .await
            .unwrap();
        assert_eq!(batch.len(), 3, "the batch's memory fits what was free");
        // Room for everything: the flood's quota (2) and the calm
        // tenant's due runs (2), the four claims single ones would make.
        let second = db.claim_runs("w", LEASE, NOW + 100, GIB, 10).await.unwrap();
        let claimed: Vec<&String> = batch.iter().chain(&second).map(|c| &c.run.id).collect();
        assert_eq!(claimed.len(), 4, "{claimed:?}");
        // The flood's highest priorities, in order, and each calm run.
        let flood_claimed: Vec<&String> = claimed
            .iter()
            .copied()
            .filter(|id| flood_runs.contains(id))
            .collect();
        assert_eq!(flood_claimed, vec![&flood_runs[4], &flood_runs[3]]);
        for id in &calm_runs {
            assert!(claimed.contains(&id), "{id} not claimed: {claimed:?}");
        }
        assert!(!claimed.contains(&&not_due));
        assert_eq!(
            running_of(&db, &flood).await,
            2,
            "the quota holds in a batch"
        );
        // Every one leased and started, with its attempt row, as a single
        // claim leaves it.
        for claim in batch.iter().chain(&second) {
            assert_eq!(claim.attempt, 1);
            let run = db.get_run_any(&claim.run.id).await.unwrap().unwrap();
            assert_eq!(run.state, RunState::Running);
            assert_eq!(run.worker_id.as_deref(), Some("w"));
            assert_eq!(run.lease_until, Some(NOW + 100 + 30_000));
            let attempts = db.attempts(&claim.run.id).await.unwrap();
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].state, "running");
        }
        assert!(
            db.claim_runs("w", LEASE, NOW + 100, GIB, 10)
                .await
                .unwrap()
                .is_empty(),
            "nothing due has room"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_pass_a_running_quota() {
    each_backend(10, |backend| async move {
        let db = backend.db.clone();
        let mut tenants = Vec::new();
        for (name, quota) in [("a", 5), ("b", 3), ("c", 1)] {
            let id = db.ensure_tenant(name).await.unwrap();
            let quotas = TenantQuotas {
                max_running_runs: quota,
                ..TenantQuotas::default()
            };
            db.set_tenant_quotas(&id, &quotas).await.unwrap();
            for i in 0..60 {
                submit(&db, &id, NOW + i, |_| {}).await;
            }
            tenants.push((id, quota as usize));
        }
        // Another connection pool, as a second worker process would have.
        let other = Db::connect(&backend.url, 10).await.unwrap();
        let claimers: Vec<_> = (0..8)
            .map(|w| {
                let db = if w % 2 == 0 {
                    db.clone()
                } else {
                    other.clone()
                };
                tokio::spawn(async move {
                    let mut claimed = 0;
                    while db
                        .claim_run(&format!("w{w}"), LEASE, NOW + 100, GIB)
                        .await
                        .unwrap()
                        .is_some()
                    {
                        claimed += 1;
                        tokio::task::yield_now().await;
                    }
                    claimed
                })
            })
            .collect();
        let mut total = 0;
        for claimer in claimers {
            total += claimer.await.unwrap();
        }
        // Exactly each tenant's quota runs, however the claims raced.
        for (tenant, quota) in &tenants {
            assert_eq!(running_of(&db, tenant).await, *quota, "tenant {tenant}");
        }
        assert_eq!(total, 5 + 3 + 1);
        other.close().await;
        backend
    })
    .await;
}

#[tokio::test]
async fn submissions_and_schedules_past_their_quota_are_refused() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let other = db.ensure_tenant("other").await.unwrap();
        let quotas = TenantQuotas {
            max_queued_runs: 3,
            max_running_runs: 10,
            max_schedules: 1,
        };
        db.set_tenant_quotas(&t, &quotas).await.unwrap();
        let keyed = submit(&db, &t, NOW, |r| r.idempotency_key = Some("k".into())).await;
        submit(&db, &t, NOW, |_| {}).await;
        submit(&db, &t, NOW, |_| {}).await;
        assert_queue_full(&db.submit_run(&new_run(&t), NOW).await, 3);
        // A repeated submission is no new run: it still answers.
        let mut again = new_run(&t);
        again.idempotency_key = Some("k".into());
        assert_eq!(db.submit_run(&again, NOW).await.unwrap(), (keyed, false));
        // Other tenants are not affected.
        submit(&db, &other, NOW + 1, |_| {}).await;
        // Once one starts, there is room again.
        let claim = db.claim_run("w", LEASE, NOW, GIB).await.unwrap().unwrap();
        assert_eq!(claim.run.spec.tenant_id, t, "acme's runs are older");
        submit(&db, &t, NOW, |_| {}).await;

        let schedule = |name: &str| ScheduleRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            cron: "@daily".into(),
            timezone: "UTC".into(),
            template: serde_json::json!({"module": "hello"}),
            catch_up: "skip".into(),
            paused: false,
            next_fire_at: Some(NOW),
            last_fired_at: None,
            created_at: NOW,
        };
        db.insert_schedule(&t, &schedule("one")).await.unwrap();
        let refused = db.insert_schedule(&t, &schedule("two")).await;
        assert!(
            matches!(
                refused,
                Err(DbError::QuotaExceeded {
                    quota: "max_schedules",
                    limit: 1
                })
            ),
            "{refused:?}"
        );
        db.insert_schedule(&other, &schedule("two")).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn run_lists_read_no_inputs_or_outputs() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let input = vec![7u8; 1 << 20];
        let id = submit(&db, &t, NOW, |r| r.input = input.clone()).await;
        let quiet = submit(&db, &t, NOW + 1, |_| {}).await;
        let claim = db.claim_run("w", LEASE, NOW, GIB).await.unwrap().unwrap();
        assert_eq!(claim.run.id, id);
        assert_eq!(claim.run.spec.input, input, "a claim reads the input");
        let done = AttemptOutcome::Succeeded {
            output: vec![9u8; 1 << 20],
            output_key: None,
        };
        assert!(
            db.finish_attempt(&id, "w", 1, &done, NOW + 5)
                .await
                .unwrap()
        );

        let all = RunFilter {
            limit: 10,
            ..RunFilter::default()
        };
        let listed = db.list_runs(&t, &all).await.unwrap();
        let ran = listed.iter().find(|r| r.id == id).unwrap();
        assert!(ran.spec.input.is_empty() && ran.output.is_none(), "{ran:?}");
        assert!(ran.has_output);
        assert_eq!(ran.state, RunState::Succeeded);
        let waiting = listed.iter().find(|r| r.id == quiet).unwrap();
        assert!(!waiting.has_output);
        // One run, read whole, has both.
        let full = db.get_run(&t, &id).await.unwrap().unwrap();
        assert_eq!(full.spec.input, input);
        assert_eq!(full.output.map(|o| o.len()), Some(1 << 20));
        assert!(full.has_output);
    })
    .await;
}

/// Claims the one queued run, `step`'s, and records it succeeded: what
/// the step's end set in motion.
async fn end_step_run(db: &Db, t: &str, workflow_run: &str, step: &str) -> Option<Settled> {
    let id = submit(db, t, NOW, |r| {
        r.workflow_run_id = Some(workflow_run.to_owned());
        r.step_name = Some(step.to_owned());
    })
    .await;
    // Queuing a step's run marks the step running in the same commit.
    if let Some(record) =
        (db.workflow_steps(workflow_run).await.unwrap().into_iter()).find(|s| s.name == step)
    {
        assert_eq!(record.state, "running");
        assert_eq!(record.run_id.as_deref(), Some(id.as_str()));
    }
    let claim = db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
    assert_eq!(claim.run.id, id);
    let done = AttemptOutcome::Succeeded {
        output: step.as_bytes().to_vec(),
        output_key: None,
    };
    let settled = db
        .finish_and_claim(&id, "w1", claim.attempt, &done, &[], NOW + 1, true, None)
        .await
        .unwrap()
        .expect("the attempt was w1's to finish")
        .settled;
    assert!(
        db.finish_and_claim(&id, "w1", claim.attempt, &done, &[], NOW + 2, true, None)
            .await
            .unwrap()
            .is_none(),
        "a second report was taken"
    );
    settled.map(|mut settled| {
        settled.ready.sort();
        settled
    })
}

/// A workflow run of four steps, a -> b, a -> c, b and c -> d.
async fn diamond(db: &Db, t: &str) -> String {
    let step = |name: &str, waiting: i64, successors: &[&str]| NewStep {
        name: name.into(),
        waiting,
        successors: successors.iter().map(|s| (*s).to_owned()).collect(),
    };
    let steps = [
        step("a", 0, &["b", "c"]),
        step("b", 1, &["d"]),
        step("c", 1, &["d"]),
        step("d", 2, &[]),
    ];
    db.create_workflow_run(t, "flow", &serde_json::json!({}), &steps, NOW)
        .await
        .unwrap()
}

#[tokio::test]
async fn ending_a_step_counts_its_successors_down_once() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let wf = diamond(&db, &t).await;

        let a = end_step_run(&db, &t, &wf, "a").await.expect("a is a step");
        assert_eq!(a.workflow_run_id, wf);
        assert_eq!(a.tenant_id, t);
        assert_eq!(a.step, "a");
        assert!(a.succeeded);
        assert_eq!(a.ready, ["b", "c"]);
        assert!(!a.all_ended);
        assert!(a.workflow_running, "read in the step's own commit");
        assert!(
            !db.move_step(&wf, "a", "pending", "running", Some("late"))
                .await
                .unwrap(),
            "an ended step was moved back to running"
        );

        // b fails (moved by the scheduler): d still waits for c.
        assert!(
            db.move_step(&wf, "b", "pending", "failed", None)
                .await
                .unwrap()
        );
        assert!(
            !db.move_step(&wf, "b", "pending", "failed", None)
                .await
                .unwrap()
        );
        let c = end_step_run(&db, &t, &wf, "c").await.expect("c is a step");
        assert_eq!(c.ready, ["d"], "d waited for b and c, counted once each");
        assert!(!c.all_ended);

        let d = end_step_run(&db, &t, &wf, "d").await.expect("d is a step");
        assert!(d.ready.is_empty());
        assert!(d.all_ended, "every step has ended");
        let states: Vec<(String, String)> = db
            .workflow_steps(&wf)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.state))
            .collect();
        let expected = [
            ("a", "succeeded"),
            ("b", "failed"),
            ("c", "succeeded"),
            ("d", "succeeded"),
        ]
        .map(|(n, s)| (n.to_owned(), s.to_owned()));
        assert_eq!(states, expected);

        // A run outside any workflow ends nothing else.
        assert_eq!(
            end_step_run(&db, &t, "no-such-workflow-run", "x").await,
            None
        );
    })
    .await;
}

/// A step's end claims the worker's next run in its commit, as any run's
/// does (a fan-out's steps one turn each), unless it made another step
/// ready: that one the worker starts itself, so the claim does not look.
#[tokio::test]
async fn a_step_that_readies_nothing_claims_the_next_run_in_its_commit() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let wf = diamond(&db, &t).await;
        end_step_run(&db, &t, &wf, "a").await.expect("a is a step");
        let step_run = |name: &'static str, at| {
            let (db, t, wf) = (&db, &t, &wf);
            async move {
                submit(db, t, at, |r| {
                    r.workflow_run_id = Some(wf.clone());
                    r.step_name = Some(name.to_owned());
                })
                .await
            }
        };
        let b = step_run("b", NOW + 1).await;
        let c = step_run("c", NOW + 2).await;
        let other = submit(&db, &t, NOW + 3, |_| {}).await;
        let ask = ClaimAsk {
            worker_id: "w1",
            lease: LEASE,
            max_memory: GIB,
            max_runs: 1,
        };
        let done = AttemptOutcome::Succeeded {
            output: b"ok".to_vec(),
            output_key: None,
        };

        let claim = db
            .claim_run("w1", LEASE, NOW + 5, GIB)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.run.id, b);
        let finished = db
            .finish_and_claim(&b, "w1", 1, &done, &[], NOW + 6, true, Some(ask))
            .await
            .unwrap()
            .expect("w1's run");
        let settled = finished.settled.expect("b is a step");
        assert!(settled.ready.is_empty(), "d still waits for c");
        let claims = finished.claims.expect("b readied nothing: it looked");
        let ids: Vec<&str> = claims.iter().map(|c| c.run.id.as_str()).collect();
        assert_eq!(ids, [c.as_str()], "c claimed in b's commit");
        assert_eq!(
            db.get_run(&t, &c).await.unwrap().unwrap().state,
            RunState::Running
        );

        let finished = db
            .finish_and_claim(&c, "w1", 1, &done, &[], NOW + 7, true, Some(ask))
            .await
            .unwrap()
            .expect("w1's run");
        assert_eq!(finished.settled.expect("c is a step").ready, ["d"]);
        assert!(
            finished.claims.is_none(),
            "c made d ready, which the worker starts: the claim did not look"
        );
        assert_eq!(
            db.get_run(&t, &other).await.unwrap().unwrap().state,
            RunState::Queued,
            "the other run was not claimed ahead of d"
        );
    })
    .await;
}

#[tokio::test]
async fn a_step_queued_after_its_workflow_run_was_cancelled_never_starts() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let steps = [
            NewStep {
                name: "a".into(),
                waiting: 0,
                successors: vec!["b".into()],
            },
            NewStep {
                name: "b".into(),
                waiting: 1,
                successors: Vec::new(),
            },
        ];
        let wf = db
            .create_workflow_run(&t, "flow", &serde_json::json!({}), &steps, NOW)
            .await
            .unwrap();
        let a = end_step_run(&db, &t, &wf, "a").await.expect("a is a step");
        assert!(a.workflow_running && a.ready == ["b"], "{a:?}");
        // The cancel lands between the step's end, which saw the workflow
        // run running, and the queuing of what follows it.
        db.cancel_workflow_run(&t, &wf, NOW + 2)
            .await
            .unwrap()
            .expect("the workflow run is the tenant's");
        let b = RunSpec {
            workflow_run_id: Some(wf.clone()),
            step_name: Some("b".into()),
            idempotency_key: Some(format!("workflow:{wf}:b")),
            ..new_run(&t)
        };
        let (id, created, claim) = db
            .submit_claimed(&b, "w1", LEASE, NOW + 3, GIB)
            .await
            .unwrap();
        assert!(created);
        assert!(
            claim.is_none(),
            "claimed for a cancelled workflow: {claim:?}"
        );
        let run = db.get_run_any(&id).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Cancelled);
        assert_eq!(
            run.error.as_deref(),
            Some("cancelled with its workflow run before it started")
        );
        assert!(
            db.claim_run("w1", LEASE, NOW + 4, GIB)
                .await
                .unwrap()
                .is_none()
        );
        let b = db.workflow_steps(&wf).await.unwrap().remove(1);
        assert_eq!((b.name.as_str(), b.state.as_str()), ("b", "skipped"));
    })
    .await;
}

/// A workflow's steps submitted together (as the scheduler queues a
/// fan-out's) each start their own step with their own run, in the
/// batch's transaction; submitted again (a scheduler pass after a crash),
/// their keys name the same runs and no step moves to another; a step
/// queued after its workflow run was cancelled is cancelled, as one
/// submitted alone is. On PostgreSQL the batch goes in multi-row inserts.
#[tokio::test]
async fn steps_submitted_together_each_start_their_own_step() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let steps: Vec<NewStep> = ["a", "b", "c"]
            .into_iter()
            .map(|name| NewStep {
                name: name.into(),
                waiting: 0,
                successors: Vec::new(),
            })
            .collect();
        let wf = db
            .create_workflow_run(&t, "flow", &serde_json::json!({}), &steps, NOW)
            .await
            .unwrap();
        let step = |name: &str| RunSpec {
            workflow_run_id: Some(wf.clone()),
            step_name: Some(name.into()),
            idempotency_key: Some(format!("workflow:{wf}:{name}")),
            ..new_run(&t)
        };
        let first = db.submit_runs(&[step("a"), step("b")], NOW).await.unwrap();
        assert!(first.iter().all(|(_, created)| *created), "{first:?}");
        assert_ne!(first[0].0, first[1].0);
        let again = db
            .submit_runs(&[step("a"), step("b"), step("c")], NOW + 1)
            .await
            .unwrap();
        assert_eq!(
            again[..2],
            [(first[0].0.clone(), false), (first[1].0.clone(), false)]
        );
        assert!(again[2].1, "c is new");
        let stored = db.workflow_steps(&wf).await.unwrap();
        let started: Vec<(&str, &str, Option<&str>)> = stored
            .iter()
            .map(|s| (s.name.as_str(), s.state.as_str(), s.run_id.as_deref()))
            .collect();
        assert_eq!(
            started,
            [
                ("a", "running", Some(first[0].0.as_str())),
                ("b", "running", Some(first[1].0.as_str())),
                ("c", "running", Some(again[2].0.as_str())),
            ]
        );
        for (id, _) in &again {
            let run = db.get_run_any(id).await.unwrap().unwrap();
            assert_eq!(run.state, RunState::Queued, "{id}");
        }

        let late = db
            .create_workflow_run(&t, "flow", &serde_json::json!({}), &steps, NOW + 2)
            .await
            .unwrap();
        db.cancel_workflow_run(&t, &late, NOW + 3)
            .await
            .unwrap()
            .expect("the workflow run is the tenant's");
        let late_step = |name: &str| RunSpec {
            workflow_run_id: Some(late.clone()),
            step_name: Some(name.into()),
            idempotency_key: Some(format!("workflow:{late}:{name}")),
            ..new_run(&t)
        };
        let queued = db
            .submit_runs(&[late_step("a"), late_step("b")], NOW + 4)
            .await
            .unwrap();
        for (id, created) in &queued {
            assert!(created);
            let run = db.get_run_any(id).await.unwrap().unwrap();
            assert_eq!(run.state, RunState::Cancelled, "{id}");
        }
        let late_steps = db.workflow_steps(&late).await.unwrap();
        assert!(
            late_steps.iter().all(|s| s.state != "running"),
            "{late_steps:?}"
        );
    })
    .await;
}

/// Ends the claimed run `id` (which must be the next claimable) as
/// succeeded with `output`, or failed.
async fn end_split_run(db: &Db, id: &str, output: Option<&[u8]>) -> Option<Settled> {
    let claim = db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().unwrap();
    assert_eq!(claim.run.id, id);
    let done = match output {
        Some(output) => AttemptOutcome::Succeeded {
            output: output.to_vec(),
            output_key: None,
        },
        None => AttemptOutcome::Finished {
            state: RunState::Failed,
            error: "no".into(),
            retryable: false,
        },
    };
    db.finish_and_claim(id, "w1", claim.attempt, &done, &[], NOW + 1, true, None)
        .await
        .unwrap()
        .expect("the attempt was w1's to finish")
        .settled
}

#[tokio::test]
async fn a_map_step_runs_its_splits_within_its_parallelism_and_ends_with_the_last() {
    each_db(|db| async move {
        let t = db.ensure_tenant("acme").await.unwrap();
        let steps = [
            NewStep {
                name: "m".into(),
                waiting: 0,
                successors: vec!["r".into()],
            },
            NewStep {
                name: "r".into(),
                waiting: 1,
                successors: vec![],
            },
        ];
        let wf = db
            .create_workflow_run(&t, "flow", &serde_json::json!({}), &steps, NOW)
            .await
            .unwrap();
        let splits: Vec<NewSplit> = (0..3)
            .map(|i| NewSplit {
                input: format!("{{\"index\": {i}}}"),
                objects: 1,
                bytes: 10 * i,
            })
            .collect();
        assert_eq!(
            db.start_map_step(&wf, "m", &splits).await.unwrap(),
            Some(None)
        );
        assert_eq!(
            db.start_map_step(&wf, "m", &splits).await.unwrap(),
            None,
            "a map step starts once"
        );
        let split_run = |index: i64| {
            let mut run = new_run(&t);
            run.workflow_run_id = Some(wf.clone());
            run.step_name = Some("m".into());
            run.idempotency_key = Some(format!("workflow:{wf}:m:{index}"));
            // Claimed in index order.
            run.priority = 10 - index;
            run
        };
        let pending = db.launchable_splits(&wf, "m", 2).await.unwrap();
        assert_eq!(pending.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(pending[1].input, "{\"index\": 1}");
        let first = db
            .submit_split(&split_run(0), 0, 2, NOW)
            .await
            .unwrap()
            .unwrap();
        let second = db
            .submit_split(&split_run(1), 1, 2, NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            db.submit_split(&split_run(2), 2, 2, NOW).await.unwrap(),
            None,
            "past the parallelism"
        );
        assert_eq!(
            db.submit_split(&split_run(1), 1, 3, NOW).await.unwrap(),
            None,
            "a split runs once"
        );
        assert!(db.launchable_splits(&wf, "m", 2).await.unwrap().is_empty());

        let ended = end_split_run(&db, &first, Some(b"zero")).await.unwrap();
        assert_eq!((ended.split, ended.step_ended), (Some(0), false));
        assert!(ended.ready.is_empty());
        let third = db
            .submit_split(&split_run(2), 2, 2, NOW)
            .await
            .unwrap()
            .unwrap();
        let ended = end_split_run(&db, &second, None).await.unwrap();
        assert_eq!((ended.split, ended.step_ended), (Some(1), false));
        let ended = end_split_run(&db, &third, Some(b"two")).await.unwrap();
        assert_eq!((ended.split, ended.step_ended), (Some(2), true));
        assert!(!ended.succeeded, "a split failed, so the step did");
        assert_eq!(ended.ready, ["r"]);
        let outputs = db.split_outputs(&wf, "m").await.unwrap();
        let outputs: Vec<Option<Vec<u8>>> = outputs
            .into_iter()
            .map(|o| o.succeeded.then(|| o.output.unwrap()))
            .collect();
        assert_eq!(
            outputs,
            [Some(b"zero".to_vec()), None, Some(b"two".to_vec())]
        );
        let states: Vec<String> = db
            .workflow_splits(&wf)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.state)
            .collect();
        assert_eq!(states, ["succeeded", "failed", "succeeded"]);

        // A second workflow run, cancelled with a split queued and two pending.
        let wf2 = db
            .create_workflow_run(&t, "flow", &serde_json::json!({}), &steps, NOW)
            .await
            .unwrap();
        db.start_map_step(&wf2, "m", &splits).await.unwrap();
        let mut run = split_run(0);
        run.workflow_run_id = Some(wf2.clone());
        run.idempotency_key = Some(format!("workflow:{wf2}:m:0"));
        db.submit_split(&run, 0, 1, NOW).await.unwrap().unwrap();
        assert_eq!(
            db.cancel_workflow_run("other", &wf2, NOW).await.unwrap(),
            None
        );
        let cancelled = db
            .cancel_workflow_run(&t, &wf2, NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (cancelled.state.as_str(), cancelled.dequeued),
            ("cancelled", 1)
        );
        assert!(cancelled.running.is_empty());
        let states: Vec<String> = db
            .workflow_splits(&wf2)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.state)
            .collect();
        assert_eq!(states, ["cancelled", "cancelled", "cancelled"]);
        assert!(db.claim_run("w1", LEASE, NOW, GIB).await.unwrap().is_none());
        assert_eq!(
            db.workflow_run_state(&wf2).await.unwrap().as_deref(),
            Some("cancelled")
        );
        let again = db
            .cancel_workflow_run(&t, &wf2, NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.state.as_str(), again.dequeued), ("cancelled", 0));

        // A third, whose runs can no longer be admitted: its pending splits
        // fail, and with none running the step ends failed, saying why.
        let wf3 = db
            .create_workflow_run(&t, "flow", &serde_json::json!({}), &steps, NOW)
            .await
            .unwrap();
        db.start_map_step(&wf3, "m", &splits).await.unwrap();
        let ended = db
            .fail_pending_splits(&wf3, "m", "module gone")
            .await
            .unwrap()
            .expect("no split was running");
        assert!(!ended.succeeded && ended.step_ended);
        assert_eq!(ended.ready, ["r"]);
        let m = db.workflow_steps(&wf3).await.unwrap().remove(0);
        assert_eq!(
            (m.state.as_str(), m.error.as_deref()),
            ("failed", Some("module gone"))
        );
        assert_eq!(
            db.fail_pending_splits(&wf3, "m", "again").await.unwrap(),
            None
        );
    })
    .await;
}
