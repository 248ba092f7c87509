//! Tasks that try to exhaust the host rather than themselves: instances
//! that declare enormous memories or tables, a million handles, listings
//! without end. Each is stopped by a limit with a clear error, and the
//! runtime runs the next task as before.
//!
//! Giant SQL results are capped in the host (rows and bytes per call,
//! batches per cursor call): `host-api/tests/sql.rs`,
//! `sqlite_query_enforces_row_and_byte_limits`,
//! `sqlite_cursor_batches_respect_the_byte_limit` and
//! `postgres_query_enforces_row_limit_and_cursor_streams`.

use std::time::Duration;

use caisson_runtime::{RunError, RunLimits, Runtime};
use caisson_tests::{base_config, runtime};
use object_store::ObjectStoreExt;

use crate::{load, run_with};

fn limits() -> RunLimits {
    RunLimits {
        timeout: Duration::from_secs(20),
        memory: 64 << 20,
        ..RunLimits::default()
    }
}

async fn assert_still_healthy(runtime: &Runtime) {
    let hello = load(runtime, "hello").await;
    let (result, _) = run_with(runtime, &hello, b"after", |r| r.limits = Some(limits())).await;
    assert_eq!(result.unwrap(), b"hello, after");
}

/// A valid task component that also instantiates a core module made of
/// `decls` (memories, tables, ...): its `run` returns its input, if it
/// ever runs.
pub fn task_component_with(decls: &str) -> Vec<u8> {
    echo_task_component(&format!(
        "(core module $bomb {decls})\n(core instance (instantiate $bomb))"
    ))
}

/// A hand-made task component whose `run` returns its input, with `extra`
/// (component-level declarations: imports, core modules) before it.
pub fn echo_task_component(extra: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            {extra}
            (core module $m
                (memory (export "memory") 1)
                (global $next (mut i32) (i32.const 1024))
                (func (export "realloc") (param i32 i32 i32 i32) (result i32)
                    (local $at i32)
                    (local.set $at (global.get $next))
                    (global.set $next (i32.add (local.get $at) (local.get 3)))
                    (local.get $at))
                ;; result<list<u8>, task-error> at 0: ok, the input back.
                (func (export "run") (param i32 i32) (result i32)
                    (i32.store8 (i32.const 0) (i32.const 0))
                    (i32.store (i32.const 4) (local.get 0))
                    (i32.store (i32.const 8) (local.get 1))
                    (i32.const 0))
            )
            (core instance $i (instantiate $m))
            (import "caisson:task/task-types@0.2.0" (instance $types
                (type $record (record (field "message" string) (field "retryable" bool)))
                (export "task-error" (type (eq $record)))
            ))
            (alias export $types "task-error" (type $task-error))
            (func $run (param "input" (list u8)) (result (result (list u8) (error $task-error)))
                (canon lift (core func $i "run") (memory (core memory $i "memory"))
                    (realloc (core func $i "realloc"))))
            (export "run" (func $run))
        )"#
    ))
    .unwrap()
}

#[tokio::test]
async fn a_hand_made_task_component_runs() {
    let rt = runtime(base_config());
    let task = rt.load(&task_component_with("")).await.unwrap();
    let (result, _) = run_with(&rt, &task, b"echo", |r| r.limits = Some(limits())).await;
    assert_eq!(result.unwrap(), b"echo");
}

#[tokio::test]
async fn instantiation_bombs_are_refused_with_a_clear_error() {
    // The pooling allocator refuses some at load time; without it the
    // run's limiter stops them when the instance is made.
    for pooling in [true, false] {
        let mut config = base_config();
        config.engine.pooling = pooling;
        instantiation_bombs(runtime(config)).await;
    }
}

async fn instantiation_bombs(rt: Runtime) {
    for (what, decls, expect) in [
        // Over the run's 64 MiB memory limit, inside the pool's slots.
        (
            "a 256 MiB memory",
            "(memory 4096)",
            &["memory limit 64 MiB exceeded"][..],
        ),
        // Over what the pool can hold at all (1 GiB here).
        ("a 4 GiB memory", "(memory 65536)", &["memory"][..]),
        (
            "a 64-bit memory of 1 TiB",
            "(memory i64 16777216)",
            &["memory"][..],
        ),
        (
            "a table of 100 million elements",
            "(table 100000000 funcref)",
            &["table"][..],
        ),
        (
            "a thousand tables",
            &"(table 1 funcref)".repeat(1000),
            &["table"][..],
        ),
    ] {
        let bytes = task_component_with(decls);
        assert!(bytes.len() < 16 << 10, "{what}: {} bytes", bytes.len());
        let outcome = match rt.load(&bytes).await {
            // Refused at load time: fine, as long as it says why.
            Err(e) => e.to_string(),
            Ok(task) => {
                let (result, _) = run_with(&rt, &task, b"", |r| r.limits = Some(limits())).await;
                let err = result.expect_err(what);
                assert!(
                    matches!(
                        err,
                        RunError::MemoryLimit(_) | RunError::Trap(_) | RunError::Setup(_)
                    ),
                    "{what}: {err:?}"
                );
                err.to_string()
            }
        };
        for expect in expect {
            assert!(
                outcome.to_lowercase().contains(&expect.to_lowercase()),
                "{what}: {outcome}"
            );
        }
        eprintln!("{what} (pooling {}): {outcome}", rt.config().engine.pooling);
        assert_still_healthy(&rt).await;
    }
}

fn with_data_store() -> Runtime {
    let mut config = base_config();
    config.objects = toml::from_str("[data]\ntype = \"memory\"").unwrap();
    runtime(config)
}

#[tokio::test]
async fn a_million_handles_hit_the_resource_cap() {
    let rt = with_data_store();
    let task = load(&rt, "handle-hog").await;
    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.grants = caisson_host_api::Grants::default().with_object_store("data");
        r.limits = Some(limits());
    })
    .await;
    let err = result.unwrap_err();
    let cap = rt.config().engine.max_resources;
    match &err {
        RunError::Failed { message, retryable } => {
            assert!(!retryable, "{err}");
            assert!(
                message.contains("too large")
                    && message.contains(&format!("already holds {cap} open handles")),
                "{err}"
            );
        }
        other => panic!("expected the task's error, got {other:?}"),
    }
    eprintln!("1,000,000 opens asked for: {err}");
    assert_still_healthy(&rt).await;
}

#[tokio::test]
async fn listing_without_end_is_stopped_by_the_run_limits() {
    let rt = with_data_store();
    let store = rt.object_stores().get("data").unwrap();
    for i in 0..3 {
        store
            .put(&caisson_tests::key(&format!("k{i}")), "x".into())
            .await
            .unwrap();
    }
    let task = load(&rt, "list-forever").await;
    let grant = || caisson_host_api::Grants::default().with_object_store("data");

    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.grants = grant();
        r.limits = Some(RunLimits {
            timeout: Duration::from_secs(2),
            ..limits()
        });
    })
    .await;
    assert_eq!(
        result.unwrap_err(),
        RunError::Timeout(Duration::from_secs(2))
    );

    let (result, _) = run_with(&rt, &task, b"", |r| {
        r.grants = grant();
        r.limits = Some(RunLimits {
            fuel: Some(20_000_000),
            ..limits()
        });
    })
    .await;
    assert_eq!(result.unwrap_err(), RunError::FuelExhausted(20_000_000));
    assert_still_healthy(&rt).await;
}
