//! Which rows belong to a tenant, and how to put them back.
//!
//! INTERIM: this file fixes the interface the backup pipeline codes against; the ownership
//! analysis (join tables through foreign keys, cycle handling, load order) and the live tenant
//! restore are being written in this module now.

use crate::catalog::{Catalog, TableRef};
use crate::pg::quote_ident;

/// How a table's rows are attributed to the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The table has `tenant_id`: `t.tenant_id = <tenant>`.
    Direct,
    /// No `tenant_id`: rows are reached through these foreign keys to owned rows.
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

/// Everything a tenant backup covers, and what it leaves out and why.
#[derive(Debug, Clone)]
pub struct TenantPlan {
    pub tenant_id: i32,
    pub tables: Vec<OwnedTable>,
    pub excluded: Vec<(TableRef, String)>,
}

impl TenantPlan {
    /// The tenant's rows in every table of `catalog` except `skip` (our own tables).
    pub fn build(catalog: &Catalog, tenant_id: i32, skip: &[TableRef]) -> Self {
        let mut tables = Vec::new();
        let mut excluded = Vec::new();
        for t in catalog.tables().filter(|t| !skip.contains(&t.table)) {
            if t.has_tenant_id() {
                tables.push(OwnedTable {
                    table: t.table.clone(),
                    predicate: format!("t.{} = {tenant_id}", quote_ident("tenant_id")),
                    ownership: Ownership::Direct,
                });
            } else {
                excluded.push((t.table.clone(), "no tenant_id column".to_owned()));
            }
        }
        Self { tenant_id, tables, excluded }
    }
}
