//! GET introspection bodies (reference §1.2).

use inngest::config::EventKey;
use inngest::testing::FakeInngestServer;
use inngest::{App, Ctx, Error, Function, Trigger};
use serde_json::{json, Value};

use crate::helpers::*;

async fn cloud_app() -> (TestApp, FakeInngestServer) {
    let fake = FakeInngestServer::start_dev().await;
    let mut config = cloud_config(&fake.url());
    config.event_key = Some(EventKey::new("test-event-key"));
    let f = Function::new("hello", "Hello")
        .trigger(Trigger::event("test/hello"))
        .on_failure(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) })
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) });
    (spawn_app(&App::new(config).register(f)).await, fake)
}

#[tokio::test]
async fn an_unsigned_get_in_cloud_mode_answers_the_unauthenticated_body() {
    let (app, _fake) = cloud_app().await;

    let response = app.http.get(&app.serve_url).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-inngest-sdk"));
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "schema_version": "2024-05-24",
            "authentication_succeeded": null,
            "function_count": 2,
            "has_event_key": true,
            "has_signing_key": true,
            "has_signing_key_fallback": false,
            "mode": "cloud",
        })
    );
}

#[tokio::test]
async fn a_badly_signed_get_reports_authentication_failed() {
    let (app, _fake) = cloud_app().await;

    let response = app
        .http
        .get(&app.serve_url)
        .header(
            "x-inngest-signature",
            wrong_key().sign(b"", inngest::signature::unix_now()),
        )
        .send()
        .await
        .unwrap();

    let body: Value = response.json().await.unwrap();
    assert_eq!(body["authentication_succeeded"], false);
    assert!(body.get("app_id").is_none());
}

#[tokio::test]
async fn a_signed_get_answers_the_authenticated_body_signed() {
    let (app, _fake) = cloud_app().await;

    let response = app
        .http
        .get(&app.serve_url)
        .header(
            "x-inngest-signature",
            key().sign(b"", inngest::signature::unix_now()),
        )
        .send()
        .await
        .unwrap();

    let header = response.headers()["x-inngest-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = response.bytes().await.unwrap();
    assert!(inngest::signature::verify(
        &bytes,
        Some(&header),
        Some(&key()),
        None,
        inngest::signature::unix_now()
    )
    .is_ok());
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["authentication_succeeded"], true);
    assert_eq!(body["app_id"], "test-app");
    assert_eq!(
        body["event_key_hash"],
        "5d0ef16ddc80ea26888cd520cffb7b3c118e5c0ddddc278673cfe69e203a093e"
    );
    assert_eq!(
        body["signing_key_hash"],
        "4884fdaafea47c29fea7159d0daddd9c085d6200e1359e85bb81736af6b7c837"
    );
    assert_eq!(body["signing_key_fallback_hash"], Value::Null);
    assert_eq!(body["serve_path"], "/api/inngest");
    assert_eq!(body["framework"], "axum");
    assert_eq!(body["sdk_language"], "rust");
    assert_eq!(body["capabilities"], json!({"trust_probe": "v1"}));
    let allowed = [
        "schema_version",
        "authentication_succeeded",
        "function_count",
        "has_event_key",
        "has_signing_key",
        "has_signing_key_fallback",
        "mode",
        "api_origin",
        "app_id",
        "env",
        "event_api_origin",
        "event_key_hash",
        "framework",
        "sdk_language",
        "sdk_version",
        "serve_origin",
        "serve_path",
        "signing_key_hash",
        "signing_key_fallback_hash",
        "capabilities",
    ];
    for key in body.as_object().unwrap().keys() {
        assert!(allowed.contains(&key.as_str()), "unexpected key {key}");
    }
}
