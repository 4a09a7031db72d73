//! Taking one backup: claim → dump → verify → record, each phase safe to repeat.
//!
//! - [`claim`] is the only way to start: [`Claim::Mine`] (go on), [`Claim::AlreadyDone`] (the
//!   saved result; a duplicate or a rerun does nothing), [`Claim::Busy`] (another live run is
//!   at it: wait for it, never fail over it).
//! - [`dump`] checks the claim first and reuses a manifest that an earlier attempt of the same
//!   claim published (the step ran, its answer was lost): one dump per backup.
//! - [`verify`] failures are final: a checksum does not change by retrying.
//! - [`finish`] and [`fail`] move the row only while this run owns it; [`fail`] deletes the
//!   files under the row's lock, so it can never delete a backup that succeeded or that
//!   another run is writing.

use serde::{Deserialize, Serialize};

use crate::backup::{self as engine, BackupError, BackupOutcome, BackupSpec};
use crate::db::backups::{self as rows, BackupRow, NewBackup, Transition};
use crate::startup::AppState;

pub use crate::db::backups::Claim;

/// What `dump` produced: small enough to be a step output (the manifest stays in storage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpSummary {
    pub manifest_sha256: String,
    pub total_size: u64,
    pub rows: u64,
    pub tables: usize,
}

/// The saved result of a finished backup, as the functions and the CLI report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub backup_uuid: String,
    pub status: String,
    pub file_size: Option<i64>,
    pub rows: i64,
    pub tables: usize,
    pub checksum: Option<String>,
    /// What was taken (`full` when an incremental request fell back), and its chain.
    #[serde(default)]
    pub backup_type: String,
    #[serde(default)]
    pub parent_uuid: Option<String>,
    #[serde(default)]
    pub fallback_reason: Option<String>,
}

impl From<&BackupRow> for Saved {
    fn from(row: &BackupRow) -> Self {
        let tables = row
            .manifest
            .as_ref()
            .and_then(|m| m.get("tables"))
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len);
        Self {
            backup_uuid: row.uuid.clone(),
            status: row.status.clone(),
            file_size: row.file_size,
            rows: row.rows_written,
            tables,
            checksum: row.checksum.clone(),
            backup_type: row.backup_type.clone(),
            parent_uuid: row.parent_uuid.clone(),
            fallback_reason: row.fallback_reason.clone(),
        }
    }
}

/// What [`fail`] did.
#[derive(Debug, Clone)]
pub enum Failed {
    /// The row is `failed` with the message and its files are gone.
    Recorded,
    /// Not this run's to fail (it succeeded, or another run owns it): nothing was touched.
    NotOwner(Box<BackupRow>),
}

/// Starts (or continues) the backup for `run_id`. A run that stopped reporting progress for
/// the step timeout is presumed dead and taken over (the reaper uses the same threshold).
///
/// # Errors
/// Database errors.
pub async fn claim(state: &AppState, uuid: &str, run_id: &str) -> Result<Claim, BackupError> {
    rows::claim(
        &state.pool,
        uuid,
        run_id,
        state.settings.backup.step_timeout,
    )
    .await
    .map_err(BackupError::db("claiming the backup"))
}

/// Dumps the claimed backup, or reuses what an earlier attempt of this claim published.
///
/// # Errors
/// [`BackupError::LostClaim`] when another run owns the backup now; the dump's errors.
pub async fn dump(
    state: &AppState,
    spec: &BackupSpec,
    run_id: &str,
) -> Result<DumpSummary, BackupError> {
    ensure_owner(state, &spec.uuid, run_id).await?;
    if let Some(summary) = published(state, &spec.uuid).await? {
        tracing::info!(backup = %spec.uuid, "an earlier attempt published the artifact; verifying it instead of dumping again");
        return Ok(summary);
    }
    match engine::run(state, spec, Some(run_id)).await {
        Ok(outcome) => Ok(summary_of(&outcome)),
        Err(e) => {
            // Visible on the backup page while Inngest retries.
            let _ =
                rows::record_attempt_error(&state.pool, &spec.uuid, run_id, &e.to_string()).await;
            Err(e)
        }
    }
}

/// Re-reads the whole artifact; the manifest must be the one `dump` reported.
///
/// # Errors
/// An artifact that does not verify (final), storage errors (retriable), a lost claim.
pub async fn verify(
    state: &AppState,
    uuid: &str,
    run_id: &str,
    manifest_sha256: &str,
) -> Result<(), BackupError> {
    ensure_owner(state, uuid, run_id).await?;
    let work = engine::verify(state, uuid, Some(manifest_sha256));
    let (pool, uuid, run_id) = (state.pool.clone(), uuid.to_owned(), run_id.to_owned());
    super::with_heartbeat(work, move || {
        let (pool, uuid, run_id) = (pool.clone(), uuid.clone(), run_id.clone());
        async move { rows::heartbeat(&pool, &uuid, &run_id).await }
    })
    .await?;
    Ok(())
}

/// Records the verified backup as `success`; a repeat after the commit returns the saved row.
///
/// # Errors
/// [`BackupError::LostClaim`], database and storage errors.
pub async fn finish(
    state: &AppState,
    spec: &BackupSpec,
    run_id: &str,
    summary: &DumpSummary,
) -> Result<BackupRow, BackupError> {
    let (manifest, manifest_sha256) = crate::artifact::read_manifest(
        state.storage.as_ref(),
        &spec.uuid,
        Some(&summary.manifest_sha256),
    )
    .await?;
    let outcome = BackupOutcome {
        manifest,
        manifest_sha256,
        total_size: summary.total_size,
        file_path: format!("{}/", spec.uuid),
        rows: summary.rows,
    };
    let moved = rows::mark_success(&state.pool, &spec.uuid, run_id, &outcome)
        .await
        .map_err(BackupError::db("recording the backup"))?;
    match moved {
        Transition::Done => current(state, &spec.uuid).await,
        // The step ran before and its answer was lost: the saved row is the answer.
        Transition::NotOwner(row)
            if row.status == "success"
                && row.checksum.as_deref() == Some(&summary.manifest_sha256) =>
        {
            Ok(*row)
        }
        Transition::NotOwner(row) => Err(BackupError::LostClaim {
            uuid: spec.uuid.clone(),
            owner: row.inngest_run_id.unwrap_or_else(|| "?".to_owned()),
        }),
        Transition::NotFound => Err(BackupError::UnknownBackup(spec.uuid.clone())),
    }
}

/// Fails `run_id`'s backup: under the row's lock, only if this run owns it (or nobody claimed
/// it yet), removes its files and records the message.
///
/// # Errors
/// Database and storage errors (the step is retried; the row stays this run's meanwhile).
pub async fn fail(
    state: &AppState,
    uuid: &str,
    run_id: &str,
    message: &str,
) -> Result<Failed, BackupError> {
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(BackupError::db("failing the backup"))?;
    let row: Option<BackupRow> =
        sqlx::query_as("SELECT * FROM root_data_backups WHERE uuid = $1 FOR UPDATE")
            .bind(uuid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(BackupError::db("failing the backup"))?;
    let Some(row) = row else {
        return Ok(Failed::Recorded);
    };
    let ours = row.status == "pending"
        || (row.status == "running" && row.inngest_run_id.as_deref() == Some(run_id));
    if !ours {
        return Ok(Failed::NotOwner(Box::new(row)));
    }
    // Files first, while the lock keeps every other run out; a crash before the commit leaves
    // the row running and ours, and the retried step does both again.
    engine::discard(state, uuid).await?;
    sqlx::query(
        "UPDATE root_data_backups SET status = 'failed', completed_at = now(), error_message = $2,
                inngest_run_id = $3, updated_at = now()
         WHERE uuid = $1",
    )
    .bind(uuid)
    .bind(rows::truncate(message, rows::MAX_ERROR_MESSAGE))
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(BackupError::db("failing the backup"))?;
    tx.commit()
        .await
        .map_err(BackupError::db("failing the backup"))?;
    Ok(Failed::Recorded)
}

/// Every phase in a row, for the CLI and the safety backup before a live restore: records
/// `spec` (named `name`), claims it for `run_id`, dumps, verifies and records it. A backup that
/// already succeeded is returned as saved; a failure is recorded on the row.
///
/// # Errors
/// Invalid input (nothing recorded), another live run owning the backup, the backup's errors.
pub async fn take(
    state: &AppState,
    spec: &BackupSpec,
    name: &str,
    run_id: &str,
) -> Result<BackupRow, BackupError> {
    engine::validate(state, spec).await?;
    rows::insert(
        &state.pool,
        &NewBackup {
            uuid: spec.uuid.clone(),
            tenant_id: spec.tenant_id,
            name: name.to_owned(),
            backup_type: spec.backup_type.as_str().to_owned(),
            backup_scope: spec.scope.as_str().to_owned(),
            backup_tables: (!spec.tables.is_empty()).then(|| spec.tables.clone()),
        },
    )
    .await
    .map_err(BackupError::db("recording the backup"))?;
    match claim(state, &spec.uuid, run_id).await? {
        Claim::Mine => {}
        Claim::AlreadyDone(row) => return Ok(*row),
        Claim::Busy { owner } => {
            return Err(BackupError::LostClaim {
                uuid: spec.uuid.clone(),
                owner: owner.unwrap_or_else(|| "?".to_owned()),
            })
        }
        Claim::NotFound => return Err(BackupError::UnknownBackup(spec.uuid.clone())),
    }
    let result = async {
        let summary = dump(state, spec, run_id).await?;
        verify(state, &spec.uuid, run_id, &summary.manifest_sha256).await?;
        finish(state, spec, run_id, &summary).await
    }
    .await;
    if let Err(e) = &result {
        if let Err(cleanup) = fail(state, &spec.uuid, run_id, &e.to_string()).await {
            tracing::error!(error = %cleanup, backup = %spec.uuid, "could not record the failure");
        }
    }
    result
}

async fn ensure_owner(state: &AppState, uuid: &str, run_id: &str) -> Result<(), BackupError> {
    let owned = rows::owned_by(&state.pool, uuid, run_id)
        .await
        .map_err(BackupError::db("checking the claim"))?;
    if owned {
        return Ok(());
    }
    let row = current(state, uuid).await?;
    Err(BackupError::LostClaim {
        uuid: uuid.to_owned(),
        owner: row.inngest_run_id.unwrap_or_else(|| "?".to_owned()),
    })
}

async fn current(state: &AppState, uuid: &str) -> Result<BackupRow, BackupError> {
    rows::get(&state.pool, uuid)
        .await
        .map_err(BackupError::db("reading the backup"))?
        .ok_or_else(|| BackupError::UnknownBackup(uuid.to_owned()))
}

/// The summary of an artifact an earlier attempt published (its manifest exists), if any.
async fn published(state: &AppState, uuid: &str) -> Result<Option<DumpSummary>, BackupError> {
    let (manifest, manifest_sha256) =
        match crate::artifact::read_manifest(state.storage.as_ref(), uuid, None).await {
            Ok(found) => found,
            Err(crate::artifact::ArtifactError::MissingManifest { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    let prefix = crate::artifact::prefix(uuid).map_err(|e| BackupError::Invalid(e.to_string()))?;
    let mut total_size = 0;
    for key in state
        .storage
        .list(&prefix)
        .await
        .map_err(BackupError::storage)?
    {
        total_size += state
            .storage
            .size(&key)
            .await
            .map_err(BackupError::storage)?
            .unwrap_or(0);
    }
    Ok(Some(DumpSummary {
        manifest_sha256,
        total_size,
        rows: manifest.tables.iter().map(|t| t.rows).sum(),
        tables: manifest.tables.len(),
    }))
}

fn summary_of(outcome: &BackupOutcome) -> DumpSummary {
    DumpSummary {
        manifest_sha256: outcome.manifest_sha256.clone(),
        total_size: outcome.total_size,
        rows: outcome.rows,
        tables: outcome.manifest.tables.len(),
    }
}
