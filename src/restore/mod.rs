//! Restoring whole-database and table backups: into a fresh database (the schema by
//! `pg_restore`, the rows by parallel COPY, indexes and constraints last), or in place over live
//! tables in one transaction. Every restore proves its result: row counts and content hashes of
//! the restored tables must equal the manifest's. Tenant restores live in [`crate::tenant`].

mod chain;
pub mod compat;
mod drill;
mod load;
pub mod sequences;

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::artifact::{self, ArtifactError, Manifest, TableEntry};
use crate::catalog::TableRef;
use crate::pg::{quote_ident, ConnInfo, ProcessError};
use crate::startup::AppState;

pub use chain::resolve as chain_of;
pub use drill::{drill, scratch_name, scratch_prefix, DrillReport};

/// How a restore treats its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// An empty database: schema, rows, then indexes and constraints.
    Fresh,
    /// A live database whose tables exist: their rows are replaced in one transaction.
    ReplaceTables,
}

/// One restored table, re-read from the target and compared with the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: TableRef,
    pub expected_rows: u64,
    pub rows: u64,
    pub expected_hash: String,
    pub content_hash: String,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.rows == self.expected_rows && self.content_hash == self.expected_hash
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub database: String,
    pub tables: Vec<TableCheck>,
    pub rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup {0} does not exist")]
    UnknownBackup(String),
    #[error("backup {uuid} is {status}, only successful backups can be restored")]
    NotRestorable { uuid: String, status: String },
    #[error(
        "backup {0} holds one tenant's rows; into a live database they are restored by the tenant restore, which replaces only that tenant's rows"
    )]
    TenantScope(String),
    /// This restore request was applied already (recorded in the applying transaction).
    #[error("restore {0} was applied already")]
    AlreadyApplied(uuid::Uuid),
    #[error("tables not in backup: {}", .0.join(", "))]
    TablesNotInBackup(Vec<String>),
    #[error("{0:?} is not a valid database name (lowercase letters, digits and _, at most 63, not starting with a digit)")]
    InvalidDatabaseName(String),
    #[error("target database {database} is not empty ({tables} tables); a fresh restore needs an empty database")]
    NotEmpty { database: String, tables: usize },
    #[error("the target is not compatible with the backup:\n  - {}", .0.join("\n  - "))]
    Incompatible(Vec<String>),
    #[error("cannot replace {table}: {referencing} references it through {constraint} and is not part of the restore; include it or restore elsewhere")]
    ReferencedFromOutside {
        table: String,
        referencing: String,
        constraint: String,
    },
    #[error("restored {table} does not match the backup: {rows} rows (hash {hash}), the manifest says {expected_rows} rows (hash {expected_hash})")]
    Mismatch {
        table: String,
        rows: u64,
        hash: String,
        expected_rows: u64,
        expected_hash: String,
    },
    #[error("the incremental's chain cannot be restored: {0}")]
    BrokenChain(String),
    #[error("the backup artifact is damaged: {0}")]
    Artifact(#[from] ArtifactError),
    #[error("pg_restore: {0}")]
    Process(#[from] ProcessError),
    #[error("database error while {context}: {source}")]
    Database {
        context: &'static str,
        source: sqlx::Error,
    },
    #[error("all {0} backup/restore slots are busy; try again later")]
    Busy(u32),
    #[error("the worker is shutting down; the restore was rolled back")]
    Cancelled,
    #[error("the restore did not finish within {0:?}")]
    Timeout(Duration),
    #[error("temporary file: {0}")]
    Io(#[from] std::io::Error),
}

impl RestoreError {
    /// Whether trying the same restore again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Database { source, .. } => crate::retry::is_transient_sql(source),
            Self::Io(e) => crate::retry::is_transient_io(e),
            Self::Busy(_) | Self::Cancelled | Self::Timeout(_) => true,
            Self::Artifact(e) => e.is_retriable(),
            Self::Process(e) => !matches!(
                e,
                ProcessError::NotFound { .. }
                    | ProcessError::PermissionDenied { .. }
                    | ProcessError::Status { .. }
            ),
            _ => false,
        }
    }

    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { context, source }
    }
}

/// The verified manifest of a successful backup (its sha256 must equal the row's checksum).
///
/// # Errors
/// Unknown or unsuccessful backup, damaged or missing manifest.
pub async fn manifest_of(state: &AppState, uuid: &str) -> Result<Manifest, RestoreError> {
    let row = crate::db::backups::get(&state.pool, uuid)
        .await
        .map_err(RestoreError::db("reading the backup"))?
        .ok_or_else(|| RestoreError::UnknownBackup(uuid.to_owned()))?;
    if row.status != "success" {
        return Err(RestoreError::NotRestorable {
            uuid: uuid.to_owned(),
            status: row.status,
        });
    }
    let (manifest, _) =
        artifact::read_manifest(state.storage.as_ref(), uuid, row.checksum.as_deref()).await?;
    Ok(manifest)
}

/// Restores `manifest` (all its tables, or `tables`) into `target`; see [`RestoreMode`].
/// Holds one of the process's backup/restore slots and stops (rolling back) at shutdown.
///
/// With `record` (a `root_data_restores` uuid; only when `target` is the database that holds
/// that table), a `ReplaceTables` restore locks the record first and marks it applied in its
/// own transaction: [`RestoreError::AlreadyApplied`] instead of applying a request twice.
///
/// # Errors
/// See [`RestoreError`]. A `ReplaceTables` failure leaves the target exactly as it was.
#[tracing::instrument(skip_all, fields(backup = %manifest.backup_uuid, target = %target.database, mode = ?mode))]
pub async fn restore_into_database(
    state: &AppState,
    manifest: &Manifest,
    target: &ConnInfo,
    tables: Option<Vec<TableRef>>,
    mode: RestoreMode,
    record: Option<uuid::Uuid>,
) -> Result<RestoreReport, RestoreError> {
    // Replacing live tables with one tenant's rows would drop every other tenant's; a new
    // database (drills included) takes any scope.
    if mode == RestoreMode::ReplaceTables
        && (manifest.scope == "tenant" || manifest.tenant_id.is_some())
    {
        return Err(RestoreError::TenantScope(manifest.backup_uuid.clone()));
    }
    let entries = select_entries(manifest, tables.as_deref())?;
    // An incremental restores its chain: the full's rows, then each incremental's changes.
    let chain = chain::resolve(state, manifest).await?;
    let (base_manifest, deltas) = chain.split_first().expect("a chain holds its last member");
    let base = chain::base_entries(base_manifest, &entries)?;
    let _slot = tokio::time::timeout(
        crate::backup::SLOT_WAIT,
        state.limiter.clone().acquire_owned(),
    )
    .await
    .map_err(|_| RestoreError::Busy(state.settings.backup.max_concurrent))?
    .map_err(|_| RestoreError::Cancelled)?;
    let timeout = state.settings.backup.step_timeout;
    let work = async {
        match mode {
            RestoreMode::Fresh => {
                load::fresh(state, manifest, target, &entries, &base, deltas).await
            }
            RestoreMode::ReplaceTables => {
                load::replace_tables(state, manifest, target, &entries, &base, deltas, record).await
            }
        }
    };
    let checks = tokio::select! {
        result = tokio::time::timeout(timeout, work) => result.map_err(|_| RestoreError::Timeout(timeout))??,
        () = state.shutdown.cancelled() => return Err(RestoreError::Cancelled),
    };
    let rows = checks.iter().map(|c| c.rows).sum();
    Ok(RestoreReport {
        database: target.database.clone(),
        tables: checks,
        rows,
    })
}

/// The manifest entries to restore, in manifest order.
fn select_entries<'m>(
    manifest: &'m Manifest,
    tables: Option<&[TableRef]>,
) -> Result<Vec<&'m TableEntry>, RestoreError> {
    let Some(wanted) = tables else {
        return Ok(manifest.tables.iter().collect());
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|t| !manifest.tables.iter().any(|e| &e.table_ref() == *t))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(RestoreError::TablesNotInBackup(missing));
    }
    Ok(manifest
        .tables
        .iter()
        .filter(|e| wanted.contains(&e.table_ref()))
        .collect())
}

/// The per-table rows a restore reports and records: `{"schema.table": rows}`.
pub fn rows_per_table(checks: &[TableCheck]) -> serde_json::Value {
    serde_json::Value::Object(
        checks
            .iter()
            .map(|c| (c.table.to_string(), serde_json::json!(c.rows)))
            .collect(),
    )
}

/// Re-reads each restored table through `conn` and compares it with its manifest entry.
///
/// # Errors
/// Query failures; a table that differs ([`RestoreError::Mismatch`]).
pub async fn verify_tables(
    conn: &mut PgConnection,
    entries: &[&TableEntry],
) -> Result<Vec<TableCheck>, RestoreError> {
    let mut checks = Vec::new();
    for entry in entries {
        // An incremental's entry is compared with the table's state at its snapshot.
        let entry = &entry.as_of_snapshot();
        let digest = artifact::hash_query(conn, &entry.select_all())
            .await
            .map_err(RestoreError::db("re-reading a restored table"))?;
        let check = TableCheck {
            table: entry.table_ref(),
            expected_rows: entry.rows,
            rows: digest.rows,
            expected_hash: entry.content_hash.clone(),
            content_hash: digest.content_hash(),
        };
        if !check.matches() {
            return Err(RestoreError::Mismatch {
                table: check.table.to_string(),
                rows: check.rows,
                hash: check.content_hash,
                expected_rows: check.expected_rows,
                expected_hash: check.expected_hash,
            });
        }
        checks.push(check);
    }
    Ok(checks)
}

/// Checks a database name we are about to create or drop: plain lowercase identifiers only,
/// so it is the same in SQL, in libpq's `dbname` and in logs.
///
/// # Errors
/// Anything else.
pub fn validate_database_name(name: &str) -> Result<(), RestoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RestoreError::InvalidDatabaseName(name.to_owned()))
    }
}

/// Creates database `name` unless it exists; `true` when it was created.
///
/// # Errors
/// Invalid name, or the role may not create databases.
pub async fn ensure_database(admin: &mut PgConnection, name: &str) -> Result<bool, RestoreError> {
    validate_database_name(name)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await
            .map_err(RestoreError::db("looking up the target database"))?;
    if !exists {
        let create = format!("CREATE DATABASE {}", quote_ident(name));
        sqlx::query(&create)
            .execute(&mut *admin)
            .await
            .map_err(RestoreError::db("creating the target database"))?;
    }
    Ok(!exists)
}

/// Drops database `name` (disconnecting its sessions); absent is fine.
///
/// # Errors
/// Invalid name, or the drop fails.
pub async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), RestoreError> {
    validate_database_name(name)?;
    let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    sqlx::query(&drop)
        .execute(admin)
        .await
        .map_err(RestoreError::db("dropping a scratch database"))?;
    Ok(())
}

/// A connection to `target` (for the restore's own statements).
async fn connect(target: &ConnInfo) -> Result<PgConnection, RestoreError> {
    PgConnection::connect_with(&target.connect_options())
        .await
        .map_err(RestoreError::db("connecting to the target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain_identifiers() {
        for ok in ["rbk_drill_abc123", "riveredge_restore", "_x"] {
            assert!(validate_database_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1db", "Upper", "a-b", "a;drop", "x\"y", &"a".repeat(64)] {
            assert!(validate_database_name(bad).is_err(), "{bad}");
        }
    }
}
