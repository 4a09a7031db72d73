//! The integration test binary: one throwaway PostgreSQL cluster for the whole run (or
//! `TEST_DATABASE_URL`), one database per test.

mod helpers;

mod foundation;
