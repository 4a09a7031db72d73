//! The restore use case, in phases that the `backup-restore` Inngest function runs as steps and
//! the CLI runs in a row:
//!
//! 1. [`prepare`]: the backup must exist and have succeeded, belong to the requester's tenant,
//!    and fit the target; the restore is recorded in `root_data_restores`.
//! 2. [`check`]: verify the artifact (sha256 of every file, full decode, row hashes) and its
//!    compatibility with the target (server version, tables, columns, types). Nothing has been
//!    touched yet; a failure here changes nothing.
//! 3. [`safety_backup`]: before replacing anything live, back up what is about to be replaced
//!    (same scope), recorded like any backup, so a mistaken restore can be undone.
//! 4. [`apply`]: the restore itself — a tenant's rows in one transaction
//!    ([`crate::tenant::restore`]), tables in one transaction, or a whole database into an empty
//!    one ([`crate::restore`]) — each verified against the manifest before it counts.
//! 5. [`finish`] / [`fail`]: the restore row says what happened.
//!
//! Every phase reads what it needs from the database and storage, so phases may run on
//! different replicas, and each is safe to repeat.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

use crate::artifact::Manifest;
use crate::backup::{self, BackupOutcome, BackupScope, BackupSpec, BackupType};
use crate::catalog::{Catalog, TableRef};
use crate::db::backups::{self as backup_rows, ClaimOutcome, NewBackup};
use crate::db::restores::{self as restore_rows, NewRestore};
use crate::pg::ConnInfo;
use crate::restore::{self as engine, RestoreMode};
use crate::startup::AppState;

/// Namespace for the uuid of a restore's safety backup (derived from the restore's uuid, so a
/// retried phase finds the same backup instead of taking another).
const SAFETY_NAMESPACE: Uuid = Uuid::from_u128(0x7b3c_1e0f_9d24_4a61_b8e5_2f70_c4d9_13a6);

/// What someone asked to restore.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub restore_uuid: Uuid,
    pub backup_uuid: String,
    /// The requester's tenant (`None`: a platform operator).
    pub tenant_id: Option<i32>,
    pub tables: Option<Vec<String>>,
    pub target_database: Option<String>,
    /// Required to replace the live database's tables with a whole-database backup.
    pub replace: bool,
}

/// Where the rows go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The live database (`DATABASE_URL`).
    Live,
    /// Another database on the same server, created when missing.
    Database(String),
}

/// A prepared restore: everything later phases need, small enough to be a step output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePlan {
    pub restore_uuid: String,
    pub backup_uuid: String,
    /// The row's checksum: the manifest every phase reads must be this one.
    pub backup_checksum: String,
    pub scope: String,
    /// The backup's tenant (tenant and tenant-filtered table backups).
    pub tenant_id: Option<i32>,
    pub target: Target,
    /// Only these tables of the backup (`None`: all of them).
    pub tables: Option<Vec<TableRef>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Retrying cannot help: the request or the backup is wrong.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Restore(#[from] engine::RestoreError),
    #[error(transparent)]
    Tenant(#[from] crate::tenant::restore::RestoreError),
    #[error("safety backup: {0}")]
    Backup(#[from] backup::BackupError),
    #[error("backup verification failed: {0}")]
    Artifact(#[from] crate::artifact::ArtifactError),
    #[error("database error while {context}: {source}")]
    Database {
        context: &'static str,
        source: sqlx::Error,
    },
}

impl RecoveryError {
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Refused(_) => false,
            Self::Restore(e) => e.is_retriable(),
            Self::Tenant(e) => e.is_retriable(),
            Self::Backup(e) => e.is_retriable(),
            Self::Artifact(e) => e.is_retriable(),
            Self::Database { .. } => true,
        }
    }
}

fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> RecoveryError {
    move |source| RecoveryError::Database { context, source }
}

fn refused(message: impl Into<String>) -> RecoveryError {
    RecoveryError::Refused(message.into())
}

/// Phase 1: validate the request against the backup row and record the restore.
///
/// # Errors
/// [`RecoveryError::Refused`] for requests that can never succeed.
pub async fn prepare(state: &AppState, req: &RestoreRequest) -> Result<RestorePlan, RecoveryError> {
    let row = backup_rows::get(&state.pool, &req.backup_uuid)
        .await
        .map_err(db("loading the backup"))?
        .filter(|r| r.deleted_at.is_none())
        .ok_or_else(|| refused(format!("backup {} does not exist", req.backup_uuid)))?;
    if let Some(tenant) = req.tenant_id {
        if row.tenant_id != Some(tenant) {
            return Err(refused(format!(
                "backup {} does not belong to tenant {tenant}",
                row.uuid
            )));
        }
    }
    if row.status != "success" {
        return Err(refused(format!(
            "backup {} is {}; only successful backups can be restored",
            row.uuid, row.status
        )));
    }
    let checksum = row
        .checksum
        .clone()
        .ok_or_else(|| refused(format!("backup {} has no checksum", row.uuid)))?;
    let target = match &req.target_database {
        Some(name) => {
            engine::validate_database_name(name)?;
            if *name == state.conn.database {
                Target::Live
            } else {
                Target::Database(name.clone())
            }
        }
        None => Target::Live,
    };
    if row.backup_scope == "all" && target == Target::Live && !req.replace {
        return Err(refused(
            "restoring a whole-database backup into the live database replaces every table; \
             pass replace (CLI --replace) or restore into a target_database",
        ));
    }
    let tables = match &req.tables {
        None => None,
        Some(names) => Some(resolve_in_manifest(row.manifest.as_ref(), names)?),
    };
    restore_rows::insert(
        &state.pool,
        &NewRestore {
            uuid: req.restore_uuid,
            tenant_id: row.tenant_id,
            backup_uuid: Uuid::parse_str(&row.uuid)
                .map_err(|_| refused(format!("backup uuid {:?} is invalid", row.uuid)))?,
            scope: row.backup_scope.clone(),
            target_database: match &target {
                Target::Live => None,
                Target::Database(name) => Some(name.clone()),
            },
            tables: tables
                .as_ref()
                .map(|t| t.iter().map(ToString::to_string).collect()),
        },
    )
    .await
    .map_err(db("recording the restore"))?;
    Ok(RestorePlan {
        restore_uuid: req.restore_uuid.to_string(),
        backup_uuid: row.uuid,
        backup_checksum: checksum,
        scope: row.backup_scope,
        tenant_id: row.tenant_id,
        target,
        tables,
    })
}

/// Table names from a request, matched against the backup's own tables (never the catalog of
/// some other database): `table` or `schema.table`.
fn resolve_in_manifest(
    manifest: Option<&Value>,
    names: &[String],
) -> Result<Vec<TableRef>, RecoveryError> {
    let manifest: Manifest = manifest
        .cloned()
        .and_then(|m| serde_json::from_value(m).ok())
        .ok_or_else(|| refused("the backup row carries no manifest"))?;
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        let found = manifest
            .tables
            .iter()
            .map(|t| t.table_ref())
            .find(|t| *name == t.to_string() || (!name.contains('.') && *name == t.name));
        match found {
            Some(t) if !out.contains(&t) => out.push(t),
            Some(_) => {}
            None => unknown.push(name.clone()),
        }
    }
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(refused(format!(
            "not in this backup: {}",
            unknown.join(", ")
        )))
    }
}

/// Phase 2: the artifact is intact and fits the target. Changes nothing.
///
/// # Errors
/// A damaged artifact or an incompatible target: [`RecoveryError::Refused`].
pub async fn check(state: &AppState, plan: &RestorePlan) -> Result<(), RecoveryError> {
    crate::backup::verify(state, &plan.backup_uuid, Some(&plan.backup_checksum))
        .await
        .map_err(|e| {
            if e.is_retriable() {
                RecoveryError::Artifact(e)
            } else {
                refused(format!("backup verification failed: {e}"))
            }
        })?;
    let manifest = manifest(state, plan).await?;
    let target = target_conn(state, plan);
    let Some((catalog, version)) = existing_catalog(state, &target).await? else {
        return Ok(()); // a new database: the backup's own schema is restored first
    };
    if plan.scope == "all" && plan.target != Target::Live && catalog.tables().next().is_none() {
        return Ok(()); // an empty database gets the backup's schema
    }
    let entries: Vec<_> = manifest
        .tables
        .iter()
        .filter(|e| {
            plan.tables
                .as_ref()
                .is_none_or(|t| t.contains(&e.table_ref()))
        })
        .collect();
    let problems = engine::compat::check(&catalog, version, &manifest, &entries);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(refused(format!(
            "the target is not compatible with backup {}: {}",
            plan.backup_uuid,
            problems.join("; ")
        )))
    }
}

/// Phase 3: a backup of what the restore will replace in the live database (same scope, same
/// tenant, same tables). Restores into another database replace nothing of value to RiverEdge
/// and take none. Returns the safety backup's uuid.
///
/// # Errors
/// The safety backup fails; then nothing has been replaced.
pub async fn safety_backup(
    state: &AppState,
    plan: &RestorePlan,
    run_id: &str,
) -> Result<Option<String>, RecoveryError> {
    if plan.target != Target::Live {
        return Ok(None);
    }
    let uuid = Uuid::new_v5(&SAFETY_NAMESPACE, plan.restore_uuid.as_bytes()).to_string();
    let (scope, tables) = match plan.scope.as_str() {
        "tenant" if plan.tables.is_none() => (BackupScope::Tenant, Vec::new()),
        "all" if plan.tables.is_none() => (BackupScope::All, Vec::new()),
        _ => {
            let manifest = manifest(state, plan).await?;
            let tables = plan
                .tables
                .clone()
                .unwrap_or_else(|| manifest.tables.iter().map(|t| t.table_ref()).collect());
            (
                BackupScope::Table,
                tables.iter().map(ToString::to_string).collect(),
            )
        }
    };
    let spec = BackupSpec {
        uuid: uuid.clone(),
        backup_type: BackupType::Full,
        scope,
        tenant_id: plan.tenant_id,
        tables,
    };
    backup_rows::insert(
        &state.pool,
        &NewBackup {
            uuid: uuid.clone(),
            tenant_id: plan.tenant_id,
            name: format!("safety backup before restore {}", plan.restore_uuid),
            backup_type: spec.backup_type.as_str().to_owned(),
            backup_scope: spec.scope.as_str().to_owned(),
            backup_tables: (!spec.tables.is_empty()).then(|| spec.tables.clone()),
        },
    )
    .await
    .map_err(db("recording the safety backup"))?;
    let restore_uuid =
        Uuid::parse_str(&plan.restore_uuid).map_err(|_| refused("invalid restore uuid"))?;
    // A pool owned by this future: `claim` is generic over its executor, and a borrow of the
    // caller's state there trips rustc's "Send is not general enough" (rust-lang/rust#102211).
    let pool = state.pool.clone();
    let claimed = backup_rows::claim(&pool, &uuid, run_id, state.settings.backup.step_timeout * 2)
        .await
        .map_err(db("starting the safety backup"))?;
    match claimed {
        ClaimOutcome::AlreadySucceeded => {}
        ClaimOutcome::Claimed => {
            take_backup(state, &spec).await?;
        }
        ClaimOutcome::RunningElsewhere { .. } | ClaimOutcome::NotFound => {
            return Err(RecoveryError::Database {
                context: "starting the safety backup",
                source: sqlx::Error::Protocol("the safety backup is running in another run".into()),
            });
        }
    }
    restore_rows::set_safety_backup(
        &state.pool,
        restore_uuid,
        Uuid::parse_str(&uuid).map_err(|_| refused("invalid uuid"))?,
    )
    .await
    .map_err(db("recording the safety backup"))?;
    Ok(Some(uuid))
}

/// Dump, verify and record one backup, marking its row failed (artifact removed) on error.
///
/// # Errors
/// The backup's error.
pub async fn take_backup(
    state: &AppState,
    spec: &BackupSpec,
) -> Result<BackupOutcome, RecoveryError> {
    let result = dump_verify_record(state, spec).await;
    if let Err(e) = &result {
        let _ = backup::discard(state, &spec.uuid).await;
        let _ = backup_rows::mark_failed(&state.pool, &spec.uuid, &e.to_string()).await;
    }
    result
}

async fn dump_verify_record(
    state: &AppState,
    spec: &BackupSpec,
) -> Result<BackupOutcome, RecoveryError> {
    backup::validate(state, spec).await?;
    let outcome = backup::run(state, spec).await?;
    crate::backup::verify(state, &spec.uuid, Some(&outcome.manifest_sha256)).await?;
    backup_rows::mark_success(&state.pool, &spec.uuid, &outcome)
        .await
        .map_err(db("recording the backup"))?;
    Ok(outcome)
}

/// Phase 4: the restore. Returns rows per table (`{"schema.table": rows}`).
///
/// # Errors
/// Any failure; the target is left as it was (tenant and table restores are one transaction;
/// a failed whole-database restore into a new database leaves only that database).
pub async fn apply(state: &AppState, plan: &RestorePlan) -> Result<Value, RecoveryError> {
    let manifest = manifest(state, plan).await?;
    let target = target_conn(state, plan);
    let is_tenant = manifest.tenant_id.is_some();
    if is_tenant {
        return apply_tenant(state, plan, &manifest, &target).await;
    }
    let mode = match &plan.target {
        Target::Live => RestoreMode::ReplaceTables,
        Target::Database(name) => {
            let mut admin = sqlx::PgConnection::connect_with(&state.conn.connect_options())
                .await
                .map_err(db("connecting"))?;
            let created = engine::ensure_database(&mut admin, name).await?;
            let empty = created
                || existing_catalog(state, &target)
                    .await?
                    .is_none_or(|(c, _)| c.tables().next().is_none());
            if empty {
                RestoreMode::Fresh
            } else {
                RestoreMode::ReplaceTables
            }
        }
    };
    let report =
        engine::restore_into_database(state, &manifest, &target, plan.tables.clone(), mode).await?;
    Ok(Value::Object(
        report
            .tables
            .iter()
            .map(|c| (c.table.to_string(), json!(c.rows)))
            .collect(),
    ))
}

async fn apply_tenant(
    state: &AppState,
    plan: &RestorePlan,
    manifest: &Manifest,
    target: &ConnInfo,
) -> Result<Value, RecoveryError> {
    let tenant_id = manifest
        .tenant_id
        .ok_or_else(|| refused("not a tenant backup"))?;
    if plan.tables.is_some() {
        return Err(refused(
            "a tenant restore replaces all of the tenant's backed-up rows; tables cannot be chosen",
        ));
    }
    if let Target::Database(name) = &plan.target {
        let mut admin = sqlx::PgConnection::connect_with(&state.conn.connect_options())
            .await
            .map_err(db("connecting"))?;
        if engine::ensure_database(&mut admin, name).await? {
            return Err(refused(format!(
                "database {name} did not exist; a tenant backup restores into a database that has the schema (restore a whole-database backup there first)"
            )));
        }
    }
    let _slot = tokio::time::timeout(backup::SLOT_WAIT, state.limiter.clone().acquire_owned())
        .await
        .map_err(|_| engine::RestoreError::Busy(state.settings.backup.max_concurrent))?
        .map_err(|_| engine::RestoreError::Cancelled)?;
    let pool = crate::db::connect(target, 1)
        .await
        .map_err(db("connecting to the target"))?;
    let catalog = Catalog::load(&pool)
        .await
        .map_err(db("reading the target's catalog"))?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(db("connecting to the target"))?;
    let mut opts = crate::tenant::restore::RestoreOptions::new(tenant_id);
    opts.tenants_table = state.settings.backup.tenants_table.clone();
    opts.skip = crate::db::OWN_TABLES
        .iter()
        .map(|t| TableRef::new("public", t))
        .collect();
    opts.statement_timeout = state.settings.backup.step_timeout;
    let work = crate::tenant::restore::restore(
        &mut conn,
        &catalog,
        state.storage.as_ref(),
        manifest,
        &opts,
    );
    let report = tokio::select! {
        r = work => r?,
        () = state.shutdown.cancelled() => return Err(engine::RestoreError::Cancelled.into()),
    };
    Ok(Value::Object(
        report
            .tables
            .iter()
            .map(|t| (t.table.to_string(), json!(t.inserted)))
            .collect(),
    ))
}

/// Phase 5: success.
///
/// # Errors
/// Database errors.
pub async fn finish(
    state: &AppState,
    plan: &RestorePlan,
    rows: &Value,
) -> Result<(), RecoveryError> {
    let uuid = Uuid::parse_str(&plan.restore_uuid).map_err(|_| refused("invalid restore uuid"))?;
    restore_rows::mark_success(&state.pool, uuid, rows)
        .await
        .map_err(db("recording the restore"))
}

/// Phase 5: failure, with the useful part of the error.
///
/// # Errors
/// Database errors.
pub async fn fail(
    state: &AppState,
    restore_uuid: Uuid,
    message: &str,
) -> Result<(), RecoveryError> {
    restore_rows::mark_failed(&state.pool, restore_uuid, message)
        .await
        .map_err(db("recording the failure"))
}

/// The backup's manifest, checked against the row's checksum.
async fn manifest(state: &AppState, plan: &RestorePlan) -> Result<Manifest, RecoveryError> {
    let (manifest, _) = crate::artifact::read_manifest(
        state.storage.as_ref(),
        &plan.backup_uuid,
        Some(&plan.backup_checksum),
    )
    .await?;
    Ok(manifest)
}

fn target_conn(state: &AppState, plan: &RestorePlan) -> ConnInfo {
    match &plan.target {
        Target::Live => state.conn.clone(),
        Target::Database(name) => state.conn.with_database(name),
    }
}

/// The catalog and server version of `target`, or `None` when the database does not exist.
async fn existing_catalog(
    state: &AppState,
    target: &ConnInfo,
) -> Result<Option<(Catalog, i32)>, RecoveryError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&target.database)
            .fetch_one(&state.pool)
            .await
            .map_err(db("looking up the target database"))?;
    if !exists {
        return Ok(None);
    }
    let pool = crate::db::connect(target, 1)
        .await
        .map_err(db("connecting to the target"))?;
    let catalog = Catalog::load(&pool)
        .await
        .map_err(db("reading the target's catalog"))?;
    let version: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&pool)
        .await
        .map_err(db("reading the server version"))?;
    let skip: Vec<TableRef> = crate::db::OWN_TABLES
        .iter()
        .map(|t| TableRef::new("public", t))
        .collect();
    let catalog = catalog.without(&skip);
    Ok(Some((catalog, version.parse().unwrap_or(0))))
}
