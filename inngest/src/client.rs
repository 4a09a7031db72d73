//! Outbound HTTP: event sending (`/e/<key>`) and authenticated Inngest API calls.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, Mode};
use crate::headers;
use crate::types::Event;

/// Connect timeout for all outbound calls; the Inngest API is either up or not.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout; registration and event sends are small.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounded exponential backoff for event sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first.
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts from 100 ms, as the official SDKs do.
    fn default() -> Self {
        Self {
            attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0-based).
    pub fn delay(&self, retry: u32) -> Duration {
        self.initial
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max)
    }
}

/// Why sending events failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no event key configured (INNGEST_EVENT_KEY is required in cloud mode)")]
    MissingEventKey,
    #[error("event API unreachable after {attempts} attempts: {source}")]
    Network {
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("event API answered {status}: {body}")]
    Rejected { status: StatusCode, body: String },
}

/// Why an Inngest API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Inngest API unreachable: {0}")]
    Network(#[from] reqwest::Error),
    #[error("Inngest API answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("Inngest API answered with invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Event and API client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<Config>,
    retry: RetryPolicy,
}

#[derive(Deserialize)]
struct EventApiResponse {
    #[serde(default)]
    ids: Vec<String>,
}

impl Client {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            http,
            config,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the send retry policy (tests use zero delays).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn common_headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let sdk = headers::sdk_header_value();
        let request = request
            .header(headers::SDK, &sdk)
            .header(USER_AGENT, &sdk)
            .header(headers::FRAMEWORK, headers::FRAMEWORK_VALUE)
            .header(headers::REQ_VERSION, headers::REQ_VERSION_VALUE);
        match &self.config.env {
            Some(env) => request.header(headers::ENV, env),
            None => request,
        }
    }

    /// Sends events and returns their server ids. Network errors and 5xx are retried with
    /// backoff; 4xx are not (they will not get better). Give events an id to make resends
    /// idempotent.
    ///
    /// # Errors
    /// [`SendError`] when no key is configured in cloud mode, the API stays unreachable, or it
    /// rejects the events.
    pub async fn send(&self, events: Vec<Event>) -> Result<Vec<String>, SendError> {
        let key = match (&self.config.event_key, self.config.mode) {
            (Some(key), _) => key.expose().to_owned(),
            (None, Mode::Dev) => headers::DEV_EVENT_KEY.to_owned(),
            (None, Mode::Cloud) => return Err(SendError::MissingEventKey),
        };
        let url = format!("{}/e/{key}", self.config.event_api_base_url);
        let mut retry = 0;
        loop {
            let request = self.common_headers(self.http.post(&url)).json(&events);
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let parsed = response.json::<EventApiResponse>().await;
                    return Ok(parsed.map(|r| r.ids).unwrap_or_default());
                }
                Ok(response) if response.status().is_server_error() => Err(SendError::Rejected {
                    status: response.status(),
                    body: response.text().await.unwrap_or_default(),
                }),
                Ok(response) => {
                    return Err(SendError::Rejected {
                        status: response.status(),
                        body: response.text().await.unwrap_or_default(),
                    })
                }
                Err(source) => Err(SendError::Network {
                    attempts: retry + 1,
                    source,
                }),
            };
            if retry + 1 >= self.retry.attempts {
                return outcome;
            }
            if let Err(error) = &outcome {
                tracing::warn!(error = %error, retry, "event send failed; retrying");
            }
            tokio::time::sleep(self.retry.delay(retry)).await;
            retry += 1;
        }
    }

    /// Calls the Inngest API with the hashed signing key, retrying once with the fallback key
    /// on 401/403 (reference §3.7).
    pub(crate) async fn api_request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        extra: &[(&str, String)],
    ) -> Result<(StatusCode, bytes::Bytes), reqwest::Error> {
        let url = format!("{}{path_and_query}", self.config.api_base_url);
        let keys = [
            self.config.signing_key.as_ref(),
            self.config.signing_key_fallback.as_ref(),
        ];
        let mut keys = keys.into_iter().flatten().peekable();
        let mut key = keys.next();
        loop {
            let mut request = self.common_headers(self.http.request(method.clone(), &url));
            for (name, value) in extra {
                request = request.header(*name, value);
            }
            if let Some(key) = key {
                request = request.header(AUTHORIZATION, format!("Bearer {}", key.bearer()));
            }
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await?;
            let status = response.status();
            let auth_failed = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            if auth_failed && keys.peek().is_some() {
                tracing::info!(%status, "Inngest API refused the signing key; trying the fallback key");
                key = keys.next();
                continue;
            }
            return Ok((status, response.bytes().await?));
        }
    }

    /// GET a JSON document from the API (run hydration).
    pub(crate) async fn api_get_json(&self, path: &str) -> Result<Value, ApiError> {
        let (status, body) = self.api_request(Method::GET, path, None, &[]).await?;
        if !status.is_success() {
            return Err(ApiError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(0), Duration::from_millis(100));
        assert_eq!(policy.delay(1), Duration::from_millis(200));
        assert_eq!(policy.delay(10), Duration::from_secs(2));
    }
}
