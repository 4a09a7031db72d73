//! riveredge-backup: durable, verified, tenant-aware PostgreSQL backups for RiverEdge, run as an
//! Inngest app.
//!
//! Map of the crate (one concern per module):
//! - [`settings`]: the validated configuration (environment over an optional TOML file).
//! - [`telemetry`]: tracing subscriber (env filter, pretty or JSON).
//! - [`cli`]: the command line (`serve`, `migrate`, `config`, `check`, `backup`, `restore`,
//!   `verify`, `list`, `info`, `restores`, `drill`) and its exit codes.
//! - [`api`]: the REST API of the RiverEdge backup page (JWT auth, tenant isolation, zip
//!   downloads, OpenAPI).
//! - [`policy`]: the backup policy (retention, schedules) and where it is stored.
//! - [`startup`]: shared state, router, server life cycle and graceful shutdown.
//! - [`local_cluster`]: a throwaway PostgreSQL from the installed binaries (no `DATABASE_URL`,
//!   tests, benchmarks).
//! - [`artifact`]: the backup format: manifest, streaming writer, verifying reader, verify.
//! - [`snapshot`]: one exported snapshot shared by every connection of a dump.
//! - [`backup`]: backup spec and validation, scope selection, the dump pipeline.
//! - [`restore`]: compatibility check, whole-database and table restores, drills.
//! - [`commands`]: running a command: settings by need, output (`--json`), progress, exit codes.
//! - [`catalog`]: tables, columns, keys and sequences from the system catalogs; name validation.
//! - [`db`]: our tables (`root_data_backups`, `root_data_restores`), migrations, queries.
//! - [`pg`]: connection info and password files, locating and running `pg_dump`/`pg_restore`.
//! - [`storage`]: artifact storage (atomic objects under validated keys): local directory, S3-compatible
//!   bucket (`storage::s3`), and encryption at rest wrapping either (`storage::encrypted`, age).
//! - [`tenant`]: which rows belong to a tenant (through foreign keys too) and live tenant restore.
//!
//! The protocol itself lives in the separate `inngest` crate, which knows nothing of backups.

pub mod api;
pub mod artifact;
pub mod backup;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod db;
pub mod jobs;
pub mod local_cluster;
pub mod pg;
pub mod policy;
pub mod restore;
pub mod retry;
pub mod settings;
pub mod snapshot;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod tenant;
pub mod usecases;
