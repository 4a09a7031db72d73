//! `root_data_restores`: one row per restore, written by the restore function and the CLI.
//!
//! A restore is applied at most once: [`lock_for_apply`] and [`record_applied`] run inside the
//! transaction that changes the data (or renames the restored database into place), so a
//! retried step, a crash after the commit or a dashboard rerun finds `applied_at` set and
//! reports the saved result. Transitions name their owner run, like backups'.

use std::time::Duration;

use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor};
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
    /// Set in the transaction that applied the restore.
    pub applied_at: Option<chrono::DateTime<chrono::Utc>>,
    pub heartbeat_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The old database a whole-database `replace` kept under another name.
    pub replaced_database: Option<String>,
    /// A preview: computes what the restore would do and changes nothing.
    pub dry_run: bool,
    /// Per-table inserts/updates/deletes and sequence moves, planned (dry run) or done.
    pub preview: Option<Value>,
    /// A clone: the backup's tenant is restored as this tenant id.
    pub target_tenant_id: Option<i32>,
}

/// The result of trying to start (or continue) a restore run.
#[derive(Debug, Clone)]
pub enum RestoreClaim {
    Mine,
    /// Applied already: the saved row.
    AlreadyDone(Box<RestoreRow>),
    Busy {
        owner: Option<String>,
    },
    NotFound,
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
    /// A preview: computed like the restore, nothing changed.
    pub dry_run: bool,
    /// A clone: the backup's tenant restored as this tenant id.
    pub target_tenant_id: Option<i32>,
}

/// The columns of [`RestoreRow`], for every query that reads one.
pub const COLUMNS: &str = "uuid, tenant_id, backup_uuid, restore_scope, target_database, restore_tables, status, \
     inngest_run_id, safety_backup_uuid, rows_per_table, started_at, completed_at, error_message, created_at, \
     applied_at, heartbeat_at, replaced_database, dry_run, preview, target_tenant_id";

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
        "INSERT INTO root_data_restores (uuid, tenant_id, backup_uuid, restore_scope, target_database, restore_tables,
                                         dry_run, target_tenant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(r.uuid.to_string())
    .bind(r.tenant_id)
    .bind(r.backup_uuid.to_string())
    .bind(&r.scope)
    .bind(&r.target_database)
    .bind(&r.tables)
    .bind(r.dry_run)
    .bind(r.target_tenant_id)
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

/// Moves the restore to `running` for `run_id` unless it was applied, or another run is at it
/// and alive (heartbeat within `stale_after`).
///
/// # Errors
/// Database errors.
pub async fn claim(
    db: impl PgExecutor<'_> + Copy,
    uuid: Uuid,
    run_id: &str,
    stale_after: Duration,
) -> Result<RestoreClaim, sqlx::Error> {
    // language=PostgreSQL
    let done = sqlx::query(
        "UPDATE root_data_restores SET status = 'running', inngest_run_id = $2, heartbeat_at = now(),
                started_at = coalesce(started_at, now()), error_message = NULL, completed_at = NULL,
                updated_at = now()
         WHERE uuid = $1 AND applied_at IS NULL
           AND (status IN ('pending', 'failed')
                OR (status = 'running'
                    AND (inngest_run_id = $2
                         OR coalesce(heartbeat_at, updated_at) < now() - make_interval(secs => $3))))",
    )
    .bind(uuid.to_string())
    .bind(run_id)
    .bind(stale_after.as_secs_f64())
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(RestoreClaim::Mine);
    }
    Ok(match get(db, uuid).await? {
        None => RestoreClaim::NotFound,
        Some(row) if row.applied_at.is_some() || row.status == "success" => {
            RestoreClaim::AlreadyDone(Box::new(row))
        }
        Some(row) => RestoreClaim::Busy {
            owner: row.inngest_run_id,
        },
    })
}

/// Shows that `run_id` is alive during a long phase; `false` when it no longer owns the row.
///
/// # Errors
/// Database errors.
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    run_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE root_data_restores SET heartbeat_at = now()
         WHERE uuid = $1 AND status = 'running' AND inngest_run_id = $2",
    )
    .bind(uuid.to_string())
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Serializes the applies of one restore inside the transaction that is about to apply it, and
/// returns its row as it stands (`applied_at` set: it was applied already, by this request, and
/// must not be again). Concurrent applies of one restore wait here for each other.
///
/// The lock is a transaction-level advisory lock, not a row lock: the row stays writable, so
/// the run's heartbeat (another connection) keeps moving while the restore works. The caller's
/// transaction must be READ COMMITTED, so the read after the wait sees a commit that ended it.
///
/// # Errors
/// Database errors; [`sqlx::Error::RowNotFound`] when the row is gone.
pub async fn lock_for_apply(
    conn: &mut PgConnection,
    uuid: Uuid,
) -> Result<RestoreRow, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('rbk-restore:' || $1, 0))")
        .bind(uuid.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM root_data_restores WHERE uuid = $1"
    ))
    .bind(uuid.to_string())
    .fetch_one(conn)
    .await
}

/// Records, in the applying transaction, that the restore is applied and what it did.
///
/// # Errors
/// Database errors.
pub async fn record_applied(
    conn: &mut PgConnection,
    uuid: Uuid,
    rows_per_table: &Value,
    replaced_database: Option<&str>,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "UPDATE root_data_restores
         SET status = 'success', applied_at = now(), rows_per_table = $2, replaced_database = $3,
             completed_at = now(), error_message = NULL, updated_at = now()
         WHERE uuid = $1 AND applied_at IS NULL",
    )
    .bind(uuid.to_string())
    .bind(rows_per_table)
    .bind(replaced_database)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records what a restore did (inside its transaction) or, for a dry run, would do.
///
/// # Errors
/// Database errors.
pub async fn set_preview(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    preview: &Value,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query("UPDATE root_data_restores SET preview = $2, updated_at = now() WHERE uuid = $1")
        .bind(uuid.to_string())
        .bind(preview)
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

/// Success for a restore whose apply could not record itself in the same transaction (a target
/// on another database); already applied rows keep their saved result.
///
/// # Errors
/// Database errors.
pub async fn mark_success(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    run_id: &str,
    rows_per_table: &Value,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "UPDATE root_data_restores
         SET status = 'success',
             -- A dry run changed nothing: it reaches success but is never applied.
             applied_at = CASE WHEN dry_run THEN applied_at ELSE coalesce(applied_at, now()) END,
             rows_per_table = coalesce(rows_per_table, $2), completed_at = coalesce(completed_at, now()),
             error_message = NULL, updated_at = now()
         WHERE uuid = $1 AND (applied_at IS NOT NULL OR (status = 'running' AND inngest_run_id = $3))",
    )
    .bind(uuid.to_string())
    .bind(rows_per_table)
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Failure of `run_id`'s attempt; an applied restore, or one another run owns, is left alone.
///
/// # Errors
/// Database errors.
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    run_id: &str,
    message: &str,
) -> Result<bool, sqlx::Error> {
    // language=PostgreSQL
    let done = sqlx::query(
        "UPDATE root_data_restores SET status = 'failed', error_message = $2, completed_at = now(), updated_at = now()
         WHERE uuid = $1 AND applied_at IS NULL AND status <> 'success'
           AND (status = 'pending' OR inngest_run_id IS NULL OR inngest_run_id = $3)",
    )
    .bind(uuid.to_string())
    .bind(truncate(message))
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
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
