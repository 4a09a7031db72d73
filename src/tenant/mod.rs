//! Which rows belong to a tenant, and how to put them back into the live shared database.
//!
//! # What a tenant backup includes
//!
//! - **Tables with a `tenant_id` column**: exactly the rows with `tenant_id = <tenant>`. Rows
//!   whose `tenant_id` is NULL are platform rows and are never part of a tenant backup, nor are
//!   other tenants' rows. (`tenant_id` is never a foreign key in RiverEdge; the column alone
//!   decides.)
//! - **Tables without `tenant_id` that reach tenant tables through foreign keys** (join tables
//!   such as `core_user_roles` and `core_role_permissions`, also through further tables without
//!   `tenant_id`): a row is included when at least one of the rows it references is the
//!   tenant's, and none of the rows it references belongs to another tenant. So a
//!   role-permission row linking a tenant role to a *platform* permission is the tenant's (the
//!   platform permission itself is not copied; it must exist where the backup is restored); a
//!   row linking a tenant's user to *another* tenant's role belongs to nobody and is never
//!   included in either tenant's backup.
//! - Every column except stored generated columns, in table order; the content hash of each
//!   table's rows is recorded so a restore can prove it put back exactly these rows.
//!
//! # What it excludes
//!
//! - Platform tables: tables without `tenant_id` and without a foreign-key path to tenant
//!   tables (e.g. `infra_platform_settings`, `aerich`); they are listed in the manifest's
//!   `excluded_tables` with the reason.
//! - Platform rows (`tenant_id IS NULL`) of tenant tables, other tenants' rows, and join rows
//!   that link the tenant to another tenant.
//! - The backup worker's own tables (`root_data_backups`, `root_data_restores`,
//!   `_sqlx_migrations`).
//! - Sequences: every sequence a backed-up table draws from (owned, identity, or only through a
//!   `DEFAULT nextval(…)`) is recorded with its value; a tenant restore never moves a shared
//!   sequence backwards and leaves it at or above the backup's value and the maximum of every
//!   column that draws from it.
//!
//! The manifest holds the ownership as a typed plan ([`crate::artifact::OwnershipPlan`]);
//! [`predicate`] turns it into SQL wherever rows are selected.
//!
//! # Restoring
//!
//! [`restore::restore`] replaces the tenant's current rows by the backup's in one transaction
//! on the live database, deleting with the same ownership predicates the backup selected with,
//! and commits only after re-hashing the restored rows; see that module for the steps and what
//! it refuses.

pub mod graph;
pub mod predicate;
pub mod restore;

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgExecutor;

use crate::artifact::{OwnedTableEntry, OwnershipLink, OwnershipPlan, OwnershipRule};
use crate::catalog::{Catalog, CatalogError, ForeignKey, TableRef};

pub use graph::{LoadOrder, UnbreakableCycle};

/// The column that marks tenant-owned rows (riveredge.md §3: always `int4`, never a FK).
pub const TENANT_COLUMN: &str = "tenant_id";

/// How a table's rows are attributed to the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The table has `tenant_id`: `t.tenant_id = <tenant>`.
    Direct,
    /// No `tenant_id`: rows are reached through these foreign keys (constraint names) to owned
    /// rows.
    ThroughForeignKeys(Vec<String>),
}

/// One table of a tenant backup and the predicate that selects the tenant's rows.
#[derive(Debug, Clone)]
pub struct OwnedTable {
    pub table: TableRef,
    /// A boolean SQL expression over the table aliased `t`, e.g. `t."tenant_id" = 5`.
    pub predicate: String,
    pub ownership: Ownership,
}

/// Everything a tenant backup covers, what it leaves out and why, and how to load it back.
#[derive(Debug, Clone)]
pub struct TenantPlan {
    pub tenant_id: i32,
    /// Owned tables, sorted by name.
    pub tables: Vec<OwnedTable>,
    /// Platform tables (no `tenant_id`, no foreign-key path to tenant rows) and the reason.
    pub excluded: Vec<(TableRef, String)>,
    /// The typed form of every owned table's ownership, from which predicates are generated.
    ownership: OwnershipPlan,
    /// Parents-first order for restores, or the cycle that makes a row-by-row restore
    /// impossible. Backups do not need it, so an unbreakable cycle is not a planning error.
    load_order: Result<LoadOrder, UnbreakableCycle>,
}

const PLATFORM_REASON: &str =
    "platform table (no tenant_id and no foreign-key path to tenant rows)";

impl TenantPlan {
    /// The tenant's rows in every table of `catalog` except `skip` (our own tables).
    pub fn build(catalog: &Catalog, tenant_id: i32, skip: &[TableRef]) -> Self {
        let candidates: Vec<&crate::catalog::Table> = catalog
            .tables()
            .filter(|t| !skip.contains(&t.table))
            .collect();
        let direct: BTreeSet<TableRef> = candidates
            .iter()
            .filter(|t| t.has_tenant_id())
            .map(|t| t.table.clone())
            .collect();
        let links = derive_links(catalog, &candidates, &direct);

        let mut plan = Self {
            tenant_id,
            tables: Vec::new(),
            excluded: Vec::new(),
            ownership: OwnershipPlan {
                tenant_column: TENANT_COLUMN.to_owned(),
                tables: Vec::new(),
            },
            load_order: Ok(LoadOrder::default()),
        };
        for t in &candidates {
            let (ownership, rule) = if direct.contains(&t.table) {
                (Ownership::Direct, OwnershipRule::Direct)
            } else if let Some(fks) = links.get(&t.table) {
                (
                    Ownership::ThroughForeignKeys(fks.iter().map(|fk| fk.name.clone()).collect()),
                    OwnershipRule::ThroughForeignKeys {
                        keys: fks.iter().map(link_of).collect(),
                    },
                )
            } else {
                plan.excluded
                    .push((t.table.clone(), PLATFORM_REASON.to_owned()));
                continue;
            };
            plan.ownership.tables.push(OwnedTableEntry {
                schema: t.table.schema.clone(),
                name: t.table.name.clone(),
                rule,
            });
            plan.tables.push(OwnedTable {
                table: t.table.clone(),
                predicate: String::new(),
                ownership,
            });
        }
        for i in 0..plan.tables.len() {
            let predicate = plan
                .predicate_over(&plan.tables[i].table, "t")
                .unwrap_or_default();
            plan.tables[i].predicate = predicate;
        }
        plan.load_order = graph::load_order(&plan.table_refs(), &edges(catalog, &plan));
        plan
    }

    /// The typed ownership of every owned table.
    pub fn ownership(&self) -> &OwnershipPlan {
        &self.ownership
    }

    /// The owned table `table`, if the plan covers it.
    pub fn table(&self, table: &TableRef) -> Option<&OwnedTable> {
        self.tables.iter().find(|t| &t.table == table)
    }

    fn table_refs(&self) -> Vec<TableRef> {
        self.tables.iter().map(|t| t.table.clone()).collect()
    }

    /// Parents-first load order with its cycle breakers.
    ///
    /// # Errors
    /// A foreign-key cycle among the tenant's tables that neither nullable columns nor
    /// deferrable constraints can break.
    pub fn load_order(&self) -> Result<&LoadOrder, UnbreakableCycle> {
        self.load_order.as_ref().map_err(Clone::clone)
    }

    /// The ownership predicate of `table` over the alias `alias` (`None` if not owned),
    /// generated from the typed plan by [`predicate::predicate`].
    pub fn predicate_over(&self, table: &TableRef, alias: &str) -> Option<String> {
        self.table(table)?;
        predicate::predicate(&self.ownership, self.tenant_id, table, alias)
    }

    /// [`Self::predicate_over`] reading parent tables from `relation(table)` instead of the
    /// live tables.
    pub fn predicate_in(
        &self,
        table: &TableRef,
        alias: &str,
        relation: &dyn Fn(&TableRef) -> String,
    ) -> Option<String> {
        self.table(table)?;
        predicate::predicate_in(&self.ownership, self.tenant_id, table, alias, relation)
    }
}

fn link_of(fk: &ForeignKey) -> OwnershipLink {
    OwnershipLink {
        columns: fk.columns.clone(),
        parent_schema: fk.referenced.schema.clone(),
        parent_name: fk.referenced.name.clone(),
        parent_columns: fk.referenced_columns.clone(),
    }
}

/// Tables without `tenant_id` that reach owned tables through foreign keys, with those keys.
/// A fixpoint: a table joins once one of its parents is owned, so chains of join tables are
/// found whatever their length, and cycles among them terminate.
fn derive_links(
    catalog: &Catalog,
    candidates: &[&crate::catalog::Table],
    direct: &BTreeSet<TableRef>,
) -> BTreeMap<TableRef, Vec<ForeignKey>> {
    let mut owned: BTreeSet<TableRef> = direct.clone();
    loop {
        let newly: Vec<TableRef> = candidates
            .iter()
            .filter(|t| !owned.contains(&t.table))
            .filter(|t| {
                catalog
                    .fks_from(&t.table)
                    .any(|fk| owned.contains(&fk.referenced))
            })
            .map(|t| t.table.clone())
            .collect();
        if newly.is_empty() {
            break;
        }
        owned.extend(newly);
    }
    owned
        .iter()
        .filter(|t| !direct.contains(*t))
        .map(|t| {
            (
                t.clone(),
                catalog
                    .fks_from(t)
                    .filter(|fk| owned.contains(&fk.referenced))
                    .cloned()
                    .collect(),
            )
        })
        .collect()
}

/// Foreign keys between tables of the plan, for the load order.
fn edges(catalog: &Catalog, plan: &TenantPlan) -> Vec<graph::Edge> {
    catalog
        .foreign_keys
        .iter()
        .filter(|fk| plan.table(&fk.table).is_some() && plan.table(&fk.referenced).is_some())
        .map(|fk| {
            let child = catalog.table(&fk.table);
            let nullable = child.is_some_and(|t| {
                fk.columns
                    .iter()
                    .all(|c| t.column(c).is_some_and(|col| !col.not_null))
            });
            let has_pk = child.is_some_and(|t| !t.primary_key.is_empty());
            graph::Edge {
                child: fk.table.clone(),
                parent: fk.referenced.clone(),
                constraint: fk.name.clone(),
                columns: fk.columns.clone(),
                can_defer_columns: nullable && has_pk,
                deferrable: fk.deferrable,
            }
        })
        .collect()
}

/// Why a tenant id could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenants table: {0}")]
    TenantsTable(#[from] CatalogError),
    #[error("tenants table {0} has no \"id\" column")]
    NoIdColumn(TableRef),
    #[error("checking the tenant: {0}")]
    Database(#[from] sqlx::Error),
}

/// Whether `tenant_id` is a row of the tenants table (`TENANTS_TABLE`, default `infra_tenants`),
/// resolved and validated against `catalog` so the name never reaches SQL unchecked.
///
/// # Errors
/// An unknown or ambiguous tenants table, one without an `id` column, or a failing query.
pub async fn tenant_exists<'c>(
    conn: impl PgExecutor<'c>,
    catalog: &Catalog,
    tenants_table: &str,
    tenant_id: i32,
) -> Result<bool, TenantError> {
    let table = catalog.resolve(tenants_table)?;
    if catalog.table(&table).and_then(|t| t.column("id")).is_none() {
        return Err(TenantError::NoIdColumn(table));
    }
    // language=PostgreSQL
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE \"id\" = $1)",
        table.quoted()
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(tenant_id)
        .fetch_one(conn)
        .await?)
}
