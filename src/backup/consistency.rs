//! The backup's contents must be what validation chose: a table that vanished before it could
//! be locked, or a catalog that changed between validation and the snapshot (a table created
//! or dropped, columns, foreign keys or sequences altered), refuses the backup with a
//! retriable [`BackupError::SchemaChanged`]; the retry validates afresh.

use super::{BackupError, ValidatedSpec};
use crate::catalog::{Catalog, Column, TableRef};
use crate::startup::AppState;

/// A table that vanished before it could be locked is a schema change (retriable), not a
/// database failure.
pub(super) fn snapshot_error(e: sqlx::Error) -> BackupError {
    match e.as_database_error().and_then(|d| d.code()).as_deref() {
        Some("42P01") => BackupError::SchemaChanged(format!(
            "a selected table was dropped before it could be locked: {e}"
        )),
        _ => BackupError::Database {
            context: "locking the tables and exporting the snapshot",
            source: e,
        },
    }
}

/// What the backup will contain must still be what validation chose, now that the tables are
/// locked and the snapshot taken: the same tables (none created or dropped in between, which
/// for a whole-database or tenant backup would change the set, and would put a table in the
/// schema dump without a data file), with the same columns and the same sequences. The
/// selection is recomputed from the catalog as it is now and compared; a difference refuses
/// the backup with a retriable error (the retry validates afresh).
pub(super) async fn ensure_unchanged(
    state: &AppState,
    validated: &ValidatedSpec,
) -> Result<(), BackupError> {
    let now = Catalog::load(&state.pool)
        .await
        .map_err(BackupError::db("re-reading the catalog"))?;
    let again = super::selection::select(&now, &validated.spec).map_err(|e| {
        BackupError::SchemaChanged(format!("the selection no longer validates: {e}"))
    })?;
    let shape = |s: &super::Selection| {
        let tables: Vec<_> = s
            .tables
            .iter()
            .map(|t| {
                (
                    t.table.table.clone(),
                    t.table.columns.clone(),
                    t.predicate.clone(),
                )
            })
            .collect();
        let sequences: Vec<_> = s.sequences.iter().map(|q| q.sequence.clone()).collect();
        (tables, sequences)
    };
    let (before, after) = (shape(&validated.selection), shape(&again));
    if before == after {
        return Ok(());
    }
    let names = |v: &[(TableRef, Vec<Column>, Option<String>)]| {
        v.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
    };
    let (b, a) = (names(&before.0), names(&after.0));
    let mut changes: Vec<String> = Vec::new();
    changes.extend(
        a.iter()
            .filter(|t| !b.contains(t))
            .map(|t| format!("{t} appeared")),
    );
    changes.extend(
        b.iter()
            .filter(|t| !a.contains(t))
            .map(|t| format!("{t} was dropped")),
    );
    if changes.is_empty() {
        changes.push("columns, foreign keys or sequences of the selected tables changed".into());
    }
    Err(BackupError::SchemaChanged(changes.join(", ")))
}
