//! The dump pipeline: snapshot → schema (`pg_dump`) → table data (parallel COPY workers) →
//! sequences → manifest. Everything runs inside one exported snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use sqlx::PgConnection;
use tokio::task::JoinSet;

use super::selection::SelectedTable;
use super::{BackupError, BackupOutcome, ValidatedSpec};
use crate::artifact::{
    self, copy_select, CompressionEntry, Manifest, Progress, SequenceEntry, SequenceOwner,
    TableEntry, WriteError, FORMAT, MANIFEST_FILE, SCHEMA_FILE,
};
use crate::artifact::{ExcludedTable, OwnershipPlan};
use crate::backup::BackupScope;
use crate::catalog::{Catalog, Sequence, TableRef};
use crate::pg::{quote_ident, PgCommand};
use crate::snapshot::Snapshot;
use crate::startup::AppState;
use crate::storage::{ObjectKey, Storage};
use crate::tenant::TenantPlan;

/// One table waiting for a COPY worker.
struct Job {
    table: SelectedTable,
    key: ObjectKey,
}

/// Runs the whole pipeline and publishes the manifest.
pub(super) async fn dump(
    state: &AppState,
    validated: &ValidatedSpec,
    progress: Arc<Progress>,
) -> Result<BackupOutcome, BackupError> {
    let uuid = &validated.spec.uuid;
    let tables = validated.selection.table_refs();
    let mut snapshot = Snapshot::export(&state.conn, &tables)
        .await
        .map_err(snapshot_error)?;
    ensure_unchanged(state, validated).await?;
    let server = server_info(snapshot.connection()).await?;
    let pg_dump_version = pg_dump_version(state).await?;

    let others = relations_outside(snapshot.connection(), validated).await?;
    let schema = dump_schema(state, validated, &snapshot.info.snapshot_id, &others).await?;
    let mut entries = dump_tables(state, validated, &snapshot, progress).await?;
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let sequences = read_sequences(snapshot.connection(), &validated.selection.sequences).await?;
    let snapshot_info = snapshot.info.clone();
    snapshot
        .release()
        .await
        .map_err(BackupError::db("releasing the snapshot"))?;

    let manifest = Manifest {
        format: FORMAT.to_owned(),
        backup_uuid: uuid.clone(),
        backup_type: validated.spec.backup_type.as_str().to_owned(),
        scope: validated.spec.scope.as_str().to_owned(),
        tenant_id: validated.spec.tenant_id,
        created_at: Utc::now(),
        database: server.database,
        server_version: server.version,
        server_version_num: server.version_num,
        tool_version: format!("riveredge-backup {}", env!("CARGO_PKG_VERSION")),
        pg_dump_version,
        snapshot: snapshot_info,
        compression: CompressionEntry {
            codec: "zstd".to_owned(),
            level: state.settings.backup.compression_level,
        },
        schema,
        tables: entries,
        sequences,
        excluded_tables: excluded_tables(state, validated).await?,
        ownership: ownership_plan(validated, &tables),
    };
    let key = artifact::prefix(uuid)
        .and_then(|p| p.join(MANIFEST_FILE))
        .map_err(|e| BackupError::Invalid(e.to_string()))?;
    let (manifest_sha256, manifest_size) =
        artifact::write_manifest(state.storage.as_ref(), &key, &manifest)
            .await
            .map_err(BackupError::storage)?;
    let total_size =
        manifest_size + manifest.schema.size + manifest.tables.iter().map(|t| t.size).sum::<u64>();
    let rows = manifest.tables.iter().map(|t| t.rows).sum();
    Ok(BackupOutcome {
        manifest,
        manifest_sha256,
        total_size,
        file_path: format!("{uuid}/"),
        rows,
    })
}

/// The selection's exclusions, plus for a whole-database backup every partition: `pg_dump`
/// writes a partition's table, but its rows are copied through the partitioned parent, so
/// verification must know why it has no data file of its own.
async fn excluded_tables(
    state: &AppState,
    validated: &ValidatedSpec,
) -> Result<Vec<ExcludedTable>, BackupError> {
    let mut out = validated.selection.excluded.clone();
    if validated.spec.scope != BackupScope::All {
        return Ok(out);
    }
    // language=PostgreSQL
    let partitions: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relispartition AND c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         ORDER BY 1, 2",
    )
    .fetch_all(&state.pool)
    .await
    .map_err(BackupError::db("listing partitions"))?;
    out.extend(partitions.into_iter().map(|(schema, name)| ExcludedTable {
        schema,
        name,
        reason: "partition: its rows are copied through its partitioned parent".to_owned(),
    }));
    Ok(out)
}

/// The typed ownership plan of a tenant-filtered backup: the rules of its tables and of every
/// table their foreign-key paths reach.
fn ownership_plan(validated: &ValidatedSpec, tables: &[TableRef]) -> Option<OwnershipPlan> {
    let tenant = validated.spec.tenant_id?;
    let own = super::selection::own_tables(&validated.catalog);
    let plan = TenantPlan::build(&validated.catalog, tenant, &own);
    Some(plan.ownership().restricted_to(tables))
}

/// A table that vanished before it could be locked is a schema change (retriable), not a
/// database failure.
fn snapshot_error(e: sqlx::Error) -> BackupError {
    match e.as_database_error().and_then(|d| d.code()).as_deref() {
        Some("42P01") => BackupError::SchemaChanged(format!(
            "a selected table was dropped before it could be locked: {e}"
        )),
        _ => BackupError::Database {
            context: "locking the tables and exporting the snapshot",
            source: e,
        },
    }
}

/// What the backup will contain must still be what validation chose, now that the tables are
/// locked and the snapshot taken: the same tables (none created or dropped in between, which
/// for a whole-database or tenant backup would change the set, and would put a table in the
/// schema dump without a data file), with the same columns and the same sequences. The
/// selection is recomputed from the catalog as it is now and compared; a difference refuses
/// the backup with a retriable error (the retry validates afresh).
async fn ensure_unchanged(state: &AppState, validated: &ValidatedSpec) -> Result<(), BackupError> {
    let now = Catalog::load(&state.pool)
        .await
        .map_err(BackupError::db("re-reading the catalog"))?;
    let again = super::selection::select(&now, &validated.spec).map_err(|e| {
        BackupError::SchemaChanged(format!("the selection no longer validates: {e}"))
    })?;
    let shape = |s: &super::Selection| {
        let tables: Vec<_> = s
            .tables
            .iter()
            .map(|t| {
                (
                    t.table.table.clone(),
                    t.table.columns.clone(),
                    t.predicate.clone(),
                )
            })
            .collect();
        let sequences: Vec<_> = s.sequences.iter().map(|q| q.sequence.clone()).collect();
        (tables, sequences)
    };
    let (before, after) = (shape(&validated.selection), shape(&again));
    if before == after {
        return Ok(());
    }
    let names = |v: &[(TableRef, Vec<crate::catalog::Column>, Option<String>)]| {
        v.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
    };
    let (b, a) = (names(&before.0), names(&after.0));
    let mut changes: Vec<String> = Vec::new();
    changes.extend(
        a.iter()
            .filter(|t| !b.contains(t))
            .map(|t| format!("{t} appeared")),
    );
    changes.extend(
        b.iter()
            .filter(|t| !a.contains(t))
            .map(|t| format!("{t} was dropped")),
    );
    if changes.is_empty() {
        changes.push("columns, foreign keys or sequences of the selected tables changed".into());
    }
    Err(BackupError::SchemaChanged(changes.join(", ")))
}

struct ServerInfo {
    database: String,
    version: String,
    version_num: i32,
}

async fn server_info(conn: &mut PgConnection) -> Result<ServerInfo, BackupError> {
    let (database, version, num): (String, String, String) =
        sqlx::query_as("SELECT current_database()::text, current_setting('server_version'), current_setting('server_version_num')")
            .fetch_one(conn)
            .await
            .map_err(BackupError::db("reading the server version"))?;
    let version_num = num
        .parse()
        .map_err(|_| BackupError::Internal(format!("server_version_num {num:?}")))?;
    // `15.18 (Debian 15.18-1.pgdg120+1)`: keep the number only.
    let version = version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(ServerInfo {
        database,
        version,
        version_num,
    })
}

async fn pg_dump_version(state: &AppState) -> Result<String, BackupError> {
    let out = PgCommand::new(
        state.bins.program("pg_dump"),
        std::time::Duration::from_secs(30),
    )
    .arg("--version")
    .output()
    .await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// `pg_dump -t` takes a pattern; a double-quoted part matches literally (`""` is a quote).
fn literal_pattern(t: &TableRef) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}

/// What the schema archive leaves out. A whole-database backup: our own tables. Any other
/// scope: every relation (table, view, sequence, …) that is neither a selected table nor a
/// sequence a selected table draws from. Excluding rather than listing (`--table`) keeps
/// everything the selected tables need that `--table` would drop: their schemas, types and
/// domains, functions their defaults and triggers call, and the sequences they use only
/// through `DEFAULT nextval(…)`.
fn pg_dump_args(validated: &ValidatedSpec, snapshot_id: &str, others: &[TableRef]) -> Vec<String> {
    let mut args = vec![
        "--format=custom".to_owned(),
        "--schema-only".to_owned(),
        "--no-sync".to_owned(),
        format!("--snapshot={snapshot_id}"),
    ];
    let excluded = if validated.spec.scope == BackupScope::All {
        super::selection::own_tables(&validated.catalog)
    } else {
        others.to_vec()
    };
    args.extend(
        excluded
            .iter()
            .map(|t| format!("--exclude-table={}", literal_pattern(t))),
    );
    args
}

/// Every relation of the snapshot that a table or tenant backup's schema must leave out (see
/// [`pg_dump_args`]), read on the coordinator so it is exactly what `pg_dump` sees.
async fn relations_outside(
    conn: &mut PgConnection,
    validated: &ValidatedSpec,
) -> Result<Vec<TableRef>, BackupError> {
    if validated.spec.scope == BackupScope::All {
        return Ok(Vec::new());
    }
    // language=PostgreSQL
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
         ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await
    .map_err(BackupError::db("listing relations"))?;
    let keep: Vec<&TableRef> = validated
        .selection
        .tables
        .iter()
        .map(|t| &t.table.table)
        .chain(validated.selection.sequences.iter().map(|s| &s.sequence))
        .collect();
    Ok(rows
        .into_iter()
        .map(|(schema, name)| TableRef::new(&schema, &name))
        .filter(|t| !keep.contains(&t))
        .collect())
}

/// Streams `pg_dump`'s archive into `<uuid>/schema.dump`. The password reaches `pg_dump`
/// through a private password file only.
#[tracing::instrument(skip_all)]
async fn dump_schema(
    state: &AppState,
    validated: &ValidatedSpec,
    snapshot_id: &str,
    others: &[TableRef],
) -> Result<artifact::ObjectEntry, BackupError> {
    let key = artifact::prefix(&validated.spec.uuid)
        .and_then(|p| p.join(SCHEMA_FILE))
        .map_err(|e| BackupError::Invalid(e.to_string()))?;
    let passfile = state.conn.passfile().map_err(BackupError::storage)?;
    let mut running = PgCommand::new(
        state.bins.program("pg_dump"),
        state.settings.backup.step_timeout,
    )
    .args(pg_dump_args(validated, snapshot_id, others))
    .envs(state.conn.child_env(passfile.as_ref()))
    .piped_stdout()
    .spawn()?;
    let stdout = running.take_stdout();
    match artifact::write_schema(state.storage.as_ref(), &key, stdout).await {
        Ok(written) => {
            // The exit status decides: a killed pg_dump also ends its stdout cleanly.
            running.wait().await?;
            Ok(written.entry)
        }
        Err(e) => {
            running.kill().await;
            Err(BackupError::storage(e))
        }
    }
}

/// Copies every selected table with `BACKUP_JOBS` workers on the snapshot, biggest tables
/// first so the longest copy starts early.
#[tracing::instrument(skip_all)]
async fn dump_tables(
    state: &AppState,
    validated: &ValidatedSpec,
    snapshot: &Snapshot,
    progress: Arc<Progress>,
) -> Result<Vec<TableEntry>, BackupError> {
    let sizes = table_sizes(state).await?;
    let mut jobs = Vec::new();
    for (index, table) in validated.selection.tables.iter().enumerate() {
        let key = artifact::data_key(&validated.spec.uuid, index + 1)
            .map_err(|e| BackupError::Invalid(e.to_string()))?;
        jobs.push(Job {
            table: table.clone(),
            key,
        });
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(sizes.get(&j.table.table.table).copied().unwrap_or(0)));
    let workers = (state.settings.backup.jobs as usize).min(jobs.len());
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let conn = snapshot
            .worker(&state.conn)
            .await
            .map_err(BackupError::db("opening a COPY connection"))?;
        let (queue, storage, progress) = (queue.clone(), state.storage.clone(), progress.clone());
        set.spawn(copy_worker(
            conn,
            queue,
            storage,
            state.settings.backup.compression_level,
            progress,
        ));
    }
    let mut entries = Vec::new();
    while let Some(joined) = set.join_next().await {
        // Returning early drops the set, which aborts the other workers.
        let done =
            joined.map_err(|e| BackupError::Internal(format!("COPY worker failed: {e}")))??;
        entries.extend(done);
    }
    Ok(entries)
}

async fn table_sizes(state: &AppState) -> Result<BTreeMap<TableRef, i64>, BackupError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, pg_total_relation_size(c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')",
    )
    .fetch_all(&state.pool)
    .await
    .map_err(BackupError::db("reading table sizes"))?;
    Ok(rows
        .into_iter()
        .map(|(s, n, size)| (TableRef::new(&s, &n), size))
        .collect())
}

async fn copy_worker(
    mut conn: PgConnection,
    queue: Arc<Mutex<VecDeque<Job>>>,
    storage: Arc<dyn Storage>,
    level: i32,
    progress: Arc<Progress>,
) -> Result<Vec<TableEntry>, BackupError> {
    let mut done = Vec::new();
    loop {
        let next = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let Some(job) = next else { break };
        done.push(copy_table(&mut conn, job, storage.as_ref(), level, progress.clone()).await?);
    }
    Ok(done)
}

#[tracing::instrument(skip_all, fields(table = %job.table.table.table))]
async fn copy_table(
    conn: &mut PgConnection,
    job: Job,
    storage: &dyn Storage,
    level: i32,
    progress: Arc<Progress>,
) -> Result<TableEntry, BackupError> {
    let table = &job.table.table;
    let columns: Vec<_> = table.copy_columns().cloned().collect();
    let select = copy_select(&table.table, &columns, job.table.predicate.as_deref());
    let stream = conn
        .copy_out_raw(&format!("COPY ({select}) TO STDOUT"))
        .await
        .map_err(BackupError::db("starting a table COPY"))?;
    let written = artifact::write_table(storage, &job.key, level, stream, Some(progress))
        .await
        .map_err(|e| match e {
            WriteError::Database(e) => BackupError::Database {
                context: "copying a table",
                source: e,
            },
            WriteError::Storage(e) => BackupError::storage(e),
        })?;
    Ok(TableEntry {
        schema: table.table.schema.clone(),
        name: table.table.name.clone(),
        key: written.object.key,
        sha256: written.object.sha256,
        size: written.object.size,
        raw_size: written.raw_size,
        rows: written.digest.rows,
        content_hash: written.digest.content_hash(),
        columns,
        primary_key: table.primary_key.clone(),
        // Format 2 keeps the typed plan in the manifest instead of SQL text.
        predicate: None,
    })
}

/// The values of `sequences`, read after the data so they are never behind the copied ids
/// (sequence reads are not snapshot-isolated), with every column that draws from each.
async fn read_sequences(
    conn: &mut PgConnection,
    sequences: &[Sequence],
) -> Result<Vec<SequenceEntry>, BackupError> {
    let owner = |(t, c): &(TableRef, String)| SequenceOwner {
        schema: t.schema.clone(),
        table: t.name.clone(),
        column: c.clone(),
    };
    let mut out = Vec::new();
    for seq in sequences {
        let (last_value, is_called): (i64, bool) = sqlx::query_as(&format!(
            "SELECT last_value, is_called FROM {}",
            seq.sequence.quoted()
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(BackupError::db("reading a sequence"))?;
        out.push(SequenceEntry {
            schema: seq.sequence.schema.clone(),
            name: seq.sequence.name.clone(),
            last_value,
            is_called,
            owned_by: seq.owned_by.as_ref().map(owner),
            used_by: seq.used_by.iter().map(owner).collect(),
        });
    }
    Ok(out)
}
