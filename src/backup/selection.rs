//! Which tables (and which of their rows) each scope covers.

use crate::artifact::ExcludedTable;
use crate::catalog::{Catalog, Sequence, Table, TableRef};
use crate::db::OWN_TABLES;
use crate::tenant::TenantPlan;

use super::{BackupError, BackupScope, BackupSpec};

/// One table to copy.
#[derive(Debug, Clone)]
pub struct SelectedTable {
    pub table: Table,
    /// Row filter over alias `t` (tenant rows only); `None` copies the whole table.
    pub predicate: Option<String>,
}

/// The tables of a backup, in catalog order, and those deliberately left out.
#[derive(Debug, Clone)]
pub struct Selection {
    pub tables: Vec<SelectedTable>,
    pub excluded: Vec<ExcludedTable>,
    /// Every sequence a selected table draws from (ownership, identity or a `nextval`
    /// default, in any schema), plus for a whole-database backup the free-standing ones. The
    /// schema archive must create them and the manifest records their values.
    pub sequences: Vec<Sequence>,
}

impl Selection {
    pub fn table_refs(&self) -> Vec<TableRef> {
        self.tables.iter().map(|t| t.table.table.clone()).collect()
    }
}

/// The sequences a backup of `tables` needs; unused ones only for a whole-database backup
/// (an owned sequence of a table outside the selection is never unused).
fn sequences_for(catalog: &Catalog, tables: &[SelectedTable], whole: bool) -> Vec<Sequence> {
    let selected = |t: &TableRef| tables.iter().any(|s| &s.table.table == t);
    catalog
        .sequences
        .iter()
        .filter(|seq| {
            if seq.tables.is_empty() {
                match &seq.owned_by {
                    Some((owner, _)) => selected(owner),
                    None => whole,
                }
            } else {
                seq.tables.iter().any(selected)
            }
        })
        .cloned()
        .collect()
}

const OWN_TABLE_REASON: &str = "riveredge-backup bookkeeping table (never backed up or restored)";

/// Our own tables, wherever they are.
pub fn own_tables(catalog: &Catalog) -> Vec<TableRef> {
    catalog
        .tables()
        .map(|t| t.table.clone())
        .filter(|t| OWN_TABLES.contains(&t.name.as_str()))
        .collect()
}

fn excluded(table: &TableRef, reason: &str) -> ExcludedTable {
    ExcludedTable {
        schema: table.schema.clone(),
        name: table.name.clone(),
        reason: reason.to_owned(),
    }
}

/// Applies the scope rules of docs/design.md to `catalog`.
///
/// # Errors
/// Unknown or own tables requested; a requested table without rows of the tenant.
pub fn select(catalog: &Catalog, spec: &BackupSpec) -> Result<Selection, BackupError> {
    let own = own_tables(catalog);
    let own_excluded: Vec<ExcludedTable> =
        own.iter().map(|t| excluded(t, OWN_TABLE_REASON)).collect();
    let mut selection = select_tables(catalog, spec, &own, own_excluded)?;
    selection.sequences = sequences_for(catalog, &selection.tables, spec.scope == BackupScope::All);
    Ok(selection)
}

fn select_tables(
    catalog: &Catalog,
    spec: &BackupSpec,
    own: &[TableRef],
    own_excluded: Vec<ExcludedTable>,
) -> Result<Selection, BackupError> {
    match (spec.scope, spec.tenant_id) {
        (BackupScope::All, _) => Ok(Selection {
            tables: catalog
                .tables()
                .filter(|t| !own.contains(&t.table))
                .map(|t| SelectedTable {
                    table: t.clone(),
                    predicate: None,
                })
                .collect(),
            excluded: own_excluded,
            sequences: Vec::new(),
        }),
        (BackupScope::Table, tenant) => {
            let requested = catalog
                .resolve_all(&spec.tables)
                .map_err(BackupError::UnknownTables)?;
            if let Some(t) = requested.iter().find(|t| own.contains(t)) {
                return Err(BackupError::Invalid(format!("{t} is a {OWN_TABLE_REASON}")));
            }
            let tables = match tenant {
                None => requested
                    .iter()
                    .filter_map(|t| catalog.table(t))
                    .map(|t| SelectedTable {
                        table: t.clone(),
                        predicate: None,
                    })
                    .collect(),
                Some(tenant) => tenant_rows_of(catalog, tenant, own, &requested)?,
            };
            Ok(Selection {
                tables,
                excluded: Vec::new(),
                sequences: Vec::new(),
            })
        }
        (BackupScope::Tenant, Some(tenant)) => {
            let plan = TenantPlan::build(catalog, tenant, own);
            let tables = plan
                .tables
                .iter()
                .filter_map(|o| {
                    Some(SelectedTable {
                        table: catalog.table(&o.table)?.clone(),
                        predicate: Some(o.predicate.clone()),
                    })
                })
                .collect();
            let mut excluded_tables: Vec<ExcludedTable> = plan
                .excluded
                .iter()
                .map(|(t, reason)| excluded(t, reason))
                .collect();
            excluded_tables.extend(own_excluded);
            Ok(Selection {
                tables,
                excluded: excluded_tables,
                sequences: Vec::new(),
            })
        }
        (BackupScope::Tenant, None) => Err(BackupError::Invalid(
            "scope tenant needs a tenant id".into(),
        )),
    }
}

/// The tenant's rows of each requested table, through the tenant plan's predicates.
fn tenant_rows_of(
    catalog: &Catalog,
    tenant: i32,
    own: &[TableRef],
    requested: &[TableRef],
) -> Result<Vec<SelectedTable>, BackupError> {
    let plan = TenantPlan::build(catalog, tenant, own);
    requested
        .iter()
        .map(|t| match plan.tables.iter().find(|o| &o.table == t) {
            Some(owned) => Ok(SelectedTable {
                table: catalog.table(t).cloned().ok_or_else(|| {
                    BackupError::Invalid(format!("{t} vanished from the catalog"))
                })?,
                predicate: Some(owned.predicate.clone()),
            }),
            None => Err(BackupError::NoTenantRows {
                tenant,
                table: t.to_string(),
                reason: plan.excluded.iter().find(|(e, _)| e == t).map_or_else(
                    || "not part of the tenant's data".to_owned(),
                    |(_, r)| r.clone(),
                ),
            }),
        })
        .collect()
}
