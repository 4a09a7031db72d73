//! The fake Inngest API: registration, the event API and run state for `use_api`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::{lock, validate_registration};
use crate::headers;
use crate::signature::{sha256_hex, SigningKey};

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
