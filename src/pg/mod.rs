//! PostgreSQL plumbing shared by backups and restores: connection parameters and password
//! files, locating the client programs, and running them.

mod binaries;
mod conn;
mod process;

pub use binaries::{tool_major, BinariesError, PgBinaries};
pub use conn::{quote_ident, quote_literal, ConnInfo, ConnInfoError, PassFile, PASSFILE_PREFIX};
pub use process::{PgCommand, ProcessError, Running};

/// Runs SQL without parameters (one or several statements; the simple query protocol).
///
/// Use this rather than `sqlx::raw_sql(..).execute(..)`: the latter's future fails rustc's
/// higher-ranked `Send` check inside async fns (rust-lang/rust#102211), which breaks every
/// Inngest step that reaches it.
///
/// # Errors
/// The statement fails.
pub async fn execute(
    conn: &mut sqlx::PgConnection,
    sql: &str,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::Executor::execute(conn, sql).await
}
