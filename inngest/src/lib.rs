//! An Inngest SDK serve endpoint for axum: sync, signed execution, durable steps, retries and
//! crons, indistinguishable on the wire from an official SDK (see the protocol fact sheet).
//!
//! Modules, one concern each:
//! - [`config`]: [`Config`] (explicit or from `INNGEST_*` variables); decides dev vs cloud.
//! - [`headers`]: header names and protocol constants.
//! - [`signature`]: HMAC request/response signatures, the hashed Bearer key, verification.
//! - [`types`]: wire structs (call request, ops, events) and Go-style durations.
//! - [`error`]: the [`Error`] handlers return and how it maps onto retries.
//! - [`function`]: function definitions, triggers, flow control, registration JSON.
//! - [`step`]: the step engine (`step.run`, `step.sleep`, `step.send_event`) and [`Ctx`].
//! - `serve`: the axum routes (GET introspection, PUT sync, POST execution) and the
//!   signature extractors.
//! - [`client`]: event sending and authenticated API calls with key fallback.
//! - [`sync`]: out-of-band registration, including the start-up sync with backoff.
//! - [`app`]: [`App`], tying functions and configuration together.
//! - `testing` (feature `testing`): a test executor and a fake Inngest server.
//!
//! # Example
//!
//! ```no_run
//! use inngest::{App, Concurrency, Config, Ctx, Error, Event, Function, SyncBackoff, Trigger};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_env("my-app")?;
//! let hello = Function::new("hello", "Say hello")
//!     .trigger(Trigger::event("test/hello"))
//!     .trigger(Trigger::cron("0 2 * * *"))
//!     .retries(3)
//!     .concurrency(vec![Concurrency::new(1).key("event.data.tenant_id")])
//!     .handler(|ctx: Ctx| async move {
//!         let greeting: String = ctx
//!             .step
//!             .run("greet", || async { Ok::<_, Error>(format!("hello {}", ctx.event.data)) })
//!             .await?;
//!         ctx.step.sleep("pause", std::time::Duration::from_secs(60)).await?;
//!         ctx.step
//!             .send_event("notify", vec![Event::new("test/greeted", json!({"g": greeting}))])
//!             .await?;
//!         Ok(json!({ "greeting": greeting }))
//!     });
//! let app = App::new(config).register(hello);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! let sync = app.spawn_startup_sync("http://localhost:3000/api/inngest", SyncBackoff::default());
//! axum::serve(listener, app.router()).await?;
//! sync.abort();
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod app;
pub mod client;
pub mod config;
pub mod error;
pub mod function;
pub mod headers;
mod serve;
pub mod signature;
pub mod step;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use app::App;
pub use client::{Client, RetryPolicy, SendError};
pub use config::{Config, ConfigError, EventKey, Mode};
pub use error::{Error, Retry};
pub use function::{
    Cancel, Concurrency, ConcurrencyScope, Debounce, Function, FunctionBuilder, RateLimit,
    Singleton, SingletonMode, Throttle, Timeouts, Trigger,
};
pub use serve::MAX_REQUEST_BODY;
pub use signature::{SignatureError, SigningKey};
pub use step::{Ctx, Step};
pub use sync::{SyncBackoff, SyncError, SyncOutcome, SyncRequest};
pub use types::Event;
