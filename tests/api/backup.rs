//! Backups against a real PostgreSQL with the real pg_dump: round trips checked by the SQL
//! oracle (`helpers::table_checksum`, which shares no code with our hashes), the artifact
//! contract (sha256s, 0600 files, nothing left after a failure), error classification, and
//! credentials never on argv.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use riveredge_backup::artifact::{self, ArtifactError, Manifest};
use riveredge_backup::backup::{
    self, BackupError, BackupOutcome, BackupScope, BackupSpec, BackupType,
};
use riveredge_backup::catalog::{Catalog, TableRef};
use riveredge_backup::pg::{ConnInfo, PgBinaries};
use riveredge_backup::restore::{self, RestoreMode};
use riveredge_backup::startup::{AppState, Database};
use riveredge_backup::storage::{LocalStorage, ObjectKey, ObjectReader, ObjectWriter, Storage};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use crate::helpers::{table_checksum, TestDb};

/// The backup engine on a test database, without the HTTP server.
pub struct Engine {
    pub state: AppState,
    pub storage_dir: tempfile::TempDir,
    _database: Database,
}

impl Engine {
    pub async fn new(db: &TestDb) -> Self {
        let storage_dir = tempfile::tempdir().unwrap();
        let settings = Arc::new(db.settings(storage_dir.path()));
        let database = Database::open(&settings).await.expect("open database");
        let state = AppState::new(settings, &database, CancellationToken::new()).unwrap();
        Self {
            state,
            storage_dir,
            _database: database,
        }
    }

    /// Every file under the backup's prefix.
    pub fn files(&self, uuid: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.storage_dir.path().join(uuid)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    stack.push(entry.path());
                } else {
                    out.push(entry.path());
                }
            }
        }
        out.sort();
        out
    }

    pub fn path_of(&self, key: &str) -> PathBuf {
        self.storage_dir.path().join(key)
    }
}

pub fn spec(scope: BackupScope, tenant_id: Option<i32>, tables: &[&str]) -> BackupSpec {
    BackupSpec {
        uuid: uuid::Uuid::new_v4().to_string(),
        backup_type: BackupType::Full,
        scope,
        tenant_id,
        tables: tables.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// The application tables of a database (our own excluded).
pub async fn app_tables(db: &TestDb) -> Vec<TableRef> {
    let catalog = Catalog::load(&db.pool).await.unwrap();
    catalog
        .tables()
        .map(|t| t.table.clone())
        .filter(|t| !riveredge_backup::db::OWN_TABLES.contains(&t.name.as_str()))
        .collect()
}

async fn sequences(db: &TestDb) -> Vec<(String, i64, bool)> {
    let catalog = Catalog::load(&db.pool).await.unwrap();
    let mut out = Vec::new();
    for seq in catalog.sequences.iter().filter(|s| {
        s.owned_by
            .as_ref()
            .is_some_and(|(t, _)| !t.name.starts_with("root_data"))
    }) {
        let (v, c): (i64, bool) = sqlx::query_as(&format!(
            "SELECT last_value, is_called FROM {}",
            seq.sequence.quoted()
        ))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        out.push((seq.sequence.to_string(), v, c));
    }
    out
}

async fn fresh_restore(engine: &Engine, manifest: &Manifest) -> TestDb {
    let target = TestDb::empty().await;
    restore::restore_into_database(
        &engine.state,
        manifest,
        &target.conn,
        None,
        RestoreMode::Fresh,
        None,
    )
    .await
    .expect("fresh restore");
    target
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

pub async fn backup_ok(engine: &Engine, spec: &BackupSpec) -> BackupOutcome {
    backup::run(&engine.state, spec, None)
        .await
        .unwrap_or_else(|e| panic!("backup failed: {e}"))
}

#[tokio::test]
async fn a_whole_database_backup_restores_into_a_fresh_database_with_identical_rows_and_sequences()
{
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let started = std::time::Instant::now();
    let outcome = backup_ok(&engine, &spec(BackupScope::All, None, &[])).await;
    eprintln!(
        "fixture backup: {} bytes, {} rows, {} tables in {:?}",
        outcome.total_size,
        outcome.rows,
        outcome.manifest.tables.len(),
        started.elapsed()
    );

    let target = fresh_restore(&engine, &outcome.manifest).await;

    let tables = app_tables(&source).await;
    assert_eq!(tables.len(), outcome.manifest.tables.len());
    assert!(
        outcome
            .manifest
            .tables
            .iter()
            .all(|t| !t.name.starts_with("root_data")),
        "own tables are never backed up"
    );
    for t in &tables {
        let quoted = t.quoted();
        assert_eq!(
            table_checksum(&target.pool, &quoted, "true").await,
            table_checksum(&source.pool, &quoted, "true").await,
            "{t} differs"
        );
    }
    assert_eq!(sequences(&target).await, sequences(&source).await);
    let next_log: i32 = sqlx::query_scalar("INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type) VALUES ('n', 1, 1, 'create') RETURNING id")
        .fetch_one(&target.pool)
        .await
        .unwrap();
    assert_eq!(
        next_log, 121,
        "the identity column continues after the restored rows"
    );
    let fks: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
        .fetch_one(&target.pool)
        .await
        .unwrap();
    assert!(
        fks >= 15,
        "both FK cycles and every foreign key are back ({fks})"
    );
}

#[tokio::test]
async fn the_manifest_records_the_sha256_of_every_file_and_every_file_is_private() {
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let s = spec(BackupScope::All, None, &[]);
    let outcome = backup_ok(&engine, &s).await;

    let manifest_path = engine.path_of(&format!("{}/manifest.json", s.uuid));
    assert_eq!(sha256_of(&manifest_path), outcome.manifest_sha256);
    assert_eq!(
        sha256_of(&engine.path_of(&outcome.manifest.schema.key)),
        outcome.manifest.schema.sha256
    );
    for t in &outcome.manifest.tables {
        assert_eq!(sha256_of(&engine.path_of(&t.key)), t.sha256, "{}", t.key);
    }
    let files = engine.files(&s.uuid);
    assert_eq!(files.len(), outcome.manifest.tables.len() + 2);
    for f in &files {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
    assert_eq!(outcome.file_path, format!("{}/", s.uuid));
    let report = artifact::verify(
        engine.state.storage.as_ref(),
        &engine.state.bins,
        &s.uuid,
        Some(&outcome.manifest_sha256),
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(report.rows, outcome.rows);
}

#[tokio::test]
async fn a_table_backup_for_a_tenant_holds_only_that_tenants_rows() {
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let outcome = backup_ok(
        &engine,
        &spec(
            BackupScope::Table,
            Some(2),
            &["core_users", "public.apps_kuaizhizao_sales_orders"],
        ),
    )
    .await;
    assert_eq!(outcome.manifest.tables.len(), 2);
    assert!(outcome
        .manifest
        .tables
        .iter()
        .all(|t| outcome.manifest.predicate_of(t).is_some()));
    assert!(
        outcome
            .manifest
            .tables
            .iter()
            .all(|t| t.predicate.is_none()),
        "format 2 stores the typed plan, not SQL"
    );

    let target = fresh_restore(&engine, &outcome.manifest).await;

    for table in ["core_users", "apps_kuaizhizao_sales_orders"] {
        assert_eq!(
            table_checksum(&target.pool, table, "true").await,
            table_checksum(&source.pool, table, "tenant_id = 2").await,
            "{table}"
        );
    }
    let others: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core_users WHERE tenant_id IS DISTINCT FROM 2")
            .fetch_one(&target.pool)
            .await
            .unwrap();
    assert_eq!(others, 0, "no other tenant's or platform rows");
}

#[tokio::test]
async fn a_whole_table_backup_round_trips_the_tricky_values() {
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let tables = [
        "core_users",
        "core_departments",
        "core_operation_logs",
        "apps_master_data_materials",
        "infra_platform_settings",
    ];
    let outcome = backup_ok(&engine, &spec(BackupScope::Table, None, &tables)).await;

    let target = fresh_restore(&engine, &outcome.manifest).await;

    for table in tables {
        assert_eq!(
            table_checksum(&target.pool, table, "true").await,
            table_checksum(&source.pool, table, "true").await,
            "{table}"
        );
    }
}

#[tokio::test]
async fn unknown_tables_are_all_reported_and_nothing_is_dumped() {
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let s = spec(
        BackupScope::Table,
        None,
        &["core_users", "no_such_table", "other.missing"],
    );

    let err = backup::run(&engine.state, &s, None).await.unwrap_err();

    let text = err.to_string();
    assert!(
        matches!(err, BackupError::UnknownTables(ref e) if e.len() == 2),
        "{text}"
    );
    assert!(
        text.contains("no_such_table") && text.contains("other.missing"),
        "{text}"
    );
    assert!(!err.is_retriable());
    assert!(engine.files(&s.uuid).is_empty());
}

#[tokio::test]
async fn invalid_specs_are_final_errors() {
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let cases = [
        spec(BackupScope::All, Some(1), &[]),
        spec(BackupScope::Tenant, None, &[]),
        spec(BackupScope::Table, None, &[]),
        spec(BackupScope::Tenant, Some(99), &[]),
        spec(BackupScope::Table, Some(1), &["infra_platform_settings"]),
        // An incremental is validated like a full (its shape rules are the same).
        BackupSpec {
            backup_type: BackupType::Incremental,
            ..spec(BackupScope::All, Some(1), &[])
        },
    ];
    for s in cases {
        let err = backup::validate(&engine.state, &s).await.unwrap_err();
        assert!(!err.is_retriable(), "{err}");
    }
    let err = backup::validate(&engine.state, &spec(BackupScope::Tenant, Some(99), &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::TenantNotFound(99)), "{err}");
}

/// A directory with a fake `pg_dump` that reports the real version and otherwise runs `body`.
fn fake_pg_dump(body: &str) -> (tempfile::TempDir, PgBinaries) {
    let dir = tempfile::tempdir().unwrap();
    let real = crate::helpers::server().bins.program("pg_dump");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then exec {} --version; fi\n{body}\n",
        real.display()
    );
    let path = dir.path().join("pg_dump");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bins = PgBinaries::locate(Some(dir.path()), None).expect("fake pg_dump");
    (dir, bins)
}

#[tokio::test]
async fn a_missing_pg_dump_fails_and_leaves_nothing() {
    let source = TestDb::with_fixture().await;
    let mut engine = Engine::new(&source).await;
    let (dir, bins) = fake_pg_dump("exit 0");
    std::fs::remove_file(dir.path().join("pg_dump")).unwrap();
    engine.state.bins = bins;
    let s = spec(BackupScope::All, None, &[]);

    let err = backup::run(&engine.state, &s, None).await.unwrap_err();

    assert!(err.to_string().contains("not found"), "{err}");
    assert!(engine.files(&s.uuid).is_empty());
}

#[tokio::test]
async fn a_pg_dump_killed_halfway_fails_retriably_and_leaves_nothing() {
    let source = TestDb::with_fixture().await;
    let mut engine = Engine::new(&source).await;
    let (_dir, bins) = fake_pg_dump("printf 'PGDMP half an archive'\nkill -9 $$");
    engine.state.bins = bins;
    let s = spec(BackupScope::All, None, &[]);

    let err = backup::run(&engine.state, &s, None).await.unwrap_err();

    assert!(err.to_string().contains("killed by signal 9"), "{err}");
    assert!(err.is_retriable());
    assert!(engine.files(&s.uuid).is_empty());
}

#[tokio::test]
async fn an_unreachable_database_fails_retriably_and_leaves_nothing() {
    let source = TestDb::with_fixture().await;
    let mut engine = Engine::new(&source).await;
    engine.state.conn = ConnInfo::parse(
        "postgres://postgres:secret-pw@localhost/nowhere?host=/nonexistent-socket-dir&port=1",
    )
    .unwrap();
    let s = spec(BackupScope::All, None, &[]);

    let err = backup::run(&engine.state, &s, None).await.unwrap_err();

    assert!(matches!(err, BackupError::Database { .. }), "{err}");
    assert!(err.is_retriable());
    assert!(
        !format!("{err} {err:?}").contains("secret-pw"),
        "no password in errors"
    );
    assert!(engine.files(&s.uuid).is_empty());
}

/// Local storage whose disk is "full" after `budget` bytes (ENOSPC from every later write).
#[derive(Debug)]
struct FullDisk {
    inner: LocalStorage,
    budget: Arc<AtomicU64>,
}

struct FullDiskWriter {
    inner: Box<dyn ObjectWriter>,
    budget: Arc<AtomicU64>,
}

impl AsyncWrite for FullDiskWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let left = self.budget.load(Ordering::SeqCst);
        if (buf.len() as u64) > left {
            return Poll::Ready(Err(std::io::Error::from_raw_os_error(28)));
        }
        let n = futures::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.budget.fetch_sub(n as u64, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl ObjectWriter for FullDiskWriter {
    fn commit(self: Box<Self>) -> BoxFuture<'static, std::io::Result<u64>> {
        self.inner.commit()
    }
}

impl Storage for FullDisk {
    fn create<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, std::io::Result<Box<dyn ObjectWriter>>> {
        Box::pin(async move {
            let inner = self.inner.create(key).await?;
            Ok(Box::new(FullDiskWriter {
                inner,
                budget: self.budget.clone(),
            }) as Box<dyn ObjectWriter>)
        })
    }
    fn open<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, std::io::Result<ObjectReader>> {
        self.inner.open(key)
    }
    fn size<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, std::io::Result<Option<u64>>> {
        self.inner.size(key)
    }
    fn list<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, std::io::Result<Vec<ObjectKey>>> {
        self.inner.list(prefix)
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, std::io::Result<()>> {
        self.inner.delete_prefix(prefix)
    }
    fn prefixes(&self) -> BoxFuture<'_, std::io::Result<Vec<(ObjectKey, std::time::SystemTime)>>> {
        self.inner.prefixes()
    }
    fn sweep_partials(
        &self,
        min_age: std::time::Duration,
    ) -> BoxFuture<'_, std::io::Result<usize>> {
        self.inner.sweep_partials(min_age)
    }
    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        self.inner.local_path(key)
    }
}

#[tokio::test]
async fn a_full_disk_fails_retriably_and_leaves_nothing() {
    let source = TestDb::with_fixture().await;
    let mut engine = Engine::new(&source).await;
    let local = LocalStorage::open(engine.storage_dir.path()).unwrap();
    // Enough for the schema dump and a few tables, not for the whole backup.
    engine.state.storage = Arc::new(FullDisk {
        inner: local,
        budget: Arc::new(AtomicU64::new(40_000)),
    });
    let s = spec(BackupScope::All, None, &[]);

    let err = backup::run(&engine.state, &s, None).await.unwrap_err();

    assert!(matches!(err, BackupError::DiskFull(_)), "{err}");
    assert!(err.is_retriable());
    assert!(engine.files(&s.uuid).is_empty());
    assert_eq!(
        std::fs::read_dir(engine.storage_dir.path().join(".partial"))
            .unwrap()
            .count(),
        0,
        "no partial files left"
    );
}

/// The password of the test cluster's TCP login (`local_cluster::TCP_PASSWORD`).
const TCP_PASSWORD: &str = "rbk-local-only";

#[tokio::test]
async fn pg_dump_gets_the_password_through_a_private_file_only_and_works_over_tcp() {
    let source = TestDb::with_fixture().await;
    let Some(tcp) = source.tcp_conn() else { return };
    let mut engine = Engine::new(&source).await;
    let report = tempfile::tempdir().unwrap();
    let out = report.path().join("seen");
    let real = crate::helpers::server().bins.program("pg_dump");
    let (_dir, bins) = fake_pg_dump(&format!(
        "echo \"argv: $*\" > {out}\necho \"PGPASSWORD=[${{PGPASSWORD-unset}}]\" >> {out}\necho \"mode: $(stat -c %a \"$PGPASSFILE\")\" >> {out}\nexec {} \"$@\"",
        real.display(),
        out = out.display()
    ));
    engine.state.bins = bins;
    engine.state.conn = tcp;

    let outcome = backup_ok(&engine, &spec(BackupScope::All, None, &[])).await;

    let seen = std::fs::read_to_string(&out).unwrap();
    assert!(!seen.contains(TCP_PASSWORD), "{seen}");
    assert!(seen.contains("PGPASSWORD=[unset]"), "{seen}");
    assert!(seen.contains("mode: 600"), "{seen}");
    assert!(seen.contains("--snapshot="), "{seen}");
    assert!(outcome.manifest.schema.size > 0);
}

/// Damages one stored file in place.
fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

async fn verify(engine: &Engine, uuid: &str) -> Result<artifact::VerifyReport, ArtifactError> {
    artifact::verify(
        engine.state.storage.as_ref(),
        &engine.state.bins,
        uuid,
        None,
        std::time::Duration::from_secs(60),
    )
    .await
}

#[tokio::test]
async fn verify_names_a_flipped_byte_a_truncated_data_file_and_a_truncated_schema_dump() {
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(
            backup_ok(
                &engine,
                &spec(
                    BackupScope::Table,
                    None,
                    &["core_users", "core_operation_logs"],
                ),
            )
            .await,
        );
    }
    let [flipped, truncated, schema] = &outcomes[..] else {
        unreachable!()
    };

    let data = &flipped.manifest.tables[1];
    damage(&engine.path_of(&data.key), |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
    });
    let err = verify(&engine, &flipped.manifest.backup_uuid)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::Sha256Mismatch { ref key, .. } if key == &data.key),
        "{err}"
    );

    let data = &truncated.manifest.tables[0];
    damage(&engine.path_of(&data.key), |b| b.truncate(b.len() - 7));
    let err = verify(&engine, &truncated.manifest.backup_uuid)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::SizeMismatch { ref key, .. } if key == &data.key),
        "{err}"
    );

    damage(&engine.path_of(&schema.manifest.schema.key), |b| {
        b.truncate(b.len() / 2)
    });
    let err = verify(&engine, &schema.manifest.backup_uuid)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::SizeMismatch { ref key, .. } if key.ends_with("schema.dump")),
        "{err}"
    );
}

#[tokio::test]
async fn verify_refuses_a_manifest_that_is_not_the_recorded_one() {
    let source = TestDb::with_fixture().await;
    let engine = Engine::new(&source).await;
    let outcome = backup_ok(&engine, &spec(BackupScope::Table, None, &["aerich"])).await;

    let err = artifact::verify(
        engine.state.storage.as_ref(),
        &engine.state.bins,
        &outcome.manifest.backup_uuid,
        Some(&"0".repeat(64)),
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap_err();

    assert!(
        matches!(
            err,
            ArtifactError::Sha256Mismatch {
                source_of_truth: "backup record",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_backup_row_is_claimed_by_one_run_at_a_time_and_never_after_success() {
    use riveredge_backup::db::backups::{self as rows, BackupFilter, Claim, NewBackup, Transition};
    use std::time::Duration;
    let db = TestDb::with_fixture().await;
    let engine = Engine::new(&db).await;
    let s = spec(BackupScope::Table, None, &["aerich"]);
    let new = NewBackup {
        uuid: s.uuid.clone(),
        tenant_id: None,
        name: "n".into(),
        backup_type: "full".into(),
        backup_scope: "table".into(),
        backup_tables: Some(vec!["aerich".into()]),
    };
    let hour = Duration::from_secs(3600);

    assert!(rows::insert(&db.pool, &new).await.unwrap());
    assert!(
        !rows::insert(&db.pool, &new).await.unwrap(),
        "a retried insert is a no-op"
    );
    assert!(matches!(
        rows::claim(&db.pool, &s.uuid, "run-a", hour).await.unwrap(),
        Claim::Mine
    ));
    assert!(matches!(
        rows::claim(&db.pool, &s.uuid, "run-b", hour).await.unwrap(),
        Claim::Busy { owner: Some(o) } if o == "run-a"
    ));
    assert!(
        matches!(
            rows::claim(&db.pool, &s.uuid, "run-a", hour).await.unwrap(),
            Claim::Mine
        ),
        "the same run may re-claim"
    );
    assert!(
        matches!(
            rows::claim(&db.pool, &s.uuid, "run-b", Duration::ZERO)
                .await
                .unwrap(),
            Claim::Mine
        ),
        "a stale run is taken over"
    );
    assert!(
        matches!(
            rows::mark_failed(&db.pool, &s.uuid, "run-a", "late failure of the old owner")
                .await
                .unwrap(),
            Transition::NotOwner(_)
        ),
        "the run that lost its claim cannot fail the backup"
    );
    assert_eq!(
        rows::get(&db.pool, &s.uuid).await.unwrap().unwrap().status,
        "running"
    );
    assert!(
        !rows::update_progress(&db.pool, &s.uuid, Some("run-a"), 1, 1)
            .await
            .unwrap()
    );
    assert!(matches!(
        rows::mark_failed(&db.pool, &s.uuid, "run-b", &"x".repeat(10_000))
            .await
            .unwrap(),
        Transition::Done
    ));
    let failed = rows::get(&db.pool, &s.uuid).await.unwrap().unwrap();
    assert_eq!(failed.status, "failed");
    assert!(failed.error_message.unwrap().chars().count() <= rows::MAX_ERROR_MESSAGE + 1);
    assert!(matches!(
        rows::claim(&db.pool, &s.uuid, "run-c", hour).await.unwrap(),
        Claim::Mine
    ));

    let outcome = backup_ok(&engine, &s).await;
    assert!(
        matches!(
            rows::mark_success(&db.pool, &s.uuid, "run-b", &outcome)
                .await
                .unwrap(),
            Transition::NotOwner(_)
        ),
        "only the owner records success"
    );
    assert!(matches!(
        rows::mark_success(&db.pool, &s.uuid, "run-c", &outcome)
            .await
            .unwrap(),
        Transition::Done
    ));
    assert!(
        matches!(
            rows::mark_failed(&db.pool, &s.uuid, "run-c", "late")
                .await
                .unwrap(),
            Transition::NotOwner(_)
        ),
        "a success is never turned into a failure"
    );

    assert!(matches!(
        rows::claim(&db.pool, &s.uuid, "run-d", Duration::ZERO)
            .await
            .unwrap(),
        Claim::AlreadyDone(_)
    ));
    let row = rows::get(&db.pool, &s.uuid).await.unwrap().unwrap();
    assert_eq!(row.status, "success");
    assert_eq!(
        row.checksum.as_deref(),
        Some(outcome.manifest_sha256.as_str())
    );
    assert_eq!(
        row.file_path.as_deref(),
        Some(format!("{}/", s.uuid).as_str())
    );
    assert!(row.verified_at.is_some() && row.manifest.is_some());
    let listed = rows::list(
        &db.pool,
        &BackupFilter {
            status: Some("success".into()),
            ..BackupFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.uuid.as_str()).collect::<Vec<_>>(),
        vec![s.uuid.as_str()]
    );
    assert!(matches!(
        rows::claim(&db.pool, "00000000-0000-0000-0000-000000000000", "r", hour)
            .await
            .unwrap(),
        Claim::NotFound
    ));
}
