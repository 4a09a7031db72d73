//! The Inngest functions of the worker, one module each, and the app that serves them.
//!
//! | function (composite id `<app id>-<slug>`) | triggers |
//! |---|---|
//! | `backup-execute` | `backup/execute`, `database/backup.requested` |
//! | `backup-daily-full` | cron `0 2 * * *` |
//! | `backup-restore` | `backup/restore`, `database/restore.requested` |
//!
//! Flow control protects the database: every function that dumps or restores shares the
//! global cap `BACKUP_MAX_CONCURRENT` (function-level concurrency, across replicas) and runs at
//! most one at a time per tenant (concurrency keyed on `event.data.tenant_id`).

pub mod backup_execute;
pub mod events;
pub mod restore;
pub mod scheduled;

use std::future::Future;

use futures::future::BoxFuture;

use secrecy::ExposeSecret;

use crate::settings::InngestSettings;
use crate::startup::AppState;

/// Retries for a backup or restore function (the executor's retry count, so 4 attempts).
const RETRIES: u32 = 3;

/// The Inngest configuration from our settings.
///
/// # Errors
/// A signing key that does not parse.
pub fn inngest_config(
    s: &InngestSettings,
) -> Result<inngest::Config, inngest::signature::InvalidSigningKey> {
    let key = |k: &Option<secrecy::SecretString>| {
        k.as_ref()
            .map(|k| inngest::SigningKey::parse(k.expose_secret()))
            .transpose()
    };
    let mut config = inngest::Config::dev(&s.app_id);
    config.mode = if s.dev {
        inngest::Mode::Dev
    } else {
        inngest::Mode::Cloud
    };
    config.api_base_url = s.api_base_url.clone();
    config.event_api_base_url = s.event_api_base_url.clone();
    config.signing_key = key(&s.signing_key)?;
    config.signing_key_fallback = key(&s.signing_key_fallback)?;
    config.event_key = s
        .event_key
        .as_ref()
        .map(|k| inngest::EventKey::new(k.expose_secret()));
    config.env = s.env.clone();
    config.serve_origin = Some(s.serve_origin.clone());
    config.serve_path = s.serve_path.clone();
    config.streaming = s.streaming;
    Ok(config)
}

/// The app with every function registered.
///
/// # Errors
/// See [`inngest_config`].
pub fn inngest_app(
    state: &AppState,
) -> Result<inngest::App, inngest::signature::InvalidSigningKey> {
    let config = inngest_config(&state.settings.inngest)?;
    let cap = state.settings.backup.max_concurrent;
    let backup = with_flow_control(
        inngest::Function::new(backup_execute::SLUG, "Execute backup"),
        cap,
    )
    .trigger(inngest::Trigger::event(backup_execute::EVENTS[0]))
    .trigger(inngest::Trigger::event(backup_execute::EVENTS[1]))
    .handler(handler(state, backup_execute::run));
    let daily = inngest::Function::new(scheduled::SLUG, "Daily full backup")
        .retries(RETRIES)
        .concurrency(vec![inngest::Concurrency::new(1)])
        .trigger(inngest::Trigger::cron(scheduled::CRON))
        .handler(handler(state, scheduled::run));
    let restore = with_flow_control(inngest::Function::new(restore::SLUG, "Restore backup"), cap)
        .trigger(inngest::Trigger::event(restore::EVENTS[0]))
        .trigger(inngest::Trigger::event(restore::EVENTS[1]))
        .handler(handler(state, restore::run));
    Ok(inngest::App::new(config)
        .register(backup)
        .register(daily)
        .register(restore))
}

fn with_flow_control(f: inngest::FunctionBuilder, cap: u32) -> inngest::FunctionBuilder {
    f.retries(RETRIES).concurrency(vec![
        inngest::Concurrency::new(cap),
        inngest::Concurrency::new(1).key("event.data.tenant_id"),
    ])
}

/// Adapts `f(state, ctx)` to the handler shape, cloning the state per call.
fn handler<F, Fut>(state: &AppState, f: F) -> impl Fn(inngest::Ctx) -> Fut + Send + Sync + 'static
where
    F: Fn(AppState, inngest::Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<serde_json::Value, inngest::Error>> + Send + 'static,
{
    let state = state.clone();
    move |ctx| f(state.clone(), ctx)
}

/// `ctx.step.run(id, body)`, boxed as a `Send` future.
///
/// rustc cannot always prove that a step future is `Send` "for every lifetime" when it is built
/// inside another async fn (rust-lang/rust#102211, "Send is not general enough"); boxing it
/// here, where the lifetimes are concrete, settles the question once for every step.
pub(crate) fn step<'a, T, F, Fut>(
    step: &'a inngest::Step,
    id: &'a str,
    body: F,
) -> BoxFuture<'a, Result<T, inngest::Error>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'a,
    F: FnOnce() -> Fut + Send + 'a,
    Fut: Future<Output = Result<T, inngest::Error>> + Send + 'a,
{
    Box::pin(step.run(id, body))
}

/// A final error: retrying cannot change the outcome.
pub(crate) fn non_retriable(message: impl Into<String>) -> inngest::Error {
    inngest::Error::non_retriable(message)
}

/// Maps an engine error onto Inngest's retry semantics.
pub(crate) fn engine_error<E: std::fmt::Display + Retriable>(e: E) -> inngest::Error {
    if e.is_retriable() {
        inngest::Error::retriable(e.to_string())
    } else {
        inngest::Error::non_retriable(e.to_string())
    }
}

/// Errors that know whether a retry can help.
pub trait Retriable {
    fn is_retriable(&self) -> bool;
}

impl Retriable for crate::backup::BackupError {
    fn is_retriable(&self) -> bool {
        crate::backup::BackupError::is_retriable(self)
    }
}

impl Retriable for crate::restore::RestoreError {
    fn is_retriable(&self) -> bool {
        crate::restore::RestoreError::is_retriable(self)
    }
}
