//! Queries the REST API needs on `root_data_backups` and `root_data_restores`: paged lists,
//! tenant-scoped lookups, soft delete, and the download index. Kept apart from the job queries
//! so the two evolve without touching each other.
//!
//! Tenant scoping is part of every query here: [`Scope::Tenant`] adds `tenant_id = $n`, so a
//! handler cannot forget it and another tenant's row is simply not found.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::backups::BackupRow;
use super::restores::{RestoreRow, COLUMNS as RESTORE_COLUMNS};

/// Whose rows a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A platform admin: every row (optionally narrowed by a filter).
    Platform,
    /// A tenant admin: only this tenant's rows.
    Tenant(i32),
}

impl Scope {
    /// `(everything, tenant)` as bound parameters: `($1::bool OR tenant_id = $2)`.
    fn params(self) -> (bool, Option<i32>) {
        match self {
            Self::Platform => (true, None),
            Self::Tenant(t) => (false, Some(t)),
        }
    }
}

/// Filters of the backup list; `None` means any.
#[derive(Debug, Clone)]
pub struct BackupQuery {
    pub scope: Scope,
    /// Platform admins may narrow the list to one tenant.
    pub tenant_id: Option<i32>,
    pub backup_type: Option<String>,
    pub backup_scope: Option<String>,
    pub status: Option<String>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

// language=PostgreSQL
const BACKUP_FILTER: &str = "deleted_at IS NULL
   AND ($1::bool OR tenant_id = $2)
   AND ($3::int IS NULL OR tenant_id = $3)
   AND ($4::text IS NULL OR backup_type = $4)
   AND ($5::text IS NULL OR backup_scope = $5)
   AND ($6::text IS NULL OR status = $6)
   AND ($7::text IS NULL OR name ILIKE '%' || replace(replace(replace($7, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%')
   AND ($8::timestamptz IS NULL OR created_at >= $8)
   AND ($9::timestamptz IS NULL OR created_at <= $9)";

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    q: &'q BackupQuery,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let (all, tenant) = q.scope.params();
    query
        .bind(all)
        .bind(tenant)
        .bind(q.tenant_id)
        .bind(&q.backup_type)
        .bind(&q.backup_scope)
        .bind(&q.status)
        .bind(&q.name)
        .bind(q.created_from)
        .bind(q.created_to)
}

/// One page of backups, newest first.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn list_backups(
    db: impl PgExecutor<'_>,
    q: &BackupQuery,
) -> Result<Vec<BackupRow>, sqlx::Error> {
    let sql = format!(
        "SELECT * FROM root_data_backups WHERE {BACKUP_FILTER}
         ORDER BY created_at DESC, id DESC LIMIT $10 OFFSET $11"
    );
    bind_filter(sqlx::query_as(&sql), q)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(db)
        .await
}

/// How many backups match `q` (ignoring its page).
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn count_backups(db: impl PgExecutor<'_>, q: &BackupQuery) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT count(*) FROM root_data_backups WHERE {BACKUP_FILTER}");
    let (count,): (i64,) = bind_filter(sqlx::query_as(&sql), q).fetch_one(db).await?;
    Ok(count)
}

/// A live backup the caller may see.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn get_backup(
    db: impl PgExecutor<'_>,
    scope: Scope,
    uuid: &str,
) -> Result<Option<BackupRow>, sqlx::Error> {
    let (all, tenant) = scope.params();
    sqlx::query_as(
        "SELECT * FROM root_data_backups
         WHERE uuid = $1 AND deleted_at IS NULL AND ($2::bool OR tenant_id = $3)",
    )
    .bind(uuid)
    .bind(all)
    .bind(tenant)
    .fetch_optional(db)
    .await
}

/// A row whose event could not be sent: a backup (`backup/execute`) or a restore
/// (`backup/restore`).
#[derive(Debug, Clone, Copy)]
pub enum Unsent {
    Backup,
    Restore,
}

/// Marks a row whose event could not be sent; only a still-pending row changes (a run that
/// started meanwhile owns it).
///
/// # Errors
/// Database errors.
pub async fn fail_unsent(
    db: impl PgExecutor<'_>,
    kind: Unsent,
    uuid: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    let table = match kind {
        Unsent::Backup => "root_data_backups",
        Unsent::Restore => "root_data_restores",
    };
    sqlx::query(&format!(
        "UPDATE {table} SET status = 'failed', error_message = $2, completed_at = now(), updated_at = now()
         WHERE uuid = $1 AND status = 'pending'"
    ))
    .bind(uuid)
    .bind(message)
    .execute(db)
    .await?;
    Ok(())
}

/// Soft-deletes a backup unless it is running; returns whether it did. The `status` test and
/// the update are one statement, so a run cannot claim the row in between (claims skip deleted
/// rows).
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn soft_delete_backup(
    db: impl PgExecutor<'_>,
    scope: Scope,
    uuid: &str,
) -> Result<bool, sqlx::Error> {
    let (all, tenant) = scope.params();
    let done = sqlx::query(
        "UPDATE root_data_backups SET deleted_at = now(), updated_at = now()
         WHERE uuid = $1 AND deleted_at IS NULL AND status <> 'running' AND ($2::bool OR tenant_id = $3)",
    )
    .bind(uuid)
    .bind(all)
    .bind(tenant)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the CRC index of a backup's files for downloads.
///
/// # Errors
/// Database errors.
pub async fn set_download_index(
    db: impl PgExecutor<'_>,
    uuid: &str,
    index: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE root_data_backups SET download_index = $2 WHERE uuid = $1")
        .bind(uuid)
        .bind(index)
        .execute(db)
        .await?;
    Ok(())
}

/// The recorded download index, if any.
///
/// # Errors
/// Database errors.
pub async fn download_index(
    db: impl PgExecutor<'_>,
    uuid: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let row: Option<(Option<serde_json::Value>,)> =
        sqlx::query_as("SELECT download_index FROM root_data_backups WHERE uuid = $1")
            .bind(uuid)
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|(v,)| v))
}

// language=PostgreSQL

/// One page of restores, newest first, and the total.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all)]
pub async fn list_restores(
    db: impl PgExecutor<'_> + Copy,
    scope: Scope,
    limit: i64,
    offset: i64,
) -> Result<(Vec<RestoreRow>, i64), sqlx::Error> {
    let (all, tenant) = scope.params();
    let rows = sqlx::query_as(&format!(
        "SELECT {RESTORE_COLUMNS} FROM root_data_restores WHERE ($1::bool OR tenant_id = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(all)
    .bind(tenant)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let (total,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM root_data_restores WHERE ($1::bool OR tenant_id = $2)",
    )
    .bind(all)
    .bind(tenant)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// A restore the caller may see.
///
/// # Errors
/// Database errors.
pub async fn get_restore(
    db: impl PgExecutor<'_>,
    scope: Scope,
    uuid: &str,
) -> Result<Option<RestoreRow>, sqlx::Error> {
    let (all, tenant) = scope.params();
    sqlx::query_as(&format!(
        "SELECT {RESTORE_COLUMNS} FROM root_data_restores WHERE uuid = $1 AND ($2::bool OR tenant_id = $3)"
    ))
    .bind(uuid)
    .bind(all)
    .bind(tenant)
    .fetch_optional(db)
    .await
}

/// The restores made from one backup, newest first.
///
/// # Errors
/// Database errors.
pub async fn restores_of_backup(
    db: impl PgExecutor<'_>,
    backup_uuid: &str,
) -> Result<Vec<RestoreRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RESTORE_COLUMNS} FROM root_data_restores WHERE backup_uuid = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(backup_uuid)
    .fetch_all(db)
    .await
}
