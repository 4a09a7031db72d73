//! The integration test binary: one throwaway PostgreSQL cluster for the whole run (or
//! `TEST_DATABASE_URL`), one database per test.

mod helpers;

mod awkward;
mod backup;
mod cli;
mod completeness;
mod consistency;
mod e2e_backup;
mod e2e_restore;
mod encryption;
mod exactly_once;
mod foundation;
mod incremental;
mod kill;
mod page;
mod partitions;
mod rest;
mod rest_download;
mod restart;
mod restore;
mod s3_backups;
mod s3_server;
mod schedule;
mod storage_suite;
mod tenant;
mod tenant_live;
