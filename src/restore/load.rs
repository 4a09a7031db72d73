//! Loading rows: the fresh-database pipeline and the in-place table replacement.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{Connection, PgConnection};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::{compat, connect, sequences, verify_tables, RestoreError, TableCheck};
use crate::artifact::{self, ArtifactError, Manifest, SchemaFile, TableEntry};
use crate::catalog::{Catalog, TableRef};
use crate::pg::{quote_ident, ConnInfo, PgCommand, ProcessError};
use crate::snapshot::LOCK_TIMEOUT;
use crate::startup::AppState;
use crate::storage::Storage;

/// `maintenance_work_mem` for the index builds of a fresh restore: the default 64 MB makes big
/// index builds spill to disk; this is per parallel job.
const INDEX_BUILD_MEMORY: &str = "256MB";
const COPY_CHUNK: usize = 256 * 1024;

/// Schema (pre-data), rows in parallel, sequences, then indexes and constraints (post-data),
/// then a full comparison with the manifest.
#[tracing::instrument(skip_all)]
pub(super) async fn fresh(
    state: &AppState,
    manifest: &Manifest,
    target: &ConnInfo,
    entries: &[&TableEntry],
    base: &[&TableEntry],
    deltas: &[Manifest],
) -> Result<Vec<TableCheck>, RestoreError> {
    let pool = crate::db::connect(target, 2)
        .await
        .map_err(RestoreError::db("connecting to the target"))?;
    let existing = Catalog::load(&pool)
        .await
        .map_err(RestoreError::db("reading the target catalog"))?
        .tables()
        .count();
    pool.close().await;
    if existing > 0 {
        return Err(RestoreError::NotEmpty {
            database: target.database.clone(),
            tables: existing,
        });
    }
    let schema = SchemaFile::materialize(state.storage.as_ref(), &manifest.schema).await?;
    let started = std::time::Instant::now();
    if manifest.format == crate::artifact::FORMAT_V1 && manifest.scope != "all" {
        create_schemas(target, manifest).await?;
    }
    pg_restore(state, target, &schema, "pre-data", 1, None).await?;
    let loaded = load_parallel(state, target, base).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "schema created and rows loaded"
    );
    let mut conn = connect(target).await?;
    // An incremental's chain: its changes go in before constraints and triggers exist.
    if !deltas.is_empty() {
        let tables: Vec<TableRef> = entries.iter().map(|e| e.table_ref()).collect();
        exec(&mut conn, "BEGIN", "starting to apply the incrementals").await?;
        for delta in deltas {
            super::chain::apply(&mut conn, state.storage.as_ref(), delta, &tables).await?;
        }
        exec(&mut conn, "COMMIT", "committing the incrementals").await?;
    }
    for seq in &manifest.sequences {
        sequences::set_exact(&mut conn, seq)
            .await
            .map_err(RestoreError::db("setting a sequence"))?;
    }
    if manifest.scope == "all" {
        pg_restore(
            state,
            target,
            &schema,
            "post-data",
            state.settings.backup.jobs,
            None,
        )
        .await?;
    } else {
        post_data_of_a_subset(state, target, &schema, manifest.tenant_id.is_some()).await?;
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "indexes and constraints built"
    );
    if deltas.is_empty() {
        counted_checks(entries, &loaded)
    } else {
        // Rows were changed after they streamed in: re-read each table against the state the
        // last incremental recorded.
        verify_tables(&mut conn, entries).await
    }
}

/// The check of a restore into a new database. Every row was verified against the manifest
/// while it streamed in (sha256 of the file, rows and content hash of the text), and COPY
/// reports how many rows the server took; a database created from the backup's own schema has
/// no triggers or rules while it loads, so nothing can change them afterwards. Re-reading every
/// table would double the restore's time for no further assurance; drills do re-read.
fn counted_checks(
    entries: &[&TableEntry],
    loaded: &[(TableEntry, u64)],
) -> Result<Vec<TableCheck>, RestoreError> {
    entries
        .iter()
        .map(|entry| {
            let rows = loaded
                .iter()
                .find(|(e, _)| e.key == entry.key)
                .map_or(0, |(_, rows)| *rows);
            let check = TableCheck {
                table: entry.table_ref(),
                expected_rows: entry.rows,
                rows,
                expected_hash: entry.content_hash.clone(),
                content_hash: entry.content_hash.clone(),
            };
            if check.matches() {
                Ok(check)
            } else {
                Err(RestoreError::Mismatch {
                    table: check.table.to_string(),
                    rows: check.rows,
                    hash: check.content_hash,
                    expected_rows: check.expected_rows,
                    expected_hash: check.expected_hash,
                })
            }
        })
        .collect()
}

/// [`verify_tables`] over `jobs` connections at once, biggest tables first: re-reading a whole
/// database costs about what dumping it did, so it gets the same parallelism as the load.
/// Results come back in `entries` order.
pub(super) async fn verify_parallel(
    target: &ConnInfo,
    entries: &[&TableEntry],
    jobs: u32,
) -> Result<Vec<TableCheck>, RestoreError> {
    let mut queue: Vec<(usize, TableEntry)> =
        entries.iter().map(|e| (*e).clone()).enumerate().collect();
    queue.sort_by_key(|(_, e)| std::cmp::Reverse(e.raw_size));
    let workers = (jobs as usize).clamp(1, queue.len().max(1));
    let queue = Arc::new(Mutex::new(VecDeque::from(queue)));
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let mut conn = connect(target).await?;
        let queue = queue.clone();
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some((index, entry)) = next else {
                    return Ok::<_, RestoreError>(done);
                };
                let mut check = verify_tables(&mut conn, &[&entry]).await?;
                done.push((index, check.remove(0)));
            }
        });
    }
    let mut checks = Vec::new();
    while let Some(joined) = set.join_next().await {
        checks.extend(joined.map_err(|e| {
            RestoreError::Io(std::io::Error::other(format!("verify worker failed: {e}")))
        })??);
    }
    checks.sort_by_key(|(index, _)| *index);
    Ok(checks.into_iter().map(|(_, check)| check).collect())
}

/// Format 1 table and tenant backups were dumped with `pg_dump --table`, which writes no
/// `CREATE SCHEMA`: a table or sequence outside `public` needs its schema created first.
/// (Format 2 schema archives exclude the other relations instead and keep the schemas.)
async fn create_schemas(target: &ConnInfo, manifest: &Manifest) -> Result<(), RestoreError> {
    let mut schemas: Vec<&str> = manifest
        .tables
        .iter()
        .map(|t| t.schema.as_str())
        .chain(manifest.sequences.iter().map(|s| s.schema.as_str()))
        .filter(|s| *s != "public")
        .collect();
    schemas.sort_unstable();
    schemas.dedup();
    let mut conn = connect(target).await?;
    for schema in schemas {
        exec(
            &mut conn,
            &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)),
            "creating a schema",
        )
        .await?;
    }
    Ok(())
}

/// A table backup's schema has the foreign keys of its tables, some of which reference tables
/// the backup does not hold. Indexes and other constraints go in parallel as usual; each
/// foreign key is then added on its own, and one whose referenced table is absent is skipped
/// (and logged) instead of failing the restore. A tenant's rows (`filtered`) may also
/// reference rows that are not the tenant's (a platform role, say), which a new database does
/// not have: such a key is skipped too, and logged.
async fn post_data_of_a_subset(
    state: &AppState,
    target: &ConnInfo,
    schema: &SchemaFile,
    filtered: bool,
) -> Result<(), RestoreError> {
    let toc = PgCommand::new(
        state.bins.program("pg_restore"),
        state.settings.backup.step_timeout,
    )
    .arg("--list")
    .arg(schema.path())
    .output()
    .await?;
    let toc = String::from_utf8_lossy(&toc);
    let (fks, rest): (Vec<&str>, Vec<&str>) = toc
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .partition(|l| l.contains(" FK CONSTRAINT "));
    let lists = tempfile::Builder::new().prefix("rbk-toc-").tempdir()?;
    let rest_list = lists.path().join("rest.list");
    std::fs::write(&rest_list, rest.join("\n"))?;
    pg_restore(
        state,
        target,
        schema,
        "post-data",
        state.settings.backup.jobs,
        Some(&rest_list),
    )
    .await?;
    for (i, fk) in fks.iter().enumerate() {
        let list = lists.path().join(format!("fk{i}.list"));
        std::fs::write(&list, fk)?;
        match pg_restore(state, target, schema, "post-data", 1, Some(&list)).await {
            Err(RestoreError::Process(ProcessError::Status { stderr, .. }))
                if stderr.contains("does not exist") =>
            {
                tracing::warn!(constraint = %fk, "foreign key skipped: the table it references is not in this backup");
            }
            Err(RestoreError::Process(ProcessError::Status { stderr, .. }))
                if filtered && stderr.contains("violates foreign key constraint") =>
            {
                tracing::warn!(constraint = %fk, "foreign key skipped: the tenant's rows reference rows outside the tenant's backup");
            }
            other => other?,
        }
    }
    Ok(())
}

/// One section of the schema archive into `target`, failing on the first error.
async fn pg_restore(
    state: &AppState,
    target: &ConnInfo,
    schema: &SchemaFile,
    section: &str,
    jobs: u32,
    list: Option<&std::path::Path>,
) -> Result<(), RestoreError> {
    let passfile = target.passfile()?;
    let mut command = PgCommand::new(
        state.bins.program("pg_restore"),
        state.settings.backup.step_timeout,
    );
    if let Some(list) = list {
        command = command.arg("--use-list").arg(list);
    }
    command
        .arg(format!("--section={section}"))
        .arg(format!("--jobs={jobs}"))
        .args(["--no-owner", "--exit-on-error"])
        .arg(format!("--dbname={}", target.database))
        .arg(schema.path())
        .envs(target.child_env(passfile.as_ref()))
        .envs([(
            "PGOPTIONS".into(),
            format!("-c maintenance_work_mem={INDEX_BUILD_MEMORY}").into(),
        )])
        .output()
        .await?;
    Ok(())
}

/// Loads each table in its own transaction (`TRUNCATE` + `COPY … FREEZE`: no later vacuum
/// needs to rewrite the pages) with `BACKUP_JOBS` connections.
async fn load_parallel(
    state: &AppState,
    target: &ConnInfo,
    entries: &[&TableEntry],
) -> Result<Vec<(TableEntry, u64)>, RestoreError> {
    let mut queue: Vec<TableEntry> = entries.iter().map(|e| (*e).clone()).collect();
    queue.sort_by_key(|e| std::cmp::Reverse(e.size));
    let workers = (state.settings.backup.jobs as usize).min(queue.len());
    let queue = Arc::new(Mutex::new(VecDeque::from(queue)));
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let conn = connect(target).await?;
        set.spawn(load_worker(conn, queue.clone(), state.storage.clone()));
    }
    let mut loaded = Vec::new();
    while let Some(joined) = set.join_next().await {
        loaded.extend(joined.map_err(|e| {
            RestoreError::Io(std::io::Error::other(format!("load worker failed: {e}")))
        })??);
    }
    Ok(loaded)
}

async fn load_worker(
    mut conn: PgConnection,
    queue: Arc<Mutex<VecDeque<TableEntry>>>,
    storage: Arc<dyn Storage>,
) -> Result<Vec<(TableEntry, u64)>, RestoreError> {
    let mut loaded = Vec::new();
    loop {
        let next = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let Some(entry) = next else {
            return Ok(loaded);
        };
        let freeze = is_plain_table(&mut conn, &entry.table_ref()).await?;
        let mut tx = conn
            .begin()
            .await
            .map_err(RestoreError::db("starting a table load"))?;
        sqlx::query(&format!("TRUNCATE {}", entry.table_ref().quoted()))
            .execute(&mut *tx)
            .await
            .map_err(RestoreError::db("truncating a table"))?;
        let rows = copy_into(&mut tx, storage.as_ref(), &entry, freeze).await?;
        tx.commit()
            .await
            .map_err(RestoreError::db("committing a table"))?;
        loaded.push((entry, rows));
    }
}

/// `COPY … FREEZE` is refused for partitioned tables.
async fn is_plain_table(conn: &mut PgConnection, table: &TableRef) -> Result<bool, RestoreError> {
    let kind: String =
        sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = $1::regclass")
            .bind(table.quoted())
            .fetch_one(conn)
            .await
            .map_err(RestoreError::db("looking up a restored table"))?;
    Ok(kind == "r")
}

/// Streams one data file into its table through the verifying reader: a damaged file makes the
/// COPY fail (and its transaction roll back) instead of loading a prefix of the rows.
#[tracing::instrument(skip_all, fields(table = %entry.table_ref()))]
async fn copy_into(
    conn: &mut PgConnection,
    storage: &dyn Storage,
    entry: &TableEntry,
    freeze: bool,
) -> Result<u64, RestoreError> {
    let columns = entry
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let options = if freeze { " WITH (FREEZE)" } else { "" };
    let statement = format!(
        "COPY {} ({columns}) FROM STDIN{options}",
        entry.table_ref().quoted()
    );
    copy_statement(conn, storage, entry, &statement).await
}

/// Streams `entry`'s file into `target` (a quoted table name: a temporary table of an
/// incremental's changes or keys).
pub(super) async fn copy_entry_into(
    conn: &mut PgConnection,
    storage: &dyn Storage,
    entry: &TableEntry,
    target: &str,
) -> Result<u64, RestoreError> {
    let columns = entry
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let statement = format!("COPY {target} ({columns}) FROM STDIN");
    copy_statement(conn, storage, entry, &statement).await
}

async fn copy_statement(
    conn: &mut PgConnection,
    storage: &dyn Storage,
    entry: &TableEntry,
    statement: &str,
) -> Result<u64, RestoreError> {
    let mut reader = artifact::open_table(storage, entry).await?;
    let mut copy = conn
        .copy_in_raw(statement)
        .await
        .map_err(RestoreError::db("starting COPY FROM"))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                copy.send(&buf[..n])
                    .await
                    .map_err(RestoreError::db("sending COPY data"))?;
            }
            Err(e) => {
                let problem = ArtifactError::from_io(&entry.key, e);
                // The server answers the abort with an error by design; the artifact error is
                // what the operator needs to see.
                let _ = copy.abort(problem.to_string()).await;
                return Err(problem.into());
            }
        }
    }
    copy.finish()
        .await
        .map_err(RestoreError::db("finishing COPY FROM"))
}

/// A foreign key between two restored tables, dropped during the load and re-created after it
/// (rows of FK cycles cannot be loaded in any order with the constraint in place; re-adding it
/// also re-validates every restored row).
struct InnerForeignKey {
    table: String,
    name: String,
    definition: String,
}

/// Replaces the rows of `entries` in a live database, in one transaction: everything or
/// nothing, checked against the manifest before it commits.
#[tracing::instrument(skip_all)]
pub(super) async fn replace_tables(
    state: &AppState,
    manifest: &Manifest,
    target: &ConnInfo,
    entries: &[&TableEntry],
    base: &[&TableEntry],
    deltas: &[Manifest],
    record: Option<uuid::Uuid>,
) -> Result<Vec<TableCheck>, RestoreError> {
    let live = check_target(manifest, target, entries).await?;
    let tables: Vec<TableRef> = entries.iter().map(|e| e.table_ref()).collect();
    let quoted: Vec<String> = tables.iter().map(TableRef::quoted).collect();
    let mut conn = connect(target).await?;
    exec(&mut conn, "BEGIN", "starting the restore transaction").await?;
    if let Some(uuid) = record {
        let row = crate::db::restores::lock_for_apply(&mut conn, uuid)
            .await
            .map_err(RestoreError::db("locking the restore record"))?;
        if row.applied_at.is_some() {
            exec(&mut conn, "ROLLBACK", "ending the restore transaction").await?;
            return Err(RestoreError::AlreadyApplied(uuid));
        }
    }
    let lock_timeout = format!("SET LOCAL lock_timeout = '{}ms'", LOCK_TIMEOUT.as_millis());
    exec(&mut conn, &lock_timeout, "setting the lock timeout").await?;
    let lock = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", quoted.join(", "));
    exec(&mut conn, &lock, "locking the tables").await?;
    let inner = inner_foreign_keys(&mut conn, &quoted).await?;
    for fk in &inner {
        exec(
            &mut conn,
            &format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                fk.table,
                quote_ident(&fk.name)
            ),
            "dropping a foreign key",
        )
        .await?;
    }
    exec(
        &mut conn,
        &format!("TRUNCATE {}", quoted.join(", ")),
        "truncating the tables",
    )
    .await?;
    for entry in base {
        copy_into(&mut conn, state.storage.as_ref(), entry, false).await?;
    }
    for delta in deltas {
        super::chain::apply(&mut conn, state.storage.as_ref(), delta, &tables).await?;
    }
    // Triggers and rules of a live database may change rows on the way in: re-read them all.
    for fk in &inner {
        exec(
            &mut conn,
            &format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {}",
                fk.table,
                quote_ident(&fk.name),
                fk.definition
            ),
            "re-creating a foreign key",
        )
        .await?;
    }
    advance_sequences(&mut conn, manifest, &live, &tables).await?;
    let checks = verify_tables(&mut conn, entries).await?;
    if let Some(uuid) = record {
        crate::db::restores::record_applied(&mut conn, uuid, &super::rows_per_table(&checks), None)
            .await
            .map_err(RestoreError::db("recording the restore"))?;
    }
    exec(&mut conn, "COMMIT", "committing the restore").await?;
    Ok(checks)
}

/// The live policy of [`sequences`]: every sequence of the target that a restored table draws
/// from (found in the target's catalog, so a format 1 manifest that does not know a
/// `nextval`-only sequence is covered too) ends at or above the backup's value, when the backup
/// has one, and the maximum of every column that draws from it; it never moves backwards.
async fn advance_sequences(
    conn: &mut PgConnection,
    manifest: &Manifest,
    live: &Catalog,
    tables: &[TableRef],
) -> Result<(), RestoreError> {
    for seq in &live.sequences {
        if !seq.tables.iter().any(|t| tables.contains(t)) {
            continue;
        }
        let backup = manifest
            .sequences
            .iter()
            .find(|s| s.sequence_ref() == seq.sequence)
            .map(|s| (s.last_value, s.is_called));
        sequences::advance(conn, &seq.sequence, &seq.used_by, backup)
            .await
            .map_err(RestoreError::db("advancing a sequence"))?;
    }
    Ok(())
}

/// Compatibility, and no table outside the set may reference one inside it (its rows would
/// point at replaced rows; `TRUNCATE` would refuse anyway, less clearly). Returns the target's
/// catalog.
async fn check_target(
    manifest: &Manifest,
    target: &ConnInfo,
    entries: &[&TableEntry],
) -> Result<Catalog, RestoreError> {
    let pool = crate::db::connect(target, 2)
        .await
        .map_err(RestoreError::db("connecting to the target"))?;
    let catalog = Catalog::load(&pool)
        .await
        .map_err(RestoreError::db("reading the target catalog"))?;
    let version: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .fetch_one(&pool)
        .await
        .map_err(RestoreError::db("reading the target version"))?;
    pool.close().await;
    let problems = compat::check(&catalog, version.parse().unwrap_or(0), manifest, entries);
    if !problems.is_empty() {
        return Err(RestoreError::Incompatible(problems));
    }
    let tables: Vec<TableRef> = entries.iter().map(|e| e.table_ref()).collect();
    for table in &tables {
        if let Some(fk) = catalog.fks_to(table).find(|fk| !tables.contains(&fk.table)) {
            return Err(RestoreError::ReferencedFromOutside {
                table: table.to_string(),
                referencing: fk.table.to_string(),
                constraint: fk.name.clone(),
            });
        }
    }
    Ok(catalog)
}

async fn inner_foreign_keys(
    conn: &mut PgConnection,
    quoted: &[String],
) -> Result<Vec<InnerForeignKey>, RestoreError> {
    // language=PostgreSQL
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
         FROM pg_constraint
         WHERE contype = 'f' AND conrelid = ANY($1::text[]::regclass[]) AND confrelid = ANY($1::text[]::regclass[])
         ORDER BY conrelid, conname",
    )
    .bind(quoted)
    .fetch_all(&mut *conn)
    .await
    .map_err(RestoreError::db("reading foreign keys"))?;
    Ok(rows
        .into_iter()
        .map(|(table, name, definition)| InnerForeignKey {
            table,
            name,
            definition,
        })
        .collect())
}

async fn exec(
    conn: &mut PgConnection,
    sql: &str,
    context: &'static str,
) -> Result<(), RestoreError> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map_err(RestoreError::db(context))?;
    Ok(())
}
