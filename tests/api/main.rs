//! The integration test binary: one throwaway PostgreSQL cluster for the whole run (or
//! `TEST_DATABASE_URL`), one database per test.

mod helpers;

mod backup;
mod cli;
mod e2e_backup;
mod e2e_restore;
mod foundation;
mod restore;
mod tenant;
