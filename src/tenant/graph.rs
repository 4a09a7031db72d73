//! The order in which a tenant's tables are loaded, and how foreign-key cycles are broken.
//!
//! Rows are inserted parents first so that every foreign key is satisfied when its row arrives
//! (constraints are checked per statement; `session_replication_role` is never used, because it
//! needs superuser rights and lets orphans in silently). A cycle has no "parents first" order, so
//! it is broken, in this order of preference:
//!
//! 1. **Deferred columns**: every nullable foreign-key column whose constraint lies inside a
//!    strongly connected component is loaded as NULL and set afterwards by an `UPDATE` through
//!    the primary key, once every row of the component exists. This needs a primary key on the
//!    child table (the `UPDATE` must find the row it inserted).
//! 2. **Deferred constraints**: a cycle that still remains may be closed by `DEFERRABLE`
//!    constraints, which the restore defers to commit time (`SET CONSTRAINTS … DEFERRED`).
//! 3. Otherwise the cycle cannot be loaded row by row at all, and the plan reports which tables
//!    and constraints form it.
//!
//! Every nullable constraint inside a component is deferred, not a minimal set: finding the
//! smallest set of edges that breaks all cycles is NP-hard, and deferring one more column only
//! costs one `UPDATE` of the tenant's rows of that table.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::catalog::TableRef;

/// A foreign key between two tables of the plan, reduced to what ordering needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub child: TableRef,
    pub parent: TableRef,
    pub constraint: String,
    pub columns: Vec<String>,
    /// Every column of the key is nullable and the child has a primary key, so the key can be
    /// loaded as NULL and set later.
    pub can_defer_columns: bool,
    /// The constraint is `DEFERRABLE`.
    pub deferrable: bool,
}

/// Parents-first load order with the cycle breakers it relies on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOrder {
    /// Every table of the plan, parents before children (restore deletes in reverse).
    pub tables: Vec<TableRef>,
    /// Per table, the foreign-key columns loaded as NULL and set after all rows are in.
    pub deferred_columns: BTreeMap<TableRef, Vec<String>>,
    /// `DEFERRABLE` constraints (table, constraint name) that must be deferred to commit.
    pub deferred_constraints: Vec<(TableRef, String)>,
}

impl LoadOrder {
    /// The deferred columns of `table` (empty when it is not part of a cycle).
    pub fn deferred_columns_of(&self, table: &TableRef) -> &[String] {
        self.deferred_columns.get(table).map_or(&[], Vec::as_slice)
    }
}

/// A cycle that neither nullable columns nor deferrable constraints can break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the foreign-key cycle through {} cannot be loaded: its constraints {} have NOT NULL columns (or a child without a primary key) and are not DEFERRABLE",
    join(tables), constraints.join(", ")
)]
pub struct UnbreakableCycle {
    pub tables: Vec<TableRef>,
    pub constraints: Vec<String>,
}

fn join(tables: &[TableRef]) -> String {
    tables
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Computes the load order of `tables` under the foreign keys `edges` (edges whose ends are not
/// both in `tables` are ignored).
///
/// # Errors
/// A cycle that cannot be broken (see the module documentation).
pub fn load_order(tables: &[TableRef], edges: &[Edge]) -> Result<LoadOrder, UnbreakableCycle> {
    let mut nodes: Vec<TableRef> = tables.to_vec();
    nodes.sort();
    nodes.dedup();
    let index = |t: &TableRef| nodes.binary_search(t).ok();
    let mut remaining: Vec<(usize, usize, &Edge)> = edges
        .iter()
        .filter_map(|e| Some((index(&e.child)?, index(&e.parent)?, e)))
        .collect();

    let mut order = LoadOrder::default();
    let component = components(nodes.len(), &remaining);
    remaining.retain(|&(c, p, e)| {
        let in_cycle = component[c] == component[p];
        if in_cycle && e.can_defer_columns {
            let cols = order.deferred_columns.entry(e.child.clone()).or_default();
            cols.extend(
                e.columns
                    .iter()
                    .filter(|col| !cols.contains(col))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            return false;
        }
        true
    });

    let component = components(nodes.len(), &remaining);
    remaining.retain(|&(c, p, e)| {
        let in_cycle = component[c] == component[p];
        if in_cycle && e.deferrable {
            order
                .deferred_constraints
                .push((e.child.clone(), e.constraint.clone()));
            return false;
        }
        true
    });

    let component = components(nodes.len(), &remaining);
    let stuck: Vec<&Edge> = remaining
        .iter()
        .filter(|&&(c, p, _)| component[c] == component[p])
        .map(|&(_, _, e)| e)
        .collect();
    if !stuck.is_empty() {
        let mut tables: Vec<TableRef> = stuck
            .iter()
            .flat_map(|e| [e.child.clone(), e.parent.clone()])
            .collect();
        tables.sort();
        tables.dedup();
        return Err(UnbreakableCycle {
            tables,
            constraints: stuck.iter().map(|e| e.constraint.clone()).collect(),
        });
    }

    order.tables = topological(&nodes, &remaining);
    Ok(order)
}

/// Kahn's algorithm over an acyclic graph; ties go to the smallest name, so the order is stable.
fn topological(nodes: &[TableRef], edges: &[(usize, usize, &Edge)]) -> Vec<TableRef> {
    let mut pending_parents = vec![0usize; nodes.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for &(c, p, _) in edges {
        pending_parents[c] += 1;
        children[p].push(c);
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&i| pending_parents[i] == 0)
        .map(Reverse)
        .collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(Reverse(n)) = ready.pop() {
        out.push(nodes[n].clone());
        for &c in &children[n] {
            pending_parents[c] -= 1;
            if pending_parents[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    out
}

/// Strongly connected component id of every node (Tarjan). A node with a self-loop shares its
/// component with itself, so `component[child] == component[parent]` detects every cycle edge.
fn components(n: usize, edges: &[(usize, usize, &Edge)]) -> Vec<usize> {
    let mut adjacency: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(c, p, _) in edges {
        adjacency[c].push(p);
    }
    let mut state = Tarjan {
        adjacency,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        component: vec![0; n],
        components: 0,
    };
    for v in 0..n {
        if state.index[v].is_none() {
            state.visit(v);
        }
    }
    state.component
}

struct Tarjan {
    adjacency: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    component: Vec<usize>,
    components: usize,
}

impl Tarjan {
    /// Recursion depth is bounded by the number of tables in one dependency chain, which stays
    /// in the hundreds for any real schema.
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for i in 0..self.adjacency[v].len() {
            let w = self.adjacency[v][i];
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(wi) if self.on_stack[w] => self.low[v] = self.low[v].min(wi),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                self.component[w] = self.components;
                if w == v {
                    break;
                }
            }
            self.components += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableRef {
        TableRef::new("public", name)
    }

    fn edge(
        child: &str,
        parent: &str,
        column: &str,
        can_defer_columns: bool,
        deferrable: bool,
    ) -> Edge {
        Edge {
            child: t(child),
            parent: t(parent),
            constraint: format!("{child}_{column}_fkey"),
            columns: vec![column.to_owned()],
            can_defer_columns,
            deferrable,
        }
    }

    fn position(order: &LoadOrder, name: &str) -> usize {
        order.tables.iter().position(|x| x == &t(name)).unwrap()
    }

    #[test]
    fn parents_come_before_children_without_deferrals_in_an_acyclic_graph() {
        let tables = [t("items"), t("orders"), t("customers")];
        let edges = [
            edge("items", "orders", "order_id", true, false),
            edge("orders", "customers", "customer_id", false, false),
        ];
        let order = load_order(&tables, &edges).unwrap();
        assert_eq!(order.tables, vec![t("customers"), t("orders"), t("items")]);
        assert!(order.deferred_columns.is_empty() && order.deferred_constraints.is_empty());
    }

    #[test]
    fn a_two_table_cycle_and_a_self_reference_are_broken_by_nullable_columns() {
        let tables = [t("users"), t("departments"), t("user_roles")];
        let edges = [
            edge("users", "departments", "department_id", true, false),
            edge("departments", "users", "manager_id", true, false),
            edge("departments", "departments", "parent_id", true, false),
            edge("user_roles", "users", "user_id", false, false),
        ];
        let order = load_order(&tables, &edges).unwrap();
        assert_eq!(order.deferred_columns_of(&t("users")), ["department_id"]);
        assert_eq!(
            order.deferred_columns_of(&t("departments")),
            ["manager_id", "parent_id"]
        );
        assert!(position(&order, "users") < position(&order, "user_roles"));
        assert!(
            order.deferred_columns_of(&t("user_roles")).is_empty(),
            "edges outside cycles are never deferred"
        );
    }

    #[test]
    fn a_not_null_edge_inside_a_cycle_stays_and_orders_its_tables() {
        let tables = [t("items"), t("work_orders")];
        let edges = [
            edge("items", "work_orders", "work_order_id", true, false),
            edge("work_orders", "items", "item_id", false, false),
        ];
        let order = load_order(&tables, &edges).unwrap();
        assert_eq!(order.tables, vec![t("items"), t("work_orders")]);
        assert_eq!(order.deferred_columns_of(&t("items")), ["work_order_id"]);
    }

    #[test]
    fn a_cycle_of_not_null_columns_is_broken_only_by_deferrable_constraints() {
        let tables = [t("a"), t("b")];
        let deferrable = [
            edge("a", "b", "b_id", false, true),
            edge("b", "a", "a_id", false, false),
        ];
        let order = load_order(&tables, &deferrable).unwrap();
        assert_eq!(
            order.deferred_constraints,
            vec![(t("a"), "a_b_id_fkey".to_owned())]
        );
        assert_eq!(order.tables, vec![t("a"), t("b")]);

        let stuck = [
            edge("a", "b", "b_id", false, false),
            edge("b", "a", "a_id", false, false),
        ];
        let err = load_order(&tables, &stuck).unwrap_err();
        assert_eq!(err.tables, vec![t("a"), t("b")]);
        assert_eq!(err.constraints.len(), 2);
        assert!(err.to_string().contains("public.a"), "{err}");
    }

    #[test]
    fn edges_to_tables_outside_the_plan_are_ignored() {
        let order = load_order(&[t("a")], &[edge("a", "platform", "p_id", false, false)]).unwrap();
        assert_eq!(order.tables, vec![t("a")]);
    }
}
