//! Incremental backups (issue 12): chains restored into a new database and over live tables
//! equal the source at the last snapshot (inserts, updates, hard and soft deletes across
//! foreign keys and join tables, savepoints, a transaction spanning the parent's snapshot,
//! writers committing during the backup), and every unsafe case falls back to a full that says
//! why.

use riveredge_backup::backup::{BackupScope, BackupSpec, BackupType};
use riveredge_backup::catalog::TableRef;
use riveredge_backup::restore::{self, RestoreMode};
use sqlx::{Connection, PgConnection, PgPool};

use crate::backup::{app_tables, spec, Engine};
use crate::helpers::{table_checksum, TestDb};

/// What the row says about a backup's place in its chain.
#[derive(Debug, sqlx::FromRow)]
struct ChainRow {
    backup_type: String,
    parent_uuid: Option<String>,
    chain_uuid: Option<String>,
    fallback_reason: Option<String>,
    position: Option<serde_json::Value>,
}

async fn chain_row(pool: &PgPool, uuid: &str) -> ChainRow {
    sqlx::query_as(
        "SELECT backup_type, parent_uuid, chain_uuid, fallback_reason, position
         FROM root_data_backups WHERE uuid = $1",
    )
    .bind(uuid)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn incremental(scope: BackupScope, tenant: Option<i32>, tables: &[&str]) -> BackupSpec {
    BackupSpec {
        backup_type: BackupType::Incremental,
        ..spec(scope, tenant, tables)
    }
}

/// Takes `spec` through the use case (rows recorded, verified) and returns its chain row.
async fn take(engine: &Engine, spec: &BackupSpec) -> ChainRow {
    riveredge_backup::commands::take_backup(&engine.state, spec, "incremental test")
        .await
        .unwrap_or_else(|e| panic!("backup: {e:#}"));
    chain_row(&engine.state.pool, &spec.uuid).await
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Every application table's count and content checksum.
async fn state_of(db: &TestDb, tables: &[TableRef]) -> Vec<(String, (i64, String))> {
    let mut out = Vec::new();
    for t in tables {
        out.push((
            t.to_string(),
            table_checksum(&db.pool, &t.quoted(), "true").await,
        ));
    }
    out
}

async fn restore_fresh(engine: &Engine, uuid: &str) -> TestDb {
    let manifest = restore::manifest_of(&engine.state, uuid).await.unwrap();
    let target = TestDb::empty().await;
    restore::restore_into_database(
        &engine.state,
        &manifest,
        &target.conn,
        None,
        RestoreMode::Fresh,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("restoring the chain of {uuid}: {e}"));
    target
}

/// A session with an open transaction that has written (so it holds an xid).
async fn open_writer(db: &TestDb, sql: &str) -> PgConnection {
    let mut conn = PgConnection::connect_with(&db.conn.connect_options())
        .await
        .unwrap();
    sqlx::raw_sql(&format!("BEGIN; {sql}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_chain_of_incrementals_restores_into_a_new_database_equal_to_the_source() {
    let source = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&source).await;
    let tables = app_tables(&source).await;

    let full = spec(BackupScope::All, None, &[]);
    let row = take(&engine, &full).await;
    assert_eq!(row.backup_type, "full");
    assert_eq!(row.chain_uuid.as_deref(), Some(full.uuid.as_str()));
    assert!(row.position.is_some(), "a full records its position");

    // A transaction that starts before the first incremental's snapshot and commits after it.
    let straddler = open_writer(
        &source,
        "INSERT INTO core_roles (tenant_id, code) VALUES (2, 'late-role');
         UPDATE core_departments SET name = 'renamed-late' WHERE id = 3;",
    )
    .await;

    // Inserts, updates, hard deletes (with cascades into the join table), soft deletes,
    // a table without a primary key, the FK cycle, and writes inside savepoints.
    exec(
        &source.pool,
        "INSERT INTO core_users (tenant_id, username, department_id) VALUES (1, 'new-1', 4), (2, 'new-2', 5);
         INSERT INTO core_user_roles (user_id, role_id)
           SELECT id, 1 FROM core_users WHERE username = 'new-1';
         UPDATE core_users SET username = username || '-x' WHERE id = 2;
         DELETE FROM core_users WHERE id = 4;
         DELETE FROM core_user_roles WHERE id = (SELECT min(id) FROM core_user_roles);
         UPDATE core_roles SET deleted_at = now() WHERE id = 2;
         INSERT INTO core_operation_logs (tenant_id, operation) VALUES (1, 'after full');
         DELETE FROM core_operation_logs WHERE operation = 'op 5';
         UPDATE apps_orders SET shipment_id = NULL WHERE id = 1;
         DELETE FROM apps_shipments WHERE id = 1;
         BEGIN;
         INSERT INTO core_departments (tenant_id, name) VALUES (1, 'kept');
         SAVEPOINT a;
         UPDATE core_departments SET name = 'in-savepoint' WHERE id = 1;
         RELEASE SAVEPOINT a;
         SAVEPOINT b;
         INSERT INTO core_departments (tenant_id, name) VALUES (1, 'rolled back');
         ROLLBACK TO SAVEPOINT b;
         COMMIT;",
    )
    .await;

    let first = incremental(BackupScope::All, None, &[]);
    let row = take(&engine, &first).await;
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    assert_eq!(row.parent_uuid.as_deref(), Some(full.uuid.as_str()));
    assert_eq!(row.chain_uuid.as_deref(), Some(full.uuid.as_str()));
    assert_eq!(row.fallback_reason, None);
    let at_first = state_of(&source, &tables).await;

    sqlx::raw_sql("COMMIT")
        .execute(&mut { straddler })
        .await
        .unwrap();
    // Writers committing while the second incremental runs.
    let writer_pool = source.pool.clone();
    let writer = tokio::spawn(async move {
        for i in 0..40 {
            sqlx::raw_sql(&format!(
                "INSERT INTO core_operation_logs (tenant_id, operation) VALUES (2, 'busy {i}');
                 UPDATE core_users SET username = 'busy-{i}' WHERE id = 5;
                 INSERT INTO apps_orders (tenant_id, code) VALUES (1, 'busy-{i}');"
            ))
            .execute(&writer_pool)
            .await
            .unwrap();
        }
    });
    let second = incremental(BackupScope::All, None, &[]);
    let row = take(&engine, &second).await;
    writer.await.unwrap();
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    assert_eq!(row.parent_uuid.as_deref(), Some(first.uuid.as_str()));
    assert_eq!(row.chain_uuid.as_deref(), Some(full.uuid.as_str()));

    exec(
        &source.pool,
        "DELETE FROM core_users WHERE username = 'new-2';
         UPDATE core_roles SET deleted_at = NULL WHERE id = 2;
         INSERT INTO core_user_roles (user_id, role_id) SELECT id, 3 FROM core_users WHERE username = 'new-1';",
    )
    .await;
    let third = incremental(BackupScope::All, None, &[]);
    let row = take(&engine, &third).await;
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    assert_eq!(row.parent_uuid.as_deref(), Some(second.uuid.as_str()));

    // The whole chain (full + 3 incrementals) equals the source now.
    let restored = restore_fresh(&engine, &third.uuid).await;
    assert_eq!(
        state_of(&restored, &tables).await,
        state_of(&source, &tables).await
    );
    // The straddling transaction's rows are there.
    let late: i64 = sqlx::query_scalar("SELECT count(*) FROM core_roles WHERE code = 'late-role'")
        .fetch_one(&restored.pool)
        .await
        .unwrap();
    assert_eq!(late, 1);
    // Inserts still work after a chain restore (sequences restored).
    exec(
        &restored.pool,
        "INSERT INTO core_users (tenant_id, username) VALUES (1, 'after-restore')",
    )
    .await;

    // The middle of the chain restores to its own snapshot's state.
    let restored_first = restore_fresh(&engine, &first.uuid).await;
    assert_eq!(state_of(&restored_first, &tables).await, at_first);
    // And the one taken under concurrent writers verifies table by table against its snapshot.
    restore_fresh(&engine, &second.uuid).await;
}

#[tokio::test]
async fn an_incremental_restores_over_live_tables_to_its_snapshot() {
    let source = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&source).await;
    let picked = [
        "core_departments",
        "core_users",
        "core_user_roles",
        "core_roles",
    ];
    let tables: Vec<TableRef> = picked.iter().map(|t| TableRef::new("public", t)).collect();
    take(&engine, &spec(BackupScope::Table, None, &picked)).await;
    exec(
        &source.pool,
        "UPDATE core_users SET username = 'changed' WHERE id = 1;
         DELETE FROM core_users WHERE id = 2;
         INSERT INTO core_departments (tenant_id, name, parent_id) VALUES (1, 'child', 1);",
    )
    .await;
    let inc = incremental(BackupScope::Table, None, &picked);
    let row = take(&engine, &inc).await;
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    let at_snapshot = state_of(&source, &tables).await;
    exec(
        &source.pool,
        "DELETE FROM core_users WHERE id = 3;
         UPDATE core_departments SET name = 'later' WHERE id = 1;
         INSERT INTO core_roles (tenant_id, code) VALUES (1, 'later');",
    )
    .await;
    let manifest = restore::manifest_of(&engine.state, &inc.uuid)
        .await
        .unwrap();
    restore::restore_into_database(
        &engine.state,
        &manifest,
        &source.conn,
        None,
        RestoreMode::ReplaceTables,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("live restore of the chain: {e}"));
    assert_eq!(state_of(&source, &tables).await, at_snapshot);
}

#[tokio::test]
async fn an_unsafe_incremental_falls_back_to_a_full_and_says_why() {
    let source = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&source).await;
    let picked = ["core_roles", "core_operation_logs"];
    let fallback = |row: &ChainRow, uuid: &str, reason: &str| {
        assert_eq!(row.backup_type, "full", "{row:?}");
        assert_eq!(row.parent_uuid, None);
        assert_eq!(
            row.chain_uuid.as_deref(),
            Some(uuid),
            "a full starts its chain"
        );
        let why = row.fallback_reason.as_deref().unwrap_or_default();
        assert!(why.contains(reason), "{why:?} should mention {reason:?}");
    };

    let first = incremental(BackupScope::Table, None, &picked);
    let row = take(&engine, &first).await;
    fallback(&row, &first.uuid, "no earlier successful backup");

    exec(&source.pool, "ALTER TABLE core_roles ADD COLUMN label text").await;
    let after_alter = incremental(BackupScope::Table, None, &picked);
    let row = take(&engine, &after_alter).await;
    fallback(&row, &after_alter.uuid, "schema changed");

    exec(&source.pool, "TRUNCATE core_operation_logs").await;
    let after_truncate = incremental(BackupScope::Table, None, &picked);
    let row = take(&engine, &after_truncate).await;
    fallback(&row, &after_truncate.uuid, "truncated or rewritten");

    // A safe one builds on the last full.
    let fine = incremental(BackupScope::Table, None, &picked);
    let row = take(&engine, &fine).await;
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    assert_eq!(
        row.parent_uuid.as_deref(),
        Some(after_truncate.uuid.as_str())
    );

    // A chain member whose file is gone: the next incremental cannot build on it.
    let manifest = restore::manifest_of(&engine.state, &after_truncate.uuid)
        .await
        .unwrap();
    std::fs::remove_file(engine.path_of(&manifest.tables[0].key)).unwrap();
    let after_loss = incremental(BackupScope::Table, None, &picked);
    let row = take(&engine, &after_loss).await;
    fallback(&row, &after_loss.uuid, "failed verification");
    // And restoring the incremental built on the damaged full fails instead of lying.
    let inc = restore::manifest_of(&engine.state, &fine.uuid)
        .await
        .unwrap();
    let target = TestDb::empty().await;
    let err = restore::restore_into_database(
        &engine.state,
        &inc,
        &target.conn,
        None,
        RestoreMode::Fresh,
        None,
    )
    .await
    .expect_err("a chain with a missing file does not restore");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn a_tenant_chain_restores_into_a_new_database_like_a_full_taken_at_the_same_point() {
    let source = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&source).await;
    take(&engine, &spec(BackupScope::Tenant, Some(1), &[])).await;
    // Changes of tenant 1 and of tenant 2 (which must not show), a row moving between
    // tenants, and join-table rows that change tenant through their parent.
    exec(
        &source.pool,
        "INSERT INTO core_users (tenant_id, username) VALUES (1, 't1-new'), (2, 't2-new');
         UPDATE core_users SET tenant_id = 2 WHERE id = 1;
         UPDATE core_users SET deleted_at = now() WHERE id = 7;
         DELETE FROM apps_orders WHERE tenant_id = 1 AND id = (SELECT max(id) FROM apps_orders WHERE tenant_id = 1);
         INSERT INTO core_user_roles (user_id, role_id)
           SELECT id, 1 FROM core_users WHERE username = 't1-new';",
    )
    .await;
    let inc = incremental(BackupScope::Tenant, Some(1), &[]);
    let row = take(&engine, &inc).await;
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    let full_now = spec(BackupScope::Tenant, Some(1), &[]);
    take(&engine, &full_now).await;

    let from_chain = restore_fresh(&engine, &inc.uuid).await;
    let from_full = restore_fresh(&engine, &full_now.uuid).await;
    let tables = app_tables(&from_full).await;
    assert_eq!(
        state_of(&from_chain, &tables).await,
        state_of(&from_full, &tables).await
    );
}

#[tokio::test]
async fn a_backup_execute_event_of_type_incremental_builds_on_the_last_backup() {
    use crate::helpers::{assert_completed, insert_pending, spawn_app};
    let db = TestDb::with_fixture().await;
    let app = spawn_app(&db).await;
    let event = |uuid: &str| serde_json::json!({"tenant_id": 1, "backup_id": uuid});
    let full = insert_pending(&db.pool, Some(1), "tenant", None).await;
    assert_completed(
        &app.run("backup-execute", "backup/execute", event(&full))
            .await,
    );

    let inc = insert_pending(&db.pool, Some(1), "tenant", None).await;
    exec(
        &db.pool,
        &format!("UPDATE root_data_backups SET backup_type = 'incremental' WHERE uuid = '{inc}'"),
    )
    .await;
    let run = app
        .run("backup-execute", "backup/execute", event(&inc))
        .await;
    assert_completed(&run);
    let row = chain_row(&db.pool, &inc).await;
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    assert_eq!(row.parent_uuid.as_deref(), Some(full.as_str()));
    assert_eq!(row.chain_uuid.as_deref(), Some(full.as_str()));
    app.shutdown.cancel();
}

#[tokio::test]
async fn a_partitioned_table_chain_restores_and_a_truncated_partition_forces_a_full() {
    let source = TestDb::migrated().await;
    exec(
        &source.pool,
        "CREATE TABLE events (id int PRIMARY KEY, tenant_id int, body text) PARTITION BY RANGE (id);
         CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100);
         CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (100) TO (1000);
         INSERT INTO events SELECT g, 1, 'e' || g FROM generate_series(1, 200) g;",
    )
    .await;
    let engine = Engine::new(&source).await;
    let tables = [TableRef::new("public", "events")];
    take(&engine, &spec(BackupScope::All, None, &[])).await;
    exec(
        &source.pool,
        "UPDATE events SET body = 'changed' WHERE id IN (5, 150);
         DELETE FROM events WHERE id IN (6, 151);
         INSERT INTO events VALUES (999, 1, 'new');",
    )
    .await;
    let inc = incremental(BackupScope::All, None, &[]);
    let row = take(&engine, &inc).await;
    assert_eq!(row.backup_type, "incremental", "{:?}", row.fallback_reason);
    let restored = restore_fresh(&engine, &inc.uuid).await;
    assert_eq!(
        state_of(&restored, &tables).await,
        state_of(&source, &tables).await
    );

    exec(&source.pool, "TRUNCATE events_low").await;
    let after = incremental(BackupScope::All, None, &[]);
    let row = take(&engine, &after).await;
    assert_eq!(row.backup_type, "full");
    assert!(row
        .fallback_reason
        .unwrap_or_default()
        .contains("public.events_low"));
}
