//! Live tenant restore: replace one tenant's rows in the shared database by a backup's (its own
//! tenant backup, or the tenant's rows of a whole-database backup), in one transaction, without
//! touching any other tenant's rows or platform rows, while every tenant keeps writing. The
//! semantics under concurrent writes, the locks and the preview are defined in
//! docs/tenant-restore.md; in short:
//!
//! 1. Checks that need no database: the manifest holds this tenant's rows (its tenant backup,
//!    or a whole-database backup), every backed-up table and column exists in the live database
//!    with the same type (every difference is reported at once), and the tenant's foreign-key
//!    cycles can be broken (see [`super::graph`]).
//! 2. The per-tenant advisory lock, waited on (`queue_timeout`), first in the transaction:
//!    restores of one tenant run one after another. Then the lock budget (`lock_timeout`,
//!    1 s) for everything else; no table lock stronger than ROW EXCLUSIVE, no DDL unless
//!    `temporary_indexes` (missing foreign-key indexes are reported with their statement).
//! 3. Stage every table from the artifact (verified while it streams); from a whole-database
//!    backup, select the tenant's rows among the staged copies with the live ownership plan.
//! 4. Fix and lock `FOR UPDATE` the tenant's live rows in one statement per table (by primary
//!    key, or `ctid`): the lock point. Rows committed later by others are kept.
//! 5. Refuse if a row that stays references a row about to be replaced.
//! 6. Preview counts (insert/update/delete per table), then delete the locked rows children
//!    first, insert the staged rows parents first with cycle columns set afterwards, move
//!    sequences forward (never back; a dry run only computes the move).
//! 7. Re-hash the row versions this transaction wrote (`xmin`) against the backup; count the
//!    tenant's rows written meanwhile (`kept`). Commit, or roll back for a dry run.
//!
//! Any error rolls the transaction back: the database is exactly as before. Unique and foreign
//! key violations are reported with the constraint's name. `session_replication_role` is never
//! used: it needs superuser rights, skips triggers, and lets orphans in silently.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::io::AsyncReadExt;

use super::{tenant_exists, LoadOrder, TenantError, TenantPlan, UnbreakableCycle};
use crate::artifact::{
    copy_select, is_readable_format, open_table, ArtifactError, Manifest, RowHasher, TableEntry,
    FORMAT,
};
use crate::catalog::{Catalog, ForeignKey, Table, TableRef};
use crate::pg::{quote_ident, quote_literal};
use crate::storage::Storage;

/// What to restore and how long to wait.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The tenant whose rows are replaced; must be the backup's tenant.
    pub tenant_id: i32,
    /// `TENANTS_TABLE`; `None` skips the existence check.
    pub tenants_table: Option<String>,
    /// Tables that are never restored (our own bookkeeping tables).
    pub skip: Vec<TableRef>,
    /// The lock budget: how long one statement may wait for a lock before the restore gives up
    /// (and rolls back, a retriable error) rather than letting sessions queue behind it. The
    /// restore takes no table lock stronger than ROW EXCLUSIVE, so other tenants' writes never
    /// wait for it; this bounds the rest (see docs/tenant-restore.md).
    pub lock_timeout: Duration,
    /// Longest wait for another restore of the same tenant to finish (the per-tenant advisory
    /// lock is queued on, not subject to `lock_timeout`).
    pub queue_timeout: Duration,
    /// Index foreign-key columns that have none for the restore's duration (DDL on shared
    /// tables: a SHARE lock on them until commit, and table ownership). Off by default: the
    /// report lists the `CREATE INDEX CONCURRENTLY` statements instead.
    pub temporary_indexes: bool,
    /// Compute the preview, check that the restore would succeed, and roll everything back.
    pub dry_run: bool,
    /// Upper bound for any single statement (a staging COPY of a large table included).
    pub statement_timeout: Duration,
    /// The `root_data_restores` row of this request, when the target holds that table: locked
    /// first and marked applied in the restore's own transaction, so a request is applied at
    /// most once ([`TenantRestoreError::AlreadyApplied`]).
    pub record: Option<uuid::Uuid>,
}

impl RestoreOptions {
    /// Defaults: the RiverEdge tenants table, a 1 s lock budget, 30 min statements and queue
    /// waits, no DDL, a real restore.
    pub fn new(tenant_id: i32) -> Self {
        Self {
            tenant_id,
            tenants_table: Some("infra_tenants".to_owned()),
            skip: Vec::new(),
            lock_timeout: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(30 * 60),
            statement_timeout: Duration::from_secs(30 * 60),
            temporary_indexes: false,
            dry_run: false,
            record: None,
        }
    }
}

/// What a committed restore changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub tenant_id: i32,
    pub backup_uuid: String,
    /// Per table in load order.
    pub tables: Vec<TableReport>,
    /// Sequences that were advanced past restored ids.
    pub sequences_advanced: Vec<TableRef>,
    /// What the restore does (dry run: would do), in the `root_data_restores.preview` shape.
    pub preview: Preview,
    /// `CREATE INDEX CONCURRENTLY` statements for foreign-key columns without an index: each
    /// deleted parent row costs a scan of the child table until they exist.
    pub missing_indexes: Vec<String>,
    /// Whether everything was rolled back (a dry run).
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub table: TableRef,
    /// Rows physically deleted and inserted (every covered row is rewritten).
    pub deleted: u64,
    pub inserted: u64,
    /// The tenant's rows committed by other sessions after the restore locked the tenant's
    /// rows: kept (docs/tenant-restore.md).
    pub kept: u64,
}

/// Per table, the logical change: `insert` backup rows whose key is not live, `update` keys in
/// both whose content differs, `delete` live rows whose key is not in the backup (tables without
/// a primary key: whole rows compared as multisets). Identical rows are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preview {
    pub tables: Vec<TableChange>,
    pub sequences: Vec<SequenceMove>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableChange {
    pub table: String,
    pub insert: i64,
    pub update: i64,
    pub delete: i64,
}

/// A sequence moved forward past restored ids: from the last value handed out, to the new one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SequenceMove {
    pub sequence: String,
    pub from: i64,
    pub to: i64,
}

/// A row that stays but references a row the restore would delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossReference {
    pub table: TableRef,
    pub constraint: String,
    pub referenced: TableRef,
    pub rows: i64,
}

/// Why a tenant restore did not commit. The database is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum TenantRestoreError {
    #[error("backup {backup} is not a tenant backup (format {format:?}, scope {scope:?})")]
    NotATenantBackup {
        backup: String,
        format: String,
        scope: String,
    },
    #[error("backup belongs to tenant {backup:?}, not to tenant {requested}")]
    TenantMismatch { backup: Option<i32>, requested: i32 },
    #[error("tenant {0} does not exist")]
    UnknownTenant(i32),
    #[error("the backup does not fit the live database: {}", .0.join("; "))]
    Incompatible(Vec<String>),
    #[error(transparent)]
    Cycle(#[from] UnbreakableCycle),
    #[error(transparent)]
    Tenants(#[from] TenantError),
    #[error("rows outside the tenant reference its rows: {}", describe(.0))]
    CrossTenantReferences(Vec<CrossReference>),
    #[error("restoring {table} conflicts with an existing row (unique constraint {constraint}): {detail}")]
    UniqueConflict {
        table: TableRef,
        constraint: String,
        detail: String,
    },
    #[error("restoring {table} violates foreign key {constraint}: {detail}")]
    ForeignKeyViolation {
        table: TableRef,
        constraint: String,
        detail: String,
    },
    #[error("backup data of {table}: {source}")]
    Artifact {
        table: TableRef,
        /// Boxed: the artifact error is large, and restores fail rarely.
        source: Box<ArtifactError>,
    },
    #[error("restored rows differ from the backup: {}", .0.join("; "))]
    VerificationFailed(Vec<String>),
    #[error("{context}: {source}")]
    Database {
        context: String,
        source: sqlx::Error,
    },
    #[error("restore {0} was applied already")]
    AlreadyApplied(uuid::Uuid),
}

fn describe(refs: &[CrossReference]) -> String {
    refs.iter()
        .map(|r| {
            format!(
                "{} row(s) of {} via {} -> {}",
                r.rows, r.table, r.constraint, r.referenced
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl TenantRestoreError {
    /// Whether running the same restore again may succeed: connection loss, I/O, timeouts,
    /// deadlocks and serialization failures; not invalid input or conflicting data.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Database { source, .. } | Self::Tenants(TenantError::Database(source)) => {
                crate::retry::is_transient_sql(source)
            }
            Self::Artifact { source, .. } => source.is_retriable(),
            _ => false,
        }
    }
}

/// Attaches what was being done to an SQL error, naming violated constraints.
fn sql_error<'a>(
    table: &'a TableRef,
    context: &str,
) -> impl FnOnce(sqlx::Error) -> TenantRestoreError + 'a {
    let context = format!("{context} {table}");
    move |e| {
        if let Some(db) = e.as_database_error() {
            let constraint = db.constraint().unwrap_or("?").to_owned();
            let detail = db.message().to_owned();
            match db.code().as_deref() {
                Some("23505") => {
                    return TenantRestoreError::UniqueConflict {
                        table: table.clone(),
                        constraint,
                        detail,
                    }
                }
                Some("23503") => {
                    return TenantRestoreError::ForeignKeyViolation {
                        table: table.clone(),
                        constraint,
                        detail,
                    }
                }
                _ => {}
            }
        }
        TenantRestoreError::Database { context, source: e }
    }
}

fn db_error(context: &str) -> impl FnOnce(sqlx::Error) -> TenantRestoreError + '_ {
    move |source| TenantRestoreError::Database {
        context: context.to_owned(),
        source,
    }
}

/// One table of the restore with everything the SQL needs, in load order.
struct Target<'a> {
    index: usize,
    entry: &'a TableEntry,
    table: &'a Table,
    /// Ownership predicate over alias `t`.
    predicate: String,
    deferred: &'a [String],
    columns: Vec<String>,
    /// The artifact holds every tenant's rows (a whole-database backup).
    whole: bool,
}

impl Target<'_> {
    fn name(&self) -> &TableRef {
        &self.table.table
    }

    fn stage(&self) -> String {
        format!("pg_temp.rbk_stage_{}", self.index)
    }

    /// Where the artifact is loaded: the stage itself, or for a whole-database backup every
    /// row, from which the tenant's are selected into the stage.
    fn loaded(&self) -> String {
        if self.whole {
            format!("pg_temp.rbk_all_{}", self.index)
        } else {
            self.stage()
        }
    }

    fn doomed(&self) -> String {
        format!("pg_temp.rbk_doomed_{}", self.index)
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn pk_list(&self, alias: Option<&str>) -> String {
        let prefix = alias.map(|a| format!("{a}.")).unwrap_or_default();
        self.table
            .primary_key
            .iter()
            .map(|c| format!("{prefix}{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rows of this table (over `alias`) that the restore deletes: the set fixed and locked by
    /// [`fix_doomed_rows`], by primary key, or by `ctid` for tables without one (stable: the
    /// rows are locked `FOR UPDATE` until the commit, so nobody else can move them).
    fn doomed_over(&self, alias: &str) -> String {
        if self.table.primary_key.is_empty() {
            format!(
                "{alias}.ctid = ANY (ARRAY(SELECT rbk_ctid FROM {}))",
                self.doomed()
            )
        } else {
            format!(
                "({}) IN (SELECT {} FROM {})",
                self.pk_list(Some(alias)),
                self.pk_list(None),
                self.doomed()
            )
        }
    }

    fn overriding(&self) -> &'static str {
        let always = self
            .table
            .columns
            .iter()
            .any(|c| c.identity == Some('a') && self.columns.contains(&c.name));
        if always {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        }
    }
}

/// Replaces tenant `opts.tenant_id`'s rows by the backup described by `manifest`, reading its
/// data from `storage`. `catalog` is the live database's.
///
/// # Errors
/// See [`TenantRestoreError`]; on every error the transaction is rolled back.
#[tracing::instrument(skip_all, fields(tenant = opts.tenant_id, backup = %manifest.backup_uuid))]
pub async fn restore(
    conn: &mut PgConnection,
    catalog: &Catalog,
    storage: &dyn Storage,
    manifest: &Manifest,
    opts: &RestoreOptions,
) -> Result<RestoreReport, TenantRestoreError> {
    let whole = check_manifest(manifest, opts.tenant_id)?;
    let plan = TenantPlan::build(catalog, opts.tenant_id, &opts.skip);
    let order = plan.load_order()?;
    let targets = targets(catalog, &plan, order, manifest, whole)?;

    let mut tx = conn
        .begin()
        .await
        .map_err(db_error("beginning the restore transaction"))?;
    // First, holding nothing else: queue behind other restores of this tenant.
    wait_for_turn(&mut tx, opts).await?;
    let record = opts.record.filter(|_| !opts.dry_run);
    if let Some(uuid) = record {
        let row = crate::db::restores::lock_for_apply(&mut tx, uuid)
            .await
            .map_err(db_error("locking the restore record"))?;
        if row.applied_at.is_some() {
            return Err(TenantRestoreError::AlreadyApplied(uuid));
        }
    }
    match run(&mut tx, catalog, storage, &plan, manifest, &targets, opts).await {
        Ok(outcome) => {
            let preview_json = serde_json::to_value(&outcome.preview).unwrap_or_default();
            if opts.dry_run {
                tx.rollback()
                    .await
                    .map_err(db_error("rolling the dry run back"))?;
                tracing::info!(
                    tables = outcome.tables.len(),
                    "tenant restore dry run rolled back"
                );
            } else {
                if let Some(uuid) = record {
                    let rows = serde_json::Value::Object(
                        outcome
                            .tables
                            .iter()
                            .map(|t| (t.table.to_string(), serde_json::json!(t.inserted)))
                            .collect(),
                    );
                    crate::db::restores::record_applied(&mut tx, uuid, &rows, None)
                        .await
                        .map_err(db_error("recording the restore"))?;
                    crate::db::restores::set_preview(&mut *tx, uuid, &preview_json)
                        .await
                        .map_err(db_error("recording the restore"))?;
                }
                tx.commit()
                    .await
                    .map_err(db_error("committing the restore"))?;
                tracing::info!(tables = outcome.tables.len(), "tenant restore committed");
            }
            Ok(RestoreReport {
                tenant_id: opts.tenant_id,
                backup_uuid: manifest.backup_uuid.clone(),
                tables: outcome.tables,
                sequences_advanced: outcome.sequences_advanced,
                preview: outcome.preview,
                missing_indexes: outcome.missing_indexes,
                dry_run: opts.dry_run,
            })
        }
        Err(e) => {
            // A dead connection cannot roll back, but the server already has.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback after a failed tenant restore");
            }
            Err(e)
        }
    }
}

/// The per-tenant advisory lock, waited on (up to `queue_timeout`, not the lock budget): two
/// restores of one tenant run one after the other. Taken first in the transaction, so a queued
/// restore holds no other lock while it waits.
async fn wait_for_turn(
    conn: &mut PgConnection,
    opts: &RestoreOptions,
) -> Result<(), TenantRestoreError> {
    let sql = format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {};",
        quote_literal(&format!("{}ms", opts.queue_timeout.as_millis())),
        quote_literal(&format!("{}ms", opts.queue_timeout.as_millis())),
    );
    crate::pg::execute(&mut *conn, &sql)
        .await
        .map_err(db_error("configuring the restore session"))?;
    // language=PostgreSQL
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('riveredge-backup tenant restore'), $1)")
        .bind(opts.tenant_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error("waiting for other restores of this tenant"))?;
    Ok(())
}

/// Whether the backup holds the tenant's rows: its own tenant backup (`Ok(false)`), or a
/// whole-database backup, whose rows of the tenant are selected while restoring (`Ok(true)`).
fn check_manifest(manifest: &Manifest, tenant_id: i32) -> Result<bool, TenantRestoreError> {
    if is_readable_format(&manifest.format)
        && manifest.scope == "all"
        && manifest.tenant_id.is_none()
    {
        return Ok(true);
    }
    if !is_readable_format(&manifest.format)
        || !matches!(manifest.scope.as_str(), "tenant" | "table")
        || manifest.tenant_id.is_none()
    {
        return Err(TenantRestoreError::NotATenantBackup {
            backup: manifest.backup_uuid.clone(),
            format: manifest.format.clone(),
            scope: manifest.scope.clone(),
        });
    }
    if manifest.tenant_id != Some(tenant_id) {
        return Err(TenantRestoreError::TenantMismatch {
            backup: manifest.tenant_id,
            requested: tenant_id,
        });
    }
    Ok(false)
}

/// The backed-up tables in load order, after checking each against the live database.
fn targets<'a>(
    catalog: &'a Catalog,
    plan: &TenantPlan,
    order: &'a LoadOrder,
    manifest: &'a Manifest,
    whole: bool,
) -> Result<Vec<Target<'a>>, TenantRestoreError> {
    let mut problems = Vec::new();
    let mut by_table: BTreeMap<TableRef, &TableEntry> = BTreeMap::new();
    for entry in &manifest.tables {
        let name = entry.table_ref();
        match (catalog.table(&name), plan.table(&name)) {
            (None, _) => problems.push(format!("table {name} does not exist")),
            // A whole-database backup holds platform tables too: not the tenant's.
            (Some(_), None) if whole => {}
            (Some(_), None) => problems.push(format!(
                "table {name} is not owned by tenants in the live database"
            )),
            (Some(live), Some(owned)) => {
                problems.extend(column_differences(live, entry));
                // A whole-database backup holds every row; the live plan selects the tenant's.
                if !whole {
                    problems.extend(ownership_difference(
                        manifest,
                        plan,
                        &name,
                        &owned.predicate,
                    ));
                }
                by_table.insert(name, entry);
            }
        }
    }
    if !problems.is_empty() {
        return Err(TenantRestoreError::Incompatible(problems));
    }
    Ok(order
        .tables
        .iter()
        .filter_map(|name| Some((name, *by_table.get(name)?)))
        .enumerate()
        .filter_map(|(index, (name, entry))| {
            Some(Target {
                index,
                entry,
                table: catalog.table(name)?,
                predicate: indexed_predicate(plan, name, &plan.table(name)?.predicate),
                deferred: order.deferred_columns_of(name),
                columns: entry.columns.iter().map(|c| c.name.clone()).collect(),
                whole,
            })
        })
        .collect())
}

/// Whether the backup selected `table`'s rows the way the live schema would. Format 2
/// compares the typed plans structurally (the table's rule and every rule its foreign-key
/// paths reach). A format 1 artifact carries only SQL text: it is accepted when the live
/// schema's plan generates exactly that text (then it is the same plan), and refused otherwise
/// with a message that says why.
fn ownership_difference(
    manifest: &Manifest,
    plan: &TenantPlan,
    table: &TableRef,
    live_predicate: &str,
) -> Option<String> {
    match &manifest.ownership {
        None if manifest.format == FORMAT => Some(format!(
            "table {table}: the {FORMAT} manifest has no ownership plan, so which rows it holds cannot be checked"
        )),
        Some(backup) => (backup.closure(table) != plan.ownership().closure(table)).then(|| {
            format!(
                "table {table}: the backup attributed its rows to the tenant through other columns or foreign keys than the live schema does (ownership plan differs)"
            )
        }),
        None => match &manifest.tenant_id.and(manifest.tables.iter().find(|e| &e.table_ref() == table)).and_then(|e| e.predicate.clone()) {
            Some(text) if text != live_predicate => Some(format!(
                "table {table}: this {} artifact stores its row filter as SQL text, which the live schema's ownership plan does not reproduce (foreign keys changed, or the backup was written by another version); take a new backup",
                manifest.format
            )),
            _ => None,
        },
    }
}

fn column_differences(live: &Table, entry: &TableEntry) -> Vec<String> {
    let name = &live.table;
    let mut out = Vec::new();
    for col in &entry.columns {
        match live.column(&col.name) {
            None => out.push(format!("column {name}.{} does not exist", col.name)),
            Some(l) if l.type_name != col.type_name => {
                out.push(format!(
                    "column {name}.{} is {} in the live database but {} in the backup",
                    col.name, l.type_name, col.type_name
                ));
            }
            Some(l) if l.generated => out.push(format!(
                "column {name}.{} is a generated column in the live database",
                col.name
            )),
            Some(_) => {}
        }
    }
    out
}

struct Outcome {
    tables: Vec<TableReport>,
    sequences_advanced: Vec<TableRef>,
    preview: Preview,
    missing_indexes: Vec<String>,
}

async fn run(
    conn: &mut PgConnection,
    catalog: &Catalog,
    storage: &dyn Storage,
    plan: &TenantPlan,
    manifest: &Manifest,
    targets: &[Target<'_>],
    opts: &RestoreOptions,
) -> Result<Outcome, TenantRestoreError> {
    prepare_session(conn, plan.load_order()?, opts).await?;
    if let Some(tenants) = &opts.tenants_table {
        if !tenant_exists(&mut *conn, catalog, tenants, opts.tenant_id).await? {
            return Err(TenantRestoreError::UnknownTenant(opts.tenant_id));
        }
    }
    for t in targets {
        stage(conn, storage, t).await?;
    }
    let expected = select_tenant_rows(conn, plan, targets).await?;
    for t in targets {
        fix_doomed_rows(conn, t).await?;
    }
    check_cross_references(conn, catalog, targets).await?;
    let mut preview = Preview::default();
    for t in targets {
        preview.tables.push(changes(conn, t).await?);
    }
    let missing = missing_indexes(conn, catalog, targets).await?;
    let mut temporary_indexes = Vec::new();
    if opts.temporary_indexes {
        temporary_indexes = create_temporary_indexes(conn, &missing).await?;
    }
    let missing_indexes = missing.iter().map(MissingIndex::statement).collect();

    let mut deleted = vec![0; targets.len()];
    for t in targets.iter().filter(|t| !t.deferred.is_empty()) {
        null_deferred(conn, t).await?;
    }
    for t in targets.iter().rev() {
        let sql = format!(
            "DELETE FROM {} t WHERE {}",
            t.name().quoted(),
            t.doomed_over("t")
        );
        deleted[t.index] = sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(sql_error(t.name(), "deleting the tenant's rows of"))?
            .rows_affected();
    }
    let mut tables = Vec::with_capacity(targets.len());
    for t in targets {
        let inserted = insert(conn, t, catalog).await?;
        tables.push(TableReport {
            table: t.name().clone(),
            deleted: deleted[t.index],
            inserted,
            kept: 0,
        });
    }
    for t in targets.iter().filter(|t| !t.deferred.is_empty()) {
        set_deferred(conn, t).await?;
    }
    let mut sequences_advanced = Vec::new();
    for t in targets {
        for (seq, movement) in advance_sequences(conn, catalog, manifest, t, opts.dry_run).await? {
            if !sequences_advanced.contains(&seq) {
                sequences_advanced.push(seq);
                preview.sequences.push(movement);
            }
        }
    }
    let xid = current_xid(conn).await?;
    verify(conn, targets, &xid, &expected).await?;
    for (t, report) in targets.iter().zip(tables.iter_mut()) {
        report.kept = kept(conn, t, &xid).await?;
    }
    // Last, so the ACCESS EXCLUSIVE lock DROP INDEX takes lasts only until the commit.
    for index in temporary_indexes {
        sqlx::query(&format!("DROP INDEX {index}"))
            .execute(&mut *conn)
            .await
            .map_err(db_error("dropping a temporary index"))?;
    }
    Ok(Outcome {
        tables,
        sequences_advanced,
        preview,
        missing_indexes,
    })
}

/// This transaction's id as `xid` text: every row version the restore wrote carries it in
/// `xmin`, which tells the restored rows from rows other sessions committed meanwhile.
async fn current_xid(conn: &mut PgConnection) -> Result<String, TenantRestoreError> {
    // language=PostgreSQL
    sqlx::query_scalar("SELECT (pg_current_xact_id()::text::numeric % 4294967296)::bigint::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("reading the transaction id"))
}

/// The tenant's rows of `t` that other sessions committed after the restore locked its rows.
async fn kept(
    conn: &mut PgConnection,
    t: &Target<'_>,
    xid: &str,
) -> Result<u64, TenantRestoreError> {
    let sql = format!(
        "SELECT count(*) FROM {} t WHERE ({}) AND t.xmin <> {}::xid",
        t.name().quoted(),
        t.predicate,
        quote_literal(xid)
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_error(t.name(), "counting concurrent rows of"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The logical change the restore makes to `t` (see [`Preview`]), from the staged rows and the
/// fixed set of rows to replace, before anything changes.
async fn changes(
    conn: &mut PgConnection,
    t: &Target<'_>,
) -> Result<TableChange, TenantRestoreError> {
    let live = t.name().quoted();
    let row = |alias: &str| {
        format!(
            "ROW({})::text",
            t.columns
                .iter()
                .map(|c| format!("{alias}.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let sql = if t.table.primary_key.is_empty() {
        let doomed = format!(
            "SELECT {} FROM {live} t WHERE {}",
            row("t"),
            t.doomed_over("t")
        );
        let staged = format!("SELECT {} FROM {} s", row("s"), t.stage());
        format!(
            "SELECT (SELECT count(*) FROM ({staged} EXCEPT ALL {doomed}) x),
                    0::bigint,
                    (SELECT count(*) FROM ({doomed} EXCEPT ALL {staged}) x)"
        )
    } else {
        let on = |a: &str, b: &str| {
            t.table
                .primary_key
                .iter()
                .map(|c| format!("{a}.{0} = {b}.{0}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        format!(
            "SELECT (SELECT count(*) FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {doomed} d WHERE {sd})),
                    (SELECT count(*) FROM {stage} s JOIN {doomed} d ON {sd} JOIN {live} t ON {td}
                      WHERE {srow} IS DISTINCT FROM {trow}),
                    (SELECT count(*) FROM {doomed} d WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE {sd}))",
            stage = t.stage(),
            doomed = t.doomed(),
            sd = on("s", "d"),
            td = on("t", "d"),
            srow = row("s"),
            trow = row("t"),
        )
    };
    let (insert, update, delete): (i64, i64, i64) = sqlx::query_as(&sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_error(t.name(), "comparing the backup's rows with"))?;
    Ok(TableChange {
        table: t.name().to_string(),
        insert,
        update,
        delete,
    })
}

/// A foreign key whose referencing columns have no index.
struct MissingIndex {
    table: TableRef,
    columns: String,
}

impl MissingIndex {
    fn statement(&self) -> String {
        format!(
            "CREATE INDEX CONCURRENTLY ON {} ({})",
            self.table.quoted(),
            self.columns
        )
    }
}

/// Deleting a parent row makes PostgreSQL look up its children through each foreign key; a
/// referencing column without an index turns that into one sequential scan of the child table
/// per deleted row (minutes for a tenant of a few thousand rows over a million-row child).
/// The restore does not build indexes by default (DDL on shared tables: a SHARE lock that
/// stops every tenant's writes to them until the commit, then ACCESS EXCLUSIVE for the drop,
/// and table ownership a least-privilege role lacks); it names the index to create, once, with
/// the statement. `temporary_indexes` opts in to the old behaviour.
async fn missing_indexes(
    conn: &mut PgConnection,
    catalog: &Catalog,
    targets: &[Target<'_>],
) -> Result<Vec<MissingIndex>, TenantRestoreError> {
    let mut missing: Vec<MissingIndex> = Vec::new();
    for t in targets {
        for fk in catalog.fks_to(t.name()) {
            // language=PostgreSQL
            let indexed: bool = sqlx::query_scalar(
                "SELECT EXISTS (
                     SELECT 1 FROM pg_index i
                     WHERE i.indrelid = $1::regclass AND i.indisvalid AND i.indpred IS NULL
                       AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                            FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                            WHERE k.ord <= cardinality($2::text[])) = $2::text[])",
            )
            .bind(fk.table.quoted())
            .bind(&fk.columns)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("looking for indexes on referencing columns"))?;
            if indexed {
                continue;
            }
            let index = MissingIndex {
                table: fk.table.clone(),
                columns: fk
                    .columns
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let statement = index.statement();
            if missing.iter().any(|m| m.statement() == statement) {
                continue;
            }
            tracing::warn!(
                table = %fk.table, columns = %fk.columns.join(", "), constraint = %fk.name,
                create = %statement,
                "foreign key columns have no index: deleting the tenant's rows scans the table once per row; create the index"
            );
            missing.push(index);
        }
    }
    Ok(missing)
}

/// Opt-in: builds the missing indexes inside the transaction (rolled back with it on failure,
/// dropped at the end). Returns their qualified names.
async fn create_temporary_indexes(
    conn: &mut PgConnection,
    missing: &[MissingIndex],
) -> Result<Vec<String>, TenantRestoreError> {
    let mut created = Vec::new();
    for index in missing {
        let name = format!("rbk_restore_fk_{}", created.len() + 1);
        // `CONCURRENTLY` cannot run in a transaction; the temporary index is a plain one.
        let sql = format!(
            "CREATE INDEX {} ON {} ({})",
            quote_ident(&name),
            index.table.quoted(),
            index.columns
        );
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(db_error("indexing referencing columns"))?;
        created.push(format!(
            "{}.{}",
            quote_ident(&index.table.schema),
            quote_ident(&name)
        ));
    }
    Ok(created)
}

/// The lock budget, deterministic COPY text (design.md) and deferred constraints.
async fn prepare_session(
    conn: &mut PgConnection,
    order: &LoadOrder,
    opts: &RestoreOptions,
) -> Result<(), TenantRestoreError> {
    let mut sql = format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {};
         SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL TimeZone = 'UTC'; SET LOCAL IntervalStyle = 'postgres';
         SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'; SET LOCAL client_encoding = 'UTF8';",
        quote_literal(&format!("{}ms", opts.lock_timeout.as_millis())),
        quote_literal(&format!("{}ms", opts.statement_timeout.as_millis())),
    );
    if !order.deferred_constraints.is_empty() {
        let names: Vec<String> = order
            .deferred_constraints
            .iter()
            .map(|(t, c)| format!("{}.{}", quote_ident(&t.schema), quote_ident(c)))
            .collect();
        sql.push_str(&format!(" SET CONSTRAINTS {} DEFERRED;", names.join(", ")));
    }
    crate::pg::execute(&mut *conn, &sql)
        .await
        .map_err(db_error("configuring the restore session"))?;
    Ok(())
}

/// Bytes per COPY message while staging: large enough to keep the protocol overhead small.
const STAGE_CHUNK: usize = 256 * 1024;

/// Loads the artifact into a temporary copy of the table. The reader verifies sha256, rows and
/// content hash before it reports the end, so a damaged artifact never finishes staging.
async fn stage(
    conn: &mut PgConnection,
    storage: &dyn Storage,
    t: &Target<'_>,
) -> Result<(), TenantRestoreError> {
    let name = t.name();
    let create = format!(
        "CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
        t.loaded(),
        name.quoted()
    );
    sqlx::query(&create)
        .execute(&mut *conn)
        .await
        .map_err(sql_error(name, "creating the staging table for"))?;

    let artifact = |source| TenantRestoreError::Artifact {
        table: name.clone(),
        source: Box::new(source),
    };
    let mut source = open_table(storage, t.entry).await.map_err(artifact)?;
    let sql = format!("COPY {} ({}) FROM STDIN", t.loaded(), t.column_list());
    let mut copy = conn
        .copy_in_raw(&sql)
        .await
        .map_err(sql_error(name, "staging"))?;
    let mut buf = vec![0u8; STAGE_CHUNK];
    loop {
        match source.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                copy.send(&buf[..n])
                    .await
                    .map_err(sql_error(name, "staging"))?;
            }
            Err(e) => {
                // The staged rows are discarded with the transaction; aborting keeps the
                // connection usable for the rollback. The artifact is the error to report even
                // if the server had already refused the damaged data.
                if let Err(abort) = copy.abort("backup data failed verification").await {
                    tracing::debug!(error = %abort, "aborting the staging COPY");
                }
                return Err(artifact(ArtifactError::from_io(&t.entry.key, e)));
            }
        }
    }
    let rows = copy.finish().await.map_err(sql_error(name, "staging"))?;
    sqlx::query(&format!("ANALYZE {}", t.loaded()))
        .execute(&mut *conn)
        .await
        .map_err(sql_error(name, "analyzing the staged rows of"))?;
    if rows != t.entry.rows {
        return Err(TenantRestoreError::VerificationFailed(vec![format!(
            "{name}: staged {rows} rows, the manifest says {}",
            t.entry.rows
        )]));
    }
    Ok(())
}

/// Fixes and locks the rows to delete in one statement (by primary key, or `ctid`), so later
/// steps see one set even while deferred columns change what the predicates of join tables
/// would match, and rows other sessions commit afterwards are not touched. Concurrent sessions
/// cannot start referencing locked rows (their `FOR KEY SHARE` waits for us).
async fn fix_doomed_rows(
    conn: &mut PgConnection,
    t: &Target<'_>,
) -> Result<(), TenantRestoreError> {
    let name = t.name();
    let key = if t.table.primary_key.is_empty() {
        "t.ctid AS rbk_ctid".to_owned()
    } else {
        t.pk_list(Some("t"))
    };
    let create = format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {key} FROM {} t WHERE false",
        t.doomed(),
        name.quoted(),
    );
    sqlx::query(&create)
        .execute(&mut *conn)
        .await
        .map_err(sql_error(name, "collecting the tenant's rows of"))?;
    let lock = format!(
        "INSERT INTO {} SELECT {key} FROM {} t WHERE {} FOR UPDATE OF t",
        t.doomed(),
        name.quoted(),
        t.predicate
    );
    sqlx::query(&lock)
        .execute(&mut *conn)
        .await
        .map_err(sql_error(name, "locking the tenant's rows of"))?;
    // Statistics of the (small) key set, so that every later statement joining it to a shared
    // table looks the keys up by index instead of scanning the shared table (temporary tables
    // are never analyzed by autovacuum; without statistics the planner guesses thousands).
    sqlx::query(&format!("ANALYZE {}", t.doomed()))
        .execute(&mut *conn)
        .await
        .map_err(sql_error(name, "analyzing the tenant's rows of"))?;
    Ok(())
}

/// Refuses when a row that stays references a row that is deleted.
async fn check_cross_references(
    conn: &mut PgConnection,
    catalog: &Catalog,
    targets: &[Target<'_>],
) -> Result<(), TenantRestoreError> {
    let find = |t: &TableRef| targets.iter().find(|x| x.name() == t);
    let mut found = Vec::new();
    for fk in &catalog.foreign_keys {
        let Some(parent) = find(&fk.referenced) else {
            continue;
        };
        let child_stays = find(&fk.table).map_or_else(
            || "true".to_owned(),
            |c| format!("NOT ({})", c.doomed_over("c")),
        );
        // Driven from the replaced parent rows (few, analyzed) to their children, so the cost
        // follows the tenant's rows where the referencing columns are indexed, rather than
        // scanning every tenant's child rows.
        let sql = format!(
            "SELECT count(*) FROM {} p JOIN {} c ON {} WHERE {} AND {child_stays}",
            fk.referenced.quoted(),
            fk.table.quoted(),
            fk_join(fk, "c", "p"),
            parent.doomed_over("p")
        );
        let rows: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(sql_error(&fk.table, "checking references from"))?;
        if rows > 0 {
            found.push(CrossReference {
                table: fk.table.clone(),
                constraint: fk.name.clone(),
                referenced: fk.referenced.clone(),
                rows,
            });
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(TenantRestoreError::CrossTenantReferences(found))
    }
}

fn fk_join(fk: &ForeignKey, child: &str, parent: &str) -> String {
    fk.columns
        .iter()
        .zip(&fk.referenced_columns)
        .map(|(c, r)| format!("{parent}.{} = {child}.{}", quote_ident(r), quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

async fn null_deferred(conn: &mut PgConnection, t: &Target<'_>) -> Result<(), TenantRestoreError> {
    let set: Vec<String> = t
        .deferred
        .iter()
        .map(|c| format!("{} = NULL", quote_ident(c)))
        .collect();
    let sql = format!(
        "UPDATE {} t SET {} WHERE {}",
        t.name().quoted(),
        set.join(", "),
        t.doomed_over("t")
    );
    sqlx::query(&sql)
        .execute(&mut *conn)
        .await
        .map_err(sql_error(t.name(), "clearing cycle columns of"))?;
    Ok(())
}

async fn insert(
    conn: &mut PgConnection,
    t: &Target<'_>,
    catalog: &Catalog,
) -> Result<u64, TenantRestoreError> {
    let values: Vec<String> = t
        .columns
        .iter()
        .map(
            |c| match catalog.table(t.name()).and_then(|tab| tab.column(c)) {
                Some(col) if t.deferred.contains(c) => format!("NULL::{}", col.type_name),
                _ => format!("s.{}", quote_ident(c)),
            },
        )
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}){} SELECT {} FROM {} s",
        t.name().quoted(),
        t.column_list(),
        t.overriding(),
        values.join(", "),
        t.stage()
    );
    Ok(sqlx::query(&sql)
        .execute(&mut *conn)
        .await
        .map_err(sql_error(t.name(), "inserting the backup's rows into"))?
        .rows_affected())
}

/// Sets the cycle columns once every row of the cycle exists.
async fn set_deferred(conn: &mut PgConnection, t: &Target<'_>) -> Result<(), TenantRestoreError> {
    let staged: Vec<&String> = t
        .deferred
        .iter()
        .filter(|c| t.columns.contains(c))
        .collect();
    if staged.is_empty() {
        return Ok(());
    }
    let set: Vec<String> = staged
        .iter()
        .map(|c| format!("{0} = s.{0}", quote_ident(c)))
        .collect();
    let any: Vec<String> = staged
        .iter()
        .map(|c| format!("s.{} IS NOT NULL", quote_ident(c)))
        .collect();
    let pk: Vec<String> = t
        .table
        .primary_key
        .iter()
        .map(|c| format!("t.{0} = s.{0}", quote_ident(c)))
        .collect();
    let sql = format!(
        "UPDATE {} t SET {} FROM {} s WHERE {} AND ({})",
        t.name().quoted(),
        set.join(", "),
        t.stage(),
        pk.join(" AND "),
        any.join(" OR ")
    );
    sqlx::query(&sql)
        .execute(&mut *conn)
        .await
        .map_err(sql_error(t.name(), "setting cycle columns of"))?;
    Ok(())
}

/// Moves each sequence feeding the table forward to the live policy of
/// [`crate::restore::sequences`]: at or above the backup's value and the maximum of every
/// column that draws from it (including columns that use it only through `nextval`
/// defaults); never backwards. A dry run computes the move and makes none (`setval` is not
/// transactional: a rollback would not undo it).
async fn advance_sequences(
    conn: &mut PgConnection,
    catalog: &Catalog,
    manifest: &Manifest,
    t: &Target<'_>,
    dry_run: bool,
) -> Result<Vec<(TableRef, SequenceMove)>, TenantRestoreError> {
    let mut advanced = Vec::new();
    for seq in catalog.sequences_of(t.name()) {
        let backup = manifest
            .sequences
            .iter()
            .find(|s| s.sequence_ref() == seq.sequence)
            .map(|s| (s.last_value, s.is_called));
        let movement =
            crate::restore::sequences::movement(conn, &seq.sequence, &seq.used_by, backup)
                .await
                .map_err(sql_error(&seq.sequence, "reading sequence"))?;
        let Some((from, to)) = movement else {
            continue;
        };
        if !dry_run {
            crate::restore::sequences::advance(conn, &seq.sequence, &seq.used_by, backup)
                .await
                .map_err(sql_error(&seq.sequence, "advancing sequence"))?;
        }
        advanced.push((
            seq.sequence.clone(),
            SequenceMove {
                sequence: seq.sequence.to_string(),
                from,
                to,
            },
        ));
    }
    Ok(advanced)
}

/// Re-hashes the rows this transaction wrote (`xmin` = `xid`) with the backup's columns; every
/// table must match the manifest. Rows other sessions committed meanwhile are not the backup's
/// and are counted by [`kept`] instead.
async fn verify(
    conn: &mut PgConnection,
    targets: &[Target<'_>],
    xid: &str,
    expected: &[(u64, String)],
) -> Result<(), TenantRestoreError> {
    let mut problems = Vec::new();
    for (t, (rows, hash)) in targets.iter().zip(expected) {
        let filter = format!("({}) AND t.xmin = {}::xid", t.predicate, quote_literal(xid));
        let select = copy_select(t.name(), &t.entry.columns, Some(&filter));
        let (got_rows, got_hash) = digest(conn, t.name(), &select).await?;
        if got_rows != *rows || got_hash != *hash {
            problems.push(format!(
                "{}: {got_rows} rows with hash {got_hash} after restore, backup has {rows} rows with hash {hash}",
                t.name(),
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TenantRestoreError::VerificationFailed(problems))
    }
}

/// Rows and content hash of `select`'s COPY text (the backup's row hash).
async fn digest(
    conn: &mut PgConnection,
    table: &TableRef,
    select: &str,
) -> Result<(u64, String), TenantRestoreError> {
    use futures::TryStreamExt;
    let sql = format!("COPY ({select}) TO STDOUT");
    let mut hasher = RowHasher::new();
    let mut stream = conn
        .copy_out_raw(&sql)
        .await
        .map_err(sql_error(table, "re-reading"))?;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(sql_error(table, "re-reading"))?
    {
        hasher.update(&chunk);
    }
    let digest = hasher.finish();
    Ok((digest.rows, digest.content_hash()))
}

/// What each table's restored rows must hash to. A tenant backup: the manifest's. A
/// whole-database backup: the tenant's rows are selected from the loaded copy with the live
/// ownership plan, its parent tables read from the loaded copies too (a join row belongs to the
/// tenant by the backup's parent rows), all before any copy is narrowed; their hash is then
/// the expectation.
async fn select_tenant_rows(
    conn: &mut PgConnection,
    plan: &TenantPlan,
    targets: &[Target<'_>],
) -> Result<Vec<(u64, String)>, TenantRestoreError> {
    let mut expected = Vec::with_capacity(targets.len());
    let relation = |table: &TableRef| {
        targets
            .iter()
            .find(|t| t.name() == table)
            .map_or_else(|| table.quoted(), Target::loaded)
    };
    for t in targets {
        if !t.whole {
            expected.push((t.entry.rows, t.entry.content_hash.clone()));
            continue;
        }
        let predicate = plan
            .predicate_in(t.name(), "t", &relation)
            .unwrap_or_else(|| "false".to_owned());
        let sql = format!(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {} t WHERE {predicate}",
            t.stage(),
            t.loaded()
        );
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(sql_error(t.name(), "selecting the tenant's rows of"))?;
        let columns = t
            .entry
            .columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let select = format!("SELECT {columns} FROM {} t", t.stage());
        expected.push(digest(conn, t.name(), &select).await?);
    }
    Ok(expected)
}

/// The ownership predicate of `table` over `t`, for the statements that search the live table.
/// A table owned through foreign keys (a join table) has a predicate of `EXISTS … OR EXISTS …`
/// that PostgreSQL can only evaluate row by row: a scan of every tenant's rows of a shared join
/// table. When every parent of those keys carries the tenant column, the rows are first found
/// from the tenant's parent rows through the referencing columns (by index where one exists,
/// see [`missing_indexes`]) and the full predicate is applied to those candidates only: the
/// same rows, at a cost that follows the tenant. Other shapes keep the plain predicate.
fn indexed_predicate(plan: &TenantPlan, table: &TableRef, predicate: &str) -> String {
    let ownership = plan.ownership();
    let Some(links) = ownership.links_of(table) else {
        return predicate.to_owned();
    };
    let links: Vec<_> = links.iter().filter(|l| l.parent() != *table).collect();
    if links.is_empty()
        || links
            .iter()
            .any(|l| ownership.links_of(&l.parent()).is_some() || plan.table(&l.parent()).is_none())
    {
        return predicate.to_owned();
    }
    let candidates: Vec<String> = links
        .iter()
        .map(|l| {
            let join = l
                .columns
                .iter()
                .zip(&l.parent_columns)
                .map(|(c, p)| format!("rbk_c.{} = rbk_p.{}", quote_ident(c), quote_ident(p)))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "SELECT rbk_c.ctid FROM {} rbk_p JOIN {} rbk_c ON {join} WHERE rbk_p.{} = {}",
                l.parent().quoted(),
                table.quoted(),
                quote_ident(&ownership.tenant_column),
                plan.tenant_id
            )
        })
        .collect();
    format!(
        "t.ctid = ANY (ARRAY({})) AND ({predicate})",
        candidates.join(" UNION ")
    )
}
