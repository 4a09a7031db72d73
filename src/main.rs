//! The `riveredge-backup` binary: parse the command line, load settings, start logging, run.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use riveredge_backup::cli::{Cli, Command};
use riveredge_backup::jobs;
use riveredge_backup::settings::Settings;
use riveredge_backup::startup::{self, App, AppState, Database};
use riveredge_backup::telemetry;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("riveredge-backup: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    match run(cli.command.unwrap_or(Command::Serve), settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riveredge-backup: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let db = Database::open(&settings).await?;
            println!("migrations applied to {}", db.conn.display_url());
            Ok(())
        }
        Command::Config => {
            println!("{settings:#?}");
            Ok(())
        }
        other => riveredge_backup::commands::run(other, settings).await,
    }
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    check_dev_mode(&settings)?;
    let db = Database::open(&settings).await?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(settings.clone(), &db, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(settings.http.bind)
        .await
        .with_context(|| format!("binding {} (set BIND_ADDRESS)", settings.http.bind))?;
    let inngest_app = jobs::inngest_app(&state).context("INNGEST_SIGNING_KEY")?;
    let reaper = riveredge_backup::usecases::reaper::spawn(state.clone());
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
