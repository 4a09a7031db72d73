//! Step engine end to end under the test executor.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inngest::step::hash_step_id;
use inngest::testing::{FakeInngestServer, RunStatus, TestExecutor};
use inngest::{App, Config, Ctx, Error, Event, Function, Trigger};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::helpers::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Dump {
    bytes: u64,
}

#[derive(Default)]
struct Counters {
    one: AtomicU32,
    two: AtomicU32,
    three: AtomicU32,
    two_attempts: Mutex<Vec<u32>>,
}

fn three_steps(counters: Arc<Counters>) -> Function {
    Function::new("three", "Three steps")
        .trigger(Trigger::event("test/three"))
        .retries(3)
        .handler(move |ctx: Ctx| {
            let counters = Arc::clone(&counters);
            async move {
                let label = format!("run {}", ctx.run_id);
                let first: Dump = ctx
                    .step
                    .run("one", || async {
                        counters.one.fetch_add(1, Ordering::SeqCst);
                        // Borrowing from the handler scope is allowed: no 'static bound.
                        assert!(label.starts_with("run "));
                        Ok::<_, Error>(Dump { bytes: 10 })
                    })
                    .await?;
                let second: u64 = ctx
                    .step
                    .run("two", || async {
                        counters.two_attempts.lock().unwrap().push(ctx.attempt);
                        if counters.two.fetch_add(1, Ordering::SeqCst) < 2 {
                            return Err(Error::retriable("flaky"));
                        }
                        Ok(first.bytes * 2)
                    })
                    .await?;
                let third: String = ctx
                    .step
                    .run("three", || async {
                        counters.three.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Error>(format!("{second}"))
                    })
                    .await?;
                Ok(json!({ "first": first.bytes, "second": second, "third": third }))
            }
        })
}

async fn serve(config: Config, functions: Vec<Function>) -> TestApp {
    let app = functions.into_iter().fold(App::new(config), App::register);
    spawn_app(&app).await
}

#[tokio::test]
async fn three_steps_with_a_flaky_one_complete_and_run_each_body_once_per_attempt() {
    let fake = FakeInngestServer::start_dev().await;
    let counters = Arc::new(Counters::default());
    let app = serve(
        cloud_config(&fake.url()),
        vec![three_steps(Arc::clone(&counters))],
    )
    .await;
    let executor = TestExecutor::new(&app.serve_url, Some(key()));

    let run = executor
        .run(
            "test-app-three",
            Event::new("test/three", json!({})),
            Some(4),
        )
        .await;

    assert_eq!(
        run.status,
        RunStatus::Completed(json!({"first": 10, "second": 20, "third": "20"}))
    );
    assert_eq!(counters.one.load(Ordering::SeqCst), 1);
    assert_eq!(counters.two.load(Ordering::SeqCst), 3);
    assert_eq!(counters.three.load(Ordering::SeqCst), 1);
    assert_eq!(*counters.two_attempts.lock().unwrap(), vec![0, 1, 2]);
    let ops: Vec<(u32, &str)> = run
        .calls
        .iter()
        .map(|c| {
            (
                c.attempt,
                c.ops.first().and_then(|o| o["op"].as_str()).unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            (0, "StepRun"),
            (0, "StepError"),
            (1, "StepError"),
            (2, "StepRun"),
            (0, "StepRun"),
            (0, "-"),
        ]
    );
    assert_eq!(
        run.steps[&hash_step_id("one")],
        json!({"data": {"bytes": 10}})
    );
    assert!(run.calls.iter().all(|c| c.step_id == "step"));
}

#[tokio::test]
async fn a_step_failing_on_its_last_attempt_becomes_step_failed_and_fails_the_run_without_retry() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("doomed", "Doomed")
        .trigger(Trigger::event("test/doomed"))
        .retries(1)
        .handler(|ctx: Ctx| async move {
            ctx.step
                .run("fail", || async {
                    Err::<u32, _>(Error::retriable("always"))
                })
                .await?;
            Ok(json!(null))
        });
    let app = serve(dev_config(&fake.url()), vec![f]).await;

    let run = TestExecutor::new(&app.serve_url, None)
        .run(
            "test-app-doomed",
            Event::new("test/doomed", json!({})),
            Some(2),
        )
        .await;

    let ops: Vec<&str> = run
        .calls
        .iter()
        .filter_map(|c| c.ops.first()?["op"].as_str())
        .collect();
    assert_eq!(ops, vec!["StepError", "StepFailed"]);
    let last = run.calls.last().unwrap();
    assert_eq!((last.http_status, last.no_retry), (400, Some(true)));
    assert!(matches!(run.status, RunStatus::Failed(ref body) if body["message"] == "always"));
}

#[tokio::test]
async fn a_caught_memoized_step_error_lets_the_function_continue() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("recover", "Recover")
        .trigger(Trigger::event("test/recover"))
        .handler(|ctx: Ctx| async move {
            let outcome = ctx
                .step
                .run("bad", || async {
                    Err::<u32, _>(Error::non_retriable("nope"))
                })
                .await;
            let failed = outcome.as_ref().is_err_and(|e| e.is_step_failure());
            Ok::<_, Error>(json!({ "caught": failed }))
        });
    let app = serve(dev_config(&fake.url()), vec![f]).await;

    let run = TestExecutor::new(&app.serve_url, None)
        .run(
            "test-app-recover",
            Event::new("test/recover", json!({})),
            None,
        )
        .await;

    assert_eq!(run.status, RunStatus::Completed(json!({"caught": true})));
    assert_eq!(run.calls[0].ops[0]["op"], "StepFailed");
    assert_eq!(run.calls[0].no_retry, Some(true));
}

#[tokio::test]
async fn function_level_errors_map_to_status_no_retry_and_retry_after() {
    let fake = FakeInngestServer::start_dev().await;
    let make = |slug: &'static str, error: fn() -> Error| {
        Function::new(slug, slug)
            .trigger(Trigger::event("test/err"))
            .handler(move |_ctx: Ctx| async move { Err::<Value, _>(error()) })
    };
    let app = serve(
        dev_config(&fake.url()),
        vec![
            make("fatal", || Error::non_retriable("bad input")),
            make("later", || {
                Error::retry_after("rate limited", Duration::from_secs(30))
            }),
            make("flaky", || Error::retriable("try again")),
        ],
    )
    .await;
    let executor = TestExecutor::new(&app.serve_url, None);
    let event = || Event::new("test/err", json!({}));

    let fatal = executor.run("test-app-fatal", event(), Some(3)).await;
    let later = executor.run("test-app-later", event(), Some(2)).await;
    let flaky = executor.run("test-app-flaky", event(), Some(3)).await;

    assert_eq!(fatal.calls.len(), 1);
    assert_eq!(
        (fatal.calls[0].http_status, fatal.calls[0].no_retry),
        (400, Some(true))
    );
    assert_eq!(
        fatal.calls[0].body,
        json!({"name": "NonRetriableError", "message": "bad input"})
    );
    assert_eq!(later.calls.len(), 2);
    assert_eq!(later.calls[0].retry_after.as_deref(), Some("30"));
    assert_eq!(
        (later.calls[0].http_status, later.calls[0].no_retry),
        (500, Some(false))
    );
    let attempts: Vec<u32> = flaky.calls.iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, vec![0, 1, 2]);
    assert!(matches!(flaky.status, RunStatus::Failed(_)));
}

#[tokio::test]
async fn a_memoized_step_error_escaping_the_handler_is_non_retriable() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("escape", "Escape")
        .trigger(Trigger::event("test/escape"))
        .handler(|ctx: Ctx| async move {
            ctx.step
                .run("bad", || async {
                    Err::<u32, _>(Error::non_retriable("gone"))
                })
                .await?;
            Ok(json!("unreachable"))
        });
    let app = serve(dev_config(&fake.url()), vec![f]).await;

    let run = TestExecutor::new(&app.serve_url, None)
        .run(
            "test-app-escape",
            Event::new("test/escape", json!({})),
            Some(5),
        )
        .await;

    assert_eq!(run.calls.len(), 2);
    assert_eq!(
        (run.calls[1].http_status, run.calls[1].no_retry),
        (400, Some(true))
    );
    assert!(matches!(run.status, RunStatus::Failed(ref b) if b["message"] == "gone"));
}

#[tokio::test]
async fn parallel_steps_are_planned_then_targeted_then_joined() {
    let fake = FakeInngestServer::start_dev().await;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&runs);
    let f = Function::new("fan", "Fan out")
        .trigger(Trigger::event("test/fan"))
        .handler(move |ctx: Ctx| {
            let counter = Arc::clone(&counter);
            async move {
                let (a, b) = futures::join!(
                    ctx.step.run("a", || async {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Error>(1)
                    }),
                    ctx.step.run("b", || async {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Error>(2)
                    }),
                );
                let sum: u32 = a? + b?;
                let after: u32 = ctx
                    .step
                    .run("after", || async { Ok::<_, Error>(sum * 10) })
                    .await?;
                Ok(json!(after))
            }
        });
    let app = serve(cloud_config(&fake.url()), vec![f]).await;

    let run = TestExecutor::new(&app.serve_url, Some(key()))
        .run("test-app-fan", Event::new("test/fan", json!({})), None)
        .await;

    assert_eq!(run.status, RunStatus::Completed(json!(30)));
    let first: Vec<&str> = run.calls[0]
        .ops
        .iter()
        .filter_map(|o| o["op"].as_str())
        .collect();
    assert_eq!(first, vec!["StepPlanned", "StepPlanned"]);
    assert_eq!(run.calls[1].step_id, hash_step_id("a"));
    assert_eq!(run.calls[2].step_id, hash_step_id("b"));
    assert_eq!(run.calls[1].ops[0]["op"], "StepRun");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn repeated_step_ids_get_numbered_suffixes() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("loop", "Loop")
        .trigger(Trigger::event("test/loop"))
        .handler(|ctx: Ctx| async move {
            let mut total = 0;
            for i in 0..3u32 {
                total += ctx
                    .step
                    .run("item", || async move { Ok::<_, Error>(i) })
                    .await?;
            }
            Ok(json!(total))
        });
    let app = serve(dev_config(&fake.url()), vec![f]).await;

    let run = TestExecutor::new(&app.serve_url, None)
        .run("test-app-loop", Event::new("test/loop", json!({})), None)
        .await;

    assert_eq!(run.status, RunStatus::Completed(json!(3)));
    for id in ["item", "item:1", "item:2"] {
        assert!(run.steps.contains_key(&hash_step_id(id)), "{id}");
    }
}

#[tokio::test]
async fn sleep_and_send_event_are_durable() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("notify", "Notify")
        .trigger(Trigger::event("test/notify"))
        .handler(|ctx: Ctx| async move {
            ctx.step.sleep("wait", Duration::from_secs(90)).await?;
            let ids = ctx
                .step
                .send_event(
                    "send",
                    vec![Event::new("test/done", json!({"ok": true})).with_id("done-1")],
                )
                .await?;
            Ok(json!(ids))
        });
    let app = serve(dev_config(&fake.url()), vec![f]).await;

    let run = TestExecutor::new(&app.serve_url, None)
        .run(
            "test-app-notify",
            Event::new("test/notify", json!({})),
            None,
        )
        .await;

    let sleep = &run.calls[0].ops[0];
    assert_eq!(sleep["op"], "Sleep");
    assert_eq!(sleep["id"], hash_step_id("wait"));
    assert_eq!(sleep["opts"]["duration"], "1m30s");
    assert_eq!(sleep["name"], "1m30s");
    assert!(matches!(&run.status, RunStatus::Completed(Value::Array(ids)) if ids.len() == 1));
    let sent = fake.requests_to("/e/NO_EVENT_KEY_SET");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body[0]["id"], "done-1");
}

#[tokio::test]
async fn disable_immediate_execution_plans_even_a_single_step() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("single", "Single")
        .trigger(Trigger::event("test/single"))
        .handler(|ctx: Ctx| async move {
            let v: u32 = ctx.step.run("only", || async { Ok::<_, Error>(7) }).await?;
            Ok(json!(v))
        });
    let app = serve(dev_config(&fake.url()), vec![f]).await;
    let body = json!({
        "event": {"name": "test/single", "data": {}},
        "events": [], "steps": {},
        "ctx": {"run_id": "r", "attempt": 0, "max_attempts": 3, "disable_immediate_execution": true},
    });

    let response = app
        .http
        .post(format!(
            "{}?fnId=test-app-single&stepId=step",
            app.serve_url
        ))
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 206);
    let ops: Value = response.json().await.unwrap();
    assert_eq!(
        ops,
        json!([{"id": hash_step_id("only"), "op": "StepPlanned", "name": "only", "displayName": "only"}])
    );
}

#[tokio::test]
async fn an_unknown_target_step_answers_500_without_a_step_not_found_op() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("single", "Single")
        .trigger(Trigger::event("test/single"))
        .handler(|ctx: Ctx| async move {
            let v: u32 = ctx.step.run("only", || async { Ok::<_, Error>(7) }).await?;
            Ok(json!(v))
        });
    let app = serve(dev_config(&fake.url()), vec![f]).await;
    let body =
        json!({"event": {"name": "test/single", "data": {}}, "steps": {}, "ctx": {"run_id": "r"}});

    let response = app
        .http
        .post(format!(
            "{}?fnId=test-app-single&stepId=deadbeef",
            app.serve_url
        ))
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-inngest-no-retry"], "false");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["requestedStep"], "deadbeef");
    assert_eq!(answer["foundSteps"], json!([hash_step_id("only")]));
}

#[tokio::test]
async fn unknown_functions_and_malformed_bodies_are_reported() {
    let fake = FakeInngestServer::start_dev().await;
    let app = serve(dev_config(&fake.url()), vec![three_steps(Arc::default())]).await;
    let unknown = app
        .http
        .post(format!("{}?fnId=test-app-nope&stepId=step", app.serve_url))
        .body("{}")
        .send()
        .await
        .unwrap();
    let malformed = app
        .http
        .post(format!("{}?fnId=test-app-three&stepId=step", app.serve_url))
        .body("{not json")
        .send()
        .await
        .unwrap();

    assert_eq!(unknown.status(), 500);
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["x-inngest-no-retry"], "true");
    for response in [&unknown, &malformed] {
        assert!(response.headers()["x-inngest-sdk"]
            .to_str()
            .unwrap()
            .starts_with("riveredge/inngest-rs:v"));
        assert_eq!(response.headers()["x-inngest-req-version"], "2");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["x-inngest-framework"], "axum");
    }
}

#[tokio::test]
async fn use_api_hydrates_events_and_steps_from_the_api_with_the_hashed_key() {
    let fake = FakeInngestServer::start_self_hosted(&[key()], "evt").await;
    let counters = Arc::new(Counters::default());
    let app = serve(
        cloud_config(&fake.url()),
        vec![three_steps(Arc::clone(&counters))],
    )
    .await;

    let run = TestExecutor::new(&app.serve_url, Some(key()))
        .use_api(fake.clone())
        .run_id("01HYDRATE")
        .run(
            "test-app-three",
            Event::new("test/three", json!({})),
            Some(4),
        )
        .await;

    assert!(
        matches!(run.status, RunStatus::Completed(_)),
        "{:?}",
        run.status
    );
    assert_eq!(counters.one.load(Ordering::SeqCst), 1);
    let batch = fake.requests_to("/v0/runs/01HYDRATE/batch");
    assert_eq!(batch.len(), run.calls.len());
    assert_eq!(
        batch[0].header("authorization"),
        Some(format!("Bearer {}", key().bearer()).as_str())
    );
    assert_eq!(
        fake.requests_to("/v0/runs/01HYDRATE/actions").len(),
        run.calls.len()
    );
}

#[tokio::test]
async fn failed_hydration_answers_500() {
    let fake = FakeInngestServer::start_dev().await;
    let app = serve(dev_config(&fake.url()), vec![three_steps(Arc::default())]).await;
    let body = json!({"event": {"name": "x", "data": {}}, "ctx": {"run_id": "missing", "use_api": true}, "use_api": true});

    let response = app
        .http
        .post(format!("{}?fnId=test-app-three&stepId=step", app.serve_url))
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-inngest-no-retry"], "false");
}

#[tokio::test]
async fn streaming_mode_answers_201_and_the_executor_unwraps_it() {
    let fake = FakeInngestServer::start_dev().await;
    let counters = Arc::new(Counters::default());
    let mut config = cloud_config(&fake.url());
    config.streaming = true;
    config.streaming_keepalive = Duration::from_millis(5);
    let app = serve(config, vec![three_steps(Arc::clone(&counters))]).await;

    let run = TestExecutor::new(&app.serve_url, Some(key()))
        .run(
            "test-app-three",
            Event::new("test/three", json!({})),
            Some(4),
        )
        .await;

    assert!(
        matches!(run.status, RunStatus::Completed(_)),
        "{:?}",
        run.status
    );
    assert!(run.calls.iter().all(|c| c.streamed));
    assert_eq!(run.calls[1].no_retry, Some(false));
    assert_eq!(counters.two.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_trust_probe_answers_a_signed_200_and_unknown_probes_400() {
    let fake = FakeInngestServer::start_dev().await;
    let app = serve(cloud_config(&fake.url()), vec![three_steps(Arc::default())]).await;
    let signature = key().sign(b"", inngest::signature::unix_now());

    let trust = app
        .http
        .post(format!("{}?probe=trust", app.serve_url))
        .header("x-inngest-signature", &signature)
        .send()
        .await
        .unwrap();
    let other = app
        .http
        .post(format!("{}?probe=other", app.serve_url))
        .header("x-inngest-signature", &signature)
        .send()
        .await
        .unwrap();
    let unsigned = app
        .http
        .post(format!("{}?probe=trust", app.serve_url))
        .send()
        .await
        .unwrap();

    assert_eq!(trust.status(), 200);
    let header = trust.headers()["x-inngest-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = trust.bytes().await.unwrap();
    assert!(inngest::signature::verify(
        &body,
        Some(&header),
        Some(&key()),
        None,
        inngest::signature::unix_now()
    )
    .is_ok());
    assert_eq!(other.status(), 400);
    assert_eq!(unsigned.status(), 401);
}

#[tokio::test]
async fn the_failure_handler_runs_as_its_own_function() {
    let fake = FakeInngestServer::start_dev().await;
    let f = Function::new("main", "Main")
        .trigger(Trigger::event("test/main"))
        .on_failure(|ctx: Ctx| async move {
            Ok::<_, Error>(json!({ "failed_fn": ctx.event.data["function_id"], "fn": ctx.fn_id }))
        })
        .handler(|_ctx: Ctx| async move { Ok::<_, Error>(json!(null)) });
    let app = serve(dev_config(&fake.url()), vec![f]).await;
    let failed = Event::new(
        "inngest/function.failed",
        json!({"function_id": "test-app-main", "error": {"message": "x"}}),
    );

    let run = TestExecutor::new(&app.serve_url, None)
        .run("test-app-main-failure", failed, None)
        .await;

    assert_eq!(
        run.status,
        RunStatus::Completed(json!({"failed_fn": "test-app-main", "fn": "test-app-main-failure"}))
    );
}
