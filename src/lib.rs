//! riveredge-backup: durable, verified, tenant-aware PostgreSQL backups for RiverEdge, run as an
//! Inngest app.
//!
//! Map of the crate, by layer (a layer calls only the layers below it):
//!
//! Entry points (adapters: parse, authorize, map errors; no backup logic):
//! - [`jobs`]: the Inngest functions (`backup/execute`, restore, crons): each step calls a use
//!   case and maps its error to retriable or final once.
//! - [`api`]: the REST API of the RiverEdge backup page (JWT auth, tenant isolation, zip
//!   downloads, OpenAPI).
//! - [`cli`] and [`commands`]: the command line (`serve`, `migrate`, `config`, `check`,
//!   `backup`, `restore`, `verify`, `list`, `info`, `restores`, `drill`, `prune`, `policy`),
//!   settings by need, `--json` output, progress, exit codes.
//! - [`page`]: the backup page at `/backups/` (embedded HTML/CSS/JS over the REST API; CSP).
//! - [`metrics`]: `/metrics` in the Prometheus text format (process counters, table gauges).
//! - [`startup`]: shared state, router, server life cycle and graceful shutdown.
//!
//! Use cases (exactly-once outcomes under at-least-once delivery):
//! - [`usecases`]: claim → work → guarded finish/fail for backups and restores, heartbeats, and
//!   the reaper that fails dead and stalled work and sweeps what it left behind, and retention
//!   (chains expire as a whole).
//! - [`retry`]: the one rule for which errors are transient.
//! - [`policy`]: the backup policy (retention, schedules, GFS tiers, fan-out, stall limit), where
//!   it is stored, and its `backup.*` overrides from `core_system_parameters`.
//!
//! Engines (one operation each, knowing nothing of Inngest or HTTP):
//! - [`backup`]: backup spec and validation, scope selection, the dump pipeline; incrementals
//!   (`backup::incremental`: parent, fallback to a full, position, xmin-window capture;
//!   docs/incremental.md).
//! - [`restore`]: compatibility check, whole-database and table restores, sequences, drills;
//!   an incremental restores its chain (`restore::chain_of`: the full, then each delta).
//! - [`tenant`]: which rows belong to a tenant (through foreign keys too) and live tenant restore
//!   (from a tenant or a whole-database backup, under concurrent writes, with a dry-run preview;
//!   docs/tenant-restore.md).
//! - [`snapshot`]: one exported snapshot shared by every connection of a dump.
//! - [`catalog`]: tables, columns, keys and sequences from the system catalogs; name validation.
//!
//! Storage and PostgreSQL:
//! - [`artifact`]: the backup format: manifest, streaming writer (and the one-scan writer of an
//!   incremental's changes, key list and state hash), verifying reader, verify.
//! - [`storage`]: artifact storage (atomic objects under validated keys): local directory,
//!   S3-compatible bucket (`storage::s3`), encryption at rest wrapping either
//!   (`storage::encrypted`, age).
//! - [`db`]: our tables (`root_data_backups`, `root_data_restores`), migrations, queries.
//! - [`pg`]: connection info and password files, locating and running `pg_dump`/`pg_restore`.
//! - [`local_cluster`]: a throwaway PostgreSQL from the installed binaries (tests, benchmarks).
//! - [`settings`] and [`telemetry`]: the validated configuration; tracing.
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
pub mod metrics;
pub mod page;
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
