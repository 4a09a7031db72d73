//! Wiring: the shared state, the router, and the server's life cycle (bind, serve, shut down).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::local_cluster::{ClusterOptions, LocalCluster};
use crate::pg::{ConnInfo, PgBinaries};
use crate::settings::Settings;
use crate::storage::Storage;

/// Everything a request handler or an Inngest step needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub pool: PgPool,
    /// The database that is backed up and holds our tables; children connect with it.
    pub conn: ConnInfo,
    pub bins: PgBinaries,
    pub storage: Arc<dyn Storage>,
    pub settings: Arc<Settings>,
    /// Caps concurrent dumps/restores in this process (`BACKUP_MAX_CONCURRENT`): each one holds
    /// `BACKUP_JOBS` + 1 connections and a core or two, so unbounded parallelism would hurt the
    /// database the backups are meant to protect.
    pub limiter: Arc<Semaphore>,
    /// Cancelled on shutdown; long steps stop early and Inngest retries them elsewhere.
    pub shutdown: CancellationToken,
}

/// The database side of start-up: a throwaway cluster when no URL is configured, the pool,
/// migrations, and the PostgreSQL programs matching the server.
pub struct Database {
    pub conn: ConnInfo,
    pub pool: PgPool,
    pub bins: PgBinaries,
    /// Kept alive for the life of the process when we started it.
    pub local: Option<LocalCluster>,
}

impl Database {
    /// # Errors
    /// Unreachable database, failed migrations, missing or too old PostgreSQL programs.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        let (conn, local) = match &settings.database.url {
            Some(url) => (
                ConnInfo::parse(url.expose_secret()).context("DATABASE_URL")?,
                None,
            ),
            None => {
                let bins = PgBinaries::locate(settings.backup.pg_bin_dir.as_deref(), None)?;
                let cluster = tokio::task::spawn_blocking(move || {
                    LocalCluster::start(&bins, &ClusterOptions::default())
                })
                .await??;
                let conn = ConnInfo::parse(&cluster.url("postgres"))?;
                tracing::warn!(
                    url = %conn.display_url(),
                    "DATABASE_URL is not set: started a throwaway PostgreSQL that is deleted at exit; \
                     set DATABASE_URL to back up the RiverEdge database"
                );
                (conn, Some(cluster))
            }
        };
        let pool = crate::db::connect(&conn, settings.database.max_connections)
            .await
            .with_context(|| format!("connecting to {}", conn.display_url()))?;
        crate::db::MIGRATOR
            .run(&pool)
            .await
            .context("applying migrations")?;
        let server_major = server_major(&pool).await?;
        let bins = PgBinaries::locate(settings.backup.pg_bin_dir.as_deref(), Some(server_major))?;
        Ok(Self {
            conn,
            pool,
            bins,
            local,
        })
    }
}

/// The server's major version (`server_version_num` 150018 → 15).
///
/// # Errors
/// The query fails.
pub async fn server_major(pool: &PgPool) -> anyhow::Result<u32> {
    let num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(pool)
        .await?;
    Ok(num.parse::<u32>().context("server_version_num")? / 10000)
}

impl AppState {
    /// # Errors
    /// The storage directory cannot be created.
    pub fn new(
        settings: Arc<Settings>,
        db: &Database,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let storage = crate::storage::open(&settings)
            .with_context(|| format!("opening storage {}", crate::storage::describe(&settings)))?;
        Ok(Self {
            pool: db.pool.clone(),
            conn: db.conn.clone(),
            bins: db.bins.clone(),
            storage,
            limiter: Arc::new(Semaphore::new(settings.backup.max_concurrent as usize)),
            settings,
            shutdown,
        })
    }
}

/// All routes. `inngest` is the protocol endpoint built by [`crate::jobs`].
pub fn router(state: AppState, inngest: Router) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::handler))
        .with_state(state.clone())
        .merge(inngest)
        .merge(crate::api::router(state))
        .merge(crate::page::router())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
            let query = req.uri().query().unwrap_or("");
            // Set by the layer outside this one: ties every log line of a request to the id
            // the client gets back in `x-request-id`.
            let request_id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // Inngest's fnId/stepId make step calls traceable in logs; they carry no secrets.
            tracing::info_span!("request", method = %req.method(), route = %route, query = %query, request_id = %request_id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&state.pool)
        .await
    {
        Ok(_) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ok", "database": "ok"})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "degraded", "database": "unreachable"})),
            )
        }
    }
}

/// A bound server, ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    shutdown_timeout: Duration,
    shutdown: CancellationToken,
}

impl App {
    /// # Errors
    /// The listener has no local address.
    pub fn build(
        listener: TcpListener,
        router: Router,
        shutdown_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            listener,
            router,
            shutdown_timeout,
            shutdown,
        }
    }

    /// The bound port (tests bind port 0).
    ///
    /// # Panics
    /// If the listener has no local address, which a bound TCP listener always has.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("bound listener").port()
    }

    /// Serves until `signal` completes, then stops accepting, cancels long work, and lets
    /// in-flight requests finish for at most the shutdown timeout. Requests cut off are retried
    /// by Inngest (the executor sees a dropped connection); step code never publishes partial
    /// artifacts, so a retry starts clean.
    ///
    /// # Errors
    /// The server fails.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = self.shutdown.clone();
        let graceful = token.clone();
        let server = axum::serve(self.listener, self.router.into_make_service())
            .with_graceful_shutdown(async move {
                signal.await;
                tracing::info!("shutting down: no new requests; waiting for in-flight ones");
                graceful.cancel();
            });
        let timeout = self.shutdown_timeout;
        tokio::select! {
            result = server => result,
            () = async { token.cancelled().await; tokio::time::sleep(timeout).await } => {
                tracing::warn!(?timeout, "in-flight requests did not finish in time; Inngest will retry them");
                Ok(())
            }
        }
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
