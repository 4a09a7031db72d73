//! The dump pipeline: locks and snapshot → consistency check ([`super::consistency`]) →
//! schema ([`super::schema`], `pg_dump`) → table data (parallel COPY workers) → sequences →
//! manifest. Everything runs inside one exported snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use sqlx::PgConnection;
use tokio::task::JoinSet;

use super::incremental::{self, Capture, Plan};
use super::selection::SelectedTable;
use super::{BackupError, BackupOutcome, ValidatedSpec};
use crate::artifact::{
    self, copy_select, CompressionEntry, DeltaMode, Manifest, OwnershipPlan, Progress,
    SequenceEntry, SequenceOwner, TableDelta, TableEntry, WriteError, FORMAT, MANIFEST_FILE,
};
use crate::catalog::{Sequence, TableRef};
use crate::pg::PgCommand;
use crate::snapshot::Snapshot;
use crate::startup::AppState;
use crate::storage::{ObjectKey, Storage};
use crate::tenant::TenantPlan;

/// One table waiting for a COPY worker.
struct Job {
    table: SelectedTable,
    key: ObjectKey,
    /// Incrementals: where the table's primary-key list goes.
    keys: ObjectKey,
}

/// Runs the whole pipeline and publishes the manifest.
pub(super) async fn dump(
    state: &AppState,
    validated: &ValidatedSpec,
    progress: Arc<Progress>,
) -> Result<BackupOutcome, BackupError> {
    let uuid = &validated.spec.uuid;
    let tables = validated.selection.table_refs();
    let plan = incremental::plan(state, validated).await?;
    let mut snapshot = Snapshot::export(&state.conn, &tables)
        .await
        .map_err(super::consistency::snapshot_error)?;
    super::consistency::ensure_unchanged(state, validated).await?;
    let server = server_info(snapshot.connection()).await?;
    let system_identifier = snapshot.info.system_identifier.clone();
    let position =
        incremental::position(snapshot.connection(), &system_identifier, &tables).await?;
    let plan = incremental::confirm(plan, &position, validated);
    let capture = match &plan {
        Plan::Incremental(parent) => Some(Capture::new(&parent.position, &position)),
        Plan::Full(_) => None,
    };
    let pg_dump_version = pg_dump_version(state).await?;

    let others = super::schema::relations_outside(snapshot.connection(), validated).await?;
    let schema =
        super::schema::dump_schema(state, validated, &snapshot.info.snapshot_id, &others).await?;
    let mut entries = dump_tables(state, validated, &snapshot, progress, capture).await?;
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
        backup_type: match plan {
            Plan::Incremental(_) => "incremental",
            Plan::Full(_) => "full",
        }
        .to_owned(),
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
        excluded_tables: super::schema::excluded_tables(state, validated).await?,
        ownership: ownership_plan(validated, &tables),
        parent_uuid: match &plan {
            Plan::Incremental(p) => Some(p.uuid.clone()),
            Plan::Full(_) => None,
        },
        chain_uuid: Some(match &plan {
            Plan::Incremental(p) => p.chain_uuid.clone(),
            Plan::Full(_) => uuid.clone(),
        }),
        position: Some(position),
        fallback_reason: match plan {
            Plan::Full(reason) => reason,
            Plan::Incremental(_) => None,
        },
    };
    let key = artifact::prefix(uuid)
        .and_then(|p| p.join(MANIFEST_FILE))
        .map_err(|e| BackupError::Invalid(e.to_string()))?;
    let (manifest_sha256, manifest_size) =
        artifact::write_manifest(state.storage.as_ref(), &key, &manifest)
            .await
            .map_err(BackupError::storage)?;
    let total_size = manifest_size
        + manifest.schema.size
        + manifest
            .tables
            .iter()
            .chain(manifest.key_lists())
            .map(|t| t.size)
            .sum::<u64>();
    let rows = manifest.tables.iter().map(|t| t.rows).sum();
    Ok(BackupOutcome {
        manifest,
        manifest_sha256,
        total_size,
        file_path: format!("{uuid}/"),
        rows,
    })
}

/// The typed ownership plan of a tenant-filtered backup: the rules of its tables and of every
/// table their foreign-key paths reach.
pub(super) fn ownership_plan(
    validated: &ValidatedSpec,
    tables: &[TableRef],
) -> Option<OwnershipPlan> {
    let tenant = validated.spec.tenant_id?;
    let own = super::selection::own_tables(&validated.catalog);
    let plan = TenantPlan::build(&validated.catalog, tenant, &own);
    Some(plan.ownership().restricted_to(tables))
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

/// Copies every selected table with `BACKUP_JOBS` workers on the snapshot, biggest tables
/// first so the longest copy starts early.
#[tracing::instrument(skip_all)]
async fn dump_tables(
    state: &AppState,
    validated: &ValidatedSpec,
    snapshot: &Snapshot,
    progress: Arc<Progress>,
    capture: Option<Capture>,
) -> Result<Vec<TableEntry>, BackupError> {
    let sizes = table_sizes(state).await?;
    let mut jobs = Vec::new();
    for (index, table) in validated.selection.tables.iter().enumerate() {
        let key = artifact::data_key(&validated.spec.uuid, index + 1)
            .map_err(|e| BackupError::Invalid(e.to_string()))?;
        let keys = artifact::keys_key(&validated.spec.uuid, index + 1)
            .map_err(|e| BackupError::Invalid(e.to_string()))?;
        jobs.push(Job {
            table: table.clone(),
            key,
            keys,
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
            capture,
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
    capture: Option<Capture>,
) -> Result<Vec<TableEntry>, BackupError> {
    let mut done = Vec::new();
    loop {
        let next = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let Some(job) = next else { break };
        let entry = match capture {
            Some(c) if !incremental::captured_whole(&job.table) => {
                copy_changes(&mut conn, job, storage.as_ref(), level, progress.clone(), c).await?
            }
            _ => {
                let whole = capture.is_some();
                let mut entry =
                    copy_table(&mut conn, job, storage.as_ref(), level, progress.clone()).await?;
                if whole {
                    entry.delta = Some(TableDelta {
                        mode: DeltaMode::Whole,
                        state_rows: entry.rows,
                        state_content_hash: entry.content_hash.clone(),
                        keys: None,
                    });
                }
                entry
            }
        };
        done.push(entry);
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
        delta: None,
    })
}

/// An incremental's table: one ordered scan gives the possibly changed rows, the key list and
/// the table's state hash ([`artifact::write_delta`]).
#[tracing::instrument(skip_all, fields(table = %job.table.table.table))]
async fn copy_changes(
    conn: &mut PgConnection,
    job: Job,
    storage: &dyn Storage,
    level: i32,
    progress: Arc<Progress>,
    capture: Capture,
) -> Result<TableEntry, BackupError> {
    let table = &job.table.table;
    let columns: Vec<_> = table.copy_columns().cloned().collect();
    let select = copy_select(&table.table, &columns, job.table.predicate.as_deref());
    let order = table
        .primary_key
        .iter()
        .map(|k| format!("t.{}", crate::pg::quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    // `SELECT t."a", … FROM …` → `SELECT <flag>, t."a", … FROM … ORDER BY <key>`.
    let flagged = format!(
        "SELECT {}, {} ORDER BY {order}",
        capture.flag_sql(),
        select.trim_start_matches("SELECT ")
    );
    let stream = conn
        .copy_out_raw(&format!("COPY ({flagged}) TO STDOUT"))
        .await
        .map_err(BackupError::db("starting a table COPY"))?;
    let fields = incremental::key_fields(&job.table);
    let written = artifact::write_delta(
        storage,
        &job.key,
        &job.keys,
        level,
        stream,
        &fields,
        Some(progress),
    )
    .await
    .map_err(|e| match e {
        WriteError::Database(e) => BackupError::Database {
            context: "copying a table",
            source: e,
        },
        WriteError::Storage(e) => BackupError::storage(e),
    })?;
    let keys = incremental::keys_entry(&job.table, &written.keys);
    Ok(TableEntry {
        schema: table.table.schema.clone(),
        name: table.table.name.clone(),
        key: written.changes.object.key,
        sha256: written.changes.object.sha256,
        size: written.changes.object.size,
        raw_size: written.changes.raw_size,
        rows: written.changes.digest.rows,
        content_hash: written.changes.digest.content_hash(),
        columns,
        primary_key: table.primary_key.clone(),
        predicate: None,
        delta: Some(TableDelta {
            mode: DeltaMode::Changes,
            state_rows: written.state.rows,
            state_content_hash: written.state.content_hash(),
            keys: Some(Box::new(keys)),
        }),
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
