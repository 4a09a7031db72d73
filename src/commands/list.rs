//! `list`: backups newest first, with filters.

use serde_json::json;

use super::queries::{self, ListFilter};
use super::{format, Ctx, Failure, Outcome};

pub async fn list(ctx: &Ctx, args: &crate::cli::ListArgs) -> Outcome {
    let since = args
        .since
        .as_deref()
        .map(|s| format::since(s, chrono::Utc::now()))
        .transpose()
        .map_err(Failure::Usage)?;
    let filter = ListFilter {
        tenant_id: args.tenant,
        status: args.status.map(|s| s.as_str().to_owned()),
        scope: args.scope.map(|s| s.as_str().to_owned()),
        since,
        limit: args.limit,
    };
    let found = queries::backups(&ctx.state.pool, &filter)
        .await
        .map_err(|e| Failure::failed(&e))?;
    ctx.out.line(format!(
        "{:<36}  {:<8}  {:<11}  {:<6}  {:<6}  {:>10}  {:>8}  {:<19}  NAME",
        "UUID", "STATUS", "TYPE", "SCOPE", "TENANT", "SIZE", "TOOK", "CREATED"
    ));
    let mut docs = Vec::new();
    for row in &found {
        let size = u64::try_from(row.file_size.unwrap_or(row.bytes_written)).unwrap_or(0);
        let took = format::between(row.started_at, row.completed_at);
        ctx.out.line(format!(
            "{:<36}  {:<8}  {:<11}  {:<6}  {:<6}  {:>10}  {:>8}  {:<19}  {}",
            row.uuid,
            row.status,
            row.backup_type,
            row.backup_scope,
            row.tenant_id
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            format::size(size),
            took.map_or_else(|| "-".to_owned(), format::duration),
            format::time(row.created_at),
            match &row.parent_uuid {
                Some(parent) => format!("{} [on {parent}]", row.name),
                None => row.name.clone(),
            }
        ));
        docs.push(json!({
            "uuid": row.uuid,
            "name": row.name,
            "status": row.status,
            "type": row.backup_type,
            "scope": row.backup_scope,
            "tenant_id": row.tenant_id,
            "tables": row.backup_tables,
            "bytes": size,
            "rows": row.rows_written,
            "created_at": row.created_at,
            "started_at": row.started_at,
            "completed_at": row.completed_at,
            "duration_seconds": took,
            "verified_at": row.verified_at,
            "error": row.error_message,
            "parent_uuid": row.parent_uuid,
            "chain_uuid": row.chain_uuid,
            "fallback_reason": row.fallback_reason,
        }));
    }
    Ok(json!({ "ok": true, "backups": docs }))
}
