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

async fn run(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let db = Database::open(&settings).await?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(settings.clone(), &db, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(settings.http.bind)
        .await
        .with_context(|| format!("binding {} (set BIND_ADDRESS)", settings.http.bind))?;
    let inngest_app = jobs::inngest_app(&state).context("INNGEST_SIGNING_KEY")?;
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
    drop(db);
    Ok(())
}
