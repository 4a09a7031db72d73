//! PostgreSQL plumbing shared by backups and restores: connection parameters and password
//! files, locating the client programs, and running them.

mod binaries;
mod conn;
mod process;

pub use binaries::{tool_major, BinariesError, PgBinaries};
pub use conn::{quote_ident, quote_literal, ConnInfo, ConnInfoError, PassFile};
pub use process::{PgCommand, ProcessError, Running};
