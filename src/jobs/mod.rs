//! The Inngest functions of the worker, one module each, and the app that serves them.
//!
//! | function (composite id `<app id>-<slug>`) | triggers |
//! |---|---|
//! | `backup-execute` | `backup/execute`, `database/backup.requested` |
//! | `backup-daily-full` | cron from the policy (`full_cron`, default `0 2 * * *`) |
//! | `backup-hourly-incremental` | cron from the policy (`incremental_cron`, default `0 * * * *`) |
//! | `backup-retention` | cron `15 * * * *` in the policy's time zone |
//! | `backup-restore` | `backup/restore`, `database/restore.requested` |
//!
//! The backup and restore functions have `onFailure` companions (`<id>-failure`) that send
//! `backup/failed` / `backup/restore.failed` ([`failure`]).
//!
//! This module holds only the Inngest adapters: event parsing, steps, flow control, and the
//! mapping of errors onto Inngest's retry semantics. What each step does lives in
//! [`crate::usecases`], shared with the CLI.
//!
//! Flow control protects the database: every function that dumps or restores shares one
//! environment-scoped concurrency key (`BACKUP_MAX_CONCURRENT` in all, across functions and
//! replicas), and one key per tenant shared by backup and restore, so a backup and a restore
//! of the same tenant never overlap; they queue instead. A run that finds its work claimed by
//! another live run (a duplicate delivery) waits for it with durable sleeps and then reports
//! the saved outcome; it never fails over it.

pub mod backup_execute;
pub mod events;
pub mod failure;
pub mod restore;
pub mod scheduled;

use std::future::Future;

use futures::future::BoxFuture;

use secrecy::ExposeSecret;

use crate::settings::InngestSettings;
use crate::startup::AppState;

/// Retries for a backup or restore function (the executor's retry count, so 4 attempts).
const RETRIES: u32 = 3;

/// The shared key of the global cap: a constant CEL string, the same in every function.
const GLOBAL_KEY: &str = "\"riveredge-backup\"";

/// How many times a run waits for another run that owns its work (about 3 h in all: longer
/// than any step may run, after which the owner counts as dead and its work is taken over).
const MAX_WAITS: u32 = 200;

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
    .on_failure(handler(state, failure::backup_failed))
    .handler(handler(state, backup_execute::run));
    let crons = |schedule| {
        let state = state.clone();
        move || scheduled::triggers(state.clone(), schedule)
    };
    let daily = with_flow_control(
        inngest::Function::new(scheduled::SLUG, "Daily full backup"),
        cap,
    )
    .triggers_from(crons(scheduled::Schedule::Full))
    .on_failure(handler(state, failure::backup_failed))
    .handler(handler(state, scheduled::run));
    let hourly = with_flow_control(
        inngest::Function::new(scheduled::INCREMENTAL_SLUG, "Hourly incremental backup"),
        cap,
    )
    .triggers_from(crons(scheduled::Schedule::Incremental))
    .on_failure(handler(state, failure::backup_failed))
    .handler(handler(state, scheduled::run_incremental));
    // One pass at a time across replicas: two would plan against each other's deletions.
    let retention = inngest::Function::new(scheduled::RETENTION_SLUG, "Backup retention")
        .retries(RETRIES)
        .concurrency(vec![inngest::Concurrency::new(1)])
        .triggers_from(crons(scheduled::Schedule::Retention))
        .handler(handler(state, scheduled::run_retention));
    let restore = with_flow_control(inngest::Function::new(restore::SLUG, "Restore backup"), cap)
        .trigger(inngest::Trigger::event(restore::EVENTS[0]))
        .trigger(inngest::Trigger::event(restore::EVENTS[1]))
        .on_failure(handler(state, failure::restore_failed))
        .handler(handler(state, counted_restore));
    Ok(inngest::App::new(config)
        .register(backup)
        .register(daily)
        .register(hourly)
        .register(retention)
        .register(restore))
}

/// [`restore::run`], counted in the metrics when it ends for good.
async fn counted_restore(
    state: AppState,
    ctx: inngest::Ctx,
) -> Result<serde_json::Value, inngest::Error> {
    let result = restore::run(state, ctx).await;
    match &result {
        Ok(_) => crate::metrics::restore_finished("success"),
        Err(e) if !e.is_retriable() => crate::metrics::restore_finished("failed"),
        Err(_) => {}
    }
    result
}

fn with_flow_control(f: inngest::FunctionBuilder, cap: u32) -> inngest::FunctionBuilder {
    use inngest::ConcurrencyScope::Env;
    f.retries(RETRIES).concurrency(vec![
        inngest::Concurrency::new(cap).scope(Env).key(GLOBAL_KEY),
        inngest::Concurrency::new(1)
            .scope(Env)
            .key("event.data.tenant_id"),
    ])
}

/// Refuses an event that is not one of the function's triggers (a signed request replayed to
/// the wrong function must not start a restore).
pub(crate) fn check_trigger(ctx: &inngest::Ctx, triggers: &[&str]) -> Result<(), inngest::Error> {
    if triggers.contains(&ctx.event.name.as_str()) {
        Ok(())
    } else {
        Err(non_retriable(format!(
            "event {:?} does not trigger {} (expected one of {})",
            ctx.event.name,
            ctx.fn_id,
            triggers.join(", ")
        )))
    }
}

/// A claim step's memoized answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum ClaimStep<T> {
    /// This run owns the work.
    Mine,
    /// Done already: the saved outcome.
    Done(T),
    /// Another live run owns it.
    Busy(String),
}

/// Claims the work for this run (`claim` is a step body), waiting with durable sleeps while
/// another live run owns it. `Some(saved)` when the work is done already.
///
/// # Errors
/// The claim step's errors; a final error after [`MAX_WAITS`] waits.
pub(crate) async fn claim_or_wait<T, F, Fut>(
    ctx: &inngest::Ctx,
    claim: F,
) -> Result<Option<T>, inngest::Error>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<ClaimStep<T>, inngest::Error>> + Send + 'static,
{
    for n in 0..MAX_WAITS {
        let id = if n == 0 {
            "mark-running".to_owned()
        } else {
            format!("mark-running-{n}")
        };
        let body = claim.clone();
        match step(&ctx.step, &id, body).await? {
            ClaimStep::Mine => return Ok(None),
            ClaimStep::Done(saved) => return Ok(Some(saved)),
            ClaimStep::Busy(owner) => {
                tracing::info!(%owner, run = %ctx.run_id, "another run owns this work; waiting for it");
                let wait = std::time::Duration::from_secs(5u64 << n.min(4))
                    .min(std::time::Duration::from_secs(60));
                ctx.step.sleep(&format!("wait-for-owner-{n}"), wait).await?;
            }
        }
    }
    Err(non_retriable(
        "gave up waiting for the run that owns this work; see its run in the Inngest dashboard",
    ))
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

/// The one mapping of a use-case or engine error onto Inngest's retry semantics
/// ([`crate::retry`] decides what is transient).
pub(crate) fn engine_error<E: std::fmt::Display + Retriable>(e: E) -> inngest::Error {
    if e.is_retriable() {
        inngest::Error::retriable(e.to_string())
    } else {
        inngest::Error::non_retriable(e.to_string())
    }
}

pub use crate::retry::Retriable;

impl Retriable for crate::backup::BackupError {
    fn is_retriable(&self) -> bool {
        crate::backup::BackupError::is_retriable(self)
    }
}

impl Retriable for crate::usecases::restore::RestoreRequestError {
    fn is_retriable(&self) -> bool {
        crate::usecases::restore::RestoreRequestError::is_retriable(self)
    }
}

impl Retriable for sqlx::Error {
    fn is_retriable(&self) -> bool {
        crate::retry::is_transient_sql(self)
    }
}
