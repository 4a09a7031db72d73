//! `restores`: restores newest first.

use serde_json::json;

use super::{format, queries, Ctx, Failure, Outcome};

pub async fn restores(ctx: &Ctx, args: &crate::cli::RestoresArgs) -> Outcome {
    let found = queries::restores(
        &ctx.state.pool,
        args.tenant,
        args.backup.as_deref(),
        args.limit,
    )
    .await
    .map_err(|e| Failure::failed(&e))?;
    ctx.out.line(format!(
        "{:<36}  {:<36}  {:<8}  {:<6}  {:<6}  {:<20}  {:>8}  CREATED",
        "RESTORE", "BACKUP", "STATUS", "SCOPE", "TENANT", "TARGET", "TOOK"
    ));
    for r in &found {
        // Restores recorded by the CLI start when they are created.
        let took = format::between(r.started_at.or(Some(r.created_at)), r.completed_at);
        ctx.out.line(format!(
            "{:<36}  {:<36}  {:<8}  {:<6}  {:<6}  {:<20}  {:>8}  {}",
            r.uuid,
            r.backup_uuid,
            r.status,
            r.restore_scope,
            r.tenant_id
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            r.target_database.as_deref().unwrap_or("(live)"),
            took.map_or_else(|| "-".to_owned(), format::duration),
            format::time(r.created_at),
        ));
    }
    Ok(json!({ "ok": true, "restores": found }))
}
