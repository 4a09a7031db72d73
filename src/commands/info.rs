//! `info <uuid>`: one backup as `pgbackrest info` would show it: the record, the manifest's
//! tables with rows, sizes and checksums, when it was verified, and the restores made from it.

use serde_json::json;

use super::{format, queries, Ctx, Failure, Outcome};
use crate::artifact::Manifest;

pub async fn info(ctx: &Ctx, uuid: &str) -> Outcome {
    let pool = &ctx.state.pool;
    let row = crate::db::backups::get(pool, uuid)
        .await
        .map_err(|e| Failure::failed(&e))?
        .ok_or_else(|| {
            Failure::Usage(format!(
                "backup {uuid} does not exist (see `riveredge-backup list`)"
            ))
        })?;
    let manifest: Option<Manifest> = row
        .manifest
        .clone()
        .and_then(|m| serde_json::from_value(m).ok());
    let restores = queries::restores(pool, None, Some(uuid), 1000)
        .await
        .map_err(|e| Failure::failed(&e))?;
    let size = u64::try_from(row.file_size.unwrap_or(row.bytes_written)).unwrap_or(0);
    let took = format::between(row.started_at, row.completed_at);
    let out = ctx.out;
    out.line(format!("backup     {} ({})", row.uuid, row.name));
    out.line(format!(
        "status     {}{}",
        row.status,
        row.error_message
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    ));
    out.line(format!("type       {}", chain_text(&row)));
    out.line(format!(
        "scope      {}{}",
        row.backup_scope,
        row.tenant_id
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    ));
    out.line(format!(
        "created    {}{}",
        format::time(row.created_at),
        took.map(|t| format!(", took {}", format::duration(t)))
            .unwrap_or_default()
    ));
    out.line(format!("size       {}", format::size(size)));
    out.line(format!(
        "verified   {}",
        row.verified_at
            .map_or_else(|| "never".to_owned(), format::time)
    ));
    out.line(format!(
        "manifest   sha256 {}",
        row.checksum.as_deref().unwrap_or("-")
    ));
    if let Some(m) = &manifest {
        out.line(format!(
            "source     database {}, PostgreSQL {}, {}, zstd level {}",
            m.database, m.server_version, m.pg_dump_version, m.compression.level
        ));
        out.line(format!(
            "{:<50} {:>12} {:>10} {:>10}  {:<16}  SHA256",
            "TABLE", "ROWS", "SIZE", "RAW", "CONTENT HASH"
        ));
        for t in &m.tables {
            out.line(format!(
                "{:<50} {:>12} {:>10} {:>10}  {:<16}  {}",
                t.table_ref().to_string(),
                t.rows,
                format::size(t.size),
                format::size(t.raw_size),
                t.content_hash,
                t.sha256
            ));
        }
        for e in &m.excluded_tables {
            out.line(format!("excluded   {}.{}: {}", e.schema, e.name, e.reason));
        }
    }
    out.line(format!("restores   {}", restores.len()));
    for r in &restores {
        out.line(format!(
            "  {} {} into {} at {}",
            r.uuid,
            r.status,
            r.target_database.as_deref().unwrap_or("(live)"),
            format::time(r.created_at)
        ));
    }
    let tables = manifest.as_ref().map(|m| {
        m.tables
            .iter()
            .map(|t| {
                json!({
                    "table": t.table_ref().to_string(),
                    "rows": t.rows,
                    "bytes": t.size,
                    "raw_bytes": t.raw_size,
                    "sha256": t.sha256,
                    "content_hash": t.content_hash,
                })
            })
            .collect::<Vec<_>>()
    });
    Ok(json!({
        "ok": true,
        "uuid": row.uuid,
        "name": row.name,
        "status": row.status,
        "error": row.error_message,
        "type": row.backup_type,
        "scope": row.backup_scope,
        "tenant_id": row.tenant_id,
        "parent_uuid": row.parent_uuid,
        "chain_uuid": row.chain_uuid,
        "fallback_reason": row.fallback_reason,
        "created_at": row.created_at,
        "completed_at": row.completed_at,
        "duration_seconds": took,
        "bytes": size,
        "rows": manifest.as_ref().map_or(row.rows_written.max(0) as u64, |m| m.tables.iter().map(|t| t.rows).sum()),
        "manifest_sha256": row.checksum,
        "verified_at": row.verified_at,
        "server_version": manifest.as_ref().map(|m| m.server_version.clone()),
        "pg_dump_version": manifest.as_ref().map(|m| m.pg_dump_version.clone()),
        "compression": manifest.as_ref().map(|m| json!({"codec": m.compression.codec, "level": m.compression.level})),
        "tables": tables,
        "restores": restores,
    }))
}

/// `full`, `full (chain root; requested incremental: <why>)` or `incremental on <parent>
/// (chain <root>)`.
pub fn chain_text(row: &crate::db::backups::BackupRow) -> String {
    match (&row.parent_uuid, &row.fallback_reason) {
        (Some(parent), _) => format!(
            "{} on {parent} (chain {})",
            row.backup_type,
            row.chain_uuid.as_deref().unwrap_or("-")
        ),
        (None, Some(reason)) => format!(
            "{} (starts a chain; an incremental was requested: {reason})",
            row.backup_type
        ),
        (None, None) => format!("{} (starts a chain)", row.backup_type),
    }
}
