//! `serve`: the worker itself (Inngest endpoint, health, REST API).

use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::jobs;
use crate::settings::Settings;
use crate::startup::{self, App, AppState, Database};

pub async fn serve(settings: Settings) -> Result<Value, Failure> {
    run(settings).await?;
    Ok(json!({ "ok": true }))
}

/// Dev mode checks no signatures: anyone who reaches the port could start a restore. It is for
/// a developer's machine, so it must be bound to loopback unless explicitly forced.
fn check_dev_mode(settings: &Settings) -> anyhow::Result<()> {
    if !settings.inngest.dev || settings.http.bind.ip().is_loopback() {
        return Ok(());
    }
    if settings.inngest.dev_allow_remote {
        tracing::warn!(
            address = %settings.http.bind,
            "INNGEST DEV MODE ON A NON-LOOPBACK ADDRESS: step calls are NOT signature-checked; \
             anyone who reaches this port can run backups and restores"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve in Inngest dev mode (no signature checks) on {}: bind to 127.0.0.1, \
         set INNGEST_SIGNING_KEY and INNGEST_DEV=0, or set INNGEST_DEV_ALLOW_REMOTE=true to force it",
        settings.http.bind
    )
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    check_dev_mode(&settings)?;
    let db = Database::open(&settings).await?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(settings.clone(), &db, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(settings.http.bind)
        .await
        .with_context(|| format!("binding {} (set BIND_ADDRESS)", settings.http.bind))?;
    let inngest_app = jobs::inngest_app(&state).context("INNGEST_SIGNING_KEY")?;
    // Dead work of earlier processes (kill -9, a lost machine) is cleaned now and every minute.
    let reaper = crate::usecases::reaper::spawn(state.clone());
    let router = startup::router(state, inngest_app.router());
    let app = App::build(listener, router, settings.http.shutdown_timeout, shutdown);
    tracing::info!(
        address = %settings.http.bind,
        serve_url = %settings.serve_url(),
        mode = if settings.inngest.dev { "dev" } else { "cloud" },
        inngest = %settings.inngest.api_base_url,
        "serving"
    );
    if settings.inngest.dev {
        tracing::info!(
            "Inngest dev mode: run `npx inngest-cli@latest dev -u {}` (or set INNGEST_BASE_URL to a running one) \
             and send `database/backup.requested` from its UI at http://localhost:8288",
            settings.serve_url()
        );
    }
    // The listener is bound, so the server's first call after registering cannot be refused.
    let sync = settings.inngest.sync_on_startup.then(|| {
        inngest_app.spawn_startup_sync(&settings.serve_url(), inngest::SyncBackoff::default())
    });
    app.run_until_stopped(startup::shutdown_signal()).await?;
    if let Some(sync) = sync {
        sync.abort();
    }
    reaper.abort();
    drop(db);
    Ok(())
}
