//! Wiring: database, module store, runtime, API, scheduler and workers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use caisson_runtime::Runtime;
use futures::FutureExt;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::services::Services;
use crate::services::artifacts::module_store;
use crate::services::scheduler;
use crate::services::supervise::{RESTART_DELAY, supervise};
use crate::services::worker::Worker;
use crate::store::Db;

/// What one process does.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    /// Serve the REST API.
    pub api: bool,
    /// Worker slots in this process (0: none).
    pub workers: usize,
    /// Run the scheduler's background duties.
    pub scheduler: bool,
}

/// Connects the database, the module store and the runtime.
pub async fn build_services(config: ServerConfig) -> anyhow::Result<Services> {
    if let Some(path) = config.sqlite_path()
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    let db = Db::connect(&config.server.database, 16)
        .await
        .context("could not open the database")?;
    let modules = module_store(&config)?;
    let runtime =
        Arc::new(Runtime::new(config.runtime.clone()).context("could not start the runtime")?);
    let metrics = Metrics::new(config.server.metrics_tenants, config.server.metrics_modules);
    Ok(Services::new(
        db,
        modules,
        runtime,
        Arc::new(config),
        Arc::new(metrics),
    ))
}

/// Connects everything and builds the API's state, setting up the
/// configuration's tenants and tokens.
pub async fn build_state(config: ServerConfig) -> anyhow::Result<Arc<AppState>> {
    let services = build_services(config).await?;
    let state = AppState::new(services)
        .await
        .context("could not set up tenants")?;
    Ok(Arc::new(state))
}

/// Runs `roles` until `shutdown` resolves, then stops gracefully.
pub async fn serve(
    config: ServerConfig,
    roles: Roles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = config.server.listen;
    if roles.api && config.open_access() {
        if !listen.ip().is_loopback() {
            anyhow::bail!(
                "refusing to serve without API tokens on {listen}: configure tenants with tokens \
                 (or an admin token), or listen on 127.0.0.1"
            );
        }
        tracing::warn!(
            "no API tokens configured: the API is open to anyone on this machine ({listen})"
        );
    }
    let services = build_services(config).await?;
    // Tenants and tokens belong to the API: a worker-only process leaves
    // them as the API's configuration set them.
    let state = if roles.api {
        let state = AppState::new(services.clone())
            .await
            .context("could not set up tenants")?;
        if !services.config.open_access() {
            state
                .revoke_unlisted_config_tokens()
                .await
                .context("could not revoke the tokens gone from the configuration")?;
        }
        Some(Arc::new(state))
    } else {
        None
    };
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    if roles.scheduler {
        let services = services.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            supervise(
                "scheduler",
                &services.metrics,
                stop.clone(),
                RESTART_DELAY,
                || scheduler::run(services.clone(), stop.clone()).map(Ok::<(), Infallible>),
            )
            .await
        });
    }
    if roles.workers > 0 {
        let worker = Worker::new(&services);
        tasks.spawn(worker.run(roles.workers, stop.clone()));
    }

    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    if let Some(state) = state {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("could not listen on {listen}"))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line to find the port.
        println!("caisson: listening on http://{addr}");
        println!("caisson: dashboard at http://{addr}{}", crate::ui::PATH);
        let limits = api::http::Limits::from(&services.config.server);
        api::http::serve(listener, api::router(state), limits, shutdown).await;
    } else if let Some(addr) = services.config.server.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr} (`[server] metrics_listen`)"))?;
        // Tests and scripts read this line to find the port.
        println!(
            "caisson: worker started; metrics at http://{}/metrics",
            listener.local_addr()?
        );
        // The API's accept loop, with its header, idle and connection limits.
        let limits = api::http::Limits::from(&services.config.server);
        api::http::serve(
            listener,
            api::metrics_router(services.clone()),
            limits,
            shutdown,
        )
        .await;
    } else {
        println!("caisson: worker started");
        shutdown.await;
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
