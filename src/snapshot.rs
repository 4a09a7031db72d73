//! One consistent view of the database for a whole backup.
//!
//! A coordinator connection opens a `REPEATABLE READ READ ONLY` transaction, takes
//! `ACCESS SHARE` locks on the selected tables, and only then exports its snapshot; it stays
//! open until the dump ends (the snapshot dies with it). Workers import the snapshot
//! (`pg_dump --snapshot` and our COPY connections), so every file sees the same committed state.
//!
//! The order matters. A REPEATABLE READ transaction's snapshot is taken by its first query
//! (`SELECT`, DML), not by `BEGIN`, `SET` or `LOCK TABLE` (PostgreSQL's `LOCK` documentation
//! says exactly this). So the locks are granted first and the snapshot is taken after them: a
//! `TRUNCATE` or `ALTER` (which need `ACCESS EXCLUSIVE`) either committed before the locks
//! were granted, and the snapshot sees its result, or waits for the backup to end. Exporting
//! first would let a `TRUNCATE` commit in between, and since `TRUNCATE` is not MVCC-safe the
//! backup would see the table empty. A `lock_timeout` keeps the backup from queueing forever
//! behind a long `ACCESS EXCLUSIVE` holder. Only utility statements run before the export,
//! over the simple query protocol.

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
    /// Opens the coordinator, locks `tables` in `ACCESS SHARE` mode, then exports its snapshot.
    ///
    /// # Errors
    /// Connection or query failures, including a lock that was not granted within
    /// [`LOCK_TIMEOUT`] and a table that no longer exists.
    #[tracing::instrument(skip_all, fields(tables = tables.len()))]
    pub async fn export(conn: &ConnInfo, tables: &[TableRef]) -> Result<Self, sqlx::Error> {
        let mut coordinator = PgConnection::connect_with(&conn.connect_options()).await?;
        // No statement here may take the snapshot: BEGIN, SET and LOCK only (see the module
        // documentation), sent as simple queries so no parameter binding runs a query first.
        let mut setup = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL lock_timeout = '{}ms';",
            LOCK_TIMEOUT.as_millis()
        );
        for chunk in tables.chunks(100) {
            let list = chunk
                .iter()
                .map(TableRef::quoted)
                .collect::<Vec<_>>()
                .join(", ");
            setup.push_str(&format!(" LOCK TABLE {list} IN ACCESS SHARE MODE;"));
        }
        crate::pg::execute(&mut coordinator, &setup).await?;
        let (snapshot_id, xmin, system_identifier): (String, String, String) = sqlx::query_as(
            "SELECT pg_export_snapshot(), pg_snapshot_xmin(pg_current_snapshot())::text,
                    (SELECT system_identifier::text FROM pg_control_system())",
        )
        .fetch_one(&mut coordinator)
        .await?;
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
