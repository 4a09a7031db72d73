//! Restores end to end through the Inngest protocol: `backup/restore` and RiverEdge's
//! `database/restore.requested`, judged by server-side checksums that share no code with the
//! worker.

use std::collections::BTreeMap;

use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{
    all_checksums, assert_completed, assert_failed, backup_row, insert_pending, spawn_app,
    table_checksum, TestApp, TestDb,
};

/// Per table, the rows of `tenant` (join tables through their parents) or, with `others`, every
/// row that is not the tenant's (other tenants' and platform rows).
async fn tenant_checksums(
    pool: &PgPool,
    tenant: i32,
    others: bool,
) -> BTreeMap<String, (i64, String)> {
    let direct = |t: &str| {
        if others {
            format!("t.tenant_id IS DISTINCT FROM {t}")
        } else {
            format!("t.tenant_id = {t}")
        }
    };
    let through = |column: &str, parent: &str| {
        let owned = format!("t.{column} IN (SELECT id FROM {parent} WHERE tenant_id = {tenant})");
        if others {
            format!("NOT ({owned})")
        } else {
            owned
        }
    };
    let mut out = BTreeMap::new();
    for table in [
        "core_departments",
        "core_positions",
        "core_users",
        "core_roles",
        "core_permissions",
        "core_data_dictionaries",
        "core_dictionary_items",
        "core_operation_logs",
        "apps_master_data_material_groups",
        "apps_master_data_materials",
        "apps_master_data_bom",
        "apps_kuaizhizao_sales_orders",
        "apps_kuaizhizao_work_orders",
        "apps_kuaizhizao_sales_order_items",
        "infra_tenants",
    ] {
        out.insert(
            table.to_owned(),
            table_checksum(pool, table, &direct(&tenant.to_string())).await,
        );
    }
    out.insert(
        "core_user_roles".into(),
        table_checksum(pool, "core_user_roles", &through("user_id", "core_users")).await,
    );
    out.insert(
        "core_role_permissions".into(),
        table_checksum(
            pool,
            "core_role_permissions",
            &through("role_id", "core_roles"),
        )
        .await,
    );
    for platform in ["infra_platform_settings", "aerich"] {
        if others {
            out.insert(
                platform.into(),
                table_checksum(pool, platform, "true").await,
            );
        }
    }
    out
}

/// Changes to tenant 2 after its backup: updates, deletes and inserts, in join tables and in
/// both FK cycles.
const MUTATE_TENANT_2: &str = r#"
UPDATE core_users SET full_name = 'changed', department_id = NULL WHERE tenant_id = 2 AND username = 'user3';
DELETE FROM core_user_roles WHERE user_id IN (SELECT id FROM core_users WHERE tenant_id = 2 AND username = 'user4');
DELETE FROM apps_kuaizhizao_sales_orders WHERE tenant_id = 2 AND order_code = 'SO-2-00002';
UPDATE core_departments SET manager_id = NULL, name = '改名' WHERE tenant_id = 2 AND code = 'D2';
INSERT INTO core_users (uuid, tenant_id, username, password_hash, created_at, updated_at)
    VALUES ('new-2', 2, 'newcomer', 'x', now(), now());
INSERT INTO core_user_roles (user_id, role_id)
    SELECT u.id, r.id FROM core_users u, core_roles r WHERE u.username = 'newcomer' AND r.tenant_id = 2 AND r.code = 'R1';
INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type) VALUES ('log-new', 2, 1, 'create');
"#;

/// Meanwhile other tenants and the platform keep working.
const MUTATE_OTHERS: &str = r#"
UPDATE core_users SET full_name = 'tenant one changed' WHERE tenant_id = 1 AND username = 'user2';
INSERT INTO apps_kuaizhizao_sales_orders (uuid, tenant_id, order_code, customer_id, created_at, updated_at)
    VALUES ('so-new-3', 3, 'SO-3-NEW', 1, now(), now());
UPDATE infra_platform_settings SET value = 'changed' WHERE key = 'smtp.host';
INSERT INTO core_users (uuid, tenant_id, username, password_hash, created_at, updated_at)
    VALUES ('platform-new', NULL, 'auditor', 'x', now(), now());
"#;

async fn backup_of(app: &TestApp, db: &TestDb, tenant: Option<i32>, scope: &str) -> String {
    let uuid = insert_pending(&db.pool, tenant, scope, None).await;
    let run = app
        .run(
            "backup-execute",
            "backup/execute",
            json!({"backup_uuid": uuid, "tenant_id": tenant}),
        )
        .await;
    assert_completed(&run);
    uuid
}

#[tokio::test]
async fn a_tenant_restore_brings_back_exactly_that_tenant_and_leaves_everyone_else_untouched() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = backup_of(&app, &db, Some(2), "tenant").await;
    let backed_up = tenant_checksums(&db.pool, 2, false).await;
    db.execute_script(MUTATE_TENANT_2).await;
    db.execute_script(MUTATE_OTHERS).await;
    assert_ne!(
        tenant_checksums(&db.pool, 2, false).await,
        backed_up,
        "the tenant did change"
    );
    let others_before = tenant_checksums(&db.pool, 2, true).await;
    let max_user_id: i32 = sqlx::query_scalar("SELECT max(id) FROM core_users")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let run = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "tenant_id": 2}),
        )
        .await;

    assert_completed(&run);
    assert_eq!(
        tenant_checksums(&db.pool, 2, false).await,
        backed_up,
        "tenant 2 is back to its backup"
    );
    assert_eq!(
        tenant_checksums(&db.pool, 2, true).await,
        others_before,
        "other tenants and platform rows are byte-identical"
    );
    let next: i64 = sqlx::query_scalar("SELECT nextval('core_users_id_seq')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        next > i64::from(max_user_id),
        "the shared sequence did not move backwards"
    );
    let (status, safety, rows, tenant): (String, Option<String>, Option<serde_json::Value>, Option<i32>) =
        sqlx::query_as("SELECT status, safety_backup_uuid, rows_per_table, tenant_id FROM root_data_restores WHERE backup_uuid = $1")
            .bind(&uuid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), tenant), ("success", Some(2)));
    assert_eq!(
        rows.unwrap()["public.core_users"],
        12,
        "rows per table are recorded"
    );
    let safety = backup_row(&db.pool, &safety.expect("a safety backup was taken")).await;
    assert_eq!(
        (safety.status.as_str(), safety.tenant_id),
        ("success", Some(2))
    );
}

#[tokio::test]
async fn the_safety_backup_undoes_a_mistaken_restore() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let old = backup_of(&app, &db, Some(1), "tenant").await;
    db.execute_script(
        "UPDATE core_users SET full_name = 'work done after the backup' WHERE tenant_id = 1",
    )
    .await;
    let current = tenant_checksums(&db.pool, 1, false).await;

    let mistaken = app
        .run(
            "backup-restore",
            "database/restore.requested",
            json!({"backup_uuid": old, "tenant_id": 1, "file_path": "/ignored"}),
        )
        .await;
    assert_completed(&mistaken);
    assert_ne!(tenant_checksums(&db.pool, 1, false).await, current);
    let safety: String = sqlx::query_scalar(
        "SELECT safety_backup_uuid FROM root_data_restores WHERE backup_uuid = $1",
    )
    .bind(&old)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let undo = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": safety, "tenant_id": 1}),
        )
        .await;

    assert_completed(&undo);
    assert_eq!(
        tenant_checksums(&db.pool, 1, false).await,
        current,
        "the work done after the backup is back"
    );
}

#[tokio::test]
async fn a_corrupted_artifact_is_refused_before_anything_changes() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = backup_of(&app, &db, Some(2), "tenant").await;
    db.execute_script(MUTATE_TENANT_2).await;
    let before = all_checksums(&db.pool).await;
    let data = app
        .artifact_files(&uuid)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/data/"))
        .unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();

    let run = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "tenant_id": 2}),
        )
        .await;

    let body = assert_failed(&run);
    assert!(body.to_string().contains("verification failed"), "{body}");
    assert_eq!(
        all_checksums(&db.pool).await,
        before,
        "the database is exactly as it was"
    );
    let (status, error, safety): (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT status, error_message, safety_backup_uuid FROM root_data_restores WHERE backup_uuid = $1")
            .bind(&uuid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("sha256"));
    assert_eq!(
        safety, None,
        "refused before the safety backup: nothing was about to change"
    );
}

#[tokio::test]
async fn a_tenant_cannot_restore_another_tenants_backup() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = backup_of(&app, &db, Some(2), "tenant").await;
    let before = all_checksums(&db.pool).await;

    let run = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "tenant_id": 3}),
        )
        .await;

    let body = assert_failed(&run);
    assert!(
        body.to_string().contains("does not belong to tenant 3"),
        "{body}"
    );
    assert_eq!(all_checksums(&db.pool).await, before);
}

#[tokio::test]
async fn a_whole_database_backup_goes_into_the_live_database_only_with_replace() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = backup_of(&app, &db, None, "all").await;
    let backed_up = all_checksums(&db.pool).await;
    db.execute_script(MUTATE_OTHERS).await;
    let changed = all_checksums(&db.pool).await;

    let refused = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid}),
        )
        .await;
    assert_failed(&refused);
    assert_eq!(
        all_checksums(&db.pool).await,
        changed,
        "refused without replace: nothing changed"
    );

    let replaced = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "replace": true}),
        )
        .await;
    assert_completed(&replaced);
    assert_eq!(
        all_checksums(&db.pool).await,
        backed_up,
        "every table is back to the backup"
    );
}

#[tokio::test]
async fn a_table_backup_restores_only_its_tables() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = insert_pending(
        &db.pool,
        None,
        "table",
        Some(vec!["infra_platform_settings", "aerich"]),
    )
    .await;
    let run = app
        .run(
            "backup-execute",
            "backup/execute",
            json!({"backup_uuid": uuid}),
        )
        .await;
    assert_completed(&run);
    let settings_before = table_checksum(&db.pool, "infra_platform_settings", "true").await;
    db.execute_script(MUTATE_OTHERS).await;
    let users_after_mutation = table_checksum(&db.pool, "core_users", "true").await;

    let restore = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid}),
        )
        .await;

    assert_completed(&restore);
    assert_eq!(
        table_checksum(&db.pool, "infra_platform_settings", "true").await,
        settings_before
    );
    assert_eq!(
        table_checksum(&db.pool, "core_users", "true").await,
        users_after_mutation,
        "other tables untouched"
    );
}

#[tokio::test]
async fn a_tenant_dry_run_runs_through_the_function_changes_nothing_and_previews_what_the_restore_does(
) {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = backup_of(&app, &db, Some(2), "tenant").await;
    let backed_up = tenant_checksums(&db.pool, 2, false).await;
    db.execute_script(MUTATE_TENANT_2).await;
    let mutated = tenant_checksums(&db.pool, 2, false).await;
    let others = tenant_checksums(&db.pool, 2, true).await;

    let dry = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "tenant_id": 2, "dry_run": true}),
        )
        .await;
    assert_completed(&dry);
    assert_eq!(
        tenant_checksums(&db.pool, 2, false).await,
        mutated,
        "nothing changed"
    );
    assert_eq!(tenant_checksums(&db.pool, 2, true).await, others);
    let rows = |dry_run: bool| {
        let pool = db.pool.clone();
        let uuid = uuid.clone();
        async move {
            sqlx::query_as::<_, (String, Option<serde_json::Value>, Option<String>, bool)>(
                "SELECT status, preview, safety_backup_uuid, applied_at IS NOT NULL
                 FROM root_data_restores WHERE backup_uuid = $1 AND dry_run = $2",
            )
            .bind(&uuid)
            .bind(dry_run)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (status, planned, safety, applied) = rows(true).await;
    assert_eq!(
        (status.as_str(), safety, applied),
        ("success", None, false),
        "a dry run succeeds, takes no safety backup and is never applied"
    );
    let planned = planned.expect("the preview is recorded");
    let changed: i64 = planned["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["insert"].as_i64().unwrap()
                + t["update"].as_i64().unwrap()
                + t["delete"].as_i64().unwrap()
        })
        .sum();
    assert!(
        changed > 0,
        "the preview shows the tenant's changes: {planned}"
    );

    let real = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "tenant_id": 2}),
        )
        .await;
    assert_completed(&real);
    assert_eq!(tenant_checksums(&db.pool, 2, false).await, backed_up);
    let (status, done, _, applied) = rows(false).await;
    assert_eq!((status.as_str(), applied), ("success", true));
    assert_eq!(
        done,
        Some(planned),
        "the restore did what the dry run previewed"
    );
}

#[tokio::test]
async fn one_tenant_is_restored_from_a_whole_database_backup_and_nothing_else_changes() {
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let uuid = backup_of(&app, &db, None, "all").await;
    let backed_up = tenant_checksums(&db.pool, 2, false).await;
    db.execute_script(MUTATE_TENANT_2).await;
    db.execute_script(MUTATE_OTHERS).await;
    let others_before = tenant_checksums(&db.pool, 2, true).await;

    let run = app
        .run(
            "backup-restore",
            "backup/restore",
            json!({"backup_uuid": uuid, "restore_tenant_id": 2}),
        )
        .await;
    assert_completed(&run);
    assert_eq!(
        tenant_checksums(&db.pool, 2, false).await,
        backed_up,
        "tenant 2 is back to the whole-database backup's rows of it"
    );
    assert_eq!(
        tenant_checksums(&db.pool, 2, true).await,
        others_before,
        "every other tenant's and platform row stays as it is now"
    );
    let (tenant, safety): (Option<i32>, Option<String>) = sqlx::query_as(
        "SELECT tenant_id, safety_backup_uuid FROM root_data_restores WHERE backup_uuid = $1",
    )
    .bind(&uuid)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tenant, Some(2));
    let scope: (String, Option<i32>, String) = sqlx::query_as(
        "SELECT backup_scope, tenant_id, status FROM root_data_backups WHERE uuid = $1",
    )
    .bind(safety.expect("a safety backup was taken"))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        scope,
        ("tenant".to_owned(), Some(2), "success".to_owned()),
        "the safety backup holds only what was replaced: the tenant"
    );
}
