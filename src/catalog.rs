//! What the database contains, read from the system catalogs: tables, columns, primary and
//! foreign keys, sequences. Every identifier that reaches SQL or `pg_dump` is validated here
//! against this catalog first; user input never goes into a query as text.
//!
//! Tables are ordinary and partitioned tables outside the system schemas, not partitions (a
//! partitioned parent is copied through `SELECT`, which includes its partitions' rows) and not
//! tables owned by extensions (pg_dump skips their data too). Partitions are only remembered
//! with the table at the root of their tree, so a name that is one gets a useful error.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::pg::quote_ident;

/// A table's schema-qualified name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    pub schema: String,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: &str, name: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `"schema"."name"`, safe to splice into SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `numeric(12,2)`, `character varying(36)`.
    #[serde(rename = "type")]
    pub type_name: String,
    pub not_null: bool,
    /// `Some('a')` GENERATED ALWAYS, `Some('d')` BY DEFAULT identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<char>,
    /// A stored generated column: never copied (COPY FROM cannot load it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    pub table: TableRef,
    pub columns: Vec<String>,
    pub referenced: TableRef,
    pub referenced_columns: Vec<String>,
    /// `confdeltype`: a = no action, r = restrict, c = cascade, n = set null, d = set default.
    pub on_delete: char,
    pub deferrable: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub table: TableRef,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The RiverEdge convention: an `int` column named `tenant_id` marks tenant-owned rows.
    pub fn has_tenant_id(&self) -> bool {
        self.column("tenant_id").is_some()
    }

    /// Columns that are copied (all but stored generated columns), in table order.
    pub fn copy_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }
}

/// A sequence and every column that draws from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub sequence: TableRef,
    /// The column the sequence belongs to (`OWNED BY`, serial or identity), if any.
    pub owned_by: Option<(TableRef, String)>,
    /// Every column of a catalog table that takes values from it: the owner, and any column
    /// whose default calls `nextval` on it. RiverEdge's renamed `root_*_id_seq` sequences have
    /// lost their ownership and are reached only this way. Integer columns only: their maximum
    /// is what a restore must keep the sequence above. Sorted, without duplicates.
    pub used_by: Vec<(TableRef, String)>,
    /// Every catalog table with a column of any type that draws from it (a text default such as
    /// `'INV-' || nextval('…')` too): a backup of the table needs the sequence. Sorted.
    pub tables: Vec<TableRef>,
}

impl Sequence {
    /// Whether a column of `table` draws from this sequence.
    pub fn feeds(&self, table: &TableRef) -> bool {
        self.tables.contains(table)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    tables: BTreeMap<TableRef, Table>,
    /// Every partition (at any depth) and the catalog table at the root of its tree: partitions
    /// are not tables of their own here, but a user may name one.
    partitions: BTreeMap<TableRef, TableRef>,
    pub foreign_keys: Vec<ForeignKey>,
    pub sequences: Vec<Sequence>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("table {0:?} does not exist")]
    UnknownTable(String),
    #[error(
        "table name {name:?} is ambiguous: it exists in schemas {schemas}; write schema.table"
    )]
    Ambiguous { name: String, schemas: String },
    #[error("{0:?} is not a valid table name (use table or schema.table)")]
    Invalid(String),
    #[error(
        "table {partition} is a partition of {parent}: choose {parent}, which includes all its partitions"
    )]
    Partition { partition: String, parent: String },
}

/// One column of one table (tables without columns come with NULLs), from `pg_attribute`.
#[derive(sqlx::FromRow)]
struct ColumnRow {
    schema: String,
    name: String,
    column: Option<String>,
    type_name: Option<String>,
    not_null: Option<bool>,
    identity: Option<String>,
    generated: Option<String>,
}

/// One foreign key from `pg_constraint`.
#[derive(sqlx::FromRow)]
struct ForeignKeyRow {
    name: String,
    schema: String,
    table: String,
    columns: Vec<String>,
    rschema: String,
    rtable: String,
    rcolumns: Vec<String>,
    on_delete: String,
    deferrable: bool,
}

/// One sequence and one column that uses it (owner or `nextval` default), if any.
#[derive(sqlx::FromRow)]
struct SequenceRow {
    schema: String,
    name: String,
    tschema: Option<String>,
    table: Option<String>,
    column: Option<String>,
    /// The row comes from `OWNED BY`/identity (`pg_depend` 'a'/'i'), not from a default.
    owner: Option<bool>,
    /// The column is of an integer type (a restore can compare its maximum with the sequence).
    integer: Option<bool>,
}

/// Schemas that never hold application data.
// language=PostgreSQL
const USER_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

impl Catalog {
    /// Reads the catalog through `pool`.
    ///
    /// Takes a pool rather than any executor: a generic `Copy` executor makes callers' futures
    /// fail rustc's `Send` check in async fns (rust-lang/rust#102211).
    ///
    /// # Errors
    /// A failing catalog query.
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let conn = pool;
        let mut tables = BTreeMap::new();
        // language=PostgreSQL
        let rows: Vec<ColumnRow> = sqlx::query_as(&format!(
            "SELECT n.nspname::text AS schema, c.relname::text AS name, a.attname::text AS column,
                    format_type(a.atttypid, a.atttypmod) AS type_name, a.attnotnull AS not_null,
                    nullif(a.attidentity, '')::text AS identity, nullif(a.attgenerated, '')::text AS generated
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {USER_SCHEMAS}
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype = 'e')
             ORDER BY n.nspname, c.relname, a.attnum"
        ))
        .fetch_all(conn)
        .await?;
        for ColumnRow {
            schema,
            name,
            column,
            type_name,
            not_null,
            identity,
            generated,
        } in rows
        {
            let key = TableRef::new(&schema, &name);
            let table = tables.entry(key.clone()).or_insert_with(|| Table {
                table: key,
                columns: Vec::new(),
                primary_key: Vec::new(),
            });
            if let (Some(column), Some(type_name)) = (column, type_name) {
                table.columns.push(Column {
                    name: column,
                    type_name,
                    not_null: not_null.unwrap_or(false),
                    identity: identity.and_then(|s| s.chars().next()),
                    generated: generated.is_some(),
                });
            }
        }

        // language=PostgreSQL
        let pks: Vec<(String, String, Vec<String>)> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text,
                    array_agg(a.attname::text ORDER BY k.ord)
             FROM pg_constraint con
             JOIN pg_class c ON c.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
             WHERE con.contype = 'p' AND {USER_SCHEMAS}
             GROUP BY n.nspname, c.relname"
        ))
        .fetch_all(conn)
        .await?;
        for (schema, name, cols) in pks {
            if let Some(t) = tables.get_mut(&TableRef::new(&schema, &name)) {
                t.primary_key = cols;
            }
        }

        // language=PostgreSQL
        let fk_rows: Vec<ForeignKeyRow> = sqlx::query_as(&format!(
            "SELECT con.conname::text AS name, n.nspname::text AS schema, c.relname::text AS table,
                    (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS columns,
                    rn.nspname::text AS rschema, rc.relname::text AS rtable,
                    (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
                       JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS rcolumns,
                    con.confdeltype::text AS on_delete, con.condeferrable AS deferrable
             FROM pg_constraint con
             JOIN pg_class c ON c.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class rc ON rc.oid = con.confrelid
             JOIN pg_namespace rn ON rn.oid = rc.relnamespace
             WHERE con.contype = 'f' AND con.conparentid = 0 AND {USER_SCHEMAS}
             ORDER BY n.nspname, c.relname, con.conname"
        ))
        .fetch_all(conn)
        .await?;
        let foreign_keys = fk_rows
            .into_iter()
            .map(
                |ForeignKeyRow {
                     name,
                     schema,
                     table,
                     columns,
                     rschema,
                     rtable,
                     rcolumns,
                     on_delete,
                     deferrable,
                 }| ForeignKey {
                    name,
                    table: TableRef::new(&schema, &table),
                    columns,
                    referenced: TableRef::new(&rschema, &rtable),
                    referenced_columns: rcolumns,
                    on_delete: on_delete.chars().next().unwrap_or('a'),
                    deferrable,
                },
            )
            .collect();

        // Ownership and identity are `pg_depend` entries of the sequence on the column ('a',
        // 'i'); a column default that calls `nextval('seq')` depends on the sequence through
        // its `pg_attrdef` row ('n'). The second half finds the columns that only use the
        // sequence that way, in any schema, without parsing the default's text.
        // language=PostgreSQL
        let seq_rows: Vec<SequenceRow> = sqlx::query_as(&format!(
            "WITH users AS (
                 SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS attnum, true AS owner
                 FROM pg_depend d
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
                 UNION
                 SELECT d.refobjid, ad.adrelid, ad.adnum, false
                 FROM pg_depend d
                 JOIN pg_attrdef ad ON ad.oid = d.objid
                 WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
                   AND d.deptype = 'n'
             )
             SELECT n.nspname::text AS schema, s.relname::text AS name, tn.nspname::text AS tschema,
                    t.relname::text AS table, a.attname::text AS column, u.owner,
                    a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype) AS integer
             FROM pg_class s
             JOIN pg_namespace n ON n.oid = s.relnamespace
             LEFT JOIN users u ON u.seq = s.oid
             LEFT JOIN pg_class t ON t.oid = u.rel
             LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
             LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = u.attnum AND NOT a.attisdropped
             WHERE s.relkind = 'S' AND {USER_SCHEMAS}
             ORDER BY n.nspname, s.relname, tn.nspname, t.relname, a.attname"
        ))
        .fetch_all(conn)
        .await?;
        let mut by_name: BTreeMap<TableRef, Sequence> = BTreeMap::new();
        for row in seq_rows {
            let key = TableRef::new(&row.schema, &row.name);
            let seq = by_name.entry(key.clone()).or_insert_with(|| Sequence {
                sequence: key,
                owned_by: None,
                used_by: Vec::new(),
                tables: Vec::new(),
            });
            let (Some(s), Some(t), Some(c)) = (row.tschema, row.table, row.column) else {
                continue;
            };
            let user = (TableRef::new(&s, &t), c);
            if row.owner == Some(true) {
                seq.owned_by = Some(user.clone());
            }
            if !tables.contains_key(&user.0) {
                continue;
            }
            if !seq.tables.contains(&user.0) {
                seq.tables.push(user.0.clone());
            }
            if row.integer == Some(true) && !seq.used_by.contains(&user) {
                seq.used_by.push(user);
            }
        }
        let sequences = by_name
            .into_values()
            .map(|mut s| {
                s.used_by.sort();
                s.tables.sort();
                s
            })
            .collect();

        // language=PostgreSQL
        let partition_rows: Vec<(String, String, String, String)> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, rn.nspname::text, r.relname::text
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
             JOIN pg_namespace rn ON rn.oid = r.relnamespace
             WHERE c.relispartition AND c.relkind IN ('r', 'p') AND {USER_SCHEMAS}"
        ))
        .fetch_all(conn)
        .await?;
        let partitions = partition_rows
            .into_iter()
            .map(|(s, n, rs, rn)| (TableRef::new(&s, &n), TableRef::new(&rs, &rn)))
            .filter(|(_, root)| tables.contains_key(root))
            .collect();

        Ok(Self {
            tables,
            partitions,
            foreign_keys,
            sequences,
        })
    }

    /// The same catalog without `skip` (our own bookkeeping tables, for instance).
    #[must_use]
    pub fn without(mut self, skip: &[TableRef]) -> Self {
        self.tables.retain(|t, _| !skip.contains(t));
        self.partitions.retain(|_, root| !skip.contains(root));
        self.foreign_keys
            .retain(|fk| !skip.contains(&fk.table) && !skip.contains(&fk.referenced));
        for seq in &mut self.sequences {
            seq.used_by.retain(|(t, _)| !skip.contains(t));
            seq.tables.retain(|t| !skip.contains(t));
        }
        self
    }

    pub fn table(&self, t: &TableRef) -> Option<&Table> {
        self.tables.get(t)
    }

    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.values()
    }

    /// The partitioned catalog table whose tree holds partition `t`, if `t` is one.
    pub fn partition_root(&self, t: &TableRef) -> Option<&TableRef> {
        self.partitions.get(t)
    }

    /// A partition named by the user: the error that names the table to choose instead.
    fn partition_error(&self, t: &TableRef) -> Option<CatalogError> {
        self.partitions.get(t).map(|root| CatalogError::Partition {
            partition: t.to_string(),
            parent: root.to_string(),
        })
    }

    /// Foreign keys declared on `t` (to its parents).
    pub fn fks_from<'a>(&'a self, t: &'a TableRef) -> impl Iterator<Item = &'a ForeignKey> + 'a {
        self.foreign_keys.iter().filter(move |fk| &fk.table == t)
    }

    /// Foreign keys that reference `t` (from its children).
    pub fn fks_to<'a>(&'a self, t: &'a TableRef) -> impl Iterator<Item = &'a ForeignKey> + 'a {
        self.foreign_keys
            .iter()
            .filter(move |fk| &fk.referenced == t)
    }

    /// Sequences feeding columns of `t` (owned, identity, or through a `nextval` default).
    pub fn sequences_of<'a>(&'a self, t: &'a TableRef) -> impl Iterator<Item = &'a Sequence> + 'a {
        self.sequences.iter().filter(move |s| s.feeds(t))
    }

    /// Resolves a user-supplied `table` or `schema.table` to a table of this catalog.
    ///
    /// # Errors
    /// Malformed, unknown, or (unqualified and present in several schemas) ambiguous names.
    pub fn resolve(&self, input: &str) -> Result<TableRef, CatalogError> {
        let input = input.trim();
        let valid_part = |s: &str| !s.is_empty() && s.len() <= 63 && !s.contains(['"', '\0', '\n']);
        let (schema, name) = match input.split_once('.') {
            Some((s, n)) if valid_part(s) && valid_part(n) && !n.contains('.') => (Some(s), n),
            None if valid_part(input) => (None, input),
            _ => return Err(CatalogError::Invalid(input.to_owned())),
        };
        match schema {
            Some(s) => {
                let key = TableRef::new(s, name);
                if self.tables.contains_key(&key) {
                    return Ok(key);
                }
                Err(self
                    .partition_error(&key)
                    .unwrap_or_else(|| CatalogError::UnknownTable(input.to_owned())))
            }
            None => {
                let found: Vec<&TableRef> = self.tables.keys().filter(|t| t.name == name).collect();
                match found.as_slice() {
                    [] => Err(self
                        .partitions
                        .keys()
                        .filter(|p| p.name == name)
                        .min_by_key(|p| p.schema != "public")
                        .and_then(|p| self.partition_error(p))
                        .unwrap_or_else(|| CatalogError::UnknownTable(input.to_owned()))),
                    [one] => Ok((*one).clone()),
                    many => {
                        // `public` is what an unqualified name means to the app (its search_path).
                        if let Some(public) = many.iter().find(|t| t.schema == "public") {
                            return Ok((*public).clone());
                        }
                        Err(CatalogError::Ambiguous {
                            name: name.to_owned(),
                            schemas: many
                                .iter()
                                .map(|t| t.schema.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
        }
    }

    /// Resolves every name, reporting all the bad ones together; duplicates are removed.
    ///
    /// # Errors
    /// The list of every name that failed, joined.
    pub fn resolve_all(&self, inputs: &[String]) -> Result<Vec<TableRef>, Vec<CatalogError>> {
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for input in inputs {
            match self.resolve(input) {
                Ok(t) if !ok.contains(&t) => ok.push(t),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(ok)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(names: &[(&str, &str)]) -> Catalog {
        let mut c = Catalog::default();
        for (s, n) in names {
            let t = TableRef::new(s, n);
            c.tables.insert(
                t.clone(),
                Table {
                    table: t,
                    columns: vec![],
                    primary_key: vec![],
                },
            );
        }
        c
    }

    #[test]
    fn resolves_qualified_unqualified_and_rejects_the_rest() {
        let c = catalog(&[
            ("public", "core_users"),
            ("audit", "events"),
            ("sales", "events"),
            ("public", "x"),
        ]);
        assert_eq!(
            c.resolve("core_users").unwrap(),
            TableRef::new("public", "core_users")
        );
        assert_eq!(
            c.resolve("audit.events").unwrap(),
            TableRef::new("audit", "events")
        );
        assert!(matches!(
            c.resolve("events"),
            Err(CatalogError::Ambiguous { .. })
        ));
        assert!(matches!(
            c.resolve("nope"),
            Err(CatalogError::UnknownTable(_))
        ));
        for bad in ["", "a.b.c", "x\"; DROP TABLE x; --", ".x", "x."] {
            assert!(c.resolve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolve_all_reports_every_unknown_name() {
        let c = catalog(&[("public", "a")]);
        let errs = c
            .resolve_all(&["a".into(), "b".into(), "c".into()])
            .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            c.resolve_all(&["a".into(), "public.a".into()])
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn quoting_survives_odd_names() {
        assert_eq!(
            TableRef::new("my schema", "we\"ird").quoted(),
            "\"my schema\".\"we\"\"ird\""
        );
    }

    #[test]
    fn a_partition_is_refused_naming_the_table_to_choose() {
        let mut c = catalog(&[("public", "events")]);
        c.partitions.insert(
            TableRef::new("public", "events_low"),
            TableRef::new("public", "events"),
        );
        let refused = || CatalogError::Partition {
            partition: "public.events_low".into(),
            parent: "public.events".into(),
        };
        assert_eq!(c.resolve("events_low"), Err(refused()));
        assert_eq!(c.resolve("public.events_low"), Err(refused()));
        assert_eq!(
            c.resolve("other.events_low"),
            Err(CatalogError::UnknownTable("other.events_low".into()))
        );
    }
}
