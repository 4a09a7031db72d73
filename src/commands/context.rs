//! What every data command starts with: the configured database (never a throwaway one), a
//! quick connection check with the real error, storage, and Ctrl-C wired to cancellation.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::{Failure, Output};
use crate::pg::ConnInfo;
use crate::settings::Settings;
use crate::startup::{AppState, Database};

/// How long the CLI waits for the database to answer. A pool would wait its acquire timeout
/// (30 s) and then say only "pool timed out"; an operator wants the real reason now.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An opened command context.
pub struct Ctx {
    pub state: AppState,
    pub out: Output,
    stopper: tokio::task::JoinHandle<()>,
    _db: Database,
}

impl Ctx {
    /// # Errors
    /// [`Failure::Usage`] without `DATABASE_URL`; [`Failure::Failed`] when the database cannot
    /// be reached, migrated, or the storage directory cannot be opened.
    pub async fn open(settings: Settings, command: &str, out: Output) -> Result<Self, Failure> {
        let conn = configured_database(&settings, command)?;
        probe(&conn).await?;
        let settings = Arc::new(settings);
        let db = Database::open(&settings).await?;
        let shutdown = CancellationToken::new();
        let state = AppState::new(settings, &db, shutdown.clone())?;
        // Ctrl-C stops the work cleanly (partial files removed, rows marked failed).
        let stopper = tokio::spawn(async move {
            crate::startup::shutdown_signal().await;
            shutdown.cancel();
        });
        Ok(Self {
            state,
            out,
            stopper,
            _db: db,
        })
    }

    /// Whether Ctrl-C (or SIGTERM) was received.
    pub fn interrupted(&self) -> bool {
        self.state.shutdown.is_cancelled()
    }

    pub async fn close(self) {
        self.stopper.abort();
        self.state.pool.close().await;
    }
}

/// `DATABASE_URL`, parsed. The throwaway local cluster is for `serve`'s first run only: a backup
/// of an empty scratch database would "succeed" and help nobody.
///
/// # Errors
/// [`Failure::Usage`] when unset or unparsable.
pub fn configured_database(settings: &Settings, command: &str) -> Result<ConnInfo, Failure> {
    let url = settings.database.url.as_ref().ok_or_else(|| {
        Failure::Usage(format!(
            "{command} needs DATABASE_URL (e.g. postgres://user:password@host:5432/riveredge); \
             the throwaway local database is only started by `serve`"
        ))
    })?;
    ConnInfo::parse(url.expose_secret())
        .map_err(|e| Failure::Usage(format!("DATABASE_URL is invalid: {e}")))
}

/// One direct connection with a short timeout, reporting the driver's own error.
///
/// # Errors
/// [`Failure::Failed`] naming the server (password hidden) and the reason.
pub async fn probe(conn: &ConnInfo) -> Result<(), Failure> {
    let failed = |why: String| {
        Failure::Failed(format!(
            "cannot connect to {}: {why}; check DATABASE_URL and that PostgreSQL is running",
            conn.display_url()
        ))
    };
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        sqlx::PgConnection::connect_with(&conn.connect_options()),
    )
    .await
    {
        Err(_) => Err(failed(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(failed(super::one_line(&e))),
        Ok(Ok(c)) => {
            let _ = c.close().await;
            Ok(())
        }
    }
}
