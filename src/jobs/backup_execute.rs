//! `backup/execute` (and RiverEdge's `database/backup.requested`): take one backup, verified,
//! tracked in `root_data_backups`.
//!
//! Steps: `prepare` (find or create the row, validate) → `mark-running` (claim the row for this
//! run) → `dump` (artifact + manifest to storage) → `verify` (re-read everything) →
//! `mark-success`. When a step fails for good, `mark-failed` removes whatever the attempts left
//! in storage and records the error; the run then fails without further retries.
//!
//! Idempotency: a duplicate event or a dashboard replay of a backup that already succeeded stops
//! at `prepare`; a re-run of a failed backup starts over. Each step reads what it needs from the
//! database or storage, never from local files, so steps may run on different replicas.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::backup::{self, BackupOutcome, BackupScope, BackupSpec, BackupType};
use crate::db::backups::{self as rows, BackupRow, ClaimOutcome, NewBackup};
use crate::jobs::events::{self, BackupEvent, BackupRef};
use crate::jobs::{engine_error, non_retriable, step};
use crate::startup::AppState;

pub const SLUG: &str = "backup-execute";
pub const EVENTS: [&str; 2] = ["backup/execute", "database/backup.requested"];

/// Namespace for uuids derived from event ids, so a retried `prepare` creates one row.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x5f0e_7a51_2c1d_4b8e_9a3f_0d6c_8e21_b7a4);

/// What `prepare` decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Prepared {
    /// The backup already succeeded: nothing to do (duplicate event, replay).
    AlreadyDone {
        uuid: String,
    },
    Run {
        spec: BackupSpec,
    },
}

/// What `dump` produced, as a step output (small: the manifest itself stays in storage).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpSummary {
    pub manifest_sha256: String,
    pub total_size: u64,
    pub rows: u64,
    pub tables: usize,
}

/// Runs one backup through its steps.
///
/// # Errors
/// Non-retriable for invalid requests; the step errors of a failed backup otherwise.
pub async fn run(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
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
        let (state, event) = (state.clone(), event.clone());
        step(&ctx.step, "prepare", move || async move {
            prepare(&state, &event, derived).await
        })
        .await?
    };
    let spec = match prepared {
        Prepared::AlreadyDone { uuid } => {
            return Ok(
                json!({"backup_uuid": uuid, "status": "success", "skipped": "already succeeded"}),
            );
        }
        Prepared::Run { spec } => spec,
    };
    match execute(&state, &ctx, spec.clone()).await {
        Ok(summary) => Ok(json!({
            "backup_uuid": spec.uuid, "status": "success",
            "file_size": summary.total_size, "rows": summary.rows, "tables": summary.tables,
            "checksum": summary.manifest_sha256,
        })),
        Err(e) if e.is_step_failure() || !e.is_retriable() => {
            let message = e.message().to_owned();
            let (state, uuid, text) = (state.clone(), spec.uuid.clone(), message.clone());
            step(&ctx.step, "mark-failed", move || async move {
                backup::discard(&state, &uuid).await.map_err(engine_error)?;
                rows::mark_failed(&state.pool, &uuid, &text)
                    .await
                    .map_err(db_error)?;
                Ok::<_, inngest::Error>(())
            })
            .await?;
            Err(non_retriable(format!(
                "backup {} failed: {message}",
                spec.uuid
            )))
        }
        Err(e) => Err(e),
    }
}

/// The steps after `prepare`; any error here is reported by [`run`].
///
/// Every step closure owns what it uses (`move || async move`): step futures must be `Send` for
/// any lifetime, which borrowed captures cannot promise to the compiler.
async fn execute(
    state: &AppState,
    ctx: &inngest::Ctx,
    spec: BackupSpec,
) -> Result<DumpSummary, inngest::Error> {
    let (st, sp, run_id) = (state.clone(), spec.clone(), ctx.run_id.clone());
    let claimed: bool = step(&ctx.step, "mark-running", move || async move {
        let (state, spec) = (&st, &sp);
        let stale_after = state.settings.backup.step_timeout * 2;
        match rows::claim(&state.pool, &spec.uuid, &run_id, stale_after)
            .await
            .map_err(db_error)?
        {
            ClaimOutcome::Claimed => Ok(true),
            ClaimOutcome::AlreadySucceeded => Ok(false),
            ClaimOutcome::RunningElsewhere { run_id } => Err(inngest::Error::retry_after(
                format!(
                    "backup {} is being taken by run {}",
                    spec.uuid,
                    run_id.as_deref().unwrap_or("?")
                ),
                std::time::Duration::from_secs(60),
            )),
            ClaimOutcome::NotFound => Err(non_retriable(format!(
                "backup {} no longer exists",
                spec.uuid
            ))),
        }
    })
    .await?;
    if !claimed {
        return Err(non_retriable(format!(
            "backup {} already succeeded in another run",
            spec.uuid
        )));
    }
    let (st, sp, attempt) = (state.clone(), spec.clone(), ctx.attempt);
    let summary: DumpSummary = step(&ctx.step, "dump", move || async move {
        let (state, spec) = (&st, &sp);
        match backup::run(state, spec).await {
            Ok(outcome) => Ok(DumpSummary {
                manifest_sha256: outcome.manifest_sha256,
                total_size: outcome.total_size,
                rows: outcome.rows,
                tables: outcome.manifest.tables.len(),
            }),
            Err(e) => {
                // Visible on the backup page while Inngest retries.
                let _ = rows::record_attempt_error(
                    &state.pool,
                    &spec.uuid,
                    &format!("attempt {} failed: {e}", attempt + 1),
                )
                .await;
                Err(engine_error(e))
            }
        }
    })
    .await?;
    let (st, sp, sum) = (state.clone(), spec.clone(), summary.clone());
    step(&ctx.step, "verify", move || async move {
        let (state, spec, summary) = (&st, &sp, &sum);
        crate::backup::verify(state, &spec.uuid, Some(&summary.manifest_sha256))
            .await
            .map(|_| ())
            .map_err(|e| inngest::Error::retriable(format!("verification failed: {e}")))
    })
    .await?;
    let (st, sp, sum) = (state.clone(), spec.clone(), summary.clone());
    step(&ctx.step, "mark-success", move || async move {
        let (state, spec, summary) = (&st, &sp, &sum);
        let (manifest, manifest_sha256) = crate::artifact::read_manifest(
            state.storage.as_ref(),
            &spec.uuid,
            Some(&summary.manifest_sha256),
        )
        .await
        .map_err(|e| inngest::Error::retriable(e.to_string()))?;
        let outcome = BackupOutcome {
            manifest,
            manifest_sha256,
            total_size: summary.total_size,
            file_path: format!("{}/", spec.uuid),
            rows: summary.rows,
        };
        rows::mark_success(&state.pool, &spec.uuid, &outcome)
            .await
            .map_err(db_error)
    })
    .await?;
    Ok(summary)
}

/// Finds or creates the row and turns it into a validated spec.
async fn prepare(
    state: &AppState,
    event: &BackupEvent,
    derived: Uuid,
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
        return Ok(Prepared::AlreadyDone { uuid: row.uuid });
    }
    let spec = spec_of(&row)?;
    if let Err(e) = backup::validate(state, &spec).await {
        if !e.is_retriable() {
            rows::mark_failed(&state.pool, &row.uuid, &e.to_string())
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
    inngest::Error::retriable(format!("database error: {e}"))
}
