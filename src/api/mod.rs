//! The REST API of the RiverEdge backup page, under `/api/v1/core/data-backups` (where the
//! current frontend calls) and `/api/v1/system/data-backups` (the original design).
//!
//! | route | what |
//! |---|---|
//! | `POST /` · `GET /` | create (queues `backup/execute`) · list |
//! | `GET /{uuid}` · `DELETE /{uuid}` | detail (restores, chain, progress) · soft delete + files |
//! | `POST /{uuid}/restore` | queues `backup/restore` (`{"confirm": true}` required) |
//! | `GET /{uuid}/download` · `GET /{uuid}/files/{path}` | one zip of the artifact · one file |
//! | `GET /restores` · `GET /restores/{uuid}` | restores |
//! | `GET` · `PUT /policy` | retention and schedules (platform admins) |
//! | `GET /tables` | the tables a `table`-scope backup may name (the page's picker) |
//!
//! Plus `GET /api/openapi.json`. Every route authenticates with RiverEdge's bearer token
//! ([`auth`]); a tenant admin reaches only the tenant's rows, and any other uuid is a 404.

pub mod auth;
pub mod backups;
pub mod download;
pub mod error;
pub mod openapi;
pub mod policy;
pub mod restores;
pub mod tables;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;
use serde_json::Value;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use uuid::Uuid;

use crate::startup::AppState;
use error::{ApiError, FieldError};

/// Sends one event within [`EVENT_SEND_TIMEOUT`]; the error is safe to show and log (no URL,
/// which carries the event key).
///
/// # Errors
/// The reason the event was not accepted.
pub async fn send_event(state: &ApiState, event: inngest::Event) -> Result<(), String> {
    match tokio::time::timeout(EVENT_SEND_TIMEOUT, state.events.send(vec![event])).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(backups::send_failure(&e)),
        Err(_) => Err(format!(
            "Inngest event API did not answer within {}s",
            EVENT_SEND_TIMEOUT.as_secs()
        )),
    }
}

/// The page's base path today.
pub const CORE_PREFIX: &str = "/api/v1/core/data-backups";
/// The original design's base path, served too.
pub const SYSTEM_PREFIX: &str = "/api/v1/system/data-backups";
/// Largest JSON body accepted: requests are a handful of fields; anything bigger is a mistake
/// or an attack, refused (413) as soon as it passes the limit (axum's `DefaultBodyLimit`).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Upper bound for a JSON request's handling. Downloads are exempt: they stream for as long
/// as the client reads.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the Inngest event API before a create or restore gives up and marks its
/// row failed: well inside [`REQUEST_TIMEOUT`], so the row never stays `pending` with no event
/// because the request was cut off.
pub const EVENT_SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest `page_size`; larger requests are clamped (the page asks for 10000 to export).
pub const MAX_PAGE_SIZE: i64 = 1000;

/// Set on every request (and returned) by [`crate::startup::router`]; exposed to browsers.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub app: AppState,
    /// Sends `backup/execute` and `backup/restore`.
    pub events: inngest::client::Client,
    /// `None` while `JWT_SECRET_KEY` is unset: every request is refused (503).
    pub verifier: Option<Arc<auth::Verifier>>,
}

impl ApiState {
    pub fn new(app: AppState) -> Self {
        // Only the event side of the Inngest configuration is used here; signing keys were
        // validated when the Inngest app was built and are not needed to send events.
        let mut inngest = app.settings.inngest.clone();
        inngest.signing_key = None;
        inngest.signing_key_fallback = None;
        let config = crate::jobs::inngest_config(&inngest)
            .unwrap_or_else(|_| inngest::Config::dev(&inngest.app_id));
        // Fewer, shorter retries than a job's: someone is waiting for the answer.
        let events = inngest::App::new(config)
            .client()
            .clone()
            .with_retry_policy(inngest::client::RetryPolicy {
                attempts: 3,
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            });
        let verifier = app
            .settings
            .jwt_secret
            .as_ref()
            .map(|s| Arc::new(auth::Verifier::hs256(s.expose_secret().as_bytes())));
        Self {
            app,
            events,
            verifier,
        }
    }
}

/// The API's routes, mounted under both prefixes, with their layers.
pub fn router(state: AppState) -> Router {
    let state = ApiState::new(state);
    let cors = cors(&state.app.settings.api_cors_origins);
    let json_routes = Router::new()
        .route("/", get(backups::list).post(backups::create))
        .route("/tables", get(tables::list))
        .route("/restores", get(restores::list))
        .route("/restores/{uuid}", get(restores::detail))
        .route("/policy", get(policy::get_policy).put(policy::put_policy))
        .route("/{uuid}", get(backups::detail).delete(backups::delete))
        .route("/{uuid}/restore", axum::routing::post(restores::create))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ));
    let stream_routes = Router::new()
        .route("/{uuid}/download", get(download::download))
        .route("/{uuid}/files/{*path}", get(download::file));
    // Unknown paths and methods under the prefixes answer in our error shape too (FastAPI's
    // `{"detail": "Not Found"}`), not with an empty body.
    let inner: Router<ApiState> = json_routes
        .merge(stream_routes)
        .fallback(|| async { ApiError::NotFound("not found") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    let mut router = Router::new()
        .nest(CORE_PREFIX, inner.clone())
        .nest(SYSTEM_PREFIX, inner)
        .route("/api/openapi.json", get(openapi::serve))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// CORS for the configured RiverEdge origins; `None` when there are none (same-origin only).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::RANGE,
                header::IF_RANGE,
                HeaderName::from_static("x-tenant-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::CONTENT_DISPOSITION,
                header::CONTENT_LENGTH,
                header::CONTENT_RANGE,
                header::ACCEPT_RANGES,
                REQUEST_ID.clone(),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// A JSON body whose problems come back in our error shape: too large → 413, not JSON → 422
/// `json_invalid` (as FastAPI does). The value is checked field by field by the handler, so
/// each 422 names its field.
#[derive(Debug)]
pub struct JsonBody(pub serde_json::Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(BODY_LIMIT)
                } else {
                    ApiError::BadRequest {
                        code: "unreadable_body",
                        detail: "the request body could not be read".to_owned(),
                    }
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(serde_json::Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::Validation(vec![FieldError::new(
                &["body"],
                "Input should be a valid dictionary",
                "dict_type",
            )])),
            Err(e) => Err(ApiError::Validation(vec![FieldError::new(
                &["body", &e.column().to_string()],
                "JSON decode error",
                "json_invalid",
            )])),
        }
    }
}

/// Typed access to a JSON object's fields, collecting FastAPI-style errors.
pub struct Fields<'a> {
    map: &'a serde_json::Map<String, Value>,
    pub errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a serde_json::Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn string(&mut self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.trim().to_owned()),
            _ => {
                self.errors.push(FieldError::new(
                    &["body", name],
                    "Input should be a valid string",
                    "string_type",
                ));
                None
            }
        }
    }

    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.errors.push(FieldError::new(
                    &["body", name],
                    "Input should be a valid boolean",
                    "bool_type",
                ));
                None
            }
        }
    }

    pub fn int(&mut self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Number(n) if n.as_i64().is_some() => n.as_i64(),
            _ => {
                self.errors.push(FieldError::new(
                    &["body", name],
                    "Input should be a valid integer",
                    "int_type",
                ));
                None
            }
        }
    }

    pub fn strings(&mut self, name: &str) -> Option<Vec<String>> {
        match self.get(name)? {
            Value::Array(items) if items.iter().all(Value::is_string) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim().to_owned())
                    .collect(),
            ),
            _ => {
                self.errors.push(FieldError::new(
                    &["body", name],
                    "Input should be a valid list of strings",
                    "list_type",
                ));
                None
            }
        }
    }

    pub fn push(&mut self, name: &str, msg: impl Into<String>) {
        self.errors
            .push(FieldError::new(&["body", name], msg, "value_error"));
    }

    /// # Errors
    /// 422 with every problem found.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// A uuid path segment: malformed ones are a 422 naming the path (FastAPI's behaviour for a
/// `UUID` parameter), so they never reach a query.
///
/// # Errors
/// 422 when `raw` is not a uuid.
pub fn parse_uuid(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::validation(&["path", "uuid"], "Input should be a valid UUID"))
}

/// `page` (≥ 1, default 1) and `page_size` (default 20, clamped to 1..=[`MAX_PAGE_SIZE`]).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: i64,
    pub page_size: i64,
}

impl Page {
    pub fn offset(self) -> i64 {
        (self.page - 1).saturating_mul(self.page_size)
    }
}

/// Query parameters as pairs (repeated keys: the last wins, as in FastAPI for scalars).
pub fn query_pairs(raw: Option<&str>) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// # Errors
/// 422 for non-integer values or `page` < 1.
pub fn parse_page(
    q: &std::collections::HashMap<String, String>,
    errors: &mut Vec<FieldError>,
) -> Page {
    let mut int = |name: &str, default: i64| match q.get(name).map(|s| s.trim()) {
        None | Some("") => default,
        Some(s) => s.parse::<i64>().unwrap_or_else(|_| {
            errors.push(FieldError::new(
                &["query", name],
                "Input should be a valid integer",
                "int_parsing",
            ));
            default
        }),
    };
    let page = int("page", 1);
    let page_size = int("page_size", 20);
    if page < 1 {
        errors.push(FieldError::new(
            &["query", "page"],
            "Input should be greater than or equal to 1",
            "greater_than_equal",
        ));
    }
    Page {
        page: page.max(1),
        page_size: page_size.clamp(1, MAX_PAGE_SIZE),
    }
}

/// `{items, total, page, page_size}`, RiverEdge's list shape.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}
