//! `backup/restore` (and RiverEdge's `database/restore.requested`): restore a backup as a
//! durable, verified operation, tracked in `root_data_restores`.
//!
//! Steps: `prepare` (validate, record) → `mark-running` (claim, or wait for the run that has
//! it) → `check` (verify artifact, compatibility; nothing touched) → `safety-backup` (what
//! will be replaced, for undo) → `restore` (applied at most once) → `mark-success`. A final
//! failure runs `mark-failed`, which leaves an applied restore alone. A duplicate event or a
//! dashboard rerun derives the same restore uuid and reports the saved result; a new restore of
//! the same backup is a new event, a new restore and a fresh safety backup. See
//! [`crate::usecases::restore`] for what each phase guarantees.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::restores::RestoreClaim;
use crate::jobs::{claim_or_wait, engine_error, events, non_retriable, step, ClaimStep};
use crate::startup::AppState;
use crate::usecases::restore::{self as usecase, Prepared, RestorePlan, RestoreRequest, Saved};

pub const SLUG: &str = "backup-restore";
pub const EVENTS: [&str; 2] = ["backup/restore", "database/restore.requested"];

/// Namespace for restore uuids derived from event ids (one restore row per event).
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x2d8e_4f1a_6b3c_4e9d_a7f0_1c5b_9e3d_8a42);

/// # Errors
/// Non-retriable for requests that cannot succeed; step errors otherwise.
pub async fn run(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    crate::jobs::check_trigger(&ctx, &EVENTS)?;
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
        dry_run: event.dry_run,
        only_tenant: event.restore_tenant_id,
    };
    let prepared: Prepared = {
        let (state, request) = (state.clone(), request.clone());
        step(&ctx.step, "prepare", move || async move {
            usecase::prepare(&state, &request)
                .await
                .map_err(engine_error)
        })
        .await?
    };
    let plan = match prepared {
        Prepared::AlreadyDone(saved) => return Ok(done(&saved, true)),
        Prepared::Run(plan) => plan,
    };
    let (st, pl, run_id) = (state.clone(), plan.clone(), ctx.run_id.clone());
    let claimed = claim_or_wait(&ctx, move || {
        let (state, plan, run_id) = (st.clone(), pl.clone(), run_id.clone());
        async move {
            Ok(
                match usecase::claim(&state, &plan, &run_id)
                    .await
                    .map_err(engine_error)?
                {
                    RestoreClaim::Mine => ClaimStep::Mine,
                    RestoreClaim::AlreadyDone(row) => ClaimStep::Done(Saved::from(&*row)),
                    RestoreClaim::Busy { owner } => ClaimStep::Busy(owner.unwrap_or_default()),
                    RestoreClaim::NotFound => {
                        return Err(non_retriable(format!(
                            "restore {} no longer exists",
                            plan.restore_uuid
                        )))
                    }
                },
            )
        }
    })
    .await?;
    if let Some(saved) = claimed {
        return Ok(done(&saved, true));
    }
    match execute(&state, &ctx, &plan).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_step_failure() || !e.is_retriable() => {
            let message = e.message().to_owned();
            let (st, uuid, text, run_id) = (
                state.clone(),
                request.restore_uuid,
                message.clone(),
                ctx.run_id.clone(),
            );
            step(&ctx.step, "mark-failed", move || async move {
                usecase::fail(&st, uuid, &run_id, &text)
                    .await
                    .map_err(engine_error)
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

/// The run's result for a restore that was applied (`skipped`: by an earlier run).
fn done(saved: &Saved, skipped: bool) -> Value {
    let mut out = json!({
        "restore_uuid": saved.restore_uuid, "backup_uuid": saved.backup_uuid,
        "status": saved.status, "rows_per_table": saved.rows_per_table,
        "safety_backup_uuid": saved.safety_backup_uuid,
        "replaced_database": saved.replaced_database,
    });
    if skipped {
        out["skipped"] = json!("already applied");
    }
    out
}

/// The steps after the claim. Step closures own what they use (`move || async move`), so
/// their futures are `Send` for any lifetime.
async fn execute(
    state: &AppState,
    ctx: &inngest::Ctx,
    plan: &RestorePlan,
) -> Result<Value, inngest::Error> {
    let (st, pl) = (state.clone(), plan.clone());
    step(&ctx.step, "check", move || async move {
        usecase::check(&st, &pl).await.map_err(engine_error)
    })
    .await?;
    let (st, pl, run_id) = (state.clone(), plan.clone(), ctx.run_id.clone());
    let safety: Option<String> = step(&ctx.step, "safety-backup", move || async move {
        usecase::safety_backup(&st, &pl, &run_id)
            .await
            .map_err(engine_error)
    })
    .await?;
    let (st, pl, run_id) = (state.clone(), plan.clone(), ctx.run_id.clone());
    let rows: Value = step(&ctx.step, "restore", move || async move {
        usecase::apply(&st, &pl, &run_id)
            .await
            .map_err(engine_error)
    })
    .await?;
    let (st, pl, r, run_id) = (
        state.clone(),
        plan.clone(),
        rows.clone(),
        ctx.run_id.clone(),
    );
    step(&ctx.step, "mark-success", move || async move {
        usecase::finish(&st, &pl, &run_id, &r)
            .await
            .map_err(engine_error)
    })
    .await?;
    Ok(json!({
        "restore_uuid": plan.restore_uuid, "backup_uuid": plan.backup_uuid,
        "status": "success", "rows_per_table": rows, "safety_backup_uuid": safety,
    }))
}
