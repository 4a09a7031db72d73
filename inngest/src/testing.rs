//! Test doubles that behave like the real Inngest server (feature `testing`).
//!
//! - [`TestExecutor`] drives a served app the way the executor does (reference §4.4–4.5):
//!   signs requests, follows 206 op arrays, memoizes results under hashed ids, calls back with
//!   `stepId` for planned steps, retries with `attempt + 1` up to `max_attempts`, honours
//!   `X-Inngest-No-Retry`, unwraps 201 streams, and records every call.
//! - [`FakeInngestServer`] serves `/fn/register` (with the dev server's validation rules, §2.3),
//!   `/e/{key}` and `/v0/runs/{id}/batch|actions`, recording requests; in self-hosted mode it
//!   requires the Bearer key like `inngest start`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::headers;
use crate::signature::{self, sha256_hex, SigningKey};
use crate::types::Event;

/// Upper bound on calls per run, like the executor's step limit; stops runaway loops.
const MAX_CALLS: usize = 1000;

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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
    /// Effective status (the inner status of a 201 stream).
    pub http_status: u16,
    /// The op array of a 206 answer.
    pub ops: Vec<Value>,
    pub body: Value,
    pub no_retry: Option<bool>,
    pub retry_after: Option<String>,
    /// The answer came as a 201 keep-alive stream.
    pub streamed: bool,
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
}

/// Drives a served app like the Inngest executor.
#[derive(Debug, Clone)]
pub struct TestExecutor {
    http: reqwest::Client,
    serve_url: String,
    signing_key: Option<SigningKey>,
    backoff: Duration,
    api_store: Option<FakeInngestServer>,
    run_id: Option<String>,
}

/// A decoded answer, before the run loop acts on it.
struct Decoded {
    status: u16,
    headers: HashMap<String, String>,
    body_text: String,
    streamed: bool,
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
            api_store: None,
            run_id: None,
        }
    }

    /// Delay between retries (zero by default, so tests do not wait).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
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

    /// Runs `fn_id` (composite id) for `event` to completion or failure. `max_attempts`
    /// defaults to 5 (the server's default of 4 retries).
    pub async fn run(&self, fn_id: &str, event: Event, max_attempts: Option<u32>) -> RunRecord {
        let max_attempts = max_attempts.unwrap_or(5);
        let run_id = self.run_id.clone().unwrap_or_else(|| {
            format!(
                "01TESTRUN{:08}",
                RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut record = RunRecord {
            run_id: run_id.clone(),
            status: RunStatus::ProtocolError("run did not start".into()),
            calls: Vec::new(),
            steps: BTreeMap::new(),
        };
        let mut stack: Vec<String> = Vec::new();
        let mut queue: VecDeque<(String, u32)> =
            VecDeque::from([(headers::DISCOVERY_STEP_ID.to_owned(), 0)]);
        let mut force_plan = false;
        while let Some((step_id, attempt)) = queue.pop_front() {
            if record.calls.len() >= MAX_CALLS {
                record.status = RunStatus::ProtocolError("too many calls".into());
                return record;
            }
            let body = self.request_body(
                &event,
                &record.steps,
                &stack,
                &run_id,
                &step_id,
                attempt,
                max_attempts,
                force_plan,
            );
            let decoded = match self.post(fn_id, &step_id, &body).await {
                Ok(decoded) => decoded,
                Err(problem) => {
                    record.status = RunStatus::ProtocolError(problem);
                    return record;
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
            record.calls.push(CallRecord {
                step_id: step_id.clone(),
                attempt,
                http_status: decoded.status,
                ops: ops.clone(),
                body: body_json.clone(),
                no_retry,
                retry_after: decoded.headers.get(headers::RETRY_AFTER).cloned(),
                streamed: decoded.streamed,
            });
            match decoded.status {
                200 => {
                    record.status = RunStatus::Completed(body_json);
                    return record;
                }
                206 => {
                    if ops.is_empty() {
                        record.status = RunStatus::ProtocolError("206 without ops".into());
                        return record;
                    }
                    if ops.len() > 1 {
                        force_plan = true;
                    }
                    let mut progressed = false;
                    let mut retry_same = false;
                    for op in &ops {
                        let id = op
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        match op.get("op").and_then(Value::as_str).unwrap_or_default() {
                            "StepRun" => {
                                let data = op.get("data").cloned().unwrap_or(Value::Null);
                                record.steps.insert(id.clone(), json!({ "data": data }));
                                stack.push(id);
                                progressed = true;
                            }
                            "StepError" if no_retry != Some(true) && attempt + 1 < max_attempts => {
                                retry_same = true;
                            }
                            "StepError" | "StepFailed" => {
                                let error = op.get("error").cloned().unwrap_or(Value::Null);
                                record.steps.insert(id.clone(), json!({ "error": error }));
                                stack.push(id);
                                progressed = true;
                            }
                            "StepPlanned" => queue.push_back((id, 0)),
                            "Sleep" => {
                                record.steps.insert(id.clone(), Value::Null);
                                stack.push(id);
                                progressed = true;
                            }
                            other => {
                                record.status =
                                    RunStatus::ProtocolError(format!("unknown op {other:?}"));
                                return record;
                            }
                        }
                    }
                    if retry_same {
                        tokio::time::sleep(self.backoff).await;
                        queue.push_front((step_id, attempt + 1));
                        continue;
                    }
                    // Parallel branches are coalesced: discover again once all are done.
                    let planned_left = queue.iter().any(|(s, _)| s != headers::DISCOVERY_STEP_ID);
                    if progressed && !planned_left && queue.is_empty() {
                        force_plan = false;
                        queue.push_back((headers::DISCOVERY_STEP_ID.to_owned(), 0));
                    }
                }
                _ => {
                    if no_retry != Some(true) && attempt + 1 < max_attempts {
                        tokio::time::sleep(self.backoff).await;
                        queue.push_front((step_id, attempt + 1));
                    } else {
                        record.status = RunStatus::Failed(body_json);
                        return record;
                    }
                }
            }
        }
        record.status = RunStatus::ProtocolError("run stalled with nothing to do".into());
        record
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
    async fn post(&self, fn_id: &str, step_id: &str, body: &Value) -> Result<Decoded, String> {
        let bytes = body.to_string();
        let mut url = reqwest::Url::parse(&self.serve_url).map_err(|e| e.to_string())?;
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
            .map_err(|e| format!("call failed: {e}"))?;
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
            return Err(format!(
                "answer {status} did not come from an Inngest SDK (no X-Inngest-SDK)"
            ));
        }
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading answer failed: {e}"))?;
        if status != 201 {
            self.check_signature(&header_map, text.as_bytes())?;
            return Ok(Decoded {
                status,
                headers: header_map,
                body_text: text,
                streamed: false,
            });
        }
        let wrapper: Value = serde_json::from_str(text.trim_start())
            .map_err(|e| format!("invalid stream document: {e}"))?;
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
        self.check_signature(&header_map, inner_body.as_bytes())?;
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

// ------------------------------------------------------------------ fake server

/// A request the fake server received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Debug)]
struct FakeState {
    /// `dev` or `cloud`; compared against `X-Inngest-Expected-Server-Kind`.
    kind: &'static str,
    /// Bearer-hashed keys accepted when auth is required (self-hosted mode).
    accepted_bearers: Option<Vec<String>>,
    event_key: Option<String>,
    requests: Mutex<Vec<RecordedRequest>>,
    runs: Mutex<HashMap<String, (Value, Value)>>,
    last_checksum: Mutex<Option<String>>,
    fail_registers: AtomicU32,
    fail_event_sends: AtomicU32,
    ids: AtomicU64,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A fake Inngest API on `127.0.0.1:<random>`; cheap to clone, stops when the last clone drops.
#[derive(Debug, Clone)]
pub struct FakeInngestServer {
    state: Arc<FakeState>,
    addr: SocketAddr,
    _task: Arc<AbortOnDrop>,
}

impl FakeInngestServer {
    /// Behaves like `inngest dev`: no auth, server kind `dev`.
    pub async fn start_dev() -> Self {
        Self::start("dev", None, None).await
    }

    /// Behaves like `inngest start`: Bearer auth with any of `keys` (hashed), event key
    /// required, server kind `cloud`.
    pub async fn start_self_hosted(keys: &[SigningKey], event_key: &str) -> Self {
        let bearers = keys.iter().map(SigningKey::bearer).collect();
        Self::start("cloud", Some(bearers), Some(event_key.to_owned())).await
    }

    async fn start(
        kind: &'static str,
        bearers: Option<Vec<String>>,
        event_key: Option<String>,
    ) -> Self {
        let state = Arc::new(FakeState {
            kind,
            accepted_bearers: bearers,
            event_key,
            requests: Mutex::new(Vec::new()),
            runs: Mutex::new(HashMap::new()),
            last_checksum: Mutex::new(None),
            fail_registers: AtomicU32::new(0),
            fail_event_sends: AtomicU32::new(0),
            ids: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/fn/register", post(register))
            .route("/e/{key}", post(receive_events))
            .route("/v0/runs/{id}/{kind}", get(run_state))
            .with_state(Arc::clone(&state));
        // Bound before spawning, so the address is connectable when this returns.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the fake Inngest server failed: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake Inngest server has no address: {e}"));
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(error = %error, "fake Inngest server stopped");
            }
        });
        Self {
            state,
            addr,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Base URL, for `api_base_url` and `event_api_base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// All requests so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Requests to one path.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Stores run state served by `/v0/runs/{id}/batch` (`events`) and `/actions` (`steps`).
    pub fn set_run(&self, run_id: &str, events: Value, steps: Value) {
        lock(&self.state.runs).insert(run_id.to_owned(), (events, steps));
    }

    /// The next `n` registrations answer 503.
    pub fn fail_next_registers(&self, n: u32) {
        self.state.fail_registers.store(n, Ordering::SeqCst);
    }

    /// The next `n` event sends answer 500.
    pub fn fail_next_event_sends(&self, n: u32) {
        self.state.fail_event_sends.store(n, Ordering::SeqCst);
    }
}

fn record(state: &FakeState, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    lock(&state.requests).push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
    });
}

fn fake_error(status: StatusCode, message: impl Into<String>, data: Value) -> Response {
    let body =
        json!({"code": "error", "error": message.into(), "data": data, "status": status.as_u16()});
    (status, axum::Json(body)).into_response()
}

/// Mirrors `SigningKeyMiddleware`: prefix stripped on both sides, hashed key compared.
fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    let Some(accepted) = &state.accepted_bearers else {
        return true;
    };
    let strip = |s: &str| s.rsplit('-').next().unwrap_or(s).to_owned();
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    accepted.iter().any(|bearer| strip(bearer) == strip(token))
}

async fn register(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &method, &uri, &headers, &body);
    if !authorized(&state, &headers) {
        return fake_error(
            StatusCode::UNAUTHORIZED,
            "Authentication failed",
            Value::Null,
        );
    }
    if state
        .fail_registers
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return fake_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily unavailable",
            Value::Null,
        );
    }
    if let Some(expected) = headers
        .get(headers::EXPECTED_SERVER_KIND)
        .and_then(|v| v.to_str().ok())
    {
        if !expected.is_empty() && expected != state.kind {
            return fake_error(
                StatusCode::BAD_REQUEST,
                format!("Expected server kind {}, got {expected}", state.kind),
                Value::Null,
            );
        }
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(e) => {
            return fake_error(
                StatusCode::BAD_REQUEST,
                format!("Invalid request: {e}"),
                Value::Null,
            )
        }
    };
    if payload
        .get("appName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        return fake_error(StatusCode::BAD_REQUEST, "App ID required", Value::Null);
    }
    let problems = validate_registration(&payload);
    if !problems.is_empty() {
        return fake_error(
            StatusCode::BAD_REQUEST,
            "At least one function is invalid",
            json!({ "problems": problems }),
        );
    }
    let checksum = sha256_hex(&payload.to_string());
    let modified = lock(&state.last_checksum)
        .replace(checksum.clone())
        .as_ref()
        != Some(&checksum);
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "ok": true,
        "modified": modified,
        "app_id": format!("00000000-0000-0000-0000-{n:012}"),
        "sync_id": format!("11111111-0000-0000-0000-{n:012}"),
    }))
    .into_response()
}

async fn receive_events(
    State(state): State<Arc<FakeState>>,
    Path(key): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &method, &uri, &headers, &body);
    if state
        .event_key
        .as_ref()
        .is_some_and(|expected| *expected != key)
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "Event key not found", "status": 401})),
        )
            .into_response();
    }
    if state
        .fail_event_sends
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": "boom", "status": 500})),
        )
            .into_response();
    }
    let events = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(events)) => events,
        Ok(event @ Value::Object(_)) => vec![event],
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid body", "status": 400})),
            )
                .into_response()
        }
    };
    for event in &events {
        let name = event
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() || name.starts_with("inngest/") {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": format!("invalid event name {name:?}"), "status": 400})),
            )
                .into_response();
        }
    }
    let ids: Vec<String> = events
        .iter()
        .map(|_| format!("01EVENT{:019}", state.ids.fetch_add(1, Ordering::Relaxed)))
        .collect();
    axum::Json(json!({"ids": ids, "status": 200})).into_response()
}

async fn run_state(
    State(state): State<Arc<FakeState>>,
    Path((run_id, kind)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&state, &method, &uri, &headers, b"");
    if !authorized(&state, &headers) {
        return fake_error(
            StatusCode::UNAUTHORIZED,
            "Authentication failed",
            Value::Null,
        );
    }
    let runs = lock(&state.runs);
    match (runs.get(&run_id), kind.as_str()) {
        (Some((events, _)), "batch") => axum::Json(events.clone()).into_response(),
        (Some((_, steps)), "actions") => axum::Json(steps.clone()).into_response(),
        (None, _) => (
            StatusCode::GONE,
            axum::Json(json!({"error": "run state not found"})),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

// ------------------------------------------------------------------ validation (§2.3)

/// Parses a Go duration string (`1h30m`, `1.5s`, `500ms`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

fn duration_field(
    value: Option<&Value>,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    let text = value?.as_str();
    match text.and_then(parse_go_duration) {
        Some(duration) => Some(duration),
        None => {
            problems.push(format!("{what} is not a valid duration: {value:?}"));
            None
        }
    }
}

fn valid_cron(cron: &str) -> bool {
    let cron = cron.trim();
    let cron = match cron
        .strip_prefix("TZ=")
        .or_else(|| cron.strip_prefix("CRON_TZ="))
    {
        Some(rest) => rest.split_once(' ').map_or("", |(_, c)| c),
        None => cron,
    };
    if cron.starts_with('@') {
        return true;
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    fields.len() == 5
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-?".contains(c))
        })
}

/// The dev server's registration rules (reference §2.3) that a payload can break; returns
/// one message per problem.
pub fn validate_registration(payload: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let app = payload
        .get("appName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if app.is_empty() {
        problems.push("App ID required".to_owned());
    }
    let url_ok = payload
        .get("url")
        .and_then(Value::as_str)
        .and_then(|u| reqwest::Url::parse(u).ok())
        .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
    if !url_ok {
        problems.push("url must be an absolute http(s) URL".to_owned());
    }
    let Some(functions) = payload.get("functions").and_then(Value::as_array) else {
        problems.push("functions must be an array".to_owned());
        return problems;
    };
    for function in functions {
        validate_function(function, &mut problems);
    }
    problems
}

fn validate_function(function: &Value, problems: &mut Vec<String>) {
    let id = function
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut problem = |message: String| problems.push(format!("{id}: {message}"));
    if id.is_empty() {
        problem("function id is required".into());
    }
    if function
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        problem("A function name is required".into());
    }
    match function.get("steps").and_then(Value::as_object) {
        Some(steps) if steps.len() == 1 => {
            for step in steps.values() {
                let url = step
                    .pointer("/runtime/url")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let scheme_ok = reqwest::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https" | "ws" | "wss"));
                if !scheme_ok {
                    problem(format!("step URL {url:?} must be http(s) or ws(s)"));
                }
                if let Some(attempts) = step.pointer("/retries/attempts") {
                    if attempts.as_u64().is_none_or(|a| a > 20) {
                        problem(format!("retries must be between 0 and 20, got {attempts}"));
                    }
                }
            }
        }
        _ => problem("functions must have exactly one step".into()),
    }
    let triggers = function
        .get("triggers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if triggers.len() > 10 {
        problem("at most 10 triggers are allowed".into());
    }
    for (i, trigger) in triggers.iter().enumerate() {
        if triggers[..i].contains(trigger) {
            problem(format!("duplicate trigger {trigger}"));
        }
        match (
            trigger.get("event").and_then(Value::as_str),
            trigger.get("cron").and_then(Value::as_str),
        ) {
            (Some(event), None) if !event.is_empty() && event.len() <= 255 => {}
            (None, Some(cron)) if cron.len() <= 255 && valid_cron(cron) => {}
            _ => problem(format!("invalid trigger {trigger}")),
        }
        if let Some(expression) = trigger.get("expression") {
            if expression.as_str().is_none_or(|e| e.trim().is_empty()) {
                problem(format!("invalid trigger expression {expression}"));
            }
        }
    }
    let mut flow = Vec::new();
    validate_flow_control(function, &mut flow);
    for message in flow {
        problem(message);
    }
}

fn validate_flow_control(function: &Value, problems: &mut Vec<String>) {
    let limits: Vec<Value> = match function.get("concurrency") {
        None => Vec::new(),
        Some(Value::Number(n)) => vec![json!({ "limit": n })],
        Some(Value::Array(items)) => items.clone(),
        Some(object @ Value::Object(_)) => vec![object.clone()],
        Some(other) => {
            problems.push(format!("invalid concurrency {other}"));
            Vec::new()
        }
    };
    if limits.len() > 2 {
        problems.push("at most 2 concurrency limits are allowed".into());
    }
    for limit in &limits {
        if limit.get("limit").and_then(Value::as_u64).is_none() {
            problems.push(format!(
                "concurrency limit must be a non-negative integer: {limit}"
            ));
        }
        let scope = limit.get("scope").and_then(Value::as_str).unwrap_or("fn");
        if !matches!(scope, "fn" | "env" | "account") {
            problems.push(format!("invalid concurrency scope {scope:?}"));
        }
        if scope != "fn" && limit.get("key").is_none() {
            problems.push("env and account concurrency scopes require a key".into());
        }
    }
    if let Some(rate) = function.get("rateLimit") {
        if rate
            .get("limit")
            .and_then(Value::as_u64)
            .is_none_or(|l| l == 0)
        {
            problems.push("rateLimit.limit must be positive".into());
        }
        if duration_field(rate.get("period"), "rateLimit.period", problems)
            .is_some_and(|d| d > Duration::from_secs(86_400))
        {
            problems.push("rateLimit.period must be at most 24h".into());
        }
    }
    if let Some(throttle) = function.get("throttle") {
        duration_field(throttle.get("period"), "throttle.period", problems);
    }
    if let Some(debounce) = function.get("debounce") {
        let period = duration_field(debounce.get("period"), "debounce.period", problems);
        if period.is_some_and(|p| p < Duration::from_secs(1) || p > Duration::from_secs(7 * 86_400))
        {
            problems.push("debounce.period must be between 1s and 7d".into());
        }
        duration_field(debounce.get("timeout"), "debounce.timeout", problems);
    }
    if let Some(cancel) = function.get("cancel").and_then(Value::as_array) {
        if cancel.len() > 5 {
            problems.push("at most 5 cancellation rules are allowed".into());
        }
        for rule in cancel {
            if rule
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                problems.push("cancel.event is required".into());
            }
            duration_field(rule.get("timeout"), "cancel.timeout", problems);
        }
    }
    if let Some(timeouts) = function.get("timeouts") {
        duration_field(timeouts.get("start"), "timeouts.start", problems);
        duration_field(timeouts.get("finish"), "timeouts.finish", problems);
    }
    if let Some(singleton) = function.get("singleton") {
        let mode = singleton
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(mode, "skip" | "cancel") {
            problems.push(format!("invalid singleton mode {mode:?}"));
        }
    }
    if let Some(priority) = function.get("priority") {
        if !priority.get("run").is_some_and(Value::is_string) {
            problems.push("priority.run must be a CEL string".into());
        }
    }
    if let Some(key) = function.get("idempotency") {
        if !key.is_string() {
            problems.push("idempotency must be a CEL string".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_go_duration("1s500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_go_duration("5 minutes"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn crons_need_five_fields() {
        assert!(valid_cron("0 2 * * *"));
        assert!(valid_cron("TZ=Europe/Paris 0 2 * * *"));
        assert!(valid_cron("@daily"));
        assert!(!valid_cron("0 2 * *"));
        assert!(!valid_cron("every day"));
    }
}
