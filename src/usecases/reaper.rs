//! The reaper: cleans up after work whose run died (kill -9, a lost machine, a database
//! restart), on start-up and periodically.
//!
//! - Backup rows `running` without progress, and restore rows `running` without a heartbeat,
//!   for the policy's stall limit (`stall_minutes`, default 10 min; the step timeout if that is
//!   shorter) become `failed` with a reason ("no progress for 10 min"), and a stalled backup's
//!   files go at once: its run lost the claim, so it will not publish them. `pending` restore rows
//!   that old never started (a killed CLI); `pending` backup rows are left for a day, since a
//!   queued Inngest run may still take them.
//! - Storage prefixes whose row failed, was deleted or never existed lose their files once
//!   nothing under them changed for the step timeout; `.partial` leftovers go too. A backup is
//!   complete only when its manifest is published *and* its row says `success`.
//! - Databases a killed whole-database restore was building (`rbk_build_*`) are dropped once
//!   their restore is no longer running.
//! - Password files of processes that no longer exist are removed.
//!
//! Live work of other workers is safe: everything keys on the same age threshold that the
//! claims use for takeover, and one reaper runs at a time across replicas (an advisory lock).

use std::time::Duration;

use sqlx::Connection;

use crate::startup::AppState;

/// Advisory lock key of the reaper (`rbk-reap` in ASCII).
const LOCK_KEY: i64 = 0x72_626b_2d72_6561;

/// How long a `pending` backup may wait for its run before the reaper gives up on it.
const PENDING_BACKUP_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// How often `serve` runs the reaper.
pub const EVERY: Duration = Duration::from_secs(60);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReapReport {
    /// `false` when another worker held the reaper's lock (nothing was done).
    pub ran: bool,
    pub backups_failed: Vec<String>,
    pub restores_failed: Vec<String>,
    pub prefixes_removed: Vec<String>,
    pub partials_removed: usize,
    pub databases_dropped: Vec<String>,
    pub passfiles_removed: usize,
}

/// One pass, with `stale_after` as the age of dead work (the step timeout in `serve`).
///
/// # Errors
/// Database and storage errors (the next pass tries again).
pub async fn reap(state: &AppState, stale_after: Duration) -> anyhow::Result<ReapReport> {
    let mut conn = sqlx::PgConnection::connect_with(&state.conn.connect_options()).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if !locked {
        return Ok(ReapReport::default());
    }
    let result = pass(state, &mut conn, stale_after).await;
    let _ = conn.close().await; // ends the session and with it the advisory lock
    let report = result?;
    if report
        != (ReapReport {
            ran: true,
            ..ReapReport::default()
        })
    {
        tracing::warn!(?report, "reaped dead work");
    }
    Ok(report)
}

async fn pass(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    stale_after: Duration,
) -> anyhow::Result<ReapReport> {
    let stall_after = match crate::policy::load_effective(&state.pool).await {
        Ok(effective) => effective.policy.stall_after(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the backup policy; the reaper uses the default stall limit");
            crate::policy::BackupPolicy::default().stall_after()
        }
    };
    let limit = stall_after.min(stale_after);
    let stale = limit.as_secs_f64();
    let reason = if limit.as_secs() % 60 == 0 {
        format!(
            "no progress for {} min: the worker running this stopped reporting progress (stuck, killed or lost); retry it",
            limit.as_secs() / 60
        )
    } else {
        format!(
            "no progress for {}s: the worker running this stopped reporting progress (stuck, killed or lost); retry it",
            limit.as_secs()
        )
    };
    // language=PostgreSQL
    let backups_failed: Vec<String> = sqlx::query_scalar(
        "UPDATE root_data_backups
         SET status = 'failed', completed_at = now(), updated_at = now(),
             error_message = CASE WHEN status = 'pending' THEN 'never started: no run took this backup' ELSE $2 END
         WHERE deleted_at IS NULL
           AND ((status = 'running'
                 AND coalesce(progress_updated_at, started_at, updated_at) < now() - make_interval(secs => $1))
             OR (status = 'pending' AND updated_at < now() - make_interval(secs => $3)))
         RETURNING uuid",
    )
    .bind(stale)
    .bind(&reason)
    .bind(PENDING_BACKUP_LIMIT.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    // language=PostgreSQL
    let restores_failed: Vec<String> = sqlx::query_scalar(
        "UPDATE root_data_restores
         SET status = 'failed', completed_at = now(), updated_at = now(), error_message = $2
         WHERE applied_at IS NULL AND status IN ('pending', 'running')
           AND coalesce(heartbeat_at, updated_at) < now() - make_interval(secs => $1)
         RETURNING uuid",
    )
    .bind(stale)
    .bind(&reason)
    .fetch_all(&mut *conn)
    .await?;
    // A stalled backup's files go now; a zombie writer finds its claim lost and stops.
    let mut prefixes_removed = Vec::new();
    for uuid in &backups_failed {
        state
            .storage
            .delete_prefix(&crate::artifact::prefix(uuid)?)
            .await?;
        prefixes_removed.push(uuid.clone());
    }
    for prefix in sweep_prefixes(state, conn, stale_after).await? {
        if !prefixes_removed.contains(&prefix) {
            prefixes_removed.push(prefix);
        }
    }
    let partials_removed = state.storage.sweep_partials(stale_after).await?;
    let databases_dropped = drop_abandoned_builds(conn).await?;
    let passfiles_removed = sweep_passfiles();
    crate::metrics::reaper_action("backup_failed", backups_failed.len());
    crate::metrics::reaper_action("restore_failed", restores_failed.len());
    crate::metrics::reaper_action("prefix_removed", prefixes_removed.len());
    crate::metrics::reaper_action("partial_removed", partials_removed);
    crate::metrics::reaper_action("database_dropped", databases_dropped.len());
    Ok(ReapReport {
        ran: true,
        backups_failed,
        restores_failed,
        prefixes_removed,
        partials_removed,
        databases_dropped,
        passfiles_removed,
    })
}

/// Removes storage prefixes that no live or successful row claims.
async fn sweep_prefixes(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    stale_after: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for (prefix, changed) in state.storage.prefixes().await? {
        if changed.elapsed().unwrap_or_default() < stale_after {
            continue; // a writer may be at it right now
        }
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM root_data_backups WHERE uuid = $1 AND deleted_at IS NULL",
        )
        .bind(prefix.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        if matches!(status.as_deref(), Some("success" | "running" | "pending")) {
            continue;
        }
        state.storage.delete_prefix(&prefix).await?;
        removed.push(prefix.to_string());
    }
    Ok(removed)
}

/// Drops `rbk_build_<12 hex>` databases whose restore is not running any more.
async fn drop_abandoned_builds(conn: &mut sqlx::PgConnection) -> anyhow::Result<Vec<String>> {
    // language=PostgreSQL
    let abandoned: Vec<String> = sqlx::query_scalar(
        r"SELECT d.datname FROM pg_database d
          WHERE d.datname ~ '^rbk_build_[0-9a-f]{12}$'
            AND NOT EXISTS (SELECT 1 FROM root_data_restores r
                            WHERE r.status = 'running'
                              AND replace(r.uuid, '-', '') LIKE substr(d.datname, 11) || '%')",
    )
    .fetch_all(&mut *conn)
    .await?;
    for name in &abandoned {
        crate::restore::drop_database(conn, name).await?;
    }
    Ok(abandoned)
}

/// Removes `rbk-pgpass-<pid>-*` directories of processes that are gone.
fn sweep_passfiles() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(crate::pg::PASSFILE_PREFIX))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Runs [`reap`] now and every [`EVERY`] until shutdown (`serve`).
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stale_after = state.settings.backup.step_timeout;
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = reap(&state, stale_after).await {
                        tracing::warn!(error = %e, "the reaper failed; it runs again in a minute");
                    }
                }
            }
        }
    })
}
