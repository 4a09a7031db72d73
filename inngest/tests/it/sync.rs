//! PUT sync and the start-up sync.

use inngest::testing::FakeInngestServer;
use inngest::{App, Config, Ctx, Error, Function, SyncBackoff, Trigger};
use serde_json::{json, Value};

use crate::helpers::*;

fn function() -> Function {
    Function::new("hello", "Hello")
        .trigger(Trigger::event("test/hello"))
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) })
}

async fn put(app: &TestApp, query: &str, kind: Option<&str>, signed: bool) -> reqwest::Response {
    let mut request = app.http.put(format!("{}{query}", app.serve_url));
    if let Some(kind) = kind {
        request = request.header("x-inngest-server-kind", kind);
    }
    if signed {
        request = request.header(
            "x-inngest-signature",
            key().sign(b"", inngest::signature::unix_now()),
        );
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_signed_put_syncs_with_the_hashed_key_deploy_id_and_expected_kind() {
    let fake = FakeInngestServer::start_self_hosted(&[key()], "evt").await;
    let mut config = cloud_config(&fake.url());
    config.serve_origin = Some("http://worker:3000".into());
    let app = spawn_app(&App::new(config).register(function())).await;

    let response = put(&app, "?deployId=dep-1", Some("cloud"), true).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-inngest-sync-kind"], "out_of_band");
    assert!(response.headers().contains_key("x-inngest-signature"));
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "Successfully synced.", "modified": true})
    );
    let register = &fake.requests_to("/fn/register")[0];
    assert_eq!(register.query.as_deref(), Some("deployId=dep-1"));
    assert_eq!(
        register.header("authorization"),
        Some(format!("Bearer {}", key().bearer()).as_str())
    );
    assert_eq!(
        register.header("x-inngest-expected-server-kind"),
        Some("cloud")
    );
    assert_eq!(
        register.header("x-inngest-sdk"),
        Some(inngest::headers::sdk_header_value().as_str())
    );
    assert_eq!(register.body["url"], "http://worker:3000/api/inngest");
}

#[tokio::test]
async fn an_unchanged_second_sync_reports_not_modified() {
    let fake = FakeInngestServer::start_dev().await;
    let app = App::new(dev_config(&fake.url())).register(function());

    let first = app.sync("http://w:1/api/inngest").await.unwrap();
    let second = app.sync("http://w:1/api/inngest").await.unwrap();

    assert!(first.modified);
    assert!(!second.modified);
}

#[tokio::test]
async fn the_fallback_key_is_used_when_the_primary_is_refused() {
    let fake = FakeInngestServer::start_self_hosted(&[fallback_key()], "evt").await;
    let mut config = cloud_config(&fake.url());
    config.signing_key_fallback = Some(fallback_key());
    let app = App::new(config).register(function());

    app.sync("http://w:1/api/inngest").await.unwrap();

    let auth: Vec<String> = fake
        .requests_to("/fn/register")
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        auth,
        vec![
            format!("Bearer {}", key().bearer()),
            format!("Bearer {}", fallback_key().bearer())
        ]
    );
}

#[tokio::test]
async fn a_refused_sync_answers_the_put_with_500_and_the_server_message() {
    let fake = FakeInngestServer::start_dev().await;
    let mut config = Config::dev("test-app");
    config.api_base_url = fake.url();
    let app = spawn_app(&App::new(config).register(function())).await;

    let response = put(&app, "", Some("cloud"), false).await;

    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["modified"], false);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Expected server kind dev, got cloud"));
}

#[tokio::test]
async fn a_dev_mode_put_derives_the_serve_url_from_the_host_header() {
    let fake = FakeInngestServer::start_dev().await;
    let app = spawn_app(&App::new(dev_config(&fake.url())).register(function())).await;

    let response = put(&app, "", Some("dev"), false).await;

    assert_eq!(response.status(), 200);
    let register = &fake.requests_to("/fn/register")[0];
    assert_eq!(register.body["url"], app.serve_url);
}

#[tokio::test]
async fn an_unsigned_put_is_refused_in_cloud_mode() {
    let fake = FakeInngestServer::start_self_hosted(&[key()], "evt").await;
    let app = spawn_app(&App::new(cloud_config(&fake.url())).register(function())).await;

    let response = put(&app, "", None, false).await;

    assert_eq!(response.status(), 401);
    assert!(fake.requests_to("/fn/register").is_empty());
}

#[tokio::test]
async fn the_startup_sync_retries_transient_failures_with_backoff() {
    let fake = FakeInngestServer::start_dev().await;
    fake.fail_next_registers(2);
    let app = App::new(dev_config(&fake.url())).register(function());
    let backoff = SyncBackoff {
        initial: std::time::Duration::ZERO,
        max: std::time::Duration::ZERO,
        max_attempts: Some(5),
    };

    let handle = app.spawn_startup_sync("http://w:1/api/inngest", backoff);
    let outcome = tokio::time::timeout(TIMEOUT, handle)
        .await
        .unwrap()
        .unwrap();

    assert!(outcome.unwrap().modified);
    assert_eq!(fake.requests_to("/fn/register").len(), 3);
}

#[tokio::test]
async fn the_startup_sync_stops_on_permanent_errors() {
    let fake = FakeInngestServer::start_self_hosted(&[fallback_key()], "evt").await;
    let app = App::new(cloud_config(&fake.url())).register(function());

    let handle = app.spawn_startup_sync("http://w:1/api/inngest", SyncBackoff::default());
    let outcome = tokio::time::timeout(TIMEOUT, handle)
        .await
        .unwrap()
        .unwrap();

    assert!(!outcome.unwrap_err().is_transient());
    assert_eq!(fake.requests_to("/fn/register").len(), 1);
}
