//! The event client: `/e/<key>`, ids, bounded retries on 5xx only.

use std::time::Duration;

use inngest::config::EventKey;
use inngest::testing::FakeInngestServer;
use inngest::{App, Event, RetryPolicy, SendError};
use serde_json::json;

use crate::helpers::*;

fn no_wait(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial: Duration::ZERO,
        max: Duration::ZERO,
    }
}

#[tokio::test]
async fn events_are_sent_with_the_key_and_ids_and_5xx_is_retried() {
    let fake = FakeInngestServer::start_self_hosted(&[key()], "evt").await;
    fake.fail_next_event_sends(2);
    let mut config = cloud_config(&fake.url());
    config.event_key = Some(EventKey::new("evt"));
    let client = App::new(config)
        .client()
        .clone()
        .with_retry_policy(no_wait(5));

    let ids = client
        .send(vec![
            Event::new("backup/done", json!({"n": 1})).with_id("backup-1")
        ])
        .await
        .unwrap();

    assert_eq!(ids.len(), 1);
    let sent = fake.requests_to("/e/evt");
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[2].body,
        json!([{"id": "backup-1", "name": "backup/done", "data": {"n": 1}}])
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_retries_are_bounded() {
    let fake = FakeInngestServer::start_self_hosted(&[key()], "evt").await;
    let mut config = cloud_config(&fake.url());
    config.event_key = Some(EventKey::new("wrong"));
    let client = App::new(config.clone())
        .client()
        .clone()
        .with_retry_policy(no_wait(5));

    let refused = client
        .send(vec![Event::new("a/b", json!({}))])
        .await
        .unwrap_err();

    assert!(matches!(refused, SendError::Rejected { status, .. } if status == 401));
    assert_eq!(fake.requests_to("/e/wrong").len(), 1);

    fake.fail_next_event_sends(10);
    config.event_key = Some(EventKey::new("evt"));
    let client = App::new(config)
        .client()
        .clone()
        .with_retry_policy(no_wait(3));
    let exhausted = client
        .send(vec![Event::new("a/b", json!({}))])
        .await
        .unwrap_err();
    assert!(matches!(exhausted, SendError::Rejected { status, .. } if status == 500));
    assert_eq!(fake.requests_to("/e/evt").len(), 3);
}

#[tokio::test]
async fn cloud_mode_without_an_event_key_refuses_to_send() {
    let fake = FakeInngestServer::start_dev().await;
    let client = App::new(cloud_config(&fake.url())).client().clone();

    let error = client
        .send(vec![Event::new("a/b", json!({}))])
        .await
        .unwrap_err();

    assert!(matches!(error, SendError::MissingEventKey));
    assert!(fake.requests().is_empty());
}
