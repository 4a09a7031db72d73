//! One consistent view of the database for a whole backup.
//!
//! A coordinator connection opens a `REPEATABLE READ READ ONLY` transaction, exports its
//! snapshot and stays open until the dump ends (the snapshot dies with it). It takes
//! `ACCESS SHARE` locks on the selected tables, so a concurrent `DROP`/`ALTER` waits for the
//! backup instead of breaking it, with a `lock_timeout` so the backup does not queue behind a
//! long `ACCESS EXCLUSIVE` holder forever. Workers import the snapshot (`pg_dump --snapshot` and
//! our COPY connections), so every file sees the same committed state.

use std::time::Duration;

use chrono::Utc;
use sqlx::{Connection, PgConnection};

use crate::artifact::{set_session_settings, SnapshotEntry};
use crate::catalog::TableRef;
use crate::pg::{quote_literal, ConnInfo};

/// How long to wait for a table lock before giving up (the backup is retried later).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The coordinator: holds the exported snapshot and the table locks.
pub struct Snapshot {
    coordinator: PgConnection,
    pub info: SnapshotEntry,
}

impl Snapshot {
    /// Opens the coordinator, exports its snapshot and locks `tables` in `ACCESS SHARE` mode.
    ///
    /// # Errors
    /// Connection or query failures, including a lock that was not granted within
    /// [`LOCK_TIMEOUT`].
    #[tracing::instrument(skip_all, fields(tables = tables.len()))]
    pub async fn export(conn: &ConnInfo, tables: &[TableRef]) -> Result<Self, sqlx::Error> {
        let mut coordinator = PgConnection::connect_with(&conn.connect_options()).await?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut coordinator)
            .await?;
        let (snapshot_id, xmin, system_identifier): (String, String, String) = sqlx::query_as(
            "SELECT pg_export_snapshot(), pg_snapshot_xmin(pg_current_snapshot())::text,
                    (SELECT system_identifier::text FROM pg_control_system())",
        )
        .fetch_one(&mut coordinator)
        .await?;
        let lock_timeout = format!("{}ms", LOCK_TIMEOUT.as_millis());
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(&lock_timeout)
            .execute(&mut coordinator)
            .await?;
        for chunk in tables.chunks(100) {
            let list = chunk
                .iter()
                .map(TableRef::quoted)
                .collect::<Vec<_>>()
                .join(", ");
            let lock = format!("LOCK TABLE {list} IN ACCESS SHARE MODE");
            sqlx::query(&lock).execute(&mut coordinator).await?;
        }
        let info = SnapshotEntry {
            snapshot_id,
            xmin,
            system_identifier,
            taken_at: Utc::now(),
        };
        Ok(Self { coordinator, info })
    }

    /// A new connection that sees exactly this snapshot, with the fixed COPY session settings.
    ///
    /// # Errors
    /// Connection or query failures (e.g. the coordinator has gone and the snapshot with it).
    pub async fn worker(&self, conn: &ConnInfo) -> Result<PgConnection, sqlx::Error> {
        let mut worker = PgConnection::connect_with(&conn.connect_options()).await?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut worker)
            .await?;
        let import = format!(
            "SET TRANSACTION SNAPSHOT {}",
            quote_literal(&self.info.snapshot_id)
        );
        sqlx::query(&import).execute(&mut worker).await?;
        set_session_settings(&mut worker).await?;
        Ok(worker)
    }

    /// The coordinator connection, for reads that belong to the snapshot (or, for sequences,
    /// that must come after the data).
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.coordinator
    }

    /// Ends the transaction (releasing the locks) and closes the connection.
    ///
    /// # Errors
    /// The connection is broken; the locks are gone with it anyway.
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut self.coordinator).await?;
        self.coordinator.close().await
    }
}
