//! Backups end to end through the Inngest protocol: a signed executor drives the worker's
//! `backup-execute` function exactly as the Inngest server would, and the tests look only at
//! what an operator sees: the row, the files, and what a restore of them gives back.

use serde_json::json;

use crate::helpers::{
    all_checksums, assert_completed, assert_failed, backup_row, insert_pending, pg_bin_dir_with,
    sha256_file, spawn_app, TestDb,
};

const FN: &str = "backup-execute";

#[tokio::test]
async fn a_backup_execute_event_for_a_pending_row_ends_in_success_with_a_verified_artifact() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(&db.pool, Some(1), "tenant", None).await;

    let run = app
        .run(
            FN,
            "backup/execute",
            json!({"tenant_id": 1, "backup_id": uuid}),
        )
        .await;

    assert_completed(&run);
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!(row.status, "success");
    assert_eq!(
        row.file_path,
        Some(format!("{uuid}/")),
        "file_path is the artifact's storage prefix"
    );
    assert_eq!(row.inngest_run_id.as_deref(), Some(run.run_id.as_str()));
    assert!(row.started_at.is_some() && row.completed_at >= row.started_at);
    let manifest = app.storage_dir.path().join(&uuid).join("manifest.json");
    assert_eq!(
        Some(sha256_file(&manifest)),
        row.checksum,
        "the row pins the manifest"
    );
    let files = app.artifact_files(&uuid);
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(row.file_size, Some(total as i64));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for entry in doc["tables"].as_array().unwrap() {
        let file = app.storage_dir.path().join(entry["key"].as_str().unwrap());
        assert_eq!(
            sha256_file(&file),
            entry["sha256"].as_str().unwrap(),
            "{file:?}"
        );
    }
    assert_eq!(doc["tenant_id"], 1);
    let (bytes, rows): (i64, i64) =
        sqlx::query_as("SELECT bytes_written, rows_written FROM root_data_backups WHERE uuid = $1")
            .bind(&uuid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let manifest_rows: u64 = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(
        (bytes, rows),
        (total as i64, manifest_rows as i64),
        "progress ends at the artifact's size and row count"
    );
    app.shutdown.cancel();
}

#[tokio::test]
async fn with_streaming_on_long_steps_answer_through_keep_alive_streams() {
    let db = TestDb::with_fixture().await;
    let app = crate::helpers::spawn_app_with(&db, &[("INNGEST_STREAMING", "true")]).await;
    let uuid = insert_pending(&db.pool, None, "all", None).await;

    let run = app
        .run(FN, "backup/execute", json!({"backup_uuid": uuid}))
        .await;

    assert_completed(&run);
    assert!(
        run.calls.iter().all(|c| c.streamed),
        "every answer came as a 201 stream"
    );
    assert_eq!(backup_row(&db.pool, &uuid).await.status, "success");
}

#[tokio::test]
async fn database_backup_requested_with_the_current_riveredge_payload_backs_up_everything_restorably(
) {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(&db.pool, None, "all", None).await;

    // Exactly what BE/core/services/system/data_backup_service.py sends (riveredge.md §1.4).
    let run = app
        .run(
            FN,
            "database/backup.requested",
            json!({"backup_uuid": uuid, "tenant_id": null, "backup_type": "full", "backup_scope": "all", "backup_tables": null}),
        )
        .await;

    assert_completed(&run);
    assert_eq!(backup_row(&db.pool, &uuid).await.status, "success");

    let target = format!("{}_restored", db.name);
    let restore = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "target_database": target}),
        )
        .await;
    assert_completed(&restore);
    let restored = TestDb::attach(&target).await;
    assert_eq!(
        all_checksums(&restored.pool).await,
        all_checksums(&db.pool).await,
        "every table equals the source"
    );
    app.shutdown.cancel();
}

#[tokio::test]
async fn an_event_without_a_row_creates_it_and_a_duplicate_delivery_makes_one_artifact() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let event = inngest::Event::new(
        "backup/execute",
        json!({"tenant_id": 2, "backup_scope": "tenant", "backup_type": "full"}),
    )
    .with_id("01EVENTDUPLICATE0000000001");

    let first = app.run_event(FN, event.clone()).await;
    let second = app.run_event(FN, event).await;

    assert_completed(&first);
    assert_completed(&second);
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT uuid, status FROM root_data_backups")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one row for one event: {rows:?}");
    assert_eq!(rows[0].1, "success");
    let dump_calls = |r: &inngest::testing::RunRecord| {
        r.calls
            .iter()
            .filter(|c| c.ops.iter().any(|op| op["name"] == "dump"))
            .count()
    };
    assert_eq!(dump_calls(&first), 1);
    assert_eq!(
        dump_calls(&second),
        0,
        "the replay found the backup done and did not dump again"
    );
    let dirs = std::fs::read_dir(app.storage_dir.path())
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(dirs, 1, "one artifact");
    app.shutdown.cancel();
}

#[tokio::test]
async fn a_failed_backup_can_be_run_again() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(&db.pool, None, "table", Some(vec!["core_users"])).await;
    sqlx::query("UPDATE root_data_backups SET status = 'failed', error_message = 'disk full' WHERE uuid = $1")
        .bind(&uuid)
        .execute(&db.pool)
        .await
        .unwrap();

    let run = app
        .run(FN, "backup/execute", json!({"backup_uuid": uuid}))
        .await;

    assert_completed(&run);
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!((row.status.as_str(), row.error_message), ("success", None));
}

#[tokio::test]
async fn an_unknown_table_fails_the_row_for_good_with_a_clear_message_and_no_files() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(
        &db.pool,
        None,
        "table",
        Some(vec!["core_users", "core_nonexistent"]),
    )
    .await;

    let run = app
        .run(FN, "backup/execute", json!({"backup_uuid": uuid}))
        .await;

    assert_failed(&run);
    assert!(
        run.calls.iter().all(|c| c.attempt == 0),
        "a final error is not retried"
    );
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!(row.status, "failed");
    assert!(
        row.error_message
            .as_deref()
            .unwrap()
            .contains("core_nonexistent"),
        "{:?}",
        row.error_message
    );
    assert!(row.completed_at.is_some());
    assert!(app.artifact_files(&uuid).is_empty());
}

#[tokio::test]
async fn a_tenant_that_does_not_exist_is_a_final_error() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(&db.pool, Some(99), "tenant", None).await;

    let run = app
        .run(
            FN,
            "backup/execute",
            json!({"backup_uuid": uuid, "tenant_id": 99}),
        )
        .await;

    assert_failed(&run);
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!(row.status, "failed");
    assert!(
        row.error_message.as_deref().unwrap().contains("99"),
        "{:?}",
        row.error_message
    );
}

#[tokio::test]
async fn an_event_whose_tenant_does_not_match_the_row_leaves_the_row_alone() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(&db.pool, Some(1), "tenant", None).await;

    let run = app
        .run(
            FN,
            "backup/execute",
            json!({"backup_uuid": uuid, "tenant_id": 2}),
        )
        .await;

    let body = assert_failed(&run);
    assert!(body.to_string().contains("tenant 2"), "{body}");
    assert_eq!(
        backup_row(&db.pool, &uuid).await.status,
        "pending",
        "another tenant's event must not touch the row"
    );
}

#[tokio::test]
async fn a_malformed_event_is_rejected_without_retries() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;

    let run = app
        .run(
            FN,
            "backup/execute",
            json!({"tenant_id": "one", "backup_scope": "tenant"}),
        )
        .await;

    let body = assert_failed(&run);
    assert!(body.to_string().contains("tenant_id"), "{body}");
    assert_eq!(run.calls.len(), 1);
    assert_eq!(run.calls[0].no_retry, Some(true));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM root_data_backups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_forged_or_missing_signature_is_refused_and_nothing_happens() {
    let db = TestDb::migrated().await;
    let app = spawn_app(&db).await;
    let body = serde_json::to_vec(&json!({
        "event": {"name": "backup/execute", "data": {"backup_scope": "all"}, "id": "01FORGED", "ts": 1, "user": {}},
        "events": [], "steps": {}, "use_api": false, "version": -1,
        "ctx": {"run_id": "01FORGEDRUN", "attempt": 0, "max_attempts": 4, "step_id": "step", "stack": {"stack": [], "current": 0}, "disable_immediate_execution": false, "use_api": false, "env": "", "fn_id": "x", "qi_id": ""}
    }))
    .unwrap();
    let forged = inngest::SigningKey::parse(
        "signkey-test-ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    )
    .unwrap();
    let url = app.url("/api/inngest?fnId=riveredge-backup-backup-execute&stepId=step");
    let client = reqwest::Client::new();

    let with_forged = client
        .post(&url)
        .header("X-Inngest-Signature", forged.sign_now(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let unsigned = client.post(&url).body(body).send().await.unwrap();

    assert_eq!(with_forged.status(), 401);
    assert_eq!(unsigned.status(), 401, "cloud mode requires a signature");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM root_data_backups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing happens for an unauthenticated caller");
}

#[tokio::test]
async fn pg_dump_missing_fails_the_backup_for_good_with_the_reason_and_no_artifact_left() {
    let db = TestDb::with_fixture().await;
    // The worker starts with a working pg_dump, which then disappears (a broken upgrade).
    let bin = pg_bin_dir_with(&["pg_dump", "pg_restore", "psql"]);
    let app =
        crate::helpers::spawn_app_with(&db, &[("PG_BIN_DIR", bin.path().to_str().unwrap())]).await;
    std::fs::remove_file(bin.path().join("pg_dump")).unwrap();
    let uuid = insert_pending(&db.pool, None, "all", None).await;

    let run = app
        .run(FN, "backup/execute", json!({"backup_uuid": uuid}))
        .await;

    assert_failed(&run);
    let attempts: Vec<u32> = run
        .calls
        .iter()
        .filter(|c| c.ops.iter().any(|op| op["name"] == "dump"))
        .map(|c| c.attempt)
        .collect();
    assert_eq!(
        attempts,
        vec![0],
        "a missing program is final: retrying cannot install it"
    );
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!(row.status, "failed");
    let message = row.error_message.unwrap();
    assert!(message.contains("pg_dump"), "{message}");
    assert!(app.artifact_files(&uuid).is_empty());
}

#[tokio::test]
async fn pg_dump_killed_halfway_is_retried_and_the_retry_leaves_one_clean_artifact() {
    let db = TestDb::with_fixture().await;
    // A pg_dump that writes half a dump and is killed the first time, and works afterwards.
    let bin = pg_bin_dir_with(&["pg_restore", "psql"]);
    let real = crate::helpers::server().bins.program("pg_dump");
    let marker = bin.path().join("killed-once");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" != --version ] && [ ! -f '{m}' ]; then touch '{m}'; printf 'PGDMP partial'; kill -9 $$; fi\nexec '{real}' \"$@\"\n",
        m = marker.display(),
        real = real.display()
    );
    std::fs::write(bin.path().join("pg_dump"), script).unwrap();
    std::fs::set_permissions(
        bin.path().join("pg_dump"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let app =
        crate::helpers::spawn_app_with(&db, &[("PG_BIN_DIR", bin.path().to_str().unwrap())]).await;
    let uuid = insert_pending(&db.pool, Some(3), "tenant", None).await;

    let run = app
        .run(
            FN,
            "backup/execute",
            json!({"backup_uuid": uuid, "tenant_id": 3}),
        )
        .await;

    assert_completed(&run);
    let dump_ops: Vec<(u32, String)> = run
        .calls
        .iter()
        .flat_map(|c| {
            c.ops
                .iter()
                .filter(|op| op["name"] == "dump")
                .map(move |op| (c.attempt, op["op"].as_str().unwrap_or("").to_owned()))
        })
        .collect();
    assert_eq!(
        dump_ops,
        vec![(0, "StepError".to_owned()), (1, "StepRun".to_owned())],
        "killed once, retried once"
    );
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!((row.status.as_str(), row.error_message), ("success", None));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(app.storage_dir.path().join(&uuid).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let listed = 2 + manifest["tables"].as_array().unwrap().len();
    assert_eq!(
        app.artifact_files(&uuid).len(),
        listed,
        "exactly the manifest's files: nothing of the killed attempt remains"
    );
}
