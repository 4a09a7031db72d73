//! `restore`: the phases of the `backup-restore` Inngest function, run in a row by an operator
//! (no tenant restriction: the CLI runs with the worker's own database rights), behind safety
//! checks that run before anything is created or recorded.

use serde_json::json;

use super::reads::{data_size, Reads};
use super::{format, progress, Ctx, Failure, Outcome};
use crate::backup::{self, BackupScope, BackupSpec, BackupType};
use crate::cli::RestoreArgs;
use crate::db::backups::{self as rows, ClaimOutcome, NewBackup};
use crate::recovery::{self, RestoreRequest};
use crate::startup::AppState;

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
    let mut target_safety = None;
    match &args.target_database {
        None if row.backup_scope == "all" && !args.replace => {
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
                     (a safety backup of {name} is taken first) or choose another --target-database"
                )));
            }
            if tables > 0 {
                let spinner = progress::spinner(ctx.out, &format!("safety backup of {name}"));
                let uuid = safety_backup_of(state, name).await;
                spinner.finish_and_clear();
                let uuid = uuid?;
                ctx.out.line(format!(
                    "safety backup {uuid} holds database {name} as it was"
                ));
                target_safety = Some(uuid);
            }
        }
    }
    let manifest = super::reads::manifest_of(&row);
    run_phases(ctx, &args, target_safety, manifest.as_ref()).await
}

async fn run_phases(
    ctx: &Ctx,
    args: &RestoreArgs,
    target_safety: Option<String>,
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
    };
    let started = std::time::Instant::now();
    // Refusals here are about the request (tables not in the backup, a failed backup):
    // nothing was recorded, and asking differently is the fix.
    let plan = recovery::prepare(state, &request)
        .await
        .map_err(|e| match e {
            recovery::RecoveryError::Refused(m) => Failure::Usage(m),
            other => Failure::failed(&other),
        })?;
    let result = async {
        let (tables, bytes) = size(None);
        reads.phase("verifying the backup", tables, bytes);
        recovery::check(state, &plan).await?;
        reads.waiting("safety backup of what gets replaced");
        let run_id = format!("cli-{}", std::process::id());
        let safety = recovery::safety_backup(state, &plan, &run_id).await?;
        let (tables, bytes) = size((!args.tables.is_empty()).then_some(args.tables.as_slice()));
        reads.phase("restoring", tables, bytes);
        let rows = recovery::apply(state, &plan).await?;
        recovery::finish(state, &plan, &rows).await?;
        Ok::<_, recovery::RecoveryError>((rows, safety))
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
            let _ = recovery::fail(state, request.restore_uuid, &message).await;
            return Err(Failure::Failed(format!(
                "restore of backup {} failed: {message}",
                args.uuid
            )));
        }
    };
    let safety = safety.or(target_safety);
    if let Some(s) = &safety {
        ctx.out
            .line(format!("safety backup {s} holds what was replaced"));
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

/// A whole-database backup of `name` (not the live database), recorded with the worker's
/// backups like any other, so `--replace` into an existing database can be undone.
async fn safety_backup_of(state: &AppState, name: &str) -> Result<String, Failure> {
    let conn = state.conn.with_database(name);
    let pool = crate::db::connect(&conn, state.settings.backup.jobs + 1)
        .await
        .map_err(|e| Failure::failed(&e))?;
    // The engines read the catalog and snapshot through the state's pool and connection: point
    // both at the target; the record stays in the worker's database.
    let mut target = state.clone();
    target.conn = conn;
    target.pool = pool.clone();
    let spec = BackupSpec {
        uuid: uuid::Uuid::new_v4().to_string(),
        backup_type: BackupType::Full,
        scope: BackupScope::All,
        tenant_id: None,
        tables: Vec::new(),
    };
    let new = NewBackup {
        uuid: spec.uuid.clone(),
        tenant_id: None,
        name: format!("safety backup of database {name} before a restore replaced it"),
        backup_type: spec.backup_type.as_str().to_owned(),
        backup_scope: spec.scope.as_str().to_owned(),
        backup_tables: None,
    };
    let failed = |e: &dyn std::error::Error| {
        Failure::Failed(format!(
            "safety backup of database {name} failed, nothing was restored: {}",
            super::one_line(e)
        ))
    };
    rows::insert(&state.pool, &new)
        .await
        .map_err(|e| failed(&e))?;
    let run_id = format!("cli-{}", std::process::id());
    let claimed = rows::claim(
        &state.pool,
        &spec.uuid,
        &run_id,
        std::time::Duration::from_secs(600),
    )
    .await
    .map_err(|e| failed(&e))?;
    if claimed != ClaimOutcome::Claimed {
        return Err(Failure::Failed(format!(
            "safety backup {} could not start: {claimed:?}",
            spec.uuid
        )));
    }
    let result = async {
        let outcome = backup::run(&target, &spec).await?;
        backup::verify(&target, &spec.uuid, Some(&outcome.manifest_sha256)).await?;
        Ok::<_, backup::BackupError>(outcome)
    }
    .await;
    pool.close().await;
    match result {
        Ok(outcome) => {
            rows::mark_success(&state.pool, &spec.uuid, &outcome)
                .await
                .map_err(|e| failed(&e))?;
            Ok(spec.uuid)
        }
        Err(e) => {
            let _ = backup::discard(state, &spec.uuid).await;
            let _ = rows::mark_failed(&state.pool, &spec.uuid, &e.to_string()).await;
            Err(failed(&e))
        }
    }
}
