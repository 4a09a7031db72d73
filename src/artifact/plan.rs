//! The typed ownership plan of a tenant artifact: for each table, whether its rows carry the
//! tenant column themselves or are reached through foreign keys to owned tables. A restore
//! compares it structurally with the plan the live schema implies; the SQL that selects the
//! rows is generated from it where it is used ([`crate::tenant::predicate`]), so a cosmetic
//! change in that generator never makes an existing backup unrestorable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::TableRef;

/// Every table a tenant artifact's row filters mention, and how its rows belong to the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipPlan {
    /// The column that marks tenant rows (`tenant_id`).
    pub tenant_column: String,
    /// Sorted by table; the backed-up tables and every table their foreign-key paths reach.
    pub tables: Vec<OwnedTableEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedTableEntry {
    pub schema: String,
    pub name: String,
    pub rule: OwnershipRule,
}

impl OwnedTableEntry {
    pub fn table_ref(&self) -> TableRef {
        TableRef::new(&self.schema, &self.name)
    }
}

/// How one table's rows are attributed to the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OwnershipRule {
    /// The table has the tenant column: a row is the tenant's when it holds the tenant's id.
    Direct,
    /// No tenant column: a row is the tenant's when one of these keys reaches a row of the
    /// tenant and none reaches another tenant's row. In catalog order (constraint names).
    ThroughForeignKeys { keys: Vec<OwnershipLink> },
}

/// One foreign key: `columns` of the table reference `parent_columns` of the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipLink {
    pub columns: Vec<String>,
    pub parent_schema: String,
    pub parent_name: String,
    pub parent_columns: Vec<String>,
}

impl OwnershipLink {
    pub fn parent(&self) -> TableRef {
        TableRef::new(&self.parent_schema, &self.parent_name)
    }
}

impl OwnershipPlan {
    /// The rule of `table`, if the plan mentions it.
    pub fn rule_of(&self, table: &TableRef) -> Option<&OwnershipRule> {
        self.tables
            .iter()
            .find(|t| t.schema == table.schema && t.name == table.name)
            .map(|t| &t.rule)
    }

    /// The foreign keys of `table` when it is owned through them (`None`: direct or absent).
    pub fn links_of(&self, table: &TableRef) -> Option<&[OwnershipLink]> {
        match self.rule_of(table)? {
            OwnershipRule::Direct => None,
            OwnershipRule::ThroughForeignKeys { keys } => Some(keys),
        }
    }

    /// `table`'s rule and the rules of every table its keys reach, transitively: everything
    /// that decides which of its rows are the tenant's. Two plans select the same rows of
    /// `table` when these are equal.
    pub fn closure(&self, table: &TableRef) -> BTreeMap<TableRef, OwnershipRule> {
        let mut out = BTreeMap::new();
        let mut pending = vec![table.clone()];
        while let Some(t) = pending.pop() {
            if out.contains_key(&t) {
                continue;
            }
            let Some(rule) = self.rule_of(&t) else {
                continue;
            };
            if let OwnershipRule::ThroughForeignKeys { keys } = rule {
                pending.extend(keys.iter().map(OwnershipLink::parent));
            }
            out.insert(t, rule.clone());
        }
        out
    }

    /// The part of this plan that `tables` need (their closures), sorted.
    #[must_use]
    pub fn restricted_to(&self, tables: &[TableRef]) -> Self {
        let mut keep = BTreeMap::new();
        for t in tables {
            keep.extend(self.closure(t));
        }
        Self {
            tenant_column: self.tenant_column.clone(),
            tables: keep
                .into_iter()
                .map(|(t, rule)| OwnedTableEntry {
                    schema: t.schema,
                    name: t.name,
                    rule,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(parent: &str) -> OwnershipLink {
        OwnershipLink {
            columns: vec![format!("{parent}_id")],
            parent_schema: "public".into(),
            parent_name: parent.into(),
            parent_columns: vec!["id".into()],
        }
    }

    fn plan() -> OwnershipPlan {
        let entry = |name: &str, rule| OwnedTableEntry {
            schema: "public".into(),
            name: name.into(),
            rule,
        };
        OwnershipPlan {
            tenant_column: "tenant_id".into(),
            tables: vec![
                entry("roles", OwnershipRule::Direct),
                entry("users", OwnershipRule::Direct),
                entry(
                    "user_roles",
                    OwnershipRule::ThroughForeignKeys {
                        keys: vec![link("users"), link("roles")],
                    },
                ),
            ],
        }
    }

    #[test]
    fn the_closure_of_a_join_table_holds_its_parents_and_a_direct_table_only_itself() {
        let p = plan();
        let join = p.closure(&TableRef::new("public", "user_roles"));
        assert_eq!(join.len(), 3);
        assert_eq!(p.closure(&TableRef::new("public", "users")).len(), 1);
        assert_eq!(
            p.restricted_to(&[TableRef::new("public", "users")])
                .tables
                .len(),
            1
        );
    }

    #[test]
    fn the_plan_survives_json_and_a_changed_key_is_a_structural_difference() {
        let p = plan();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""kind":"through_foreign_keys""#), "{json}");
        let back: OwnershipPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let mut changed = p.clone();
        if let OwnershipRule::ThroughForeignKeys { keys } = &mut changed.tables[2].rule {
            keys[0].columns = vec!["owner_id".into()];
        }
        let t = TableRef::new("public", "user_roles");
        assert_ne!(changed.closure(&t), p.closure(&t));
    }
}
