//! Queries on `root_data_backups`, shared by the CLI and the Inngest jobs.
//!
//! A row moves `pending → running → success | failed`; [`claim`] is the only way into
//! `running`, so two runs never dump the same backup at once, and a run that died (no progress
//! for `stale_after`) can be taken over. Every later transition names its owner
//! (`inngest_run_id`) and the status it expects: a run that lost its claim, or a duplicate that
//! never had one, cannot mark, fail or delete a backup that another run owns or that succeeded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::backup::BackupOutcome;

/// `error_message` is shown in the UI and logs; a whole stderr dump helps nobody there.
pub const MAX_ERROR_MESSAGE: usize = 4000;

/// One row of `root_data_backups`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupRow {
    pub id: i32,
    pub uuid: String,
    pub tenant_id: Option<i32>,
    pub name: String,
    pub backup_type: String,
    pub backup_scope: String,
    pub backup_tables: Option<Vec<String>>,
    /// The storage prefix, `<uuid>/`.
    pub file_path: Option<String>,
    pub file_uuid: Option<String>,
    pub file_size: Option<i64>,
    pub status: String,
    pub inngest_run_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// sha256 of `manifest.json`.
    pub checksum: Option<String>,
    pub manifest: Option<serde_json::Value>,
    pub bytes_written: i64,
    pub rows_written: i64,
    pub progress_updated_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    /// The backup an incremental builds on; `None` for a full.
    pub parent_uuid: Option<String>,
    /// The full at the root of this backup's chain (a full names itself; `None` before chains).
    pub chain_uuid: Option<String>,
    /// Snapshot position (xmin/xmax as xid8, system identifier, timeline) for the next incremental.
    pub position: Option<serde_json::Value>,
    /// Why an incremental request was taken as a full.
    pub fallback_reason: Option<String>,
    /// The cron tick a scheduled backup belongs to.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// A backup to be taken.
#[derive(Debug, Clone)]
pub struct NewBackup {
    pub uuid: String,
    pub tenant_id: Option<i32>,
    pub name: String,
    pub backup_type: String,
    pub backup_scope: String,
    pub backup_tables: Option<Vec<String>>,
}

/// The result of trying to start a backup run.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This run owns the backup now (status `running`).
    Mine,
    /// It succeeded already (a duplicate, a retried step, a rerun): here is the saved row.
    AlreadyDone(Box<BackupRow>),
    /// Another run is at it and has reported progress recently.
    Busy {
        owner: Option<String>,
    },
    NotFound,
}

/// The result of a guarded transition (success or failure) of a backup row.
#[derive(Debug, Clone)]
pub enum Transition {
    /// This run owned the row and moved it.
    Done,
    /// Nothing changed: the row is no longer this run's (here it is as it stands).
    NotOwner(Box<BackupRow>),
    NotFound,
}

/// Filters for [`list`]; `None` means any.
#[derive(Debug, Clone)]
pub struct BackupFilter {
    pub tenant_id: Option<i32>,
    pub status: Option<String>,
    pub scope: Option<String>,
    pub backup_type: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

impl Default for BackupFilter {
    fn default() -> Self {
        Self {
            tenant_id: None,
            status: None,
            scope: None,
            backup_type: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn get(db: impl PgExecutor<'_>, uuid: &str) -> Result<Option<BackupRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM root_data_backups WHERE uuid = $1 AND deleted_at IS NULL")
        .bind(uuid)
        .fetch_optional(db)
        .await
}

/// Inserts a pending row; `false` when the uuid exists already (a retried creation).
///
/// # Errors
/// Database errors, including the table's CHECK constraints (scope/tenant/tables rules).
#[tracing::instrument(skip_all)]
pub async fn insert(db: impl PgExecutor<'_>, new: &NewBackup) -> Result<bool, sqlx::Error> {
    // language=PostgreSQL
    let done = sqlx::query(
        "INSERT INTO root_data_backups (uuid, tenant_id, name, backup_type, backup_scope, backup_tables)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(&new.uuid)
    .bind(new.tenant_id)
    .bind(&new.name)
    .bind(&new.backup_type)
    .bind(&new.backup_scope)
    .bind(&new.backup_tables)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts the pending row of a scheduled backup for cron tick `scheduled_for`; `false` when
/// it exists already (a retried or duplicated tick).
///
/// # Errors
/// Database errors, including the table's CHECK constraints.
#[tracing::instrument(skip_all)]
pub async fn insert_scheduled(
    db: impl PgExecutor<'_>,
    new: &NewBackup,
    scheduled_for: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    // language=PostgreSQL
    let done = sqlx::query(
        "INSERT INTO root_data_backups (uuid, tenant_id, name, backup_type, backup_scope, backup_tables, scheduled_for)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(&new.uuid)
    .bind(new.tenant_id)
    .bind(&new.name)
    .bind(&new.backup_type)
    .bind(&new.backup_scope)
    .bind(&new.backup_tables)
    .bind(scheduled_for)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves the backup to `running` for `run_id` when it is pending, failed, already ours, or
/// running without progress for `stale_after` (its worker died).
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn claim(
    db: impl PgExecutor<'_> + Copy,
    uuid: &str,
    run_id: &str,
    stale_after: Duration,
) -> Result<Claim, sqlx::Error> {
    // language=PostgreSQL
    let claimed = sqlx::query(
        "UPDATE root_data_backups
         SET status = 'running', started_at = now(), inngest_run_id = $2, error_message = NULL,
             completed_at = NULL, bytes_written = 0, rows_written = 0, progress_updated_at = now(),
             updated_at = now()
         WHERE uuid = $1 AND deleted_at IS NULL
           AND (status IN ('pending', 'failed')
                OR (status = 'running'
                    AND (inngest_run_id = $2
                         OR coalesce(progress_updated_at, started_at, updated_at) < now() - make_interval(secs => $3))))",
    )
    .bind(uuid)
    .bind(run_id)
    .bind(stale_after.as_secs_f64())
    .execute(db)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(Claim::Mine);
    }
    Ok(match get(db, uuid).await? {
        None => Claim::NotFound,
        Some(row) if row.status == "success" => Claim::AlreadyDone(Box::new(row)),
        Some(row) => Claim::Busy {
            owner: row.inngest_run_id,
        },
    })
}

/// Whether `run_id` still owns the running backup (a run checks before each effect).
///
/// # Errors
/// Database errors.
pub async fn owned_by(
    db: impl PgExecutor<'_>,
    uuid: &str,
    run_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM root_data_backups
                        WHERE uuid = $1 AND status = 'running' AND inngest_run_id = $2 AND deleted_at IS NULL)",
    )
    .bind(uuid)
    .bind(run_id)
    .fetch_one(db)
    .await
}

/// What a guarded update changed, read back when it changed nothing.
async fn transition(
    db: impl PgExecutor<'_> + Copy,
    uuid: &str,
    affected: u64,
) -> Result<Transition, sqlx::Error> {
    if affected == 1 {
        return Ok(Transition::Done);
    }
    Ok(match get(db, uuid).await? {
        Some(row) => Transition::NotOwner(Box::new(row)),
        None => Transition::NotFound,
    })
}

/// Records a published and verified backup, if `run_id` still owns it.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn mark_success(
    db: impl PgExecutor<'_> + Copy,
    uuid: &str,
    run_id: &str,
    outcome: &BackupOutcome,
) -> Result<Transition, sqlx::Error> {
    let m = &outcome.manifest;
    let manifest = serde_json::to_value(m).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let position = m
        .position
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // language=PostgreSQL
    let done = sqlx::query(
        "UPDATE root_data_backups
         SET status = 'success', completed_at = now(), file_path = $2, file_size = $3, checksum = $4,
             manifest = $5, verified_at = now(), error_message = NULL, rows_written = $6,
             bytes_written = $3, progress_updated_at = now(), updated_at = now(),
             backup_type = $8, parent_uuid = $9, chain_uuid = $10, position = $11,
             fallback_reason = $12
         WHERE uuid = $1 AND status = 'running' AND inngest_run_id = $7",
    )
    .bind(uuid)
    .bind(&outcome.file_path)
    .bind(i64::try_from(outcome.total_size).unwrap_or(i64::MAX))
    .bind(&outcome.manifest_sha256)
    .bind(manifest)
    .bind(i64::try_from(outcome.rows).unwrap_or(i64::MAX))
    .bind(run_id)
    // The manifest says what was taken: an incremental request may have become a full.
    .bind(&m.backup_type)
    .bind(&m.parent_uuid)
    .bind(&m.chain_uuid)
    .bind(position)
    .bind(&m.fallback_reason)
    .execute(db)
    .await?;
    transition(db, uuid, done.rows_affected()).await
}

/// The backups that build directly on `uuid` (incrementals whose parent it is), oldest first;
/// failed and deleted ones do not count.
///
/// # Errors
/// Database errors.
pub async fn children_of(db: impl PgExecutor<'_>, uuid: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT uuid FROM root_data_backups
         WHERE parent_uuid = $1 AND deleted_at IS NULL AND status <> 'failed' ORDER BY id",
    )
    .bind(uuid)
    .fetch_all(db)
    .await
}

/// The backup an incremental of this scope builds on: the newest successful one of the same
/// scope, tenant and table list (full or incremental), other than `uuid` itself.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn latest_success(
    db: impl PgExecutor<'_>,
    uuid: &str,
    scope: &str,
    tenant_id: Option<i32>,
    tables: Option<&[String]>,
) -> Result<Option<BackupRow>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "SELECT * FROM root_data_backups
         WHERE status = 'success' AND deleted_at IS NULL AND uuid <> $1 AND backup_scope = $2
           AND tenant_id IS NOT DISTINCT FROM $3 AND backup_tables IS NOT DISTINCT FROM $4
         ORDER BY completed_at DESC NULLS LAST, id DESC LIMIT 1",
    )
    .bind(uuid)
    .bind(scope)
    .bind(tenant_id)
    .bind(tables)
    .fetch_optional(db)
    .await
}

/// Records a failure of `run_id`'s attempt (the message cut to [`MAX_ERROR_MESSAGE`]
/// characters); a backup that succeeded or that another run owns is left alone.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn mark_failed(
    db: impl PgExecutor<'_> + Copy,
    uuid: &str,
    run_id: &str,
    message: &str,
) -> Result<Transition, sqlx::Error> {
    // A pending row that no run claimed yet (validation failed first) is the caller's too.
    // language=PostgreSQL
    let done = sqlx::query(
        "UPDATE root_data_backups
         SET status = 'failed', completed_at = now(), error_message = $2, inngest_run_id = $3,
             updated_at = now()
         WHERE uuid = $1
           AND (status = 'pending' OR (status = 'running' AND inngest_run_id = $3))",
    )
    .bind(uuid)
    .bind(truncate(message, MAX_ERROR_MESSAGE))
    .bind(run_id)
    .execute(db)
    .await?;
    transition(db, uuid, done.rows_affected()).await
}

/// Replaces the message of a failure that `run_id` recorded (an operator's Ctrl-C reads better
/// as "interrupted" than as the engine's "will be retried").
///
/// # Errors
/// Database errors.
pub async fn set_failure_message(
    db: impl PgExecutor<'_>,
    uuid: &str,
    run_id: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE root_data_backups SET error_message = $3, updated_at = now()
         WHERE uuid = $1 AND status = 'failed' AND inngest_run_id = $2",
    )
    .bind(uuid)
    .bind(run_id)
    .bind(message)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a successful re-verification of the artifact.
///
/// # Errors
/// Database errors.
pub async fn mark_verified(db: impl PgExecutor<'_>, uuid: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE root_data_backups SET verified_at = now(), updated_at = now() WHERE uuid = $1",
    )
    .bind(uuid)
    .execute(db)
    .await?;
    Ok(())
}

/// Records how far a running backup got; `false` when `run_id` no longer owns it (another
/// run took it over as dead), so the caller stops. Without a run id (a dump outside any run:
/// benchmarks, engine tests) the row, if any, is updated and the answer is always `true`.
///
/// # Errors
/// Database errors.
pub async fn update_progress(
    db: impl PgExecutor<'_>,
    uuid: &str,
    run_id: Option<&str>,
    bytes: u64,
    rows: u64,
) -> Result<bool, sqlx::Error> {
    // language=PostgreSQL
    let done = sqlx::query(
        "UPDATE root_data_backups SET bytes_written = $2, rows_written = $3, progress_updated_at = now()
         WHERE uuid = $1 AND status = 'running' AND ($4::text IS NULL OR inngest_run_id = $4)",
    )
    .bind(uuid)
    .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(run_id.is_none() || done.rows_affected() == 1)
}

/// Shows that `run_id` is alive during work that reports no byte counts (verification).
///
/// # Errors
/// Database errors.
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    uuid: &str,
    run_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE root_data_backups SET progress_updated_at = now()
         WHERE uuid = $1 AND status = 'running' AND inngest_run_id = $2",
    )
    .bind(uuid)
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Backups matching `filter`, newest first, without deleted ones.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &BackupFilter,
) -> Result<Vec<BackupRow>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "SELECT * FROM root_data_backups
         WHERE deleted_at IS NULL
           AND ($1::int IS NULL OR tenant_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR backup_scope = $3)
           AND ($4::text IS NULL OR backup_type = $4)
         ORDER BY created_at DESC, id DESC
         LIMIT $5 OFFSET $6",
    )
    .bind(filter.tenant_id)
    .bind(&filter.status)
    .bind(&filter.scope)
    .bind(&filter.backup_type)
    .bind(filter.limit)
    .bind(filter.offset)
    .fetch_all(db)
    .await
}

/// `message` cut to `max_chars` characters (on a character boundary, with an ellipsis).
pub fn truncate(message: &str, max_chars: usize) -> String {
    match message.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// A row by RiverEdge's internal integer id (the design's events may carry `backup_id`).
///
/// # Errors
/// Database errors.
pub async fn get_by_id(db: impl PgExecutor<'_>, id: i32) -> Result<Option<BackupRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM root_data_backups WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Records the error of an attempt that Inngest will retry, so the backup page shows why a
/// running backup is taking longer; the status stays `running`.
///
/// # Errors
/// Database errors.
pub async fn record_attempt_error(
    db: impl PgExecutor<'_>,
    uuid: &str,
    run_id: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE root_data_backups SET error_message = $2, updated_at = now() WHERE uuid = $1 AND status = 'running' AND inngest_run_id = $3")
        .bind(uuid)
        .bind(truncate(message, MAX_ERROR_MESSAGE))
        .bind(run_id)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let msg = "错".repeat(5000);
        let cut = super::truncate(&msg, 10);
        assert_eq!(cut.chars().count(), 11);
        assert_eq!(super::truncate("short", 10), "short");
    }
}
