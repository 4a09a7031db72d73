//! `root_data_restores`: one row per restore, written by the restore function and the CLI.

use serde_json::Value;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

/// A restore as recorded.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct RestoreRow {
    pub uuid: String,
    pub tenant_id: Option<i32>,
    pub backup_uuid: String,
    pub restore_scope: String,
    pub target_database: Option<String>,
    pub restore_tables: Option<Vec<String>>,
    pub status: String,
    pub inngest_run_id: Option<String>,
    pub safety_backup_uuid: Option<String>,
    pub rows_per_table: Option<Value>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error_message: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What a new restore row holds.
#[derive(Debug, Clone)]
pub struct NewRestore {
    pub uuid: Uuid,
    pub tenant_id: Option<i32>,
    pub backup_uuid: Uuid,
    pub scope: String,
    pub target_database: Option<String>,
    pub tables: Option<Vec<String>>,
}

const COLUMNS: &str = "uuid, tenant_id, backup_uuid, restore_scope, target_database, restore_tables, status, \
     inngest_run_id, safety_backup_uuid, rows_per_table, started_at, completed_at, error_message, created_at";

/// Longest error message kept; the rest is in the logs.
const MAX_ERROR: usize = 4000;

/// Inserts the row unless it exists (a retried `prepare`); returns whether it inserted.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all, fields(restore = %r.uuid))]
pub async fn insert(db: impl PgExecutor<'_>, r: &NewRestore) -> Result<bool, sqlx::Error> {
    // language=PostgreSQL
    let done = sqlx::query(
        "INSERT INTO root_data_restores (uuid, tenant_id, backup_uuid, restore_scope, target_database, restore_tables)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(r.uuid.to_string())
    .bind(r.tenant_id)
    .bind(r.backup_uuid.to_string())
    .bind(&r.scope)
    .bind(&r.target_database)
    .bind(&r.tables)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// # Errors
/// Database errors.
pub async fn get(db: impl PgExecutor<'_>, uuid: Uuid) -> Result<Option<RestoreRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM root_data_restores WHERE uuid = $1"
    ))
    .bind(uuid.to_string())
    .fetch_optional(db)
    .await
}

/// Marks the restore running under `run_id`.
///
/// # Errors
/// Database errors.
pub async fn mark_running(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    run_id: &str,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "UPDATE root_data_restores SET status = 'running', inngest_run_id = $2,
                started_at = coalesce(started_at, now()), error_message = NULL, updated_at = now()
         WHERE uuid = $1 AND status <> 'success'",
    )
    .bind(uuid.to_string())
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Records the safety backup taken before anything was replaced.
///
/// # Errors
/// Database errors.
pub async fn set_safety_backup(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    backup: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE root_data_restores SET safety_backup_uuid = $2, updated_at = now() WHERE uuid = $1",
    )
    .bind(uuid.to_string())
    .bind(backup.to_string())
    .execute(db)
    .await?;
    Ok(())
}

/// # Errors
/// Database errors.
pub async fn mark_success(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    rows_per_table: &Value,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "UPDATE root_data_restores SET status = 'success', rows_per_table = $2, completed_at = now(),
                error_message = NULL, updated_at = now()
         WHERE uuid = $1",
    )
    .bind(uuid.to_string())
    .bind(rows_per_table)
    .execute(db)
    .await?;
    Ok(())
}

/// # Errors
/// Database errors.
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    message: &str,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "UPDATE root_data_restores SET status = 'failed', error_message = $2, completed_at = now(), updated_at = now()
         WHERE uuid = $1 AND status <> 'success'",
    )
    .bind(uuid.to_string())
    .bind(truncate(message))
    .execute(db)
    .await?;
    Ok(())
}

/// Restores newest first, optionally of one tenant.
///
/// # Errors
/// Database errors.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: Option<i32>,
    limit: i64,
) -> Result<Vec<RestoreRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM root_data_restores WHERE ($1::int IS NULL OR tenant_id = $1) ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(tenant)
    .bind(limit)
    .fetch_all(db)
    .await
}

fn truncate(message: &str) -> &str {
    match message.char_indices().nth(MAX_ERROR) {
        Some((i, _)) => &message[..i],
        None => message,
    }
}
