//! Operator commands: the same code paths as the Inngest jobs, run once from the shell.
//!
//! `backup` records a row exactly like a job (pending → running → success/failed), so CLI
//! backups show up in the app and can be restored from it.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::artifact;
use crate::backup::{self, BackupOutcome, BackupScope, BackupSpec, BackupType};
use crate::catalog::TableRef;
use crate::cli::{BackupArgs, Command, ListArgs, RestoreArgs, ScopeArg, TypeArg};
use crate::db::backups::{self as rows, BackupFilter, ClaimOutcome, NewBackup};
use crate::restore::{self, RestoreMode};
use crate::settings::Settings;
use crate::startup::{AppState, Database};

/// How long a `running` row may go without progress before the CLI may take it over.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

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
    backup::validate(state, spec).await?;
    let new = NewBackup {
        uuid: spec.uuid.clone(),
        tenant_id: spec.tenant_id,
        name: name.to_owned(),
        backup_type: spec.backup_type.as_str().to_owned(),
        backup_scope: spec.scope.as_str().to_owned(),
        backup_tables: (!spec.tables.is_empty()).then(|| spec.tables.clone()),
    };
    rows::insert(&state.pool, &new)
        .await
        .context("recording the backup")?;
    let run_id = format!("cli-{}", std::process::id());
    match rows::claim(&state.pool, &spec.uuid, &run_id, STALE_AFTER).await? {
        ClaimOutcome::Claimed => {}
        other => anyhow::bail!("backup {} cannot be started: {other:?}", spec.uuid),
    }
    println!("backup {} started ({})", spec.uuid, name);
    match dump_and_verify(state, spec).await {
        Ok(outcome) => {
            rows::mark_success(&state.pool, &spec.uuid, &outcome).await?;
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
        Err(e) => {
            rows::mark_failed(&state.pool, &spec.uuid, &e.to_string()).await?;
            Err(anyhow::Error::new(e).context(format!("backup {} failed", spec.uuid)))
        }
    }
}

async fn dump_and_verify(
    state: &AppState,
    spec: &BackupSpec,
) -> Result<BackupOutcome, backup::BackupError> {
    let outcome = backup::run(state, spec).await?;
    let verified = artifact::verify(
        state.storage.as_ref(),
        &state.bins,
        &spec.uuid,
        Some(&outcome.manifest_sha256),
        state.settings.backup.step_timeout,
    )
    .await;
    if let Err(e) = verified {
        backup::discard(state, &spec.uuid).await?;
        return Err(e.into());
    }
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
    let report = artifact::verify(
        state.storage.as_ref(),
        &state.bins,
        uuid,
        row.checksum.as_deref(),
        state.settings.backup.step_timeout,
    )
    .await
    .with_context(|| format!("backup {uuid} does not verify"))?;
    rows::mark_verified(&state.pool, uuid).await?;
    println!(
        "backup {uuid} verified: {} files, {} bytes, {} rows",
        report.files, report.bytes, report.rows
    );
    Ok(())
}

/// Matches `table` / `schema.table` against the backup's tables.
fn resolve_in_backup(
    manifest: &artifact::Manifest,
    names: &[String],
) -> anyhow::Result<Option<Vec<TableRef>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for name in names {
        let found: Vec<TableRef> = manifest
            .tables
            .iter()
            .map(artifact::TableEntry::table_ref)
            .filter(|t| t.to_string() == *name || t.name == *name)
            .collect();
        match found.as_slice() {
            [one] => out.push(one.clone()),
            [] => anyhow::bail!("table {name} is not in backup {}", manifest.backup_uuid),
            _ => anyhow::bail!(
                "table name {name} is ambiguous in backup {}; write schema.table",
                manifest.backup_uuid
            ),
        }
    }
    Ok(Some(out))
}

async fn restore_command(state: &AppState, args: RestoreArgs) -> anyhow::Result<()> {
    let manifest = restore::manifest_of(state, &args.uuid).await?;
    if manifest.scope == "tenant" {
        anyhow::bail!("backup {} is a tenant backup (tenant {:?}); tenant restores are handled by the tenant restore, not by this command", args.uuid, manifest.tenant_id);
    }
    let tables = resolve_in_backup(&manifest, &args.tables)?;
    let (target, mode) = match &args.target_database {
        Some(name) => {
            let mut admin = sqlx::Connection::connect_with(&state.conn.connect_options()).await.context("connecting")?;
            restore::ensure_database(&mut admin, name).await?;
            (state.conn.with_database(name), if args.replace { RestoreMode::ReplaceTables } else { RestoreMode::Fresh })
        }
        None if args.replace => {
            let names: Vec<String> = tables.clone().unwrap_or_else(|| manifest.tables.iter().map(artifact::TableEntry::table_ref).collect()).iter().map(ToString::to_string).collect();
            let safety = BackupSpec { uuid: uuid::Uuid::new_v4().to_string(), backup_type: BackupType::Full, scope: BackupScope::Table, tenant_id: None, tables: names };
            take_backup(state, &safety, &format!("safety-before-restore-{}", args.uuid)).await.context("taking the safety backup")?;
            println!("safety backup {} holds the rows being replaced", safety.uuid);
            (state.conn.clone(), RestoreMode::ReplaceTables)
        }
        None => anyhow::bail!("restoring into the live database replaces its tables: pass --replace, or --target-database <name> to restore elsewhere"),
    };
    let report = restore::restore_into_database(state, &manifest, &target, tables, mode).await?;
    println!(
        "restored backup {} into {}: {} tables, {} rows, all matching the manifest",
        args.uuid,
        report.database,
        report.tables.len(),
        report.rows
    );
    Ok(())
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
