//! Read-only queries the operator commands need beyond `crate::db` (filters the app does not
//! use). Kept here, as new functions, so the shared query modules stay as they are.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::db::backups::BackupRow;
use crate::db::restores::RestoreRow;

/// Filters of `list`; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub tenant_id: Option<i32>,
    pub status: Option<String>,
    pub scope: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// Backups newest first (deleted ones hidden).
///
/// # Errors
/// Database errors.
pub async fn backups(
    db: impl PgExecutor<'_>,
    f: &ListFilter,
) -> Result<Vec<BackupRow>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "SELECT * FROM root_data_backups
         WHERE deleted_at IS NULL
           AND ($1::int IS NULL OR tenant_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR backup_scope = $3)
           AND ($4::timestamptz IS NULL OR created_at >= $4)
         ORDER BY created_at DESC, id DESC LIMIT $5",
    )
    .bind(f.tenant_id)
    .bind(&f.status)
    .bind(&f.scope)
    .bind(f.since)
    .bind(f.limit)
    .fetch_all(db)
    .await
}

/// Restores newest first, optionally of one tenant or one backup.
///
/// # Errors
/// Database errors.
pub async fn restores(
    db: impl PgExecutor<'_>,
    tenant: Option<i32>,
    backup_uuid: Option<&str>,
    limit: i64,
) -> Result<Vec<RestoreRow>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(&format!(
        "SELECT {} FROM root_data_restores
         WHERE ($1::int IS NULL OR tenant_id = $1)
           AND ($2::text IS NULL OR backup_uuid = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3",
        crate::db::restores::COLUMNS
    ))
    .bind(tenant)
    .bind(backup_uuid)
    .bind(limit)
    .fetch_all(db)
    .await
}
