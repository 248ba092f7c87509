//! `read-many` and `read-prefix` on the real S3 server and HDFS: through
//! the host traits (order, a failure in its place, the prefix in key
//! order) and through a Rust guest. `word-count` (examples.rs) and the
//! Python probe and ETL example (python.rs) read with it too.

use caisson_host_api::objects::{ManyReader, StoreHandle};
use caisson_host_api::wit::objects::{HostManyReader, HostStore};
use caisson_host_api::{Grants, ObjectsError as WitError};
use caisson_tests::{RemoteStore, base_config, hdfs_env, key, runtime, s3_env, unique_prefix};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;
use wasmtime::component::Resource;

use crate::objects::Direct;
use crate::{json, load, run_with};

/// The body of object `i`: sizes from a few bytes to a few KB.
fn body(i: usize) -> Vec<u8> {
    format!("{i:05} ").repeat(1 + (i * 37) % 500).into_bytes()
}

/// Uploads `n` objects under `prefix/in/`, returning their keys (relative
/// to `prefix`) in key order.
async fn seed(remote: &impl RemoteStore, prefix: &str, n: usize) -> Vec<String> {
    let client = remote.client();
    let keys: Vec<String> = (0..n).map(|i| format!("in/part-{i:05}")).collect();
    let uploads = keys.iter().enumerate().map(|(i, k)| {
        let client = client.clone();
        let path = key(&format!("{prefix}/{k}"));
        async move { client.put(&path, PutPayload::from(body(i))).await }
    });
    // A few at a time: MiniDFS is slow to take many files at once.
    futures::stream::iter(uploads)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    keys
}

async fn drain(
    direct: &mut Direct,
    reader: Resource<ManyReader>,
) -> Vec<(String, Result<Vec<u8>, WitError>)> {
    let mut all = Vec::new();
    loop {
        let next = HostManyReader::next(&mut direct.view(), Resource::new_borrow(reader.rep()))
            .await
            .unwrap()
            .unwrap();
        match next {
            Some(entry) => all.push(entry),
            None => break,
        }
    }
    HostManyReader::drop(&mut direct.view(), reader)
        .await
        .unwrap();
    all
}

/// Every entry of a `read-prefix` reader over `prefix`.
async fn read_prefix(
    direct: &mut Direct,
    store: &Resource<StoreHandle>,
    prefix: &str,
) -> Vec<(String, Result<Vec<u8>, WitError>)> {
    let reader = HostStore::read_prefix(
        &mut direct.view(),
        Resource::new_borrow(store.rep()),
        prefix.into(),
    )
    .await
    .unwrap()
    .unwrap();
    drain(direct, reader).await
}

async fn read_many_on(remote: &impl RemoteStore) {
    let prefix = unique_prefix("read-many");
    let keys = seed(remote, &prefix, 300).await;
    let mut direct = Direct::new(remote.store_config(&prefix));
    let store = direct.open().await;

    // Given order (not key order), with a missing key in the middle.
    let mut asked: Vec<String> = keys.iter().rev().cloned().collect();
    asked.insert(100, "in/missing".into());
    let reader = HostStore::read_many(
        &mut direct.view(),
        Resource::new_borrow(store.rep()),
        asked.clone(),
    )
    .await
    .unwrap()
    .unwrap();
    let got = drain(&mut direct, reader).await;
    assert_eq!(
        got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        asked.iter().map(String::as_str).collect::<Vec<_>>(),
        "on {}",
        remote.name()
    );
    for (key, data) in &got {
        if key == "in/missing" {
            assert!(matches!(data, Err(WitError::NotFound)), "{data:?}");
        } else {
            let i: usize = key["in/part-".len()..].parse().unwrap();
            assert_eq!(
                data.as_ref().unwrap(),
                &body(i),
                "{key} on {}",
                remote.name()
            );
        }
    }

    // The prefix, in key order.
    let got = read_prefix(&mut direct, &store, "in/").await;
    assert_eq!(
        got.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        keys,
        "on {}",
        remote.name()
    );
    assert!(got.iter().all(|(_, data)| data.is_ok()));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_many_keeps_order_and_places_failures_on_s3() {
    let Some(s3) = s3_env() else { return };
    read_many_on(&s3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn read_many_keeps_order_and_places_failures_on_hdfs() {
    let Some(hdfs) = hdfs_env() else { return };
    read_many_on(&hdfs).await;
}

/// A prefix over several listing pages (the S3 server answers 1,000 keys
/// a page; the host lists a page ahead of its reads), in nested
/// directories whose key order is not a directory walk's: every object
/// once, in key order, as the store's own listing gives them.
#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_of_several_listing_pages_arrives_whole_and_in_key_order_on_s3() {
    let Some(s3) = s3_env() else { return };
    let prefix = unique_prefix("read-prefix-pages");
    let mut keys = seed(&s3, &prefix, 2_600).await;
    // `a.txt` sorts before `a/...` and `a0` after it ('.' < '/' < '0').
    let nested = [
        "in/a.txt", "in/a/x/1", "in/a/x/2", "in/a/y", "in/a0", "in/z/z/z",
    ];
    let client = s3.client();
    for (i, k) in nested.iter().enumerate() {
        (client.put(&key(&format!("{prefix}/{k}")), PutPayload::from(body(i))))
            .await
            .unwrap();
    }
    keys.extend(nested.map(String::from));
    keys.sort();
    let listed: Vec<String> = client
        .list(Some(&key(&format!("{prefix}/in"))))
        .map(|meta| meta.unwrap().location.to_string()[prefix.len() + 1..].to_owned())
        .collect()
        .await;
    assert_eq!(listed, keys, "the S3 server's own listing");

    let mut direct = Direct::new(s3.store_config(&prefix));
    let store = direct.open().await;
    let got = read_prefix(&mut direct, &store, "in").await;
    assert_eq!(
        got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        keys.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for (key, data) in &got {
        let expected = match nested.iter().position(|n| n == key) {
            Some(i) => body(i),
            None => body(key["in/part-".len()..].parse().unwrap()),
        };
        assert_eq!(data.as_ref().unwrap(), &expected, "{key}");
    }
}

/// A Rust guest reads through the SDK's iterator: the failure in its
/// place, everything after it, and a prefix in key order.
#[tokio::test(flavor = "multi_thread")]
async fn a_rust_guest_reads_many_objects_on_s3() {
    let Some(s3) = s3_env() else { return };
    let prefix = unique_prefix("read-many-guest");
    let keys = seed(&s3, &prefix, 120).await;
    let mut config = base_config();
    config
        .objects
        .insert("data".into(), s3.store_config(&prefix));
    let rt = runtime(config);
    let task = load(&rt, "read-many-probe").await;

    let mut asked = vec![keys[7].clone(), "in/missing".into(), "../up".into()];
    asked.extend(keys[..50].iter().cloned());
    let input = json!({ "keys": asked }).to_string();
    let (result, log) = run_with(&rt, &task, input.as_bytes(), |r| {
        r.grants = Grants::default().with_object_store("data");
    })
    .await;
    let output = json(&result.unwrap_or_else(|e| panic!("{e}: {:?}", log.records())));
    let mut expected = vec![
        json!([keys[7], body(7).len()]),
        json!(["in/missing", "not-found"]),
        json!(["../up", "invalid-input"]),
    ];
    expected.extend((0..50).map(|i| json!([keys[i], body(i).len()])));
    assert_eq!(output, json!(expected));

    let (result, log) = run_with(&rt, &task, br#"{"prefix": "in"}"#, |r| {
        r.grants = Grants::default().with_object_store("data");
    })
    .await;
    let output = json(&result.unwrap_or_else(|e| panic!("{e}: {:?}", log.records())));
    let expected: Vec<_> = (0..keys.len())
        .map(|i| json!([keys[i], body(i).len()]))
        .collect();
    assert_eq!(output, json!(expected));
}
