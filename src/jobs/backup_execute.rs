//! `backup/execute` (and RiverEdge's `database/backup.requested`): take one backup, verified,
//! tracked in `root_data_backups`.
//!
//! Steps: `prepare` (find or create the row, validate) → `mark-running` (claim the row for this
//! run, or wait for the run that has it) → `dump` → `verify` → `mark-success`. When a step
//! fails for good, `mark-failed` removes the files and records the error, but only while this
//! run owns the backup ([`usecases::backup::fail`]).
//!
//! Idempotency: the row's uuid derives from the event id, so a duplicate delivery or a
//! dashboard rerun (new run id, same event) finds the same row: done already → the saved
//! result; another live run at it → wait for it; failed → start over. Each step reads what it
//! needs from the database or storage, never from local files, so steps may run on different
//! replicas.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::backup::{self, BackupScope, BackupSpec, BackupType};
use crate::db::backups::{self as rows, BackupRow, NewBackup};
use crate::jobs::events::{self, BackupEvent, BackupRef};
use crate::jobs::{claim_or_wait, engine_error, non_retriable, step, ClaimStep};
use crate::startup::AppState;
use crate::usecases::backup::{self as usecase, Claim, DumpSummary, Failed, Saved};

pub const SLUG: &str = "backup-execute";
pub const EVENTS: [&str; 2] = ["backup/execute", "database/backup.requested"];

/// Namespace for uuids derived from event ids, so a retried `prepare` creates one row.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x5f0e_7a51_2c1d_4b8e_9a3f_0d6c_8e21_b7a4);

/// What `prepare` decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Prepared {
    /// The backup already succeeded: nothing to do (duplicate event, replay).
    AlreadyDone(Saved),
    Run {
        spec: BackupSpec,
    },
}

/// Runs one backup through its steps.
///
/// # Errors
/// Non-retriable for invalid requests; the step errors of a failed backup otherwise.
pub async fn run(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    crate::jobs::check_trigger(&ctx, &EVENTS)?;
    let event = events::parse_backup(&ctx.event.data).map_err(|e| non_retriable(e.to_string()))?;
    run_event(state, ctx, event).await
}

/// [`run`] for an already parsed request (the scheduled backups build theirs).
///
/// # Errors
/// See [`run`].
pub async fn run_event(
    state: AppState,
    ctx: inngest::Ctx,
    event: BackupEvent,
) -> Result<Value, inngest::Error> {
    let derived = derived_uuid(&ctx);
    let prepared: Prepared = {
        let (state, event, run_id) = (state.clone(), event.clone(), ctx.run_id.clone());
        step(&ctx.step, "prepare", move || async move {
            prepare(&state, &event, derived, &run_id).await
        })
        .await?
    };
    let spec = match prepared {
        Prepared::AlreadyDone(saved) => return Ok(done(&saved, true)),
        Prepared::Run { spec } => spec,
    };
    let (st, uuid, run_id) = (state.clone(), spec.uuid.clone(), ctx.run_id.clone());
    let claimed = claim_or_wait(&ctx, move || {
        let (state, uuid, run_id) = (st.clone(), uuid.clone(), run_id.clone());
        async move {
            Ok(
                match usecase::claim(&state, &uuid, &run_id)
                    .await
                    .map_err(engine_error)?
                {
                    Claim::Mine => ClaimStep::Mine,
                    Claim::AlreadyDone(row) => ClaimStep::Done(Saved::from(&*row)),
                    Claim::Busy { owner } => ClaimStep::Busy(owner.unwrap_or_default()),
                    Claim::NotFound => {
                        return Err(non_retriable(format!("backup {uuid} no longer exists")))
                    }
                },
            )
        }
    })
    .await?;
    if let Some(saved) = claimed {
        return Ok(done(&saved, true));
    }
    match execute(&state, &ctx, spec.clone()).await {
        Ok(saved) => {
            crate::metrics::backup_finished(
                spec.scope.as_str(),
                spec.backup_type.as_str(),
                "success",
                u64::try_from(saved.file_size.unwrap_or(0)).unwrap_or(0),
                u64::try_from(saved.rows).unwrap_or(0),
            );
            Ok(done(&saved, false))
        }
        Err(e) if e.is_step_failure() || !e.is_retriable() => {
            let message = e.message().to_owned();
            let (st, uuid, text, run_id) = (
                state.clone(),
                spec.uuid.clone(),
                message.clone(),
                ctx.run_id.clone(),
            );
            let outcome: Option<Saved> = step(&ctx.step, "mark-failed", move || async move {
                match usecase::fail(&st, &uuid, &run_id, &text)
                    .await
                    .map_err(engine_error)?
                {
                    Failed::Recorded => Ok(None),
                    // Not ours: leave it, and report a success someone else achieved.
                    Failed::NotOwner(row) => {
                        Ok((row.status == "success").then(|| Saved::from(&*row)))
                    }
                }
            })
            .await?;
            match outcome {
                Some(saved) => Ok(done(&saved, true)),
                None => {
                    crate::metrics::backup_finished(
                        spec.scope.as_str(),
                        spec.backup_type.as_str(),
                        "failed",
                        0,
                        0,
                    );
                    Err(non_retriable(format!(
                        "backup {} failed: {message}",
                        spec.uuid
                    )))
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// The run's result for a backup that succeeded (`skipped`: by an earlier run).
fn done(saved: &Saved, skipped: bool) -> Value {
    let mut out = json!({
        "backup_uuid": saved.backup_uuid, "status": saved.status,
        "file_size": saved.file_size, "rows": saved.rows, "tables": saved.tables,
        "checksum": saved.checksum,
    });
    if skipped {
        out["skipped"] = json!("already succeeded");
    }
    out
}

/// The steps after the claim; any error here is reported by [`run_event`].
///
/// Every step closure owns what it uses (`move || async move`): step futures must be `Send` for
/// any lifetime, which borrowed captures cannot promise to the compiler.
async fn execute(
    state: &AppState,
    ctx: &inngest::Ctx,
    spec: BackupSpec,
) -> Result<Saved, inngest::Error> {
    let (st, sp, run_id) = (state.clone(), spec.clone(), ctx.run_id.clone());
    let summary: DumpSummary = step(&ctx.step, "dump", move || async move {
        usecase::dump(&st, &sp, &run_id).await.map_err(engine_error)
    })
    .await?;
    let (st, uuid, run_id, sha) = (
        state.clone(),
        spec.uuid.clone(),
        ctx.run_id.clone(),
        summary.manifest_sha256.clone(),
    );
    step(&ctx.step, "verify", move || async move {
        usecase::verify(&st, &uuid, &run_id, &sha)
            .await
            .map_err(engine_error)
    })
    .await?;
    let (st, sp, run_id) = (state.clone(), spec.clone(), ctx.run_id.clone());
    step(&ctx.step, "mark-success", move || async move {
        usecase::finish(&st, &sp, &run_id, &summary)
            .await
            .map(|row| Saved::from(&row))
            .map_err(engine_error)
    })
    .await
}

/// Finds or creates the row and turns it into a validated spec.
async fn prepare(
    state: &AppState,
    event: &BackupEvent,
    derived: Uuid,
    run_id: &str,
) -> Result<Prepared, inngest::Error> {
    let row = match &event.backup {
        Some(BackupRef::Uuid(uuid)) => rows::get(&state.pool, &uuid.to_string())
            .await
            .map_err(db_error)?,
        Some(BackupRef::Id(id)) => rows::get_by_id(&state.pool, *id).await.map_err(db_error)?,
        None => None,
    };
    let row = match row {
        Some(row) => row,
        None => create_row(state, event, derived).await?,
    };
    if let Some(tenant) = event.tenant_id {
        if row.tenant_id != Some(tenant) {
            // Not ours to touch: the event is wrong, the row stays as it is.
            return Err(non_retriable(format!(
                "backup {} belongs to {}, not to tenant {tenant}",
                row.uuid,
                row.tenant_id
                    .map_or_else(|| "the platform".to_owned(), |t| format!("tenant {t}"))
            )));
        }
    }
    if row.status == "success" {
        return Ok(Prepared::AlreadyDone(Saved::from(&row)));
    }
    let spec = spec_of(&row)?;
    if let Err(e) = backup::validate(state, &spec).await {
        if !e.is_retriable() {
            // Only a row nobody runs (pending, failed) or this run's own takes the failure.
            rows::mark_failed(&state.pool, &row.uuid, run_id, &e.to_string())
                .await
                .map_err(db_error)?;
        }
        return Err(engine_error(e));
    }
    Ok(Prepared::Run { spec })
}

/// A row for an event that names no existing backup but says what to back up.
async fn create_row(
    state: &AppState,
    event: &BackupEvent,
    derived: Uuid,
) -> Result<BackupRow, inngest::Error> {
    let uuid = match &event.backup {
        Some(BackupRef::Uuid(u)) => *u,
        Some(BackupRef::Id(id)) => {
            return Err(non_retriable(format!("backup id {id} does not exist")))
        }
        None => derived,
    };
    let Some(scope) = event.backup_scope.clone() else {
        return Err(non_retriable(match &event.backup {
            Some(_) => format!("backup {uuid} does not exist and the event does not say what to back up (backup_scope)"),
            None => "the event names no backup (backup_uuid) and no backup_scope".to_owned(),
        }));
    };
    let backup_type = event
        .backup_type
        .clone()
        .unwrap_or_else(|| "full".to_owned());
    let name = event.name.clone().unwrap_or_else(|| {
        format!(
            "{backup_type}-{scope}-{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        )
    });
    let new = NewBackup {
        uuid: uuid.to_string(),
        tenant_id: event.tenant_id,
        name,
        backup_type,
        backup_scope: scope,
        backup_tables: event.backup_tables.clone(),
    };
    if let Err(e) = rows::insert(&state.pool, &new).await {
        // CHECK constraints reject impossible combinations (scope all with a tenant, ...).
        return Err(
            match e
                .as_database_error()
                .and_then(|d| d.constraint().map(str::to_owned))
            {
                Some(constraint) => non_retriable(format!("invalid backup request ({constraint})")),
                None => db_error(e),
            },
        );
    }
    rows::get(&state.pool, &uuid.to_string())
        .await
        .map_err(db_error)?
        .ok_or_else(|| inngest::Error::retriable(format!("backup {uuid} vanished after insert")))
}

/// The spec a row describes (its CHECK constraints keep type and scope within these values).
fn spec_of(row: &BackupRow) -> Result<BackupSpec, inngest::Error> {
    let backup_type = match row.backup_type.as_str() {
        "full" => BackupType::Full,
        "incremental" => BackupType::Incremental,
        other => return Err(non_retriable(format!("unknown backup_type {other:?}"))),
    };
    let scope = match row.backup_scope.as_str() {
        "all" => BackupScope::All,
        "table" => BackupScope::Table,
        "tenant" => BackupScope::Tenant,
        other => return Err(non_retriable(format!("unknown backup_scope {other:?}"))),
    };
    Ok(BackupSpec {
        uuid: row.uuid.clone(),
        backup_type,
        scope,
        tenant_id: row.tenant_id,
        tables: row.backup_tables.clone().unwrap_or_default(),
    })
}

/// A stable uuid for a row created from this event: retries of `prepare` and duplicate
/// deliveries of the same event map to the same row.
fn derived_uuid(ctx: &inngest::Ctx) -> Uuid {
    let key = ctx.event.id.clone().unwrap_or_else(|| ctx.run_id.clone());
    Uuid::new_v5(&EVENT_NAMESPACE, format!("{}:{key}", ctx.fn_id).as_bytes())
}

fn db_error(e: sqlx::Error) -> inngest::Error {
    let message = format!("database error: {e}");
    if crate::retry::is_transient_sql(&e) {
        inngest::Error::retriable(message)
    } else {
        inngest::Error::non_retriable(message)
    }
}
