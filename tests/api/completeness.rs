//! Backup completeness on the awkward fixture (issue 11), for every scope (all, table, tenant,
//! table + tenant): the backup restores into a new database with the same rows and sequence
//! values, drills, and restores into the live database leaving every sequence at or above
//! every column that draws from it (never moving one backwards); and a tenant backup taken
//! later, restored over an older full restore, leaves no sequence behind.

use riveredge_backup::artifact::Manifest;
use riveredge_backup::backup::{BackupOutcome, BackupScope};
use riveredge_backup::catalog::{Catalog, TableRef};
use riveredge_backup::restore::sequences::handed_out;
use riveredge_backup::restore::{self, RestoreMode};
use riveredge_backup::tenant::restore::{restore as tenant_restore, RestoreOptions};
use sqlx::Connection;

use crate::awkward::{
    checksums, insert_everywhere, sequence_values, sequences_behind, sequences_of, tenant_filter,
    DRAWS, LATER_WRITES, TABLES,
};
use crate::backup::{spec, Engine};
use crate::helpers::{database_exists, TestDb};

/// One scope to exercise: what is asked for and which tables' rows the backup holds.
struct Case {
    scope: BackupScope,
    tenant: Option<i32>,
    requested: &'static [&'static str],
    covered: &'static [&'static str],
}

const CYCLE: &[&str] = &["apps_orders", "apps_shipments", "apps_invoices"];
const USERS: &[&str] = &["core_users", "core_user_roles"];

const ALL: Case = Case {
    scope: BackupScope::All,
    tenant: None,
    requested: &[],
    covered: TABLES,
};
const TABLE: Case = Case {
    scope: BackupScope::Table,
    tenant: None,
    requested: CYCLE,
    covered: CYCLE,
};
const TENANT: Case = Case {
    scope: BackupScope::Tenant,
    tenant: Some(1),
    requested: &[],
    covered: TABLES,
};
const TABLE_TENANT: Case = Case {
    scope: BackupScope::Table,
    tenant: Some(1),
    requested: USERS,
    covered: USERS,
};

impl Case {
    fn filter(&self, table: &str) -> String {
        self.tenant
            .map_or_else(|| "true".to_owned(), |n| tenant_filter(table, n))
    }
}

/// What the source looked like when the backup was taken.
struct Taken {
    source: TestDb,
    engine: Engine,
    outcome: BackupOutcome,
    rows: std::collections::BTreeMap<String, (i64, String)>,
    sequences: std::collections::BTreeMap<String, (i64, bool)>,
}

async fn take(case: &Case) -> Taken {
    let source = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&source).await;
    let s = spec(case.scope, case.tenant, case.requested);
    let outcome = riveredge_backup::commands::take_backup(&engine.state, &s, "completeness")
        .await
        .unwrap_or_else(|e| panic!("backup: {e:#}"));
    let rows = checksums(&source.pool, case.covered, |t| case.filter(t)).await;
    let sequences = sequence_values(&source.pool, &sequences_of(case.covered)).await;
    Taken {
        source,
        engine,
        outcome,
        rows,
        sequences,
    }
}

fn manifest_sequences(manifest: &Manifest) -> Vec<String> {
    let mut names: Vec<String> = manifest
        .sequences
        .iter()
        .map(|s| s.sequence_ref().to_string())
        .collect();
    names.sort();
    names
}

/// Backup → new database: same rows, same sequence values, inserts work; then the drill.
async fn restores_fresh_and_drills(case: &Case) -> Taken {
    let taken = take(case).await;
    assert_eq!(
        manifest_sequences(&taken.outcome.manifest),
        sequences_of(case.covered),
        "the manifest holds every sequence the tables draw from"
    );
    let target = TestDb::empty().await;

    restore::restore_into_database(
        &taken.engine.state,
        &taken.outcome.manifest,
        &target.conn,
        None,
        RestoreMode::Fresh,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("fresh restore: {e}"));

    assert_eq!(
        checksums(&target.pool, case.covered, |_| "true".to_owned()).await,
        taken.rows
    );
    assert_eq!(
        sequence_values(&target.pool, &sequences_of(case.covered)).await,
        taken.sequences,
        "a new database gets the backup's sequence values"
    );
    assert_eq!(sequences_behind(&target.pool).await, Vec::<String>::new());
    insert_everywhere(&target.pool).await;

    let drill = restore::drill(&taken.engine.state, &taken.outcome.manifest.backup_uuid)
        .await
        .unwrap_or_else(|e| panic!("drill: {e}"));
    assert_eq!(drill.tables.len(), taken.outcome.manifest.tables.len());
    assert!(drill.tables.iter().all(restore::TableCheck::matches));
    assert!(!database_exists(&drill.database).await);
    taken
}

/// Handed-out values of the fixture's sequences.
async fn handed(db: &TestDb) -> std::collections::BTreeMap<String, i64> {
    let names: Vec<&str> = sequences_of(TABLES);
    sequence_values(&db.pool, &names)
        .await
        .into_iter()
        .map(|(k, (v, c))| (k, handed_out(v, c)))
        .collect()
}

/// After a live restore: the backed-up rows are back, no sequence moved backwards, none is
/// behind a column, and every table takes new rows.
async fn assert_live_restore_kept_sequences(
    case: &Case,
    taken: &Taken,
    before: &std::collections::BTreeMap<String, i64>,
) {
    assert_eq!(
        checksums(&taken.source.pool, case.covered, |t| case.filter(t)).await,
        taken.rows
    );
    let after = handed(&taken.source).await;
    for (name, value) in before {
        assert!(
            after[name] >= *value,
            "{name} moved back from {value} to {}",
            after[name]
        );
    }
    assert_eq!(
        sequences_behind(&taken.source.pool).await,
        Vec::<String>::new()
    );
    insert_everywhere(&taken.source.pool).await;
}

async fn replaces_live_tables(case: &Case, taken: &Taken) {
    taken.source.execute_script(LATER_WRITES).await;
    let before = handed(&taken.source).await;

    restore::restore_into_database(
        &taken.engine.state,
        &taken.outcome.manifest,
        &taken.source.conn,
        None,
        RestoreMode::ReplaceTables,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("live restore: {e}"));

    assert_live_restore_kept_sequences(case, taken, &before).await;
}

fn own_tables() -> Vec<TableRef> {
    riveredge_backup::db::OWN_TABLES
        .iter()
        .map(|t| TableRef::new("public", t))
        .collect()
}

async fn restore_tenant(db: &TestDb, engine: &Engine, manifest: &Manifest, tenant: i32) {
    let catalog = Catalog::load(&db.pool).await.unwrap();
    let mut conn = sqlx::PgConnection::connect_with(&db.conn.connect_options())
        .await
        .unwrap();
    let opts = RestoreOptions {
        skip: own_tables(),
        ..RestoreOptions::new(tenant)
    };
    tenant_restore(
        &mut conn,
        &catalog,
        engine.state.storage.as_ref(),
        manifest,
        &opts,
    )
    .await
    .unwrap_or_else(|e| panic!("tenant restore: {e}"));
}

async fn restores_the_tenant_live(case: &Case, taken: &Taken) {
    taken.source.execute_script(LATER_WRITES).await;
    let before = handed(&taken.source).await;

    restore_tenant(&taken.source, &taken.engine, &taken.outcome.manifest, 1).await;

    assert_live_restore_kept_sequences(case, taken, &before).await;
}

#[tokio::test]
async fn the_catalog_finds_every_sequence_a_column_draws_from_renamed_shared_and_cross_schema() {
    let db = TestDb::with_awkward_fixture().await;

    let catalog = Catalog::load(&db.pool).await.unwrap();

    let mut found: Vec<(String, String, String)> = catalog
        .sequences
        .iter()
        .flat_map(|s| {
            s.used_by
                .iter()
                .filter(|(t, _)| !t.name.starts_with("root_data"))
                .map(|(t, c)| (s.sequence.to_string(), t.name.clone(), c.clone()))
        })
        .collect();
    found.sort();
    let mut expected: Vec<(String, String, String)> = DRAWS
        .iter()
        .map(|(s, t, c)| ((*s).to_owned(), (*t).to_owned(), (*c).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    let users = TableRef::new("public", "core_users");
    let seq = catalog
        .sequences_of(&users)
        .next()
        .expect("core_users' sequence");
    assert_eq!(seq.sequence.name, "root_users_id_seq");
    assert!(seq.owned_by.is_none(), "renamed sequences have no owner");
    let code = catalog
        .sequences
        .iter()
        .find(|s| s.sequence.name == "root_invoice_code_seq")
        .unwrap();
    assert_eq!(code.tables, vec![TableRef::new("public", "apps_invoices")]);
    assert!(
        code.used_by.is_empty(),
        "a text column has no maximum to compare"
    );
}

#[tokio::test]
async fn a_whole_database_backup_restores_fresh_drills_and_replaces_live_without_rewinding_sequences(
) {
    let taken = restores_fresh_and_drills(&ALL).await;
    replaces_live_tables(&ALL, &taken).await;
}

#[tokio::test]
async fn a_table_backup_restores_fresh_with_its_unowned_and_cross_schema_sequences_and_drills() {
    let taken = restores_fresh_and_drills(&TABLE).await;
    replaces_live_tables(&TABLE, &taken).await;
}

#[tokio::test]
async fn a_tenant_backup_restores_fresh_drills_and_restores_live_above_every_column_max() {
    let taken = restores_fresh_and_drills(&TENANT).await;
    assert!(
        taken.outcome.manifest.ownership.is_some(),
        "tenant artifacts carry the typed ownership plan"
    );
    restores_the_tenant_live(&TENANT, &taken).await;
}

#[tokio::test]
async fn a_tenant_table_backup_restores_fresh_drills_and_restores_live_above_every_column_max() {
    let taken = restores_fresh_and_drills(&TABLE_TENANT).await;
    restores_the_tenant_live(&TABLE_TENANT, &taken).await;
}

#[tokio::test]
async fn a_later_tenant_backup_restored_over_an_older_full_restore_leaves_no_sequence_behind() {
    let source = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&source).await;
    let full = crate::backup::backup_ok(&engine, &spec(BackupScope::All, None, &[])).await;
    source.execute_script(LATER_WRITES).await;
    let tenant = crate::backup::backup_ok(&engine, &spec(BackupScope::Tenant, Some(1), &[])).await;
    let tenant_rows = checksums(&source.pool, TABLES, |t| tenant_filter(t, 1)).await;
    let target = TestDb::empty().await;
    restore::restore_into_database(
        &engine.state,
        &full.manifest,
        &target.conn,
        None,
        RestoreMode::Fresh,
        None,
    )
    .await
    .unwrap();

    restore_tenant(&target, &engine, &tenant.manifest, 1).await;

    assert_eq!(
        checksums(&target.pool, TABLES, |t| tenant_filter(t, 1)).await,
        tenant_rows
    );
    assert_eq!(sequences_behind(&target.pool).await, Vec::<String>::new());
    insert_everywhere(&target.pool).await;
}

#[tokio::test]
async fn two_drills_of_one_backup_at_once_use_distinct_scratch_databases() {
    let source = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&source).await;
    let s = spec(BackupScope::Tenant, Some(2), &[]);
    riveredge_backup::commands::take_backup(&engine.state, &s, "drills")
        .await
        .unwrap();

    let (a, b) = tokio::join!(
        restore::drill(&engine.state, &s.uuid),
        restore::drill(&engine.state, &s.uuid)
    );

    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.database, b.database);
    assert!(a.database.starts_with(&restore::scratch_prefix(&s.uuid)));
    assert!(!database_exists(&a.database).await && !database_exists(&b.database).await);
}
