//! `restore`: the phases of the `backup-restore` Inngest function, run in a row by an operator
//! (no tenant restriction: the CLI runs with the worker's own database rights), behind safety
//! checks that run before anything is created or recorded.

use serde_json::json;

use super::reads::{data_size, Reads};
use super::{format, Ctx, Failure, Outcome};
use crate::cli::RestoreArgs;
use crate::db::backups as rows;
use crate::db::restores::RestoreClaim;
use crate::startup::AppState;
use crate::usecases::restore::{self as recovery, Prepared, RestoreRequest};

/// Databases a restore must never write into: PostgreSQL's own, whatever `--replace` says.
const PROTECTED: &[&str] = &["template0", "template1", "postgres"];

pub async fn restore(ctx: &Ctx, args: RestoreArgs) -> Outcome {
    let state = &ctx.state;
    let row = rows::get(&state.pool, &args.uuid)
        .await
        .map_err(|e| Failure::failed(&e))?
        .ok_or_else(|| {
            Failure::Usage(format!(
                "backup {} does not exist (see `riveredge-backup list`)",
                args.uuid
            ))
        })?;
    match &args.target_database {
        None if row.backup_scope == "all" && !args.replace && args.tenant.is_none() => {
            return Err(Failure::Refused(format!(
                "refused for safety: backup {} is a whole-database backup and restoring it into the live \
                 database {} replaces every table; pass --replace (a safety backup is taken first) or \
                 restore with --target-database",
                args.uuid, state.conn.database
            )));
        }
        None => {}
        Some(name) => {
            check_target_name(state, name)?;
            if row.backup_scope == "tenant" && !database_exists(state, name).await? {
                return Err(Failure::Usage(format!(
                    "database {name} does not exist; a tenant backup restores into a database that has \
                     RiverEdge's schema (restore a whole-database backup into {name} first)"
                )));
            }
            let tables = user_tables(state, name).await?;
            if tables > 0 && !args.replace {
                return Err(Failure::Refused(format!(
                    "refused for safety: database {name} exists and has {tables} tables; pass --replace \
                     (the old database is kept under another name) or choose another --target-database"
                )));
            }
            if tables > 0 && row.backup_scope != "all" {
                return Err(Failure::Refused(format!(
                    "refused for safety: database {name} has {tables} tables, and only a whole-database \
                     backup replaces another database (swapping it whole, the old one kept); restore \
                     into a new --target-database"
                )));
            }
        }
    }
    let manifest = super::reads::manifest_of(&row);
    run_phases(ctx, &args, manifest.as_ref()).await
}

async fn run_phases(
    ctx: &Ctx,
    args: &RestoreArgs,
    manifest: Option<&crate::artifact::Manifest>,
) -> Outcome {
    let (state, reads) = Reads::start(&ctx.state, ctx.out);
    let state = &state;
    let size = |only: Option<&[String]>| manifest.map_or((0, 0), |m| data_size(m, only));
    let request = RestoreRequest {
        restore_uuid: uuid::Uuid::new_v4(),
        backup_uuid: args.uuid.clone(),
        tenant_id: None,
        tables: (!args.tables.is_empty()).then(|| args.tables.clone()),
        target_database: args.target_database.clone(),
        replace: args.replace,
        dry_run: args.dry_run,
        only_tenant: args.tenant,
    };
    let started = std::time::Instant::now();
    // Refusals here are about the request (tables not in the backup, a failed backup):
    // nothing was recorded, and asking differently is the fix.
    let plan = match recovery::prepare(state, &request)
        .await
        .map_err(|e| match e {
            recovery::RestoreRequestError::Refused(m) => Failure::Usage(m),
            other => Failure::failed(&other),
        })? {
        Prepared::Run(plan) => plan,
        // A fresh uuid per command: never applied before.
        Prepared::AlreadyDone(saved) => {
            return Err(Failure::Failed(format!(
                "restore {} was applied already",
                saved.restore_uuid
            )))
        }
    };
    let run_id = format!("cli-{}", request.restore_uuid);
    let result = async {
        if !matches!(
            recovery::claim(state, &plan, &run_id).await?,
            RestoreClaim::Mine
        ) {
            return Err(recovery::RestoreRequestError::Refused(format!(
                "restore {} is being run elsewhere",
                plan.restore_uuid
            )));
        }
        let (tables, bytes) = size(None);
        reads.phase("verifying the backup", tables, bytes);
        recovery::check(state, &plan).await?;
        reads.waiting("safety backup of what gets replaced");
        let safety = recovery::safety_backup(state, &plan, &run_id).await?;
        let (tables, bytes) = size((!args.tables.is_empty()).then_some(args.tables.as_slice()));
        reads.phase("restoring", tables, bytes);
        let rows = recovery::apply(state, &plan, &run_id).await?;
        recovery::finish(state, &plan, &run_id, &rows).await?;
        Ok::<_, recovery::RestoreRequestError>((rows, safety))
    }
    .await;
    reads.finish();
    let (rows, safety) = match result {
        Ok(done) => done,
        Err(e) => {
            let message = if ctx.interrupted() {
                format!("interrupted by the operator: {}", super::one_line(&e))
            } else {
                super::one_line(&e)
            };
            let _ = recovery::fail(state, request.restore_uuid, &run_id, &message).await;
            return Err(Failure::Failed(format!(
                "restore of backup {} failed: {message}",
                args.uuid
            )));
        }
    };
    if let Some(s) = &safety {
        ctx.out
            .line(format!("safety backup {s} holds what was replaced"));
    }
    let replaced = crate::db::restores::get(&state.pool, request.restore_uuid)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.replaced_database);
    if let Some(old) = &replaced {
        ctx.out.line(format!(
            "the database it replaced is kept as {old} (drop it once the restore is confirmed)"
        ));
    }
    if args.dry_run {
        return dry_run_report(ctx, &plan.restore_uuid, &args.uuid).await;
    }
    let total: u64 = rows.as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    let tables = rows.as_object().map_or(0, serde_json::Map::len);
    let target = args
        .target_database
        .clone()
        .unwrap_or_else(|| state.conn.database.clone());
    ctx.out.line(format!(
        "restore {} of backup {} into {target} succeeded in {}: {tables} tables, {total} rows, verified against the manifest",
        plan.restore_uuid,
        args.uuid,
        format::duration(started.elapsed().as_secs_f64()),
    ));
    Ok(json!({
        "ok": true,
        "restore_uuid": plan.restore_uuid,
        "backup_uuid": args.uuid,
        "target_database": target,
        "tables": tables,
        "rows": total,
        "rows_per_table": rows,
        "safety_backup_uuid": safety,
        "replaced_database": replaced,
    }))
}

/// A valid name that is neither PostgreSQL's own nor the worker's (restore into the live
/// database by leaving `--target-database` out, so the live-restore rules apply).
fn check_target_name(state: &AppState, name: &str) -> Result<(), Failure> {
    crate::restore::validate_database_name(name).map_err(|e| Failure::Usage(e.to_string()))?;
    if PROTECTED.contains(&name) {
        return Err(Failure::Refused(format!(
            "refused for safety: {name} is a PostgreSQL system database; choose another --target-database"
        )));
    }
    if name == state.conn.database {
        return Err(Failure::Refused(format!(
            "refused for safety: {name} is the worker's own database (DATABASE_URL); to restore into it \
             leave out --target-database (a whole-database backup then needs --replace)"
        )));
    }
    Ok(())
}

async fn database_exists(state: &AppState, name: &str) -> Result<bool, Failure> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&state.pool)
        .await
        .map_err(|e| Failure::failed(&e))
}

/// Tables in database `name` other than our bookkeeping ones; 0 when it does not exist.
async fn user_tables(state: &AppState, name: &str) -> Result<i64, Failure> {
    if !database_exists(state, name).await? {
        return Ok(0);
    }
    let conn = state.conn.with_database(name);
    super::context::probe(&conn).await?;
    let pool = crate::db::connect(&conn, 1)
        .await
        .map_err(|e| Failure::failed(&e))?;
    let own: Vec<String> = crate::db::OWN_TABLES
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    // language=PostgreSQL
    let count = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT (n.nspname = 'public' AND c.relname = ANY($1))",
    )
    .bind(&own)
    .fetch_one(&pool)
    .await
    .map_err(|e| Failure::failed(&e));
    pool.close().await;
    count
}

/// Prints the preview a dry run recorded (nothing was changed).
async fn dry_run_report(ctx: &Ctx, restore_uuid: &str, backup_uuid: &str) -> Outcome {
    let preview = uuid::Uuid::parse_str(restore_uuid)
        .ok()
        .map(|u| crate::db::restores::get(&ctx.state.pool, u));
    let preview = match preview {
        Some(get) => get
            .await
            .map_err(|e| Failure::failed(&e))?
            .and_then(|r| r.preview),
        None => None,
    }
    .unwrap_or(serde_json::Value::Null);
    ctx.out.line(format!(
        "dry run {restore_uuid} of backup {backup_uuid}: nothing was changed; the restore would"
    ));
    for t in preview["tables"].as_array().into_iter().flatten() {
        ctx.out.line(format!(
            "  {}: insert {}, update {}, delete {}",
            t["table"].as_str().unwrap_or("?"),
            t["insert"],
            t["update"],
            t["delete"]
        ));
    }
    for s in preview["sequences"].as_array().into_iter().flatten() {
        ctx.out.line(format!(
            "  sequence {}: {} -> {}",
            s["sequence"].as_str().unwrap_or("?"),
            s["from"],
            s["to"]
        ));
    }
    Ok(json!({
        "ok": true,
        "dry_run": true,
        "restore_uuid": restore_uuid,
        "backup_uuid": backup_uuid,
        "preview": preview,
    }))
}
