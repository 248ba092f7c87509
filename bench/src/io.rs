//! Streamed object I/O through the host interface against a native Rust
//! `object_store` client, on the same server in the same run: the S3 server,
//! and HDFS (MiniDFS) when `CAISSON_TEST_HDFS_URL` is set. Then the
//! `word-count` example over the compute section's text stored on each of
//! them, against the same `Counter` compiled natively and fed by a native
//! client with as many reads in flight as the task's `read_many`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use caisson_host_api::Grants;
use caisson_host_api::log::MemorySink;
use caisson_runtime::{Config, RunRequest, Runtime};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::report::{Dist, Plan, Report, peak_rss, reset_peak_rss};
use crate::{env, guest};

const CHUNK: usize = 256 * 1024;

/// One server to measure: a native client for it, and the `[objects.data]`
/// table (without its prefix) that gives a task the same server.
pub(crate) struct Backend {
    /// Appended to the S3 labels, which stay as they were: "" or " on HDFS".
    suffix: &'static str,
    /// "S3" or "HDFS", for labels that name the store either way.
    name: &'static str,
    pub(crate) client: Arc<dyn ObjectStore>,
    pub(crate) table: String,
}

impl Backend {
    pub(crate) fn s3() -> Result<Option<Backend>> {
        let var = |name: &str| std::env::var(format!("CAISSON_TEST_S3_{name}")).ok();
        let (Some(endpoint), Some(bucket), Some(access_key), Some(secret_key)) = (
            var("ENDPOINT"),
            var("BUCKET"),
            var("ACCESS_KEY_ID"),
            var("SECRET_ACCESS_KEY"),
        ) else {
            return Ok(None);
        };
        let region = var("REGION").unwrap_or_else(|| "us-east-1".into());
        caisson_host_api::objects::install_crypto_provider();
        let client = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&bucket)
            .with_access_key_id(&access_key)
            .with_secret_access_key(&secret_key)
            .with_region(&region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()?;
        Ok(Some(Backend {
            suffix: "",
            name: "S3",
            client: Arc::new(client),
            table: format!(
                "type = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\n\
                 region = \"{region}\"\naccess_key_id = \"{access_key}\"\n\
                 secret_access_key = \"{secret_key}\"\nallow_http = true\npath_style = true\n"
            ),
        }))
    }

    fn hdfs() -> Result<Option<Backend>> {
        let Ok(url) = std::env::var("CAISSON_TEST_HDFS_URL") else {
            return Ok(None);
        };
        let client = hdfs_native::ClientBuilder::new()
            .with_url(&url)
            .with_user("caisson")
            .build()?;
        Ok(Some(Backend {
            suffix: " on HDFS",
            name: "HDFS",
            client: Arc::new(hdfs_native_object_store::HdfsObjectStore::new(client)),
            table: format!("type = \"hdfs\"\nurl = \"{url}\"\nuser = \"caisson\"\n"),
        }))
    }

    pub(crate) fn runtime(&self, dir: &std::path::Path, prefix: &str) -> Result<Runtime> {
        self.runtime_with(dir, prefix, "")
    }

    /// [`Self::runtime`] with `extra` keys in the `[objects.data]` table.
    pub(crate) fn runtime_with(
        &self,
        dir: &std::path::Path,
        prefix: &str,
        extra: &str,
    ) -> Result<Runtime> {
        let mut config = Config::parse(&format!(
            "[objects.data]\n{}prefix = \"{prefix}\"\n{extra}",
            self.table
        ))?;
        config.engine.cache_dir = dir.join("cache");
        config.engine.scratch_dir = dir.join("scratch");
        Ok(Runtime::new(config)?)
    }
}

/// 5. Write then read `plan.io_bytes` natively and through a task, on S3
///    and, if configured, on HDFS.
pub async fn run(plan: &Plan, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    println!("object I/O:");
    let (s3, hdfs) = (Backend::s3()?, Backend::hdfs()?);
    match &s3 {
        Some(s3) => measure(plan, dir, report, s3).await?,
        None => report
            .notes
            .push("S3 not configured (CAISSON_TEST_S3_*): the I/O figures were skipped".into()),
    }
    match &hdfs {
        Some(hdfs) => measure(plan, dir, report, hdfs).await?,
        None => report.notes.push(
            "HDFS not configured (CAISSON_TEST_HDFS_URL): the HDFS I/O figures were skipped".into(),
        ),
    }
    // After both streams, so that the two word counts sit side by side.
    let text = crate::runtime::text(plan.compute_bytes, plan.compute_objects);
    for backend in s3.iter().chain(&hdfs) {
        word_count(plan, dir, report, backend, &text).await?;
    }
    Ok(())
}

/// What the `word-count` example's `read_many` keeps in flight by default
/// (`read_concurrency`), for the native side.
const WORD_COUNT_IN_FLIGHT: usize = 16;

/// The `word-count` example over `text` stored on `backend`, against the
/// same counting code compiled natively, fed by a native client reading the
/// same objects in the same order with the same number of GETs in flight.
async fn word_count(
    plan: &Plan,
    dir: &std::path::Path,
    report: &mut Report,
    backend: &Backend,
    text: &[Vec<u8>],
) -> Result<()> {
    let prefix = crate::fresh_prefix("bench-wc")?;
    let client = &backend.client;
    let keys: Vec<ObjectPath> = (0..text.len())
        .map(|i| ObjectPath::from(format!("{prefix}/input/part-{i:04}.txt")))
        .collect();
    for (key, object) in keys.iter().zip(text) {
        client.put(key, PutPayload::from(object.clone())).await?;
    }
    let rt = backend.runtime(dir, &prefix)?;
    let task = rt.load(&guest("word-count")?).await?;
    let mb = text.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    let label = format!(
        "word-count {mb:.0} MiB in {} objects on {}",
        text.len(),
        backend.name
    );

    let (mut native, mut wasm) = (vec![], vec![]);
    let mut expected = None;
    // The first round warms both (connections, the compiled task) and checks
    // that they agree; it is not counted.
    for round in 0..=plan.compute_samples {
        let start = Instant::now();
        let mut counter = word_count::Counter::new();
        let mut objects = futures::stream::iter(keys.iter().map(|key| {
            let client = client.clone();
            async move { client.get(key).await?.bytes().await }
        }))
        .buffered(WORD_COUNT_IN_FLIGHT);
        while let Some(object) = objects.try_next().await? {
            counter.feed(&object);
            counter.end_object();
        }
        let summary = counter.summary(word_count::TOP);
        let native_time = start.elapsed();

        let start = Instant::now();
        let output = call_word_count(&rt, &task).await?;
        let wasm_time = start.elapsed();
        if round == 0 {
            crate::runtime::check_summary(&output, &summary)?;
            expected = Some(summary);
        } else {
            native.push(native_time);
            wasm.push(wasm_time);
        }
    }
    ensure!(expected.is_some(), "no word-count round ran");
    for key in &keys {
        client.delete(key).await?;
    }
    let _ = client
        .delete(&ObjectPath::from(format!("{prefix}/out/summary.json")))
        .await;
    let n = report.dist(Dist::new(
        format!("{label}, native object_store + `Counter`"),
        native,
    ));
    let w = report.dist(Dist::new(format!("{label}, wasm task"), wasm));
    report.ratio(
        &format!("wasm / native word count on {}, p50", backend.name),
        w,
        50.0,
        n,
        50.0,
    );
    let d = &report.dists[n];
    report.notes.push(format!(
        "Native word count on {}: {:.0} MiB/s at p50, reading with {WORD_COUNT_IN_FLIGHT} GETs \
         in flight as the task's `read_many` does; the task also writes its summary back.",
        backend.name,
        mb / d.p50().as_secs_f64()
    ));
    Ok(())
}

/// Runs `word-count` over `input/`, granted the `data` store.
async fn call_word_count(rt: &Runtime, task: &caisson_runtime::LoadedTask) -> Result<Vec<u8>> {
    let sink = Arc::new(MemorySink::default());
    let mut request = RunRequest::new(Vec::new(), sink);
    request.grants = Grants::default().with_object_store("data");
    request.params = [("prefix", "input"), ("output", "out/summary.json")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    rt.run(task, request).await.context("the word-count task")
}

/// The size of the object each backend writes and reads: `plan.io_bytes`,
/// unless `CAISSON_BENCH_IO_MIB` shrinks (or grows) it, for profiling one
/// backend's read path without waiting on 4 GiB of traffic.
pub(crate) fn object_bytes(plan: &Plan) -> Result<u64> {
    const VAR: &str = "CAISSON_BENCH_IO_MIB";
    match env::positive::<u64>(VAR)? {
        None => Ok(plan.io_bytes),
        // Checked: `mib << 20` would drop a huge value's high bits unnoticed.
        Some(mib) => mib
            .checked_mul(1 << 20)
            .with_context(|| format!("{VAR}: {mib} MiB is more bytes than 64 bits can count")),
    }
}

/// Writes then reads `plan.io_bytes` natively and through a task on `backend`.
async fn measure(
    plan: &Plan,
    dir: &std::path::Path,
    report: &mut Report,
    backend: &Backend,
) -> Result<()> {
    let size = object_bytes(plan)?;
    let prefix = crate::fresh_prefix("bench-io")?;
    let client = &backend.client;
    let rt = backend.runtime(dir, &prefix)?;
    let task = rt.load(&guest("bench-probe")?).await?;
    let label = format!("{}{}", human(size), backend.suffix);

    let (mut native_w, mut native_r, mut task_w, mut task_r) = (vec![], vec![], vec![], vec![]);
    let mut peaks = Vec::new();
    // How many pieces the backend's stream cut the object into: what a
    // reader that hands each piece on as it comes pays for per piece.
    let mut chunk_counts = Vec::new();
    for i in 0..plan.io_samples {
        let native_key = ObjectPath::from(format!("{prefix}/native-{i}"));
        let start = Instant::now();
        let mut upload =
            WriteMultipart::new_with_chunk_size(client.put_multipart(&native_key).await?, 8 << 20);
        let chunk: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
        let mut left = size;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            upload.wait_for_capacity(2).await?;
            upload.write(&chunk[..n]);
            left -= n as u64;
        }
        upload.finish().await?;
        native_w.push(start.elapsed());

        let start = Instant::now();
        let mut stream = client.get(&native_key).await?.into_stream();
        let (mut read, mut chunks) = (0u64, 0u64);
        while let Some(bytes) = stream.try_next().await? {
            read += bytes.len() as u64;
            chunks += 1;
        }
        native_r.push(start.elapsed());
        chunk_counts.push(chunks);
        ensure!(read == size, "native read {read} of {size} bytes");

        let task_key = format!("task-{i}");
        reset_peak_rss();
        let base = peak_rss();
        let start = Instant::now();
        let written = call(
            &rt,
            &task,
            &[
                ("op", "write"),
                ("key", &task_key),
                ("bytes", &size.to_string()),
            ],
        )
        .await?;
        task_w.push(start.elapsed());
        ensure!(written == size.to_string(), "task wrote {written}");
        let start = Instant::now();
        let read = call(&rt, &task, &[("op", "read"), ("key", &task_key)]).await?;
        task_r.push(start.elapsed());
        ensure!(read == size.to_string(), "task read {read}");
        peaks.push(
            peak_rss()
                .zip(base)
                .map(|(peak, base)| peak.saturating_sub(base)),
        );

        for key in [native_key, ObjectPath::from(format!("{prefix}/{task_key}"))] {
            client.delete(&key).await?;
        }
    }
    let nw = report.dist(Dist::new(
        format!("write {label}, native object_store"),
        native_w,
    ));
    let tw = report.dist(Dist::new(
        format!("write {label}, streamed by a task"),
        task_w,
    ));
    let nr = report.dist(Dist::new(
        format!("read {label}, native object_store"),
        native_r,
    ));
    let tr = report.dist(Dist::new(
        format!("read {label}, streamed by a task"),
        task_r,
    ));
    report.ratio(
        &format!("task / native, streamed write of {label}, p50"),
        tw,
        50.0,
        nw,
        50.0,
    );
    report.ratio(
        &format!("task / native, streamed read of {label}, p50"),
        tr,
        50.0,
        nr,
        50.0,
    );
    if let Some(&chunks) = chunk_counts.iter().max() {
        report.notes.push(format!(
            "The native read of {label} came as {chunks} chunks from the backend, \
             {:.1} KiB each on average.",
            size as f64 / chunks.max(1) as f64 / 1024.0
        ));
    }
    if let Some(peak) = peaks.iter().flatten().max() {
        report.notes.push(format!(
            "Streaming {label} up and back through a task raised the process's peak RSS by \
             {} MiB over what it held before (the engine, the compiled tasks, the pool).",
            peak >> 20
        ));
    }
    Ok(())
}

/// Runs `bench-probe` once with `params`, granted the `data` store, with a
/// timeout long enough for the largest transfer.
pub(crate) async fn call(
    rt: &Runtime,
    task: &caisson_runtime::LoadedTask,
    params: &[(&str, &str)],
) -> Result<String> {
    let sink = Arc::new(MemorySink::default());
    let mut request = RunRequest::new(Vec::new(), sink);
    request.grants = Grants {
        objects: ["data".to_string()].into(),
        sql: Default::default(),
    };
    request.params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut limits = rt.config().limits;
    limits.timeout = Duration::from_secs(1800);
    request.limits = Some(limits);
    let output = rt
        .run(task, request)
        .await
        .context("the bench-probe task")?;
    Ok(String::from_utf8(output)?)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}
