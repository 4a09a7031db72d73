//! Schedules, retention, stalls, failure signals and metrics (issue 13), under the test
//! executor against real PostgreSQL and real artifact storage.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use inngest::testing::FakeInngestServer;
use riveredge_backup::policy::{self, BackupPolicy};
use riveredge_backup::usecases::{reaper, retention};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{
    assert_completed, assert_failed, backup_row, spawn_app, spawn_app_with, url_of, TestApp, TestDb,
};

/// A cron tick as Inngest delivers it: the event id is the scheduled time.
fn tick(at: &str, cron: &str) -> inngest::Event {
    inngest::Event::new(
        "inngest/scheduled.timer",
        json!({"cron": cron, "scheduledAt": at, "fireAt": at}),
    )
    .with_id(at)
}

#[tokio::test]
async fn each_cron_registers_with_the_policys_expression_and_a_resync_picks_up_changes() {
    let db = TestDb::migrated().await;
    let fake = FakeInngestServer::start_dev().await;
    let app = spawn_app_with(&db, &[("INNGEST_API_BASE_URL", &fake.url())]).await;
    let inngest_app = riveredge_backup::jobs::inngest_app(&app.state).unwrap();
    let crons = |body: &Value| -> Vec<(String, Value)> {
        body["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["id"].as_str().unwrap().to_owned(), f["triggers"].clone()))
            .filter(|(id, _)| {
                id.ends_with("daily-full")
                    || id.ends_with("hourly-incremental")
                    || id.ends_with("retention")
            })
            .collect()
    };

    inngest_app.sync(&app.url("/api/inngest")).await.unwrap();
    policy::save(
        &db.pool,
        &BackupPolicy {
            full_cron: "30 3 * * *".into(),
            incremental_cron: Some("0 */2 * * *".into()),
            timezone: "Asia/Shanghai".into(),
            ..BackupPolicy::default()
        },
        "test",
    )
    .await
    .unwrap();
    inngest_app.sync(&app.url("/api/inngest")).await.unwrap();
    // RiverEdge's settings page wins over the stored policy; a bad value is ignored.
    db.execute_script(
        "CREATE TABLE core_system_parameters (uuid varchar(36), tenant_id int, key varchar(100) NOT NULL,
             value text NOT NULL, type varchar(20), is_active boolean DEFAULT true,
             updated_at timestamptz DEFAULT now(), deleted_at timestamptz);
         INSERT INTO core_system_parameters (key, value) VALUES
             ('backup.incremental.frequency', '\"off\"'), ('backup.full.frequency', '\"99 * * * *\"');",
    )
    .await;
    inngest_app.sync(&app.url("/api/inngest")).await.unwrap();

    let bodies: Vec<Value> = fake
        .requests_to("/fn/register")
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies.len(), 3);
    for body in &bodies {
        assert_eq!(
            inngest::testing::validate_registration(body),
            Vec::<String>::new()
        );
    }
    let id = |slug: &str| format!("riveredge-backup-{slug}");
    assert_eq!(
        crons(&bodies[0]),
        vec![
            (id("backup-daily-full"), json!([{"cron": "0 2 * * *"}])),
            (
                id("backup-hourly-incremental"),
                json!([{"cron": "0 * * * *"}])
            ),
            (id("backup-retention"), json!([{"cron": "15 * * * *"}])),
        ]
    );
    assert_eq!(
        crons(&bodies[1]),
        vec![
            (
                id("backup-daily-full"),
                json!([{"cron": "TZ=Asia/Shanghai 30 3 * * *"}])
            ),
            (
                id("backup-hourly-incremental"),
                json!([{"cron": "TZ=Asia/Shanghai 0 */2 * * *"}])
            ),
            (
                id("backup-retention"),
                json!([{"cron": "TZ=Asia/Shanghai 15 * * * *"}])
            ),
        ]
    );
    assert_eq!(
        crons(&bodies[2]),
        vec![
            (
                id("backup-daily-full"),
                json!([{"cron": "TZ=Asia/Shanghai 30 3 * * *"}])
            ),
            (id("backup-hourly-incremental"), json!([])),
            (
                id("backup-retention"),
                json!([{"cron": "TZ=Asia/Shanghai 15 * * * *"}])
            ),
        ]
    );
    let effective = policy::load_effective(&db.pool).await.unwrap();
    assert_eq!(effective.problems.len(), 1, "{:?}", effective.problems);
    assert!(effective.problems[0].contains("backup.full.frequency"));
    app.shutdown.cancel();
}

#[tokio::test]
async fn a_scheduled_tick_makes_one_full_backup_however_often_it_runs() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let at = "2026-12-01T02:00:00Z";

    let first = app
        .run_event("backup-daily-full", tick(at, "0 2 * * *"))
        .await;
    assert_completed(&first);
    // The same tick again (a duplicate delivery, a rerun with a new run id), concurrently with
    // nothing: the saved outcome, no second backup.
    let again = app
        .run_event("backup-daily-full", tick(at, "0 2 * * *"))
        .await;
    assert_completed(&again);

    let rows: Vec<(String, String, String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT uuid, status, backup_type, scheduled_for FROM root_data_backups")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (uuid, status, kind, scheduled_for) = &rows[0];
    assert_eq!((status.as_str(), kind.as_str()), ("success", "full"));
    assert_eq!(
        scheduled_for.unwrap().to_rfc3339(),
        "2026-12-01T02:00:00+00:00"
    );
    let RunStatusValue(first_out) = RunStatusValue::of(&first);
    let RunStatusValue(again_out) = RunStatusValue::of(&again);
    assert_eq!(first_out["backup_uuid"], json!(uuid));
    assert_eq!(again_out["backup_uuid"], json!(uuid));
    assert_eq!(again_out["skipped"], "already succeeded");
    assert!(!app.artifact_files(uuid).is_empty());

    // The next tick is a new backup.
    let next = app
        .run_event(
            "backup-daily-full",
            tick("2026-12-02T02:00:00Z", "0 2 * * *"),
        )
        .await;
    assert_completed(&next);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM root_data_backups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    app.shutdown.cancel();
}

#[tokio::test]
async fn the_hourly_incremental_takes_an_incremental_after_the_full() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    assert_completed(
        &app.run_event(
            "backup-daily-full",
            tick("2026-12-01T02:00:00Z", "0 2 * * *"),
        )
        .await,
    );
    let run = app
        .run_event(
            "backup-hourly-incremental",
            tick("2026-12-01T03:00:00Z", "0 * * * *"),
        )
        .await;
    assert_completed(&run);
    let (status, kind, parent): (String, String, Option<String>) = sqlx::query_as(
        "SELECT status, backup_type, parent_uuid FROM root_data_backups
         WHERE scheduled_for = '2026-12-01T03:00:00Z'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(status, "success");
    assert_eq!(kind, "incremental");
    assert!(parent.is_some());
    app.shutdown.cancel();
}

struct RunStatusValue(Value);

impl RunStatusValue {
    fn of(run: &inngest::testing::RunRecord) -> Self {
        match &run.status {
            inngest::testing::RunStatus::Completed(v) => Self(v.clone()),
            other => panic!("not completed: {other:?}"),
        }
    }
}

/// One generated history row plus placeholder artifact files (manifest and a data file).
struct Gen<'a> {
    pool: &'a PgPool,
    storage: &'a std::path::Path,
    now: DateTime<Utc>,
}

impl<'a> Gen<'a> {
    /// Ages are counted from the database's clock, the one retention reads.
    async fn at_db_now(pool: &'a PgPool, storage: &'a std::path::Path) -> Self {
        let now = sqlx::query_scalar("SELECT now()")
            .fetch_one(pool)
            .await
            .unwrap();
        Self { pool, storage, now }
    }

    #[allow(clippy::too_many_arguments)]
    async fn add(
        &self,
        name: &str,
        kind: &str,
        scope: &str,
        tenant: Option<i32>,
        status: &str,
        hours_ago: i64,
        parent: Option<&str>,
    ) -> String {
        let uuid = uuid::Uuid::new_v4().to_string();
        let at = self.now - chrono::Duration::hours(hours_ago);
        let chain: Option<String> = match parent {
            None => (kind == "full").then(|| uuid.clone()),
            Some(p) => {
                sqlx::query_scalar("SELECT chain_uuid FROM root_data_backups WHERE uuid = $1")
                    .bind(p)
                    .fetch_one(self.pool)
                    .await
                    .unwrap()
            }
        };
        sqlx::query(
            "INSERT INTO root_data_backups (uuid, tenant_id, name, backup_type, backup_scope, status,
                 file_path, created_at, started_at, completed_at, scheduled_for, parent_uuid, chain_uuid)
             VALUES ($1, $2, $3, $4, $5, $6, $1 || '/', $7, $7, $7 + interval '1 minute', $7, $8, $9)",
        )
        .bind(&uuid)
        .bind(tenant)
        .bind(name)
        .bind(kind)
        .bind(scope)
        .bind(status)
        .bind(at)
        .bind(parent)
        .bind(chain)
        .execute(self.pool)
        .await
        .unwrap();
        if status == "success" {
            let dir = self.storage.join(&uuid);
            std::fs::create_dir_all(dir.join("data")).unwrap();
            std::fs::write(dir.join("manifest.json"), b"{}").unwrap();
            std::fs::write(dir.join("data/0001.copy.zst"), b"x").unwrap();
        }
        uuid
    }
}

async fn live_names(pool: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar("SELECT name FROM root_data_backups WHERE deleted_at IS NULL")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn uuid_of(pool: &PgPool, name: &str) -> String {
    sqlx::query_scalar("SELECT uuid FROM root_data_backups WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A generated history covering every rule; returns the names retention must delete.
async fn generate_history(g: &Gen<'_>) -> BTreeSet<String> {
    // Platform-wide: a full 9 days ago with a chain of incrementals (all expired), a full 8
    // days ago whose chain reaches into the last day (kept whole), a full 2 days ago with an
    // expired incremental (the incremental goes, the full stays), today's full.
    let f9 = g
        .add("f9", "full", "all", None, "success", 9 * 24, None)
        .await;
    let i9a = g
        .add(
            "i9a",
            "incremental",
            "all",
            None,
            "success",
            9 * 24 - 1,
            Some(&f9),
        )
        .await;
    g.add(
        "i9b",
        "incremental",
        "all",
        None,
        "success",
        9 * 24 - 2,
        Some(&i9a),
    )
    .await;
    let f8 = g
        .add("f8", "full", "all", None, "success", 8 * 24, None)
        .await;
    let i8a = g
        .add(
            "i8a",
            "incremental",
            "all",
            None,
            "success",
            8 * 24 - 1,
            Some(&f8),
        )
        .await;
    g.add("i8b", "incremental", "all", None, "success", 20, Some(&i8a))
        .await;
    let f2 = g
        .add("f2", "full", "all", None, "success", 2 * 24, None)
        .await;
    g.add(
        "i2",
        "incremental",
        "all",
        None,
        "success",
        2 * 24 - 1,
        Some(&f2),
    )
    .await;
    let f0 = g.add("f0", "full", "all", None, "success", 3, None).await;
    g.add("i0", "incremental", "all", None, "success", 2, Some(&f0))
        .await;
    // Failures: an old one goes (no files), a recent one stays for the record.
    g.add("failed-old", "full", "all", None, "failed", 10 * 24, None)
        .await;
    g.add("failed-new", "full", "all", None, "failed", 5, None)
        .await;
    // A safety backup of a recent restore, 30 days old: kept.
    let safety = g
        .add("safety", "full", "all", None, "success", 30 * 24, None)
        .await;
    sqlx::query(
        "INSERT INTO root_data_restores (uuid, backup_uuid, restore_scope, status, safety_backup_uuid)
         VALUES ($1, $2, 'all', 'success', $3)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&f0)
    .bind(&safety)
    .execute(g.pool)
    .await
    .unwrap();
    // Tenant 7: only old backups; the newest successful one stays whatever its age.
    g.add(
        "t7-old",
        "full",
        "tenant",
        Some(7),
        "success",
        40 * 24,
        None,
    )
    .await;
    g.add(
        "t7-newest",
        "full",
        "tenant",
        Some(7),
        "success",
        20 * 24,
        None,
    )
    .await;
    // Tenant 8: older fulls go, the newest stays.
    g.add(
        "t8-old",
        "full",
        "tenant",
        Some(8),
        "success",
        15 * 24,
        None,
    )
    .await;
    g.add("t8-newest", "full", "tenant", Some(8), "success", 24, None)
        .await;
    ["f9", "i9a", "i9b", "i2", "failed-old", "t7-old", "t8-old"]
        .map(str::to_owned)
        .into_iter()
        .collect()
}

/// Defaults without min_keep: age, chains and the newest per scope decide.
fn plain_policy() -> BackupPolicy {
    BackupPolicy {
        min_keep: 0,
        ..BackupPolicy::default()
    }
}

#[tokio::test]
async fn retention_over_a_generated_history_deletes_exactly_the_expired_set() {
    let db = TestDb::migrated().await;
    let app = spawn_app(&db).await;
    let g = Gen::at_db_now(&db.pool, app.storage_dir.path()).await;
    let expected = generate_history(&g).await;
    let before = live_names(&db.pool).await;

    let dry = retention::prune(&app.state, &plain_policy(), true)
        .await
        .unwrap();
    let planned: BTreeSet<String> = dry.to_delete().map(|d| d.backup.name.clone()).collect();
    assert_eq!(planned, expected);
    assert_eq!(
        live_names(&db.pool).await,
        before,
        "a dry run changes nothing"
    );

    let report = retention::prune(&app.state, &plain_policy(), false)
        .await
        .unwrap();
    assert_eq!(report.skipped, Vec::<(String, String)>::new());
    let after = live_names(&db.pool).await;
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(gone, expected);
    for name in &expected {
        let uuid = uuid_of(&db.pool, name).await;
        assert!(
            app.artifact_files(&uuid).is_empty(),
            "{name}: files removed"
        );
        let deleted_at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT deleted_at FROM root_data_backups WHERE uuid = $1")
                .bind(&uuid)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert!(deleted_at.is_some(), "{name}: soft-deleted, not removed");
    }
    for name in after.iter().filter(|n| !n.starts_with("failed")) {
        let uuid = uuid_of(&db.pool, name).await;
        assert_eq!(app.artifact_files(&uuid).len(), 2, "{name} keeps its files");
    }
    // No retained backup names a deleted parent.
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM root_data_backups c JOIN root_data_backups p ON p.uuid = c.parent_uuid
         WHERE c.deleted_at IS NULL AND p.deleted_at IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    // A second pass finds nothing more to do.
    let again = retention::prune(&app.state, &plain_policy(), false)
        .await
        .unwrap();
    assert_eq!(again.deleted, Vec::<String>::new());
    app.shutdown.cancel();
}

#[tokio::test]
async fn a_monthly_gfs_tier_keeps_the_newest_full_of_each_of_the_last_months() {
    let db = TestDb::migrated().await;
    let app = spawn_app(&db).await;
    let g = Gen::at_db_now(&db.pool, app.storage_dir.path()).await;
    for name in [
        "this-month",
        "last-month",
        "last-month-early",
        "two-months",
        "two-months-early",
    ] {
        g.add(name, "full", "tenant", Some(8), "success", 0, None)
            .await;
    }
    // Placed by calendar month (the tier's buckets), whatever day the test runs on.
    db.execute_script(
        "UPDATE root_data_backups SET scheduled_for = CASE name
             WHEN 'this-month' THEN greatest(date_trunc('month', now()), now() - interval '1 hour')
             WHEN 'last-month' THEN date_trunc('month', now()) - interval '8 days 12 hours'
             WHEN 'last-month-early' THEN date_trunc('month', now()) - interval '9 days'
             WHEN 'two-months' THEN date_trunc('month', now()) - interval '40 days'
             ELSE date_trunc('month', now()) - interval '45 days' END",
    )
    .await;
    let gfs = BackupPolicy {
        keep_monthly: 2,
        ..plain_policy()
    };
    let report = retention::prune(&app.state, &gfs, false).await.unwrap();
    let gone: BTreeSet<String> = report.to_delete().map(|d| d.backup.name.clone()).collect();
    assert_eq!(
        gone,
        ["last-month-early", "two-months", "two-months-early"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    let kept = report
        .decisions
        .iter()
        .find(|d| d.backup.name == "last-month")
        .unwrap();
    assert!(kept.reason.starts_with("GFS monthly"), "{}", kept.reason);
    assert_eq!(live_names(&db.pool).await.len(), 2);
    app.shutdown.cancel();
}

#[tokio::test]
async fn retention_leaves_a_parent_that_a_new_incremental_started_on_since_the_plan() {
    let db = TestDb::migrated().await;
    let app = spawn_app(&db).await;
    let g = Gen::at_db_now(&db.pool, app.storage_dir.path()).await;
    let old = g
        .add("old", "full", "all", None, "success", 10 * 24, None)
        .await;
    g.add("new", "full", "all", None, "success", 1, None).await;
    let plan = retention::prune(&app.state, &plain_policy(), true)
        .await
        .unwrap();
    assert_eq!(plan.to_delete().count(), 1);
    // An incremental starts on the old full between the plan and the deletion.
    g.add("late", "incremental", "all", None, "running", 0, Some(&old))
        .await;
    let report = retention::prune(&app.state, &plain_policy(), false)
        .await
        .unwrap();
    assert_eq!(report.deleted, Vec::<String>::new());
    assert_eq!(app.artifact_files(&old).len(), 2);
    app.shutdown.cancel();
}

/// The binary as an operator runs it.
async fn cli(db: &TestDb, storage: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_riveredge-backup"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", url_of(&db.conn))
        .env("BACKUP_STORAGE_DIR", storage)
        .args(args)
        .output()
        .await
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

#[tokio::test]
async fn prune_dry_run_lists_what_would_go_and_why_and_changes_nothing() {
    let db = TestDb::migrated().await;
    let storage = tempfile::tempdir().unwrap();
    let g = Gen::at_db_now(&db.pool, storage.path()).await;
    let old = g
        .add("old", "full", "all", None, "success", 10 * 24, None)
        .await;
    let new = g.add("new", "full", "all", None, "success", 1, None).await;
    policy::save(&db.pool, &plain_policy(), "test")
        .await
        .unwrap();

    let (code, doc) = cli(&db, storage.path(), &["--json", "prune", "--dry-run"]).await;
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["expired"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["expired"][0]["uuid"], json!(old));
    assert!(doc["expired"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("full older than 7 day(s)"));
    assert_eq!(doc["deleted"], json!([]));
    assert_eq!(live_names(&db.pool).await.len(), 2);
    assert!(storage.path().join(&old).join("manifest.json").exists());

    let (code, doc) = cli(&db, storage.path(), &["--json", "prune"]).await;
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["deleted"], json!([old]));
    assert!(!storage.path().join(&old).exists());
    assert!(storage.path().join(&new).join("manifest.json").exists());

    let (code, doc) = cli(&db, storage.path(), &["--json", "policy"]).await;
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["policy"]["min_keep"], 0);
    assert_eq!(doc["sources"]["min_keep"], "root_data_backup_policy");
    assert_eq!(doc["schedules"]["full"], "0 2 * * *");
}

#[tokio::test]
async fn a_stalled_backup_or_restore_is_failed_with_a_reason_and_the_backups_files_cleaned() {
    let db = TestDb::migrated().await;
    let app = spawn_app(&db).await;
    let g = Gen::at_db_now(&db.pool, app.storage_dir.path()).await;
    let stalled = g
        .add("stalled", "full", "all", None, "success", 1, None)
        .await;
    let moving = g
        .add("moving", "full", "all", None, "success", 1, None)
        .await;
    sqlx::query(
        "UPDATE root_data_backups SET status = 'running', inngest_run_id = 'r',
             progress_updated_at = now() - CASE WHEN name = 'stalled' THEN interval '11 minutes' ELSE interval '1 minute' END",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let restore = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO root_data_restores (uuid, backup_uuid, restore_scope, status, heartbeat_at, updated_at)
         VALUES ($1, $2, 'all', 'running', now() - interval '11 minutes', now() - interval '11 minutes')",
    )
    .bind(&restore)
    .bind(&moving)
    .execute(&db.pool)
    .await
    .unwrap();

    // The step timeout (1 h) is far away; the policy's 10 minutes decide.
    let report = reaper::reap(&app.state, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.backups_failed, vec![stalled.clone()]);
    assert_eq!(report.restores_failed, vec![restore.clone()]);
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_message FROM root_data_restores WHERE uuid = $1")
            .bind(&restore)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap().starts_with("no progress for 10 min"));
    let row = backup_row(&db.pool, &stalled).await;
    assert_eq!(row.status, "failed");
    assert!(
        row.error_message
            .as_deref()
            .unwrap()
            .starts_with("no progress for 10 min"),
        "{:?}",
        row.error_message
    );
    assert!(app.artifact_files(&stalled).is_empty());
    assert_eq!(backup_row(&db.pool, &moving).await.status, "running");
    assert_eq!(app.artifact_files(&moving).len(), 2);
    app.shutdown.cancel();
}

#[tokio::test]
async fn a_failed_backup_sends_backup_failed_from_its_on_failure_function() {
    let db = TestDb::with_fixture().await;
    let fake = FakeInngestServer::start_dev().await;
    let app = spawn_app_with(
        &db,
        &[
            ("INNGEST_EVENT_API_BASE_URL", &fake.url()),
            ("INNGEST_EVENT_KEY", "test-event-key"),
        ],
    )
    .await;
    // A tenant that does not exist: the backup fails for good.
    let run = app
        .run(
            "backup-execute",
            "backup/execute",
            json!({"backup_scope": "tenant", "tenant_id": 999_999}),
        )
        .await;
    assert_failed(&run);
    let original =
        json!({"name": "backup/execute", "data": {"backup_scope": "tenant", "tenant_id": 999_999}});
    let failed = inngest::Event::new(
        "inngest/function.failed",
        json!({
            "function_id": "riveredge-backup-backup-execute",
            "run_id": run.run_id,
            "event": original,
            "error": {"name": "Error", "message": "tenant 999999 does not exist"},
        }),
    )
    .with_id(run.run_id.clone());

    let signal = app
        .run_event("backup-execute-failure", failed.clone())
        .await;
    assert_completed(&signal);
    // A retried failure handler (same failed run) sends the same event id.
    assert_completed(&app.run_event("backup-execute-failure", failed).await);

    let sent: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/e/"))
        .flat_map(|r| match r.body {
            Value::Array(events) => events,
            one => vec![one],
        })
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["id"], sent[1]["id"], "one event id per failed run");
    let event = &sent[0];
    assert_eq!(event["name"], "backup/failed");
    assert_eq!(event["data"]["run_id"], json!(run.run_id));
    assert_eq!(event["data"]["tenant_id"], 999_999);
    assert_eq!(event["data"]["error"], "tenant 999999 does not exist");
    let uuid: String = sqlx::query_scalar("SELECT uuid FROM root_data_backups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(event["data"]["backup_uuid"], json!(uuid));
    app.shutdown.cancel();
}

fn sample(metrics: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .sum()
}

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let body = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let before = scrape(&app).await;
    let runs = |m: &prometheus_parse::Scrape| {
        sample(
            m,
            "riveredge_backup_backup_runs_total",
            &[("scope", "all"), ("type", "full"), ("outcome", "success")],
        )
    };

    let run = app
        .run(
            "backup-execute",
            "backup/execute",
            json!({"backup_scope": "all"}),
        )
        .await;
    assert_completed(&run);

    let after = scrape(&app).await;
    // The counters are per process and other tests in this binary share it: they only grow.
    assert!(runs(&after) >= runs(&before) + 1.0);
    assert!(
        sample(
            &after,
            "riveredge_backup_written_bytes_total",
            &[("scope", "all")]
        ) > sample(
            &before,
            "riveredge_backup_written_bytes_total",
            &[("scope", "all")]
        )
    );
    // Read from this test's table: exact.
    assert_eq!(
        sample(
            &after,
            "riveredge_backup_backups",
            &[("scope", "all"), ("type", "full"), ("status", "success")]
        ),
        1.0
    );
    let completed: DateTime<Utc> = sqlx::query_scalar("SELECT completed_at FROM root_data_backups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        sample(
            &after,
            "riveredge_backup_last_success_timestamp_seconds",
            &[("scope", "all"), ("tenant", "")]
        ),
        completed.timestamp() as f64
    );
    app.shutdown.cancel();
}

/// The acceptance: a week of simulated history (daily fulls, hourly incremental chains,
/// some failures, plus two real backups in it) pruned with the default policy keeps exactly 7
/// days of fulls and 24 h of incrementals (with the chains they need), and every retained real
/// backup still drills. The generated rows carry placeholder files, so only the real backups
/// can be drilled.
#[tokio::test]
async fn a_week_of_history_pruned_with_the_default_policy_keeps_7_days_of_fulls_and_24_hours_of_incrementals(
) {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let mut real = Vec::new();
    for _ in 0..2 {
        let run = app
            .run(
                "backup-execute",
                "backup/execute",
                json!({"backup_scope": "all"}),
            )
            .await;
        let RunStatusValue(out) = RunStatusValue::of(&run);
        real.push(out["backup_uuid"].as_str().unwrap().to_owned());
    }
    let g = Gen::at_db_now(&db.pool, app.storage_dir.path()).await;
    // Day d's full is 24d + 10 h old (d = 0..=7); its chain of hourly incrementals follows it
    // until the next full; every 7th incremental fails (the next builds on the last success).
    let mut expected_kept = BTreeSet::new();
    let mut expected_gone = BTreeSet::new();
    let mut n = 0;
    for d in 0..=7i64 {
        let full_age = 24 * d + 10;
        let full_name = format!("full-d{d}");
        let full = match d {
            0 | 7 => {
                // The real backups play the newest and the oldest full.
                let uuid = real[usize::from(d == 7)].clone();
                sqlx::query(
                    "UPDATE root_data_backups SET name = $2, scheduled_for = $3, chain_uuid = uuid
                     WHERE uuid = $1",
                )
                .bind(&uuid)
                .bind(&full_name)
                .bind(g.now - chrono::Duration::hours(full_age))
                .execute(&db.pool)
                .await
                .unwrap();
                uuid
            }
            _ => {
                g.add(&full_name, "full", "all", None, "success", full_age, None)
                    .await
            }
        };
        if full_age < 7 * 24 {
            expected_kept.insert(full_name);
        } else {
            expected_gone.insert(full_name);
        }
        let mut parent = full;
        let mut chain = Vec::new();
        for age in (full_age - 23..full_age).rev().filter(|a| *a >= 1) {
            n += 1;
            let name = format!("inc-d{d}-{age}h");
            if n % 7 == 0 {
                g.add(
                    &name,
                    "incremental",
                    "all",
                    None,
                    "failed",
                    age,
                    Some(&parent),
                )
                .await;
                // A failed row stays for the record as long as a full would.
                if age < 7 * 24 {
                    expected_kept.insert(name);
                } else {
                    expected_gone.insert(name);
                }
                continue;
            }
            parent = g
                .add(
                    &name,
                    "incremental",
                    "all",
                    None,
                    "success",
                    age,
                    Some(&parent),
                )
                .await;
            chain.push((name, age));
        }
        // A chain with an incremental from the last 24 h is kept whole (nothing orphaned).
        let chain_kept = chain.iter().any(|(_, age)| *age < 24);
        for (name, _) in chain {
            if chain_kept {
                expected_kept.insert(name);
            } else {
                expected_gone.insert(name);
            }
        }
    }
    let report = retention::prune(&app.state, &BackupPolicy::default(), false)
        .await
        .unwrap();
    assert_eq!(report.skipped, Vec::<(String, String)>::new());
    let live = live_names(&db.pool).await;
    assert_eq!(live, expected_kept);
    let deleted: BTreeSet<String> =
        sqlx::query_scalar("SELECT name FROM root_data_backups WHERE deleted_at IS NOT NULL")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(deleted, expected_gone);
    // Exactly the fulls of the last 7 days, and every successful incremental of the last 24 h.
    let fulls: Vec<&String> = live.iter().filter(|n| n.starts_with("full-")).collect();
    assert_eq!(fulls.len(), 7);
    let recent_incrementals_gone: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM root_data_backups WHERE backup_type = 'incremental'
           AND deleted_at IS NOT NULL AND scheduled_for > now() - interval '24 hours'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(recent_incrementals_gone, 0);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM root_data_backups c JOIN root_data_backups p ON p.uuid = c.parent_uuid
         WHERE c.deleted_at IS NULL AND c.status = 'success' AND p.deleted_at IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0);

    // The expired real backup is gone with its files; the retained one still restores.
    assert!(app.artifact_files(&real[1]).is_empty());
    let drill = riveredge_backup::restore::drill(&app.state, &real[0])
        .await
        .unwrap_or_else(|e| panic!("drill: {e}"));
    assert!(drill
        .tables
        .iter()
        .all(riveredge_backup::restore::TableCheck::matches));
    app.shutdown.cancel();
}

#[tokio::test]
async fn with_fan_out_a_tick_also_backs_up_each_active_tenant_once() {
    let db = TestDb::with_fixture().await;
    let fake = FakeInngestServer::start_dev().await;
    let app = spawn_app_with(
        &db,
        &[
            ("INNGEST_EVENT_API_BASE_URL", &fake.url()),
            ("INNGEST_EVENT_KEY", "test-event-key"),
        ],
    )
    .await;
    db.execute_script("UPDATE infra_tenants SET status = 'inactive' WHERE id = 4")
        .await;
    policy::save(
        &db.pool,
        &BackupPolicy {
            tenant_fanout: true,
            ..BackupPolicy::default()
        },
        "test",
    )
    .await
    .unwrap();
    let at = "2026-12-01T02:00:00Z";
    assert_completed(
        &app.run_event("backup-daily-full", tick(at, "0 2 * * *"))
            .await,
    );
    assert_completed(
        &app.run_event("backup-daily-full", tick(at, "0 2 * * *"))
            .await,
    );

    let tenant_rows: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT uuid, tenant_id, status FROM root_data_backups
         WHERE backup_scope = 'tenant' AND scheduled_for = $1 ORDER BY tenant_id",
    )
    .bind(DateTime::parse_from_rfc3339(at).unwrap().to_utc())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        tenant_rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        [1, 2, 3],
        "one row per active tenant, however often the tick ran"
    );
    let sent: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/e/"))
        .flat_map(|r| match r.body {
            Value::Array(events) => events,
            one => vec![one],
        })
        .collect();
    let ids: BTreeSet<String> = sent
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let uuids: BTreeSet<String> = tenant_rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(ids, uuids, "deterministic event ids: the row uuids");

    // The sent event takes that tenant's backup.
    let one = sent.iter().find(|e| e["data"]["tenant_id"] == 2).unwrap();
    let event = inngest::Event::new("backup/execute", one["data"].clone())
        .with_id(one["id"].as_str().unwrap());
    assert_completed(&app.run_event("backup-execute", event).await);
    let uuid = &tenant_rows[1].0;
    assert_eq!(backup_row(&db.pool, uuid).await.status, "success");
    app.shutdown.cancel();
}
