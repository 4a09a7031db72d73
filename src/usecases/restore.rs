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
//! different replicas, and each is safe to repeat. A request is applied at most once: tenant and
//! table restores into the live database mark their `root_data_restores` row applied inside the
//! transaction that changes the data, and a whole-database restore is built under a temporary
//! name and renamed into place in the transaction that marks it applied. A repeat (retried
//! step, crash after the commit, dashboard rerun) reports the saved result.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

use crate::artifact::Manifest;
use crate::backup::{self, BackupScope, BackupSpec, BackupType};
use crate::catalog::{Catalog, TableRef};
use crate::db::backups as backup_rows;
use crate::db::restores::{self as restore_rows, NewRestore, RestoreClaim, RestoreRow};
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
    /// Preview only (tenant restores): the restore runs and is rolled back; its counts are
    /// recorded in the row's `preview` (docs/tenant-restore.md).
    pub dry_run: bool,
    /// Restore only this tenant's rows from a whole-database backup (platform operators),
    /// selected with the same ownership plan a tenant backup uses.
    pub only_tenant: Option<i32>,
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
    /// Replace a non-empty target (the live database's tables, or another whole database).
    #[serde(default)]
    pub replace: bool,
    /// Preview only: no safety backup, nothing changed, the preview recorded.
    #[serde(default)]
    pub dry_run: bool,
}

impl RestorePlan {
    fn uuid(&self) -> Result<Uuid, RestoreRequestError> {
        Uuid::parse_str(&self.restore_uuid).map_err(|_| refused("invalid restore uuid"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreRequestError {
    /// Retrying cannot help: the request or the backup is wrong.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Restore(#[from] engine::RestoreError),
    #[error(transparent)]
    Tenant(#[from] crate::tenant::restore::TenantRestoreError),
    #[error("safety backup: {0}")]
    Backup(#[from] backup::BackupError),
    /// Another live run is applying this request; wait for it.
    #[error("restore {uuid} is being run by {owner}")]
    Busy { uuid: String, owner: String },
    #[error("backup verification failed: {0}")]
    Artifact(#[from] crate::artifact::ArtifactError),
    #[error("database error while {context}: {source}")]
    Database {
        context: &'static str,
        source: sqlx::Error,
    },
}

impl RestoreRequestError {
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Refused(_) => false,
            Self::Restore(e) => e.is_retriable(),
            Self::Tenant(e) => e.is_retriable(),
            Self::Backup(e) => e.is_retriable(),
            Self::Artifact(e) => e.is_retriable(),
            Self::Database { source, .. } => crate::retry::is_transient_sql(source),
            Self::Busy { .. } => true,
        }
    }
}

fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> RestoreRequestError {
    move |source| RestoreRequestError::Database { context, source }
}

fn refused(message: impl Into<String>) -> RestoreRequestError {
    RestoreRequestError::Refused(message.into())
}

/// What phase 1 found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Prepared {
    /// This request was applied already (a duplicate or a rerun): its saved result.
    AlreadyDone(Saved),
    Run(RestorePlan),
}

/// The saved result of an applied restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub restore_uuid: String,
    pub backup_uuid: String,
    pub status: String,
    pub rows_per_table: Value,
    pub safety_backup_uuid: Option<String>,
    pub replaced_database: Option<String>,
}

impl From<&RestoreRow> for Saved {
    fn from(row: &RestoreRow) -> Self {
        Self {
            restore_uuid: row.uuid.clone(),
            backup_uuid: row.backup_uuid.clone(),
            status: row.status.clone(),
            rows_per_table: row.rows_per_table.clone().unwrap_or(Value::Null),
            safety_backup_uuid: row.safety_backup_uuid.clone(),
            replaced_database: row.replaced_database.clone(),
        }
    }
}

/// Databases a restore never writes into, whatever the request says.
const RESERVED_DATABASES: &[&str] = &["template0", "template1", "postgres"];

/// Phase 1: validate the request against the backup row and the target, and record the
/// restore. A refused request creates nothing (no database, no row, no safety backup).
///
/// # Errors
/// [`RestoreRequestError::Refused`] for requests that can never succeed.
pub async fn prepare(
    state: &AppState,
    req: &RestoreRequest,
) -> Result<Prepared, RestoreRequestError> {
    if let Some(row) = restore_rows::get(&state.pool, req.restore_uuid)
        .await
        .map_err(db("loading the restore"))?
    {
        if row.applied_at.is_some() || row.status == "success" {
            return Ok(Prepared::AlreadyDone(Saved::from(&row)));
        }
    }
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
        Some(name) => Target::Database(name.clone()),
        None => Target::Live,
    };
    let tenant = match (row.tenant_id, req.only_tenant) {
        (Some(t), None) => Some(t),
        (None, Some(t)) if row.backup_scope == "all" && req.tenant_id.is_none() => Some(t),
        (None, None) => None,
        _ => {
            return Err(refused(format!(
                "one tenant is restored only from a whole-database backup, by a platform operator; backup {} is a {} backup",
                row.uuid, row.backup_scope
            )))
        }
    };
    if req.dry_run && tenant.is_none() {
        return Err(refused(format!(
            "a dry run previews tenant restores; backup {} is not a tenant's backup",
            row.uuid
        )));
    }
    // One tenant out of a whole-database backup replaces that tenant's rows only.
    let scope = if tenant.is_some() {
        "tenant"
    } else {
        row.backup_scope.as_str()
    };
    check_target(state, &target, scope, req.replace).await?;
    let tables = match &req.tables {
        None => None,
        Some(names) => Some(resolve_in_manifest(row.manifest.as_ref(), names)?),
    };
    restore_rows::insert(
        &state.pool,
        &NewRestore {
            uuid: req.restore_uuid,
            tenant_id: tenant,
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
            dry_run: req.dry_run,
            target_tenant_id: None,
        },
    )
    .await
    .map_err(db("recording the restore"))?;
    Ok(Prepared::Run(RestorePlan {
        restore_uuid: req.restore_uuid.to_string(),
        backup_uuid: row.uuid,
        backup_checksum: checksum,
        scope: row.backup_scope,
        tenant_id: tenant,
        target,
        tables,
        replace: req.replace,
        dry_run: req.dry_run,
    }))
}

/// Where a restore may write: never a template or maintenance database, never the worker's own
/// database by name (the live restore is the request without a target), never over an existing
/// non-empty database without `replace`.
async fn check_target(
    state: &AppState,
    target: &Target,
    scope: &str,
    replace: bool,
) -> Result<(), RestoreRequestError> {
    let name = match target {
        Target::Live => {
            if scope == "all" && !replace {
                return Err(refused(
                    "restoring a whole-database backup into the live database replaces every table; \
                     pass replace (CLI --replace) or restore into a target_database",
                ));
            }
            return Ok(());
        }
        Target::Database(name) => name,
    };
    engine::validate_database_name(name)?;
    if RESERVED_DATABASES.contains(&name.as_str()) {
        return Err(refused(format!(
            "{name} is a system database; restore into a new database"
        )));
    }
    if *name == state.conn.database {
        return Err(refused(format!(
            "{name} is the live database; to restore into it, leave the target database out{}",
            if scope == "all" {
                " and pass replace"
            } else {
                ""
            }
        )));
    }
    let tables = match existing_catalog(state, &state.conn.with_database(name)).await? {
        None => return Ok(()),
        Some((catalog, _)) => catalog.tables().count(),
    };
    match (tables, replace, scope) {
        (0, _, _) => Ok(()),
        (_, true, "all") => Ok(()),
        (_, true, _) => Err(refused(format!(
            "database {name} is not empty; replace into another database is only done for whole-database backups (the old database is kept); restore into a new database"
        ))),
        (n, false, _) => Err(refused(format!(
            "database {name} exists and has {n} tables; pass replace to swap it for the restored one (the old database is kept under another name), or choose a new database"
        ))),
    }
}

/// Phase 1b: this run takes the restore, or learns that it was applied (the saved result) or
/// that another live run is at it.
///
/// # Errors
/// Database errors.
pub async fn claim(
    state: &AppState,
    plan: &RestorePlan,
    run_id: &str,
) -> Result<RestoreClaim, RestoreRequestError> {
    restore_rows::claim(
        &state.pool,
        plan.uuid()?,
        run_id,
        state.settings.backup.step_timeout,
    )
    .await
    .map_err(db("claiming the restore"))
}

/// Table names from a request, matched against the backup's own tables (never the catalog of
/// some other database): `table` or `schema.table`.
fn resolve_in_manifest(
    manifest: Option<&Value>,
    names: &[String],
) -> Result<Vec<TableRef>, RestoreRequestError> {
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
/// A damaged artifact or an incompatible target: [`RestoreRequestError::Refused`].
pub async fn check(state: &AppState, plan: &RestorePlan) -> Result<(), RestoreRequestError> {
    crate::backup::verify(state, &plan.backup_uuid, Some(&plan.backup_checksum))
        .await
        .map_err(|e| {
            if e.is_retriable() {
                RestoreRequestError::Artifact(e)
            } else {
                refused(format!("backup verification failed: {e}"))
            }
        })?;
    let manifest = manifest(state, plan).await?;
    let target = target_conn(state, plan);
    let Some((catalog, version)) = existing_catalog(state, &target).await? else {
        return Ok(()); // a new database: the backup's own schema is restored first
    };
    if plan.target != Target::Live && catalog.tables().next().is_none() {
        return Ok(()); // an empty database gets the backup's schema
    }
    if plan.scope == "all" && plan.target != Target::Live {
        return Ok(()); // built fresh under a temporary name, then swapped in
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
/// (a replaced database is kept under another name) and take none. Returns the safety backup's
/// uuid. Its uuid derives from the restore's, so a retried phase finds the same backup; a new
/// restore request takes a fresh one.
///
/// # Errors
/// The safety backup fails; then nothing has been replaced.
pub async fn safety_backup(
    state: &AppState,
    plan: &RestorePlan,
    run_id: &str,
) -> Result<Option<String>, RestoreRequestError> {
    if plan.target != Target::Live || plan.dry_run {
        return Ok(None);
    }
    let uuid = Uuid::new_v5(&SAFETY_NAMESPACE, plan.restore_uuid.as_bytes());
    let (scope, tables) = match plan.scope.as_str() {
        "tenant" if plan.tables.is_none() => (BackupScope::Tenant, Vec::new()),
        "all" if plan.tables.is_none() && plan.tenant_id.is_some() => {
            (BackupScope::Tenant, Vec::new())
        }
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
        uuid: uuid.to_string(),
        backup_type: BackupType::Full,
        scope,
        tenant_id: plan.tenant_id,
        tables,
    };
    let name = format!("safety backup before restore {}", plan.restore_uuid);
    super::backup::take(state, &spec, &name, run_id).await?;
    restore_rows::set_safety_backup(&state.pool, plan.uuid()?, uuid)
        .await
        .map_err(db("recording the safety backup"))?;
    Ok(Some(uuid.to_string()))
}

/// Phase 4: the restore, applied at most once per request. Returns rows per table
/// (`{"schema.table": rows}`), the saved ones when the request was applied already.
///
/// # Errors
/// Any failure; the target is left as it was (tenant and table restores are one transaction;
/// a whole-database restore is built under a temporary name that is dropped on failure).
pub async fn apply(
    state: &AppState,
    plan: &RestorePlan,
    run_id: &str,
) -> Result<Value, RestoreRequestError> {
    let uuid = plan.uuid()?;
    if let Some(saved) = applied(state, uuid).await? {
        return Ok(saved);
    }
    let work = async {
        let manifest = manifest(state, plan).await?;
        let target = target_conn(state, plan);
        // The record is marked in the applying transaction only where it lives: the live
        // database. Elsewhere `finish` marks it after the commit.
        let record = (plan.target == Target::Live).then_some(uuid);
        let result = if manifest.tenant_id.or(plan.tenant_id).is_some() {
            apply_tenant(state, plan, &manifest, &target, record).await
        } else if plan.target == Target::Live {
            engine::restore_into_database(
                state,
                &manifest,
                &target,
                plan.tables.clone(),
                RestoreMode::ReplaceTables,
                record,
            )
            .await
            .map(|report| engine::rows_per_table(&report.tables))
            .map_err(Into::into)
        } else {
            apply_new_database(state, plan, &manifest).await
        };
        match result {
            Err(
                RestoreRequestError::Restore(engine::RestoreError::AlreadyApplied(_))
                | RestoreRequestError::Tenant(
                    crate::tenant::restore::TenantRestoreError::AlreadyApplied(_),
                ),
            ) => applied(state, uuid)
                .await?
                .ok_or_else(|| refused("the restore was applied but its record is gone")),
            other => other,
        }
    };
    let (pool, run_id) = (state.pool.clone(), run_id.to_owned());
    super::with_heartbeat(work, move || {
        let (pool, run_id) = (pool.clone(), run_id.clone());
        async move { restore_rows::heartbeat(&pool, uuid, &run_id).await }
    })
    .await
}

/// The saved rows of an applied restore.
async fn applied(state: &AppState, uuid: Uuid) -> Result<Option<Value>, RestoreRequestError> {
    Ok(restore_rows::get(&state.pool, uuid)
        .await
        .map_err(db("loading the restore"))?
        .filter(|row| row.applied_at.is_some())
        .map(|row| row.rows_per_table.unwrap_or(Value::Null)))
}

/// A whole database (or some tables of one) into another database: built under a temporary
/// name, verified, then renamed into place in the transaction that marks the restore applied.
/// With `replace`, the existing database is renamed aside in that same transaction and kept.
async fn apply_new_database(
    state: &AppState,
    plan: &RestorePlan,
    manifest: &Manifest,
) -> Result<Value, RestoreRequestError> {
    let Target::Database(name) = &plan.target else {
        return Err(refused("not a restore into another database"));
    };
    let uuid = plan.uuid()?;
    let building = temporary_name("rbk_build", uuid);
    let mut admin = sqlx::PgConnection::connect_with(&state.conn.connect_options())
        .await
        .map_err(db("connecting"))?;
    // A leftover of a killed attempt is never trusted: start from an empty database.
    engine::drop_database(&mut admin, &building).await?;
    engine::ensure_database(&mut admin, &building).await?;
    let built = engine::restore_into_database(
        state,
        manifest,
        &state.conn.with_database(&building),
        plan.tables.clone(),
        RestoreMode::Fresh,
        None,
    )
    .await;
    let rows = match built {
        Ok(report) => engine::rows_per_table(&report.tables),
        Err(e) => {
            if let Err(drop) = engine::drop_database(&mut admin, &building).await {
                tracing::warn!(error = %drop, database = %building, "could not drop a failed restore's database");
            }
            return Err(e.into());
        }
    };
    let kept = plan
        .replace
        .then(|| temporary_name(&format!("{name}_old"), uuid));
    match swap_into_place(&mut admin, uuid, &building, name, kept.as_deref(), &rows).await {
        Ok(rows) => Ok(rows),
        Err(e) => {
            let _ = engine::drop_database(&mut admin, &building).await;
            Err(e)
        }
    }
}

/// Renames `building` to `name` (and an existing `name` to `kept`) and marks the restore
/// applied, all in one transaction; a restore applied meanwhile wins and `building` goes.
/// A session that connects between closing the sessions and the rename makes PostgreSQL refuse
/// it (`object_in_use`); the swap is tried again a few times before that counts.
async fn swap_into_place(
    admin: &mut sqlx::PgConnection,
    uuid: Uuid,
    building: &str,
    name: &str,
    kept: Option<&str>,
    rows: &Value,
) -> Result<Value, RestoreRequestError> {
    const TRIES: u32 = 5;
    let mut tried = 0;
    loop {
        tried += 1;
        match swap_once(admin, uuid, building, name, kept, rows).await {
            Err(RestoreRequestError::Database { source, .. })
                if tried < TRIES
                    && source
                        .as_database_error()
                        .and_then(|e| e.code())
                        .is_some_and(|c| c == "55006") =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(tried))).await;
            }
            other => return other,
        }
    }
}

/// One attempt of [`swap_into_place`].
async fn swap_once(
    admin: &mut sqlx::PgConnection,
    uuid: Uuid,
    building: &str,
    name: &str,
    kept: Option<&str>,
    rows: &Value,
) -> Result<Value, RestoreRequestError> {
    use crate::pg::quote_ident;
    // A rename needs the database to itself: sessions the load left behind, and (replace)
    // the sessions of the database being replaced, which reconnect to the restored one.
    let names: Vec<&str> = std::iter::once(building)
        .chain(kept.map(|_| name))
        .collect();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()")
        .bind(&names)
        .execute(&mut *admin)
        .await
        .map_err(db("closing the databases' sessions"))?;
    let mut tx = admin.begin().await.map_err(db("starting the swap"))?;
    let row = restore_rows::lock_for_apply(&mut tx, uuid)
        .await
        .map_err(db("locking the restore record"))?;
    if row.applied_at.is_some() {
        return Err(engine::RestoreError::AlreadyApplied(uuid).into());
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("looking up the target database"))?;
    let replaced = match (exists, kept) {
        (false, _) => None,
        (true, Some(kept)) => {
            let aside = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(name),
                quote_ident(kept)
            );
            sqlx::query(&aside)
                .execute(&mut *tx)
                .await
                .map_err(db("renaming the replaced database aside"))?;
            Some(kept)
        }
        (true, None) => {
            // Only an empty database may be taken over without replace (checked in prepare).
            let target = format!("DROP DATABASE {}", quote_ident(name));
            return Err(refused(format!(
                "database {name} appeared during the restore; nothing was replaced (drop it with `{target}` or pass replace)"
            )));
        }
    };
    let rename = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(building),
        quote_ident(name)
    );
    sqlx::query(&rename)
        .execute(&mut *tx)
        .await
        .map_err(db("renaming the restored database into place"))?;
    restore_rows::record_applied(&mut tx, uuid, rows, replaced)
        .await
        .map_err(db("recording the restore"))?;
    tx.commit().await.map_err(db("committing the swap"))?;
    Ok(rows.clone())
}

/// `<base>_<first 12 hex digits of uuid>`, a valid database name of at most 63 bytes.
fn temporary_name(base: &str, uuid: Uuid) -> String {
    let hex = uuid.simple().to_string();
    let base: String = base.chars().take(63 - 13).collect();
    format!("{base}_{}", &hex[..12])
}

async fn apply_tenant(
    state: &AppState,
    plan: &RestorePlan,
    manifest: &Manifest,
    target: &ConnInfo,
    record: Option<Uuid>,
) -> Result<Value, RestoreRequestError> {
    let tenant_id = manifest
        .tenant_id
        .or(plan.tenant_id)
        .ok_or_else(|| refused("not a tenant backup"))?;
    if manifest.is_incremental() {
        return Err(refused(
            "an incremental tenant backup restores into a new database; into a live database restore its chain's full, or take a full backup",
        ));
    }
    if plan.tables.is_some() {
        return Err(refused(
            "a tenant restore replaces all of the tenant's backed-up rows; tables cannot be chosen",
        ));
    }
    if let Target::Database(name) = &plan.target {
        if existing_catalog(state, target)
            .await?
            .is_none_or(|(c, _)| c.tables().next().is_none())
        {
            return Err(refused(format!(
                "database {name} has no schema; a tenant backup restores into a database that has it (restore a whole-database backup there first)"
            )));
        }
    }
    // Queued behind another restore of this tenant, the restore waits on the tenant's
    // advisory lock (crate::tenant::restore), not here.
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
    opts.queue_timeout = state.settings.backup.step_timeout;
    opts.record = record;
    opts.dry_run = plan.dry_run;
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
    if report.dry_run {
        // Nothing was changed, so nothing recorded it in the (rolled back) transaction.
        let preview = serde_json::to_value(&report.preview).unwrap_or_default();
        restore_rows::set_preview(
            &state.pool,
            Uuid::parse_str(&plan.restore_uuid).map_err(|_| refused("invalid restore uuid"))?,
            &preview,
        )
        .await
        .map_err(db("recording the preview"))?;
        return Ok(json!({}));
    }
    Ok(Value::Object(
        report
            .tables
            .iter()
            .map(|t| (t.table.to_string(), json!(t.inserted)))
            .collect(),
    ))
}

/// Phase 5: success (already recorded by the applying transaction where it could be).
///
/// # Errors
/// Database errors.
pub async fn finish(
    state: &AppState,
    plan: &RestorePlan,
    run_id: &str,
    rows: &Value,
) -> Result<(), RestoreRequestError> {
    restore_rows::mark_success(&state.pool, plan.uuid()?, run_id, rows)
        .await
        .map_err(db("recording the restore"))
}

/// Phase 5: failure, with the useful part of the error; an applied restore, or one another
/// run owns, stays as it is. `true` when this call recorded the failure.
///
/// # Errors
/// Database errors.
pub async fn fail(
    state: &AppState,
    restore_uuid: Uuid,
    run_id: &str,
    message: &str,
) -> Result<bool, RestoreRequestError> {
    restore_rows::mark_failed(&state.pool, restore_uuid, run_id, message)
        .await
        .map_err(db("recording the failure"))
}

/// The backup's manifest, checked against the row's checksum.
async fn manifest(state: &AppState, plan: &RestorePlan) -> Result<Manifest, RestoreRequestError> {
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
) -> Result<Option<(Catalog, i32)>, RestoreRequestError> {
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
