//! Restore drills: a backup is only known to be good once it has been restored. A drill
//! restores it into a scratch database on the same server (schema from the backup's own
//! `schema.dump`, then its rows, then its sequences), re-reads every table and compares it
//! with the manifest, and always drops the scratch database.
//!
//! Every scope drills: a whole database, some tables, one tenant's rows (all tenant tables, or
//! some of them). A tenant's rows are rehearsed in a database of their own, which holds no
//! other tenant's rows and no platform rows: foreign keys to rows outside the backup (a
//! platform role, say) are skipped there and logged, and each table is compared as a whole
//! with its file, since nothing else is in it. Two drills at once (even of one backup) use
//! distinct scratch databases.

use std::time::{Duration, Instant};

use super::{
    connect, drop_database, ensure_database, manifest_of, restore_into_database, RestoreError,
    RestoreMode, TableCheck,
};
use crate::startup::AppState;

/// What a drill restored and found.
#[derive(Debug, Clone)]
pub struct DrillReport {
    pub database: String,
    pub tables: Vec<TableCheck>,
    pub rows: u64,
    pub elapsed: Duration,
}

/// The prefix of every scratch database of drills of `uuid`:
/// `rbk_drill_<first 12 hex digits of the uuid>_`.
pub fn scratch_prefix(uuid: &str) -> String {
    let hex: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("rbk_drill_{hex}_")
}

/// A new scratch database name for a drill of `uuid`: [`scratch_prefix`] and 8 random hex
/// digits, so concurrent drills never share (or drop) each other's database.
pub fn scratch_name(uuid: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}{}", scratch_prefix(uuid), &random[..8])
}

/// Restores backup `uuid` into a scratch database, verifies it, and drops the scratch database
/// whatever happened.
///
/// # Errors
/// Anything the restore reports; the scratch database is gone either way.
#[tracing::instrument(skip_all, fields(backup = %uuid))]
pub async fn drill(state: &AppState, uuid: &str) -> Result<DrillReport, RestoreError> {
    let started = Instant::now();
    let manifest = manifest_of(state, uuid).await?;
    let name = scratch_name(uuid);
    let mut admin = connect(&state.conn).await?;
    // The name is new, so the database is created empty (a leftover of a killed drill has
    // another name and is never reused).
    ensure_database(&mut admin, &name).await?;
    let scratch = state.conn.with_database(&name);
    let result = async {
        let restored =
            restore_into_database(state, &manifest, &scratch, None, RestoreMode::Fresh, None)
                .await?;
        // The drill's point: read every restored table back and compare it with the manifest.
        let entries: Vec<_> = manifest.tables.iter().collect();
        let tables =
            super::load::verify_parallel(&scratch, &entries, state.settings.backup.jobs).await?;
        Ok::<_, RestoreError>(super::RestoreReport { tables, ..restored })
    }
    .await;
    let dropped = drop_database(&mut admin, &name).await;
    let report = result?;
    dropped?;
    Ok(DrillReport {
        database: name,
        rows: report.rows,
        tables: report.tables,
        elapsed: started.elapsed(),
    })
}
