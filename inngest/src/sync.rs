//! Out-of-band sync: POST the registration payload to `<api>/fn/register` (reference §1.3.1).

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use crate::app::App;
use crate::headers;

/// Result of a successful sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Whether the server changed anything (false when the payload equals the last sync).
    pub modified: bool,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("serve URL {0:?} is not an absolute http(s) URL")]
    InvalidServeUrl(String),
    #[error("Inngest API unreachable: {0}")]
    Network(#[from] reqwest::Error),
    #[error("Inngest API rejected the sync with {status}: {message}")]
    Rejected { status: StatusCode, message: String },
}

impl SyncError {
    /// Worth retrying: the server may come up or recover; 4xx answers will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::InvalidServeUrl(_) => false,
            SyncError::Network(_) => true,
            SyncError::Rejected { status, .. } => status.is_server_error(),
        }
    }
}

/// Capped exponential backoff for the start-up sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncBackoff {
    pub initial: Duration,
    pub max: Duration,
    /// `None` retries until it succeeds or fails permanently.
    pub max_attempts: Option<u32>,
}

impl Default for SyncBackoff {
    /// 500 ms doubling to 30 s, forever: the dev server may start after the worker.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

/// Parameters of one sync besides the app itself.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// Absolute URL the executor must call (no `deployId`).
    pub serve_url: String,
    /// Copied from the incoming PUT onto the register call's query.
    pub deploy_id: Option<String>,
    /// The incoming `X-Inngest-Server-Kind`, forwarded as the expected kind.
    pub server_kind: Option<String>,
}

pub(crate) fn parse_serve_url(serve_url: &str) -> Result<Url, SyncError> {
    let mut url =
        Url::parse(serve_url).map_err(|_| SyncError::InvalidServeUrl(serve_url.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SyncError::InvalidServeUrl(serve_url.to_owned()));
    }
    // The server strips these anyway; never advertise them.
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "deployId" && k != "probe")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    Ok(url)
}

/// The `/fn/register` body (reference §2).
pub(crate) async fn registration_payload(app: &App, serve_url: &Url) -> Value {
    let app_id = &app.config().app_id;
    let mut functions: Vec<Value> = Vec::new();
    for f in app.functions() {
        let triggers = f.current_triggers().await;
        functions.extend(f.registration(app_id, serve_url, &triggers));
    }
    json!({
        "url": serve_url.as_str(),
        "deployType": "ping",
        "appName": app_id,
        "sdk": headers::sdk_payload_value(),
        "v": "0.1",
        "framework": headers::FRAMEWORK_VALUE,
        "capabilities": {"trust_probe": "v1"},
        "functions": functions,
    })
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "message"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_owned))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

pub(crate) async fn sync(app: &App, request: &SyncRequest) -> Result<SyncOutcome, SyncError> {
    let serve_url = parse_serve_url(&request.serve_url)?;
    let payload = registration_payload(app, &serve_url).await;
    let path = match &request.deploy_id {
        Some(id) => {
            let mut query = reqwest::Url::parse("http://x/fn/register")
                .map_err(|_| SyncError::InvalidServeUrl(request.serve_url.clone()))?;
            query.query_pairs_mut().append_pair("deployId", id);
            format!("/fn/register?{}", query.query().unwrap_or_default())
        }
        None => "/fn/register".to_owned(),
    };
    let mut extra = vec![(
        headers::SYNC_KIND,
        headers::SYNC_KIND_OUT_OF_BAND.to_owned(),
    )];
    if let Some(kind) = &request.server_kind {
        extra.push((headers::EXPECTED_SERVER_KIND, kind.clone()));
    }
    let (status, body) = app
        .client()
        .api_request(Method::POST, &path, Some(&payload), &extra)
        .await?;
    if !status.is_success() {
        let message = error_message(&body);
        tracing::warn!(%status, message, "sync rejected");
        return Err(SyncError::Rejected { status, message });
    }
    let modified = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("modified").and_then(Value::as_bool))
        .unwrap_or(false);
    tracing::info!(url = %serve_url, modified, "synced with Inngest");
    Ok(SyncOutcome { modified })
}

pub(crate) async fn sync_with_backoff(
    app: App,
    request: SyncRequest,
    backoff: SyncBackoff,
) -> Result<SyncOutcome, SyncError> {
    let mut attempt = 0u32;
    let mut delay = backoff.initial;
    loop {
        attempt += 1;
        match sync(&app, &request).await {
            Ok(outcome) => return Ok(outcome),
            Err(error)
                if error.is_transient() && backoff.max_attempts.is_none_or(|m| attempt < m) =>
            {
                tracing::warn!(error = %error, attempt, ?delay, "start-up sync failed; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(backoff.max);
            }
            Err(error) => {
                tracing::error!(error = %error, attempt, "start-up sync gave up");
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_urls_must_be_http_and_lose_deploy_id_and_probe() {
        let url = parse_serve_url("http://w:3000/api/inngest?deployId=d&probe=trust&x=1").unwrap();
        assert_eq!(url.as_str(), "http://w:3000/api/inngest?x=1");
        assert!(parse_serve_url("ftp://w/api").is_err());
        assert!(parse_serve_url("/api/inngest").is_err());
    }

    #[test]
    fn error_messages_come_from_error_or_message_fields() {
        assert_eq!(error_message(br#"{"error":"bad"}"#), "bad");
        assert_eq!(error_message(br#"{"message":"worse"}"#), "worse");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
