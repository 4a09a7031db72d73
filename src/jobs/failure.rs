//! Failure signals: each backup and restore function's `onFailure` handler (the companion
//! function `<id>-failure`, triggered by `inngest/function.failed`) sends `backup/failed` or
//! `backup/restore.failed` with the backup, tenant, error and run id, so RiverEdge or an
//! alerting function can notify someone.
//!
//! To hook a webhook, register any Inngest function on those events (or an Inngest webhook
//! destination); the payload is documented on [`failed_event`].
//!
//! The event id derives from the failed run's id, so a retried handler sends it once.

use serde_json::{json, Value};

use crate::startup::AppState;

pub const BACKUP_FAILED: &str = "backup/failed";
pub const RESTORE_FAILED: &str = "backup/restore.failed";

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Backup,
    Restore,
}

/// `onFailure` of the backup functions.
///
/// # Errors
/// Database errors (retried), a failed send.
pub async fn backup_failed(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    signal(state, ctx, Kind::Backup).await
}

/// `onFailure` of the restore function.
///
/// # Errors
/// As [`backup_failed`].
pub async fn restore_failed(state: AppState, ctx: inngest::Ctx) -> Result<Value, inngest::Error> {
    signal(state, ctx, Kind::Restore).await
}

async fn signal(state: AppState, ctx: inngest::Ctx, kind: Kind) -> Result<Value, inngest::Error> {
    let failed = ctx.event.data.clone();
    let run_id = failed["run_id"].as_str().unwrap_or_default().to_owned();
    let looked_up: Value = {
        let (state, run_id, failed) = (state.clone(), run_id.clone(), failed.clone());
        crate::jobs::step(&ctx.step, "find-record", move || async move {
            find_record(&state, kind, &run_id, &failed)
                .await
                .map_err(crate::jobs::engine_error)
        })
        .await?
    };
    let event = failed_event(kind, &failed, &looked_up);
    let id = format!(
        "{}-{}",
        event.name.replace('/', "-"),
        if run_id.is_empty() {
            "unknown"
        } else {
            &run_id
        }
    );
    ctx.step
        .send_event("send-failure-event", vec![event.with_id(id)])
        .await?;
    Ok(json!({"signalled": kind_event(kind), "run_id": run_id}))
}

fn kind_event(kind: Kind) -> &'static str {
    match kind {
        Kind::Backup => BACKUP_FAILED,
        Kind::Restore => RESTORE_FAILED,
    }
}

/// The row the failed run worked on: named by its event, else the one it claimed.
async fn find_record(
    state: &AppState,
    kind: Kind,
    run_id: &str,
    failed: &Value,
) -> Result<Value, sqlx::Error> {
    let data = &failed["event"]["data"];
    let named = match kind {
        Kind::Backup => data["backup_uuid"]
            .as_str()
            .or_else(|| data["backup_id"].as_str()),
        Kind::Restore => data["restore_uuid"].as_str(),
    };
    let table = match kind {
        Kind::Backup => "root_data_backups",
        Kind::Restore => "root_data_restores",
    };
    // language=PostgreSQL
    let sql = format!(
        "SELECT uuid, tenant_id, status, error_message FROM {table}
         WHERE ($1::text IS NOT NULL AND uuid = $1) OR ($1::text IS NULL AND inngest_run_id = $2)
         ORDER BY updated_at DESC LIMIT 1"
    );
    let row: Option<(String, Option<i32>, String, Option<String>)> = sqlx::query_as(&sql)
        .bind(named)
        .bind(run_id)
        .fetch_optional(&state.pool)
        .await?;
    Ok(row.map_or(Value::Null, |(uuid, tenant, status, error)| {
        json!({"uuid": uuid, "tenant_id": tenant, "status": status, "error_message": error})
    }))
}

/// The event sent: `{function_id, run_id, error, backup_uuid | restore_uuid, tenant_id,
/// status, event}` (the failed run's triggering event, for context).
pub fn failed_event(kind: Kind, failed: &Value, record: &Value) -> inngest::Event {
    let original = &failed["event"]["data"];
    let tenant = if record["tenant_id"].is_null() {
        original["tenant_id"].clone()
    } else {
        record["tenant_id"].clone()
    };
    let error = failed["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| record["error_message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| failed["error"].to_string());
    let mut data = json!({
        "function_id": failed["function_id"],
        "run_id": failed["run_id"],
        "tenant_id": tenant,
        "error": error,
        "status": record["status"],
        "event": failed["event"],
    });
    let key = match kind {
        Kind::Backup => "backup_uuid",
        Kind::Restore => "restore_uuid",
    };
    data[key] = record["uuid"].clone();
    if kind == Kind::Restore {
        data["backup_uuid"] = original["backup_uuid"].clone();
    }
    inngest::Event::new(kind_event(kind), data)
}
