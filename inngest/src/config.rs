//! SDK configuration: an explicit struct the application fills, plus [`Config::from_env`].
//!
//! Dev or cloud mode comes only from here (`INNGEST_DEV`), never from request headers: a
//! forged `X-Inngest-Server-Kind` must not switch signature verification off.

use std::fmt;
use std::time::Duration;

use crate::signature::{InvalidSigningKey, SigningKey};

/// Default dev server origin (`inngest dev`).
pub const DEV_ORIGIN: &str = "http://localhost:8288";
/// Inngest Cloud API origin.
pub const CLOUD_API_ORIGIN: &str = "https://api.inngest.com";
/// Inngest Cloud event API origin.
pub const CLOUD_EVENT_API_ORIGIN: &str = "https://inn.gs";
/// Default serve path; also one of the paths dev-server discovery probes.
pub const DEFAULT_SERVE_PATH: &str = "/api/inngest";
/// Streaming keep-alive interval; well under common 60 s proxy idle timeouts.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);

/// Which kind of Inngest server this worker talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `inngest dev`: requests are not signed and not verified.
    Dev,
    /// Inngest Cloud or self-hosted `inngest start`: every POST/PUT must be signed.
    Cloud,
}

impl Mode {
    /// The wire name (`dev` / `cloud`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dev => "dev",
            Mode::Cloud => "cloud",
        }
    }
}

/// An event key for `POST /e/<key>`. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct EventKey(String);

impl EventKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The raw key; only for building the event URL.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventKey(<redacted>)")
    }
}

/// Everything the SDK needs; secrets are redacted in `Debug`.
#[derive(Debug, Clone)]
pub struct Config {
    /// App id; prefix of every composite function id (`<app_id>-<slug>`). Must be non-empty.
    pub app_id: String,
    pub mode: Mode,
    /// Origin of the Inngest API (`/fn/register`, `/v0/runs/...`), without trailing slash.
    pub api_base_url: String,
    /// Origin of the event API (`/e/<key>`), without trailing slash.
    pub event_api_base_url: String,
    pub signing_key: Option<SigningKey>,
    /// Tried when the primary key fails, so keys can be rotated without downtime.
    pub signing_key_fallback: Option<SigningKey>,
    /// Required in cloud mode to send events; the dev server accepts a placeholder.
    pub event_key: Option<EventKey>,
    /// Branch environment, sent as `X-Inngest-Env`.
    pub env: Option<String>,
    /// Origin the executor must call (e.g. `http://worker:3000` inside Docker). When unset, a
    /// PUT sync derives it from the request's `Host`.
    pub serve_origin: Option<String>,
    pub serve_path: String,
    /// Answer executions with a 201 stream of keep-alive whitespace, so long steps are not cut
    /// off by idle timeouts of proxies or load balancers in between.
    pub streaming: bool,
    /// Interval between keep-alive bytes when streaming.
    pub streaming_keepalive: Duration,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("the app id must not be empty")]
    EmptyAppId,
    #[error("{var} is not a valid signing key: {source}")]
    SigningKey {
        var: &'static str,
        source: InvalidSigningKey,
    },
    #[error("{var} must be an http(s) URL, got {value:?}")]
    InvalidUrl { var: &'static str, value: String },
    #[error("{var} must be a boolean, got {value:?}")]
    InvalidBool { var: &'static str, value: String },
    #[error("cloud mode requires INNGEST_SIGNING_KEY (set INNGEST_DEV=1 for the dev server)")]
    MissingSigningKey,
}

impl Config {
    /// Dev-mode defaults for `app_id`, talking to `inngest dev` on localhost.
    pub fn dev(app_id: impl Into<String>) -> Self {
        Self::with_mode(app_id, Mode::Dev)
    }

    /// Cloud-mode defaults; set [`Config::signing_key`] before serving.
    pub fn cloud(app_id: impl Into<String>, signing_key: SigningKey) -> Self {
        let mut config = Self::with_mode(app_id, Mode::Cloud);
        config.signing_key = Some(signing_key);
        config
    }

    fn with_mode(app_id: impl Into<String>, mode: Mode) -> Self {
        let (api, events) = match mode {
            Mode::Dev => (DEV_ORIGIN, DEV_ORIGIN),
            Mode::Cloud => (CLOUD_API_ORIGIN, CLOUD_EVENT_API_ORIGIN),
        };
        Self {
            app_id: app_id.into(),
            mode,
            api_base_url: api.to_owned(),
            event_api_base_url: events.to_owned(),
            signing_key: None,
            signing_key_fallback: None,
            event_key: None,
            env: None,
            serve_origin: None,
            serve_path: DEFAULT_SERVE_PATH.to_owned(),
            streaming: false,
            streaming_keepalive: DEFAULT_KEEPALIVE,
        }
    }

    /// Reads the standard `INNGEST_*` variables (reference §6.1) for the given app id.
    ///
    /// # Errors
    /// See [`Config::from_lookup`].
    pub fn from_env(app_id: impl Into<String>) -> Result<Self, ConfigError> {
        Self::from_lookup(app_id, |name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`] over any variable source, so tests need not touch the
    /// process environment. Origins: `INNGEST_API_BASE_URL` / `INNGEST_EVENT_API_BASE_URL`
    /// beat `INNGEST_BASE_URL`, which beats an `INNGEST_DEV` URL, which beats the mode default.
    ///
    /// # Errors
    /// Empty app id, unparsable keys, URLs or booleans, and cloud mode without a signing key.
    pub fn from_lookup(
        app_id: impl Into<String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let (mode, dev_url) = match get("INNGEST_DEV") {
            None => (Mode::Cloud, None),
            Some(value) if is_url(&value) => (Mode::Dev, Some(trim_slash(&value))),
            Some(value) => match parse_bool("INNGEST_DEV", &value)? {
                true => (Mode::Dev, None),
                false => (Mode::Cloud, None),
            },
        };
        let mut config = Self::with_mode(app_id, mode);
        if config.app_id.trim().is_empty() {
            return Err(ConfigError::EmptyAppId);
        }
        let base = url_var(&get, "INNGEST_BASE_URL")?;
        if let Some(origin) = url_var(&get, "INNGEST_API_BASE_URL")?
            .or_else(|| base.clone())
            .or_else(|| dev_url.clone())
        {
            config.api_base_url = origin;
        }
        if let Some(origin) = url_var(&get, "INNGEST_EVENT_API_BASE_URL")?
            .or(base)
            .or(dev_url)
        {
            config.event_api_base_url = origin;
        }
        config.signing_key = key_var(&get, "INNGEST_SIGNING_KEY")?;
        config.signing_key_fallback = key_var(&get, "INNGEST_SIGNING_KEY_FALLBACK")?;
        config.event_key = get("INNGEST_EVENT_KEY").map(EventKey::new);
        config.env = get("INNGEST_ENV");
        config.serve_origin = url_var(&get, "INNGEST_SERVE_ORIGIN")?;
        if let Some(path) = get("INNGEST_SERVE_PATH") {
            config.serve_path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
        }
        if let Some(value) = get("INNGEST_STREAMING") {
            // JS accepts "allow"/"force" as enabling values.
            config.streaming = matches!(value.as_str(), "allow" | "force")
                || parse_bool("INNGEST_STREAMING", &value)?;
        }
        if config.mode == Mode::Cloud && config.signing_key.is_none() {
            return Err(ConfigError::MissingSigningKey);
        }
        Ok(config)
    }

    /// The URL the executor should call, if it can be known without a request.
    pub fn configured_serve_url(&self) -> Option<String> {
        self.serve_origin
            .as_ref()
            .map(|origin| format!("{}{}", trim_slash(origin), self.serve_path))
    }
}

fn is_url(value: &str) -> bool {
    value.starts_with("http://") || value.starts_with("https://")
}

fn trim_slash(value: &str) -> String {
    value.trim_end_matches('/').to_owned()
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::InvalidBool {
            var,
            value: value.to_owned(),
        }),
    }
}

fn url_var(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<String>, ConfigError> {
    match get(var) {
        None => Ok(None),
        Some(value) if is_url(&value) => Ok(Some(trim_slash(&value))),
        Some(value) => Err(ConfigError::InvalidUrl { var, value }),
    }
}

fn key_var(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<SigningKey>, ConfigError> {
    get(var)
        .map(|raw| {
            SigningKey::parse(&raw).map_err(|source| ConfigError::SigningKey { var, source })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup("app", move |name| map.get(name).cloned())
    }

    #[test]
    fn no_inngest_dev_means_cloud_and_cloud_requires_a_signing_key() {
        assert_eq!(load(&[]).unwrap_err(), ConfigError::MissingSigningKey);
        let config = load(&[("INNGEST_SIGNING_KEY", "signkey-prod-abcd")]).unwrap();
        assert_eq!(config.mode, Mode::Cloud);
        assert_eq!(config.api_base_url, CLOUD_API_ORIGIN);
        assert_eq!(config.event_api_base_url, CLOUD_EVENT_API_ORIGIN);
    }

    #[test]
    fn inngest_dev_accepts_truthy_values_urls_and_explicit_false() {
        assert_eq!(load(&[("INNGEST_DEV", "1")]).unwrap().mode, Mode::Dev);
        let url = load(&[("INNGEST_DEV", "http://inngest:8288/")]).unwrap();
        assert_eq!(url.mode, Mode::Dev);
        assert_eq!(url.api_base_url, "http://inngest:8288");
        assert_eq!(url.event_api_base_url, "http://inngest:8288");
        let forced = load(&[("INNGEST_DEV", "false"), ("INNGEST_SIGNING_KEY", "ab")]).unwrap();
        assert_eq!(forced.mode, Mode::Cloud);
        assert!(matches!(
            load(&[("INNGEST_DEV", "maybe")]),
            Err(ConfigError::InvalidBool { .. })
        ));
    }

    #[test]
    fn specific_origins_beat_base_url_which_beats_the_dev_url() {
        let config = load(&[
            ("INNGEST_DEV", "http://dev:1"),
            ("INNGEST_BASE_URL", "http://base:2"),
            ("INNGEST_EVENT_API_BASE_URL", "http://events:3"),
        ])
        .unwrap();
        assert_eq!(config.api_base_url, "http://base:2");
        assert_eq!(config.event_api_base_url, "http://events:3");
    }

    #[test]
    fn serve_settings_and_secrets_are_read_and_secrets_are_redacted() {
        let config = load(&[
            ("INNGEST_DEV", "1"),
            ("INNGEST_EVENT_KEY", "super-secret-event-key"),
            ("INNGEST_SIGNING_KEY", "signkey-test-abcdef"),
            ("INNGEST_SERVE_ORIGIN", "http://worker:3000/"),
            ("INNGEST_SERVE_PATH", "x/inngest"),
            ("INNGEST_STREAMING", "force"),
            ("INNGEST_ENV", "branch-1"),
        ])
        .unwrap();
        assert_eq!(
            config.configured_serve_url().as_deref(),
            Some("http://worker:3000/x/inngest")
        );
        assert!(config.streaming);
        assert_eq!(config.env.as_deref(), Some("branch-1"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("super-secret"));
        assert!(!shown.contains("abcdef"));
    }

    #[test]
    fn invalid_values_are_reported_with_their_variable() {
        assert!(matches!(
            load(&[("INNGEST_DEV", "1"), ("INNGEST_SIGNING_KEY", "not-hex")]),
            Err(ConfigError::SigningKey {
                var: "INNGEST_SIGNING_KEY",
                ..
            })
        ));
        assert!(matches!(
            load(&[
                ("INNGEST_DEV", "1"),
                ("INNGEST_SERVE_ORIGIN", "worker:3000")
            ]),
            Err(ConfigError::InvalidUrl { .. })
        ));
        assert_eq!(
            Config::from_lookup(" ", |_| Some("1".into())).unwrap_err(),
            ConfigError::EmptyAppId
        );
    }
}
