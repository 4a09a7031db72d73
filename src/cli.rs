//! The command line. `serve` is the default; the other commands are for operators and run the
//! same code paths as the Inngest functions, without Inngest.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, shown under `--help` and in the README.
pub const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failed, 2 usage or configuration error, \
3 refused for safety (e.g. restoring over a non-empty database without --replace).";

#[derive(Debug, Parser)]
#[command(
    name = "riveredge-backup",
    version,
    about = "Durable, verified, tenant-aware PostgreSQL backups for RiverEdge",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Settings file (TOML, same keys as the environment variables; the environment wins).
    #[arg(long, global = true, env = "RIVEREDGE_BACKUP_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print exactly one JSON document on stdout (logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress display (it is also off when stderr is not a terminal).
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the worker (Inngest endpoint, health, REST API); the default. The REST API
    /// (/api/v1/core/data-backups, /api/openapi.json) needs JWT_SECRET_KEY.
    Serve,
    /// Apply the database migrations and exit.
    #[command(after_help = EXIT_CODES)]
    Migrate,
    /// Print the effective settings by their documented names (secrets redacted).
    #[command(after_help = EXIT_CODES)]
    Config,
    /// Check the setup: database, pg_dump, storage, tenants table, Inngest (like `pgbackrest check`).
    #[command(after_help = EXIT_CODES)]
    Check,
    /// Take a backup now, without Inngest; prints the backup's uuid and result.
    #[command(after_help = EXIT_CODES)]
    Backup(BackupArgs),
    /// Restore a backup (verified first; a safety backup is taken of what gets replaced).
    #[command(after_help = EXIT_CODES)]
    Restore(RestoreArgs),
    /// Re-read a backup's artifact: checksums, full decode, row counts and content checksums.
    #[command(after_help = EXIT_CODES)]
    Verify(UuidArg),
    /// List backups, newest first.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Show one backup: manifest summary, tables, checksums, verification and its restores.
    #[command(after_help = EXIT_CODES)]
    Info(UuidArg),
    /// List restores, newest first.
    #[command(after_help = EXIT_CODES)]
    Restores(RestoresArgs),
    /// Restore a backup into a scratch database, compare it with the manifest, drop the scratch.
    #[command(after_help = EXIT_CODES)]
    Drill(UuidArg),
    /// Delete the backups the retention policy lets go (rows soft-deleted, files removed).
    #[command(after_help = EXIT_CODES)]
    Prune(PruneArgs),
    /// Print the effective backup policy and where each value comes from.
    #[command(after_help = EXIT_CODES)]
    Policy,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// List what would be deleted and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl Command {
    /// The name shown in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Migrate => "migrate",
            Self::Config => "config",
            Self::Check => "check",
            Self::Backup(_) => "backup",
            Self::Restore(_) => "restore",
            Self::Verify(_) => "verify",
            Self::List(_) => "list",
            Self::Info(_) => "info",
            Self::Restores(_) => "restores",
            Self::Drill(_) => "drill",
            Self::Prune(_) => "prune",
            Self::Policy => "policy",
        }
    }
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
    /// The rows changed since the previous backup of the same scope; a full (with the reason
    /// on the record) when that is impossible or unsafe.
    Incremental,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Pending,
    Running,
    Success,
    Failed,
}

#[derive(Debug, clap::Args)]
pub struct UuidArg {
    /// The backup's uuid (from `list`).
    #[arg(value_name = "UUID")]
    pub uuid: String,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// What to back up: the whole database, some tables, or one tenant's rows.
    #[arg(long, value_enum, default_value = "all")]
    pub scope: ScopeArg,
    /// Tenant id (required for --scope tenant; with --scope table, only that tenant's rows).
    #[arg(long)]
    pub tenant: Option<i32>,
    /// Comma-separated tables for --scope table; `schema.table` allowed.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Backup type; only full backups are available for now.
    #[arg(long = "type", value_enum, default_value = "full")]
    pub backup_type: TypeArg,
    /// Display name (default: derived from scope and time).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup's uuid (from `list`).
    #[arg(value_name = "UUID")]
    pub uuid: String,
    /// Restore into this database on the same server (created when missing) instead of the
    /// live one. An existing non-empty database is refused unless --replace.
    #[arg(long)]
    pub target_database: Option<String>,
    /// Only these tables of the backup.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Allow replacing existing tables (the live database, or a non-empty --target-database);
    /// a safety backup of what gets replaced is always taken first.
    #[arg(long)]
    pub replace: bool,
    /// Preview a tenant restore: per table the rows it would insert, update and delete, and
    /// the sequences it would move; nothing is changed (recorded as a dry-run restore).
    #[arg(long)]
    pub dry_run: bool,
    /// Restore only this tenant's rows from a whole-database backup (the same rows a tenant
    /// backup would hold); nothing else is touched.
    #[arg(long, value_name = "TENANT_ID")]
    pub tenant: Option<i32>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this tenant's backups.
    #[arg(long)]
    pub tenant: Option<i32>,
    /// Only backups with this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only backups of this scope.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Only backups created within this long, e.g. 30m, 12h, 7d (or since an RFC 3339 time).
    #[arg(long)]
    pub since: Option<String>,
    /// Show at most this many backups.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

#[derive(Debug, clap::Args)]
pub struct RestoresArgs {
    /// Only this tenant's restores.
    #[arg(long)]
    pub tenant: Option<i32>,
    /// Only restores of this backup.
    #[arg(long, value_name = "UUID")]
    pub backup: Option<String>,
    /// Show at most this many restores.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

impl ScopeArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Table => "table",
            Self::Tenant => "tenant",
        }
    }
}

impl StatusArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }
}
