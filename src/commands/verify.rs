//! `verify` and `drill`: re-read a backup, or restore it into a scratch database and compare.

use serde_json::json;

use super::reads::{data_size, manifest_of, Reads};
use super::{format, Ctx, Failure, Outcome};
use crate::db::backups as rows;

pub async fn verify(ctx: &Ctx, uuid: &str) -> Outcome {
    let state = &ctx.state;
    let row = existing(ctx, uuid).await?;
    let (counted, reads) = Reads::start(state, ctx.out);
    let (tables, bytes) = manifest_of(&row).map_or((0, 0), |m| data_size(&m, None));
    reads.phase("verifying", tables, bytes);
    let started = std::time::Instant::now();
    let report = tokio::select! {
        r = crate::backup::verify(&counted, uuid, row.checksum.as_deref()) => r,
        () = state.shutdown.cancelled() => {
            reads.finish();
            return Err(Failure::Failed(format!("interrupted: verification of backup {uuid} was stopped")));
        }
    };
    reads.finish();
    let report = report.map_err(|e| {
        Failure::Failed(format!(
            "backup {uuid} does not verify: {}",
            super::one_line(&e)
        ))
    })?;
    rows::mark_verified(&state.pool, uuid)
        .await
        .map_err(|e| Failure::failed(&e))?;
    // An incremental restores only with its chain: every member below it is read too.
    let mut chain = Vec::new();
    let mut next = row.parent_uuid.clone();
    while let Some(parent) = next.take() {
        let member = existing(ctx, &parent).await.map_err(|_| {
            Failure::Failed(format!(
                "backup {uuid} verified, but its chain is broken: {parent} is gone"
            ))
        })?;
        crate::backup::verify(state, &parent, member.checksum.as_deref())
            .await
            .map_err(|e| {
                Failure::Failed(format!(
                    "backup {uuid} verified, but chain member {parent} does not: {}",
                    super::one_line(&e)
                ))
            })?;
        ctx.out.line(format!("chain member {parent} verified"));
        chain.push(parent);
        next = member.parent_uuid;
    }
    let elapsed = started.elapsed().as_secs_f64();
    ctx.out.line(format!(
        "backup {uuid} verified in {}: {} files, {}, {} rows",
        format::duration(elapsed),
        report.files,
        format::size(report.bytes),
        report.rows
    ));
    Ok(json!({
        "ok": true,
        "uuid": uuid,
        "files": report.files,
        "bytes": report.bytes,
        "rows": report.rows,
        "manifest_sha256": report.manifest_sha256,
        "parent_uuid": row.parent_uuid,
        "chain_uuid": row.chain_uuid,
        "chain_verified": chain,
        "elapsed_seconds": elapsed,
    }))
}

pub async fn drill(ctx: &Ctx, uuid: &str) -> Outcome {
    let state = &ctx.state;
    let row = existing(ctx, uuid).await?;
    let (counted, reads) = Reads::start(state, ctx.out);
    let (tables, bytes) = manifest_of(&row).map_or((0, 0), |m| data_size(&m, None));
    // The drill reads every data file once while restoring; the comparison that follows
    // reads the scratch database, so the bar stays full during it.
    reads.phase("drill: restoring into a scratch database", tables, bytes);
    let report = tokio::select! {
        r = crate::restore::drill(&counted, uuid) => r,
        () = state.shutdown.cancelled() => {
            reads.finish();
            return Err(Failure::Failed(format!("interrupted: the drill of backup {uuid} was stopped")));
        }
    };
    reads.finish();
    let report = report.map_err(|e| {
        Failure::Failed(format!(
            "drill of backup {uuid} failed: {}",
            super::one_line(&e)
        ))
    })?;
    for t in &report.tables {
        ctx.out.line(format!(
            "{:<60} {:>10} rows  {}  ok",
            t.table.to_string(),
            t.rows,
            t.content_hash
        ));
    }
    ctx.out.line(format!(
        "drill of {uuid} passed in {}: {} tables, {} rows (scratch database {} dropped)",
        format::duration(report.elapsed.as_secs_f64()),
        report.tables.len(),
        report.rows,
        report.database
    ));
    Ok(json!({
        "ok": true,
        "uuid": uuid,
        "tables": report.tables.iter().map(|t| json!({
            "table": t.table.to_string(),
            "rows": t.rows,
            "content_hash": t.content_hash,
            "matches": t.matches(),
        })).collect::<Vec<_>>(),
        "rows": report.rows,
        "scratch_database": report.database,
        "elapsed_seconds": report.elapsed.as_secs_f64(),
    }))
}

/// The backup's row, or a usage error naming the way to find uuids.
async fn existing(ctx: &Ctx, uuid: &str) -> Result<rows::BackupRow, Failure> {
    rows::get(&ctx.state.pool, uuid)
        .await
        .map_err(|e| Failure::failed(&e))?
        .ok_or_else(|| {
            Failure::Usage(format!(
                "backup {uuid} does not exist (see `riveredge-backup list`)"
            ))
        })
}
