//! The command line. `serve` is the default; the other commands are for operators and run the
//! same code paths as the Inngest functions, without Inngest.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "riveredge-backup",
    version,
    about = "Durable, verified, tenant-aware PostgreSQL backups for RiverEdge"
)]
pub struct Cli {
    /// Settings file (TOML, same keys as the environment variables; the environment wins).
    #[arg(long, global = true, env = "RIVEREDGE_BACKUP_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /api/inngest and the REST API (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the effective settings (secrets redacted) and exit.
    Config,
    /// Take a backup now, without Inngest; prints the backup's uuid and result.
    Backup(BackupArgs),
    /// Restore a backup (verified first; a safety backup is taken of what gets replaced).
    Restore(RestoreArgs),
    /// Re-read a backup's artifact: checksums, full decode, row counts and content checksums.
    Verify { uuid: String },
    /// List backups, newest first.
    List(ListArgs),
    /// Restore a backup into a scratch database, compare it with the manifest, drop the scratch.
    Drill { uuid: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    All,
    Table,
    Tenant,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    Full,
    Incremental,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[arg(long, value_enum, default_value = "all")]
    pub scope: ScopeArg,
    /// Tenant id (required for --scope tenant; with --scope table, only that tenant's rows).
    #[arg(long)]
    pub tenant: Option<i32>,
    /// Comma-separated tables for --scope table; `schema.table` allowed.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    #[arg(long = "type", value_enum, default_value = "full")]
    pub backup_type: TypeArg,
    /// Display name (default: derived from scope and time).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    pub uuid: String,
    /// Restore into this database on the same server (created when missing) instead of the live one.
    #[arg(long)]
    pub target_database: Option<String>,
    /// Only these tables of the backup.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Allow replacing the live database's tables with a whole-database backup.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub tenant: Option<i32>,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}
