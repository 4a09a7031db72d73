//! Operator commands: the same code paths as the Inngest jobs, run once from the shell.
//!
//! `backup` records a row exactly like a job (pending → running → success/failed), so CLI
//! backups show up in the app and can be restored from it.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupOutcome, BackupScope, BackupSpec, BackupType};
use crate::cli::{BackupArgs, Command, ListArgs, RestoreArgs, ScopeArg, TypeArg};
use crate::db::backups::{self as rows, BackupFilter};
use crate::restore;
use crate::settings::Settings;
use crate::startup::{AppState, Database};
use crate::usecases::restore::{self as recovery, Prepared, RestoreRequest};

/// Runs an operator command against the configured database.
///
/// # Errors
/// The command failed; the message says why (never with a password).
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let db = Database::open(&settings).await?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(settings, &db, shutdown.clone())?;
    // Ctrl-C stops a dump cleanly (partial files removed, row marked failed).
    let stopper = tokio::spawn(async move {
        crate::startup::shutdown_signal().await;
        shutdown.cancel();
    });
    let result = match command {
        Command::Backup(args) => backup_command(&state, args).await.map(|_| ()),
        Command::List(args) => list(&state, &args).await,
        Command::Verify { uuid } => verify(&state, &uuid).await,
        Command::Restore(args) => restore_command(&state, args).await,
        Command::Drill { uuid } => drill(&state, &uuid).await,
        other @ (Command::Serve | Command::Migrate | Command::Config) => {
            Err(anyhow::anyhow!("{other:?} is not an operator command"))
        }
    };
    stopper.abort();
    result
}

fn spec_from(args: &BackupArgs) -> BackupSpec {
    BackupSpec {
        uuid: uuid::Uuid::new_v4().to_string(),
        backup_type: match args.backup_type {
            TypeArg::Full => BackupType::Full,
            TypeArg::Incremental => BackupType::Incremental,
        },
        scope: match args.scope {
            ScopeArg::All => BackupScope::All,
            ScopeArg::Table => BackupScope::Table,
            ScopeArg::Tenant => BackupScope::Tenant,
        },
        tenant_id: args.tenant,
        tables: args.tables.clone(),
    }
}

/// `backup`: validate → record → claim → dump → verify → mark success (or failed).
///
/// # Errors
/// Invalid input, or the backup failed (the row then says why).
pub async fn backup_command(state: &AppState, args: BackupArgs) -> anyhow::Result<BackupOutcome> {
    let spec = spec_from(&args);
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "manual-{}-{}",
            spec.scope.as_str(),
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        )
    });
    take_backup(state, &spec, &name).await
}

/// Takes and records one backup (also used for the safety backup before a live restore).
///
/// # Errors
/// See [`backup_command`].
pub async fn take_backup(
    state: &AppState,
    spec: &BackupSpec,
    name: &str,
) -> anyhow::Result<BackupOutcome> {
    let run_id = format!("cli-{}", uuid::Uuid::new_v4());
    println!("backup {} started ({})", spec.uuid, name);
    let row = crate::usecases::backup::take(state, spec, name, &run_id)
        .await
        .with_context(|| format!("backup {} failed", spec.uuid))?;
    let outcome = BackupOutcome {
        manifest: serde_json::from_value(row.manifest.clone().unwrap_or_default())
            .context("reading the recorded manifest")?,
        manifest_sha256: row.checksum.clone().unwrap_or_default(),
        total_size: u64::try_from(row.file_size.unwrap_or(0)).unwrap_or(0),
        file_path: row.file_path.clone().unwrap_or_default(),
        rows: u64::try_from(row.rows_written).unwrap_or(0),
    };
    println!(
        "backup {} succeeded: {} tables, {} rows, {} bytes, manifest sha256 {}",
        spec.uuid,
        outcome.manifest.tables.len(),
        outcome.rows,
        outcome.total_size,
        outcome.manifest_sha256
    );
    Ok(outcome)
}

async fn list(state: &AppState, args: &ListArgs) -> anyhow::Result<()> {
    let filter = BackupFilter {
        tenant_id: args.tenant,
        limit: args.limit,
        ..BackupFilter::default()
    };
    let found = rows::list(&state.pool, &filter).await?;
    println!(
        "{:<36}  {:<8}  {:<6}  {:<6}  {:>12}  {:<20}  NAME",
        "UUID", "STATUS", "SCOPE", "TENANT", "BYTES", "CREATED"
    );
    for row in found {
        println!(
            "{:<36}  {:<8}  {:<6}  {:<6}  {:>12}  {:<20}  {}",
            row.uuid,
            row.status,
            row.backup_scope,
            row.tenant_id
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            row.file_size.unwrap_or(row.bytes_written),
            row.created_at.format("%Y-%m-%d %H:%M:%S"),
            row.name
        );
    }
    Ok(())
}

async fn verify(state: &AppState, uuid: &str) -> anyhow::Result<()> {
    let row = rows::get(&state.pool, uuid)
        .await?
        .with_context(|| format!("backup {uuid} does not exist"))?;
    let report = crate::backup::verify(state, uuid, row.checksum.as_deref())
        .await
        .with_context(|| format!("backup {uuid} does not verify"))?;
    rows::mark_verified(&state.pool, uuid).await?;
    println!(
        "backup {uuid} verified: {} files, {} bytes, {} rows",
        report.files, report.bytes, report.rows
    );
    Ok(())
}

/// The same phases as the `backup-restore` Inngest function, run in a row by an operator
/// (no tenant restriction: the CLI runs with the worker's own database rights).
async fn restore_command(state: &AppState, args: RestoreArgs) -> anyhow::Result<()> {
    let request = RestoreRequest {
        restore_uuid: uuid::Uuid::new_v4(),
        backup_uuid: args.uuid.clone(),
        tenant_id: None,
        tables: (!args.tables.is_empty()).then(|| args.tables.clone()),
        target_database: args.target_database.clone(),
        replace: args.replace,
    };
    let run_id = format!("cli-{}", request.restore_uuid);
    let plan = match recovery::prepare(state, &request).await? {
        Prepared::Run(plan) => plan,
        Prepared::AlreadyDone(saved) => {
            anyhow::bail!("restore {} was applied already", saved.restore_uuid)
        }
    };
    let result = async {
        match recovery::claim(state, &plan, &run_id).await? {
            crate::db::restores::RestoreClaim::Mine => {}
            other => {
                return Err(recovery::RestoreRequestError::Refused(format!(
                    "restore {} cannot start: {other:?}",
                    plan.restore_uuid
                )))
            }
        }
        recovery::check(state, &plan).await?;
        if let Some(safety) = recovery::safety_backup(state, &plan, &run_id).await? {
            println!("safety backup {safety} holds what is about to be replaced");
        }
        let rows = recovery::apply(state, &plan, &run_id).await?;
        recovery::finish(state, &plan, &run_id, &rows).await?;
        Ok::<_, recovery::RestoreRequestError>(rows)
    }
    .await;
    match result {
        Ok(rows) => {
            let total: u64 = rows.as_object().map_or(0, |m| {
                m.values().filter_map(serde_json::Value::as_u64).sum()
            });
            println!(
                "restore {} of backup {} succeeded: {} tables, {total} rows, verified against the manifest",
                plan.restore_uuid,
                args.uuid,
                rows.as_object().map_or(0, serde_json::Map::len)
            );
            Ok(())
        }
        Err(e) => {
            recovery::fail(state, request.restore_uuid, &run_id, &e.to_string()).await?;
            Err(anyhow::Error::new(e).context(format!("restore of backup {} failed", args.uuid)))
        }
    }
}

async fn drill(state: &AppState, uuid: &str) -> anyhow::Result<()> {
    let report = restore::drill(state, uuid).await?;
    for t in &report.tables {
        println!(
            "{:<60} {:>10} rows  {}  ok",
            t.table.to_string(),
            t.rows,
            t.content_hash
        );
    }
    println!(
        "drill of {uuid} passed in {:.1}s: {} tables, {} rows (scratch database {} dropped)",
        report.elapsed.as_secs_f64(),
        report.tables.len(),
        report.rows,
        report.database
    );
    Ok(())
}
