//! Function definitions (triggers, retries, flow control) and their registration JSON (§2).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Error;
use crate::step::Ctx;
use crate::types::{serialize_go_duration, serialize_opt_go_duration};

/// Event the executor emits when a run fails permanently; `on_failure` handlers listen to it.
pub const FUNCTION_FAILED_EVENT: &str = "inngest/function.failed";
/// Retries of the synthetic failure function (as the JS SDK registers it).
pub(crate) const FAILURE_FN_RETRIES: u32 = 1;
/// The server caps retries at 20.
pub const MAX_RETRIES: u32 = 20;

pub(crate) type HandlerFn =
    Arc<dyn Fn(Ctx) -> BoxFuture<'static, Result<Value, Error>> + Send + Sync>;

/// Triggers computed at each sync (e.g. crons read from a policy the operator edits), so a
/// changed schedule takes effect by re-syncing the app, without a restart.
pub type TriggerSource = Arc<dyn Fn() -> BoxFuture<'static, Vec<Trigger>> + Send + Sync>;

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Trigger {
    Event {
        event: String,
        /// CEL filter evaluated against `event`.
        #[serde(skip_serializing_if = "Option::is_none")]
        expression: Option<String>,
    },
    Cron {
        /// Five-field cron (minute hour day-of-month month day-of-week), optionally `TZ=…`.
        cron: String,
    },
}

impl Trigger {
    pub fn event(name: impl Into<String>) -> Self {
        Self::Event {
            event: name.into(),
            expression: None,
        }
    }

    /// An event trigger filtered by a CEL expression, e.g. `event.data.x != null`.
    pub fn event_if(name: impl Into<String>, expression: impl Into<String>) -> Self {
        Self::Event {
            event: name.into(),
            expression: Some(expression.into()),
        }
    }

    pub fn cron(schedule: impl Into<String>) -> Self {
        Self::Cron {
            cron: schedule.into(),
        }
    }
}

/// Scope of a concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyScope {
    Fn,
    Env,
    Account,
}

/// A concurrency limit, optionally per key (e.g. `event.data.tenant_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Concurrency {
    pub limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ConcurrencyScope>,
}

impl Concurrency {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            key: None,
            scope: None,
        }
    }

    /// CEL expression partitioning the limit.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// `env`/`account` scopes require a key (server rule).
    pub fn scope(mut self, scope: ConcurrencyScope) -> Self {
        self.scope = Some(scope);
        self
    }
}

/// At most `limit` runs per `period` (≤ 24 h); excess events are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub limit: u32,
    #[serde(serialize_with = "serialize_go_duration")]
    pub period: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// At most `limit` run starts per `period`; excess runs are delayed, not dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Throttle {
    pub limit: u32,
    #[serde(serialize_with = "serialize_go_duration")]
    pub period: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Delay runs until no new event arrived for `period` (1 s – 7 d).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Debounce {
    #[serde(serialize_with = "serialize_go_duration")]
    pub period: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_go_duration"
    )]
    pub timeout: Option<Duration>,
}

/// Cancel running runs when a matching event arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cancel {
    pub event: String,
    /// CEL; `event` is the triggering event, `async` the cancelling one.
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_expr: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_go_duration"
    )]
    pub timeout: Option<Duration>,
}

impl Cancel {
    pub fn on(event: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            if_expr: None,
            timeout: None,
        }
    }

    pub fn when(mut self, expression: impl Into<String>) -> Self {
        self.if_expr = Some(expression.into());
        self
    }
}

/// Cancel a run that did not start (`start`) or finish (`finish`) in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_go_duration"
    )]
    pub start: Option<Duration>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_go_duration"
    )]
    pub finish: Option<Duration>,
}

/// What a singleton does when a run for the same key is already active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SingletonMode {
    Skip,
    Cancel,
}

/// One active run per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Singleton {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub mode: SingletonMode,
}

/// Flow-control settings, serialized verbatim into the function object.
#[derive(Debug, Clone, Default, Serialize)]
struct FlowControl {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    concurrency: Vec<Concurrency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency: Option<String>,
    #[serde(rename = "rateLimit", skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    throttle: Option<Throttle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    debounce: Option<Debounce>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cancel: Vec<Cancel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeouts: Option<Timeouts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    singleton: Option<Singleton>,
}

/// A function under construction; [`FunctionBuilder::handler`] completes it, so a function
/// without a handler cannot be registered.
pub struct FunctionBuilder {
    slug: String,
    name: String,
    triggers: Vec<Trigger>,
    retries: Option<u32>,
    flow: FlowControl,
    on_failure: Option<HandlerFn>,
    trigger_source: Option<TriggerSource>,
}

/// A complete function definition.
#[derive(Clone)]
pub struct Function {
    slug: String,
    name: String,
    triggers: Vec<Trigger>,
    retries: Option<u32>,
    flow: FlowControl,
    handler: HandlerFn,
    on_failure: Option<HandlerFn>,
    trigger_source: Option<TriggerSource>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("slug", &self.slug)
            .field("name", &self.name)
            .field("triggers", &self.triggers)
            .field("retries", &self.retries)
            .field("on_failure", &self.on_failure.is_some())
            .field("trigger_source", &self.trigger_source.is_some())
            .finish_non_exhaustive()
    }
}

fn boxed<F, Fut, T>(f: F) -> HandlerFn
where
    F: Fn(Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
    T: Serialize,
{
    Arc::new(move |ctx| {
        f(ctx)
            .map(|result| {
                result.and_then(|value| {
                    serde_json::to_value(value).map_err(|e| {
                        Error::non_retriable(format!("function output is not serializable: {e}"))
                    })
                })
            })
            .boxed()
    })
}

impl Function {
    /// Starts a definition. `slug` becomes `<app_id>-<slug>`; `name` is the display name (the
    /// dev server requires one, so an empty name falls back to the slug).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(slug: impl Into<String>, name: impl Into<String>) -> FunctionBuilder {
        FunctionBuilder {
            slug: slug.into(),
            name: name.into(),
            triggers: Vec::new(),
            retries: None,
            flow: FlowControl::default(),
            on_failure: None,
            trigger_source: None,
        }
    }

    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// `<app_id>-<slug>`, the id the executor sends as `fnId`.
    pub fn composite_id(&self, app_id: &str) -> String {
        format!("{app_id}-{}", self.slug)
    }

    pub(crate) fn handler(&self) -> &HandlerFn {
        &self.handler
    }

    pub(crate) fn on_failure(&self) -> Option<&HandlerFn> {
        self.on_failure.as_ref()
    }

    /// Number of attempts the executor will make (`retries + 1`, default 4 retries).
    pub fn max_attempts(&self) -> u32 {
        self.retries.unwrap_or(4).min(MAX_RETRIES) + 1
    }

    /// The static triggers followed by those of the trigger source, as of now.
    pub async fn current_triggers(&self) -> Vec<Trigger> {
        let mut triggers = self.triggers.clone();
        if let Some(source) = &self.trigger_source {
            for trigger in source().await {
                if !triggers.contains(&trigger) {
                    triggers.push(trigger);
                }
            }
        }
        triggers
    }

    /// Function objects for `/fn/register` with `triggers` (see [`Function::current_triggers`]):
    /// this function and, with `on_failure`, its `<id>-failure` companion.
    pub(crate) fn registration(
        &self,
        app_id: &str,
        serve_url: &reqwest::Url,
        triggers: &[Trigger],
    ) -> Vec<Value> {
        let id = self.composite_id(app_id);
        let name = if self.name.trim().is_empty() {
            self.slug.clone()
        } else {
            self.name.clone()
        };
        let mut main = json!({
            "id": id,
            "name": name,
            "triggers": triggers,
            "steps": step_entry(serve_url, &id, self.retries),
        });
        if let (Some(object), Ok(Value::Object(flow))) =
            (main.as_object_mut(), serde_json::to_value(&self.flow))
        {
            object.extend(flow);
        }
        let mut out = vec![main];
        if self.on_failure.is_some() {
            let failure_id = format!("{id}-failure");
            out.push(json!({
                "id": failure_id,
                "name": format!("{name} (failure)"),
                "triggers": [Trigger::event_if(
                    FUNCTION_FAILED_EVENT,
                    format!("event.data.function_id == '{id}'"),
                )],
                "steps": step_entry(serve_url, &failure_id, Some(FAILURE_FN_RETRIES)),
            }));
        }
        out
    }
}

/// The single `"step"` entry every function carries; its URL is what the executor POSTs to.
fn step_entry(serve_url: &reqwest::Url, fn_id: &str, retries: Option<u32>) -> Value {
    let mut url = serve_url.clone();
    url.query_pairs_mut()
        .append_pair("fnId", fn_id)
        .append_pair("stepId", crate::headers::DISCOVERY_STEP_ID);
    let mut step = json!({
        "id": "step",
        "name": "step",
        "runtime": {"type": "http", "url": url.as_str()},
    });
    if let (Some(retries), Some(object)) = (retries, step.as_object_mut()) {
        object.insert(
            "retries".into(),
            json!({"attempts": retries.min(MAX_RETRIES)}),
        );
    }
    json!({"step": step})
}

impl FunctionBuilder {
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.triggers.push(trigger);
        self
    }

    /// Triggers computed at every sync, after the static ones (duplicates dropped). A source
    /// that returns nothing leaves the function with its static triggers only.
    pub fn triggers_from<F, Fut>(mut self, source: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Trigger>> + Send + 'static,
    {
        self.trigger_source = Some(Arc::new(move || source().boxed()));
        self
    }

    /// Retry count (not attempts): `retries(3)` means up to 4 attempts. Capped at 20.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Up to two limits (server rule).
    pub fn concurrency(mut self, limits: Vec<Concurrency>) -> Self {
        self.flow.concurrency = limits;
        self
    }

    /// CEL key; one run per key per 24 h.
    pub fn idempotency(mut self, key: impl Into<String>) -> Self {
        self.flow.idempotency = Some(key.into());
        self
    }

    pub fn rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.flow.rate_limit = Some(rate_limit);
        self
    }

    pub fn throttle(mut self, throttle: Throttle) -> Self {
        self.flow.throttle = Some(throttle);
        self
    }

    pub fn debounce(mut self, debounce: Debounce) -> Self {
        self.flow.debounce = Some(debounce);
        self
    }

    /// Adds a cancellation rule (at most five are accepted by the server).
    pub fn cancel(mut self, cancel: Cancel) -> Self {
        self.flow.cancel.push(cancel);
        self
    }

    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.flow.timeouts = Some(timeouts);
        self
    }

    /// CEL expression returning the priority offset in seconds.
    pub fn priority(mut self, run: impl Into<String>) -> Self {
        self.flow.priority = Some(json!({"run": run.into()}));
        self
    }

    pub fn singleton(mut self, singleton: Singleton) -> Self {
        self.flow.singleton = Some(singleton);
        self
    }

    /// Runs when this function fails permanently, as the separate function `<id>-failure`
    /// triggered by `inngest/function.failed`; `ctx.event.data` carries the error.
    pub fn on_failure<F, Fut, T>(mut self, f: F) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
        T: Serialize,
    {
        self.on_failure = Some(boxed(f));
        self
    }

    /// Completes the definition with the run handler.
    pub fn handler<F, Fut, T>(self, f: F) -> Function
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
        T: Serialize,
    {
        Function {
            slug: self.slug,
            name: self.name,
            triggers: self.triggers,
            retries: self.retries,
            flow: self.flow,
            handler: boxed(f),
            on_failure: self.on_failure,
            trigger_source: self.trigger_source,
        }
    }
}
