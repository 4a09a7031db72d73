//! The schema archive (`schema.dump`): which relations `pg_dump` leaves out for each scope, the
//! dump itself, and the tables a whole-database archive holds without a data file of their own.

use sqlx::PgConnection;

use super::{BackupError, BackupScope, ValidatedSpec};
use crate::artifact::{self, ExcludedTable, SCHEMA_FILE};
use crate::catalog::TableRef;
use crate::pg::{quote_ident, PgCommand};
use crate::startup::AppState;

/// `pg_dump -t` takes a pattern; a double-quoted part matches literally (`""` is a quote).
fn literal_pattern(t: &TableRef) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}

/// What the schema archive leaves out. A whole-database backup: our own tables. Any other
/// scope: every relation (table, view, sequence, …) that is neither a selected table nor a
/// sequence a selected table draws from. Excluding rather than listing (`--table`) keeps
/// everything the selected tables need that `--table` would drop: their schemas, types and
/// domains, functions their defaults and triggers call, and the sequences they use only
/// through `DEFAULT nextval(…)`.
fn pg_dump_args(validated: &ValidatedSpec, snapshot_id: &str, others: &[TableRef]) -> Vec<String> {
    let mut args = vec![
        "--format=custom".to_owned(),
        "--schema-only".to_owned(),
        "--no-sync".to_owned(),
        format!("--snapshot={snapshot_id}"),
    ];
    let excluded = if validated.spec.scope == BackupScope::All {
        super::selection::own_tables(&validated.catalog)
    } else {
        others.to_vec()
    };
    args.extend(
        excluded
            .iter()
            .map(|t| format!("--exclude-table={}", literal_pattern(t))),
    );
    args
}

/// Every relation of the snapshot that a table or tenant backup's schema must leave out (see
/// [`pg_dump_args`]), read on the coordinator so it is exactly what `pg_dump` sees.
pub(super) async fn relations_outside(
    conn: &mut PgConnection,
    validated: &ValidatedSpec,
) -> Result<Vec<TableRef>, BackupError> {
    if validated.spec.scope == BackupScope::All {
        return Ok(Vec::new());
    }
    // language=PostgreSQL
    // A partition is kept with the selected table at the root of its tree: the rows are copied
    // through that table, and restoring them needs every partition to route them to.
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, rn.nspname::text, r.relname::text
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_class r ON c.relispartition AND r.oid = pg_partition_root(c.oid)
         LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
         ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await
    .map_err(BackupError::db("listing relations"))?;
    let keep: Vec<&TableRef> = validated
        .selection
        .tables
        .iter()
        .map(|t| &t.table.table)
        .chain(validated.selection.sequences.iter().map(|s| &s.sequence))
        .collect();
    Ok(rows
        .into_iter()
        .filter(
            |(_, _, root_schema, root_name)| match (root_schema, root_name) {
                (Some(s), Some(n)) => !keep.contains(&&TableRef::new(s, n)),
                _ => true,
            },
        )
        .map(|(schema, name, _, _)| TableRef::new(&schema, &name))
        .filter(|t| !keep.contains(&t))
        .collect())
}

/// Streams `pg_dump`'s archive into `<uuid>/schema.dump`. The password reaches `pg_dump`
/// through a private password file only.
#[tracing::instrument(skip_all)]
pub(super) async fn dump_schema(
    state: &AppState,
    validated: &ValidatedSpec,
    snapshot_id: &str,
    others: &[TableRef],
) -> Result<artifact::ObjectEntry, BackupError> {
    let key = artifact::prefix(&validated.spec.uuid)
        .and_then(|p| p.join(SCHEMA_FILE))
        .map_err(|e| BackupError::Invalid(e.to_string()))?;
    let passfile = state.conn.passfile().map_err(BackupError::storage)?;
    let mut running = PgCommand::new(
        state.bins.program("pg_dump"),
        state.settings.backup.step_timeout,
    )
    .args(pg_dump_args(validated, snapshot_id, others))
    .envs(state.conn.child_env(passfile.as_ref()))
    .piped_stdout()
    .spawn()?;
    let stdout = running.take_stdout();
    match artifact::write_schema(state.storage.as_ref(), &key, stdout).await {
        Ok(written) => {
            // The exit status decides: a killed pg_dump also ends its stdout cleanly.
            running.wait().await?;
            Ok(written.entry)
        }
        Err(e) => {
            running.kill().await;
            Err(BackupError::storage(e))
        }
    }
}

/// The selection's exclusions, plus every partition of a selected table (for a whole-database
/// backup, every partition): `pg_dump` writes a partition's table, but its rows are copied
/// through the partitioned table at the root of its tree, so verification must know why it has
/// no data file of its own.
pub(super) async fn excluded_tables(
    state: &AppState,
    validated: &ValidatedSpec,
) -> Result<Vec<ExcludedTable>, BackupError> {
    let mut out = validated.selection.excluded.clone();
    let whole = validated.spec.scope == BackupScope::All;
    let selected = validated.selection.table_refs();
    // language=PostgreSQL
    let partitions: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, rn.nspname::text, r.relname::text
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
         JOIN pg_namespace rn ON rn.oid = r.relnamespace
         WHERE c.relispartition AND c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         ORDER BY 1, 2",
    )
    .fetch_all(&state.pool)
    .await
    .map_err(BackupError::db("listing partitions"))?;
    let partitions = partitions
        .into_iter()
        .filter(|(_, _, rs, rn)| whole || selected.contains(&TableRef::new(rs, rn)))
        .map(|(schema, name, _, _)| (schema, name));
    out.extend(partitions.map(|(schema, name)| ExcludedTable {
        schema,
        name,
        reason: "partition: its rows are copied through its partitioned parent".to_owned(),
    }));
    Ok(out)
}
