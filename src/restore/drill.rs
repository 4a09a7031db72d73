//! Restore drills: a backup is only known to be good once it has been restored. A drill
//! restores it into a scratch database on the same server, compares every table with the
//! manifest, and always drops the scratch database.

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

/// The scratch database of a drill: `rbk_drill_<first 12 hex digits of the uuid>`.
pub fn scratch_name(uuid: &str) -> String {
    let hex: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("rbk_drill_{hex}")
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
    // A leftover of a drill that was killed is not trusted: start from an empty database.
    drop_database(&mut admin, &name).await?;
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
