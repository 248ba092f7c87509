//! 5b. **Small objects.** 2,000 objects of 0.1 to 3 KB on the S3 server,
//! each read whole: by a task one `get` at a time (what tasks did before
//! `read-many`), by a task through `read_prefix` (the host's concurrent
//! reader), and by a native `object_store` client one at a time and with
//! `buffer_unordered(N)`, N the reader's default concurrency: the baseline
//! the concurrent reader is held to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::guest;
use crate::io::Backend;
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
    let (mut native_seq, mut native_conc, mut task_seq, mut task_many) =
        (vec![], vec![], vec![], vec![]);
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
        let read: usize = futures::stream::iter(keys.iter().map(|key| read_one(&client, key)))
            .buffer_unordered(CONCURRENCY)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await?;
        native_conc.push(start.elapsed());
        ensure!(
            read == total_bytes,
            "native read {read} of {total_bytes} bytes"
        );

        for (op, samples) in [("read-each", &mut task_seq), ("read-many", &mut task_many)] {
            let start = Instant::now();
            let out = crate::io::call(&rt, &task, &[("op", op), ("prefix", "in")]).await?;
            samples.push(start.elapsed());
            ensure!(out == expected, "{op} read {out}, expected {expected}");
        }
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
    let tm = rate(
        report,
        format!("read {label}, task, `read_prefix`"),
        task_many,
    );
    report.ratio(
        &format!("task `read_prefix` / native buffer_unordered({CONCURRENCY}), {label}, p50"),
        tm,
        50.0,
        nc,
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
