//! A database restart in the middle of a step: every connection of the worker (its pool, the
//! dump's own sessions) is cut with `admin_shutdown`, as a restarting server does. The step
//! fails as transient, Inngest retries it, and the retry ends with one verified backup: no
//! row stays `running`, no partial file stays, nothing half-written looks complete.

use std::path::Path;
use std::time::{Duration, Instant};

use inngest::testing::RunStatus;
use inngest::Event;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{backup_row, insert_pending, spawn_app, TestDb};

fn partials(storage: &Path) -> usize {
    std::fs::read_dir(storage.join(".partial"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// Cuts every session of the test database but the caller's, as a server restart does.
async fn restart_sessions(db: &TestDb) -> i64 {
    let mut admin = sqlx::PgConnection::connect_with(&db.pool.connect_options())
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_database_restart_mid_dump_is_retried_into_one_verified_backup() {
    let db = TestDb::with_fixture().await;
    db.execute_script(
        "INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type, operation_content)
         SELECT md5(g::text), 3, 1, 'update', repeat(md5(g::text), 8) FROM generate_series(1, 200000) g",
    )
    .await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(&db.pool, Some(3), "tenant", None).await;
    let mut run = app.start(
        "backup-execute",
        Event::new(
            "backup/execute",
            json!({"backup_uuid": uuid, "tenant_id": 3}),
        )
        .with_id("restart-mid-dump"),
    );
    assert!(run.run_until("mark-running").await);

    // The dump call is in flight; restart the database as soon as it writes.
    let storage = app.storage_dir.path().to_path_buf();
    let (advanced, cut) = tokio::join!(run.advance(), async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while partials(&storage) == 0 {
            assert!(Instant::now() < deadline, "the dump never wrote");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        restart_sessions(&db).await
    });
    assert!(advanced);
    assert!(cut > 0, "the dump's sessions were cut");

    let record = run.finish().await;
    let out = match &record.status {
        RunStatus::Completed(v) => v.clone(),
        other => panic!("the run did not recover from the restart: {other:?}"),
    };
    // A step's failure is a `StepError` op; without `X-Inngest-No-Retry: true` Inngest retries.
    let errors: Vec<_> = record
        .calls
        .iter()
        .filter(|c| c.ops.iter().any(|op| op["op"] == "StepError"))
        .collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|c| c.no_retry != Some(true)),
        "the cut step failed as retriable: {:?}",
        errors.iter().map(|c| &c.ops).collect::<Vec<_>>()
    );
    assert_eq!(out["status"], "success");
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!(row.status, "success");
    assert!(row.error_message.is_none());
    assert_eq!(partials(&storage), 0, "no partial file outlives the retry");
    let verified = riveredge_backup::artifact::verify(
        app.state.storage.as_ref(),
        &app.state.bins,
        &uuid,
        row.checksum.as_deref(),
        Duration::from_secs(60),
    )
    .await
    .expect("the retried backup verifies");
    assert!(verified.rows > 200_000);
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM root_data_backups WHERE status = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(running, 0);
}
