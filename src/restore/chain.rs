//! Restoring an incremental: its chain (the full and every incremental up to it, each manifest
//! checked against its row), loaded as the full and then each incremental's changes applied in
//! order (docs/incremental.md). The delta step runs inside the existing restore paths, after
//! the base rows are in and before constraints and the final verification.

use sqlx::PgConnection;

use super::{RestoreError, TableEntry};
use crate::artifact::{DeltaMode, Manifest};
use crate::catalog::TableRef;
use crate::pg::quote_ident;
use crate::startup::AppState;
use crate::storage::Storage;

/// `manifest`'s chain, the full first and `manifest` last (just `[manifest]` for a full).
///
/// # Errors
/// A member that is gone, unsuccessful or whose manifest does not match its row; a chain that
/// does not end in a full.
pub async fn resolve(state: &AppState, manifest: &Manifest) -> Result<Vec<Manifest>, RestoreError> {
    let mut chain = vec![manifest.clone()];
    loop {
        let incremental = chain.last().is_some_and(|m| m.is_incremental());
        if !incremental {
            break;
        }
        let last = chain
            .last()
            .map(|m| (m.backup_uuid.clone(), m.parent_uuid.clone()));
        let Some((child, Some(parent))) = last else {
            return Err(RestoreError::BrokenChain(format!(
                "incremental {} names no parent",
                manifest.backup_uuid
            )));
        };
        if chain.len() > crate::backup::incremental::MAX_CHAIN {
            return Err(RestoreError::BrokenChain(format!(
                "the chain of {} is longer than {} backups",
                manifest.backup_uuid,
                crate::backup::incremental::MAX_CHAIN
            )));
        }
        let found = match super::manifest_of(state, &parent).await {
            Ok(m) => m,
            Err(RestoreError::UnknownBackup(_) | RestoreError::NotRestorable { .. }) => {
                return Err(RestoreError::BrokenChain(format!(
                    "{child} builds on {parent}, which is gone or did not succeed"
                )))
            }
            Err(e) => return Err(e),
        };
        chain.push(found);
    }
    chain.reverse();
    Ok(chain)
}

/// The base's entries for the tables of `entries` (a chain's members share one table set: a
/// schema change always starts a new chain).
///
/// # Errors
/// A table the base does not have.
pub(super) fn base_entries<'m>(
    base: &'m Manifest,
    entries: &[&TableEntry],
) -> Result<Vec<&'m TableEntry>, RestoreError> {
    let tables: Vec<TableRef> = entries.iter().map(|e| e.table_ref()).collect();
    super::select_entries(base, Some(&tables)).map_err(|_| {
        RestoreError::BrokenChain(format!(
            "the full {} lacks tables of the incremental",
            base.backup_uuid
        ))
    })
}

/// Applies one incremental's changes to `tables` through `conn` (inside the caller's
/// transaction; foreign keys between the tables must be absent or dropped): tables captured
/// whole are replaced, the others lose the rows whose keys are not in the key list and get
/// every changed row (deleted and inserted again by key).
///
/// # Errors
/// A damaged file (the COPY fails), database errors.
pub(super) async fn apply(
    conn: &mut PgConnection,
    storage: &dyn Storage,
    delta: &Manifest,
    tables: &[TableRef],
) -> Result<(), RestoreError> {
    for entry in &delta.tables {
        if !tables.contains(&entry.table_ref()) {
            continue;
        }
        let Some(d) = &entry.delta else {
            return Err(RestoreError::BrokenChain(format!(
                "{} of incremental {} has no delta",
                entry.table_ref(),
                delta.backup_uuid
            )));
        };
        let table = entry.table_ref().quoted();
        match (d.mode, d.keys.as_deref()) {
            (DeltaMode::Whole, _) => {
                exec(conn, &format!("DELETE FROM {table}")).await?;
                super::load::copy_entry_into(conn, storage, entry, &table).await?;
            }
            (DeltaMode::Changes, Some(keys)) => {
                apply_changes(conn, storage, entry, keys, &table).await?;
            }
            (DeltaMode::Changes, None) => {
                return Err(RestoreError::BrokenChain(format!(
                    "{} of incremental {} has no key list",
                    entry.table_ref(),
                    delta.backup_uuid
                )))
            }
        }
    }
    Ok(())
}

const KEYS: &str = "pg_temp.rbk_delta_keys";
const ROWS: &str = "pg_temp.rbk_delta_rows";

async fn apply_changes(
    conn: &mut PgConnection,
    storage: &dyn Storage,
    entry: &TableEntry,
    keys: &TableEntry,
    table: &str,
) -> Result<(), RestoreError> {
    let key_cols = column_list(&entry.primary_key);
    let names: Vec<String> = entry.columns.iter().map(|c| c.name.clone()).collect();
    let all_cols = column_list(&names);
    let (by_k, by_r) = (
        key_match(&entry.primary_key, "k"),
        key_match(&entry.primary_key, "r"),
    );
    // Temporary tables shaped like the target's columns (types included), gone at commit.
    exec(
        conn,
        &format!("CREATE TEMP TABLE rbk_delta_keys ON COMMIT DROP AS SELECT {key_cols} FROM {table} LIMIT 0"),
    )
    .await?;
    exec(
        conn,
        &format!("CREATE TEMP TABLE rbk_delta_rows ON COMMIT DROP AS SELECT {all_cols} FROM {table} LIMIT 0"),
    )
    .await?;
    super::load::copy_entry_into(conn, storage, keys, KEYS).await?;
    super::load::copy_entry_into(conn, storage, entry, ROWS).await?;
    exec(conn, &format!("ANALYZE {KEYS}")).await?;
    exec(conn, &format!("ANALYZE {ROWS}")).await?;
    // Hard deletes: rows whose key is no longer there.
    exec(
        conn,
        &format!("DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM {KEYS} k WHERE {by_k})"),
    )
    .await?;
    // Changed rows: the old version (if any) out, the new one in.
    exec(
        conn,
        &format!("DELETE FROM {table} t USING {ROWS} r WHERE {by_r}"),
    )
    .await?;
    exec(
        conn,
        &format!(
            "INSERT INTO {table} ({all_cols}) OVERRIDING SYSTEM VALUE SELECT {all_cols} FROM {ROWS}"
        ),
    )
    .await?;
    exec(conn, &format!("DROP TABLE {KEYS}, {ROWS}")).await?;
    Ok(())
}

fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `<alias>.k1 = t.k1 AND …` over the primary key.
fn key_match(key: &[String], alias: &str) -> String {
    key.iter()
        .map(|k| format!("{alias}.{k} = t.{k}", k = quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), RestoreError> {
    // Not prepared: the temporary tables are recreated for every table and incremental.
    sqlx::query(sql)
        .persistent(false)
        .execute(conn)
        .await
        .map_err(RestoreError::db("applying an incremental"))?;
    Ok(())
}
