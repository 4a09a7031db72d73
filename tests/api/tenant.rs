//! Tenant ownership (which rows a tenant backup holds) and live tenant restore, against the
//! RiverEdge-shaped fixture: tenants 1-3 with data, 4 empty, 99 nonexistent.

use std::collections::BTreeMap;

use riveredge_backup::artifact::Manifest;
use riveredge_backup::catalog::{Catalog, TableRef};
use riveredge_backup::storage::{LocalStorage, ObjectKey, Storage};
use riveredge_backup::tenant::restore::{
    restore, RestoreOptions, RestoreReport, TenantRestoreError,
};
use riveredge_backup::tenant::{tenant_exists, Ownership, TenantError, TenantPlan};
use sqlx::{Connection, PgPool};
use tokio::io::AsyncWriteExt;

use crate::helpers::{table_checksum, TestDb};

fn public(name: &str) -> TableRef {
    TableRef::new("public", name)
}

fn own_tables() -> Vec<TableRef> {
    riveredge_backup::db::OWN_TABLES
        .iter()
        .map(|t| public(t))
        .collect()
}

async fn catalog(pool: &PgPool) -> Catalog {
    Catalog::load(pool).await.unwrap()
}

async fn plan(db: &TestDb, tenant: i32) -> TenantPlan {
    TenantPlan::build(&catalog(&db.pool).await, tenant, &own_tables())
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows of `table` matching the plan's predicate.
async fn selected(pool: &PgPool, plan: &TenantPlan, table: &str, extra: &str) -> i64 {
    let owned = plan
        .table(&public(table))
        .unwrap_or_else(|| panic!("{table} not in plan"));
    count(
        pool,
        &format!(
            "SELECT count(*) FROM public.{table} t WHERE ({}) AND {extra}",
            owned.predicate
        ),
    )
    .await
}

/// The oracle's idea of tenant `n`'s rows (hand-written, independent of the plan).
fn tenant_filter(table: &str, n: i32) -> String {
    match table {
        "core_user_roles" => format!(
            "user_id IN (SELECT id FROM core_users WHERE tenant_id = {n}) OR role_id IN (SELECT id FROM core_roles WHERE tenant_id = {n})"
        ),
        "core_role_permissions" => format!(
            "role_id IN (SELECT id FROM core_roles WHERE tenant_id = {n}) OR permission_id IN (SELECT id FROM core_permissions WHERE tenant_id = {n})"
        ),
        "infra_platform_settings" | "aerich" => "false".to_owned(),
        _ => format!("tenant_id = {n}"),
    }
}

async fn public_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
           AND tablename <> ALL($1) ORDER BY 1",
    )
    .bind(riveredge_backup::db::OWN_TABLES)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Oracle checksums of every table, restricted by `filter(table)`.
async fn checksums(
    pool: &PgPool,
    filter: impl Fn(&str) -> String,
) -> BTreeMap<String, (i64, String)> {
    let mut out = BTreeMap::new();
    for t in public_tables(pool).await {
        let f = filter(&t);
        out.insert(
            t.clone(),
            table_checksum(pool, &format!("\"{t}\""), &f).await,
        );
    }
    out
}

async fn tenant_rows(pool: &PgPool, n: i32) -> BTreeMap<String, (i64, String)> {
    checksums(pool, |t| tenant_filter(t, n)).await
}

async fn everyone_else(pool: &PgPool, n: i32) -> BTreeMap<String, (i64, String)> {
    checksums(pool, |t| format!("({}) IS NOT TRUE", tenant_filter(t, n))).await
}

async fn everything(pool: &PgPool) -> BTreeMap<String, (i64, String)> {
    checksums(pool, |_| "true".to_owned()).await
}

async fn sequences(pool: &PgPool) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sequencename::text, coalesce(last_value, 0) FROM pg_sequences WHERE schemaname = 'public'")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// A format 1 (`riveredge-backup/1`, SQL predicates) tenant backup, so these tests also cover
/// reading the previous format. Its data files and manifest are made the way design.md describes them (COPY with the plan's predicates in one
/// snapshot, fixed session settings, zstd, sha256, rows and xxh3 content hash, manifest). The
/// hashing here is written independently of the worker's.
async fn tenant_backup(db: &TestDb, storage: &LocalStorage, tenant: i32) -> Manifest {
    use futures::TryStreamExt;
    let catalog = catalog(&db.pool).await;
    let plan = TenantPlan::build(&catalog, tenant, &own_tables());
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut conn = sqlx::PgConnection::connect_with(&db.conn.connect_options())
        .await
        .unwrap();
    sqlx::raw_sql(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC';
         SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let mut tables = Vec::new();
    for (i, owned) in plan.tables.iter().enumerate() {
        let table = catalog.table(&owned.table).unwrap();
        let columns: Vec<_> = table.copy_columns().collect();
        let list = columns
            .iter()
            .map(|c| format!("t.\"{}\"", c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "COPY (SELECT {list} FROM {} t WHERE {}) TO STDOUT",
            owned.table.quoted(),
            owned.predicate
        );
        let text: Vec<u8> = conn
            .copy_out_raw(&sql)
            .await
            .unwrap()
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap();
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let sum = lines
            .iter()
            .fold(0u64, |s, l| s.wrapping_add(xxhash_rust::xxh3::xxh3_64(l)));
        let mut encoder = async_compression::tokio::write::ZstdEncoder::new(Vec::new());
        encoder.write_all(&text).await.unwrap();
        encoder.shutdown().await.unwrap();
        let compressed = encoder.into_inner();
        let key = format!("{uuid}/data/{:04}.copy.zst", i + 1);
        put(storage, &key, &compressed).await;
        tables.push(serde_json::json!({
            "schema": owned.table.schema, "name": owned.table.name, "key": key,
            "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&compressed)),
            "size": compressed.len(), "raw_size": text.len(), "rows": lines.len(),
            "content_hash": format!("{sum:016x}"),
            "columns": columns.iter().map(|c| serde_json::json!({"name": c.name, "type": c.type_name, "not_null": c.not_null})).collect::<Vec<_>>(),
            "primary_key": table.primary_key, "predicate": owned.predicate,
        }));
    }
    sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
    let manifest = serde_json::json!({
        "format": "riveredge-backup/1", "backup_uuid": uuid, "backup_type": "full", "scope": "tenant",
        "tenant_id": tenant, "tables": tables, "sequences": [],
        // Provenance a restore does not read; the schema dump is not made here.
        "created_at": "2026-01-01T00:00:00Z", "database": db.name, "server_version": "15",
        "server_version_num": 150000, "tool_version": "test", "pg_dump_version": "none",
        "snapshot": { "snapshot_id": "none", "xmin": "0", "system_identifier": "0", "taken_at": "2026-01-01T00:00:00Z" },
        "compression": { "codec": "zstd", "level": 3 },
        "schema": { "key": format!("{uuid}/schema.dump"), "sha256": "", "size": 0 },
        "excluded_tables": plan.excluded.iter().map(|(t, r)| serde_json::json!({"schema": t.schema, "name": t.name, "reason": r})).collect::<Vec<_>>(),
    });
    put(
        storage,
        &format!("{uuid}/manifest.json"),
        manifest.to_string().as_bytes(),
    )
    .await;
    serde_json::from_value(manifest).unwrap()
}

async fn put(storage: &LocalStorage, key: &str, bytes: &[u8]) {
    let key = ObjectKey::parse(key).unwrap();
    let mut w = storage.create(&key).await.unwrap();
    w.write_all(bytes).await.unwrap();
    w.commit().await.unwrap();
}

/// Runs a tenant restore on a connection of its own, with the live catalog.
async fn run_restore(
    db: &TestDb,
    storage: &LocalStorage,
    manifest: &Manifest,
    tenant: i32,
) -> Result<RestoreReport, TenantRestoreError> {
    let catalog = catalog(&db.pool).await;
    let mut conn = sqlx::PgConnection::connect_with(&db.conn.connect_options())
        .await
        .unwrap();
    let opts = RestoreOptions {
        skip: own_tables(),
        ..RestoreOptions::new(tenant)
    };
    restore(&mut conn, &catalog, storage, manifest, &opts).await
}

fn storage() -> (tempfile::TempDir, LocalStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open(dir.path()).unwrap();
    (dir, storage)
}

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_plan_reaches_join_tables_through_foreign_keys_and_excludes_platform_tables_with_reasons(
) {
    let db = TestDb::with_fixture().await;

    let plan = plan(&db, 1).await;

    for join in ["core_user_roles", "core_role_permissions"] {
        let owned = plan
            .table(&public(join))
            .unwrap_or_else(|| panic!("{join} missing"));
        assert!(
            matches!(&owned.ownership, Ownership::ThroughForeignKeys(fks) if fks.len() == 2),
            "{join}: {:?}",
            owned.ownership
        );
    }
    assert_eq!(
        plan.table(&public("core_users")).unwrap().ownership,
        Ownership::Direct
    );
    let excluded: BTreeMap<String, String> = plan
        .excluded
        .iter()
        .map(|(t, r)| (t.name.clone(), r.clone()))
        .collect();
    assert_eq!(
        excluded.keys().collect::<Vec<_>>(),
        ["aerich", "infra_platform_settings"]
    );
    assert!(
        excluded.values().all(|r| r.contains("platform")),
        "{excluded:?}"
    );
    assert!(
        plan.tables.iter().all(|t| !own_tables().contains(&t.table)),
        "our own tables are never part of a tenant backup"
    );
}

#[tokio::test]
async fn the_predicates_select_exactly_the_tenants_rows_and_no_platform_or_foreign_rows() {
    let db = TestDb::with_fixture().await;
    let plan = plan(&db, 1).await;

    for owned in plan
        .tables
        .iter()
        .filter(|t| t.ownership == Ownership::Direct)
    {
        let name = &owned.table.name;
        let expected = count(
            &db.pool,
            &format!("SELECT count(*) FROM public.{name} WHERE tenant_id = 1"),
        )
        .await;
        assert_eq!(
            selected(&db.pool, &plan, name, "true").await,
            expected,
            "{name}"
        );
        assert_eq!(
            selected(&db.pool, &plan, name, "t.tenant_id IS DISTINCT FROM 1").await,
            0,
            "{name}: platform or foreign rows"
        );
    }

    let role_perms = count(
        &db.pool,
        "SELECT count(*) FROM core_role_permissions rp JOIN core_roles r ON r.id = rp.role_id JOIN core_permissions p ON p.id = rp.permission_id
         WHERE r.tenant_id = 1 AND (p.tenant_id IS NULL OR p.tenant_id = 1)",
    )
    .await;
    assert_eq!(role_perms, 18, "3 roles x (4 platform + 2 own) permissions");
    assert_eq!(
        selected(&db.pool, &plan, "core_role_permissions", "true").await,
        role_perms
    );
    let to_platform =
        "t.permission_id IN (SELECT id FROM core_permissions WHERE tenant_id IS NULL)";
    assert_eq!(
        selected(&db.pool, &plan, "core_role_permissions", to_platform).await,
        12,
        "links to platform permissions belong to the tenant"
    );
    let foreign = "t.role_id IN (SELECT id FROM core_roles WHERE tenant_id IS DISTINCT FROM 1)";
    assert_eq!(
        selected(&db.pool, &plan, "core_role_permissions", foreign).await,
        0,
        "platform roles' and tenant 2's links"
    );

    let user_roles = count(&db.pool, "SELECT count(*) FROM core_user_roles ur JOIN core_users u ON u.id = ur.user_id WHERE u.tenant_id = 1").await;
    assert_eq!(user_roles, 12);
    assert_eq!(
        selected(&db.pool, &plan, "core_user_roles", "true").await,
        user_roles
    );
    let platform_users = "t.user_id IN (SELECT id FROM core_users WHERE tenant_id IS NULL)";
    assert_eq!(
        selected(&db.pool, &plan, "core_user_roles", platform_users).await,
        0
    );
}

#[tokio::test]
async fn a_join_row_linking_two_tenants_belongs_to_neither() {
    let db = TestDb::with_fixture().await;
    let id: i32 = sqlx::query_scalar(
        "INSERT INTO core_user_roles (user_id, role_id)
         SELECT (SELECT min(id) FROM core_users WHERE tenant_id = 1), (SELECT min(id) FROM core_roles WHERE tenant_id = 2)
         RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();

    for tenant in [1, 2] {
        let plan = plan(&db, tenant).await;
        assert_eq!(
            selected(&db.pool, &plan, "core_user_roles", &format!("t.id = {id}")).await,
            0,
            "tenant {tenant}"
        );
        assert_eq!(
            selected(&db.pool, &plan, "core_user_roles", "true").await,
            12,
            "tenant {tenant} keeps its own links"
        );
    }
}

#[tokio::test]
async fn the_load_order_puts_parents_first_and_breaks_both_cycles_with_nullable_columns() {
    let db = TestDb::with_fixture().await;
    let catalog = catalog(&db.pool).await;
    let plan = TenantPlan::build(&catalog, 1, &own_tables());

    let order = plan.load_order().expect("both cycles are breakable");

    let pos = |n: &str| {
        order
            .tables
            .iter()
            .position(|t| t == &public(n))
            .unwrap_or_else(|| panic!("{n} not ordered"))
    };
    assert_eq!(order.tables.len(), plan.tables.len());
    for (parent, child) in [
        ("core_users", "core_user_roles"),
        ("core_roles", "core_user_roles"),
        ("core_roles", "core_role_permissions"),
        ("core_permissions", "core_role_permissions"),
        ("core_data_dictionaries", "core_dictionary_items"),
        (
            "apps_master_data_material_groups",
            "apps_master_data_materials",
        ),
        ("apps_master_data_materials", "apps_master_data_bom"),
        (
            "apps_kuaizhizao_sales_orders",
            "apps_kuaizhizao_sales_order_items",
        ),
        (
            "apps_kuaizhizao_sales_orders",
            "apps_kuaizhizao_work_orders",
        ),
    ] {
        assert!(
            pos(parent) < pos(child),
            "{parent} must load before {child}"
        );
    }
    for (table, column) in [
        ("core_users", "department_id"),
        ("core_departments", "manager_id"),
        ("core_departments", "parent_id"),
        ("apps_kuaizhizao_sales_order_items", "work_order_id"),
        ("apps_kuaizhizao_work_orders", "sales_order_item_id"),
    ] {
        assert!(
            order
                .deferred_columns_of(&public(table))
                .contains(&column.to_owned()),
            "{table}.{column} breaks a cycle"
        );
    }
    for (table, columns) in &order.deferred_columns {
        let t = catalog.table(table).unwrap();
        assert!(
            columns.iter().all(|c| !t.column(c).unwrap().not_null),
            "{table}: only nullable columns are deferred"
        );
    }
    assert!(
        order
            .deferred_columns_of(&public("apps_kuaizhizao_sales_order_items"))
            .len()
            == 1,
        "sales_order_id is not in a cycle"
    );
    assert!(order.deferred_constraints.is_empty());
}

#[tokio::test]
async fn tenant_exists_reads_the_tenants_table_validated_against_the_catalog() {
    let db = TestDb::with_fixture().await;
    let catalog = catalog(&db.pool).await;

    for (tenant, exists) in [(1, true), (4, true), (99, false)] {
        assert_eq!(
            tenant_exists(&db.pool, &catalog, "infra_tenants", tenant)
                .await
                .unwrap(),
            exists,
            "tenant {tenant}"
        );
    }
    let unknown = tenant_exists(&db.pool, &catalog, "tenants; DROP TABLE core_users", 1).await;
    assert!(
        matches!(unknown, Err(TenantError::TenantsTable(_))),
        "{unknown:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Live restore
// ---------------------------------------------------------------------------------------------

/// Changes tenant 2 everywhere (plain, join and cycle tables, the identity table) and inserts
/// rows so that ids beyond the backup's are issued.
const MUTATE_TENANT_2: &str = r#"
UPDATE core_users SET full_name = 'changed', bio = NULL WHERE tenant_id = 2 AND username IN ('user1', 'user2');
DELETE FROM core_user_roles WHERE user_id IN (SELECT id FROM core_users WHERE tenant_id = 2 AND username = 'user3');
DELETE FROM core_role_permissions WHERE role_id IN (SELECT id FROM core_roles WHERE tenant_id = 2 AND code = 'R2');
INSERT INTO core_users (uuid, tenant_id, username, password_hash, created_at, updated_at)
    VALUES ('new-user', 2, 'newcomer', 'x', now(), now());
INSERT INTO core_user_roles (user_id, role_id)
    SELECT u.id, r.id FROM core_users u, core_roles r WHERE u.username = 'newcomer' AND r.tenant_id = 2 AND r.code = 'R1';
INSERT INTO core_departments (uuid, tenant_id, name, manager_id, parent_id)
    SELECT 'new-dept', 2, 'new', u.id, (SELECT min(id) FROM core_departments WHERE tenant_id = 2)
    FROM core_users u WHERE u.username = 'newcomer';
UPDATE core_users SET department_id = (SELECT id FROM core_departments WHERE uuid = 'new-dept') WHERE username = 'newcomer';
UPDATE core_departments SET manager_id = NULL WHERE tenant_id = 2 AND code = 'D2';
DELETE FROM apps_kuaizhizao_sales_orders WHERE tenant_id = 2 AND order_code = 'SO-2-00001';
UPDATE apps_kuaizhizao_work_orders SET sales_order_item_id = NULL, status = 'done' WHERE tenant_id = 2;
INSERT INTO apps_kuaizhizao_sales_orders (uuid, tenant_id, order_code, customer_id, created_at, updated_at)
    VALUES ('new-so', 2, 'SO-2-NEW', 1, now(), now());
DELETE FROM core_operation_logs WHERE tenant_id = 2 AND user_id < 10;
INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type) VALUES ('new-log', 2, 1, 'create');
DELETE FROM apps_master_data_bom WHERE tenant_id = 2;
UPDATE apps_master_data_materials SET name = 'renamed' WHERE tenant_id = 2;
"#;

/// Changes to other tenants and platform rows made after the backup; the restore must keep them.
const MUTATE_OTHERS: &str = r#"
UPDATE core_users SET full_name = 'tenant one edit' WHERE tenant_id = 1 AND username = 'user1';
INSERT INTO apps_kuaizhizao_sales_orders (uuid, tenant_id, order_code, customer_id, created_at, updated_at)
    VALUES ('t3-so', 3, 'SO-3-NEW', 1, now(), now());
DELETE FROM core_user_roles WHERE user_id IN (SELECT id FROM core_users WHERE tenant_id = 3 AND username = 'user4');
UPDATE core_permissions SET description = 'platform edit' WHERE tenant_id IS NULL;
INSERT INTO infra_platform_settings (key, value) VALUES ('new.key', 'v');
UPDATE apps_kuaizhizao_work_orders SET status = 'platform edit' WHERE tenant_id IS NULL;
INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type) VALUES ('t1-log', 1, 1, 'update');
"#;

#[tokio::test]
async fn a_tenant_restore_brings_back_its_rows_and_leaves_every_other_row_untouched() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    let manifest = tenant_backup(&db, &storage, 2).await;
    let backed_up = tenant_rows(&db.pool, 2).await;
    db.execute_script(MUTATE_TENANT_2).await;
    db.execute_script(MUTATE_OTHERS).await;
    assert_ne!(
        tenant_rows(&db.pool, 2).await,
        backed_up,
        "the mutation changed tenant 2"
    );
    let others_before = everyone_else(&db.pool, 2).await;
    let sequences_before = sequences(&db.pool).await;
    let max_user_id = count(&db.pool, "SELECT max(id)::bigint FROM core_users").await;

    let report = run_restore(&db, &storage, &manifest, 2)
        .await
        .expect("restore");

    assert_eq!(
        tenant_rows(&db.pool, 2).await,
        backed_up,
        "tenant 2 equals its backup"
    );
    assert_eq!(
        everyone_else(&db.pool, 2).await,
        others_before,
        "other tenants and platform rows untouched"
    );
    let users = report
        .tables
        .iter()
        .find(|t| t.table == public("core_users"))
        .unwrap();
    assert_eq!(
        (users.deleted, users.inserted),
        (13, 12),
        "the newcomer is gone"
    );
    let sequences_after = sequences(&db.pool).await;
    for (seq, before) in &sequences_before {
        assert!(
            sequences_after[seq] >= *before,
            "{seq} moved backwards: {before} -> {}",
            sequences_after[seq]
        );
    }
    let next = count(&db.pool, "SELECT nextval('core_users_id_seq')").await;
    assert!(
        next > max_user_id,
        "nextval {next} reissues an id up to {max_user_id}"
    );
    let log_id: i32 = sqlx::query_scalar("INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type) VALUES ('after', 2, 1, 'x') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .expect("the identity column still generates fresh ids");
    assert!(
        i64::from(log_id)
            > count(
                &db.pool,
                "SELECT max(id)::bigint FROM core_operation_logs WHERE uuid <> 'after'"
            )
            .await
    );
}

#[tokio::test]
async fn a_sequence_that_fell_behind_is_advanced_past_the_restored_ids() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    db.execute_script(
        "INSERT INTO core_roles (uuid, tenant_id, name, code) VALUES ('late', 2, 'late', 'LATE')",
    )
    .await;
    let manifest = tenant_backup(&db, &storage, 2).await;
    let max_role = count(&db.pool, "SELECT max(id)::bigint FROM core_roles").await;
    // Simulate a sequence that fell behind (e.g. rows loaded by COPY without touching it).
    db.execute_script(
        "DELETE FROM core_roles WHERE uuid = 'late'; SELECT setval('core_roles_id_seq', 2)",
    )
    .await;

    run_restore(&db, &storage, &manifest, 2)
        .await
        .expect("restore");

    assert!(
        count(&db.pool, "SELECT nextval('core_roles_id_seq')").await > max_role,
        "advanced past the restored ids"
    );
}

#[tokio::test]
async fn a_unique_conflict_with_another_tenant_fails_naming_the_constraint_and_changes_nothing() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    let manifest = tenant_backup(&db, &storage, 2).await;
    db.execute_script(
        "DELETE FROM apps_kuaizhizao_sales_orders WHERE order_code = 'SO-2-00003';
         INSERT INTO apps_kuaizhizao_sales_orders (uuid, tenant_id, order_code, customer_id, created_at, updated_at)
         VALUES ('thief', 1, 'SO-2-00003', 1, now(), now());",
    )
    .await;
    let before = everything(&db.pool).await;

    let err = run_restore(&db, &storage, &manifest, 2).await.unwrap_err();

    match &err {
        TenantRestoreError::UniqueConflict {
            table, constraint, ..
        } => {
            assert_eq!(
                (table, constraint.as_str()),
                (
                    &public("apps_kuaizhizao_sales_orders"),
                    "apps_kuaizhizao_sales_orders_order_code_key"
                )
            );
        }
        other => panic!("expected a unique conflict, got {other:?}"),
    }
    assert!(!err.is_retriable());
    assert_eq!(everything(&db.pool).await, before);
}

#[tokio::test]
async fn a_corrupted_artifact_fails_the_restore_and_changes_nothing() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    let manifest = tenant_backup(&db, &storage, 2).await;
    db.execute_script(MUTATE_TENANT_2).await;
    let entry = manifest
        .tables
        .iter()
        .find(|t| t.name == "core_users")
        .unwrap();
    let path = storage
        .local_path(&ObjectKey::parse(&entry.key).unwrap())
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let before = everything(&db.pool).await;

    let err = run_restore(&db, &storage, &manifest, 2).await.unwrap_err();

    assert!(
        matches!(&err, TenantRestoreError::Artifact { table, .. } if table == &public("core_users")),
        "{err:?}"
    );
    assert_eq!(everything(&db.pool).await, before);
}

#[tokio::test]
async fn a_connection_killed_in_the_middle_of_the_restore_leaves_the_database_unchanged() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    let manifest = tenant_backup(&db, &storage, 2).await;
    db.execute_script(MUTATE_TENANT_2).await;
    // The hook fires inside the restore's transaction, after it deleted tenant 2's rows and
    // while it inserts them again; terminating the backend there is deterministic.
    db.execute_script(
        "CREATE FUNCTION kill_me() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
         CREATE TRIGGER kill_restore AFTER INSERT ON apps_kuaizhizao_sales_orders FOR EACH STATEMENT EXECUTE FUNCTION kill_me();",
    )
    .await;
    let before = everything(&db.pool).await;

    let err = run_restore(&db, &storage, &manifest, 2).await.unwrap_err();

    assert!(
        matches!(err, TenantRestoreError::Database { .. }),
        "{err:?}"
    );
    assert!(
        err.is_retriable(),
        "a lost connection is worth a retry: {err}"
    );
    assert_eq!(everything(&db.pool).await, before);
}

#[tokio::test]
async fn restoring_a_tenant_that_does_not_exist_or_another_tenants_backup_is_refused() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    let ghost = tenant_backup(&db, &storage, 99).await;
    let two = tenant_backup(&db, &storage, 2).await;
    db.execute_script(MUTATE_TENANT_2).await;
    let before = everything(&db.pool).await;

    let missing = run_restore(&db, &storage, &ghost, 99).await.unwrap_err();
    let mismatch = run_restore(&db, &storage, &two, 3).await.unwrap_err();

    assert!(
        matches!(missing, TenantRestoreError::UnknownTenant(99)),
        "{missing:?}"
    );
    assert_eq!(missing.to_string(), "tenant 99 does not exist");
    assert!(
        matches!(
            mismatch,
            TenantRestoreError::TenantMismatch {
                backup: Some(2),
                requested: 3
            }
        ),
        "{mismatch:?}"
    );
    assert_eq!(everything(&db.pool).await, before);
}

#[tokio::test]
async fn the_empty_tenant_4_can_be_backed_up_emptied_and_restored() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    db.execute_script(
        "INSERT INTO core_roles (uuid, tenant_id, name, code) VALUES ('r4', 4, 'r', 'R1');
         INSERT INTO core_users (uuid, tenant_id, username, password_hash) VALUES ('u4', 4, 'u', 'x');
         INSERT INTO core_departments (uuid, tenant_id, name, manager_id) SELECT 'd4', 4, 'd', id FROM core_users WHERE uuid = 'u4';
         UPDATE core_users SET department_id = (SELECT id FROM core_departments WHERE uuid = 'd4') WHERE uuid = 'u4';
         INSERT INTO core_user_roles (user_id, role_id) SELECT u.id, r.id FROM core_users u, core_roles r WHERE u.uuid = 'u4' AND r.uuid = 'r4';
         INSERT INTO core_role_permissions (role_id, permission_id)
             SELECT r.id, p.id FROM core_roles r, core_permissions p WHERE r.uuid = 'r4' AND p.tenant_id IS NULL;
         INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type) VALUES ('l4', 4, 1, 'create');",
    )
    .await;
    let manifest = tenant_backup(&db, &storage, 4).await;
    let backed_up = tenant_rows(&db.pool, 4).await;
    db.execute_script(
        "UPDATE core_departments SET manager_id = NULL WHERE tenant_id = 4;
         DELETE FROM core_users WHERE tenant_id = 4; DELETE FROM core_departments WHERE tenant_id = 4;
         DELETE FROM core_roles WHERE tenant_id = 4; DELETE FROM core_operation_logs WHERE tenant_id = 4;",
    )
    .await;
    let others = everyone_else(&db.pool, 4).await;

    let report = run_restore(&db, &storage, &manifest, 4)
        .await
        .expect("restore");

    assert_eq!(tenant_rows(&db.pool, 4).await, backed_up);
    assert_eq!(everyone_else(&db.pool, 4).await, others);
    assert!(
        report.tables.iter().all(|t| t.deleted == 0),
        "tenant 4 was empty"
    );
    assert_eq!(
        report.tables.iter().map(|t| t.inserted).sum::<u64>(),
        1 + 1 + 1 + 1 + 4 + 1
    );
}

#[tokio::test]
async fn a_row_of_another_tenant_referencing_the_tenants_rows_blocks_the_restore() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    let manifest = tenant_backup(&db, &storage, 2).await;
    db.execute_script(
        "INSERT INTO core_user_roles (user_id, role_id)
         SELECT (SELECT min(id) FROM core_users WHERE tenant_id = 1), (SELECT min(id) FROM core_roles WHERE tenant_id = 2)",
    )
    .await;
    let before = everything(&db.pool).await;

    let err = run_restore(&db, &storage, &manifest, 2).await.unwrap_err();

    match &err {
        TenantRestoreError::CrossTenantReferences(refs) => {
            assert_eq!(refs.len(), 1, "{refs:?}");
            assert_eq!(
                (
                    refs[0].table.name.as_str(),
                    refs[0].constraint.as_str(),
                    refs[0].rows
                ),
                ("core_user_roles", "core_user_roles_role_id_fkey", 1)
            );
        }
        other => panic!("expected cross-tenant references, got {other:?}"),
    }
    assert_eq!(
        everything(&db.pool).await,
        before,
        "the cascade never reached tenant 1's row"
    );
}

#[tokio::test]
async fn schema_differences_are_all_reported_before_anything_changes() {
    let db = TestDb::with_fixture().await;
    let (_dir, storage) = storage();
    let manifest = tenant_backup(&db, &storage, 2).await;
    db.execute_script(
        "ALTER TABLE core_roles ALTER COLUMN code TYPE varchar(80); ALTER TABLE core_users DROP COLUMN bio;
         DELETE FROM core_roles WHERE tenant_id = 2;",
    )
    .await;
    let before = everything(&db.pool).await;

    let err = run_restore(&db, &storage, &manifest, 2).await.unwrap_err();

    let TenantRestoreError::Incompatible(problems) = &err else {
        panic!("expected incompatibility, got {err:?}")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("core_roles.code") && p.contains("character varying(80)")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("core_users.bio") && p.contains("does not exist")),
        "{problems:?}"
    );
    assert_eq!(everything(&db.pool).await, before);
}
