//! The worker's own tables (`root_data_backups`, `root_data_restores`) and their migrations.
//!
//! Queries are grouped by table; each function takes an executor, so callers choose between the
//! pool and a transaction. Queries are checked at run time (`sqlx::query_as`) rather than with
//! `query!`: every one of them runs against a real PostgreSQL in the test suite, and CI does not
//! need `sqlx-cli` or an offline query cache to build.

pub mod api;
pub mod backups;
pub mod restores;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::pg::ConnInfo;

/// The embedded migrations, applied at start-up and by `riveredge-backup migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Our bookkeeping tables: never part of a backup's data, never touched by a restore (a restore
/// must not roll back the record of backups and restores made after the backup it restores).
pub const OWN_TABLES: &[&str] = &[
    "root_data_backups",
    "root_data_restores",
    "root_data_backup_policy",
    "_sqlx_migrations",
];

/// A pool on the configured database.
///
/// # Errors
/// The database cannot be reached.
pub async fn connect(conn: &ConnInfo, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect_with(conn.connect_options())
        .await
}
