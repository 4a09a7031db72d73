//! The test executor: runs a function through the served app like Inngest's executor.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{lock, parse_go_duration, FakeInngestServer};
use crate::headers;
use crate::signature::{self, SigningKey};
use crate::types::Event;

/// Upper bound on calls per run, like the executor's step limit; stops runaway loops.
const MAX_CALLS: usize = 1000;

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// 200 with the function's return value.
    Completed(Value),
    /// A non-retried error answer; the value is its body.
    Failed(Value),
    /// The SDK broke the protocol (missing SDK header, bad response signature, bad ops).
    ProtocolError(String),
}

/// One HTTP call the executor made.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub step_id: String,
    pub attempt: u32,
    /// Effective status (the inner status of a 201 stream); 0 when the connection failed.
    pub http_status: u16,
    /// The op array of a 206 answer.
    pub ops: Vec<Value>,
    pub body: Value,
    pub no_retry: Option<bool>,
    pub retry_after: Option<String>,
    /// The answer came as a 201 keep-alive stream.
    pub streamed: bool,
    /// The answer was dropped by a [`TestExecutor::lose_response_of`] fault.
    pub lost: bool,
}

/// Everything that happened in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub status: RunStatus,
    pub calls: Vec<CallRecord>,
    /// Final memoized state by hashed step id.
    pub steps: BTreeMap<String, Value>,
}

impl RunRecord {
    /// Calls that targeted `step_id` (`"step"` for discovery calls).
    pub fn calls_for(&self, step_id: &str) -> Vec<&CallRecord> {
        self.calls.iter().filter(|c| c.step_id == step_id).collect()
    }

    /// Whether a step with this (user-facing) name has a memoized result.
    pub fn has_step(&self, name: &str) -> bool {
        self.steps.contains_key(&crate::step::hash_step_id(name))
    }
}

/// Faults the executor injects, shared by its clones.
#[derive(Debug, Default)]
struct Faults {
    /// Step name → how many more of its answers to drop.
    lose_response: HashMap<String, u32>,
}

/// Drives a served app like the Inngest executor.
#[derive(Debug, Clone)]
pub struct TestExecutor {
    http: reqwest::Client,
    serve_url: String,
    signing_key: Option<SigningKey>,
    backoff: Duration,
    max_sleep: Duration,
    api_store: Option<FakeInngestServer>,
    run_id: Option<String>,
    faults: Arc<Mutex<Faults>>,
}

/// A decoded answer, before the run loop acts on it.
struct Decoded {
    status: u16,
    headers: HashMap<String, String>,
    body_text: String,
    streamed: bool,
}

/// Why a call produced no decoded answer.
enum CallError {
    /// The connection failed (worker down or killed): the executor retries the same call.
    Transport(String),
    /// The SDK broke the protocol: the run stops.
    Protocol(String),
}

impl TestExecutor {
    /// `serve_url` is the app's endpoint (e.g. `http://127.0.0.1:1234/api/inngest`); with a key,
    /// every request is signed and every response signature checked.
    pub fn new(serve_url: impl Into<String>, signing_key: Option<SigningKey>) -> Self {
        Self {
            http: reqwest::Client::new(),
            serve_url: serve_url.into(),
            signing_key,
            backoff: Duration::ZERO,
            max_sleep: Duration::from_millis(50),
            api_store: None,
            run_id: None,
            faults: Arc::default(),
        }
    }

    /// Delay between retries (zero by default, so tests do not wait).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Longest real wait for a `Sleep` op (the op's duration, capped; 50 ms by default so
    /// tests stay fast while a sleeping run still yields to the others).
    pub fn max_sleep(mut self, max_sleep: Duration) -> Self {
        self.max_sleep = max_sleep;
        self
    }

    /// Sends `use_api: true` with empty `events`/`steps`, storing the run state on `server`
    /// for the SDK to fetch from `/v0/runs/{id}/batch|actions`.
    pub fn use_api(mut self, server: FakeInngestServer) -> Self {
        self.api_store = Some(server);
        self
    }

    /// Fixes the run id (otherwise each run gets a fresh one).
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// The next `times` answers that complete step `name` are lost after the SDK ran the step,
    /// as when the executor's request times out: the effect happened, nothing was memoized,
    /// and the executor calls again with `attempt + 1`.
    pub fn lose_response_of(&self, name: &str, times: u32) {
        lock(&self.faults)
            .lose_response
            .insert(name.to_owned(), times);
    }

    /// Runs `fn_id` (composite id) for `event` to completion or failure. `max_attempts`
    /// defaults to 5 (the server's default of 4 retries).
    pub async fn run(&self, fn_id: &str, event: Event, max_attempts: Option<u32>) -> RunRecord {
        self.start(fn_id, event, max_attempts).finish().await
    }

    /// A run that advances only when asked ([`RunHandle::advance`]); each call makes a new run
    /// id unless [`TestExecutor::run_id`] fixed one, so starting the same event again is a
    /// dashboard rerun.
    pub fn start(&self, fn_id: &str, event: Event, max_attempts: Option<u32>) -> RunHandle {
        let run_id = self.run_id.clone().unwrap_or_else(|| {
            format!(
                "01TESTRUN{:08}",
                RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        RunHandle {
            executor: self.clone(),
            fn_id: fn_id.to_owned(),
            event,
            max_attempts: max_attempts.unwrap_or(5),
            record: RunRecord {
                run_id,
                status: RunStatus::ProtocolError("run did not start".into()),
                calls: Vec::new(),
                steps: BTreeMap::new(),
            },
            stack: Vec::new(),
            queue: VecDeque::from([(headers::DISCOVERY_STEP_ID.to_owned(), 0)]),
            force_plan: false,
            done: false,
        }
    }

    /// Consumes one pending lost-response fault for any `StepRun` op in `ops`.
    fn take_lost(&self, ops: &[Value]) -> bool {
        let mut faults = lock(&self.faults);
        for op in ops {
            if op.get("op").and_then(Value::as_str) != Some("StepRun") {
                continue;
            }
            let name = op
                .get("displayName")
                .or_else(|| op.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(left) = faults.lose_response.get_mut(name) {
                if *left > 0 {
                    *left -= 1;
                    return true;
                }
            }
        }
        false
    }
    #[allow(clippy::too_many_arguments)]
    fn request_body(
        &self,
        event: &Event,
        steps: &BTreeMap<String, Value>,
        stack: &[String],
        run_id: &str,
        step_id: &str,
        attempt: u32,
        max_attempts: u32,
        force_plan: bool,
    ) -> Value {
        let mut event_json = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Some(object) = event_json.as_object_mut() {
            object.entry("user").or_insert_with(|| json!({}));
        }
        let use_api = self.api_store.is_some();
        if let Some(server) = &self.api_store {
            server.set_run(run_id, json!([event_json]), json!(steps));
        }
        let (events, steps) = if use_api {
            (json!([]), json!({}))
        } else {
            (json!([event_json]), json!(steps))
        };
        json!({
            "event": event_json,
            "events": events,
            "steps": steps,
            "defers": {},
            "ctx": {
                "fn_id": "00000000-0000-0000-0000-000000000000",
                "run_id": run_id,
                "env": "",
                "step_id": step_id,
                "attempt": attempt,
                "max_attempts": max_attempts,
                "stack": {"stack": stack, "current": stack.len()},
                "qi_id": "",
                "disable_immediate_execution": force_plan,
                "use_api": use_api,
            },
            "version": -1,
            "use_api": use_api,
        })
    }

    /// One signed POST; also checks the SDK header and the response signature.
    async fn post(&self, fn_id: &str, step_id: &str, body: &Value) -> Result<Decoded, CallError> {
        let bytes = body.to_string();
        let mut url =
            reqwest::Url::parse(&self.serve_url).map_err(|e| CallError::Protocol(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("fnId", fn_id)
            .append_pair("stepId", step_id);
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-run-id", "run");
        if let Some(key) = &self.signing_key {
            request = request.header(
                headers::SIGNATURE,
                key.sign(bytes.as_bytes(), signature::unix_now()),
            );
        }
        let response = request
            .body(bytes)
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("call failed: {e}")))?;
        let status = response.status().as_u16();
        let mut header_map: HashMap<String, String> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if !header_map.contains_key(headers::SDK) {
            return Err(CallError::Protocol(format!(
                "answer {status} did not come from an Inngest SDK (no X-Inngest-SDK)"
            )));
        }
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Transport(format!("reading answer failed: {e}")))?;
        if status != 201 {
            self.check_signature(&header_map, text.as_bytes())
                .map_err(CallError::Protocol)?;
            return Ok(Decoded {
                status,
                headers: header_map,
                body_text: text,
                streamed: false,
            });
        }
        let wrapper: Value = serde_json::from_str(text.trim_start())
            .map_err(|e| CallError::Transport(format!("stream cut short: {e}")))?;
        let inner_status = wrapper.get("status").and_then(Value::as_u64).unwrap_or(500);
        let inner_body = match wrapper.get("body") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        header_map = wrapper
            .get("headers")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.to_ascii_lowercase(),
                            v.as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.check_signature(&header_map, inner_body.as_bytes())
            .map_err(CallError::Protocol)?;
        Ok(Decoded {
            status: u16::try_from(inner_status).unwrap_or(500),
            headers: header_map,
            body_text: inner_body,
            streamed: true,
        })
    }

    fn check_signature(
        &self,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<(), String> {
        let Some(key) = &self.signing_key else {
            return Ok(());
        };
        let header = headers.get(headers::SIGNATURE).map(String::as_str);
        signature::verify(body, header, Some(key), None, signature::unix_now())
            .map(|_| ())
            .map_err(|e| format!("response signature invalid: {e}"))
    }
}

/// One run, advanced a call at a time. Dropping it abandons the run (as a cancelled run).
#[derive(Debug)]
pub struct RunHandle {
    executor: TestExecutor,
    fn_id: String,
    event: Event,
    max_attempts: u32,
    record: RunRecord,
    stack: Vec<String>,
    queue: VecDeque<(String, u32)>,
    force_plan: bool,
    done: bool,
}

impl RunHandle {
    pub fn run_id(&self) -> &str {
        &self.record.run_id
    }

    /// What happened so far.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Runs to the end.
    pub async fn finish(mut self) -> RunRecord {
        while self.advance().await {}
        self.record
    }

    /// Advances until step `name` has a memoized result (or the run ends); `true` if it has.
    pub async fn run_until(&mut self, name: &str) -> bool {
        while !self.record.has_step(name) {
            if !self.advance().await {
                break;
            }
        }
        self.record.has_step(name)
    }

    /// Makes the next call; `false` once the run has ended.
    pub async fn advance(&mut self) -> bool {
        if self.done {
            return false;
        }
        let Some((step_id, attempt)) = self.queue.pop_front() else {
            return self.end(RunStatus::ProtocolError(
                "run stalled with nothing to do".into(),
            ));
        };
        if self.record.calls.len() >= MAX_CALLS {
            return self.end(RunStatus::ProtocolError("too many calls".into()));
        }
        let exec = self.executor.clone();
        let body = exec.request_body(
            &self.event,
            &self.record.steps,
            &self.stack,
            &self.record.run_id,
            &step_id,
            attempt,
            self.max_attempts,
            self.force_plan,
        );
        let decoded = match exec.post(&self.fn_id, &step_id, &body).await {
            Ok(decoded) => decoded,
            Err(CallError::Protocol(problem)) => {
                return self.end(RunStatus::ProtocolError(problem))
            }
            Err(CallError::Transport(problem)) => {
                // The executor treats a lost connection like a 5xx: the same call again.
                self.record.calls.push(CallRecord {
                    step_id: step_id.clone(),
                    attempt,
                    http_status: 0,
                    ops: Vec::new(),
                    body: Value::String(problem.clone()),
                    no_retry: None,
                    retry_after: None,
                    streamed: false,
                    lost: false,
                });
                return self
                    .retry(step_id, attempt, json!({ "error": problem }))
                    .await;
            }
        };
        let body_json: Value = serde_json::from_str(&decoded.body_text)
            .unwrap_or_else(|_| Value::String(decoded.body_text.clone()));
        let no_retry = decoded.headers.get(headers::NO_RETRY).map(|v| v == "true");
        let ops = match (decoded.status, &body_json) {
            (206, Value::Array(ops)) => ops.clone(),
            (206, Value::Object(_)) => vec![body_json.clone()],
            _ => Vec::new(),
        };
        let lost = decoded.status == 206 && exec.take_lost(&ops);
        self.record.calls.push(CallRecord {
            step_id: step_id.clone(),
            attempt,
            http_status: decoded.status,
            ops: ops.clone(),
            body: body_json.clone(),
            no_retry,
            retry_after: decoded.headers.get(headers::RETRY_AFTER).cloned(),
            streamed: decoded.streamed,
            lost,
        });
        if lost {
            tokio::time::sleep(exec.backoff).await;
            self.queue.push_front((step_id, attempt + 1));
            return true;
        }
        match decoded.status {
            200 => self.end(RunStatus::Completed(body_json)),
            206 => self.apply_ops(step_id, attempt, &ops, no_retry).await,
            _ if no_retry == Some(true) => self.end(RunStatus::Failed(body_json)),
            _ => self.retry(step_id, attempt, body_json).await,
        }
    }

    async fn apply_ops(
        &mut self,
        step_id: String,
        attempt: u32,
        ops: &[Value],
        no_retry: Option<bool>,
    ) -> bool {
        if ops.is_empty() {
            return self.end(RunStatus::ProtocolError("206 without ops".into()));
        }
        if ops.len() > 1 {
            self.force_plan = true;
        }
        let mut progressed = false;
        let mut retry_same = false;
        for op in ops {
            let id = op
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match op.get("op").and_then(Value::as_str).unwrap_or_default() {
                "StepRun" => {
                    let data = op.get("data").cloned().unwrap_or(Value::Null);
                    self.record
                        .steps
                        .insert(id.clone(), json!({ "data": data }));
                    self.stack.push(id);
                    progressed = true;
                }
                "StepError" if no_retry != Some(true) && attempt + 1 < self.max_attempts => {
                    retry_same = true;
                }
                "StepError" | "StepFailed" => {
                    let error = op.get("error").cloned().unwrap_or(Value::Null);
                    self.record
                        .steps
                        .insert(id.clone(), json!({ "error": error }));
                    self.stack.push(id);
                    progressed = true;
                }
                "StepPlanned" => self.queue.push_back((id, 0)),
                "Sleep" => {
                    let wanted = op
                        .pointer("/opts/duration")
                        .and_then(Value::as_str)
                        .and_then(parse_go_duration)
                        .unwrap_or_default();
                    tokio::time::sleep(wanted.min(self.executor.max_sleep)).await;
                    self.record.steps.insert(id.clone(), Value::Null);
                    self.stack.push(id);
                    progressed = true;
                }
                other => {
                    return self.end(RunStatus::ProtocolError(format!("unknown op {other:?}")));
                }
            }
        }
        if retry_same {
            tokio::time::sleep(self.executor.backoff).await;
            self.queue.push_front((step_id, attempt + 1));
            return true;
        }
        // Parallel branches are coalesced: discover again once all are done.
        if progressed && self.queue.is_empty() {
            self.force_plan = false;
            self.queue
                .push_back((headers::DISCOVERY_STEP_ID.to_owned(), 0));
        }
        true
    }

    /// The call failed without a step result: call again while attempts remain.
    async fn retry(&mut self, step_id: String, attempt: u32, failure: Value) -> bool {
        if attempt + 1 < self.max_attempts {
            tokio::time::sleep(self.executor.backoff).await;
            self.queue.push_front((step_id, attempt + 1));
            true
        } else {
            self.end(RunStatus::Failed(failure))
        }
    }

    fn end(&mut self, status: RunStatus) -> bool {
        self.record.status = status;
        self.done = true;
        false
    }
}
