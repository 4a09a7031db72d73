//! Shared fixtures: keys from reference §3.8 and `spawn_app` on 127.0.0.1:0.

use std::time::Duration;

use inngest::{App, Config, SigningKey};

pub const KEY: &str =
    "signkey-test-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const FALLBACK_KEY: &str =
    "signkey-test-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
pub const WRONG_KEY: &str = "signkey-test-00000000000000000000000000000000";
/// Upper bound for awaits on spawned tasks; never hit when things work.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn key() -> SigningKey {
    SigningKey::parse(KEY).unwrap()
}

pub fn fallback_key() -> SigningKey {
    SigningKey::parse(FALLBACK_KEY).unwrap()
}

pub fn wrong_key() -> SigningKey {
    SigningKey::parse(WRONG_KEY).unwrap()
}

/// Cloud-mode config with the §3.8 key, pointing at `api` for API and event calls.
pub fn cloud_config(api: &str) -> Config {
    let mut config = Config::cloud("test-app", key());
    config.api_base_url = api.to_owned();
    config.event_api_base_url = api.to_owned();
    config
}

/// Dev-mode config pointing at `api`.
pub fn dev_config(api: &str) -> Config {
    let mut config = Config::dev("test-app");
    config.api_base_url = api.to_owned();
    config.event_api_base_url = api.to_owned();
    config
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>/api/inngest`
    pub serve_url: String,
    pub http: reqwest::Client,
}

/// Serves `app` on a random port; the listener is bound before spawning, so no waiting.
pub async fn spawn_app(app: &App) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    TestApp {
        serve_url: format!("http://{addr}{}", app.config().serve_path),
        http: reqwest::Client::new(),
    }
}
