//! What it costs that no SQL session state survives a run.
//!
//! One "session" is what a run that uses a database does with it: `open`, one
//! parameterised query, and letting go of the connection, through the host's
//! SQL capability called directly (no wasm), on a source with one pooled
//! connection, so each session waits for the previous one's reset. Baselines
//! in the same run: the same query through a plain sqlx pool that resets
//! nothing (what the host did before, less its old partial reset), and a
//! fresh connection per session (the other sound way to reset).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use caisson_host_api::Grants;
use caisson_host_api::sql::{SqlConfig, SqlLimits, SqlSources, SqlView};
use caisson_host_api::wit::sql::{Host, HostConnection, Value};
use sqlx::Connection as _;
use wasmtime::component::ResourceTable;

use crate::report::{Dist, Plan, Report};

const QUERY: &str = "SELECT $1::int8 AS n";

/// `open`, one query, and release, `samples` times, through the host.
async fn host_sessions(url: &str, kind: &str, samples: usize) -> Result<Vec<Duration>> {
    let config: SqlConfig = toml::from_str(&format!(
        "[db]\ntype = \"{kind}\"\nurl = \"{url}\"\nmax_connections = 1\n"
    ))?;
    let sources = SqlSources::from_config(&config)?;
    let query = if kind == "postgres" {
        QUERY
    } else {
        "SELECT ?1 AS n"
    };
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let mut ctx = sources.ctx_for(&Grants::default().with_sql("db"), SqlLimits::default())?;
        let mut table = ResourceTable::new();
        let mut view = SqlView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let started = Instant::now();
        let conn = Host::open(&mut view, "db".into())
            .await?
            .map_err(|e| anyhow!("open: {e:?}"))?;
        let rows = HostConnection::query(
            &mut view,
            wasmtime::component::Resource::new_borrow(conn.rep()),
            query.into(),
            vec![Value::Int(i as i64)],
        )
        .await?
        .map_err(|e| anyhow!("query: {e:?}"))?;
        anyhow::ensure!(rows.rows.len() == 1, "one row");
        HostConnection::drop(&mut view, conn).await?;
        // The first tenth warms the pool and the caches.
        if i >= samples / 10 {
            times.push(started.elapsed());
        }
    }
    // The last release has to finish before its time would count; close
    // waits for it.
    sources.close().await;
    Ok(times)
}

/// The same query through a sqlx pool of one connection that is returned
/// as it is, with no reset.
async fn pooled_sessions(url: &str, samples: usize) -> Result<Vec<Duration>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let started = Instant::now();
        let mut conn = pool.acquire().await?;
        let _: i64 = sqlx::query_scalar(QUERY)
            .bind(i as i64)
            .fetch_one(&mut *conn)
            .await?;
        drop(conn);
        if i >= samples / 10 {
            times.push(started.elapsed());
        }
    }
    pool.close().await;
    Ok(times)
}

/// A fresh connection per session: connect, query, close.
async fn reconnect_sessions(url: &str, samples: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let _: i64 = sqlx::query_scalar(QUERY)
            .bind(i as i64)
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

pub async fn run(plan: &Plan, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    println!("sql sessions");
    let samples = plan.sql_samples;
    std::fs::create_dir_all(dir)?;
    let sqlite_url = format!("sqlite://{}/bench.db?mode=rwc", dir.display());
    report.dist(Dist::new(
        "SQL session through the host (SQLite, connection closed after each run)",
        host_sessions(&sqlite_url, "sqlite", samples)
            .await
            .context("SQLite sessions")?,
    ));

    let Ok(url) = std::env::var("CAISSON_TEST_POSTGRES_URL") else {
        report
            .notes
            .push("PostgreSQL SQL sessions skipped: CAISSON_TEST_POSTGRES_URL is not set".into());
        return Ok(());
    };
    let host = report.dist(Dist::new(
        "SQL session through the host (PostgreSQL, reset on release)",
        host_sessions(&url, "postgres", samples)
            .await
            .context("PostgreSQL sessions")?,
    ));
    let pooled = report.dist(Dist::new(
        "the same query on a plain sqlx pool, no reset (PostgreSQL)",
        pooled_sessions(&url, samples).await?,
    ));
    let fresh = report.dist(Dist::new(
        "the same query on a fresh connection each time (PostgreSQL)",
        reconnect_sessions(&url, samples.min(200)).await?,
    ));
    report.ratio(
        "host session with reset vs plain pooled query",
        host,
        50.0,
        pooled,
        50.0,
    );
    report.ratio(
        "fresh connection vs host session with reset",
        fresh,
        50.0,
        host,
        50.0,
    );
    Ok(())
}
