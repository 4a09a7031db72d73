//! `backup`: validate → record → claim → dump → verify → mark success (or failed), with
//! progress on the terminal.

use anyhow::Context;
use serde_json::json;

use super::{format, progress, Ctx, Failure, Outcome};
use crate::backup::{self, BackupError, BackupOutcome, BackupScope, BackupSpec, BackupType};
use crate::cli::{BackupArgs, ScopeArg, TypeArg};
use crate::db::backups::{self as rows, BackupRow};
use crate::startup::AppState;
use crate::usecases::backup as usecase;

pub async fn backup(ctx: &Ctx, args: BackupArgs) -> Outcome {
    let spec = spec_from(&args);
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "manual-{}-{}",
            spec.scope.as_str(),
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        )
    });
    let state = &ctx.state;
    // Input problems stop here, before a row or a file exists.
    let validated = backup::validate(state, &spec).await.map_err(|e| {
        if e.is_retriable() {
            Failure::failed(&e)
        } else {
            Failure::Usage(super::one_line(&e))
        }
    })?;
    let estimated = estimated_rows(state, &validated.selection).await;
    let tables = validated.selection.tables.len();
    let run_id = format!("cli-{}", spec.uuid);
    ctx.out.line(format!(
        "backup {} started ({name}, {tables} tables)",
        spec.uuid
    ));
    let bar = progress::backup_bar(ctx.out, estimated);
    let watcher = progress::watch_backup(state, &spec.uuid, tables, bar.clone());
    let started = std::time::Instant::now();
    let result = usecase::take(state, &spec, &name, &run_id)
        .await
        .and_then(|row| outcome_of(&row));
    watcher.abort();
    bar.finish_and_clear();
    if result.is_err() && ctx.interrupted() {
        // The engine recorded "will be retried", which is true of a worker, not of an operator.
        let _ = rows::set_failure_message(
            &state.pool,
            &spec.uuid,
            &run_id,
            "interrupted by the operator",
        )
        .await;
    }
    let outcome = result.map_err(|e| backup_failure(ctx, &spec.uuid, e))?;
    let elapsed = started.elapsed().as_secs_f64();
    if spec.scope == BackupScope::Tenant && outcome.rows == 0 {
        ctx.out.warn(format!(
            "tenant {} has no rows in the backed-up tables: backup {} is empty",
            spec.tenant_id.unwrap_or_default(),
            spec.uuid
        ));
    }
    ctx.out.line(format!(
        "backup {} succeeded in {}: {} tables, {} rows, {}, verified; manifest sha256 {}",
        spec.uuid,
        format::duration(elapsed),
        outcome.manifest.tables.len(),
        outcome.rows,
        format::size(outcome.total_size),
        outcome.manifest_sha256
    ));
    let m = &outcome.manifest;
    if let Some(parent) = &m.parent_uuid {
        ctx.out.line(format!(
            "incremental on {parent} (chain {})",
            m.chain_uuid.as_deref().unwrap_or("-")
        ));
    }
    if let Some(reason) = &m.fallback_reason {
        ctx.out.warn(format!(
            "taken as a full backup instead of an incremental: {reason}"
        ));
    }
    Ok(json!({
        "ok": true,
        "uuid": spec.uuid,
        "name": name,
        // What was taken: an incremental request falls back to a full when it must.
        "type": m.backup_type,
        "requested_type": spec.backup_type.as_str(),
        "parent_uuid": m.parent_uuid,
        "chain_uuid": m.chain_uuid,
        "fallback_reason": m.fallback_reason,
        "scope": spec.scope.as_str(),
        "tenant_id": spec.tenant_id,
        "tables": outcome.manifest.tables.len(),
        "rows": outcome.rows,
        "empty": outcome.rows == 0,
        "bytes": outcome.total_size,
        "manifest_sha256": outcome.manifest_sha256,
        "elapsed_seconds": elapsed,
    }))
}

/// A backup's error as an operator should read it: no "safety backup:" prefix (this is the
/// backup itself), and an interrupted backup is not "retried" by anyone.
fn backup_failure(ctx: &Ctx, uuid: &str, e: BackupError) -> Failure {
    match e {
        BackupError::Cancelled if ctx.interrupted() => Failure::Failed(
            format!("interrupted: backup {uuid} was stopped, its partial files removed and its record marked failed"),
        ),
        e => Failure::Failed(format!("backup {uuid} failed: {}", super::one_line(&e))),
    }
}

/// The recorded result of a finished backup, as the CLI reports it.
fn outcome_of(row: &BackupRow) -> Result<BackupOutcome, BackupError> {
    let manifest = serde_json::from_value(row.manifest.clone().unwrap_or_default())
        .map_err(|e| BackupError::Internal(format!("the recorded manifest does not parse: {e}")))?;
    Ok(BackupOutcome {
        manifest,
        manifest_sha256: row.checksum.clone().unwrap_or_default(),
        total_size: u64::try_from(row.file_size.unwrap_or(0)).unwrap_or(0),
        file_path: row.file_path.clone().unwrap_or_default(),
        rows: u64::try_from(row.rows_written).unwrap_or(0),
    })
}

fn spec_from(args: &BackupArgs) -> BackupSpec {
    BackupSpec {
        uuid: uuid::Uuid::new_v4().to_string(),
        backup_type: match args.backup_type {
            TypeArg::Full => BackupType::Full,
            TypeArg::Incremental => BackupType::Incremental,
        },
        scope: match args.scope {
            ScopeArg::All => BackupScope::All,
            ScopeArg::Table => BackupScope::Table,
            ScopeArg::Tenant => BackupScope::Tenant,
        },
        tenant_id: args.tenant,
        tables: args.tables.clone(),
    }
}

/// The planner's row estimate for whole tables (none when rows are filtered by tenant: the
/// estimate would be of the whole table, and a wrong ETA is worse than none).
async fn estimated_rows(state: &AppState, selection: &backup::Selection) -> Option<u64> {
    if selection.tables.iter().any(|t| t.predicate.is_some()) {
        return None;
    }
    let names: Vec<String> = selection.table_refs().iter().map(|t| t.quoted()).collect();
    let estimate: Option<f64> = sqlx::query_scalar(
        "SELECT sum(greatest(reltuples, 0))::float8 FROM pg_class WHERE oid = ANY($1::regclass[])",
    )
    .bind(&names)
    .fetch_one(&state.pool)
    .await
    .ok()
    .flatten();
    estimate.map(|r| r as u64)
}

/// Takes and records one backup without output (tests and other callers).
///
/// # Errors
/// Invalid input, or the backup failed (the row then says why).
pub async fn take_backup(
    state: &AppState,
    spec: &BackupSpec,
    name: &str,
) -> anyhow::Result<BackupOutcome> {
    let run_id = format!("cli-{}", spec.uuid);
    let row = usecase::take(state, spec, name, &run_id)
        .await
        .with_context(|| format!("backup {} failed", spec.uuid))?;
    Ok(outcome_of(&row)?)
}
