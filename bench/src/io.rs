//! Streamed object I/O through the host interface against a native Rust
//! `object_store` client, on the same S3 server in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use caisson_host_api::Grants;
use caisson_host_api::log::MemorySink;
use caisson_runtime::{Config, RunRequest, Runtime};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::guest;
use crate::report::{Dist, Plan, Report, peak_rss, reset_peak_rss};

const CHUNK: usize = 256 * 1024;

struct S3 {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
    region: String,
}

impl S3 {
    fn from_env() -> Option<S3> {
        let var = |name: &str| std::env::var(format!("CAISSON_TEST_S3_{name}")).ok();
        Some(S3 {
            endpoint: var("ENDPOINT")?,
            bucket: var("BUCKET")?,
            access_key: var("ACCESS_KEY_ID")?,
            secret_key: var("SECRET_ACCESS_KEY")?,
            region: var("REGION").unwrap_or_else(|| "us-east-1".into()),
        })
    }

    fn client(&self) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_bucket_name(&self.bucket)
                .with_access_key_id(&self.access_key)
                .with_secret_access_key(&self.secret_key)
                .with_region(&self.region)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()?,
        ))
    }

    fn runtime(&self, dir: &std::path::Path, prefix: &str) -> Result<Runtime> {
        let mut config = Config::parse(&format!(
            "[objects.data]\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
             region = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n\
             allow_http = true\npath_style = true\n",
            self.endpoint, self.bucket, self.region, self.access_key, self.secret_key
        ))?;
        config.engine.cache_dir = dir.join("cache");
        config.engine.scratch_dir = dir.join("scratch");
        Ok(Runtime::new(config)?)
    }
}

/// 5. Write then read `plan.io_bytes` natively and through a task.
pub async fn run(plan: &Plan, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    println!("object I/O:");
    let Some(s3) = S3::from_env() else {
        report
            .notes
            .push("S3 not configured (CAISSON_TEST_S3_*): the I/O figures were skipped".into());
        return Ok(());
    };
    let size = plan.io_bytes;
    let prefix = format!(
        "bench-io-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let client = s3.client()?;
    let rt = s3.runtime(dir, &prefix)?;
    let task = rt.load(&guest("bench-probe")?).await?;
    let label = human(size);

    let (mut native_w, mut native_r, mut task_w, mut task_r) = (vec![], vec![], vec![], vec![]);
    let mut peaks = Vec::new();
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
        let mut read = 0u64;
        while let Some(bytes) = stream.try_next().await? {
            read += bytes.len() as u64;
        }
        native_r.push(start.elapsed());
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
    if let Some(peak) = peaks.iter().flatten().max() {
        report.notes.push(format!(
            "Streaming {label} up and back through a task raised the process's peak RSS by \
             {} MiB over what it held before (the engine, the compiled tasks, the pool).",
            peak >> 20
        ));
    }
    Ok(())
}

async fn call(
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
    let output = rt.run(task, request).await.context("the I/O task")?;
    Ok(String::from_utf8(output)?)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}
