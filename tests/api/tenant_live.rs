//! Tenant restore into a busy shared database (issue 19), on the awkward fixture: writers of
//! the tenant and of another tenant throughout the restore, the lock budget measured from the
//! other tenant's writer, restores of one tenant queued, the dry-run preview, and no DDL by
//! default. The semantics asserted here are the ones docs/tenant-restore.md defines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riveredge_backup::artifact::Manifest;
use riveredge_backup::backup::BackupScope;
use riveredge_backup::catalog::{Catalog, TableRef};
use riveredge_backup::tenant::restore::{
    restore, RestoreOptions, RestoreReport, TenantRestoreError,
};
use sqlx::{Connection, PgConnection, PgPool};

use crate::awkward::{checksums, sequence_values, tenant_filter, DRAWS, TABLES};
use crate::backup::{spec, Engine};
use crate::helpers::TestDb;

/// The other tenants' writes may wait at most this long (the restore's default lock budget).
const BUDGET: Duration = Duration::from_secs(1);

fn options(tenant: i32) -> RestoreOptions {
    RestoreOptions {
        skip: riveredge_backup::db::OWN_TABLES
            .iter()
            .map(|t| TableRef::new("public", t))
            .collect(),
        ..RestoreOptions::new(tenant)
    }
}

async fn connect(db: &TestDb) -> PgConnection {
    PgConnection::connect_with(&db.conn.connect_options())
        .await
        .unwrap()
}

/// A tenant backup of tenant `n` taken by the worker.
async fn backup(engine: &Engine, n: i32) -> Manifest {
    let s = spec(BackupScope::Tenant, Some(n), &[]);
    riveredge_backup::commands::take_backup(&engine.state, &s, "tenant-live")
        .await
        .unwrap_or_else(|e| panic!("backup: {e:#}"))
        .manifest
}

async fn run(
    db: &TestDb,
    engine: &Engine,
    manifest: &Manifest,
    opts: &RestoreOptions,
) -> Result<RestoreReport, TenantRestoreError> {
    let catalog = Catalog::load(&db.pool).await.unwrap();
    let mut conn = connect(db).await;
    restore(
        &mut conn,
        &catalog,
        engine.state.storage.as_ref(),
        manifest,
        opts,
    )
    .await
}

/// Changes tenant 1 after its backup: an update, a delete, inserts in a cycle table, and a
/// sequence set back below its column (so the restore has something to move).
async fn drift(pool: &PgPool) {
    sqlx::raw_sql(
        "UPDATE core_users SET username = username || '-renamed' WHERE id = 1;
         DELETE FROM core_user_roles WHERE user_id = 4;
         INSERT INTO apps_orders (tenant_id, code) VALUES (1, 'late');
         INSERT INTO core_operation_logs (tenant_id, operation) VALUES (1, 'late');
         SELECT setval('public.apps_shipments_id_seq', 1);",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Tenant `n`'s rows, without the rows a writer tagged `tag` inserted.
async fn tenant_state(
    pool: &PgPool,
    n: i32,
    tag: &str,
) -> std::collections::BTreeMap<String, (i64, String)> {
    checksums(pool, TABLES, |t| {
        format!("({}) AND {}", tenant_filter(t, n), untagged(t, tag))
    })
    .await
}

fn untagged(table: &str, tag: &str) -> String {
    if table == "core_operation_logs" {
        format!("operation NOT LIKE '{tag}%'")
    } else {
        "true".to_owned()
    }
}

/// What a writer saw: its longest statement, how many it ran, and the errors.
#[derive(Debug, Default)]
struct Writes {
    longest: Duration,
    statements: u64,
    inserted: u64,
    errors: Vec<String>,
}

/// Every 10 ms: insert a tagged log row of `tenant` and rewrite (same content) the tenant's
/// first department, each in its own transaction, timing each statement.
fn writer(
    db: &TestDb,
    tenant: i32,
    tag: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Writes> {
    let options = db.conn.connect_options();
    tokio::spawn(async move {
        let mut conn = PgConnection::connect_with(&options).await.unwrap();
        let department: i32 =
            sqlx::query_scalar("SELECT min(id) FROM core_departments WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let mut out = Writes::default();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            let insert = sqlx::query(
                "INSERT INTO core_operation_logs (id, tenant_id, operation) VALUES ($1, $2, $3)",
            )
            .bind(i64::try_from(n).unwrap())
            .bind(tenant)
            .bind(format!("{tag}{n}"));
            let update = sqlx::query("UPDATE core_departments SET name = name WHERE id = $1")
                .bind(department);
            let started = Instant::now();
            match insert.execute(&mut conn).await {
                Ok(_) => out.inserted += 1,
                Err(e) => out.errors.push(e.to_string()),
            }
            out.longest = out.longest.max(started.elapsed());
            let started = Instant::now();
            if let Err(e) = update.execute(&mut conn).await {
                out.errors.push(e.to_string());
            }
            out.longest = out.longest.max(started.elapsed());
            out.statements += 2;
        }
        out
    })
}

/// The numbers of the tagged rows that survive, in order.
async fn surviving(pool: &PgPool, tenant: i32, tag: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT id FROM core_operation_logs WHERE tenant_id = $1 AND operation LIKE $2 || '%' ORDER BY id",
    )
    .bind(tenant)
    .bind(tag)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tenant_restore_with_both_tenants_writing_throughout_keeps_the_budget_and_its_semantics()
{
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let manifest = backup(&engine, 1).await;
    let at_backup = tenant_state(&db.pool, 1, "w1-").await;
    drift(&db.pool).await;
    let others_before = checksums(&db.pool, TABLES, |t| {
        format!(
            "({}) IS NOT TRUE AND {}",
            tenant_filter(t, 1),
            untagged(t, "w2-")
        )
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let own = writer(&db, 1, "w1-", stop.clone());
    let other = writer(&db, 2, "w2-", stop.clone());
    // Both writers are committing before the restore starts.
    while surviving(&db.pool, 2, "w2-").await.len() < 3
        || surviving(&db.pool, 1, "w1-").await.len() < 3
    {
        tokio::task::yield_now().await;
    }
    let report = run(&db, &engine, &manifest, &options(1))
        .await
        .unwrap_or_else(|e| panic!("restore under writes: {e}"));
    let own_after_restore = surviving(&db.pool, 1, "w1-").await;
    // A few more writes after the commit, then stop.
    let stop_after = own_after_restore.last().copied().unwrap_or(0) + 3;
    while surviving(&db.pool, 1, "w1-")
        .await
        .last()
        .copied()
        .unwrap_or(0)
        < stop_after
    {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let own = own.await.unwrap();
    let other = other.await.unwrap();

    eprintln!(
        "writers: other tenant longest {:?} over {} statements; tenant longest {:?}",
        other.longest, other.statements, own.longest
    );
    // The other tenant never waited for the restore beyond the budget, and never failed.
    assert!(
        other.errors.is_empty(),
        "other tenant's writer failed: {:?}",
        other.errors
    );
    assert!(
        other.longest < BUDGET,
        "the other tenant's longest write took {:?} (budget {BUDGET:?}) over {} statements",
        other.longest,
        other.statements
    );
    // The tenant's own writer waited for the restore's row locks but did not fail: its updates
    // of replaced rows update nothing, its inserts stand.
    assert!(
        own.errors.is_empty(),
        "tenant's writer failed: {:?}",
        own.errors
    );

    // Every row the backup covers is at the backup's state.
    assert_eq!(tenant_state(&db.pool, 1, "w1-").await, at_backup);
    // The tenant's rows written during the restore: those committed before the restore locked
    // the tenant's rows were replaced (deleted), those after are kept: a suffix of the writer's
    // numbers, reported as kept.
    let kept = surviving(&db.pool, 1, "w1-").await;
    let first = kept
        .first()
        .copied()
        .expect("rows after the restore are kept");
    assert_eq!(kept, (first..first + kept.len() as i64).collect::<Vec<_>>());
    assert!(
        first > 1,
        "rows committed before the restore locked were replaced"
    );
    let logs = report
        .tables
        .iter()
        .find(|t| t.table.name == "core_operation_logs")
        .unwrap();
    assert!(
        logs.kept <= kept.len() as u64,
        "{} kept, {} survive",
        logs.kept,
        kept.len()
    );
    // Everyone else's rows are as they were, apart from the other writer's own rows.
    let others_after = checksums(&db.pool, TABLES, |t| {
        format!(
            "({}) IS NOT TRUE AND {}",
            tenant_filter(t, 1),
            untagged(t, "w2-")
        )
    })
    .await;
    assert_eq!(others_after, others_before);
    assert!(
        surviving(&db.pool, 2, "w2-").await.len() as u64 == other.inserted,
        "every write of the other tenant is there"
    );
}

#[tokio::test]
async fn restores_of_one_tenant_started_together_wait_their_turn_and_all_succeed() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let manifest = backup(&engine, 1).await;
    let at_backup = tenant_state(&db.pool, 1, "none").await;
    drift(&db.pool).await;

    // Another restore of tenant 1 holds the tenant's turn (its advisory lock) ...
    let mut holder = connect(&db).await;
    sqlx::raw_sql(
        "BEGIN; SELECT pg_advisory_xact_lock(hashtext('riveredge-backup tenant restore'), 1)",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    // ... while three restores start, with a lock budget far shorter than their wait.
    let opts = RestoreOptions {
        lock_timeout: Duration::from_millis(1),
        ..options(1)
    };
    let restores: Vec<_> = (0..3)
        .map(|_| {
            let (db_conn, storage) = (db.conn.clone(), engine.state.storage.clone());
            let (manifest, opts) = (manifest.clone(), opts.clone());
            tokio::spawn(async move {
                let pool = sqlx::PgPool::connect_with(db_conn.connect_options())
                    .await
                    .unwrap();
                let catalog = Catalog::load(&pool).await.unwrap();
                let mut conn = pool.acquire().await.unwrap();
                restore(&mut conn, &catalog, storage.as_ref(), &manifest, &opts).await
            })
        })
        .collect();
    // All three are queued on the tenant's turn ...
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // ... and run one after another once it is released.
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    for r in restores {
        r.await
            .unwrap()
            .unwrap_or_else(|e| panic!("a queued restore failed: {e}"));
    }
    assert_eq!(tenant_state(&db.pool, 1, "none").await, at_backup);
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_its_counts_equal_what_the_restore_then_does() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    let manifest = backup(&engine, 1).await;
    let at_backup = tenant_state(&db.pool, 1, "none").await;
    drift(&db.pool).await;
    let sequences: Vec<&str> = DRAWS.iter().map(|(s, _, _)| *s).collect();
    let everything =
        |pool: PgPool| async move { checksums(&pool, TABLES, |_| "true".to_owned()).await };
    let before = everything(db.pool.clone()).await;
    let sequences_before = sequence_values(&db.pool, &sequences).await;
    let indexes_before: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_indexes")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let dry = run(
        &db,
        &engine,
        &manifest,
        &RestoreOptions {
            dry_run: true,
            ..options(1)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("dry run: {e}"));
    assert!(dry.dry_run);
    assert_eq!(
        everything(db.pool.clone()).await,
        before,
        "a dry run changes no row"
    );
    assert_eq!(
        sequence_values(&db.pool, &sequences).await,
        sequences_before,
        "a dry run moves no sequence"
    );

    // The preview names the drift: the renamed user, the deleted join row, the late rows, the
    // sequence set back.
    let change = |name: &str| {
        dry.preview
            .tables
            .iter()
            .find(|t| t.table == format!("public.{name}"))
            .map(|t| (t.insert, t.update, t.delete))
            .unwrap_or_else(|| panic!("{name} not in the preview"))
    };
    assert_eq!(change("core_users"), (0, 1, 0));
    assert_eq!(change("core_user_roles"), (2, 0, 0));
    assert_eq!(change("apps_orders"), (0, 0, 1));
    assert_eq!(change("core_operation_logs"), (0, 0, 1));
    assert_eq!(change("core_roles"), (0, 0, 0));
    let shipments = dry
        .preview
        .sequences
        .iter()
        .find(|s| s.sequence == "public.apps_shipments_id_seq")
        .expect("the sequence set back is previewed");
    assert_eq!(shipments.from, 1);
    assert!(shipments.to > 1);

    let real = run(&db, &engine, &manifest, &options(1))
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(!real.dry_run);
    assert_eq!(
        real.preview, dry.preview,
        "the restore did what the dry run said"
    );
    assert_eq!(tenant_state(&db.pool, 1, "none").await, at_backup);

    // No DDL by default: no index was built; the missing one is named with its statement.
    let indexes_after: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_indexes")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(indexes_after, indexes_before);
    assert!(
        real.missing_indexes
            .iter()
            .any(|s| s == r#"CREATE INDEX CONCURRENTLY ON "public"."core_user_roles" ("user_id")"#),
        "{:?}",
        real.missing_indexes
    );
}

#[tokio::test]
async fn a_tenant_restored_from_a_whole_database_backup_equals_it_restored_from_its_own_backup() {
    let db = TestDb::with_awkward_fixture().await;
    let engine = Engine::new(&db).await;
    // The fixture's join rows link tenant 1's users to the platform role too: the backup's
    // parent rows decide which join rows are the tenant's, not the live ones.
    let own = backup(&engine, 1).await;
    let all = riveredge_backup::commands::take_backup(
        &engine.state,
        &spec(BackupScope::All, None, &[]),
        "tenant-live-all",
    )
    .await
    .unwrap_or_else(|e| panic!("all backup: {e:#}"))
    .manifest;
    assert_eq!(all.scope, "all");
    let at_backup = tenant_state(&db.pool, 1, "none").await;
    let others = |pool: PgPool| async move {
        checksums(&pool, TABLES, |t| {
            format!("({}) IS NOT TRUE", tenant_filter(t, 1))
        })
        .await
    };

    drift(&db.pool).await;
    let others_before = others(db.pool.clone()).await;
    let dry = run(
        &db,
        &engine,
        &all,
        &RestoreOptions {
            dry_run: true,
            ..options(1)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("dry run from the all backup: {e}"));
    let from_all = run(&db, &engine, &all, &options(1))
        .await
        .unwrap_or_else(|e| panic!("restore from the all backup: {e}"));
    assert_eq!(from_all.preview, dry.preview);
    let state_from_all = tenant_state(&db.pool, 1, "none").await;
    assert_eq!(
        others(db.pool.clone()).await,
        others_before,
        "only tenant 1 changed"
    );

    drift(&db.pool).await;
    let from_own = run(&db, &engine, &own, &options(1))
        .await
        .unwrap_or_else(|e| panic!("restore from the tenant backup: {e}"));
    let state_from_own = tenant_state(&db.pool, 1, "none").await;

    assert_eq!(state_from_all, state_from_own);
    assert_eq!(state_from_all, at_backup);
    assert_eq!(
        from_all.preview.tables, from_own.preview.tables,
        "the same change both ways"
    );
    let inserted = |r: &RestoreReport| {
        r.tables
            .iter()
            .map(|t| (t.table.to_string(), t.inserted))
            .collect::<Vec<_>>()
    };
    assert_eq!(inserted(&from_all), inserted(&from_own));
}
