//! 5c. **Map.** Many small objects plus a few large ones on the S3 server,
//! read whole: by a task one `get` at a time, by a task through
//! `read_prefix` (16 reads in flight), and by a workflow `map` step in 2, 4
//! and 8 splits (each split a run of `map-probe`, which reads its split with
//! the SDK's split reader, as many at once as there are splits), against
//! a native `object_store` client with `buffer_unordered(16)`, all in the
//! same run. A map's time is from starting the workflow run until it ended:
//! listing, planning, queueing and running every split.
//!
//! Two more rows say where the reader's gap to native comes from: the
//! native client in listing order (`buffered(16)`, as `read_prefix` must
//! deliver), and `read_prefix` with `read_buffer_bytes` as large as what
//! the native client may hold (16 of the large objects at once) instead of
//! the default 64 MiB.
//!
//! For the native client, `read_prefix` and each map, the CPU spent per
//! object by this process (which also runs the map's service and workers)
//! and by the S3 server, as in the small-objects section.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;

use crate::guest;
use crate::io::Backend;
use crate::report::{Plan, Report};
use crate::service::{Service, sqlite_url};
use crate::small_objects::{CpuMark, CpuUsed, s3_server_pid};

const CONCURRENCY: usize = 16;

/// The size of small object `i`: 1 to 8 KB.
fn small_size(i: usize) -> usize {
    1024 + (i * 7919) % (7 * 1024 + 1)
}

pub async fn run(plan: &Plan, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    println!("map:");
    let Some(s3) = Backend::s3()? else {
        report
            .notes
            .push("S3 not configured (CAISSON_TEST_S3_*): the map figures were skipped".into());
        return Ok(());
    };
    let (small, large, large_size, samples) = if plan.quick {
        (500, 2, 1 << 20, 1)
    } else {
        (10_000, 20, 16 << 20, 2)
    };
    let prefix = crate::fresh_prefix("bench-map")?;
    let client = s3.client.clone();
    let mut objects: Vec<(ObjectPath, usize)> = (0..small)
        .map(|i| {
            (
                ObjectPath::from(format!("{prefix}/in/small-{i:05}")),
                small_size(i),
            )
        })
        .collect();
    objects.extend((0..large).map(|i| {
        (
            ObjectPath::from(format!("{prefix}/in/large-{i:02}")),
            large_size,
        )
    }));
    let n = objects.len();
    let total_bytes: usize = objects.iter().map(|(_, s)| s).sum();
    futures::stream::iter(objects.iter().map(|(key, size)| {
        let client = client.clone();
        let body = vec![b'w'; *size];
        async move { client.put(key, PutPayload::from(body)).await }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;

    // The task alone, in this process's runtime.
    let rt = s3.runtime(&dir.join("task"), &prefix)?;
    let task = rt.load(&guest("bench-probe")?).await?;
    // The same, allowed to hold as many bytes ahead as the native client
    // may (16 large objects at once), to show what the default 64 MiB
    // `read_buffer_bytes` costs on this mix.
    let wide_bytes = (CONCURRENCY * large_size) as u64;
    let rt_wide = s3.runtime_with(
        &dir.join("task-wide"),
        &prefix,
        &format!("read_buffer_bytes = {wide_bytes}\n"),
    )?;
    let task_wide = rt_wide.load(&guest("bench-probe")?).await?;
    let expected = format!("{n} {total_bytes}");

    // The service, with 8 worker slots in this process.
    std::fs::create_dir_all(dir.join("service"))?;
    let service_dir = dir.join("service");
    let tables = format!("\n[objects.raw]\n{}prefix = \"{prefix}\"\n", s3.table);
    let service =
        Service::start_with(&service_dir, &sqlite_url(&service_dir), 8, 0, &tables).await?;
    service.push("map-probe").await?;
    for k in [2u64, 4, 8] {
        let max_split_bytes = (total_bytes as u64).div_ceil(k) * 101 / 100;
        service
            .post(
                "/v1/workflows",
                &json!({"name": format!("map-{k}"), "steps": [{
                    "name": "read",
                    "map": {"store": "raw", "prefix": "in", "max_split_bytes": max_split_bytes,
                            "parallelism": k},
                    "run": {"module": "map-probe", "grants": {"objects": ["raw"]},
                            "timeout": "10m", "memory": 268435456u64}
                }]}),
            )
            .await?;
    }

    let (mut native, mut native_ordered, mut each, mut many, mut many_wide) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut maps: Vec<(u64, Vec<Duration>, usize, CpuUsed)> = [2, 4, 8]
        .into_iter()
        .map(|k| (k, vec![], 0, CpuUsed::default()))
        .collect();
    let s3_pid = s3_server_pid();
    let (mut cpu_native, mut cpu_many) = (CpuUsed::default(), CpuUsed::default());
    for _ in 0..samples {
        let start = Instant::now();
        let cpu = CpuMark::now(s3_pid);
        let read: usize = futures::stream::iter(objects.iter().map(|(key, _)| {
            let client = client.clone();
            async move { anyhow::Ok(client.get(key).await?.bytes().await?.len()) }
        }))
        .buffer_unordered(CONCURRENCY)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await?;
        native.push(start.elapsed());
        cpu_native.add(&cpu);
        ensure!(read == total_bytes, "native read {read} of {total_bytes}");

        // In listing order, as `read_prefix` must deliver: a slow object at
        // the head holds the finished ones behind it.
        let start = Instant::now();
        let read: usize = futures::stream::iter(objects.iter().map(|(key, _)| {
            let client = client.clone();
            async move { anyhow::Ok(client.get(key).await?.bytes().await?.len()) }
        }))
        .buffered(CONCURRENCY)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await?;
        native_ordered.push(start.elapsed());
        ensure!(read == total_bytes, "native read {read} of {total_bytes}");

        for (rt, task, op, samples, cpu_used) in [
            (&rt, &task, "read-each", &mut each, None),
            (&rt, &task, "read-many", &mut many, Some(&mut cpu_many)),
            (&rt_wide, &task_wide, "read-many", &mut many_wide, None),
        ] {
            let start = Instant::now();
            let cpu = CpuMark::now(s3_pid);
            let out = crate::io::call(rt, task, &[("op", op), ("prefix", "in")]).await?;
            samples.push(start.elapsed());
            if let Some(used) = cpu_used {
                used.add(&cpu);
            }
            ensure!(out == expected, "{op} read {out}, expected {expected}");
        }

        for (k, samples, splits, cpu_used) in &mut maps {
            let start = Instant::now();
            let cpu = CpuMark::now(s3_pid);
            let run = service
                .post(&format!("/v1/workflows/map-{k}/runs"), &json!({}))
                .await?;
            let id = run["id"]
                .as_str()
                .context("no workflow run id")?
                .to_string();
            let deadline = Instant::now() + Duration::from_secs(1200);
            let run = loop {
                let run = service
                    .get(&format!("/v1/workflow-runs/{id}?wait=30s"))
                    .await?;
                match run["state"].as_str() {
                    Some("succeeded") => break run,
                    Some("running") => {}
                    _ => bail!("map over {k} splits ended: {run}"),
                }
                ensure!(
                    Instant::now() < deadline,
                    "map over {k} splits did not finish"
                );
            };
            samples.push(start.elapsed());
            cpu_used.add(&cpu);
            let listed = run["steps"][0]["splits"].as_array().context("no splits")?;
            let bytes: i64 = listed.iter().filter_map(|s| s["bytes"].as_i64()).sum();
            ensure!(
                bytes as usize == total_bytes,
                "the splits hold {bytes} bytes"
            );
            *splits = listed.len();
        }
    }
    service.stop().await?;
    for (key, _) in &objects {
        client.delete(key).await?;
    }

    let label = format!(
        "{small} objects of 1-8 KB + {large} of {} MiB",
        large_size >> 20
    );
    let rate = |report: &mut Report, name: String, samples: Vec<Duration>| {
        crate::small_objects::rates(report, name, samples, n, total_bytes)
    };
    let base = rate(
        report,
        format!("read {label}, native, buffer_unordered({CONCURRENCY})"),
        native,
    );
    let seq = rate(
        report,
        format!("read {label}, task, `get` one at a time"),
        each,
    );
    let ordered = rate(
        report,
        format!("read {label}, native, buffered({CONCURRENCY}) (in listing order)"),
        native_ordered,
    );
    let conc = rate(report, format!("read {label}, task, `read_prefix`"), many);
    let wide = rate(
        report,
        format!(
            "read {label}, task, `read_prefix` with read_buffer_bytes = {} MiB",
            wide_bytes >> 20
        ),
        many_wide,
    );
    report.ratio(
        &format!("native in order / native buffer_unordered({CONCURRENCY}), {label}, p50"),
        ordered,
        50.0,
        base,
        50.0,
    );
    report.ratio(
        &format!("task `read_prefix` / native buffered({CONCURRENCY}) in order, {label}, p50"),
        conc,
        50.0,
        ordered,
        50.0,
    );
    report.ratio(
        &format!(
            "task `read_prefix`, {} MiB read buffer / native buffered({CONCURRENCY}) in order, \
             {label}, p50",
            wide_bytes >> 20
        ),
        wide,
        50.0,
        ordered,
        50.0,
    );
    report.ratio(
        &format!("task `read_prefix` / native buffer_unordered({CONCURRENCY}), {label}, p50"),
        conc,
        50.0,
        base,
        50.0,
    );
    report.ratio(
        &format!("task `get` one at a time / native buffer_unordered({CONCURRENCY}), {label}, p50"),
        seq,
        50.0,
        base,
        50.0,
    );
    let reads = samples * n;
    cpu_native.report(
        report,
        &format!("{label}, native, buffer_unordered({CONCURRENCY})"),
        reads,
    );
    cpu_many.report(report, &format!("{label}, task, `read_prefix`"), reads);
    for (k, samples, splits, cpu_used) in maps {
        // This process runs the service: its API, scheduler and workers.
        cpu_used.report(
            report,
            &format!("{label}, map step, parallelism {k}"),
            reads,
        );
        let index = rate(
            report,
            format!("read {label}, map step, parallelism {k} ({splits} splits)"),
            samples,
        );
        report.ratio(
            &format!(
                "map step, parallelism {k} / native buffer_unordered({CONCURRENCY}), {label}, p50"
            ),
            index,
            50.0,
            base,
            50.0,
        );
    }
    Ok(())
}
