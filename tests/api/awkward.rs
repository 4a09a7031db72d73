//! Oracles for `tests/fixtures/awkward.sql`, written from the fixture by hand (they share no
//! code with the worker): which column draws from which sequence, which rows are tenant 1's,
//! and whether a database can take new rows.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::helpers::table_checksum;

/// Every (sequence, table, column) of the fixture: owned serials, the identity, the renamed
/// unowned sequences used only by defaults, and the cross-schema sequence two tables share.
pub const DRAWS: &[(&str, &str, &str)] = &[
    ("public.infra_tenants_id_seq", "infra_tenants", "id"),
    ("public.root_users_id_seq", "core_users", "id"),
    ("public.core_departments_id_seq", "core_departments", "id"),
    ("public.core_roles_id_seq", "core_roles", "id"),
    ("public.root_user_roles_id_seq", "core_user_roles", "id"),
    (
        "public.root_operation_logs_id_seq",
        "core_operation_logs",
        "id",
    ),
    ("ids.doc_number_seq", "apps_orders", "number"),
    ("ids.doc_number_seq", "apps_invoices", "number"),
    ("public.apps_orders_id_seq", "apps_orders", "id"),
    ("public.apps_shipments_id_seq", "apps_shipments", "id"),
    ("public.apps_invoices_id_seq", "apps_invoices", "id"),
];

/// Sequences a text column draws from (`'INV-' || nextval(…)`): part of the schema, but there
/// is no maximum to keep them above.
pub const TEXT_DRAWS: &[(&str, &str)] = &[("public.root_invoice_code_seq", "apps_invoices")];

/// The fixture's tables.
pub const TABLES: &[&str] = &[
    "infra_tenants",
    "core_users",
    "core_departments",
    "core_roles",
    "core_user_roles",
    "core_operation_logs",
    "apps_orders",
    "apps_shipments",
    "apps_invoices",
];

/// Tenant `n`'s rows of `table`.
pub fn tenant_filter(table: &str, n: i32) -> String {
    match table {
        "core_user_roles" => {
            format!("user_id IN (SELECT id FROM core_users WHERE tenant_id = {n})")
        }
        _ => format!("tenant_id = {n}"),
    }
}

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("public.{table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Oracle checksums of the fixture's tables present in `pool`, each restricted by `filter`.
pub async fn checksums(
    pool: &PgPool,
    tables: &[&str],
    filter: impl Fn(&str) -> String,
) -> BTreeMap<String, (i64, String)> {
    let mut out = BTreeMap::new();
    for t in tables {
        out.insert(
            (*t).to_owned(),
            table_checksum(pool, &format!("public.{t}"), &filter(t)).await,
        );
    }
    out
}

/// `last_value` and `is_called` of every sequence in `names`.
pub async fn sequence_values(pool: &PgPool, names: &[&str]) -> BTreeMap<String, (i64, bool)> {
    let mut out = BTreeMap::new();
    for name in names {
        let v: (i64, bool) = sqlx::query_as(&format!("SELECT last_value, is_called FROM {name}"))
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.insert((*name).to_owned(), v);
    }
    out
}

/// The sequences of [`DRAWS`] that a column of `tables` draws from.
pub fn sequences_of(tables: &[&str]) -> Vec<&'static str> {
    let mut out: Vec<&str> = DRAWS
        .iter()
        .filter(|(_, t, _)| tables.contains(t))
        .map(|(s, _, _)| *s)
        .chain(
            TEXT_DRAWS
                .iter()
                .filter(|(_, t)| tables.contains(t))
                .map(|(s, _)| *s),
        )
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Every (sequence, column) of the present tables whose sequence has handed out less than the
/// column's maximum: each would make a future insert collide (or duplicate silently).
pub async fn sequences_behind(pool: &PgPool) -> Vec<String> {
    let mut behind = Vec::new();
    for (seq, table, column) in DRAWS {
        if !exists(pool, table).await {
            continue;
        }
        let sql = format!(
            "SELECT (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq}),
                    (SELECT max({column})::bigint FROM public.{table})"
        );
        let (used, max): (i64, Option<i64>) = sqlx::query_as(&sql)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        if max.is_some_and(|m| used < m) {
            behind.push(format!("{seq} at {used} < max({table}.{column}) = {max:?}"));
        }
    }
    behind
}

/// Inserts a row through the defaults into every present table; each must succeed and take an
/// id above every existing one (the operation log has no primary key to complain).
pub async fn insert_everywhere(pool: &PgPool) {
    let statements = [
        ("infra_tenants", "INSERT INTO infra_tenants (name) VALUES ('new') RETURNING id::bigint"),
        ("core_departments", "INSERT INTO core_departments (tenant_id, name) VALUES (1, 'new') RETURNING id::bigint"),
        ("core_users", "INSERT INTO core_users (tenant_id, username) VALUES (1, 'new-user') RETURNING id::bigint"),
        ("core_roles", "INSERT INTO core_roles (tenant_id, code) VALUES (1, 'new-role') RETURNING id::bigint"),
        ("core_user_roles", "INSERT INTO core_user_roles (user_id, role_id) SELECT min(id), 1 FROM core_users RETURNING id::bigint"),
        ("core_operation_logs", "INSERT INTO core_operation_logs (tenant_id, operation) VALUES (1, 'new') RETURNING id"),
        ("apps_orders", "INSERT INTO apps_orders (tenant_id) VALUES (1) RETURNING number"),
        ("apps_invoices", "INSERT INTO apps_invoices (tenant_id) VALUES (1) RETURNING number"),
        ("apps_shipments", "INSERT INTO apps_shipments (tenant_id) VALUES (1) RETURNING id::bigint"),
    ];
    for (table, sql) in statements {
        if !exists(pool, table).await {
            continue;
        }
        let column = if sql.ends_with("number") {
            "number"
        } else {
            "id"
        };
        let before: Option<i64> =
            sqlx::query_scalar(&format!("SELECT max({column})::bigint FROM public.{table}"))
                .fetch_one(pool)
                .await
                .unwrap();
        let new: i64 = sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("insert into {table}: {e}"));
        assert!(
            before.is_none_or(|b| new > b),
            "{table}.{column}: new value {new} is not above {before:?}"
        );
    }
}

/// Writes that move the live database on after a backup: new rows (sequences advance past
/// the backup's values), changed and deleted rows.
pub const LATER_WRITES: &str = "
    INSERT INTO core_users (tenant_id, username) SELECT 1, 'later' || g FROM generate_series(1, 3) g;
    INSERT INTO core_roles (tenant_id, code) VALUES (1, 'later');
    INSERT INTO core_user_roles (user_id, role_id) SELECT id, 1 FROM core_users WHERE username LIKE 'later%';
    INSERT INTO core_operation_logs (tenant_id, operation) VALUES (1, 'later'), (2, 'later');
    INSERT INTO apps_orders (tenant_id) VALUES (1), (2);
    INSERT INTO apps_invoices (tenant_id) VALUES (1);
    INSERT INTO apps_shipments (tenant_id) VALUES (1);
    INSERT INTO core_departments (tenant_id, name) VALUES (1, 'later');
    UPDATE core_users SET username = username || '-renamed' WHERE tenant_id = 1 AND username = 'user4';
    DELETE FROM core_operation_logs WHERE operation = 'op 2';
";
