//! 5b. **Small objects.** 2,000 objects of 0.1 to 3 KB on the S3 server,
//! each read whole: by a task one `get` at a time (what tasks did before
//! `read-many`), by a task through `read_prefix` (the host's concurrent
//! reader), and by a native `object_store` client one at a time and with
//! `buffer_unordered(N)`, N the reader's default concurrency: the baseline
//! the concurrent reader is held to.
//!
//! One more native row does what `read_prefix` does, in the same order:
//! list the prefix, then `buffered(N)` over the listing, with the next page
//! of the listing asked for while the current one is read. And since the
//! two cores are shared by the S3 server and the reader, the CPU each side
//! spends per object is reported for the concurrent rows: this process's
//! (`/proc/self/stat`) and the S3 server's, when `scripts/services` started
//! it (its pid file in `CAISSON_SERVICES_DIR`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::guest;
use crate::io::Backend;
use crate::proc::cpu_time;
use crate::report::{Dist, Plan, Report};

/// What `read_concurrency` defaults to, for the native baseline.
const CONCURRENCY: usize = 16;

/// The size of object `i`: 100 bytes to 3 KB.
fn size(i: usize) -> usize {
    100 + (i * 7919) % 2950
}

pub async fn run(plan: &Plan, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    println!("small objects:");
    let Some(s3) = Backend::s3()? else {
        report.notes.push(
            "S3 not configured (CAISSON_TEST_S3_*): the small-object figures were skipped".into(),
        );
        return Ok(());
    };
    let (n, samples) = if plan.quick { (200, 2) } else { (2000, 5) };
    let prefix = crate::fresh_prefix("bench-small")?;
    let client = s3.client.clone();
    let keys: Vec<ObjectPath> = (0..n)
        .map(|i| ObjectPath::from(format!("{prefix}/in/part-{i:05}")))
        .collect();
    let total_bytes: usize = (0..n).map(size).sum();
    futures::stream::iter(keys.iter().enumerate().map(|(i, key)| {
        let client = client.clone();
        async move { client.put(key, PutPayload::from(vec![b'w'; size(i)])).await }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;

    let rt = s3.runtime(dir, &prefix)?;
    let task = rt.load(&guest("bench-probe")?).await?;
    let expected = format!("{n} {total_bytes}");
    let (mut native_seq, mut native_conc, mut native_listed, mut task_seq, mut task_many) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut cpu_conc, mut cpu_listed, mut cpu_many) =
        (CpuUsed::default(), CpuUsed::default(), CpuUsed::default());
    let s3_pid = s3_server_pid();
    let listed_prefix = ObjectPath::from(format!("{prefix}/in"));
    for _ in 0..samples {
        let start = Instant::now();
        let mut read = 0;
        for key in &keys {
            read += client.get(key).await?.bytes().await?.len();
        }
        native_seq.push(start.elapsed());
        ensure!(
            read == total_bytes,
            "native read {read} of {total_bytes} bytes"
        );

        let start = Instant::now();
        let cpu = CpuMark::now(s3_pid);
        let read: usize = futures::stream::iter(keys.iter().map(|key| read_one(&client, key)))
            .buffer_unordered(CONCURRENCY)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await?;
        native_conc.push(start.elapsed());
        cpu_conc.add(&cpu);
        ensure!(
            read == total_bytes,
            "native read {read} of {total_bytes} bytes"
        );

        // What `read_prefix` does, natively: list, read in listing order.
        let start = Instant::now();
        let cpu = CpuMark::now(s3_pid);
        let read: usize = client
            .list(Some(&listed_prefix))
            .map_err(anyhow::Error::from)
            .map_ok(|meta| {
                let client = client.clone();
                async move { read_one(&client, &meta.location).await }
            })
            .try_buffered(CONCURRENCY)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await?;
        native_listed.push(start.elapsed());
        cpu_listed.add(&cpu);
        ensure!(
            read == total_bytes,
            "native read {read} of {total_bytes} bytes"
        );

        let start = Instant::now();
        let out = crate::io::call(&rt, &task, &[("op", "read-each"), ("prefix", "in")]).await?;
        task_seq.push(start.elapsed());
        ensure!(out == expected, "read-each read {out}, expected {expected}");

        let start = Instant::now();
        let cpu = CpuMark::now(s3_pid);
        let out = crate::io::call(&rt, &task, &[("op", "read-many"), ("prefix", "in")]).await?;
        task_many.push(start.elapsed());
        cpu_many.add(&cpu);
        ensure!(out == expected, "read-many read {out}, expected {expected}");
    }
    for key in &keys {
        client.delete(key).await?;
    }

    let label = format!("{n} objects of 0.1-3 KB");
    let rate = |report: &mut Report, name: String, samples: Vec<Duration>| {
        rates(report, name, samples, n, total_bytes)
    };
    let ns = rate(
        report,
        format!("read {label}, native, one at a time"),
        native_seq,
    );
    let nc = rate(
        report,
        format!("read {label}, native, buffer_unordered({CONCURRENCY})"),
        native_conc,
    );
    let ts = rate(
        report,
        format!("read {label}, task, `get` one at a time"),
        task_seq,
    );
    let nl = rate(
        report,
        format!("read {label}, native, list then buffered({CONCURRENCY}) in listing order"),
        native_listed,
    );
    let tm = rate(
        report,
        format!("read {label}, task, `read_prefix`"),
        task_many,
    );
    let reads = samples * n;
    cpu_conc.report(
        report,
        &format!("{label}, native, buffer_unordered({CONCURRENCY})"),
        reads,
    );
    cpu_listed.report(
        report,
        &format!("{label}, native, list then buffered({CONCURRENCY})"),
        reads,
    );
    cpu_many.report(report, &format!("{label}, task, `read_prefix`"), reads);
    report.ratio(
        &format!("task `read_prefix` / native buffer_unordered({CONCURRENCY}), {label}, p50"),
        tm,
        50.0,
        nc,
        50.0,
    );
    report.ratio(
        &format!("task `read_prefix` / native list then buffered({CONCURRENCY}), {label}, p50"),
        tm,
        50.0,
        nl,
        50.0,
    );
    report.ratio(
        &format!("task `read_prefix` / task `get` one at a time, {label}, p50"),
        tm,
        50.0,
        ts,
        50.0,
    );
    report.ratio(
        &format!("native one at a time / native buffer_unordered({CONCURRENCY}), {label}, p50"),
        ns,
        50.0,
        nc,
        50.0,
    );
    Ok(())
}

/// Reports `samples` (each a read of `objects` objects, `bytes` in all)
/// as a distribution named `name` with its objects/s and MB/s at p50;
/// returns the distribution's index for ratios.
pub(crate) fn rates(
    report: &mut Report,
    name: String,
    samples: Vec<Duration>,
    objects: usize,
    bytes: usize,
) -> usize {
    let count = samples.len();
    let dist = Dist::new(name.clone(), samples);
    let p50 = dist.p50().as_secs_f64();
    let index = report.dist(dist);
    report.value(
        &format!("{name}: objects/s at p50"),
        objects as f64 / p50,
        count,
    );
    report.value(
        &format!("{name}: MB/s at p50"),
        bytes as f64 / 1e6 / p50,
        count,
    );
    index
}

async fn read_one(client: &Arc<dyn ObjectStore>, key: &ObjectPath) -> Result<usize> {
    Ok(client.get(key).await?.bytes().await?.len())
}

/// The pid of the S3 server `scripts/services` started, from its pid file
/// in `CAISSON_SERVICES_DIR` (the script's default when unset); `None` for
/// a server started some other way, whose CPU is then not reported.
pub(crate) fn s3_server_pid() -> Option<u32> {
    let dir = std::env::var_os("CAISSON_SERVICES_DIR")
        .map_or_else(|| "/tmp/caisson-services".into(), std::path::PathBuf::from);
    let pid: u32 = std::fs::read_to_string(dir.join("s3.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Only if it still runs (the file outlives a server that crashed).
    cpu_time(pid).map(|_| pid)
}

/// CPU times taken before a measurement: this process's and the S3
/// server's.
pub(crate) struct CpuMark {
    own: Option<Duration>,
    s3: Option<(u32, Duration)>,
}

impl CpuMark {
    pub(crate) fn now(s3_pid: Option<u32>) -> Self {
        CpuMark {
            own: cpu_time(std::process::id()),
            s3: s3_pid.and_then(|pid| Some((pid, cpu_time(pid)?))),
        }
    }
}

/// The CPU the measurements of one row used, summed over its samples.
#[derive(Default)]
pub(crate) struct CpuUsed {
    own: Option<Duration>,
    s3: Option<Duration>,
}

impl CpuUsed {
    /// Adds what was used since `mark`.
    pub(crate) fn add(&mut self, mark: &CpuMark) {
        let since = |before: Duration, now: Option<Duration>| now.map(|n| n.saturating_sub(before));
        if let Some(used) = mark
            .own
            .and_then(|b| since(b, cpu_time(std::process::id())))
        {
            *self.own.get_or_insert_default() += used;
        }
        if let Some(used) = mark.s3.and_then(|(pid, b)| since(b, cpu_time(pid))) {
            *self.s3.get_or_insert_default() += used;
        }
    }

    /// Reports the CPU per object read (`objects` in all) for `row`: this
    /// process's, and the S3 server's when known.
    pub(crate) fn report(&self, report: &mut Report, row: &str, objects: usize) {
        let per_object = |used: Duration| used.as_secs_f64() * 1e6 / objects as f64;
        if let Some(own) = self.own {
            report.value(
                &format!("CPU per object in this process (µs), {row}"),
                per_object(own),
                1,
            );
        }
        if let Some(s3) = self.s3 {
            report.value(
                &format!("CPU per object in the S3 server (µs), {row}"),
                per_object(s3),
                1,
            );
        }
    }
}
