//! Taking a backup: the spec and its validation, what each scope selects, the dump pipeline,
//! progress reporting, and which failures are worth retrying.
//!
//! Entry points: [`validate`] (cheap, no side effects: for an API or a job's first step),
//! [`run`] (the dump; on any failure nothing remains under `<uuid>/`) and [`discard`].

mod consistency;
mod dump;
pub mod incremental;
mod schema;
mod selection;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::artifact::{self, ArtifactError, Manifest, Progress};
use crate::catalog::{Catalog, CatalogError};
use crate::pg::ProcessError;
use crate::startup::AppState;

pub use selection::{SelectedTable, Selection};

/// How long a backup waits for a free slot of `BACKUP_MAX_CONCURRENT` before answering "busy"
/// (the caller retries later rather than holding an Inngest request open in a queue).
pub const SLOT_WAIT: Duration = Duration::from_secs(10);

/// How often running backups write their progress to `root_data_backups`.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Incremental,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupScope {
    All,
    Table,
    Tenant,
}

impl BackupScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Table => "table",
            Self::Tenant => "tenant",
        }
    }
}

/// What to back up; mirrors a `root_data_backups` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSpec {
    pub uuid: String,
    pub backup_type: BackupType,
    pub scope: BackupScope,
    pub tenant_id: Option<i32>,
    /// For scope `table`: `table` or `schema.table` names as the user wrote them.
    #[serde(default)]
    pub tables: Vec<String>,
}

/// A spec checked against the database, with the tables it covers.
#[derive(Debug, Clone)]
pub struct ValidatedSpec {
    pub spec: BackupSpec,
    pub catalog: Catalog,
    pub selection: Selection,
}

/// A completed, published backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub manifest: Manifest,
    /// sha256 of `manifest.json`: the row's `checksum`.
    pub manifest_sha256: String,
    /// Bytes stored under the prefix (schema, data files, manifest).
    pub total_size: u64,
    /// `<uuid>/`: the storage prefix (the row's `file_path`).
    pub file_path: String,
    pub rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("invalid backup request: {0}")]
    Invalid(String),
    #[error("{0} backups are not supported yet; take a full backup")]
    UnsupportedType(&'static str),
    #[error("tables that cannot be backed up, nothing was dumped: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    UnknownTables(Vec<CatalogError>),
    #[error("tenant {tenant} has no rows in {table}: {reason}")]
    NoTenantRows {
        tenant: i32,
        table: String,
        reason: String,
    },
    #[error("tenant {0} does not exist")]
    TenantNotFound(i32),
    #[error("backup {0} does not exist")]
    UnknownBackup(String),
    #[error("all {0} backup slots are busy; try again later")]
    Busy(u32),
    #[error("the worker is shutting down; the backup was stopped and will be retried")]
    Cancelled,
    #[error("the backup did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the tables changed while the backup started ({0}); retrying takes a fresh snapshot")]
    SchemaChanged(String),
    #[error("database error while {context}: {source}")]
    Database {
        context: &'static str,
        source: sqlx::Error,
    },
    #[error("pg_dump: {0}")]
    Process(#[from] ProcessError),
    #[error("the storage is full: {0}")]
    DiskFull(io::Error),
    #[error("storage error: {0}")]
    Storage(io::Error),
    #[error("the written backup does not verify: {0}")]
    Artifact(#[from] ArtifactError),
    #[error("internal error: {0}")]
    Internal(String),
    /// Another run took the backup over (this one was presumed dead): its files are not ours.
    #[error("backup {uuid} was taken over by run {owner}; this run stopped without touching it")]
    LostClaim { uuid: String, owner: String },
}

impl BackupError {
    /// Whether running the same backup again may succeed: invalid input never will; lost
    /// connections, killed processes, I/O, a full disk and shutdowns may.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Invalid(_)
            | Self::UnsupportedType(_)
            | Self::UnknownTables(_)
            | Self::NoTenantRows { .. }
            | Self::TenantNotFound(_)
            | Self::UnknownBackup(_)
            | Self::LostClaim { .. } => false,
            // A missing or non-executable pg_dump is fixed by configuration, not by a retry.
            Self::Process(e) => !matches!(
                e,
                ProcessError::NotFound { .. } | ProcessError::PermissionDenied { .. }
            ),
            Self::Artifact(e) => e.is_retriable(),
            Self::Database { source, .. } => crate::retry::is_transient_sql(source),
            Self::Storage(e) => crate::retry::is_transient_io(e),
            Self::Busy(_)
            | Self::Cancelled
            | Self::Timeout(_)
            | Self::SchemaChanged(_)
            | Self::DiskFull(_)
            | Self::Internal(_) => true,
        }
    }

    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { context, source }
    }

    pub(crate) fn storage(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull {
            Self::DiskFull(e)
        } else {
            Self::Storage(e)
        }
    }
}

/// Checks `spec` against the database without changing anything.
///
/// # Errors
/// Final errors for invalid input (scope/tenant/type combinations, unknown tables, a tenant
/// that does not exist or has no rows in a requested table); retriable database errors.
#[tracing::instrument(skip_all, fields(backup = %spec.uuid, scope = spec.scope.as_str()))]
pub async fn validate(state: &AppState, spec: &BackupSpec) -> Result<ValidatedSpec, BackupError> {
    check_shape(spec)?;
    let catalog = Catalog::load(&state.pool)
        .await
        .map_err(BackupError::db("reading the catalog"))?;
    if let Some(tenant) = spec.tenant_id {
        check_tenant_exists(state, &catalog, tenant).await?;
    }
    let selection = selection::select(&catalog, spec)?;
    Ok(ValidatedSpec {
        spec: spec.clone(),
        catalog,
        selection,
    })
}

fn check_shape(spec: &BackupSpec) -> Result<(), BackupError> {
    if uuid::Uuid::parse_str(&spec.uuid).is_err() {
        return Err(BackupError::Invalid(format!(
            "{:?} is not a uuid",
            spec.uuid
        )));
    }
    match (spec.scope, spec.tenant_id, spec.tables.is_empty()) {
        (BackupScope::All, Some(_), _) => Err(BackupError::Invalid(
            "scope all is platform-wide and cannot have a tenant".into(),
        )),
        (BackupScope::All | BackupScope::Tenant, _, false) => Err(BackupError::Invalid(format!(
            "tables can only be listed with scope table, not {}",
            spec.scope.as_str()
        ))),
        (BackupScope::Tenant, None, _) => Err(BackupError::Invalid(
            "scope tenant needs a tenant id".into(),
        )),
        (BackupScope::Table, _, true) => Err(BackupError::Invalid(
            "scope table needs at least one table".into(),
        )),
        _ => Ok(()),
    }
}

/// The tenant must be a row of `TENANTS_TABLE`. Only `TENANTS_TABLE=none` skips the check; a
/// configured table that does not exist is an error, never a silent skip.
async fn check_tenant_exists(
    state: &AppState,
    catalog: &Catalog,
    tenant: i32,
) -> Result<(), BackupError> {
    let Some(name) = state.settings.backup.tenants_table.as_deref() else {
        return Ok(());
    };
    let table = catalog.resolve(name).map_err(|_| {
        BackupError::Invalid(format!(
            "TENANTS_TABLE {name} does not exist, so tenant {tenant} cannot be checked; \
             set TENANTS_TABLE to the table of tenants, or TENANTS_TABLE=none to skip the check"
        ))
    })?;
    let exists = crate::tenant::tenant_exists(&state.pool, catalog, &table.to_string(), tenant)
        .await
        .map_err(|e| match e {
            crate::tenant::TenantError::Database(source) => BackupError::Database {
                context: "checking the tenant",
                source,
            },
            other => BackupError::Invalid(format!("checking tenant {tenant}: {other}")),
        })?;
    if exists {
        Ok(())
    } else {
        Err(BackupError::TenantNotFound(tenant))
    }
}

/// Takes the backup described by `spec` for run `owner` (`None`: outside any run, as the
/// benchmarks and engine tests do) and publishes it under `<uuid>/`.
///
/// Holds one of the process's backup slots for the whole dump, stops at shutdown, and on any
/// failure deletes everything under the prefix so nothing incomplete can be mistaken for a
/// backup — unless another run took the backup over ([`BackupError::LostClaim`], noticed at
/// the next progress report): then the files are that run's and stay.
///
/// # Errors
/// See [`BackupError`]; [`BackupError::is_retriable`] tells whether to try again.
#[tracing::instrument(skip_all, fields(backup = %spec.uuid, scope = spec.scope.as_str()))]
pub async fn run(
    state: &AppState,
    spec: &BackupSpec,
    owner: Option<&str>,
) -> Result<BackupOutcome, BackupError> {
    let validated = validate(state, spec).await?;
    let _slot = tokio::time::timeout(SLOT_WAIT, state.limiter.clone().acquire_owned())
        .await
        .map_err(|_| BackupError::Busy(state.settings.backup.max_concurrent))?
        .map_err(|_| BackupError::Cancelled)?;
    // A retried attempt starts clean: leftovers of an earlier one are never mixed in.
    discard(state, &spec.uuid).await?;
    let started = std::time::Instant::now();
    let result = dump_with_progress(state, &validated, owner).await;
    match result {
        Ok(outcome) => {
            tracing::info!(
                bytes = outcome.total_size,
                rows = outcome.rows,
                tables = outcome.manifest.tables.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "backup published"
            );
            Ok(outcome)
        }
        Err(e @ BackupError::LostClaim { .. }) => Err(e),
        Err(e) => {
            if let Err(cleanup) = discard(state, &spec.uuid).await {
                tracing::error!(error = %cleanup, "could not remove the partial backup");
            }
            Err(e)
        }
    }
}

async fn dump_with_progress(
    state: &AppState,
    validated: &ValidatedSpec,
    owner: Option<&str>,
) -> Result<BackupOutcome, BackupError> {
    let progress = Arc::new(Progress::default());
    let timeout = state.settings.backup.step_timeout;
    let dump = tokio::time::timeout(timeout, dump::dump(state, validated, progress.clone()));
    let mut dump = std::pin::pin!(dump);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut dump => break result.unwrap_or(Err(BackupError::Timeout(timeout))),
            () = state.shutdown.cancelled() => break Err(BackupError::Cancelled),
            _ = tick.tick() => {
                let (bytes, rows) = progress.snapshot();
                let uuid = &validated.spec.uuid;
                match crate::db::backups::update_progress(&state.pool, uuid, owner, bytes, rows).await {
                    Ok(true) => {}
                    Ok(false) => break Err(lost_claim(state, uuid).await),
                    Err(e) => tracing::warn!(error = %e, "could not record progress"),
                }
            }
        }
    }
}

/// The error for a run that found its backup owned by someone else.
async fn lost_claim(state: &AppState, uuid: &str) -> BackupError {
    let owner = crate::db::backups::get(&state.pool, uuid)
        .await
        .ok()
        .flatten()
        .and_then(|row| row.inngest_run_id)
        .unwrap_or_else(|| "?".to_owned());
    BackupError::LostClaim {
        uuid: uuid.to_owned(),
        owner,
    }
}

/// Re-reads backup `uuid` completely with this worker's storage and programs; with
/// `expected_sha256` (the row's checksum) the manifest must be the recorded one.
///
/// # Errors
/// See [`artifact::verify`].
pub async fn verify(
    state: &AppState,
    uuid: &str,
    expected_sha256: Option<&str>,
) -> Result<artifact::VerifyReport, artifact::ArtifactError> {
    let timeout = state.settings.backup.step_timeout;
    artifact::verify(
        state.storage.as_ref(),
        &state.bins,
        uuid,
        expected_sha256,
        timeout,
    )
    .await
}

/// Removes a backup's artifact (absent is fine).
///
/// # Errors
/// Storage errors; an invalid uuid.
pub async fn discard(state: &AppState, uuid: &str) -> Result<(), BackupError> {
    let prefix = artifact::prefix(uuid).map_err(|e| BackupError::Invalid(e.to_string()))?;
    state
        .storage
        .delete_prefix(&prefix)
        .await
        .map_err(BackupError::storage)
}
