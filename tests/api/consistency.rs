//! The schema and the rows of a backup agree (issue 11): DDL and TRUNCATE racing the snapshot
//! are captured or refused, `verify` catches a schema archive, manifest and data files that
//! list different tables, and tenant artifacts are matched to the live schema structurally.
//!
//! Races are made deterministic without sleeps: another session holds the conflicting lock in
//! an open transaction, the test watches `pg_locks` until the backup waits for it, and only
//! then commits.

use riveredge_backup::artifact::{ArtifactError, Manifest, FORMAT_V1};
use riveredge_backup::backup::{self, BackupError, BackupScope};
use riveredge_backup::catalog::{Catalog, TableRef};
use riveredge_backup::tenant::restore::{
    restore as tenant_restore, RestoreOptions, TenantRestoreError,
};
use riveredge_backup::tenant::TenantPlan;
use sqlx::{Connection, PgConnection, PgPool};

use crate::backup::{backup_ok, spec, Engine};
use crate::helpers::{table_checksum, TestDb};

/// A session of its own with an open transaction that has run `sql`.
async fn hold(db: &TestDb, sql: &str) -> PgConnection {
    let mut conn = PgConnection::connect_with(&db.conn.connect_options())
        .await
        .unwrap();
    sqlx::raw_sql(&format!("BEGIN; {sql}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Returns once some session waits for a lock on `table` (bounded: 60 s of polling).
async fn until_someone_waits_for(pool: &PgPool, table: &str) {
    let oid: sqlx::postgres::types::Oid = sqlx::query_scalar("SELECT $1::regclass::oid")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap();
    let poll = async {
        loop {
            let waiting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = $1 AND NOT granted)",
            )
            .bind(oid)
            .fetch_one(pool)
            .await
            .unwrap();
            if waiting {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), poll)
        .await
        .expect("the backup waits for the lock");
}

async fn commit(mut conn: PgConnection) {
    sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_truncate_committing_while_the_backup_waits_for_its_lock_is_captured_whole() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let blocker = hold(
        &db,
        "TRUNCATE core_operation_logs;
         INSERT INTO core_operation_logs (tenant_id, operation) VALUES (1, 'after'), (2, 'after');",
    )
    .await;
    let s = spec(
        BackupScope::Table,
        None,
        &["core_roles", "core_operation_logs"],
    );
    let state = engine.state.clone();
    let spec_ = s.clone();
    let running = tokio::spawn(async move { backup::run(&state, &spec_, None).await });
    until_someone_waits_for(&db.pool, "core_operation_logs").await;

    commit(blocker).await;
    let outcome = running.await.unwrap().unwrap();

    let logs = outcome
        .manifest
        .tables
        .iter()
        .find(|t| t.name == "core_operation_logs")
        .unwrap();
    assert_eq!(
        logs.rows, 2,
        "the snapshot is taken after the lock, so it sees the truncate and its new rows"
    );
    let target = TestDb::empty().await;
    riveredge_backup::restore::restore_into_database(
        &engine.state,
        &outcome.manifest,
        &target.conn,
        None,
        riveredge_backup::restore::RestoreMode::Fresh,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        table_checksum(&target.pool, "core_operation_logs", "true").await,
        table_checksum(&db.pool, "core_operation_logs", "true").await
    );
}

#[tokio::test]
async fn a_table_created_while_a_whole_database_backup_starts_refuses_it_retriably() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let blocker = hold(
        &db,
        "LOCK TABLE core_roles IN ACCESS EXCLUSIVE MODE;
         CREATE TABLE apps_new (id int PRIMARY KEY); INSERT INTO apps_new VALUES (1);",
    )
    .await;
    let s = spec(BackupScope::All, None, &[]);
    let state = engine.state.clone();
    let spec_ = s.clone();
    let running = tokio::spawn(async move { backup::run(&state, &spec_, None).await });
    until_someone_waits_for(&db.pool, "core_roles").await;

    commit(blocker).await;
    let err = running.await.unwrap().unwrap_err();

    assert!(matches!(err, BackupError::SchemaChanged(_)), "{err}");
    assert!(
        err.to_string().contains("public.apps_new appeared"),
        "{err}"
    );
    assert!(err.is_retriable());
    assert!(engine.files(&s.uuid).is_empty(), "nothing is left behind");
}

#[tokio::test]
async fn a_table_dropped_while_the_backup_waits_for_its_lock_refuses_it_retriably() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let blocker = hold(&db, "DROP TABLE core_operation_logs;").await;
    let s = spec(BackupScope::Table, None, &["core_operation_logs"]);
    let state = engine.state.clone();
    let spec_ = s.clone();
    let running = tokio::spawn(async move { backup::run(&state, &spec_, None).await });
    until_someone_waits_for(&db.pool, "core_operation_logs").await;

    commit(blocker).await;
    let err = running.await.unwrap().unwrap_err();

    assert!(matches!(err, BackupError::SchemaChanged(_)), "{err}");
    assert!(err.is_retriable());
}

fn read_manifest(engine: &Engine, uuid: &str) -> Manifest {
    let path = engine.path_of(&format!("{uuid}/manifest.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_manifest(engine: &Engine, manifest: &Manifest) {
    let path = engine.path_of(&format!("{}/manifest.json", manifest.backup_uuid));
    std::fs::write(path, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
}

async fn verify_err(engine: &Engine, uuid: &str) -> ArtifactError {
    backup::verify(&engine.state, uuid, None)
        .await
        .expect_err("verification fails")
}

#[tokio::test]
async fn verify_fails_when_the_schema_dump_has_a_table_the_manifest_does_not_list() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let s = spec(
        BackupScope::Table,
        None,
        &["core_roles", "core_departments"],
    );
    backup_ok(&engine, &s).await;
    let mut manifest = read_manifest(&engine, &s.uuid);
    let dropped = manifest
        .tables
        .iter()
        .position(|t| t.name == "core_departments")
        .unwrap();
    let entry = manifest.tables.remove(dropped);
    std::fs::remove_file(engine.path_of(&entry.key)).unwrap();
    write_manifest(&engine, &manifest);

    let err = verify_err(&engine, &s.uuid).await;

    assert!(matches!(err, ArtifactError::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("core_departments"), "{err}");
}

#[tokio::test]
async fn verify_fails_when_a_data_file_has_no_table_in_the_schema_dump() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let small = spec(BackupScope::Table, None, &["core_roles"]);
    let both = spec(
        BackupScope::Table,
        None,
        &["core_roles", "core_departments"],
    );
    let small_outcome = backup_ok(&engine, &small).await;
    backup_ok(&engine, &both).await;
    let mut manifest = read_manifest(&engine, &both.uuid);
    std::fs::copy(
        engine.path_of(&small_outcome.manifest.schema.key),
        engine.path_of(&manifest.schema.key),
    )
    .unwrap();
    manifest.schema.sha256 = small_outcome.manifest.schema.sha256.clone();
    manifest.schema.size = small_outcome.manifest.schema.size;
    write_manifest(&engine, &manifest);

    let err = verify_err(&engine, &both.uuid).await;

    assert!(matches!(err, ArtifactError::SchemaMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("public.core_departments has a data file but no table in the schema dump"),
        "{err}"
    );
}

#[tokio::test]
async fn verify_fails_on_a_stray_data_file_the_manifest_does_not_list() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let s = spec(BackupScope::Table, None, &["core_roles"]);
    let outcome = backup_ok(&engine, &s).await;
    std::fs::copy(
        engine.path_of(&outcome.manifest.tables[0].key),
        engine.path_of(&format!("{}/data/0099.copy.zst", s.uuid)),
    )
    .unwrap();

    let err = verify_err(&engine, &s.uuid).await;

    assert!(matches!(err, ArtifactError::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("0099.copy.zst"), "{err}");
}

fn own_tables() -> Vec<TableRef> {
    riveredge_backup::db::OWN_TABLES
        .iter()
        .map(|t| TableRef::new("public", t))
        .collect()
}

async fn try_tenant_restore(
    db: &TestDb,
    engine: &Engine,
    manifest: &Manifest,
) -> Result<(), TenantRestoreError> {
    let catalog = Catalog::load(&db.pool).await.unwrap();
    let mut conn = PgConnection::connect_with(&db.conn.connect_options())
        .await
        .unwrap();
    let opts = RestoreOptions {
        skip: own_tables(),
        ..RestoreOptions::new(1)
    };
    tenant_restore(
        &mut conn,
        &catalog,
        engine.state.storage.as_ref(),
        manifest,
        &opts,
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn a_tenant_artifact_whose_ownership_plan_differs_structurally_from_the_live_schema_is_refused(
) {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let outcome = backup_ok(&engine, &spec(BackupScope::Tenant, Some(1), &[])).await;
    db.execute_script("ALTER TABLE core_user_roles DROP CONSTRAINT core_user_roles_role_id_fkey")
        .await;

    let err = try_tenant_restore(&db, &engine, &outcome.manifest)
        .await
        .unwrap_err();

    let TenantRestoreError::Incompatible(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("public.core_user_roles"),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("ownership plan differs"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_format_1_tenant_artifact_restores_when_the_live_schema_reproduces_its_sql_and_is_refused_with_a_reason_otherwise(
) {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let outcome = backup_ok(&engine, &spec(BackupScope::Tenant, Some(1), &[])).await;
    let catalog = Catalog::load(&db.pool).await.unwrap();
    let plan = TenantPlan::build(&catalog, 1, &own_tables());
    let mut legacy = outcome.manifest.clone();
    legacy.format = FORMAT_V1.to_owned();
    legacy.ownership = None;
    for t in &mut legacy.tables {
        t.predicate = Some(plan.predicate_over(&t.table_ref(), "t").unwrap());
    }
    let mut cosmetic = legacy.clone();
    let roles = cosmetic
        .tables
        .iter_mut()
        .find(|t| t.name == "core_user_roles")
        .unwrap();
    roles.predicate = roles.predicate.as_ref().map(|p| format!("({p})"));

    let refused = try_tenant_restore(&db, &engine, &cosmetic)
        .await
        .unwrap_err();
    try_tenant_restore(&db, &engine, &legacy)
        .await
        .expect("a format 1 artifact the live schema reproduces is restored");

    assert!(
        refused.to_string().contains("riveredge-backup/1"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("take a new backup"),
        "{refused}"
    );
}
