//! The registration payload against the fake server's copy of the dev server's rules (§2.3).

use std::time::Duration;

use inngest::testing::{validate_registration, FakeInngestServer};
use inngest::{
    App, Cancel, Concurrency, ConcurrencyScope, Ctx, Debounce, Error, Function, RateLimit,
    Singleton, SingletonMode, Throttle, Timeouts, Trigger,
};
use serde_json::{json, Value};

use crate::helpers::*;

fn backup_function() -> Function {
    Function::new("backup-execute", "Execute backup")
        .trigger(Trigger::event("backup/execute"))
        .trigger(Trigger::event_if(
            "database/backup.requested",
            "event.data.x != null",
        ))
        .trigger(Trigger::cron("0 2 * * *"))
        .retries(3)
        .concurrency(vec![
            Concurrency::new(4),
            Concurrency::new(1)
                .key("event.data.tenant_id")
                .scope(ConcurrencyScope::Env),
        ])
        .idempotency("event.data.backup_uuid")
        .rate_limit(RateLimit {
            limit: 10,
            period: Duration::from_secs(3600),
            key: None,
        })
        .throttle(Throttle {
            limit: 5,
            period: Duration::from_secs(60),
            burst: Some(2),
            key: None,
        })
        .debounce(Debounce {
            period: Duration::from_secs(5),
            key: Some("event.data.id".into()),
            timeout: None,
        })
        .cancel(Cancel::on("backup/cancel").when("event.data.id == async.data.id"))
        .timeouts(Timeouts {
            start: Some(Duration::from_secs(600)),
            finish: Some(Duration::from_secs(7200)),
        })
        .priority("event.data.priority")
        .singleton(Singleton {
            key: Some("event.data.tenant_id".into()),
            mode: SingletonMode::Skip,
        })
        .on_failure(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) })
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) })
}

async fn synced_payload(function: Function) -> Value {
    let fake = FakeInngestServer::start_dev().await;
    let app = App::new(dev_config(&fake.url())).register(function);
    let outcome = app.sync("http://worker:3000/api/inngest").await.unwrap();
    assert!(outcome.modified);
    fake.requests_to("/fn/register").remove(0).body
}

#[tokio::test]
async fn the_full_backup_function_registers_and_passes_validation() {
    let payload = synced_payload(backup_function()).await;

    assert_eq!(validate_registration(&payload), Vec::<String>::new());
    assert_eq!(payload["appName"], "test-app");
    assert_eq!(payload["url"], "http://worker:3000/api/inngest");
    assert_eq!(payload["deployType"], "ping");
    assert_eq!(payload["v"], "0.1");
    assert_eq!(payload["framework"], "axum");
    assert!(payload["sdk"].as_str().unwrap().starts_with("rust:v"));
    let main = &payload["functions"][0];
    assert_eq!(main["id"], "test-app-backup-execute");
    assert_eq!(main["name"], "Execute backup");
    assert_eq!(
        main["steps"]["step"]["runtime"]["url"],
        "http://worker:3000/api/inngest?fnId=test-app-backup-execute&stepId=step"
    );
    assert_eq!(main["steps"]["step"]["retries"]["attempts"], 3);
    assert_eq!(
        main["triggers"],
        json!([
            {"event": "backup/execute"},
            {"event": "database/backup.requested", "expression": "event.data.x != null"},
            {"cron": "0 2 * * *"},
        ])
    );
    assert_eq!(
        main["concurrency"][1],
        json!({"limit": 1, "key": "event.data.tenant_id", "scope": "env"})
    );
    assert_eq!(main["idempotency"], "event.data.backup_uuid");
    assert_eq!(main["rateLimit"], json!({"limit": 10, "period": "1h"}));
    assert_eq!(
        main["throttle"],
        json!({"limit": 5, "period": "1m", "burst": 2})
    );
    assert_eq!(
        main["debounce"],
        json!({"period": "5s", "key": "event.data.id"})
    );
    assert_eq!(
        main["cancel"],
        json!([{"event": "backup/cancel", "if": "event.data.id == async.data.id"}])
    );
    assert_eq!(main["timeouts"], json!({"start": "10m", "finish": "2h"}));
    assert_eq!(main["priority"], json!({"run": "event.data.priority"}));
    assert_eq!(
        main["singleton"],
        json!({"key": "event.data.tenant_id", "mode": "skip"})
    );
}

#[tokio::test]
async fn the_failure_handler_is_registered_as_a_separate_function() {
    let payload = synced_payload(backup_function()).await;

    let failure = &payload["functions"][1];
    assert_eq!(failure["id"], "test-app-backup-execute-failure");
    assert_eq!(failure["name"], "Execute backup (failure)");
    assert_eq!(
        failure["triggers"],
        json!([{
            "event": "inngest/function.failed",
            "expression": "event.data.function_id == 'test-app-backup-execute'"
        }])
    );
    assert_eq!(
        failure["steps"]["step"]["runtime"]["url"],
        "http://worker:3000/api/inngest?fnId=test-app-backup-execute-failure&stepId=step"
    );
}

#[tokio::test]
async fn an_empty_name_falls_back_to_the_slug_and_omitted_retries_stay_omitted() {
    let f = Function::new("nameless", "")
        .trigger(Trigger::cron("*/5 * * * *"))
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) });

    let payload = synced_payload(f).await;

    assert_eq!(payload["functions"][0]["name"], "nameless");
    assert!(payload["functions"][0]["steps"]["step"]
        .get("retries")
        .is_none());
    assert_eq!(
        payload["functions"][0]["triggers"],
        json!([{"cron": "*/5 * * * *"}])
    );
}

#[tokio::test]
async fn the_fake_server_rejects_payloads_the_dev_server_would_reject() {
    let fake = FakeInngestServer::start_dev().await;
    let bad_cron = Function::new("bad", "Bad")
        .trigger(Trigger::cron("every day"))
        .trigger(Trigger::event("a"))
        .trigger(Trigger::event("a"))
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) });
    let app = App::new(dev_config(&fake.url())).register(bad_cron);

    let error = app
        .sync("http://worker:3000/api/inngest")
        .await
        .unwrap_err();

    assert!(
        error
            .to_string()
            .contains("At least one function is invalid"),
        "{error}"
    );
    let problems = validate_registration(&fake.requests_to("/fn/register")[0].body);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn validation_catches_missing_names_extra_steps_and_bad_flow_control() {
    let payload = json!({
        "appName": "a", "url": "http://w/api/inngest",
        "functions": [{
            "id": "a-f", "name": "",
            "steps": {"step": {"runtime": {"url": "ftp://w"}, "retries": {"attempts": 21}}, "other": {}},
            "triggers": [{"event": ""}],
            "concurrency": [{"limit": 1, "scope": "account"}, {"limit": 1}, {"limit": 1}],
            "debounce": {"period": "0s"},
            "rateLimit": {"limit": 0, "period": "48h"},
        }]
    });
    let problems = validate_registration(&payload);
    for expected in [
        "A function name is required",
        "exactly one step",
        "invalid trigger",
        "at most 2 concurrency",
        "require a key",
        "debounce.period",
        "rateLimit.limit",
        "rateLimit.period",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}

#[tokio::test]
async fn triggers_from_a_source_are_read_at_every_sync() {
    use std::sync::{Arc, Mutex};
    let cron = Arc::new(Mutex::new("0 2 * * *".to_owned()));
    let source = Arc::clone(&cron);
    let f = Function::new("daily", "Daily")
        .trigger(Trigger::event("test/daily"))
        .triggers_from(move || {
            let cron = source.lock().unwrap().clone();
            async move { vec![Trigger::cron(cron), Trigger::event("test/daily")] }
        })
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) });
    let fake = FakeInngestServer::start_dev().await;
    let app = App::new(dev_config(&fake.url())).register(f);

    app.sync("http://worker:3000/api/inngest").await.unwrap();
    *cron.lock().unwrap() = "TZ=Asia/Shanghai 30 3 * * *".to_owned();
    app.sync("http://worker:3000/api/inngest").await.unwrap();

    let bodies: Vec<Value> = fake
        .requests_to("/fn/register")
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies.len(), 2);
    for body in &bodies {
        assert_eq!(validate_registration(body), Vec::<String>::new());
    }
    assert_eq!(
        bodies[0]["functions"][0]["triggers"],
        json!([{"event": "test/daily"}, {"cron": "0 2 * * *"}]),
        "static triggers first, duplicates dropped"
    );
    assert_eq!(
        bodies[1]["functions"][0]["triggers"],
        json!([{"event": "test/daily"}, {"cron": "TZ=Asia/Shanghai 30 3 * * *"}])
    );
}
