//! Anything that is not a task component is refused with a message that
//! says what it is, and the runtime goes on.

use caisson_runtime::RuntimeError;
use caisson_tests::{base_config, guest, runtime};

async fn rejection(bytes: &[u8]) -> String {
    let rt = runtime(base_config());
    match rt.load(bytes).await {
        Ok(_) => panic!("the runtime accepted an invalid component"),
        Err(RuntimeError::InvalidComponent(message)) => message,
        Err(other) => panic!("expected InvalidComponent, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_bytes_are_not_wasm() {
    let message = rejection(b"#!/bin/sh\nrm -rf /\n").await;
    assert!(message.contains("not a WebAssembly binary"), "{message}");
    let message = rejection(&[]).await;
    assert!(message.contains("not a WebAssembly binary"), "{message}");
}

#[tokio::test]
async fn a_core_module_is_named_as_such() {
    let module = wat::parse_str("(module (func (export \"run\")))").unwrap();
    let message = rejection(&module).await;
    assert!(
        message.contains("core WebAssembly module, not a component"),
        "{message}"
    );
}

#[tokio::test]
async fn a_truncated_component_is_malformed() {
    let bytes = guest("hello");
    let message = rejection(&bytes[..bytes.len() / 2]).await;
    assert!(!message.is_empty());
    // And the intact one still loads afterwards in a fresh runtime.
    runtime(base_config()).load(&bytes).await.unwrap();
}

#[tokio::test]
async fn a_component_with_foreign_imports_is_refused() {
    let component = wat::parse_str(
        r#"(component
            (import "acme:net/raw-sockets" (instance))
        )"#,
    )
    .unwrap();
    let message = rejection(&component).await;
    assert!(message.contains("acme:net/raw-sockets"), "{message}");
    assert!(message.contains("does not provide"), "{message}");
}

/// 0.1.0 is not served beside 0.2.x (see README.md, "The WIT contract and
/// its versions"): a task built against it is refused with a message that
/// says to rebuild, before the linker sees it.
#[tokio::test]
async fn a_component_built_against_caisson_task_0_1_is_refused() {
    let component = wat::parse_str(
        r#"(component
            (import "caisson:task/params@0.1.0" (instance))
        )"#,
    )
    .unwrap();
    let message = rejection(&component).await;
    assert!(message.contains("caisson:task/params@0.1.0"), "{message}");
    assert!(message.contains("caisson:task@0.2.1"), "{message}");
    assert!(message.contains("rebuild"), "{message}");
}

/// 0.2.1 only added to 0.2.0 (see README.md, "The WIT contract and its
/// versions"): a task built against 0.2.0, which imports 0.2.0 functions,
/// still loads and runs on this host.
#[tokio::test]
async fn a_task_built_against_caisson_task_0_2_0_still_runs() {
    let component = crate::exhaustion::echo_task_component(
        r#"(import "caisson:task/params@0.2.0" (instance
                (export "get" (func (param "name" string) (result (option string))))
            ))"#,
    );
    let rt = runtime(base_config());
    let task = rt.load(&component).await.unwrap();
    let (result, _) = crate::run_with(&rt, &task, b"old", |_| {}).await;
    assert_eq!(result.unwrap(), b"old");
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    // Valid and importing nothing, but it exports no `run`.
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "go")))
            (core instance $i (instantiate $m))
            (func $go (canon lift (core func $i "go")))
            (export "go" (func $go))
        )"#,
    )
    .unwrap();
    let message = rejection(&component).await;
    assert!(message.contains("run"), "{message}");
}

#[tokio::test]
async fn inspect_lists_imports_and_exports() {
    let info = caisson_runtime::inspect(&guest("hello")).unwrap();
    assert!(info.exports.iter().any(|e| e == "run"), "{info:?}");
    assert!(
        info.imports
            .iter()
            .any(|i| i.starts_with("caisson:task/log")),
        "{info:?}"
    );
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.engine.cache_dir = dir.path().to_path_buf();
    let bytes = guest("hello");
    let first = runtime(config.clone());
    let task = first.load(&bytes).await.unwrap();
    // The compiled code, and the component's own bytes kept beside it for
    // the fuel-metered engine to compile on the first budgeted run.
    let source = dir.path().join(format!("{}.wasm", task.digest()));
    assert_eq!(
        std::fs::read(&source).unwrap(),
        bytes,
        "the source is not kept"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "expected one cached artifact");
    let name = entries[0].file_name().to_string_lossy().to_string();
    assert!(
        name.starts_with(task.digest()),
        "{name} is not keyed by the digest"
    );
    // A second runtime (a restarted worker) loads the artifact and runs it.
    let second = runtime(config);
    let task = second.load(&bytes).await.unwrap();
    let sink = std::sync::Arc::new(caisson_host_api::log::MemorySink::default());
    let out = second
        .run(
            &task,
            caisson_runtime::RunRequest::new(b"cache".to_vec(), sink),
        )
        .await
        .unwrap();
    assert_eq!(out, b"hello, cache");
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.engine.cache_dir = dir.path().to_path_buf();
    let bytes = guest("hello");
    runtime(config.clone()).load(&bytes).await.unwrap();
    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    std::fs::write(entry.path(), b"not a compiled artifact").unwrap();
    let rt = runtime(config);
    let task = rt.load(&bytes).await.unwrap();
    let sink = std::sync::Arc::new(caisson_host_api::log::MemorySink::default());
    let out = rt
        .run(
            &task,
            caisson_runtime::RunRequest::new(b"again".to_vec(), sink),
        )
        .await
        .unwrap();
    assert_eq!(out, b"hello, again");
}

/// `engine.module_cache_bytes` bounds the compiled code a runtime keeps
/// loaded: with room for only the largest of a few tasks, loading them all
/// never holds more than that, the least recently used go, and an evicted
/// task loads again (from the on-disk cache) and runs.
#[tokio::test]
async fn loaded_tasks_stay_within_the_module_cache_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.engine.cache_dir = dir.path().to_path_buf();
    let names = ["hello", "trap", "echo-params", "busy"];
    // Each task's code size, measured alone.
    let mut sizes = Vec::new();
    for name in names {
        let rt = runtime(config.clone());
        rt.load(&guest(name)).await.unwrap();
        sizes.push((rt.loaded_bytes(), name));
    }
    sizes.sort();
    let (bound, largest) = *sizes.last().unwrap();
    assert!(sizes[0].0 > 0, "a task's code has no size: {sizes:?}");
    config.engine.module_cache_bytes = bound;
    let rt = runtime(config);
    let hello = guest("hello");
    let digest = rt.load(&hello).await.unwrap().digest().to_owned();
    // The largest last: it fills the bound alone, so everything else goes.
    for (_, name) in &sizes {
        if *name != "hello" && *name != largest {
            rt.load(&guest(name)).await.unwrap();
            assert!(
                rt.loaded_bytes() <= bound,
                "{} > {bound}",
                rt.loaded_bytes()
            );
        }
    }
    rt.load(&guest(largest)).await.unwrap();
    assert_eq!(rt.loaded_bytes(), bound);
    if largest != "hello" {
        assert!(rt.loaded(&digest).is_none(), "hello was not evicted");
    }
    let task = rt.load(&hello).await.unwrap();
    assert!(
        rt.loaded_bytes() <= bound,
        "{} > {bound}",
        rt.loaded_bytes()
    );
    let sink = std::sync::Arc::new(caisson_host_api::log::MemorySink::default());
    let out = rt
        .run(
            &task,
            caisson_runtime::RunRequest::new(b"again".to_vec(), sink),
        )
        .await
        .unwrap();
    assert_eq!(out, b"hello, again");
}
