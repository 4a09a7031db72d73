//! `backup/restore` (and RiverEdge's `database/restore.requested`): restore a backup as a
//! durable, verified operation, tracked in `root_data_restores`.
//!
//! Steps: `prepare` (validate, record) → `check` (verify artifact, compatibility; nothing
//! touched) → `safety-backup` (what will be replaced, for undo) → `restore` (one transaction for
//! tenants and tables) → `mark-success`. A final failure runs `mark-failed`. See
//! [`crate::recovery`] for what each phase guarantees.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::jobs::events;
use crate::jobs::{non_retriable, step};
use crate::recovery::{self, RecoveryError, RestorePlan, RestoreRequest};
use crate::startup::AppState;

pub const SLUG: &str = "backup-restore";
pub const EVENTS: [&str; 2] = ["backup/restore", "database/restore.requested"];

/// Namespace for restore uuids derived from event ids (one restore row per event).
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x2d8e_4f1a_6b3c_4e9d_a7f0_1c5b_9e3d_8a42);

/// # Errors
/// Non-retriable for requests that cannot succeed; step errors otherwise.
pub async fn run(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    let event = events::parse_restore(&ctx.event.data).map_err(|e| non_retriable(e.to_string()))?;
    let key = ctx.event.id.clone().unwrap_or_else(|| ctx.run_id.clone());
    let request = RestoreRequest {
        restore_uuid: event.restore_uuid.unwrap_or_else(|| {
            Uuid::new_v5(&EVENT_NAMESPACE, format!("{}:{key}", ctx.fn_id).as_bytes())
        }),
        backup_uuid: event.backup_uuid.to_string(),
        tenant_id: event.tenant_id,
        tables: event.tables,
        target_database: event.target_database,
        replace: event.replace,
    };
    let plan: RestorePlan = {
        let (state, request) = (state.clone(), request.clone());
        step(&ctx.step, "prepare", move || async move {
            recovery::prepare(&state, &request)
                .await
                .map_err(to_inngest)
        })
        .await?
    };
    match execute(&state, &ctx, &plan).await {
        Ok(rows) => Ok(json!({
            "restore_uuid": plan.restore_uuid, "backup_uuid": plan.backup_uuid,
            "status": "success", "rows_per_table": rows,
        })),
        Err(e) if e.is_step_failure() || !e.is_retriable() => {
            let message = e.message().to_owned();
            let (st, uuid, text) = (state.clone(), request.restore_uuid, message.clone());
            step(&ctx.step, "mark-failed", move || async move {
                recovery::fail(&st, uuid, &text).await.map_err(to_inngest)
            })
            .await?;
            Err(non_retriable(format!(
                "restore {} failed: {message}",
                plan.restore_uuid
            )))
        }
        Err(e) => Err(e),
    }
}

///
/// Step closures own what they use (`move || async move`), so their futures are `Send` for any
/// lifetime.
async fn execute(
    state: &AppState,
    ctx: &inngest::Ctx,
    plan: &RestorePlan,
) -> Result<Value, inngest::Error> {
    let (st, pl, run_id) = (state.clone(), plan.clone(), ctx.run_id.clone());
    step(&ctx.step, "mark-running", move || async move {
        let (state, plan) = (&st, &pl);
        let uuid = Uuid::parse_str(&plan.restore_uuid)
            .map_err(|_| non_retriable("invalid restore uuid"))?;
        crate::db::restores::mark_running(&state.pool, uuid, &run_id)
            .await
            .map_err(|e| inngest::Error::retriable(format!("database error: {e}")))
    })
    .await?;
    let (st, pl) = (state.clone(), plan.clone());
    step(&ctx.step, "check", move || async move {
        recovery::check(&st, &pl).await.map_err(to_inngest)
    })
    .await?;
    let (st, pl, run_id) = (state.clone(), plan.clone(), ctx.run_id.clone());
    let safety: Option<String> = step(&ctx.step, "safety-backup", move || async move {
        recovery::safety_backup(&st, &pl, &run_id)
            .await
            .map_err(to_inngest)
    })
    .await?;
    let (st, pl) = (state.clone(), plan.clone());
    let rows: Value = step(&ctx.step, "restore", move || async move {
        recovery::apply(&st, &pl).await.map_err(to_inngest)
    })
    .await?;
    let (st, pl, r) = (state.clone(), plan.clone(), rows.clone());
    step(&ctx.step, "mark-success", move || async move {
        recovery::finish(&st, &pl, &r).await.map_err(to_inngest)
    })
    .await?;
    Ok(json!({"tables": rows, "safety_backup_uuid": safety}))
}

fn to_inngest(e: RecoveryError) -> inngest::Error {
    if e.is_retriable() {
        inngest::Error::retriable(e.to_string())
    } else {
        inngest::Error::non_retriable(e.to_string())
    }
}
