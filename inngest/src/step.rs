//! The step engine: memoization, discovery, immediate vs planned execution (reference §4).
//!
//! The engine polls the handler future itself. A `step.*` call first looks up its hashed id
//! in the memoized state; if there is no memo it registers itself as *found* and stays
//! pending. When the handler can make no further progress and steps were found, the engine
//! decides: a single run step may execute inline (immediate execution) — the engine marks it
//! and polls again, so the body runs inside the handler future and may borrow from it —
//! otherwise every found step is reported as planned. After a body produced its op the step
//! never resolves, and the engine answers. Non-step I/O keeps working because the engine
//! polls with the real waker.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures::future::poll_fn;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::client::Client;
use crate::error::{Error, Retry};
use crate::function::HandlerFn;
use crate::headers::DISCOVERY_STEP_ID;
use crate::types::{go_duration, CallRequest, ErrorBody, Event, Op, OpCode};

/// Lowercase hex SHA-1 of a step id, the key the executor memoizes results under.
pub fn hash_step_id(id: &str) -> String {
    hex::encode(Sha1::digest(id.as_bytes()))
}

/// What the handler receives.
pub struct Ctx {
    /// The triggering event (first of the batch).
    pub event: Event,
    /// All events of a batch (one element without batching).
    pub events: Vec<Event>,
    pub run_id: String,
    /// Zero-based attempt of the current step or discovery call (resets for each new step).
    pub attempt: u32,
    pub max_attempts: u32,
    /// Composite function id (`<app_id>-<slug>`).
    pub fn_id: String,
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq)]
enum FoundKind {
    Run,
    Sleep(Duration),
}

#[derive(Debug, Clone)]
struct Found {
    hashed: String,
    user_id: String,
    kind: FoundKind,
}

/// Per-request engine state; one `Mutex` guards it and is never held across an await.
#[derive(Debug)]
struct EngineState {
    memos: HashMap<String, Value>,
    /// Occurrences of each user id so far, for the `:n` suffixes.
    counts: HashMap<String, u32>,
    /// Hashed id of the step the executor asked for (`stepId` other than `"step"`).
    target: Option<String>,
    immediate_allowed: bool,
    attempt: u32,
    max_attempts: u32,
    found: Vec<Found>,
    /// Hashed id chosen for inline execution.
    execute: Option<String>,
    /// A step body is running; the handler's pendings are real I/O until it reports.
    executing: bool,
    outcome: Option<(Op, Retry)>,
}

/// Step tools (`ctx.step`). Steps must be awaited inside the handler future, not in spawned
/// tasks: the engine only sees what the handler future polls.
#[derive(Clone)]
pub struct Step {
    state: Arc<Mutex<EngineState>>,
    client: Client,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step").finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SendEventOutput {
    ids: Vec<String>,
}

impl Step {
    fn lock(&self) -> MutexGuard<'_, EngineState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hashes the next occurrence of `id`: `id`, then `id:1`, `id:2`, …
    fn next_hashed(&self, id: &str) -> String {
        let mut state = self.lock();
        let count = state.counts.entry(id.to_owned()).or_insert(0);
        let raw = if *count == 0 {
            id.to_owned()
        } else {
            format!("{id}:{count}")
        };
        *count += 1;
        hash_step_id(&raw)
    }

    /// The memo for `hashed`, ignoring `{"input": …}` placeholders of unfinished steps.
    fn memo(&self, hashed: &str) -> Option<Value> {
        let state = self.lock();
        let value = state.memos.get(hashed)?;
        match value {
            Value::Object(map) if map.len() == 1 && map.contains_key("input") => None,
            other => Some(other.clone()),
        }
    }

    /// Registers the step as found and resolves once the engine lets it execute.
    async fn turn(&self, hashed: &str, user_id: &str, kind: FoundKind) {
        poll_fn(|_| {
            let mut state = self.lock();
            let chosen = match &state.target {
                Some(target) => target == hashed && kind == FoundKind::Run,
                None => state.execute.as_deref() == Some(hashed),
            };
            if chosen {
                state.executing = true;
                return Poll::Ready(());
            }
            if !state.found.iter().any(|f| f.hashed == hashed) {
                state.found.push(Found {
                    hashed: hashed.to_owned(),
                    user_id: user_id.to_owned(),
                    kind: kind.clone(),
                });
            }
            Poll::Pending
        })
        .await;
    }

    /// Runs `body` once across retries and replays: its output is memoized by the executor
    /// and returned on later calls without running the body again.
    ///
    /// # Errors
    /// A memoized permanent failure of this step comes back as an [`Error`] that fails the run
    /// without retry if the handler lets it escape; an output that does not deserialize into
    /// `T` is non-retriable.
    pub async fn run<T, E, F, Fut>(&self, id: &str, body: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        E: Into<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let hashed = self.next_hashed(id);
        if let Some(memo) = self.memo(&hashed) {
            return decode_run_memo(id, memo);
        }
        self.turn(&hashed, id, FoundKind::Run).await;
        let result = body().await.map_err(Into::into).and_then(|value| {
            serde_json::to_value(value).map_err(|e| {
                Error::non_retriable(format!("output of step {id:?} is not serializable: {e}"))
            })
        });
        let (op, retry) = {
            let state = self.lock();
            step_result_op(&hashed, id, result, state.attempt, state.max_attempts)
        };
        tracing::debug!(step = id, op = ?op.op, "step body finished");
        self.lock().outcome = Some((op, retry));
        std::future::pending().await
    }

    /// Durable sleep: the executor resumes the run after `duration` (≤ 366 days) without
    /// holding a request open.
    ///
    /// # Errors
    /// Never fails today; the `Result` keeps room for server-side sleep errors.
    pub async fn sleep(&self, id: &str, duration: Duration) -> Result<(), Error> {
        let hashed = self.next_hashed(id);
        if self.memo(&hashed).is_some() {
            return Ok(());
        }
        self.turn(&hashed, id, FoundKind::Sleep(duration)).await;
        std::future::pending().await
    }

    /// Sends events exactly once per run (a run step whose body POSTs them) and returns the
    /// ids the server assigned.
    ///
    /// # Errors
    /// As [`Step::run`]; a failed send is retriable.
    pub async fn send_event(&self, id: &str, events: Vec<Event>) -> Result<Vec<String>, Error> {
        let client = self.client.clone();
        let output: SendEventOutput = self
            .run(id, || async move {
                client
                    .send(events)
                    .await
                    .map(|ids| SendEventOutput { ids })
                    .map_err(|e| Error::retriable(format!("sending events failed: {e}")))
            })
            .await?;
        Ok(output.ids)
    }
}

fn decode_run_memo<T: DeserializeOwned>(id: &str, memo: Value) -> Result<T, Error> {
    let wrapped = matches!(&memo, Value::Object(map)
        if !map.is_empty() && map.keys().all(|k| k == "data" || k == "error"));
    let data = if wrapped {
        let mut map = match memo {
            Value::Object(map) => map,
            _ => unreachable!("checked above"),
        };
        if let Some(error) = map.remove("error") {
            let body = serde_json::from_value::<ErrorBody>(error.clone()).unwrap_or(ErrorBody {
                name: "Error".to_owned(),
                message: error.to_string(),
                stack: None,
            });
            return Err(Error::step_failed(body));
        }
        map.remove("data").unwrap_or(Value::Null)
    } else {
        memo
    };
    serde_json::from_value(data).map_err(|e| {
        Error::non_retriable(format!(
            "memoized output of step {id:?} does not match its type: {e}"
        ))
    })
}

fn step_result_op(
    hashed: &str,
    id: &str,
    result: Result<Value, Error>,
    attempt: u32,
    max_attempts: u32,
) -> (Op, Retry) {
    let mut op = Op {
        id: hashed.to_owned(),
        op: OpCode::StepRun,
        name: id.to_owned(),
        display_name: id.to_owned(),
        opts: None,
        data: None,
        error: None,
    };
    match result {
        Ok(value) => {
            op.data = Some(value);
            (op, Retry::Retriable)
        }
        Err(error) => {
            let last_attempt = attempt + 1 >= max_attempts;
            op.op = if !error.is_retriable() || last_attempt {
                OpCode::StepFailed
            } else {
                OpCode::StepError
            };
            op.error = Some(error.to_body());
            (op, error.retry())
        }
    }
}

/// How a call request ended, before it becomes HTTP.
#[derive(Debug)]
pub(crate) enum CallOutcome {
    /// The function returned; answer 200 with the value.
    Complete(Value),
    /// The function failed outside any step.
    FunctionError(Error),
    /// 206 with ops; `retry` is the retry behaviour of a failed step, if any.
    Ops { ops: Vec<Op>, retry: Option<Retry> },
    /// `stepId` named a step this run never reached.
    StepNotFound {
        requested: String,
        found: Vec<String>,
    },
}

/// Inputs of one call request.
pub(crate) struct CallInput {
    pub request: CallRequest,
    pub fn_id: String,
    pub step_id: String,
    pub max_attempts: u32,
}

/// Runs the handler for one call request and reports what the executor should do next.
pub(crate) async fn execute(handler: &HandlerFn, input: CallInput, client: Client) -> CallOutcome {
    let CallInput {
        request,
        fn_id,
        step_id,
        max_attempts,
    } = input;
    let target = (step_id != DISCOVERY_STEP_ID).then_some(step_id);
    let max_attempts = request.ctx.max_attempts.unwrap_or(max_attempts);
    let state = Arc::new(Mutex::new(EngineState {
        memos: request.steps,
        counts: HashMap::new(),
        target: target.clone(),
        immediate_allowed: !request.ctx.disable_immediate_execution,
        attempt: request.ctx.attempt,
        max_attempts,
        found: Vec::new(),
        execute: None,
        executing: false,
        outcome: None,
    }));
    let events = if request.events.is_empty() {
        request.event.iter().cloned().collect()
    } else {
        request.events
    };
    let event = request
        .event
        .or_else(|| events.first().cloned())
        .unwrap_or_else(|| Event::new("", Value::Null));
    let ctx = Ctx {
        event,
        events,
        run_id: request.ctx.run_id,
        attempt: request.ctx.attempt,
        max_attempts,
        fn_id,
        step: Step {
            state: Arc::clone(&state),
            client,
        },
    };
    let mut handler_future = pin!(AssertUnwindSafe(handler(ctx)).catch_unwind());
    poll_fn(move |cx| loop {
        let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
        match handler_future.as_mut().poll(cx) {
            Poll::Ready(Ok(result)) => {
                let state = lock();
                return Poll::Ready(match (result, &state.target) {
                    (Err(error), _) => CallOutcome::FunctionError(error),
                    (Ok(_), Some(requested)) => step_not_found(requested, &state.found),
                    (Ok(value), None) => CallOutcome::Complete(value),
                });
            }
            Poll::Ready(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "handler panicked".to_owned());
                return Poll::Ready(CallOutcome::FunctionError(
                    Error::retriable(message).with_name("Panic"),
                ));
            }
            Poll::Pending => {
                let mut state = lock();
                if let Some((op, retry)) = state.outcome.take() {
                    let retry = op.error.is_some().then_some(retry);
                    return Poll::Ready(CallOutcome::Ops {
                        ops: vec![op],
                        retry,
                    });
                }
                if state.executing || state.found.is_empty() {
                    return Poll::Pending;
                }
                if let Some(requested) = &state.target {
                    return Poll::Ready(step_not_found(requested, &state.found));
                }
                let single_run = state.found.len() == 1 && state.found[0].kind == FoundKind::Run;
                if state.immediate_allowed && single_run && state.execute.is_none() {
                    state.execute = Some(state.found[0].hashed.clone());
                    continue;
                }
                let ops = state.found.iter().map(planned_op).collect();
                return Poll::Ready(CallOutcome::Ops { ops, retry: None });
            }
        }
    })
    .await
}

fn step_not_found(requested: &str, found: &[Found]) -> CallOutcome {
    CallOutcome::StepNotFound {
        requested: requested.to_owned(),
        found: found.iter().map(|f| f.hashed.clone()).collect(),
    }
}

fn planned_op(found: &Found) -> Op {
    match &found.kind {
        FoundKind::Run => Op {
            id: found.hashed.clone(),
            op: OpCode::StepPlanned,
            name: found.user_id.clone(),
            display_name: found.user_id.clone(),
            opts: None,
            data: None,
            error: None,
        },
        FoundKind::Sleep(duration) => {
            let duration = go_duration(*duration);
            Op {
                id: found.hashed.clone(),
                op: OpCode::Sleep,
                name: duration.clone(),
                display_name: found.user_id.clone(),
                opts: Some(json!({ "duration": duration })),
                data: None,
                error: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_hash_to_lowercase_sha1_like_the_reference() {
        assert_eq!(
            hash_step_id("my-step-id"),
            "e7d8a2f140845095749d60246ff1110c9d01d76a"
        );
        assert_eq!(
            hash_step_id("first-step"),
            "efec2b2037910199abcc3c58998255afa3066709"
        );
        assert_eq!(
            hash_step_id("my-step-id:1"),
            "f47c6228c581af870aa285200cf95ec3ac59bb6a"
        );
        assert_eq!(
            hash_step_id("my-step-id:2"),
            "5fdb32cd3e6e3d62fa480ac2ad526b79c2682845"
        );
    }

    #[test]
    fn memo_shapes_decode_as_data_error_or_raw() {
        assert_eq!(decode_run_memo::<u32>("s", json!({"data": 7})).unwrap(), 7);
        assert_eq!(decode_run_memo::<u32>("s", json!(7)).unwrap(), 7);
        let err = decode_run_memo::<u32>("s", json!({"error": {"name": "E", "message": "m"}}))
            .unwrap_err();
        assert!(err.is_step_failure());
        assert_eq!((err.name(), err.message()), ("E", "m"));
        let mismatch = decode_run_memo::<u32>("s", json!({"data": "x"})).unwrap_err();
        assert!(!mismatch.is_retriable());
    }

    #[test]
    fn final_attempts_and_non_retriable_errors_become_step_failed() {
        let op = |err, attempt| step_result_op("h", "s", Err(err), attempt, 3).0.op;
        assert_eq!(op(Error::retriable("x"), 0), OpCode::StepError);
        assert_eq!(op(Error::retriable("x"), 2), OpCode::StepFailed);
        assert_eq!(op(Error::non_retriable("x"), 0), OpCode::StepFailed);
        assert_eq!(
            op(Error::retry_after("x", Duration::from_secs(1)), 0),
            OpCode::StepError
        );
    }
}
