//! [`App`]: the registered functions plus configuration, and the entry points around them.

use std::sync::Arc;

use axum::Router;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::config::Config;
use crate::function::{Function, HandlerFn, FAILURE_FN_RETRIES};
use crate::sync::{self, SyncBackoff, SyncError, SyncOutcome, SyncRequest};

#[derive(Clone)]
struct AppInner {
    config: Arc<Config>,
    functions: Vec<Function>,
    client: Client,
}

/// An Inngest app: cheap to clone (an `Arc` inside), shared by the router and sync tasks.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.inner.config)
            .field("functions", &self.inner.functions)
            .finish()
    }
}

/// The function a call's `fnId` names.
pub(crate) struct Resolved {
    /// Composite id (`<app>-<slug>` or `<app>-<slug>-failure`).
    pub id: String,
    pub handler: HandlerFn,
    /// Attempts to assume when the request does not say.
    pub max_attempts: u32,
}

impl App {
    pub fn new(config: Config) -> Self {
        let config = Arc::new(config);
        Self {
            inner: Arc::new(AppInner {
                client: Client::new(Arc::clone(&config)),
                config,
                functions: Vec::new(),
            }),
        }
    }

    /// Adds a function; a later function with the same slug replaces the earlier one.
    pub fn register(self, function: Function) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| (*shared).clone());
        inner.functions.retain(|f| f.slug() != function.slug());
        inner.functions.push(function);
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn functions(&self) -> &[Function] {
        &self.inner.functions
    }

    /// Event and API client sharing this app's configuration.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Number of functions as the server sees them (failure handlers count separately).
    pub fn function_count(&self) -> usize {
        self.functions()
            .iter()
            .map(|f| 1 + usize::from(f.on_failure().is_some()))
            .sum()
    }

    /// Finds the function for a composite `fnId` (or a bare slug, as older registrations used).
    pub(crate) fn resolve(&self, fn_id: &str) -> Option<Resolved> {
        let app_id = &self.config().app_id;
        self.functions().iter().find_map(|f| {
            let id = f.composite_id(app_id);
            if fn_id == id || fn_id == f.slug() {
                return Some(Resolved {
                    id,
                    handler: f.handler().clone(),
                    max_attempts: f.max_attempts(),
                });
            }
            let failure_id = format!("{id}-failure");
            match f.on_failure() {
                Some(handler) if fn_id == failure_id => Some(Resolved {
                    id: failure_id,
                    handler: handler.clone(),
                    max_attempts: FAILURE_FN_RETRIES + 1,
                }),
                _ => None,
            }
        })
    }

    /// The axum router serving GET/PUT/POST at `config.serve_path`.
    pub fn router(&self) -> Router {
        crate::serve::router(self.clone())
    }

    /// Registers the app once (out-of-band sync) with `serve_url` as the URL to call.
    ///
    /// # Errors
    /// [`SyncError`] when the URL is not absolute, the API is unreachable, or it refuses.
    pub async fn sync(&self, serve_url: &str) -> Result<SyncOutcome, SyncError> {
        self.sync_with(&SyncRequest {
            serve_url: serve_url.to_owned(),
            ..SyncRequest::default()
        })
        .await
    }

    /// [`App::sync`] with a `deployId` and an expected server kind.
    ///
    /// # Errors
    /// As [`App::sync`].
    pub async fn sync_with(&self, request: &SyncRequest) -> Result<SyncOutcome, SyncError> {
        sync::sync(self, request).await
    }

    /// Syncs in the background, retrying transient failures with capped exponential backoff,
    /// so the dev server sees the app without a manual PUT. The caller owns the handle and
    /// should report its result.
    pub fn spawn_startup_sync(
        &self,
        serve_url: &str,
        backoff: SyncBackoff,
    ) -> JoinHandle<Result<SyncOutcome, SyncError>> {
        let request = SyncRequest {
            serve_url: serve_url.to_owned(),
            ..SyncRequest::default()
        };
        tokio::spawn(sync::sync_with_backoff(self.clone(), request, backoff))
    }
}
