//! Restores against a real PostgreSQL: live table replacement (all or nothing, never moving a
//! sequence backwards), refusal when outside tables reference the set, compatibility reports,
//! and drills that always drop their scratch database.

use riveredge_backup::backup::BackupScope;
use riveredge_backup::catalog::TableRef;
use riveredge_backup::restore::{self, RestoreError, RestoreMode};

use crate::backup::{spec, Engine};
use crate::helpers::{database_exists, table_checksum, TestDb};

/// A set of tables no table outside it references: the first FK cycle and its neighbours.
const CLOSED_SET: &[&str] = &[
    "core_departments",
    "core_positions",
    "core_users",
    "core_user_roles",
];

async fn checksums(db: &TestDb, tables: &[&str]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for t in tables {
        out.push(table_checksum(&db.pool, t, "true").await);
    }
    out
}

async fn scribble(db: &TestDb) {
    db.execute_script(
        "UPDATE core_users SET full_name = 'changed' WHERE tenant_id = 1;
         DELETE FROM core_user_roles WHERE user_id IN (SELECT id FROM core_users WHERE tenant_id = 2);
         INSERT INTO core_departments (uuid, tenant_id, name) VALUES ('new', 3, 'new dept');",
    )
    .await;
}

async fn seq_value(db: &TestDb, seq: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT last_value FROM {seq}"))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn replacing_live_tables_brings_back_the_backed_up_rows_without_moving_sequences_back() {
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let before = checksums(&db, CLOSED_SET).await;
    let outcome = riveredge_backup::backup::run(
        &engine.state,
        &spec(BackupScope::Table, None, CLOSED_SET),
        None,
    )
    .await
    .unwrap();
    scribble(&db).await;
    assert_ne!(checksums(&db, CLOSED_SET).await, before);
    let seq_after_insert = seq_value(&db, "core_departments_id_seq").await;

    let report = restore::restore_into_database(
        &engine.state,
        &outcome.manifest,
        &db.conn,
        None,
        RestoreMode::ReplaceTables,
        None,
    )
    .await
    .unwrap();

    assert_eq!(report.tables.len(), CLOSED_SET.len());
    assert!(report.tables.iter().all(restore::TableCheck::matches));
    assert_eq!(checksums(&db, CLOSED_SET).await, before);
    assert_eq!(
        seq_value(&db, "core_departments_id_seq").await,
        seq_after_insert,
        "sequences never go backwards"
    );
    let fks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conname = 'core_departments_manager_id_fkey'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(fks, 1, "the cycle's foreign key is back");
}

#[tokio::test]
async fn a_replace_that_fails_midway_leaves_the_database_exactly_as_it_was() {
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let outcome = riveredge_backup::backup::run(
        &engine.state,
        &spec(BackupScope::Table, None, CLOSED_SET),
        None,
    )
    .await
    .unwrap();
    scribble(&db).await;
    let before = checksums(&db, CLOSED_SET).await;
    // The second table's file is damaged: the first table is already loaded when it fails.
    let second = &outcome.manifest.tables[1];
    let path = engine.path_of(&second.key);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let err = restore::restore_into_database(
        &engine.state,
        &outcome.manifest,
        &db.conn,
        None,
        RestoreMode::ReplaceTables,
        None,
    )
    .await
    .unwrap_err();

    assert!(matches!(err, RestoreError::Artifact(_)), "{err}");
    assert!(err.to_string().contains(&second.key), "{err}");
    assert_eq!(
        checksums(&db, CLOSED_SET).await,
        before,
        "rolled back completely"
    );
}

#[tokio::test]
async fn replacing_a_table_that_an_outside_table_references_is_refused_by_name() {
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let outcome = riveredge_backup::backup::run(
        &engine.state,
        &spec(BackupScope::Table, None, &["core_users"]),
        None,
    )
    .await
    .unwrap();
    let before = checksums(&db, &["core_users"]).await;

    let err = restore::restore_into_database(
        &engine.state,
        &outcome.manifest,
        &db.conn,
        None,
        RestoreMode::ReplaceTables,
        None,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(err, RestoreError::ReferencedFromOutside { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("core_departments") || err.to_string().contains("core_user_roles"),
        "{err}"
    );
    assert_eq!(checksums(&db, &["core_users"]).await, before);
}

#[tokio::test]
async fn an_incompatible_target_is_reported_column_by_column_before_anything_changes() {
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let outcome = riveredge_backup::backup::run(
        &engine.state,
        &spec(BackupScope::Table, None, &["infra_platform_settings"]),
        None,
    )
    .await
    .unwrap();
    db.execute_script(
        "ALTER TABLE infra_platform_settings ALTER COLUMN key TYPE varchar(200), DROP COLUMN value",
    )
    .await;

    let err = restore::restore_into_database(
        &engine.state,
        &outcome.manifest,
        &db.conn,
        None,
        RestoreMode::ReplaceTables,
        None,
    )
    .await
    .unwrap_err();

    let RestoreError::Incompatible(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("infra_platform_settings.key is character varying(200) in the target but character varying(100)")), "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("infra_platform_settings.value (text) does not exist")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_subset_of_a_whole_database_backup_can_replace_just_those_tables() {
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let outcome =
        riveredge_backup::backup::run(&engine.state, &spec(BackupScope::All, None, &[]), None)
            .await
            .unwrap();
    let before = checksums(&db, &["infra_platform_settings", "aerich"]).await;
    db.execute_script("DELETE FROM infra_platform_settings; DELETE FROM aerich;")
        .await;
    let subset = vec![
        TableRef::new("public", "infra_platform_settings"),
        TableRef::new("public", "aerich"),
    ];

    restore::restore_into_database(
        &engine.state,
        &outcome.manifest,
        &db.conn,
        Some(subset),
        RestoreMode::ReplaceTables,
        None,
    )
    .await
    .unwrap();

    assert_eq!(
        checksums(&db, &["infra_platform_settings", "aerich"]).await,
        before
    );
}

#[tokio::test]
async fn a_drill_restores_every_table_into_a_scratch_database_and_drops_it() {
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let s = spec(BackupScope::All, None, &[]);
    let outcome = riveredge_backup::commands::take_backup(&engine.state, &s, "drill-test")
        .await
        .unwrap();

    let report = restore::drill(&engine.state, &s.uuid).await.unwrap();

    assert_eq!(report.tables.len(), outcome.manifest.tables.len());
    assert!(report.tables.iter().all(restore::TableCheck::matches));
    assert_eq!(report.rows, outcome.rows);
    assert!(
        !database_exists(&report.database).await,
        "scratch database dropped"
    );
}

#[tokio::test]
async fn a_failed_drill_still_drops_its_scratch_database() {
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let s = spec(BackupScope::All, None, &[]);
    let outcome = riveredge_backup::commands::take_backup(&engine.state, &s, "drill-test")
        .await
        .unwrap();
    let last = outcome.manifest.tables.last().unwrap();
    let path = engine.path_of(&last.key);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let err = restore::drill(&engine.state, &s.uuid).await.unwrap_err();

    assert!(matches!(err, RestoreError::Artifact(_)), "{err}");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)")
            .bind(restore::scratch_prefix(&s.uuid))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "no scratch database of this backup is left");
}
