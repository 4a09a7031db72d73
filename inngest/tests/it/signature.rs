//! Signature vectors (reference §3.8) and every verification failure, end to end.

use inngest::signature::{self, sha256_hex, unix_now, KeyUsed, SignatureError};
use inngest::testing::FakeInngestServer;
use inngest::{App, Ctx, Error, Function, SigningKey, Trigger};
use serde_json::{json, Value};

use crate::helpers::*;

const BODY: &str = r#"{"ctx":{"attempt":0,"disable_immediate_execution":false,"env":"","fn_id":"6d9f2b1e-1c6a-5f5e-9a0e-3f0a1b2c3d4e","max_attempts":5,"qi_id":"","run_id":"01HMCW5X3Q8ZK2V9J6Y4T7R1PA","stack":{"current":0,"stack":[]},"step_id":"step","use_api":false},"defers":{},"event":{"data":{"msg":"hi"},"id":"01HMCW5WZ7D3N0Q1B2C3D4E5F6","name":"test/hello","ts":1705586500000,"user":{}},"events":[{"data":{"msg":"hi"},"id":"01HMCW5WZ7D3N0Q1B2C3D4E5F6","name":"test/hello","ts":1705586500000,"user":{}}],"steps":{},"use_api":false,"version":-1}"#;
const T: u64 = 1_705_586_504;

#[test]
fn the_reference_request_signature_reproduces_exactly() {
    assert_eq!(BODY.len(), 526);
    assert_eq!(
        key().sign(BODY.as_bytes(), T),
        "t=1705586504&s=1b4b876f35f25f1079f0c93ffed8286fab7591591c6436277f05f593e57c5fbc"
    );
    let header = key().sign(BODY.as_bytes(), T);
    assert_eq!(
        signature::verify(BODY.as_bytes(), Some(&header), Some(&key()), None, T),
        Ok(KeyUsed::Primary)
    );
}

#[test]
fn the_negative_controls_do_not_verify() {
    for wrong in [
        "c40916e37cfe1fba061ce0446f101c07982174568086bd4e83b2ae00c81c503f",
        "ca3857ca5f8d169ec22ad57bc0f59a152353a4188e83d04d89520c21efb3a325",
    ] {
        let header = format!("t={T}&s={wrong}");
        assert_eq!(
            signature::verify(BODY.as_bytes(), Some(&header), Some(&key()), None, T),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn the_empty_body_get_and_response_signatures_reproduce_exactly() {
    assert_eq!(
        key().sign(b"", T),
        "t=1705586504&s=f50e5ea5f302c1169ecdd56d32442898524a4a7aa2e47e99180ab291b39b31cc"
    );
    let response = r#"[{"id":"efec2b2037910199abcc3c58998255afa3066709","op":"StepRun","name":"first-step","displayName":"first-step","data":"A"}]"#;
    assert_eq!(
        key().sign(response.as_bytes(), 1_705_586_505),
        "t=1705586505&s=f3cf19c272f4a0ea5153f00a95940b4bf04f4606ee5ea8a9243f7be7ed71930b"
    );
}

#[test]
fn the_bearer_and_hashes_reproduce_exactly() {
    assert_eq!(
        key().bearer(),
        "signkey-test-4884fdaafea47c29fea7159d0daddd9c085d6200e1359e85bb81736af6b7c837"
    );
    assert_eq!(
        SigningKey::parse("signkey-prod-12345678").unwrap().bearer(),
        "signkey-prod-b2ed992186a5cb19f6668aade821f502c1d00970dfd0e35128d51bac4649916c"
    );
    assert_eq!(
        sha256_hex("test-event-key"),
        "5d0ef16ddc80ea26888cd520cffb7b3c118e5c0ddddc278673cfe69e203a093e"
    );
}

#[test]
fn stale_and_future_timestamps_are_rejected_in_both_directions() {
    let header = key().sign(BODY.as_bytes(), T);
    let verify = |now| signature::verify(BODY.as_bytes(), Some(&header), Some(&key()), None, now);
    assert_eq!(verify(T + 300), Ok(KeyUsed::Primary));
    assert_eq!(verify(T - 300), Ok(KeyUsed::Primary));
    assert_eq!(verify(T + 301), Err(SignatureError::Expired(301)));
    assert_eq!(verify(T - 301), Err(SignatureError::FromTheFuture(301)));
}

#[test]
fn the_fallback_key_is_tried_after_the_primary() {
    let header = fallback_key().sign(BODY.as_bytes(), T);
    assert_eq!(
        signature::verify(
            BODY.as_bytes(),
            Some(&header),
            Some(&key()),
            Some(&fallback_key()),
            T
        ),
        Ok(KeyUsed::Fallback)
    );
    assert_eq!(
        signature::verify(BODY.as_bytes(), Some(&header), Some(&key()), None, T),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn any_flipped_byte_in_the_body_fails_verification() {
    let header = key().sign(BODY.as_bytes(), T);
    for i in 0..BODY.len() {
        let mut tampered = BODY.as_bytes().to_vec();
        tampered[i] ^= 0x01;
        assert_eq!(
            signature::verify(&tampered, Some(&header), Some(&key()), None, T),
            Err(SignatureError::Mismatch),
            "byte {i}"
        );
    }
}

#[test]
fn missing_header_and_missing_key_are_distinct_failures() {
    assert_eq!(
        signature::verify(b"", None, Some(&key()), None, T),
        Err(SignatureError::MissingHeader)
    );
    assert_eq!(
        signature::verify(b"", Some("t=1&s=ab"), None, None, T),
        Err(SignatureError::NoSigningKey)
    );
}

async fn cloud_app() -> (TestApp, FakeInngestServer) {
    let fake = FakeInngestServer::start_dev().await;
    let mut config = cloud_config(&fake.url());
    config.signing_key_fallback = Some(fallback_key());
    let f = Function::new("hello", "Hello")
        .trigger(Trigger::event("test/hello"))
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!("hi")) });
    (spawn_app(&App::new(config).register(f)).await, fake)
}

async fn post(app: &TestApp, body: &str, signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}?fnId=test-app-hello&stepId=step", app.serve_url))
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("x-inngest-signature", signature);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn cloud_mode_rejects_every_bad_signature_with_401() {
    let (app, _fake) = cloud_app().await;
    let body = BODY.to_owned();
    let now = unix_now();
    let cases = [
        ("missing", None),
        ("malformed", Some("t=abc&s=zz".to_owned())),
        ("stale", Some(key().sign(body.as_bytes(), now - 301))),
        ("future", Some(key().sign(body.as_bytes(), now + 301))),
        ("wrong key", Some(wrong_key().sign(body.as_bytes(), now))),
        ("other body", Some(key().sign(b"{}", now))),
    ];
    for (case, signature) in cases {
        let response = post(&app, &body, signature).await;
        assert_eq!(response.status(), 401, "{case}");
        assert!(response.headers().contains_key("x-inngest-sdk"), "{case}");
    }
}

#[tokio::test]
async fn cloud_mode_accepts_primary_and_fallback_keys_and_signs_the_answer_with_them() {
    let (app, _fake) = cloud_app().await;
    for signer in [key(), fallback_key()] {
        let response = post(&app, BODY, Some(signer.sign(BODY.as_bytes(), unix_now()))).await;
        assert_eq!(response.status(), 200);
        let header = response.headers()["x-inngest-signature"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.bytes().await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!("hi"));
        assert!(signature::verify(&body, Some(&header), Some(&signer), None, unix_now()).is_ok());
    }
}

#[tokio::test]
async fn a_forged_dev_server_kind_header_does_not_disable_verification() {
    let (app, _fake) = cloud_app().await;
    let response = app
        .http
        .post(format!("{}?fnId=test-app-hello&stepId=step", app.serve_url))
        .header("x-inngest-server-kind", "dev")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn dev_mode_runs_unsigned_requests() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("hello", "Hello")
        .trigger(Trigger::event("test/hello"))
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!("hi")) });
    let app = spawn_app(&App::new(dev_config(&fake.url())).register(f)).await;
    let response = post(&app, BODY, None).await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("x-inngest-signature"));
}
