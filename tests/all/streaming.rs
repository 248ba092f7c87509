//! A large object streams through a task in bounded memory.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use caisson_tests::{ServerToml, caisson_bin, guest_path, key, s3_env, unique_prefix};

const SIZE: usize = 256 << 20;
const CHUNK: usize = 1 << 20;

/// Deterministic, incompressible-enough content for chunk `i`.
fn chunk(i: usize) -> Vec<u8> {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..CHUNK)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Peak resident set of a live process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_256_mib_object_streams_through_a_task_in_bounded_memory() {
    let Some(s3) = s3_env() else { return };
    let prefix = unique_prefix("stream");
    let client = s3.client();

    // Seed the source object with a multipart upload, hashing as we go.
    let src = key(&format!("{prefix}/big.bin"));
    let mut hasher = Sha256::new();
    let upload = client.put_multipart(&src).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    for i in 0..SIZE / CHUNK {
        let data = chunk(i);
        hasher.update(&data);
        writer.wait_for_capacity(2).await.unwrap();
        writer.write(&data);
    }
    writer.finish().await.unwrap();
    let expected = hex::encode(hasher.finalize());

    // Copy it with a task, in a separate worker process we can measure.
    let dir = tempfile::tempdir().unwrap();
    ServerToml::engine_only()
        .engine("max_instances", "4")
        .tables(&s3.toml_table("data", &prefix))
        .write(dir.path());
    let mut child = Command::new(caisson_bin())
        .arg("run")
        .arg(guest_path("stream-copy"))
        .arg("--config")
        .arg(dir.path().join("caisson.toml"))
        .args([
            "--grant",
            "objects=data",
            "--memory",
            "64MiB",
            "--timeout",
            "10m",
        ])
        .args([
            "--param",
            "store=data",
            "--param",
            "src=big.bin",
            "--param",
            "dst=copy.bin",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "stream-copy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        SIZE.to_string()
    );

    // Byte-identical copy.
    let dst = key(&format!("{prefix}/copy.bin"));
    let mut stream = client.get(&dst).await.unwrap().into_stream();
    let mut hasher = Sha256::new();
    let mut copied = 0;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.unwrap();
        copied += bytes.len();
        hasher.update(&bytes);
    }
    assert_eq!(copied, SIZE);
    assert_eq!(hex::encode(hasher.finalize()), expected);

    eprintln!(
        "peak RSS of the worker streaming 256 MiB: {} MiB",
        peak >> 20
    );
    assert!(peak > 0, "could not read the worker's RSS");
    assert!(
        peak < (SIZE as u64) / 2,
        "worker peak RSS {} MiB is not far below the object size",
        peak >> 20
    );

    for path in [src, dst] {
        client.delete(&path).await.unwrap();
    }
}
