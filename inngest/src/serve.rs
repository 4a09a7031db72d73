//! The axum endpoint: GET introspection, PUT sync, POST execution (reference §1), with
//! signature verification in extractors over the raw body bytes.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::FutureExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::app::App;
use crate::config::Mode;
use crate::error::Retry;
use crate::function::HandlerFn;
use crate::headers;
use crate::signature::{self, KeyUsed, SignatureError, SigningKey};
use crate::step::{self, CallInput, CallOutcome};
use crate::sync::SyncRequest;
use crate::types::{CallRequest, Event};

/// Largest accepted request body. The executor switches to `use_api` above 4 MiB, so this
/// leaves headroom without letting arbitrary callers buffer unbounded bodies.
pub const MAX_REQUEST_BODY: usize = 8 * 1024 * 1024;

pub(crate) fn router(app: App) -> Router {
    let path = app.config().serve_path.clone();
    Router::new()
        .route(&path, get(introspect).put(put_sync).post(call))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::map_response(sdk_headers))
        .with_state(app)
}

/// Adds the headers every SDK answer must carry (the executor rejects 2xx answers without
/// `X-Inngest-SDK`), including on rejections produced by extractors.
async fn sdk_headers(mut response: Response) -> Response {
    let sdk = HeaderValue::from_str(&headers::sdk_header_value())
        .unwrap_or_else(|_| HeaderValue::from_static("riveredge/inngest-rs:v0"));
    let map = response.headers_mut();
    map.insert(HeaderName::from_static(headers::SDK), sdk.clone());
    map.insert(USER_AGENT, sdk);
    map.insert(
        HeaderName::from_static(headers::REQ_VERSION),
        HeaderValue::from_static(headers::REQ_VERSION_VALUE),
    );
    map.insert(
        HeaderName::from_static(headers::FRAMEWORK),
        HeaderValue::from_static(headers::FRAMEWORK_VALUE),
    );
    map.insert(
        HeaderName::from_static(headers::SDK_HANDLED),
        HeaderValue::from_static("true"),
    );
    if !map.contains_key(CONTENT_TYPE) {
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

/// Outcome of checking `X-Inngest-Signature`.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Verified with this key; responses are signed with it.
    Verified(SigningKey),
    /// No signature header.
    Unsigned,
    /// A signature was present and did not verify.
    Failed(SignatureError),
}

/// The raw body with its signature check; never rejects (GET reports failures in its body).
pub(crate) struct Signed {
    body: Bytes,
    headers: HeaderMap,
    auth: Auth,
}

impl FromRequest<App> for Signed {
    type Rejection = Response;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let header = headers
            .get(headers::SIGNATURE)
            .map(|v| v.to_str().unwrap_or_default());
        let config = app.config();
        let auth = match header {
            None => Auth::Unsigned,
            Some(header) => {
                let primary = config.signing_key.as_ref();
                let fallback = config.signing_key_fallback.as_ref();
                match signature::verify(
                    &body,
                    Some(header),
                    primary,
                    fallback,
                    signature::unix_now(),
                ) {
                    Ok(KeyUsed::Primary) => primary.cloned().map_or(Auth::Unsigned, Auth::Verified),
                    Ok(KeyUsed::Fallback) => {
                        fallback.cloned().map_or(Auth::Unsigned, Auth::Verified)
                    }
                    Err(error) => Auth::Failed(error),
                }
            }
        };
        Ok(Self {
            body,
            headers,
            auth,
        })
    }
}

/// A request allowed to act: verified in cloud mode, anything in dev mode (the dev server
/// never signs). Rejects with 401 otherwise.
pub(crate) struct Authorized(Signed);

impl FromRequest<App> for Authorized {
    type Rejection = Response;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let signed = Signed::from_request(req, app).await?;
        if app.config().mode == Mode::Dev {
            return Ok(Self(signed));
        }
        let error = match &signed.auth {
            Auth::Verified(_) => return Ok(Self(signed)),
            Auth::Unsigned if app.config().signing_key.is_none() => SignatureError::NoSigningKey,
            Auth::Unsigned => SignatureError::MissingHeader,
            Auth::Failed(error) => error.clone(),
        };
        tracing::warn!(error = %error, "rejected a request with an invalid signature");
        Err(json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"code": "sig_verification_failed", "message": "Unauthorized"}),
            &[],
        ))
    }
}

fn json_response(status: StatusCode, body: &Value, extra: &[(&'static str, String)]) -> Response {
    let mut response = (status, body.to_string()).into_response();
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A complete answer before it is written (plainly or inside a stream).
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: StatusCode, body: &Value) -> Self {
        Self {
            status,
            body: body.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn no_retry(self, no_retry: bool) -> Self {
        self.header(headers::NO_RETRY, no_retry.to_string())
    }

    /// Signs the exact body bytes with the key that verified the request.
    fn signed(self, key: Option<&SigningKey>) -> Self {
        match key {
            Some(key) => {
                let signature = key.sign_now(&self.body);
                self.header(headers::SIGNATURE, signature)
            }
            None => self,
        }
    }

    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    /// The 201 streaming wrapper's final document (`{"status","body","headers"}`); `body` is
    /// the JSON text as a string, as the Python SDK sends it.
    fn into_stream_document(self) -> Vec<u8> {
        let mut headers = serde_json::Map::new();
        headers.insert("Content-Type".into(), json!("application/json"));
        for (name, value) in self.headers {
            headers.insert(name.into(), json!(value));
        }
        json!({
            "status": self.status.as_u16(),
            "body": String::from_utf8_lossy(&self.body),
            "headers": headers,
        })
        .to_string()
        .into_bytes()
    }
}

fn verified_key(auth: &Auth) -> Option<&SigningKey> {
    match auth {
        Auth::Verified(key) => Some(key),
        _ => None,
    }
}

// ---------------------------------------------------------------- GET

async fn introspect(State(app): State<App>, signed: Signed) -> Response {
    let config = app.config();
    let authenticated = matches!(signed.auth, Auth::Verified(_));
    let succeeded = match &signed.auth {
        Auth::Verified(_) => json!(true),
        Auth::Failed(_) => json!(false),
        Auth::Unsigned => Value::Null,
    };
    let mut body = json!({
        "schema_version": headers::INTROSPECTION_SCHEMA,
        "authentication_succeeded": succeeded,
        "function_count": app.function_count(),
        "has_event_key": config.event_key.is_some(),
        "has_signing_key": config.signing_key.is_some(),
        "has_signing_key_fallback": config.signing_key_fallback.is_some(),
        "mode": config.mode.as_str(),
    });
    if authenticated {
        let serve_origin = config
            .serve_origin
            .clone()
            .or_else(|| request_origin(&signed.headers));
        let extra = json!({
            "api_origin": config.api_base_url,
            "app_id": config.app_id,
            "env": config.env,
            "event_api_origin": config.event_api_base_url,
            "event_key_hash": config.event_key.as_ref().map(|k| signature::sha256_hex(k.expose())),
            "framework": headers::FRAMEWORK_VALUE,
            "sdk_language": headers::SDK_LANGUAGE,
            "sdk_version": headers::SDK_VERSION,
            "serve_origin": serve_origin,
            "serve_path": config.serve_path,
            "signing_key_hash": config.signing_key.as_ref().map(SigningKey::hash),
            "signing_key_fallback_hash": config.signing_key_fallback.as_ref().map(SigningKey::hash),
            "capabilities": {"trust_probe": "v1"},
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
    }
    Answer::json(StatusCode::OK, &body)
        .signed(verified_key(&signed.auth))
        .into_response()
}

/// `scheme://host` of the request, honouring reverse-proxy headers.
fn request_origin(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = get("x-forwarded-host").or_else(|| get(HOST.as_str()))?;
    let scheme = get("x-forwarded-proto").unwrap_or("http");
    Some(format!("{scheme}://{host}"))
}

// ---------------------------------------------------------------- PUT

#[derive(Debug, Deserialize)]
struct SyncQuery {
    #[serde(rename = "deployId")]
    deploy_id: Option<String>,
}

async fn put_sync(
    State(app): State<App>,
    Query(query): Query<SyncQuery>,
    Authorized(signed): Authorized,
) -> Response {
    let config = app.config();
    let serve_url = config.configured_serve_url().or_else(|| {
        request_origin(&signed.headers).map(|origin| format!("{origin}{}", config.serve_path))
    });
    let key = verified_key(&signed.auth);
    let Some(serve_url) = serve_url else {
        return Answer::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"message": "cannot determine the serve URL; set INNGEST_SERVE_ORIGIN", "modified": false}),
        )
        .signed(key)
        .into_response();
    };
    let server_kind = signed
        .headers
        .get(headers::SERVER_KIND)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request = SyncRequest {
        serve_url,
        deploy_id: query.deploy_id,
        server_kind,
    };
    let answer = match app.sync_with(&request).await {
        Ok(outcome) => Answer::json(
            StatusCode::OK,
            &json!({"message": "Successfully synced.", "modified": outcome.modified}),
        ),
        Err(error) => Answer::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"message": error.to_string(), "modified": false}),
        ),
    };
    answer
        .header(headers::SYNC_KIND, headers::SYNC_KIND_OUT_OF_BAND)
        .signed(key)
        .into_response()
}

// ---------------------------------------------------------------- POST

#[derive(Debug, Deserialize)]
struct CallQuery {
    #[serde(rename = "fnId")]
    fn_id: Option<String>,
    #[serde(rename = "stepId")]
    step_id: Option<String>,
    probe: Option<String>,
}

async fn call(
    State(app): State<App>,
    Query(query): Query<CallQuery>,
    Authorized(signed): Authorized,
) -> Response {
    let key = verified_key(&signed.auth).cloned();
    if let Some(probe) = &query.probe {
        let answer = if probe == "trust" {
            Answer::json(StatusCode::OK, &json!({}))
        } else {
            Answer::json(
                StatusCode::BAD_REQUEST,
                &json!({"code": "unknown_probe", "message": format!("unknown probe {probe:?}")}),
            )
        };
        return answer.signed(key.as_ref()).into_response();
    }
    let answer = prepare_call(&app, &query, &signed.body).await;
    let (input, handler) = match answer {
        Ok(prepared) => prepared,
        Err(answer) => return answer.signed(key.as_ref()).into_response(),
    };
    let span = tracing::info_span!(
        "inngest.call",
        fn_id = %input.fn_id,
        step_id = %input.step_id,
        run_id = %input.request.ctx.run_id,
        attempt = input.request.ctx.attempt,
    );
    let client = app.client().clone();
    let run = async move { outcome_answer(step::execute(&handler, input, client).await) }
        .instrument(span);
    if app.config().streaming {
        return stream_answer(run.boxed(), key, app.config().streaming_keepalive);
    }
    run.await.signed(key.as_ref()).into_response()
}

async fn prepare_call(
    app: &App,
    query: &CallQuery,
    body: &[u8],
) -> Result<(CallInput, HandlerFn), Answer> {
    let requested = query.fn_id.clone().unwrap_or_default();
    let Some(resolved) = app.resolve(&requested) else {
        return Err(unknown_function(&requested));
    };
    let mut request: CallRequest = serde_json::from_slice(body).map_err(|e| {
        Answer::json(
            StatusCode::BAD_REQUEST,
            &json!({"name": "InvalidRequest", "message": format!("malformed call request: {e}")}),
        )
        .no_retry(true)
    })?;
    if request.ctx.use_api || request.use_api {
        hydrate(app, &mut request).await.map_err(|message| {
            Answer::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"name": "HydrationError", "message": message}),
            )
            .no_retry(false)
        })?;
    }
    let step_id = query
        .step_id
        .clone()
        .or_else(|| request.ctx.step_id.clone())
        .unwrap_or_else(|| headers::DISCOVERY_STEP_ID.to_owned());
    let input = CallInput {
        request,
        fn_id: resolved.id,
        step_id,
        max_attempts: resolved.max_attempts,
    };
    Ok((input, resolved.handler))
}

fn unknown_function(fn_id: &str) -> Answer {
    Answer::json(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"name": "FunctionNotFound", "message": format!("no function with id {fn_id:?} is registered in this app")}),
    )
    .no_retry(false)
}

/// Loads events and memoized steps from the API when the request body was too large to send
/// them inline (reference §1.4.4).
async fn hydrate(app: &App, request: &mut CallRequest) -> Result<(), String> {
    let run_id = &request.ctx.run_id;
    let batch = app
        .client()
        .api_get_json(&format!("/v0/runs/{run_id}/batch"))
        .await
        .map_err(|e| format!("loading the event batch failed: {e}"))?;
    let actions = app
        .client()
        .api_get_json(&format!("/v0/runs/{run_id}/actions"))
        .await
        .map_err(|e| format!("loading step results failed: {e}"))?;
    let events: Vec<Event> =
        serde_json::from_value(batch).map_err(|e| format!("invalid event batch: {e}"))?;
    request.steps =
        serde_json::from_value(actions).map_err(|e| format!("invalid step results: {e}"))?;
    request.event = events.first().cloned().or(request.event.take());
    request.events = events;
    Ok(())
}

fn outcome_answer(outcome: CallOutcome) -> Answer {
    match outcome {
        CallOutcome::Complete(value) => Answer::json(StatusCode::OK, &value),
        CallOutcome::FunctionError(error) => {
            let body = serde_json::to_value(error.to_body()).unwrap_or(Value::Null);
            tracing::warn!(error = %error, "function failed");
            match error.retry() {
                Retry::Retriable => {
                    Answer::json(StatusCode::INTERNAL_SERVER_ERROR, &body).no_retry(false)
                }
                Retry::After(delay) => Answer::json(StatusCode::INTERNAL_SERVER_ERROR, &body)
                    .no_retry(false)
                    .header(headers::RETRY_AFTER, retry_after_value(delay)),
                Retry::NonRetriable | Retry::StepFailed => {
                    Answer::json(StatusCode::BAD_REQUEST, &body).no_retry(true)
                }
            }
        }
        CallOutcome::Ops { ops, retry } => {
            let body = serde_json::to_value(&ops).unwrap_or(Value::Null);
            let answer = Answer::json(StatusCode::PARTIAL_CONTENT, &body);
            match retry {
                None => answer,
                Some(Retry::Retriable) => answer.no_retry(false),
                Some(Retry::After(delay)) => answer
                    .no_retry(false)
                    .header(headers::RETRY_AFTER, retry_after_value(delay)),
                Some(Retry::NonRetriable | Retry::StepFailed) => answer.no_retry(true),
            }
        }
        CallOutcome::StepNotFound { requested, found } => {
            tracing::warn!(requested, ?found, "targeted step not found");
            Answer::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({
                    "error": format!("Could not find step {requested:?} to run; the function may have changed since the step was planned"),
                    "requestedStep": requested,
                    "foundSteps": found,
                    "totalFoundSteps": found.len(),
                }),
            )
            .no_retry(false)
        }
    }
}

/// Whole seconds, at least 1 (the executor clamps to [1 s, 24 h] anyway).
fn retry_after_value(delay: Duration) -> String {
    delay.as_secs().max(1).to_string()
}

/// 201 with whitespace keep-alives while the call runs, then the wrapped final answer
/// (reference §4.3). Dropping the response (executor gone) drops and cancels the call.
fn stream_answer(
    run: futures::future::BoxFuture<'static, Answer>,
    key: Option<SigningKey>,
    keepalive: Duration,
) -> Response {
    let mut ticker = tokio::time::interval(keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(Some((run, ticker, key)), |state| async move {
        let (mut run, mut ticker, key) = state?;
        tokio::select! {
            answer = &mut run => {
                let document = answer.signed(key.as_ref()).into_stream_document();
                Some((Ok::<_, Infallible>(Bytes::from(document)), None))
            }
            _ = ticker.tick() => Some((Ok(Bytes::from_static(b" ")), Some((run, ticker, key)))),
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::CREATED;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_value(Duration::from_millis(10)), "1");
        assert_eq!(retry_after_value(Duration::from_secs(90)), "90");
    }

    #[test]
    fn request_origin_prefers_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("worker:3000"));
        assert_eq!(
            request_origin(&headers).as_deref(),
            Some("http://worker:3000")
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("example.com"));
        assert_eq!(
            request_origin(&headers).as_deref(),
            Some("https://example.com")
        );
    }
}
