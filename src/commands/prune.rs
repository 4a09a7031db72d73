//! `prune [--dry-run]` (retention now, as the `backup-retention` function does it) and
//! `policy` (the effective policy and its sources).

use serde_json::json;

use super::{format, Ctx, Failure, Outcome};
use crate::usecases::retention::{self, Verdict};

pub async fn prune(ctx: &Ctx, args: &crate::cli::PruneArgs) -> Outcome {
    let effective = crate::policy::load_effective(&ctx.state.pool)
        .await
        .map_err(|e| Failure::failed(&e))?;
    for problem in &effective.problems {
        ctx.out.line(format!("policy: {problem}"));
    }
    let report = retention::prune(&ctx.state, &effective.policy, args.dry_run)
        .await
        .map_err(|e| Failure::failed(&e))?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "delete"
    };
    let mut docs = Vec::new();
    for d in report.to_delete() {
        let b = &d.backup;
        ctx.out.line(format!(
            "{verb:<12}  {}  {:<11}  {:<6}  {:<6}  {}  {}",
            b.uuid,
            b.backup_type,
            b.backup_scope,
            b.tenant_id
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            format::time(b.taken_at),
            d.reason
        ));
        docs.push(json!({
            "uuid": b.uuid, "name": b.name, "type": b.backup_type, "scope": b.backup_scope,
            "tenant_id": b.tenant_id, "status": b.status, "taken_at": b.taken_at,
            "reason": d.reason,
        }));
    }
    for (uuid, why) in &report.skipped {
        ctx.out.line(format!("left          {uuid}  {why}"));
    }
    let kept = report
        .decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Keep)
        .count();
    ctx.out.line(format!(
        "{} backup(s) {}, {kept} kept{}",
        docs.len(),
        if args.dry_run {
            "would be deleted"
        } else {
            "expired"
        },
        if args.dry_run {
            " (dry run: nothing changed)".to_owned()
        } else {
            format!(", {} deleted", report.deleted.len())
        }
    ));
    Ok(json!({
        "ok": report.skipped.is_empty(),
        "dry_run": args.dry_run,
        "expired": docs,
        "deleted": report.deleted,
        "skipped": report.skipped,
        "kept": kept,
        "policy_problems": effective.problems,
    }))
}

pub async fn policy(ctx: &Ctx) -> Outcome {
    let effective = crate::policy::load_effective(&ctx.state.pool)
        .await
        .map_err(|e| Failure::failed(&e))?;
    let value = serde_json::to_value(&effective.policy).map_err(|e| Failure::failed(&e))?;
    let base = match effective.base {
        "stored" => "root_data_backup_policy",
        _ => "defaults",
    };
    if let Some(fields) = value.as_object() {
        for (field, v) in fields {
            let source = effective
                .overrides
                .iter()
                .find(|(f, _)| f == field)
                .map_or(base, |(_, s)| s.as_str());
            ctx.out.line(format!("{field:<28} {v:<24} ({source})"));
        }
    }
    for problem in &effective.problems {
        ctx.out.line(format!("not applied: {problem}"));
    }
    let sources: serde_json::Map<String, serde_json::Value> = value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(field, _)| {
            let source = effective
                .overrides
                .iter()
                .find(|(f, _)| f == field)
                .map_or(base, |(_, s)| s.as_str());
            (field.clone(), json!(source))
        })
        .collect();
    Ok(json!({
        "ok": true,
        "policy": value,
        "sources": sources,
        "problems": effective.problems,
        "schedules": {
            "full": effective.policy.full_schedule(),
            "incremental": effective.policy.incremental_schedule(),
            "retention": effective.policy.with_timezone(crate::jobs::scheduled::RETENTION_CRON),
        },
    }))
}
