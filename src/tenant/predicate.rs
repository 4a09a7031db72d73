//! SQL for a typed ownership plan: the boolean expression that selects a tenant's rows of one
//! table. Generated where it is used (backup COPY, restore deletes, re-hashing), never stored.
//!
//! A table with the tenant column: `t."tenant_id" = <tenant>`. A table reached through foreign
//! keys: at least one key reaches a row of the tenant, and none reaches another tenant's row
//! (see the module documentation of [`crate::tenant`]). Keys back to a table already on the
//! path are skipped, so cycles among join tables terminate.

use crate::artifact::{OwnershipLink, OwnershipPlan};
use crate::catalog::TableRef;
use crate::pg::quote_ident;

/// The predicate of `table` over `alias`, `None` when the plan does not mention the table.
/// Nested `EXISTS` use aliases `rbk_o1`, `rbk_o2`, …, unique within the expression.
pub fn predicate(
    plan: &OwnershipPlan,
    tenant: i32,
    table: &TableRef,
    alias: &str,
) -> Option<String> {
    predicate_in(plan, tenant, table, alias, &|t: &TableRef| t.quoted())
}

/// [`predicate`] with the parent tables read from where `relation` says (a restore from a
/// whole-database backup selects the tenant's rows among the staged copies of the backup's
/// tables, so join rows are attributed by the backup's parent rows, not the live ones).
pub fn predicate_in(
    plan: &OwnershipPlan,
    tenant: i32,
    table: &TableRef,
    alias: &str,
    relation: &dyn Fn(&TableRef) -> String,
) -> Option<String> {
    plan.rule_of(table)?;
    let mut generator = Generator {
        plan,
        tenant,
        aliases: 0,
        path: Vec::new(),
        relation,
    };
    Some(generator.owned(table, alias))
}

#[derive(Clone, Copy)]
enum Side {
    Owned,
    Foreign,
}

struct Generator<'a> {
    plan: &'a OwnershipPlan,
    tenant: i32,
    aliases: usize,
    path: Vec<TableRef>,
    relation: &'a dyn Fn(&TableRef) -> String,
}

impl Generator<'_> {
    fn next_alias(&mut self) -> String {
        self.aliases += 1;
        format!("rbk_o{}", self.aliases)
    }

    fn usable(&self, table: &TableRef) -> Option<Vec<OwnershipLink>> {
        let links = self.plan.links_of(table)?;
        Some(
            links
                .iter()
                .filter(|l| !self.path.contains(&l.parent()))
                .cloned()
                .collect(),
        )
    }

    /// Rows of `table` (over `alias`) that belong to the tenant.
    fn owned(&mut self, table: &TableRef, alias: &str) -> String {
        self.path.push(table.clone());
        let Some(usable) = self.usable(table) else {
            self.path.pop();
            return format!(
                "{alias}.{} = {}",
                quote_ident(&self.plan.tenant_column),
                self.tenant
            );
        };
        let mine: Vec<String> = usable
            .iter()
            .map(|l| self.parent_exists(l, alias, Side::Owned))
            .collect();
        let theirs: Vec<String> = usable
            .iter()
            .map(|l| self.parent_exists(l, alias, Side::Foreign))
            .collect();
        self.path.pop();
        if mine.is_empty() {
            return "false".to_owned();
        }
        format!(
            "(({}) AND NOT ({}))",
            mine.join(" OR "),
            theirs.join(" OR ")
        )
    }

    /// Rows of `table` (over `alias`) that belong to some other tenant: for tenant tables a
    /// different non-NULL tenant id, for the others a reference to such a row.
    fn foreign(&mut self, table: &TableRef, alias: &str) -> String {
        self.path.push(table.clone());
        let Some(usable) = self.usable(table) else {
            self.path.pop();
            return format!(
                "{alias}.{} <> {}",
                quote_ident(&self.plan.tenant_column),
                self.tenant
            );
        };
        let theirs: Vec<String> = usable
            .iter()
            .map(|l| self.parent_exists(l, alias, Side::Foreign))
            .collect();
        self.path.pop();
        if theirs.is_empty() {
            return "false".to_owned();
        }
        format!("({})", theirs.join(" OR "))
    }

    /// `EXISTS` a parent row through `link` (child over `alias`) that is owned / foreign.
    fn parent_exists(&mut self, link: &OwnershipLink, alias: &str, side: Side) -> String {
        let parent = self.next_alias();
        let join: Vec<String> = link
            .columns
            .iter()
            .zip(&link.parent_columns)
            .map(|(c, r)| format!("{parent}.{} = {alias}.{}", quote_ident(r), quote_ident(c)))
            .collect();
        let parent_table = link.parent();
        let condition = match side {
            Side::Owned => self.owned(&parent_table, &parent),
            Side::Foreign => self.foreign(&parent_table, &parent),
        };
        format!(
            "EXISTS (SELECT 1 FROM {} AS {parent} WHERE {} AND {condition})",
            (self.relation)(&parent_table),
            join.join(" AND ")
        )
    }
}
